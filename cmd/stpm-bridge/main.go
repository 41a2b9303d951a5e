// Command stpm-bridge exports the TPM token with p11-kit server and
// forwards it over ssh, so ssh on remote hosts signs with the
// workstation's TPM key.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/bridge"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/internal/cli"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/p11kit"
)

const synopsis = "stpm-bridge serve|ssh|remote-setup|register|unregister ..."

const usage = `Usage:
    stpm-bridge ssh [ssh options] HOST [COMMAND]
    stpm-bridge serve [-n SOCKET] [-f] [-s|-c] [--module PATH]
    stpm-bridge serve -k
    stpm-bridge remote-setup [--remove] [-f]
    stpm-bridge register [--module PATH] [-f]
    stpm-bridge unregister

Uses the workstation's TPM keys on other hosts: the token is exported with
p11-kit server on a private socket and forwarded with ssh -R.

    ssh           Log in to HOST (or run COMMAND there) with the token
                  forwarded: on HOST, P11_KIT_SERVER_ADDRESS points at it, so
                  "ssh -o PKCS11Provider=p11-kit-client.so other-host" and
                  "ssh-keygen -D p11-kit-client.so" use the TPM key. Starts a
                  local server for the session unless one is running.
    serve         Run the local server. Prints the environment lines, like
                  p11-kit server. -f stays in the foreground; -s/-c choose sh
                  or csh syntax; -n sets the socket (default
                  $XDG_RUNTIME_DIR/simple-tpm-pk11/bridge.sock); -k stops the
                  server named by P11_KIT_SERVER_PID.
    remote-setup  On the remote host: register the forwarded token with
                  p11-kit, so programs using p11-kit-proxy.so see it during
                  bridge sessions. --remove undoes it.
    register      Register the module with p11-kit for this user (for root:
                  for the system), so p11-kit-proxy.so loads it.
    unregister    Undo register.

Options:
    --module PATH  libsimple-tpm-pk11.so (default: beside this program,
                   ../lib, or the system's; also $SIMPLE_TPM_PK11_MODULE).
    -h, --help     Show this help.
    --version      Show the version.

Example:
    $ stpm-bridge ssh server.example.com
    server$ ssh -o PKCS11Provider=/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so git.example.com
`

var command = cli.Command{Synopsis: synopsis, Usage: usage}

func main() { os.Exit(run(os.Args[1:], cli.New("stpm-bridge"))) }

func run(args []string, ui *cli.UI) int {
	if len(args) == 0 {
		return ui.Usage(synopsis, "missing command")
	}
	switch args[0] {
	case "-h", "--help", "-help":
		fmt.Fprint(os.Stdout, usage)
		return cli.ExitOK
	case "--version", "-version":
		fmt.Fprintf(os.Stdout, "stpm-bridge %s\n", cli.Version)
		return cli.ExitOK
	case "ssh":
		return runSSH(args[1:], ui)
	case "serve":
		return runServe(args[1:], ui)
	case "remote-setup":
		return runRemoteSetup(args[1:], ui)
	case "register", "unregister":
		return runRegister(args[0], args[1:], ui)
	}
	return ui.Usage(synopsis, "unknown command %q", args[0])
}

func runSSH(args []string, ui *cli.UI) int {
	code, err := bridge.SSH(context.Background(), bridge.SSHOptions{
		Args:   args,
		Stdin:  os.Stdin,
		Stdout: os.Stdout,
		Stderr: os.Stderr,
		Warn:   ui.Infof,
	})
	if err != nil {
		ui.Fail(err)
		return 255 // as ssh does when it cannot connect
	}
	return code
}

func runServe(args []string, ui *cli.UI) int {
	fs := cli.NewFlagSet("stpm-bridge serve")
	socket := fs.String("n", "", "")
	foreground := fs.Bool("f", false, "")
	fs.Bool("s", false, "")
	csh := fs.Bool("c", false, "")
	kill := fs.Bool("k", false, "")
	module := fs.String("module", "", "")
	if code, done := ui.Parse(fs, command, args); done {
		return code
	}
	if *kill {
		return killServer(ui)
	}
	if !*foreground {
		return daemonize(ui, *socket, *module, *csh)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	srv, err := bridge.StartServer(ctx, bridge.ServeOptions{Socket: *socket, Module: *module})
	if err != nil {
		return ui.Fail(err)
	}
	fmt.Fprint(os.Stdout, p11kit.EnvLines(srv.Address, os.Getpid(), *csh))
	select {
	case <-ctx.Done():
	case <-srv.Done():
		ui.Errorf("p11-kit server exited")
	}
	if err := srv.Stop(); err != nil {
		return ui.Fail(err)
	}
	return cli.ExitOK
}

// daemonize runs "serve -f" in the background, in a session of its own,
// waits until it listens, and prints its environment lines.
func daemonize(ui *cli.UI, socket, module string, csh bool) int {
	if socket == "" {
		var err error
		if socket, err = bridge.DefaultSocket(); err != nil {
			return ui.Fail(err)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return ui.Fail(err)
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return ui.Fail(err)
	}
	defer devnull.Close() // read-only use; the child has its own copy
	// A fresh XDG_RUNTIME_DIR has no simple-tpm-pk11 directory yet, and
	// the log goes there.
	if err := bridge.MakeSocketDir(socket); err != nil {
		return ui.Fail(err)
	}
	// The background server must not hold our stderr: whoever reads it
	// (a terminal, or a program capturing it) would wait for it forever.
	// Its messages, and the module's, go to a log beside the socket.
	logPath := socket + ".log"
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return ui.Fail(err)
	}
	defer logFile.Close() // the child has its own copy; we never write to it
	start, err := logFile.Seek(0, io.SeekEnd)
	if err != nil {
		return ui.Fail(err)
	}
	args := []string{"serve", "-f", "-n", socket}
	if module != "" {
		args = append(args, "--module", module)
	}
	cmd := exec.Command(exe, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, devnull, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return ui.Fail(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	failed := func(format string, args ...any) int {
		ui.Errorf(format, args...)
		if b, err := os.ReadFile(logPath); err == nil && int64(len(b)) > start {
			os.Stderr.Write(b[start:]) // the child's own error lines, already prefixed
		}
		ui.Hintf("its log is %q", logPath)
		return cli.ExitError
	}
	deadline := time.After(15 * time.Second)
	for !p11kit.Listening(socket) {
		select {
		case err := <-exited:
			return failed("the server did not start (%v)", err)
		case <-deadline:
			if err := cmd.Process.Kill(); err != nil {
				ui.Warnf("%v", err)
			}
			return failed("the server did not listen on %q within 15 s", socket)
		case <-time.After(20 * time.Millisecond):
		}
	}
	fmt.Fprint(os.Stdout, p11kit.EnvLines(p11kit.UnixAddress(socket), cmd.Process.Pid, csh))
	return cli.ExitOK
}

func killServer(ui *cli.UI) int {
	pid, err := strconv.Atoi(os.Getenv("P11_KIT_SERVER_PID"))
	if err != nil || pid <= 1 {
		ui.Errorf("P11_KIT_SERVER_PID is not set to a server's process ID")
		ui.Hintf(`run eval "$(stpm-bridge serve)" first, in this shell`)
		return cli.ExitError
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		ui.Errorf("stopping server %d: %v", pid, err)
		return cli.ExitError
	}
	fmt.Fprint(os.Stdout, "unset P11_KIT_SERVER_ADDRESS;\nunset P11_KIT_SERVER_PID;\n")
	return cli.ExitOK
}

func runRemoteSetup(args []string, ui *cli.UI) int {
	fs := cli.NewFlagSet("stpm-bridge remote-setup")
	remove := fs.Bool("remove", false, "")
	force := fs.Bool("f", false, "")
	if code, done := ui.Parse(fs, command, args); done {
		return code
	}
	if *remove {
		return reportRemoval(ui, bridge.RemoteUnsetup, "")
	}
	file, sock, err := bridge.RemoteSetup(*force)
	if err != nil {
		return ui.Fail(err)
	}
	ui.Infof("wrote %q: p11-kit-proxy.so now offers the token forwarded to %q", file, sock)
	ui.Infof("bridge sessions (stpm-bridge ssh) link the forwarded socket there; with plain ssh and stpm-bridge serve on the workstation, add to this host's entry in the workstation's ~/.ssh/config:")
	withRuntime, withoutRuntime := bridge.RemoteForwardLines(filepath.Dir(filepath.Dir(sock)))
	ui.Infof("    %s", withRuntime)
	ui.Infof("    ExitOnForwardFailure yes")
	ui.Infof("(where XDG_RUNTIME_DIR is unset on the workstation: %s)", withoutRuntime)
	ui.Infof("and StreamLocalBindUnlink yes in this host's sshd_config, or remove %q after each session", sock)
	if _, err := p11kit.FindClientModule(); err != nil {
		ui.Warnf("%v", err)
		if h := cli.Hint(err); h != "" {
			ui.Hintf("%s", h)
		}
	}
	return cli.ExitOK
}

func runRegister(which string, args []string, ui *cli.UI) int {
	fs := cli.NewFlagSet("stpm-bridge " + which)
	module := fs.String("module", "", "")
	force := fs.Bool("f", false, "")
	if code, done := ui.Parse(fs, command, args); done {
		return code
	}
	if which == "unregister" {
		return reportRemoval(ui, bridge.Unregister, ": p11-kit no longer loads the module")
	}
	file, err := bridge.Register(*module, *force)
	if err != nil {
		return ui.Fail(err)
	}
	ui.Infof("wrote %q: p11-kit-proxy.so and p11-kit list-modules now include the module", file)
	return cli.ExitOK
}

// reportRemoval runs an undo step and says what it did.
func reportRemoval(ui *cli.UI, remove func() (string, bool, error), effect string) int {
	file, removed, err := remove()
	if err != nil {
		return ui.Fail(err)
	}
	if removed {
		ui.Infof("removed %q%s", file, effect)
	} else {
		ui.Infof("nothing to remove at %q", file)
	}
	return cli.ExitOK
}

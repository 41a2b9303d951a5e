// Command stpm-bridge exports the TPM token with p11-kit server and
// forwards it over ssh, so ssh on remote hosts signs with the
// workstation's TPM key.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/bridge"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/internal/cli"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/p11kit"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/tpm"
)

const synopsis = "stpm-bridge serve|ssh|remote-setup|register|unregister ..."

const usage = `Usage:
    stpm-bridge ssh [--tpm SPEC] [ssh options] HOST [COMMAND]
    stpm-bridge serve [-n SOCKET] [-f] [-s|-c] [--module PATH] [--tpm SPEC]
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
                  local server for the session unless one is running (and
                  always with --tpm).
    serve         Run the local server. Prints the environment lines, like
                  p11-kit server. -f stays in the foreground; -s/-c choose sh
                  or csh syntax; -n sets the socket (default
                  $XDG_RUNTIME_DIR/simple-tpm-pk11/bridge.sock); -k stops the
                  server named by P11_KIT_SERVER_PID (eval its output to
                  unset the variables too).
    remote-setup  On the remote host: register the forwarded token with
                  p11-kit, so programs using p11-kit-proxy.so see it during
                  bridge sessions. --remove undoes it.
    register      Register the module with p11-kit for this user (for root:
                  for the system), so p11-kit-proxy.so loads it.
    unregister    Undo register.

Options:
    --module PATH  libsimple-tpm-pk11.so (default: beside this program,
                   ../lib, or the system's; also $SIMPLE_TPM_PK11_MODULE).
    --tpm SPEC     TPM the served module uses: device:/dev/tpmrm0 (default),
                   swtpm:path=SOCKET or swtpm:host=H,port=P.
                   Also $SIMPLE_TPM_PK11_TPM or "tpm" in the config file.
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
	if bridge.WantsHelp(args) {
		fmt.Fprint(os.Stdout, usage)
		return cli.ExitOK
	}
	// Our own options come first; everything after them is ssh's.
	var tpmSpec string
	for len(args) > 0 {
		if v, ok := strings.CutPrefix(args[0], "--tpm="); ok {
			tpmSpec, args = v, args[1:]
		} else if args[0] == "--tpm" {
			if len(args) < 2 {
				return ui.Usage(synopsis, "flag needs an argument: -tpm")
			}
			tpmSpec, args = args[1], args[2:]
		} else {
			break
		}
	}
	if code, ok := checkTPMSpec(ui, tpmSpec); !ok {
		return code
	}
	code, err := bridge.SSH(context.Background(), bridge.SSHOptions{
		Args:   args,
		TPM:    tpmSpec,
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

// checkTPMSpec refuses a --tpm value the module could not use, before
// any server starts.
func checkTPMSpec(ui *cli.UI, spec string) (int, bool) {
	if spec == "" {
		return 0, true
	}
	if _, err := tpm.ResolveSpec(spec, ""); err != nil {
		return ui.Fail(err), false // as the other commands do
	}
	return 0, true
}

func runServe(args []string, ui *cli.UI) int {
	fs := cli.NewFlagSet("stpm-bridge serve")
	socket := fs.String("n", "", "")
	foreground := fs.Bool("f", false, "")
	fs.Bool("s", false, "")
	csh := fs.Bool("c", false, "")
	kill := fs.Bool("k", false, "")
	module := fs.String("module", "", "")
	tpmSpec := fs.String("tpm", "", "")
	if code, done := ui.Parse(fs, command, args); done {
		return code
	}
	if *kill {
		return killServer(ui)
	}
	if code, ok := checkTPMSpec(ui, *tpmSpec); !ok {
		return code
	}
	if !*foreground {
		return daemonize(ui, *socket, *module, *tpmSpec, *csh)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	srv, err := bridge.StartServer(ctx, bridge.ServeOptions{Socket: *socket, Module: *module, TPM: *tpmSpec})
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
// and prints the environment lines that child prints once its server
// listens: they carry the child's own pid, so what we print always names
// the process that listens, never one that gave up.
func daemonize(ui *cli.UI, socket, module, tpmSpec string, csh bool) int {
	var err error
	if socket == "" {
		socket, err = bridge.DefaultSocket()
	} else {
		socket, err = filepath.Abs(socket)
	}
	if err != nil {
		return ui.Fail(err)
	}
	// A fresh XDG_RUNTIME_DIR has no simple-tpm-pk11 directory yet, and
	// the log goes there.
	if err := bridge.MakeSocketDir(socket); err != nil {
		return ui.Fail(err)
	}
	// The child would refuse too, but only into its log.
	if err := bridge.SocketFree(socket); err != nil {
		return ui.Fail(err)
	}
	exe, err := os.Executable()
	if err != nil {
		return ui.Fail(err)
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return ui.Fail(err)
	}
	defer devnull.Close() // the child has its own copy
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
	// The child's stdout is a pipe to us: it prints its lines there when
	// its server listens, and nothing after them.
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return ui.Fail(err)
	}
	defer readyR.Close()
	args := []string{"serve", "-f", "-n", socket}
	if csh {
		args = append(args, "-c")
	}
	if module != "" {
		args = append(args, "--module", module)
	}
	if tpmSpec != "" {
		args = append(args, "--tpm", tpmSpec)
	}
	cmd := exec.Command(exe, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, readyW, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	if cerr := readyW.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return ui.Fail(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	type hello struct {
		lines string
		err   error
	}
	ready := make(chan hello, 1)
	go func() {
		var h hello
		sc := bufio.NewScanner(readyR)
		for n := 0; n < 2 && sc.Scan(); n++ {
			h.lines += sc.Text() + "\n"
		}
		if strings.Count(h.lines, "\n") < 2 {
			h.err = sc.Err()
			if h.err == nil {
				h.err = io.ErrUnexpectedEOF
			}
		}
		ready <- h
	}()
	failed := func(format string, args ...any) int {
		ui.Errorf(format, args...)
		if b, err := os.ReadFile(logPath); err == nil && int64(len(b)) > start {
			os.Stderr.Write(b[start:]) // the child's own error lines, already prefixed
		}
		ui.Hintf("its log is %q", logPath)
		return cli.ExitError
	}
	timer := time.NewTimer(15 * time.Second)
	defer timer.Stop()
	select {
	case h := <-ready:
		if h.err == nil {
			if want := p11kit.EnvLines(p11kit.UnixAddress(socket), cmd.Process.Pid, csh); h.lines != want {
				killChild(ui, cmd)
				return failed("the server printed %q, want %q", h.lines, want)
			}
			fmt.Fprint(os.Stdout, h.lines)
			return cli.ExitOK
		}
		// Its stdout closed without the lines: it is exiting.
		select {
		case err := <-exited:
			return failed("the server did not start (%v)", err)
		case <-timer.C:
			killChild(ui, cmd)
			return failed("the server closed its output without the environment lines (%v)", h.err)
		}
	case err := <-exited:
		return failed("the server did not start (%v)", err)
	case <-timer.C:
		killChild(ui, cmd)
		return failed("the server did not listen on %q within 15 s", socket)
	}
}

// killChild ends a background server that failed to start.
func killChild(ui *cli.UI, cmd *exec.Cmd) {
	if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		ui.Warnf("%v", err)
	}
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

package bridge

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/p11kit"
	"golang.org/x/term"
)

// sshArgOptions are ssh's options that take an argument (ssh(1)).
const sshArgOptions = "BbcDEeFIiJLlmOoPpQRSWw"

// splitSSHArgs separates ssh options, the destination and the remote
// command, the way ssh itself reads its command line.
func splitSSHArgs(args []string) (opts []string, host string, command []string, err error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			if i+1 >= len(args) {
				break
			}
			return opts, args[i+1], args[i+2:], nil
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			return opts, a, args[i+1:], nil
		}
		opts = append(opts, a)
		// In "-vp22" the p takes the rest; in "-vp" it takes the next
		// argument.
		for j := 1; j < len(a); j++ {
			if strings.IndexByte(sshArgOptions, a[j]) >= 0 {
				if j == len(a)-1 {
					if i+1 >= len(args) {
						return nil, "", nil, fmt.Errorf("ssh option -%c needs an argument", a[j])
					}
					i++
					opts = append(opts, args[i])
				}
				break
			}
		}
	}
	return nil, "", nil, errors.New("no host given")
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// remoteScript is what runs on the remote host: it points
// P11_KIT_SERVER_ADDRESS at the forwarded socket, links the stable path
// that "stpm-bridge remote-setup" registered with p11-kit, runs the
// command or a login shell, and removes the socket and link afterwards
// (sshd leaves the socket file behind). It needs only a POSIX sh.
func remoteScript(sock, command string) string {
	if command == "" {
		command = `"${SHELL:-/bin/sh}" -l`
	}
	return strings.Join([]string{
		"S=" + shellQuote(sock),
		`L="$HOME/.simple-tpm-pk11/` + forwardedName + `"`,
		"P11_KIT_SERVER_ADDRESS=unix:path=$S; export P11_KIT_SERVER_ADDRESS",
		// Only ever replace a link: never a real socket or file.
		`if [ -d "$HOME/.simple-tpm-pk11" ] && { [ -L "$L" ] || [ ! -e "$L" ]; }; then ln -sfn "$S" "$L"; fi`,
		"C=$(" + p11kit.ClientModuleShellProbe() + ")",
		`if [ -z "$C" ]; then echo "stpm-bridge: warning: p11-kit-client.so not found on $(hostname): install p11-kit-modules (Debian, Ubuntu) or p11-kit-server (Fedora)" >&2; fi`,
		`cleanup() { rm -f "$S"; if [ "$(readlink "$L" 2>/dev/null)" = "$S" ]; then rm -f "$L"; fi; }`,
		// The EXIT trap also runs when the command itself says "exit";
		// the signals (HUP: the connection dropped) exit through it.
		"trap cleanup EXIT; trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 143' TERM",
		command,
		// Not the last command, so no shell runs it with exec (which
		// would skip the trap).
		"exit $?",
	}, "\n")
}

// RemoteSocket is a fresh path for the forwarded socket: a new name each
// session, so a socket left by an earlier one never blocks the bind (a
// stock sshd has StreamLocalBindUnlink off). sshd creates it 0600.
func RemoteSocket() (string, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "/tmp/stpm-bridge." + hex.EncodeToString(b) + ".sock", nil
}

// SSHOptions configures SSH.
type SSHOptions struct {
	Args   []string // ssh options, HOST, remote command
	Module string
	Socket string // local socket; "" means DefaultSocket
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Warn reports what the user should know (reused server, dead server).
	Warn func(format string, args ...any)
}

// SSH runs ssh with the token forwarded and returns ssh's exit status.
// It reuses a running local server or starts one for the session only.
func SSH(ctx context.Context, o SSHOptions) (int, error) {
	opts, host, command, err := splitSSHArgs(o.Args)
	if err != nil {
		return 0, &Error{Msg: err.Error(), Advice: "usage: stpm-bridge ssh [ssh options] HOST [COMMAND]"}
	}
	sshPath, err := exec.LookPath("ssh")
	if err != nil {
		return 0, &Error{Msg: "ssh not found", Advice: "install openssh-client", Err: err}
	}
	local := o.Socket
	if local == "" {
		if local, err = DefaultSocket(); err != nil {
			return 0, err
		}
	}
	var server *p11kit.Server
	if p11kit.Listening(local) {
		o.Warn("using the running server at %s", local)
	} else {
		// A server of this session's own, on a socket of its own: a
		// second session to the same or another host at the same time
		// must not lose its token when this one ends.
		local = filepath.Join(filepath.Dir(local), fmt.Sprintf("bridge-%d.sock", os.Getpid()))
		server, err = StartServer(ctx, ServeOptions{Socket: local, Module: o.Module})
		if err != nil {
			return 0, err
		}
		defer func() {
			if serr := server.Stop(); serr != nil {
				o.Warn("stopping the local server: %v", serr)
			}
		}()
	}
	remote, err := RemoteSocket()
	if err != nil {
		return 0, err
	}
	args := []string{"-o", "ExitOnForwardFailure=yes", "-R", remote + ":" + local}
	interactive := len(command) == 0
	if f, ok := o.Stdin.(*os.File); interactive && ok && term.IsTerminal(int(f.Fd())) {
		args = append(args, "-t")
	}
	args = append(args, opts...)
	args = append(args, "--", host, "sh -c "+shellQuote(remoteScript(remote, strings.Join(command, " "))))

	cmd := exec.Command(sshPath, args...)
	cmd.Stdin, cmd.Stdout = o.Stdin, o.Stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return 0, err
	}
	// ssh owns the terminal: let it take ^C; a SIGTERM to us goes on to it.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return 0, &Error{Msg: "starting ssh: " + err.Error(), Err: err}
	}
	var refused bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			if strings.Contains(line, "remote port forwarding failed") {
				refused = true
			}
			fmt.Fprintln(o.Stderr, line)
		}
	}()
	done := make(chan struct{})
	go func() {
		var dead <-chan struct{}
		if server != nil {
			dead = server.Done()
		}
		for {
			select {
			case s := <-sigs:
				if s != syscall.SIGINT {
					if err := cmd.Process.Signal(s); err != nil {
						o.Warn("passing %v to ssh: %v", s, err)
					}
				}
			case <-dead:
				o.Warn("the local p11-kit server stopped: the forwarded token is gone for this session")
				dead = nil
			case <-done:
				return
			}
		}
	}()
	wg.Wait()
	err = cmd.Wait()
	close(done)
	if refused {
		return 0, &Error{Msg: fmt.Sprintf("%s refused to forward the token's socket", host),
			Advice: "its sshd_config must allow AllowStreamLocalForwarding (the default) and DisableForwarding must be off"}
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), nil
	}
	if err != nil {
		return 0, err
	}
	return 0, nil
}

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
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

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
		if a == "-h" || a == "--help" || a == "-help" {
			return nil, "", nil, errHelp
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

// errHelp is splitSSHArgs's answer to -h or --help among the options
// (ssh itself has no such option).
var errHelp = errors.New("help requested")

// WantsHelp reports whether the arguments of "stpm-bridge ssh" ask for
// help: -h or --help before the host.
func WantsHelp(args []string) bool {
	_, _, _, err := splitSSHArgs(args)
	return errors.Is(err, errHelp)
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// remoteScript is what runs on the remote host: it refuses a forwarded
// socket that others may connect to, points P11_KIT_SERVER_ADDRESS at it,
// links the stable path that "stpm-bridge remote-setup" (or a module file
// written by hand) registered with p11-kit, runs the command or a login
// shell, and removes the socket and link afterwards (sshd leaves the
// socket file behind). It needs only a POSIX sh.
//
// sshd hands the remote command to the user's login shell, which may be
// csh, tcsh or fish rather than a POSIX shell. So the script is one line
// without "!" (csh rejects a newline inside quotes and expands "!" even
// there), and the command is carried as printf octal escapes, which no
// shell on the way reinterprets.
func remoteScript(sock, command string) string {
	if command == "" {
		command = `"${SHELL:-/bin/sh}" -l`
	}
	return strings.Join([]string{
		"S=" + shellQuote(sock),
		`L="$HOME/` + homeSubdir + "/" + forwardedName + `"`,
		// sshd creates the socket with its StreamLocalBindMask (0177 by
		// default, so 0600). An administrator who widened it let other
		// users connect from the moment sshd made it: a chmod now would
		// come too late, so the session ends instead.
		`if [ -S "$S" ]; then case "$(ls -ld "$S")" in s???------*) ;; *) ` + refuseOpenSocket + `; rm -f "$S"; exit 1;; esac; ` +
			`else echo "stpm-bridge: warning: the forwarded socket $S is missing on $(hostname): the token is not available in this session" >&2; fi`,
		"P11_KIT_SERVER_ADDRESS=unix:path=$S; export P11_KIT_SERVER_ADDRESS",
		// A socket at the stable path that nothing listens on is what a
		// plain "ssh -R" to it leaves behind on a stock sshd
		// (StreamLocalBindUnlink no): remove it so the link can be made.
		// A live one belongs to such a forward and stays.
		`bound() { while read -r _ _ _ _ _ _ _ p; do if [ "$p" = "$1" ]; then return 0; fi; done < /proc/net/unix; return 1; }`,
		`if [ -S "$L" ] && [ -r /proc/net/unix ]; then if [ -L "$L" ] || bound "$L"; then :; else rm -f "$L"; fi; fi`,
		// A module file written by hand (no remote-setup) asks for the
		// token through p11-kit-proxy.so, but leaves no directory for the
		// link: make it, private. p11-kit reads ~/.config as
		// $XDG_CONFIG_HOME when that is set.
		`if [ ! -d "$HOME/` + homeSubdir + `" ] && [ -f "${XDG_CONFIG_HOME:-$HOME/.config}/pkcs11/modules/` + remoteModule + `.module" ]; then mkdir -m 700 "$HOME/` + homeSubdir + `"; fi`,
		// Only ever replace a link: never a live socket or a file.
		`if [ -d "$HOME/` + homeSubdir + `" ]; then if [ -L "$L" ]; then ln -sfn "$S" "$L"; elif [ -e "$L" ]; then :; else ln -sfn "$S" "$L"; fi; fi`,
		"C=$(" + p11kit.ClientModuleShellProbe() + ")",
		`if [ -z "$C" ]; then echo "stpm-bridge: warning: p11-kit-client.so not found on $(hostname): install p11-kit-modules (Debian, Ubuntu) or p11-kit-server (Fedora)" >&2; fi`,
		`cleanup() { rm -f "$S"; if [ "$(readlink "$L" 2>/dev/null)" = "$S" ]; then rm -f "$L"; fi; }`,
		// The EXIT trap also runs when the command itself says "exit";
		// the signals (HUP: the connection dropped) exit through it.
		`trap cleanup EXIT; trap "exit 129" HUP; trap "exit 130" INT; trap "exit 143" TERM`,
		`eval "$(printf "` + octalEscape(command) + `")"`,
		// Not the last command, so no shell runs it with exec (which
		// would skip the trap).
		"exit $?",
	}, "; ")
}

// refuseOpenSocket is the remote script's error for a forwarded socket
// that arrived with any permission for group or others.
// (No apostrophe: the script travels in single quotes.)
const refuseOpenSocket = `echo "stpm-bridge: error: the forwarded socket $S on $(hostname) arrived open to other users (mode $(ls -ld "$S" | cut -c1-10)): sshd there has a StreamLocalBindMask wider than 0177" >&2; ` +
	`echo "stpm-bridge: hint: ask the administrator of $(hostname) to keep StreamLocalBindMask in sshd_config at its default, 0177 (sockets only their owner can use)" >&2`

// octalEscape writes s for a printf format inside double quotes: letters,
// digits and a few harmless marks as they are, every other byte as an
// octal escape (backslash and three digits).
func octalEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(" _-./,:=+@", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "\\%03o", c)
		}
	}
	return b.String()
}

// remoteCommand is the command line given to ssh: the script run by sh,
// whatever the remote user's login shell.
func remoteCommand(sock, command string) string {
	return "exec sh -c " + shellQuote(remoteScript(sock, command))
}

// RemoteSocket is a fresh path for the forwarded socket: a new name each
// session, so a socket left by an earlier one never blocks the bind (a
// stock sshd has StreamLocalBindUnlink off). sshd creates it 0600 unless
// its StreamLocalBindMask was widened (then the session is refused).
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
	// TPM is the TPM spec for the session's own server (see ServeOptions);
	// with it, a running server (which may use another TPM) is not reused.
	TPM    string
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
		return 0, &Error{Msg: err.Error(), Advice: "usage: stpm-bridge ssh [--tpm SPEC] [ssh options] HOST [COMMAND]"}
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
	if o.TPM == "" && p11kit.Listening(local) {
		o.Warn("using the running server at %s", local)
	} else {
		// A server of this session's own, on a socket of its own: a
		// second session to the same or another host at the same time
		// must not lose its token when this one ends.
		local = filepath.Join(filepath.Dir(local), fmt.Sprintf("bridge-%d.sock", os.Getpid()))
		server, err = StartServer(ctx, ServeOptions{Socket: local, Module: o.Module, TPM: o.TPM})
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
	args = append(args, "--", host, remoteCommand(remote, strings.Join(command, " ")))

	cmd := exec.Command(sshPath, args...)
	cmd.Stdin, cmd.Stdout = o.Stdin, o.Stdout
	// ssh must not outlive us (SIGKILL included): it would keep the
	// forward, and with it the token, open on the remote host. The
	// kernel's parent-death signal follows the thread that forks, so
	// this goroutine keeps its thread until ssh has been waited for.
	cmd.SysProcAttr = sshProcAttr()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
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
		} else {
			dead = gone(local, done)
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

// gone watches the socket of a server this session reuses but did not
// start (stpm-bridge serve, its systemd unit) and is closed when nothing
// listens on it any more, or never if stop is closed first. It looks in
// /proc/net/unix and does not connect (see p11kit.Listening).
func gone(socket string, stop <-chan struct{}) <-chan struct{} {
	c := make(chan struct{})
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if !p11kit.Listening(socket) {
					close(c)
					return
				}
			}
		}
	}()
	return c
}

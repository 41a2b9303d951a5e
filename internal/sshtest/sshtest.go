// Package sshtest runs real OpenSSH processes (sshd, ssh, ssh-agent, ssh-add)
// for tests: loopback only, each instance in its own temporary directory,
// stopped by PID when the test ends.
//
// Typical use:
//
//	srv := sshtest.StartServer(t, []string{pubKeyLine})
//	env := sshtest.Env(t)
//	out, errOut, err := sshtest.Run(t, env, "ssh",
//		append(srv.SSHArgs("-o", "BatchMode=yes", "-i", keyFile), "echo", "hello")...)
//
// Things to know (OpenSSH 9.2p1 on Debian 12, run as root):
//   - ssh expands "~" from the passwd entry, not from $HOME, so
//     HOME=<temp dir> does not keep it away from the real ~/.ssh (as root:
//     /root/.ssh). SSHArgs therefore passes -F /dev/null (no ~/.ssh/config,
//     no /etc/ssh/ssh_config), its own known_hosts file and IdentityFile=none
//     (ssh 9.2 treats "none" as no file, so no default ~/.ssh/id_* keys);
//     traced: ssh then opens nothing under the home directory.
//   - ssh and sshd keep the FIRST value given for an option. SSHArgs puts the
//     caller's arguments before its own, and StartServer puts the extra
//     sshd_config lines before its own, so callers can override the defaults.
//   - IdentitiesOnly=yes drops PKCS#11 keys unless the matching .pub is also
//     an IdentityFile; BatchMode=yes cannot ask for a PIN or a passphrase (use
//     Askpass instead).
//   - `ssh -f` forks after authentication, so the PID of the background ssh
//     is not known to the caller (StartForward gets it from a control
//     socket). ssh 9.2 points the background child's stdio at /dev/null;
//     Run still captures output through files, so that no command leaving a
//     background process behind can block it on a pipe.
//   - Commands run by the server execute as the real user in the real home
//     directory (/root), and bash reads /etc/bash.bashrc and ~/.bashrc
//     first; the environment of the test is not passed on (use the
//     sshd_config SetEnv keyword).
//   - Unix socket paths are limited to 107 bytes and t.TempDir() can be
//     longer; SocketDir gives a short directory. ssh binds a ControlPath
//     under a temporary name 17 bytes longer (PATH.XXXXXXXXXXXXXXXX).
package sshtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	// SSHDPath is the sshd binary; sshd must be started by absolute path
	// (it re-executes itself).
	SSHDPath = "/usr/sbin/sshd"

	readyTimeout = 10 * time.Second
	stopTimeout  = 5 * time.Second
	runTimeout   = 60 * time.Second

	defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// Server is a running sshd listening on 127.0.0.1.
type Server struct {
	Addr           string // "127.0.0.1:PORT"
	Port           int
	Dir            string // config, host key, known_hosts, authorized_keys, sshd.log
	PID            int    // PID of the listening sshd
	User           string // login name to use: the current user, or OpenTo's
	AuthorizedKeys string // path of the AuthorizedKeysFile
	shared         bool   // OpenTo was called: files readable by others

	knownHosts string
	proc       *proc
}

// StartServer starts `sshd -D -e -f CONFIG -E Dir/sshd.log` on 127.0.0.1 and a
// free port with its own ed25519 host key, authorizing the given
// authorized_keys lines. extraConfig lines go before the defaults (sshd keeps
// the first value of a keyword, so they override them); a "Match" line and
// everything after it go after the defaults. It waits until the port accepts
// TCP connections and stops sshd and all its descendants (connection
// handlers, sessions) in t.Cleanup.
func StartServer(t testing.TB, authorizedKeys []string, extraConfig ...string) *Server {
	t.Helper()
	if _, err := os.Stat(SSHDPath); err != nil {
		skipOrFail(t, fmt.Sprintf("sshtest: %v (install openssh-server)", err))
	}
	u, err := user.Current()
	if err != nil {
		t.Fatalf("sshtest: current user: %v", err)
	}
	// Privilege separation directory; sshd refuses to start without it.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		if _, serr := os.Stat("/run/sshd"); serr != nil {
			t.Fatalf("sshtest: create /run/sshd: %v", err)
		}
	}

	dir := t.TempDir()
	s := &Server{
		Dir:            dir,
		User:           u.Username,
		AuthorizedKeys: filepath.Join(dir, "authorized_keys"),
		knownHosts:     filepath.Join(dir, "known_hosts"),
	}
	s.SetAuthorizedKeys(t, authorizedKeys)

	hostKey := filepath.Join(dir, "ssh_host_ed25519_key")
	if _, stderr, err := Run(t, Env(t), "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sshtest-host", "-f", hostKey); err != nil {
		t.Fatalf("sshtest: ssh-keygen host key: %v\n%s", err, stderr)
	}
	hostPub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		t.Fatalf("sshtest: %v", err)
	}

	head, rest := splitMatch(extraConfig)
	logPath := filepath.Join(dir, "sshd.log")
	config := filepath.Join(dir, "sshd_config")
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Logf("sshtest: stop sshd: %v", err)
		}
	})

	// The port we picked may be taken by someone else before sshd binds
	// it, so try a few.
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := FreePort()
		if err != nil {
			t.Fatalf("sshtest: %v", err)
		}
		lines := append([]string{}, head...)
		lines = append(lines,
			"Port "+strconv.Itoa(port),
			"ListenAddress 127.0.0.1",
			"AddressFamily inet",
			"HostKey "+hostKey,
			"AuthorizedKeysFile "+s.AuthorizedKeys,
			"StrictModes no",
			"UsePAM no",
			"PidFile none",
			"StreamLocalBindUnlink yes",
			"AllowStreamLocalForwarding yes",
			"AllowTcpForwarding yes",
			"PasswordAuthentication no",
			"KbdInteractiveAuthentication no",
			"PubkeyAuthentication yes",
			"PermitRootLogin prohibit-password",
			"PermitUserRC no",
			"PrintMotd no",
			"PrintLastLog no",
			"LogLevel DEBUG1",
			"MaxStartups 100",
		)
		lines = append(lines, rest...)
		if err := os.WriteFile(config, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatalf("sshtest: %v", err)
		}
		s.Port = port
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		kh := fmt.Sprintf("[127.0.0.1]:%d %s", port, strings.TrimSpace(string(hostPub)))
		if err := os.WriteFile(s.knownHosts, []byte(kh+"\n"), 0o600); err != nil {
			t.Fatalf("sshtest: %v", err)
		}

		p, err := startProc(logPath, nil, SSHDPath, "-D", "-e", "-f", config, "-E", logPath)
		if err != nil {
			t.Fatalf("sshtest: %v", err)
		}
		s.proc, s.PID = p, p.pid
		lastErr = p.waitTCP(s.Addr, readyTimeout)
		if lastErr == nil {
			return s
		}
		if err := s.stop(); err != nil {
			t.Logf("sshtest: stop sshd: %v", err)
		}
		if !strings.Contains(s.Log(), "in use") {
			break
		}
	}
	t.Fatalf("sshtest: sshd: %v\n--- tail of %s ---\n%s", lastErr, logPath, tail(s.Log(), 30))
	return nil
}

// splitMatch splits sshd_config lines at the first Match line.
func splitMatch(lines []string) (head, rest []string) {
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) > 0 && strings.EqualFold(f[0], "Match") {
			return lines[:i], lines[i:]
		}
	}
	return lines, nil
}

// stop stops sshd and everything it started: connection handlers run in
// sessions of their own and would survive the listener. They are stopped
// first, while the listener is still there to reap them.
func (s *Server) stop() error {
	if s.proc == nil {
		return nil
	}
	var err error
	desc := descendants(s.PID)
	// Deepest first, so each dies while its parent can still reap it.
	slices.Reverse(desc)
	for _, pid := range desc {
		if kerr := syscall.Kill(pid, syscall.SIGTERM); kerr != nil && !errors.Is(kerr, syscall.ESRCH) {
			err = errors.Join(err, fmt.Errorf("SIGTERM pid %d: %w", pid, kerr))
		}
		if !waitGone(pid, stopTimeout) {
			if kerr := syscall.Kill(pid, syscall.SIGKILL); kerr != nil && !errors.Is(kerr, syscall.ESRCH) {
				err = errors.Join(err, fmt.Errorf("SIGKILL pid %d: %w", pid, kerr))
			}
		}
	}
	err = errors.Join(err, s.proc.stop())
	s.proc = nil
	return err
}

// SetAuthorizedKeys replaces the contents of the server's authorized_keys
// file. sshd reads it at each authentication, so no restart is needed.
func (s *Server) SetAuthorizedKeys(t testing.TB, lines []string) {
	t.Helper()
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(strings.TrimRight(l, "\r\n"))
		b.WriteByte('\n')
	}
	tmp := s.AuthorizedKeys + ".tmp"
	mode := os.FileMode(0o600)
	if s.shared {
		mode = 0o644
	}
	if err := os.WriteFile(tmp, []byte(b.String()), mode); err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	if err := os.Chmod(tmp, mode); err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	if err := os.Rename(tmp, s.AuthorizedKeys); err != nil {
		t.Fatalf("sshtest: %v", err)
	}
}

// OpenTo lets another local user log in: sshd reads authorized_keys as
// the user logging in, so the server's directory (and the test
// directories above it) become traversable and authorized_keys and
// known_hosts readable; SSHArgs then log in as user.
func (s *Server) OpenTo(t testing.TB, user string) {
	t.Helper()
	s.shared = true
	s.User = user
	tmp := filepath.Clean(os.TempDir())
	for d := s.Dir; d != tmp && d != "/" && strings.HasPrefix(d, tmp+"/"); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatalf("sshtest: %v", err)
		}
	}
	for _, f := range []string{s.AuthorizedKeys, s.knownHosts} {
		if err := os.Chmod(f, 0o644); err != nil {
			t.Fatalf("sshtest: %v", err)
		}
	}
}

// KnownHosts is a known_hosts file that names this server's host key.
func (s *Server) KnownHosts() string { return s.knownHosts }

// Log returns the sshd log so far (LogLevel DEBUG1).
func (s *Server) Log() string {
	b, err := os.ReadFile(filepath.Join(s.Dir, "sshd.log"))
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	return string(b)
}

// SSHArgs returns ssh arguments that log in to this server without touching
// the user's ~/.ssh or /etc/ssh/ssh_config: extra, then
// -F /dev/null, the server's host key as the only known host (strict
// checking), IdentityFile=none, timeouts, -p PORT and USER@127.0.0.1. Append
// the remote command, if any, to the result. extra comes first so that its
// -o options win over these defaults.
//
// It sets neither BatchMode nor IdentitiesOnly (IdentitiesOnly=yes drops
// PKCS#11 keys); keys come from -i, PKCS11Provider or an agent
// (SSH_AUTH_SOCK or IdentityAgent).
func (s *Server) SSHArgs(extra ...string) []string {
	args := append([]string{}, extra...)
	return append(args,
		"-F", "/dev/null",
		"-o", "UserKnownHostsFile="+s.knownHosts,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "UpdateHostKeys=no",
		"-o", "IdentityFile=none",
		"-o", "ConnectTimeout=10",
		"-o", "ServerAliveInterval=5",
		"-o", "ServerAliveCountMax=3",
		"-p", strconv.Itoa(s.Port),
		s.User+"@127.0.0.1",
	)
}

// StartForward runs `ssh -f -N -L 127.0.0.1:LPORT:127.0.0.1:PORT` (PORT being
// this server's own port) with extraArgs and env, and returns LPORT once ssh
// has put itself in the background. ssh -f forks, so the PID of the
// background ssh is not a child of ours: the forward runs as a ControlMaster
// on a socket of its own (-M -S SOCK), its PID is read with `-O check`, and
// t.Cleanup stops it with `-O exit`, then by PID if it is still there.
func (s *Server) StartForward(t testing.TB, env []string, extraArgs ...string) (localPort int) {
	t.Helper()
	if env == nil {
		env = Env(t)
	}
	ctl := filepath.Join(SocketDir(t), "ctl")
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		lport, err := FreePort()
		if err != nil {
			t.Fatalf("sshtest: %v", err)
		}
		args := append([]string{
			"-f", "-N", "-M", "-S", ctl,
			"-o", "ExitOnForwardFailure=yes",
			"-L", fmt.Sprintf("127.0.0.1:%d:127.0.0.1:%d", lport, s.Port),
		}, extraArgs...)
		_, stderr, err := Run(t, env, "ssh", s.SSHArgs(args...)...)
		if err != nil {
			lastErr = fmt.Errorf("ssh -f -L: %v\n%s", err, stderr)
			if strings.Contains(stderr, "in use") {
				continue
			}
			break
		}
		pid, err := masterPID(t, env, ctl)
		if err != nil {
			t.Fatalf("sshtest: %v", err)
		}
		t.Cleanup(func() {
			// -O exit answers before the master is gone; wait for the PID.
			if _, stderr, err := Run(t, env, "ssh", "-F", "/dev/null", "-S", ctl, "-O", "exit", "sshtest"); err != nil {
				t.Logf("sshtest: ssh -O exit: %v %s", err, stderr)
			}
			if !waitGone(pid, stopTimeout) {
				t.Logf("sshtest: forward ssh pid %d still running after -O exit; killing it", pid)
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
					t.Logf("sshtest: kill %d: %v", pid, err)
				}
			}
		})
		return lport
	}
	t.Fatalf("sshtest: %v", lastErr)
	return 0
}

// masterPID asks the ControlMaster on ctl for its PID ("Master running (pid=N)").
func masterPID(t testing.TB, env []string, ctl string) (int, error) {
	_, stderr, err := Run(t, env, "ssh", "-F", "/dev/null", "-S", ctl, "-O", "check", "sshtest")
	if err != nil {
		return 0, fmt.Errorf("ssh -O check: %v %s", err, stderr)
	}
	_, rest, ok := strings.Cut(stderr, "pid=")
	if !ok {
		return 0, fmt.Errorf("ssh -O check: no pid in %q", stderr)
	}
	num, _, _ := strings.Cut(rest, ")")
	pid, err := strconv.Atoi(num)
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("ssh -O check: bad pid in %q", stderr)
	}
	return pid, nil
}

// RemoteForward starts `ssh -N -o ExitOnForwardFailure=yes -R
// remoteSock:localSock` (plus extra) in the foreground, so its PID is
// cmd.Process.Pid, waits until the server listens on remoteSock (a new
// socket, not one left from an earlier session; checked without connecting),
// and kills ssh in t.Cleanup. remoteSock must be absolute and its directory
// must exist. The server creates the socket
// owned by the login user with mode 0600 (StreamLocalBindMask 0177) and
// replaces a stale one (StreamLocalBindUnlink yes). The package waits for
// cmd: do not call cmd.Wait; cmd.Process.Kill or Signal may be used to drop
// the forward early. ssh's output goes to a file in a temporary directory,
// shown when the forward does not come up.
func (s *Server) RemoteForward(t testing.TB, env []string, remoteSock, localSock string, extra ...string) *exec.Cmd {
	t.Helper()
	if env == nil {
		env = Env(t)
	}
	if !filepath.IsAbs(remoteSock) {
		t.Fatalf("sshtest: RemoteForward: %q is not an absolute path", remoteSock)
	}
	// A socket left by an earlier session stays until the next bind
	// replaces it, and the new one often gets the same inode number: tell
	// them apart by inode and change time.
	old := sockID(remoteSock)
	logPath := filepath.Join(t.TempDir(), "ssh-R.log")
	args := append([]string{"-N", "-o", "ExitOnForwardFailure=yes", "-R", remoteSock + ":" + localSock}, extra...)
	p, err := startProc(logPath, env, "ssh", s.SSHArgs(args...)...)
	if err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	t.Cleanup(func() {
		if err := p.stop(); err != nil {
			t.Logf("sshtest: stop ssh -R: %v", err)
		}
	})
	deadline := time.Now().Add(readyTimeout)
	for {
		// sshd binds, then listens: a connect in between is refused.
		if id := sockID(remoteSock); id != (fileID{}) && id != old && listening(remoteSock) {
			return p.cmd
		}
		select {
		case <-p.done:
			t.Fatalf("sshtest: ssh -R %s:%s exited: %v\n%s", remoteSock, localSock, p.cmd.ProcessState, readTail(logPath, 30))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshtest: ssh -R: %s not bound after %v\n%s", remoteSock, readyTimeout, readTail(logPath, 30))
		}
	}
}

// fileID identifies one socket file: inode numbers are reused at once.
type fileID struct {
	ino  uint64
	sec  int64
	nsec int64
}

// sockID returns the identity of the socket at path, or the zero fileID if
// there is none.
func sockID(path string) fileID {
	st, err := os.Stat(path)
	if err != nil || st.Mode()&os.ModeSocket == 0 {
		return fileID{}
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{ino: 1}
	}
	return fileID{ino: sys.Ino, sec: sys.Ctim.Sec, nsec: sys.Ctim.Nsec}
}

// listening reports whether /proc/net/unix lists a listening socket bound to
// path (flag __SO_ACCEPTCON, 0x10000). Checking there does not connect, so
// it opens no channel through the forward.
func listening(path string) bool {
	b, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		return true // cannot tell; rely on the file alone
	}
	// "Num RefCount Protocol Flags Type St Inode Path"
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 8 || strings.Join(f[7:], " ") != path {
			continue
		}
		if flags, err := strconv.ParseUint(f[3], 16, 32); err == nil && flags&0x10000 != 0 {
			return true
		}
	}
	return false
}

// Env returns a clean environment for ssh, ssh-agent and ssh-add:
// HOME=<new temp dir>, PATH (the test's, or a default), then extra lines
// ("NAME=value"; a later line replaces an earlier one of the same NAME).
// SSH_AUTH_SOCK, DISPLAY, SSH_ASKPASS and everything else are left out unless
// given in extra. Note that ssh takes "~" from the passwd entry, not HOME.
func Env(t testing.TB, extra ...string) []string {
	t.Helper()
	path := os.Getenv("PATH")
	if path == "" {
		path = defaultPath
	}
	env := []string{"HOME=" + t.TempDir(), "PATH=" + path}
	for _, e := range extra {
		name, _, ok := strings.Cut(e, "=")
		if !ok || name == "" {
			t.Fatalf("sshtest: Env: %q is not NAME=value", e)
		}
		out := env[:0]
		for _, old := range env {
			if !strings.HasPrefix(old, name+"=") {
				out = append(out, old)
			}
		}
		env = append(out, e)
	}
	return env
}

// Askpass writes an SSH_ASKPASS program into a temporary directory that
// prints secret, and returns the environment lines that make ssh and ssh-add
// use it without a terminal or DISPLAY: SSH_ASKPASS=PROGRAM and
// SSH_ASKPASS_REQUIRE=force. Use them with Env, which sets no DISPLAY. The
// secret is kept in a file next to the program (no shell quoting) and
// printed without a newline; ssh cuts the answer at the first CR or LF, so a
// secret may not contain one.
func Askpass(t testing.TB, secret string) []string {
	t.Helper()
	if strings.ContainsAny(secret, "\r\n\x00") {
		t.Fatal("sshtest: Askpass: secret must not contain CR, LF or NUL")
	}
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte(secret), 0o600); err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	prog := filepath.Join(dir, "askpass")
	script := "#!/bin/sh\nexec cat " + shellQuote(secretFile) + "\n"
	if err := os.WriteFile(prog, []byte(script), 0o700); err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	return []string{"SSH_ASKPASS=" + prog, "SSH_ASKPASS_REQUIRE=force"}
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Agent is a running ssh-agent.
type Agent struct {
	Sock string // SSH_AUTH_SOCK
	PID  int
}

// StartAgent runs `ssh-agent -D -a SOCK -P '*'`: in the foreground (-D, so
// its PID is known; -d is the same plus debug output on stderr), accepting
// PKCS#11 modules from any path (-P; the default allows only /usr/lib/* and
// /usr/local/lib/*). It waits until the socket accepts connections and stops
// the agent in t.Cleanup. ssh-agent output goes to a file in a temporary
// directory, shown when the agent does not come up.
//
// extraEnv reaches the agent and so the PKCS#11 modules its helper loads.
func StartAgent(t testing.TB, extraEnv ...string) *Agent {
	t.Helper()
	sock := filepath.Join(SocketDir(t), "agent.sock")
	logPath := filepath.Join(t.TempDir(), "ssh-agent.log")
	p, err := startProc(logPath, Env(t, extraEnv...), "ssh-agent", "-D", "-a", sock, "-P", "*")
	if err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	t.Cleanup(func() {
		if err := p.stop(); err != nil {
			t.Logf("sshtest: stop ssh-agent: %v", err)
		}
	})
	if err := p.waitDial("unix", sock, readyTimeout); err != nil {
		t.Fatalf("sshtest: ssh-agent: %v\n%s", err, readTail(logPath, 20))
	}
	return &Agent{Sock: sock, PID: p.pid}
}

// Env returns the environment line that points ssh and ssh-add at the agent.
func (a *Agent) Env() []string {
	return []string{"SSH_AUTH_SOCK=" + a.Sock}
}

// Run runs name with args and env (nil means Env(t)), stdin from /dev/null, in
// a new session (no controlling terminal, so ssh cannot open /dev/tty), and
// a 60 s timeout. Output is captured through files (in a t.TempDir), so a
// command that leaves a background process holding its stdout/stderr
// returns when the command itself exits.
func Run(t testing.TB, env []string, name string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	if env == nil {
		env = Env(t)
	}
	dir := t.TempDir()
	outPath, errPath := filepath.Join(dir, "stdout"), filepath.Join(dir, "stderr")
	outF, err := os.Create(outPath)
	if err != nil {
		return "", "", err
	}
	errF, err := os.Create(errPath)
	if err != nil {
		return "", "", errors.Join(err, outF.Close())
	}

	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.Stdout = outF
	cmd.Stderr = errF
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s: timed out after %v: %w", name, runTimeout, err)
	}
	// Errors of our own (closing, reading) are added to the command's; the
	// command's error is returned as is when there are none.
	var own []error
	own = append(own, outF.Close(), errF.Close())
	ob, rerr := os.ReadFile(outPath)
	eb, rerr2 := os.ReadFile(errPath)
	if e := errors.Join(append(own, rerr, rerr2)...); e != nil {
		err = errors.Join(err, e)
	}
	return string(ob), string(eb), err
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, err
	}
	return port, nil
}

// SocketDir returns a new short directory for unix sockets (t.TempDir() may
// be too long for the 107-byte limit), removed at the end of the test.
func SocketDir(t testing.TB) string {
	t.Helper()
	if d := t.TempDir(); len(d) <= 60 {
		return d
	}
	d, err := os.MkdirTemp("/tmp", "sshtest")
	if err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(d); err != nil {
			t.Logf("sshtest: %v", err)
		}
	})
	return d
}

func skipOrFail(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func readTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	return tail(string(b), n)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

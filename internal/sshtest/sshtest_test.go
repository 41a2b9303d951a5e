package sshtest

import (
	"bufio"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// genKey makes an ed25519 key file protected by pass ("" for none) and
// returns its path and its public authorized_keys line.
func genKey(t *testing.T, pass string) (key, pub string) {
	t.Helper()
	key = filepath.Join(t.TempDir(), "id_ed25519")
	if _, stderr, err := Run(t, nil, "ssh-keygen", "-q", "-t", "ed25519", "-N", pass, "-C", "sshtest", "-f", key); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, stderr)
	}
	b, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	return key, strings.TrimSpace(string(b))
}

func closeOrLog(t *testing.T, c io.Closer) {
	t.Helper()
	if err := c.Close(); err != nil {
		t.Logf("close: %v", err)
	}
}

func mustRun(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	out, stderr, err := Run(t, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), err, out, stderr)
	}
	return out
}

func TestLoginWithFileKey(t *testing.T) {
	t.Parallel()
	key, pub := genKey(t, "")
	srv := StartServer(t, []string{pub})
	if os.Geteuid() == 0 && srv.User != "root" {
		t.Errorf("User = %q, want root", srv.User)
	}
	env := Env(t)
	mustRun(t, env, "ssh", append(srv.SSHArgs("-o", "BatchMode=yes", "-i", key), "true")...)
	// The remote command goes after SSHArgs.
	if out := mustRun(t, env, "ssh", append(srv.SSHArgs("-o", "BatchMode=yes", "-i", key), "echo", "hello")...); out != "hello\n" {
		t.Errorf("echo hello: got %q", out)
	}
	if !strings.Contains(srv.Log(), "Accepted publickey for "+srv.User) {
		t.Errorf("sshd log lacks the accepted login:\n%s", tail(srv.Log(), 20))
	}
}

func TestUnauthorizedKeyFails(t *testing.T) {
	t.Parallel()
	_, pub := genKey(t, "")
	other, otherPub := genKey(t, "")
	srv := StartServer(t, []string{pub})
	env := Env(t)
	args := append(srv.SSHArgs("-o", "BatchMode=yes", "-i", other), "true")
	_, stderr, err := Run(t, env, "ssh", args...)
	if err == nil {
		t.Fatal("login with an unauthorized key succeeded")
	}
	if !strings.Contains(stderr, "Permission denied") {
		t.Errorf("stderr: %q, want Permission denied", stderr)
	}
	// No restart needed after changing authorized_keys.
	srv.SetAuthorizedKeys(t, []string{pub, otherPub})
	mustRun(t, env, "ssh", args...)
}

// TestNoDefaultIdentities checks that SSHArgs keeps ssh away from the user's
// ~/.ssh (which ssh finds through the passwd entry, whatever HOME says).
func TestNoDefaultIdentities(t *testing.T) {
	t.Parallel()
	_, pub := genKey(t, "")
	srv := StartServer(t, []string{pub})
	_, stderr, err := Run(t, Env(t), "ssh", append(srv.SSHArgs("-v", "-o", "BatchMode=yes"), "true")...)
	if err == nil {
		t.Fatal("login without a key succeeded")
	}
	for _, line := range strings.Split(stderr, "\n") {
		if strings.Contains(line, "identity file") || strings.Contains(line, "Will attempt key") ||
			strings.Contains(line, "/.ssh/") || strings.Contains(line, "/etc/ssh/") {
			t.Errorf("ssh looked at a default file: %s", line)
		}
	}
}

func TestExtraConfig(t *testing.T) {
	t.Parallel()
	key, pub := genKey(t, "")
	srv := StartServer(t, []string{pub},
		"SetEnv SSHTEST_VAR=from-sshd",
		"Match User nobody-such",
		"\tPermitTTY no")
	out := mustRun(t, Env(t), "ssh", append(srv.SSHArgs("-o", "BatchMode=yes", "-i", key), "echo $SSHTEST_VAR")...)
	if out != "from-sshd\n" {
		t.Errorf("SetEnv: got %q", out)
	}
}

func TestEnv(t *testing.T) {
	t.Setenv("SSH_AUTH_SOCK", "/nonexistent")
	t.Setenv("DISPLAY", ":0")
	env := Env(t, "A=1", "A=2", "SSH_AUTH_SOCK=/x")
	var home, a, sock int
	for _, e := range env {
		switch {
		case strings.HasPrefix(e, "HOME="):
			home++
		case e == "A=2":
			a++
		case e == "SSH_AUTH_SOCK=/x":
			sock++
		case strings.HasPrefix(e, "A="), strings.HasPrefix(e, "SSH_AUTH_SOCK="), strings.HasPrefix(e, "DISPLAY="):
			t.Errorf("unexpected %q", e)
		}
	}
	if home != 1 || a != 1 || sock != 1 {
		t.Errorf("Env = %q", env)
	}
}

func TestAgent(t *testing.T) {
	t.Parallel()
	key, pub := genKey(t, "")
	srv := StartServer(t, []string{pub})
	var ag *Agent
	t.Run("use", func(t *testing.T) {
		ag = StartAgent(t)
		mustRun(t, Env(t, ag.Env()...), "ssh-add", key)
		if out := mustRun(t, Env(t, ag.Env()...), "ssh-add", "-L"); !strings.Contains(out, strings.Fields(pub)[1]) {
			t.Errorf("ssh-add -L: %q", out)
		}
		// Through SSH_AUTH_SOCK, and through IdentityAgent with no SSH_AUTH_SOCK.
		mustRun(t, Env(t, ag.Env()...), "ssh", append(srv.SSHArgs("-o", "BatchMode=yes"), "true")...)
		mustRun(t, Env(t), "ssh", append(srv.SSHArgs("-o", "BatchMode=yes", "-o", "IdentityAgent="+ag.Sock), "true")...)
	})
	if ag != nil && alive(ag.PID) {
		t.Errorf("ssh-agent pid %d still running after cleanup", ag.PID)
	}
}

func TestAskpass(t *testing.T) {
	t.Parallel()
	key, pub := genKey(t, "pass phrase 'with' \"quotes\" $HOME")
	srv := StartServer(t, []string{pub})
	args := append(srv.SSHArgs("-i", key), "true")

	mustRun(t, Env(t, Askpass(t, "pass phrase 'with' \"quotes\" $HOME")...), "ssh", args...)

	if _, _, err := Run(t, Env(t, Askpass(t, "wrong")...), "ssh", args...); err == nil {
		t.Error("login with a wrong passphrase succeeded")
	}

	ag := StartAgent(t)
	mustRun(t, Env(t, append(ag.Env(), Askpass(t, "pass phrase 'with' \"quotes\" $HOME")...)...), "ssh-add", key)
	mustRun(t, Env(t, ag.Env()...), "ssh", append(srv.SSHArgs("-o", "BatchMode=yes"), "true")...)
}

func TestStartForward(t *testing.T) {
	t.Parallel()
	key, pub := genKey(t, "")
	srv := StartServer(t, []string{pub})
	var lport int
	t.Run("forward", func(t *testing.T) {
		lport = srv.StartForward(t, Env(t), "-o", "BatchMode=yes", "-i", key)
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(lport)), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer closeOrLog(t, c)
		if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
		banner, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(banner, "SSH-2.0-") {
			t.Errorf("banner through the forward: %q", banner)
		}
	})
	if lport == 0 {
		return
	}
	// The cleanup stopped the background ssh: the forward is gone.
	if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(lport)), time.Second); err == nil {
		closeOrLog(t, c)
		t.Errorf("port %d still accepts connections after cleanup", lport)
	}
}

// echoServer accepts connections on a unix socket and answers each line
// with "echo: LINE".
func echoServer(t *testing.T, path string) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeOrLog(t, l) })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				// The peer may have gone already; nothing to report.
				defer func() { _ = c.Close() }()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					if _, err := c.Write([]byte("echo: " + sc.Text() + "\n")); err != nil {
						return
					}
				}
			}()
		}
	}()
}

func ping(t *testing.T, path string) {
	t.Helper()
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer closeOrLog(t, c)
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if line != "echo: ping\n" {
		t.Errorf("through the forward: %q", line)
	}
}

func TestRemoteForward(t *testing.T) {
	t.Parallel()
	key, pub := genKey(t, "")
	srv := StartServer(t, []string{pub})
	local := filepath.Join(SocketDir(t), "local.sock")
	echoServer(t, local)
	remoteDir := SocketDir(t)
	remote := filepath.Join(remoteDir, "remote.sock")

	var pid int
	t.Run("first", func(t *testing.T) {
		cmd := srv.RemoteForward(t, Env(t), remote, local, "-o", "BatchMode=yes", "-i", key)
		pid = cmd.Process.Pid
		st, err := os.Stat(remote)
		if err != nil {
			t.Fatal(err)
		}
		if m := st.Mode().Perm(); m != 0o600 {
			t.Errorf("remote socket mode %o, want 600", m)
		}
		ping(t, remote)
	})
	if alive(pid) {
		t.Errorf("ssh -R pid %d still running after cleanup", pid)
	}
	_, statErr := os.Stat(remote)
	t.Logf("remote socket left after the session: %v", statErr == nil)

	// A second session binds the same path (StreamLocalBindUnlink yes
	// replaces a socket left behind).
	t.Run("again", func(t *testing.T) {
		srv.RemoteForward(t, Env(t), remote, local, "-o", "BatchMode=yes", "-i", key)
		ping(t, remote)
	})
}

func TestRemoteForwardMissingDirFails(t *testing.T) {
	t.Parallel()
	key, pub := genKey(t, "")
	srv := StartServer(t, []string{pub})
	local := filepath.Join(SocketDir(t), "local.sock")
	echoServer(t, local)
	remote := filepath.Join(SocketDir(t), "missing", "remote.sock")
	args := srv.SSHArgs("-N", "-o", "BatchMode=yes", "-i", key, "-o", "ExitOnForwardFailure=yes", "-R", remote+":"+local)
	_, stderr, err := Run(t, Env(t), "ssh", args...)
	if err == nil {
		t.Fatal("ssh -R into a missing directory succeeded")
	}
	if !strings.Contains(stderr, "remote port forwarding failed") {
		t.Errorf("stderr: %q", stderr)
	}
}

// TestServerCleanup checks that stopping the server also ends the session
// processes it started, which sshd puts in sessions of their own.
func TestServerCleanup(t *testing.T) {
	t.Parallel()
	key, pub := genKey(t, "")
	var sshdPID int
	var desc []int
	var client *exec.Cmd
	t.Run("server", func(t *testing.T) {
		srv := StartServer(t, []string{pub})
		sshdPID = srv.PID
		client = exec.Command("ssh", append(srv.SSHArgs("-o", "BatchMode=yes", "-i", key), "sleep", "300")...)
		client.Env = Env(t)
		client.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := client.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !hasSleep(descendants(sshdPID)) {
			if time.Now().After(deadline) {
				t.Fatalf("no remote sleep under sshd pid %d", sshdPID)
			}
			time.Sleep(20 * time.Millisecond)
		}
		desc = descendants(sshdPID)
	})
	if client == nil {
		return
	}
	done := make(chan struct{})
	go func() {
		_ = client.Wait() // the server's exit ends it with an error status
		close(done)
	}()
	for _, pid := range append(desc, sshdPID) {
		if alive(pid) {
			t.Errorf("pid %d (under sshd %d) still running after cleanup", pid, sshdPID)
		}
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Error("ssh client still connected after the server stopped")
		if err := client.Process.Kill(); err != nil {
			t.Logf("kill client: %v", err)
		}
		<-done
	}
}

func hasSleep(pids []int) bool {
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		if err == nil && strings.TrimSpace(string(b)) == "sleep" {
			return true
		}
	}
	return false
}

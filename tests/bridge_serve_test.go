package tests

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/internal/sshtest"
)

// TestBridgeServe: "stpm-bridge serve" in the background prints the
// environment lines, the token is usable through them, and "serve -k"
// stops it and removes its socket; in the foreground it stops cleanly on
// SIGTERM.
func TestBridgeServe(t *testing.T) {
	need(t, "p11-kit")
	need(t, "pkcs11-tool")
	client := clientModule(t)
	tk := newToken(t, false)
	bridgeBin := filepath.Join(binDir, "stpm-bridge")
	sock := tk.path("bridge.sock") // no XDG_RUNTIME_DIR: ~/.simple-tpm-pk11
	env := append(append([]string{}, tk.env...), "XDG_RUNTIME_DIR=")

	cmd := exec.Command(bridgeBin, "serve")
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("stpm-bridge serve: %v", err)
	}
	m := regexp.MustCompile(`^P11_KIT_SERVER_ADDRESS=(unix:path=\S+); export P11_KIT_SERVER_ADDRESS;\nP11_KIT_SERVER_PID=(\d+); export P11_KIT_SERVER_PID;\n$`).FindStringSubmatch(string(out))
	if m == nil || m[1] != "unix:path="+sock {
		t.Fatalf("serve printed %q, want the lines for %s", out, sock)
	}
	pid, _ := strconv.Atoi(m[2]) // the pattern allows only digits
	t.Cleanup(func() {
		// Gone already when the test passed; still there when it failed.
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			t.Error(err)
		}
	})
	fi, err := os.Stat(sock)
	// Connecting needs write permission on the socket: none for others
	// (p11-kit server makes it 0711), and the directory is 0700 anyway.
	if err != nil || fi.Mode().Perm()&0o022 != 0 {
		t.Errorf("socket %s: %v, mode %v: others must not connect", sock, err, fi.Mode())
	}
	// Nothing listens on TCP: the bridge is unix sockets and ssh only.
	if ss, err := exec.Command("ss", "-ltnpH").Output(); err != nil {
		t.Errorf("ss: %v", err)
	} else if strings.Contains(string(ss), "p11-kit") || strings.Contains(string(ss), "stpm-bridge") || strings.Contains(string(ss), "server\"") {
		t.Errorf("a TCP listener of the bridge:\n%s", ss)
	}
	list := exec.Command("pkcs11-tool", "--module", client, "-O")
	list.Env = append(cleanEnv(), "P11_KIT_SERVER_ADDRESS="+m[1])
	if out, err := list.CombinedOutput(); err != nil || !strings.Contains(string(out), "label:      ec256") {
		t.Errorf("through the served socket: %v\n%s", err, out)
	}
	// A second server on the same socket is refused.
	again := exec.Command(bridgeBin, "serve", "-f")
	again.Env = env
	if out, err := again.CombinedOutput(); err == nil || !strings.Contains(string(out), "a server already listens on") {
		t.Errorf("second server: %v\n%s", err, out)
	}
	kill := exec.Command(bridgeBin, "serve", "-k")
	kill.Env = append(env, "P11_KIT_SERVER_PID="+m[2])
	if out, err := kill.CombinedOutput(); err != nil || !strings.Contains(string(out), "unset P11_KIT_SERVER_ADDRESS;") {
		t.Fatalf("serve -k: %v\n%s", err, out)
	}
	waitGone(t, sock)

	// Foreground, csh syntax, stopped by SIGTERM.
	fg := exec.Command(bridgeBin, "serve", "-f", "-c")
	fg.Env = env
	stdout, err := fg.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := fg.Start(); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 200)
	n, err := stdout.Read(line)
	if err != nil || !strings.HasPrefix(string(line[:n]), "setenv P11_KIT_SERVER_ADDRESS unix:path="+sock+";") {
		t.Fatalf("serve -f -c printed %q (%v)", line[:n], err)
	}
	if err := fg.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := fg.Wait(); err != nil {
		t.Errorf("serve -f after SIGTERM: %v", err)
	}
	waitGone(t, sock)
}

func waitGone(t testing.TB, path string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if !exists(path) {
			return
		}
	}
	t.Errorf("%s is still there", path)
}

// TestBridgeRefusesSharedDir: a socket directory others can write to
// could let them stand between ssh and the TPM.
func TestBridgeRefusesSharedDir(t *testing.T) {
	tk := newToken(t, false)
	dir := filepath.Join(tk.home, "shared")
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, "stpm-bridge"), "serve", "-f", "-n", filepath.Join(dir, "s.sock"))
	cmd.Env = tk.env
	out, err := cmd.CombinedOutput()
	want := "stpm-bridge: error: socket directory \"" + dir + "\" can be written by others (mode 0777)\nstpm-bridge: hint: run: chmod 700 \"" + dir + "\"\n"
	if err == nil || string(out) != want {
		t.Errorf("got %v\n%s\nwant\n%s", err, out, want)
	}
}

// TestBridgeForwardRefused: a server that does not forward unix sockets
// gets a clear error, and nothing keeps running.
func TestBridgeForwardRefused(t *testing.T) {
	need(t, "ssh")
	tk := newToken(t, false)
	srv := sshtest.StartServer(t, nil, "AllowStreamLocalForwarding no")
	key, pub := fileKey(t)
	srv.SetAuthorizedKeys(t, []string{pub})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "stpm-bridge"),
		append([]string{"ssh"}, append(srv.SSHArgs("-i", key, "-o", "BatchMode=yes"), "true")...)...)
	cmd.Env = tk.env
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 255 ||
		!strings.Contains(string(out), "stpm-bridge: error: "+srv.User+"@127.0.0.1 refused to forward the token's socket\n") {
		t.Errorf("got %v\n%s", err, out)
	}
	if left, _ := filepath.Glob(tk.path("bridge*.sock")); len(left) > 0 { // the pattern is valid
		t.Errorf("local sockets left behind: %v", left)
	}
}

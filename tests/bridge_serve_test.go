package tests

import (
	"bufio"
	"context"
	"errors"
	"fmt"
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
	"github.com/simple-tpm-pk11/simple-tpm-pk11/p11kit"
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

	cmd := command(t, bridgeBin, "serve")
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
	if ss, err := command(t, "ss", "-ltnpH").Output(); err != nil {
		t.Errorf("ss: %v", err)
	} else if strings.Contains(string(ss), "p11-kit") || strings.Contains(string(ss), "stpm-bridge") || strings.Contains(string(ss), "server\"") {
		t.Errorf("a TCP listener of the bridge:\n%s", ss)
	}
	list := command(t, "pkcs11-tool", "--module", client, "-O")
	list.Env = append(cleanEnv(), "P11_KIT_SERVER_ADDRESS="+m[1])
	if out, err := list.CombinedOutput(); err != nil || !strings.Contains(string(out), "label:      ec256") {
		t.Errorf("through the served socket: %v\n%s", err, out)
	}
	// A second server on the same socket is refused.
	again := command(t, bridgeBin, "serve", "-f")
	again.Env = env
	if out, err := again.CombinedOutput(); err == nil || !strings.Contains(string(out), "a server already listens on") {
		t.Errorf("second server: %v\n%s", err, out)
	}
	kill := command(t, bridgeBin, "serve", "-k")
	kill.Env = append(env, "P11_KIT_SERVER_PID="+m[2])
	if out, err := kill.CombinedOutput(); err != nil || !strings.Contains(string(out), "unset P11_KIT_SERVER_ADDRESS;") {
		t.Fatalf("serve -k: %v\n%s", err, out)
	}
	waitGone(t, sock)

	// Foreground, csh syntax, stopped by SIGTERM.
	fg := command(t, bridgeBin, "serve", "-f", "-c")
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

// TestBridgeRefusesSharedDir: a socket directory other users can enter,
// read or write is refused: they could stand between ssh and the TPM, or
// reach the socket and ask the TPM to sign.
func TestBridgeRefusesSharedDir(t *testing.T) {
	tk := newToken(t, false)
	for _, mode := range []os.FileMode{0o777, 0o755, 0o750, 0o701} {
		dir := filepath.Join(tk.home, fmt.Sprintf("shared-%o", mode))
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		// A server that starts anyway would run until the timeout.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, filepath.Join(binDir, "stpm-bridge"), "serve", "-f", "-n", filepath.Join(dir, "s.sock"))
		cmd.Env = tk.env
		out, err := cmd.CombinedOutput()
		cancel()
		want := fmt.Sprintf("stpm-bridge: error: socket directory %q is open to other users (mode %04o, want 0700)\n"+
			"stpm-bridge: hint: run: chmod 700 %q\n", dir, mode, dir)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 || string(out) != want {
			t.Errorf("mode %04o: got %v\n%s\nwant status 1 and\n%s", mode, err, out, want)
		}
	}
}

// TestBridgeServeRuntimeDir: with XDG_RUNTIME_DIR set, serve makes
// $XDG_RUNTIME_DIR/simple-tpm-pk11 (0700) and listens there; SIGINT stops
// "serve -f" with status 0 and removes the socket; -s and -c print sh and
// csh syntax; -n chooses the socket.
func TestBridgeServeRuntimeDir(t *testing.T) {
	need(t, "p11-kit")
	tk := newToken(t, false)
	rt := sshtest.SocketDir(t)
	env := append(append([]string{}, tk.env...), "XDG_RUNTIME_DIR="+rt)
	bridgeBin := filepath.Join(binDir, "stpm-bridge")
	dir := filepath.Join(rt, "simple-tpm-pk11")
	sock := filepath.Join(dir, "bridge.sock")
	q := regexp.QuoteMeta

	// Foreground, stopped by SIGINT.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fg := exec.CommandContext(ctx, bridgeBin, "serve", "-f")
	fg.Env = env
	stdout, err := fg.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var fgErr strings.Builder
	fg.Stderr = &fgErr
	if err := fg.Start(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	sc := bufio.NewScanner(stdout)
	for i := 0; i < 2 && sc.Scan(); i++ {
		out.WriteString(sc.Text() + "\n")
	}
	want := "^P11_KIT_SERVER_ADDRESS=unix:path=" + q(sock) + "; export P11_KIT_SERVER_ADDRESS;\nP11_KIT_SERVER_PID=" +
		strconv.Itoa(fg.Process.Pid) + "; export P11_KIT_SERVER_PID;\n$"
	if !regexp.MustCompile(want).MatchString(out.String()) {
		t.Errorf("serve -f printed %q, want %s", out.String(), want)
	}
	if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Errorf("%s: %v %v, want a directory with mode 0700", dir, fi, err)
	}
	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Errorf("%s: %v %v, want a socket", sock, fi, err)
	}
	if err := fg.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := fg.Wait(); err != nil {
		t.Errorf("serve -f after SIGINT: %v, want status 0\n%s", err, fgErr.String())
	}
	if exists(sock) {
		t.Errorf("%s is still there after SIGINT", sock)
	}

	// In the background: -s, -c, -n.
	for _, tc := range []struct {
		args []string
		sock string
		want string // with %s for the address and %d for the pid
	}{
		{[]string{"-s"}, sock, "^P11_KIT_SERVER_ADDRESS=%s; export P11_KIT_SERVER_ADDRESS;\nP11_KIT_SERVER_PID=(\\d+); export P11_KIT_SERVER_PID;\n$"},
		{[]string{"-c"}, sock, "^setenv P11_KIT_SERVER_ADDRESS %s;\nsetenv P11_KIT_SERVER_PID (\\d+);\n$"},
		{[]string{"-n", filepath.Join(dir, "other.sock")}, filepath.Join(dir, "other.sock"), "^P11_KIT_SERVER_ADDRESS=%s; export P11_KIT_SERVER_ADDRESS;\nP11_KIT_SERVER_PID=(\\d+); export P11_KIT_SERVER_PID;\n$"},
	} {
		cmd := exec.CommandContext(ctx, bridgeBin, append([]string{"serve"}, tc.args...)...)
		cmd.Env = env
		out, err := cmd.Output()
		re := regexp.MustCompile(fmt.Sprintf(tc.want, q("unix:path="+tc.sock)))
		m := re.FindStringSubmatch(string(out))
		if err != nil || m == nil {
			t.Errorf("serve %v: %v, printed %q, want %s", tc.args, err, out, re)
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil {
			t.Fatal(err)
		}
		if !p11kit.Listening(tc.sock) {
			t.Errorf("serve %v: nothing listens on %s", tc.args, tc.sock)
		}
		stopServe(t, pid, tc.sock)
	}
	noBridgeProcesses(t, tk)
}

// TestBridgeNoP11Kit: without the p11-kit command (PATH without it, and
// /usr/bin/p11-kit hidden in a private mount namespace) serve says what
// to install.
func TestBridgeNoP11Kit(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root for a private mount namespace")
		}
		t.Skip("needs root for a private mount namespace")
	}
	need(t, "unshare")
	tk := newToken(t, false)
	sock := filepath.Join(tk.dir, "s.sock")
	hide := `if [ -e /usr/bin/p11-kit ]; then mount --bind /dev/null /usr/bin/p11-kit || exit 99; fi; PATH=/nonexistent; export PATH; exec "$0" "$@"`
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--propagation", "private", "sh", "-c", hide,
		filepath.Join(binDir, "stpm-bridge"), "serve", "-f", "-n", sock, "--module", modulePath)
	cmd.Env = tk.env
	out, err := cmd.CombinedOutput()
	want := "stpm-bridge: error: the p11-kit command not found (tried $PATH, /usr/bin/p11-kit)\n" +
		"stpm-bridge: hint: install the p11-kit package (apt-get install p11-kit)\n"
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || string(out) != want {
		t.Errorf("got %v\n%s\nwant status 1 and\n%s", err, out, want)
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
	noLocalSockets(t, tk)
	noBridgeProcesses(t, tk)
}

// TestBridgeServeTwice: a second "stpm-bridge serve" in the background on
// the socket a first one listens on fails before it starts anything: exit
// 1, the cause and what to do on stderr, nothing on stdout (eval of the
// old output would have named a process that had already exited), and the
// first server keeps running.
func TestBridgeServeTwice(t *testing.T) {
	need(t, "p11-kit")
	tk := newToken(t, false)
	sock := filepath.Join(runtimeDir(t, tk), "simple-tpm-pk11", "bridge.sock")
	addr, pid := startServe(t, tk.env)
	for _, args := range [][]string{{"serve"}, {"serve", "-n", sock}, {"serve", "-c"}} {
		cmd := command(t, filepath.Join(binDir, "stpm-bridge"), args...)
		cmd.Env = tk.env
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		want := fmt.Sprintf("stpm-bridge: error: a server already listens on %q\n", sock) +
			"stpm-bridge: hint: use it (export P11_KIT_SERVER_ADDRESS=" + addr + `), or stop it: eval "$(stpm-bridge serve -k)" in the shell that started it, or systemctl --user stop stpm-bridge.service` + "\n"
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 || stdout.Len() != 0 || stderr.String() != want {
			t.Errorf("%v: %v\nstdout: %q\nstderr: %s\nwant status 1, no stdout and:\n%s", args, err, stdout.String(), stderr.String(), want)
		}
	}
	if servers := bridgeProcesses(t, tk, "stpm-bridge"); len(servers) != 1 || servers[0].pid != pid {
		t.Errorf("want only the first server (pid %d), found %v", pid, servers)
	}
	if !p11kit.Listening(sock) {
		t.Errorf("the first server no longer listens on %s", sock)
	}
	stopServe(t, pid, sock)
	noBridgeProcesses(t, tk)
}

// TestBridgeServeTPM: "serve --tpm SPEC" serves the token of that TPM,
// whatever SIMPLE_TPM_PK11_TPM says: a signature through the served
// socket verifies with the key made on it. A bad spec is refused before
// anything starts.
func TestBridgeServeTPM(t *testing.T) {
	for _, tool := range []string{"p11-kit", "pkcs11-tool", "openssl"} {
		need(t, tool)
	}
	client := clientModule(t)
	tk := newToken(t, false)
	sock := filepath.Join(runtimeDir(t, tk), "simple-tpm-pk11", "bridge.sock")
	env := append(append([]string{}, tk.env...), "SIMPLE_TPM_PK11_TPM=swtpm:path=/nonexistent/swtpm.sock")
	addr, pid := startServe(t, env, "--tpm", tk.tpm.Spec)
	data := tk.write(t, "data", []byte("served from the TPM of --tpm\n"))
	sign := command(t, "pkcs11-tool", "--module", client, "--sign", "--id", tk.id(t, "rsa"), "-m", "SHA256-RSA-PKCS",
		"-i", data, "-o", tk.path("sig"))
	sign.Env = append(cleanEnv(), "P11_KIT_SERVER_ADDRESS="+addr, "HOME="+t.TempDir())
	if out, err := sign.CombinedOutput(); err != nil {
		t.Fatalf("pkcs11-tool --sign through serve --tpm: %v\n%s", err, out)
	}
	verify := command(t, "openssl", "dgst", "-sha256", "-verify", tk.pem(t, "rsa"), "-signature", tk.path("sig"), data)
	if out, err := verify.CombinedOutput(); err != nil || !strings.Contains(string(out), "Verified OK") {
		t.Errorf("openssl: %v\n%s", err, out)
	}
	stopServe(t, pid, sock)

	bad := command(t, filepath.Join(binDir, "stpm-bridge"), "serve", "--tpm", "swtpm:port=x")
	bad.Env = tk.env
	var stdout, stderr strings.Builder
	bad.Stdout, bad.Stderr = &stdout, &stderr
	err := bad.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || stdout.Len() != 0 ||
		!strings.HasPrefix(stderr.String(), `stpm-bridge: error: bad TPM spec "swtpm:port=x": port must be a number from 1 to 65535 (from --tpm)`+"\n") {
		t.Errorf("serve --tpm swtpm:port=x: %v\nstdout: %q\nstderr: %s", err, stdout.String(), stderr.String())
	}
	if exists(sock) {
		t.Errorf("%s exists after a refused --tpm", sock)
	}
	noBridgeProcesses(t, tk)
}

// TestBridgeSubcommandHelp: -h and --help after any command print the
// usage on stdout with status 0 ("stpm-bridge ssh --help" once said "no
// host given"); after the host they belong to the remote command.
func TestBridgeSubcommandHelp(t *testing.T) {
	bin := filepath.Join(binDir, "stpm-bridge")
	usage, err := command(t, bin, "--help").Output()
	if err != nil || !strings.HasPrefix(string(usage), "Usage:\n") {
		t.Fatalf("stpm-bridge --help: %v\n%s", err, usage)
	}
	for _, sub := range []string{"ssh", "serve", "remote-setup", "register", "unregister"} {
		for _, flag := range []string{"-h", "--help"} {
			cmd := command(t, bin, sub, flag)
			cmd.Env = append(cleanEnv(), "HOME="+t.TempDir())
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil || stdout.String() != string(usage) || stderr.Len() != 0 {
				t.Errorf("stpm-bridge %s %s: %v\nstdout: %q\nstderr: %q\nwant status 0 and the usage on stdout only", sub, flag, err, stdout.String(), stderr.String())
			}
		}
	}
	for _, args := range [][]string{{"ssh", "-v", "--help"}, {"ssh", "-o", "BatchMode=yes", "-h"}} {
		out, err := command(t, bin, args...).Output()
		if err != nil || string(out) != string(usage) {
			t.Errorf("stpm-bridge %v: %v\n%s", args, err, out)
		}
	}
}

package tests

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/internal/sshtest"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/p11kit"
)

// clientModule and proxyModule are p11-kit's client and proxy modules.
func clientModule(t testing.TB) string {
	t.Helper()
	p, err := p11kit.FindClientModule()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	return p
}

func proxyModule(t testing.TB) string {
	t.Helper()
	p, err := p11kit.FindProxy()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	return p
}

// fingerprint is the SHA256 fingerprint sshd logs for a .pub file.
func fingerprint(t testing.TB, pub string) string {
	t.Helper()
	out, err := exec.Command("ssh-keygen", "-l", "-f", pub).Output()
	if err != nil {
		t.Fatalf("ssh-keygen -l %s: %v", pub, err)
	}
	f := strings.Fields(string(out))
	if len(f) < 2 {
		t.Fatalf("ssh-keygen -l: %q", out)
	}
	return f[1]
}

// fileKey makes a throwaway ed25519 key for logins that are not under test.
func fileKey(t testing.TB) (path, pub string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "id_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	b, err := os.ReadFile(path + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	return path, strings.TrimSpace(string(b))
}

// sharedDir is a directory other local users can read (for known_hosts
// copies and askpass programs used by the test user).
func sharedDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "stpm-shared-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(d); err != nil {
			t.Error(err)
		}
	})
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// nestedSSH is the command that runs on the "remote" host: an ssh back to
// the same sshd that can only authenticate with the PKCS#11 module given.
func nestedSSH(t testing.TB, srv *sshtest.Server, module, askpassPIN string) string {
	t.Helper()
	dir := sharedDir(t)
	kh := filepath.Join(dir, "known_hosts")
	b, err := os.ReadFile(srv.KnownHosts())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kh, b, 0o644); err != nil {
		t.Fatal(err)
	}
	prefix, batch := "", "-o BatchMode=yes"
	if askpassPIN != "" {
		ap := filepath.Join(dir, "askpass")
		if err := os.WriteFile(ap, []byte("#!/bin/sh\necho '"+askpassPIN+"'\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		prefix, batch = "SSH_ASKPASS="+ap+" SSH_ASKPASS_REQUIRE=force ", ""
	}
	return prefix + "ssh -F /dev/null -o UserKnownHostsFile=" + kh + " -o GlobalKnownHostsFile=/dev/null" +
		" -o StrictHostKeyChecking=yes -o IdentityFile=none -o PKCS11Provider=" + module + " " + batch +
		" -p " + strconv.Itoa(srv.Port) + " " + srv.User + "@127.0.0.1 echo nested-ok"
}

// runBridge runs "stpm-bridge ssh" as the workstation user (root here)
// with the token's environment.
func runBridge(t testing.TB, tk *token, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "stpm-bridge"), append([]string{"ssh"}, args...)...)
	cmd.Env = tk.env
	cmd.Dir = tk.dir
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// TestBridgeSSH is the product's main promise end to end: on a "remote"
// host (a loopback sshd, logged in as an unprivileged user), ssh signs
// with the workstation's TPM key through stpm-bridge ssh; without the
// bridge the same command fails.
func TestBridgeSSH(t *testing.T) {
	for _, tc := range []struct {
		name string
		pin  bool
		key  string
	}{{"no-pin-batchmode", false, "ec256"}, {"pin-askpass", true, "pin"}} {
		t.Run(tc.name, func(t *testing.T) {
			rh := newRemoteHost(t, tc.pin, tc.key)
			u, tk, srv, outer := rh.user, rh.tk, rh.srv, rh.outer
			pin := ""
			if tc.pin {
				pin = testPIN
			}
			nested := nestedSSH(t, srv, clientModule(t), pin)
			before := remoteSockets(t)

			stdout, stderr, err := runBridge(t, tk, append(outer, nested)...)
			if err != nil || strings.TrimSpace(stdout) != "nested-ok" {
				t.Fatalf("stpm-bridge ssh: %v\nstdout: %s\nstderr: %s\nsshd:\n%s", err, stdout, stderr, tail(srv.Log(), 30))
			}
			accepted := regexp.MustCompile(`Accepted publickey for ` + u.Username + ` from 127\.0\.0\.1 port \d+ ssh2: \S+ ` +
				regexp.QuoteMeta(fingerprint(t, tk.path(tc.key+".key.pub"))))
			if !accepted.MatchString(srv.Log()) {
				t.Errorf("sshd did not accept the TPM key %s:\n%s", tc.key, tail(srv.Log(), 30))
			}
			// Nothing left behind: the session's server and both sockets.
			if left, _ := filepath.Glob(tk.path("bridge*.sock")); len(left) > 0 { // the pattern is valid
				t.Errorf("local sockets left after the session: %v", left)
			}
			if after := remoteSockets(t); len(after) > len(before) {
				t.Errorf("forwarded sockets left in /tmp: %v", after)
			}

			// The same nested command without the bridge fails.
			_, stderr, err = sshtest.Run(t, sshtest.Env(t), "ssh", append(outer, nested)...)
			if err == nil {
				t.Fatalf("the nested login worked without the bridge:\n%s", stderr)
			}
			tk.noTransient(t)
		})
	}
}

func remoteSockets(t testing.TB) []string {
	t.Helper()
	m, err := filepath.Glob("/tmp/stpm-bridge.*.sock")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// runAs runs a command as u, failing the test on error.
func runAs(t testing.TB, u *user.User, env []string, name string, args ...string) string {
	t.Helper()
	out, err := asUser(t, u, env, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s (as %s): %v\n%s", name, strings.Join(args, " "), u.Username, err, out)
	}
	return string(out)
}

// TestBridgeRemoteSetup: after "stpm-bridge remote-setup" on the remote
// host, programs there that use p11-kit-proxy.so see the forwarded token.
func TestBridgeRemoteSetup(t *testing.T) {
	rh := newRemoteHost(t, false, "ec384")
	u, tk, srv := rh.user, rh.tk, rh.srv
	proxy := proxyModule(t)
	path := "PATH=/usr/local/bin:/usr/bin:/bin"
	out := runAs(t, u, []string{path}, filepath.Join(binDir, "stpm-bridge"), "remote-setup")
	t.Cleanup(func() { runAs(t, u, []string{path}, filepath.Join(binDir, "stpm-bridge"), "remote-setup", "--remove") })
	moduleFile := filepath.Join(u.HomeDir, ".config/pkcs11/modules/simple-tpm-pk11-bridge.module")
	if !strings.Contains(out, `wrote "`+moduleFile+`"`) || !strings.Contains(out, "RemoteForward ") {
		t.Errorf("remote-setup said:\n%s", out)
	}

	// A link left by a session that died (its socket long gone) must not
	// get in the way of the next one.
	stale := filepath.Join(u.HomeDir, ".simple-tpm-pk11", "forwarded.sock")
	runAs(t, u, []string{path}, "ln", "-sfn", "/tmp/stpm-bridge.dead.sock", stale)
	outer := rh.outer
	nested := `stat -c "mode=%a" "${P11_KIT_SERVER_ADDRESS#unix:path=}"; p11-kit list-modules; ` + nestedSSH(t, srv, proxy, "")
	stdout, stderr, err := runBridge(t, tk, append(outer, nested)...)
	if err != nil || !strings.Contains(stdout, "nested-ok") {
		t.Fatalf("nested ssh through p11-kit-proxy: %v\nstdout: %s\nstderr: %s\nsshd:\n%s", err, stdout, stderr, tail(srv.Log(), 30))
	}
	if !strings.Contains(stdout, "mode=600\n") {
		t.Errorf("the forwarded socket on the remote host must be 0600 (its user only):\n%s", stdout)
	}
	if !strings.Contains(stdout, "simple-tpm-pk11-bridge") || !strings.Contains(stdout, "token: simple-tpm-pk11") {
		t.Errorf("p11-kit list-modules on the remote does not show the forwarded token:\n%s", stdout)
	}
	if !strings.Contains(srv.Log(), fingerprint(t, tk.path("ec384.key.pub"))) {
		t.Errorf("sshd did not accept the TPM key:\n%s", tail(srv.Log(), 20))
	}
	// The stable link is removed when the session ends.
	if exists(filepath.Join(u.HomeDir, ".simple-tpm-pk11", "forwarded.sock")) {
		t.Error("the remote link to the forwarded socket is still there")
	}
}

// TestP11KitRegistered: "stpm-bridge register" as an ordinary user makes
// p11-kit load the module: p11-kit list-modules shows it and its token,
// ssh-keygen -D and ssh use the keys through p11-kit-proxy.so.
func TestP11KitRegistered(t *testing.T) {
	for _, tool := range []string{"ssh", "p11-kit", "runuser"} {
		need(t, tool)
	}
	u := testUser(t)
	proxy := proxyModule(t)
	tk := newToken(t, false)
	chownTree(t, u, tk.home)
	openParents(t, tk.home)
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin", "SIMPLE_TPM_PK11_CONFIG=" + tk.path("config"),
		"SIMPLE_TPM_PK11_TPM=" + tk.tpm.Spec}
	bridgeBin := filepath.Join(binDir, "stpm-bridge")
	out := runAs(t, u, env, bridgeBin, "register", "--module", modulePath)
	t.Cleanup(func() { runAs(t, u, env, bridgeBin, "unregister") })
	if !strings.Contains(out, filepath.Join(u.HomeDir, ".config/pkcs11/modules/simple-tpm-pk11.module")) {
		t.Errorf("register said:\n%s", out)
	}
	out = runAs(t, u, env, "p11-kit", "list-modules")
	if !strings.Contains(out, "simple-tpm-pk11: "+modulePath) || !strings.Contains(out, "token: simple-tpm-pk11") {
		t.Errorf("p11-kit list-modules:\n%s", out)
	}
	out = runAs(t, u, env, "ssh-keygen", "-D", proxy)
	for _, k := range testKeys {
		if !strings.Contains(out, strings.Fields(tk.pub(t, k.name))[1]) {
			t.Errorf("ssh-keygen -D p11-kit-proxy.so lacks %s:\n%s", k.name, out)
		}
	}
	srv := sshtest.StartServer(t, nil)
	srv.OpenTo(t, u.Username)
	srv.SetAuthorizedKeys(t, []string{tk.pub(t, "rsa")})
	nested := nestedSSH(t, srv, proxy, "")
	out = runAs(t, u, env, "sh", "-c", nested)
	if !strings.Contains(out, "nested-ok") || !strings.Contains(srv.Log(), fingerprint(t, tk.path("rsa.key.pub"))) {
		t.Errorf("ssh through p11-kit-proxy.so:\n%s\nsshd:\n%s", out, tail(srv.Log(), 20))
	}
	out = runAs(t, u, env, bridgeBin, "unregister")
	if !strings.Contains(out, "removed") {
		t.Errorf("unregister said:\n%s", out)
	}
	if out = runAs(t, u, env, "p11-kit", "list-modules"); strings.Contains(out, modulePath) {
		t.Errorf("still registered after unregister:\n%s", out)
	}
}

// openParents makes the test directories above dir traversable for other
// users (t.TempDir makes them 0700).
func openParents(t testing.TB, dir string) {
	t.Helper()
	tmp := filepath.Clean(os.TempDir())
	for d := filepath.Dir(dir); d != tmp && strings.HasPrefix(d, tmp+"/"); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// TestP11KitServer: the module exported with p11-kit server and used
// through p11-kit-client.so by pkcs11-tool, ssh-keygen -D and ssh.
func TestP11KitServer(t *testing.T) {
	for _, tool := range []string{"ssh", "p11-kit", "pkcs11-tool", "openssl"} {
		need(t, tool)
	}
	client := clientModule(t)
	tk := newToken(t, false)
	ps := startServer(t, tk.env)
	clientEnv := append(cleanEnv(), "P11_KIT_SERVER_ADDRESS="+ps.Address, "HOME="+t.TempDir())
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = clientEnv
		cmd.Dir = tk.dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return string(out)
	}
	out := run("pkcs11-tool", "--module", client, "-L", "-O")
	for _, k := range testKeys {
		if !strings.Contains(out, "label:      "+k.name) {
			t.Errorf("pkcs11-tool through p11-kit-client.so lacks %s:\n%s", k.name, out)
		}
	}
	data := tk.write(t, "data", []byte("through p11-kit\n"))
	run("pkcs11-tool", "--module", client, "--sign", "--id", tk.id(t, "rsa"), "-m", "SHA256-RSA-PKCS", "-i", data, "-o", tk.path("sig"))
	if out := run("openssl", "dgst", "-sha256", "-verify", tk.pem(t, "rsa"), "-signature", tk.path("sig"), data); !strings.Contains(out, "Verified OK") {
		t.Errorf("openssl: %s", out)
	}
	out = run("ssh-keygen", "-D", client)
	for _, k := range testKeys {
		if !strings.Contains(out, strings.Fields(tk.pub(t, k.name))[1]) {
			t.Errorf("ssh-keygen -D p11-kit-client.so lacks %s:\n%s", k.name, out)
		}
	}
	srv := sshtest.StartServer(t, []string{tk.pub(t, "ec256")})
	stdout, stderr, err := sshtest.Run(t, sshtest.Env(t, "P11_KIT_SERVER_ADDRESS="+ps.Address), "ssh",
		append(srv.SSHArgs("-o", "PKCS11Provider="+client, "-o", "BatchMode=yes"), "echo", "via-p11-kit")...)
	if err != nil || strings.TrimSpace(stdout) != "via-p11-kit" {
		t.Fatalf("ssh through p11-kit-client.so: %v\n%s\n%s", err, stdout, stderr)
	}
	tk.noTransient(t)
}

// TestBridgeInteractive: without a command, stpm-bridge ssh gives a login
// shell on a terminal, in which the forwarded token is already set up.
func TestBridgeInteractive(t *testing.T) {
	for _, tool := range []string{"ssh", "p11-kit", "script"} {
		need(t, tool)
	}
	u := testUser(t)
	tk := newToken(t, false)
	srv := sshtest.StartServer(t, nil)
	srv.OpenTo(t, u.Username)
	key, pub := fileKey(t)
	srv.SetAuthorizedKeys(t, []string{pub})
	args := append([]string{filepath.Join(binDir, "stpm-bridge"), "ssh"}, srv.SSHArgs("-i", key, "-o", "BatchMode=yes")...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// script(1) gives stpm-bridge a terminal, as a user's shell would.
	cmd := exec.CommandContext(ctx, "script", "-qec", strings.Join(args, " "), "/dev/null")
	cmd.Env = tk.env
	cmd.Stdin = strings.NewReader("echo ADDR=$P11_KIT_SERVER_ADDRESS; tty; exit 7\n")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 7 {
		t.Errorf("exit status: %v, want 7 (the remote shell's)\n%s", err, out)
	}
	if !regexp.MustCompile(`ADDR=unix:path=/tmp/stpm-bridge\.[0-9a-f]+\.sock`).Match(out) || !strings.Contains(string(out), "/dev/pts/") {
		t.Errorf("no terminal or no address in the remote shell:\n%s", out)
	}
}

// remoteHost is the stage of the bridge tests: a token on the
// "workstation" (this test, as root) and a loopback sshd as the "remote
// host", where the unprivileged test user logs in with a throwaway file
// key (outer) and the TPM key tpmKey is authorized too.
type remoteHost struct {
	user  *user.User
	tk    *token
	srv   *sshtest.Server
	outer []string // ssh options and destination for the outer login
}

func newRemoteHost(t *testing.T, pin bool, tpmKey string) *remoteHost {
	t.Helper()
	for _, tool := range []string{"ssh", "p11-kit", "runuser"} {
		need(t, tool)
	}
	u := testUser(t)
	tk := newToken(t, pin)
	srv := sshtest.StartServer(t, nil)
	srv.OpenTo(t, u.Username)
	key, pub := fileKey(t)
	srv.SetAuthorizedKeys(t, []string{pub, tk.pub(t, tpmKey)})
	return &remoteHost{user: u, tk: tk, srv: srv, outer: srv.SSHArgs("-i", key, "-o", "BatchMode=yes")}
}

// TestBridgeConcurrent: two bridge sessions at once each have their own
// server; when the first ends, the second keeps its token.
func TestBridgeConcurrent(t *testing.T) {
	rh := newRemoteHost(t, false, "ec256")
	tk, outer := rh.tk, rh.outer
	nested := nestedSSH(t, rh.srv, clientModule(t), "")
	type result struct {
		out, errOut string
		err         error
	}
	short, long := make(chan result, 1), make(chan result, 1)
	go func() {
		o, e, err := runBridge(t, tk, slices.Concat(outer, []string{nested})...)
		short <- result{o, e, err}
	}()
	go func() {
		// Signs again after the short session has ended.
		o, e, err := runBridge(t, tk, slices.Concat(outer, []string{nested + "; sleep 2; " + nested})...)
		long <- result{o, e, err}
	}()
	for name, ch := range map[string]chan result{"short": short, "long": long} {
		r := <-ch
		want := map[string]int{"short": 1, "long": 2}[name]
		if r.err != nil || strings.Count(r.out, "nested-ok") != want {
			t.Errorf("%s session: %v\nstdout: %s\nstderr: %s", name, r.err, r.out, r.errOut)
		}
	}
}

// TestBridgeServerKilled: the local server dies during a session: the
// user is told, the session ends normally, nothing is left behind.
func TestBridgeServerKilled(t *testing.T) {
	need(t, "pkill")
	rh := newRemoteHost(t, false, "ec256")
	tk, outer := rh.tk, rh.outer
	nested := nestedSSH(t, rh.srv, clientModule(t), "")
	done := make(chan struct{})
	var stdout, stderr string
	var err error
	go func() {
		defer close(done)
		stdout, stderr, err = runBridge(t, tk, append(outer, "sleep 2; "+nested+" || echo nested-failed")...)
	}()
	time.Sleep(time.Second)
	// p11-kit-server runs with argv[0] "server".
	if out, kerr := exec.Command("pkill", "-TERM", "-f", "^server .*-n "+regexp.QuoteMeta(tk.dir)).CombinedOutput(); kerr != nil {
		t.Fatalf("pkill: %v %s", kerr, out)
	}
	<-done
	if err != nil || !strings.Contains(stdout, "nested-failed") {
		t.Errorf("session: %v\nstdout: %s\nstderr: %s", err, stdout, stderr)
	}
	if !strings.Contains(stderr, "stpm-bridge: the local p11-kit server stopped: the forwarded token is gone for this session") {
		t.Errorf("no word about the dead server:\n%s", stderr)
	}
	if left, _ := filepath.Glob(tk.path("bridge*.sock")); len(left) > 0 { // the pattern is valid
		t.Errorf("local sockets left: %v", left)
	}
}

package tests

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/internal/sshtest"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/internal/testutil"
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
	out, err := command(t, "ssh-keygen", "-l", "-f", pub).Output()
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
	if out, err := command(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path).CombinedOutput(); err != nil {
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
func sharedDir(t testing.TB) string { return testutil.SharedDir(t, "stpm-shared-") }

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
			client := clientModule(t)
			nested := nestedSSH(t, srv, client, pin)
			before := remoteSockets(t)

			// ssh-keygen -D lists the token's keys on the remote host.
			stdout, stderr, err := runBridge(t, tk, append(outer, "ssh-keygen -D "+client+"; "+nested)...)
			if err != nil || !strings.HasSuffix(stdout, "\nnested-ok\n") {
				t.Fatalf("stpm-bridge ssh: %v\nstdout: %s\nstderr: %s\nsshd:\n%s", err, stdout, stderr, tail(srv.Log(), 30))
			}
			names := []string{"rsa", "ec256", "ec384"}
			if tc.pin {
				names = append(names, "pin")
			}
			for _, name := range names {
				if blob := strings.Fields(tk.pub(t, name))[1]; !strings.Contains(stdout, blob) {
					t.Errorf("ssh-keygen -D p11-kit-client.so on the remote host lacks %s:\n%s", name, stdout)
				}
			}
			accepted := regexp.MustCompile(`Accepted publickey for ` + u.Username + ` from 127\.0\.0\.1 port \d+ ssh2: \S+ ` +
				regexp.QuoteMeta(fingerprint(t, tk.path(tc.key+".key.pub"))))
			if !accepted.MatchString(srv.Log()) {
				t.Errorf("sshd did not accept the TPM key %s:\n%s", tc.key, tail(srv.Log(), 30))
			}
			// Nothing left behind: the session's server and both sockets.
			noLocalSockets(t, tk)
			noBridgeProcesses(t, tk)
			if after := remoteSockets(t); len(after) > len(before) {
				t.Errorf("forwarded sockets left in /tmp: %v", after)
			}

			// The same nested command without the bridge: no key to offer.
			_, stderr, err = sshtest.Run(t, sshtest.Env(t), "ssh", append(outer, nested)...)
			if err == nil || !strings.Contains(stderr, "Permission denied (publickey") {
				t.Fatalf("the nested login without the bridge: %v, want Permission denied (publickey):\n%s", err, stderr)
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
	if !strings.Contains(out, `wrote "`+moduleFile+`"`) {
		t.Errorf("remote-setup said:\n%s", out)
	}
	if got, want := remoteForwardLine(t, out), wantRemoteForward(u); got != want {
		t.Errorf("remote-setup printed %q, want %q", got, want)
	}
	if want := "\nstpm-bridge: (where XDG_RUNTIME_DIR is unset on the workstation: RemoteForward " +
		u.HomeDir + "/.simple-tpm-pk11/forwarded.sock %d/.simple-tpm-pk11/bridge.sock)\n"; !strings.Contains(out, want) {
		t.Errorf("remote-setup lacks the line for workstations without XDG_RUNTIME_DIR:\n%s", out)
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
		cmd := command(t, name, args...)
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

func newRemoteHost(t *testing.T, pin bool, tpmKey string, sshdConfig ...string) *remoteHost {
	t.Helper()
	for _, tool := range []string{"ssh", "p11-kit", "runuser"} {
		need(t, tool)
	}
	return newRemoteHostFor(t, testUser(t), pin, tpmKey, sshdConfig...)
}

// newRemoteHostFor is newRemoteHost with the remote user u.
func newRemoteHostFor(t *testing.T, u *user.User, pin bool, tpmKey string, sshdConfig ...string) *remoteHost {
	t.Helper()
	tk := newToken(t, pin)
	srv := sshtest.StartServer(t, nil, sshdConfig...)
	srv.OpenTo(t, u.Username)
	key, pub := fileKey(t)
	srv.SetAuthorizedKeys(t, []string{pub, tk.pub(t, tpmKey)})
	return &remoteHost{user: u, tk: tk, srv: srv, outer: srv.SSHArgs("-i", key, "-o", "BatchMode=yes")}
}

// TestBridgeConcurrent: two bridge sessions at once each have their own
// server (two p11-kit servers while both run); when the first ends, the
// second keeps its token; both exit 0 and leave nothing behind.
func TestBridgeConcurrent(t *testing.T) {
	rh := newRemoteHost(t, false, "ec256")
	tk, outer := rh.tk, rh.outer
	nested := nestedSSH(t, rh.srv, clientModule(t), "")
	// Both sessions sign, then wait for the test to have seen their
	// servers: the file go appears (bounded: 60 s).
	release := filepath.Join(sharedDir(t), "go")
	wait := `i=0; until [ -e ` + release + ` ] || [ $i -ge 600 ]; do sleep 0.1; i=$((i+1)); done`
	released := false
	letGo := func() {
		if released {
			return
		}
		released = true
		if err := os.WriteFile(release, nil, 0o644); err != nil {
			t.Error(err)
		}
	}
	defer letGo()
	type result struct {
		out, errOut string
		err         error
	}
	short, long := make(chan result, 1), make(chan result, 1)
	go func() {
		o, e, err := runBridge(t, tk, slices.Concat(outer, []string{nested + "; " + wait})...)
		short <- result{o, e, err}
	}()
	go func() {
		// Signs again after the short session has ended.
		o, e, err := runBridge(t, tk, slices.Concat(outer, []string{nested + "; " + wait + "; sleep 2; " + nested})...)
		long <- result{o, e, err}
	}()
	var servers []bridgeProc
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if servers = bridgeProcesses(t, tk, "p11-kit-server"); len(servers) == 2 && servers[0].pid != servers[1].pid {
			break
		}
	}
	if len(servers) != 2 || servers[0].pid == servers[1].pid || servers[0].cmdline == servers[1].cmdline {
		t.Errorf("while both sessions run, want two p11-kit servers on sockets of their own, found %v", servers)
	}
	letGo()
	for name, ch := range map[string]chan result{"short": short, "long": long} {
		r := <-ch
		want := map[string]int{"short": 1, "long": 2}[name]
		if r.err != nil || strings.Count(r.out, "nested-ok") != want {
			t.Errorf("%s session: %v (want exit 0 and %d logins)\nstdout: %s\nstderr: %s", name, r.err, want, r.out, r.errOut)
		}
	}
	noLocalSockets(t, tk)
	noBridgeProcesses(t, tk)
}

// TestBridgeServerKilled: the local server dies during a session: the
// user is told, the session ends normally, nothing is left behind.
func TestBridgeServerKilled(t *testing.T) {
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
	servers := bridgeProcesses(t, tk, "p11-kit-server")
	if len(servers) != 1 {
		t.Fatalf("want the session's one p11-kit server, found %v", servers)
	}
	if kerr := syscall.Kill(servers[0].pid, syscall.SIGTERM); kerr != nil {
		t.Fatal(kerr)
	}
	<-done
	if err != nil || !strings.Contains(stdout, "nested-failed") {
		t.Errorf("session: %v\nstdout: %s\nstderr: %s", err, stdout, stderr)
	}
	if !strings.Contains(stderr, "stpm-bridge: the local p11-kit server stopped: the forwarded token is gone for this session") {
		t.Errorf("no word about the dead server:\n%s", stderr)
	}
	noLocalSockets(t, tk)
	noBridgeProcesses(t, tk)
}

// runtimeDir is the XDG_RUNTIME_DIR of the token's environment.
func runtimeDir(t testing.TB, tk *token) string {
	t.Helper()
	for i := len(tk.env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(tk.env[i], "XDG_RUNTIME_DIR="); ok && v != "" {
			return v
		}
	}
	t.Fatal("no XDG_RUNTIME_DIR in the token's environment")
	return ""
}

// noLocalSockets fails the test if a bridge socket is left in the
// token's runtime directory or ~/.simple-tpm-pk11.
func noLocalSockets(t testing.TB, tk *token) {
	t.Helper()
	var left []string
	for _, pat := range []string{filepath.Join(runtimeDir(t, tk), "simple-tpm-pk11", "bridge*.sock"), tk.path("bridge*.sock")} {
		m, err := filepath.Glob(pat)
		if err != nil {
			t.Fatal(err)
		}
		left = append(left, m...)
	}
	if len(left) > 0 {
		t.Errorf("local sockets left after the session: %v", left)
	}
}

type bridgeProc struct {
	pid           int
	comm, cmdline string
}

func (p bridgeProc) String() string { return fmt.Sprintf("%d %s [%s]", p.pid, p.comm, p.cmdline) }

// bridgeProcesses lists the running processes named (by /proc/PID/comm)
// p11-kit, p11-kit-server, p11-kit-remote or stpm-bridge, or one of names,
// that belong to this token: their environment has its HOME, or their
// command line names its home or runtime directory.
func bridgeProcesses(t testing.TB, tk *token, names ...string) []bridgeProc {
	t.Helper()
	if len(names) == 0 {
		names = []string{"p11-kit", "p11-kit-server", "p11-kit-remote", "stpm-bridge"}
	}
	rt := runtimeDir(t, tk)
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var found []bridgeProc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		dir := filepath.Join("/proc", e.Name())
		// Any of these reads fails when the process has just exited.
		comm, err := os.ReadFile(filepath.Join(dir, "comm"))
		if err != nil || !slices.Contains(names, strings.TrimSpace(string(comm))) {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline"))
		if err != nil {
			continue
		}
		environ, err := os.ReadFile(filepath.Join(dir, "environ"))
		if err != nil {
			continue
		}
		cl := strings.ReplaceAll(strings.TrimRight(string(cmdline), "\x00"), "\x00", " ")
		if strings.Contains(cl, tk.home+"/") || strings.Contains(cl, rt+"/") ||
			slices.Contains(strings.Split(string(environ), "\x00"), "HOME="+tk.home) {
			found = append(found, bridgeProc{pid, strings.TrimSpace(string(comm)), cl})
		}
	}
	return found
}

// noBridgeProcesses fails the test if a p11-kit server, p11-kit-remote
// or stpm-bridge of this token (or a process named one of names) is still
// running a few seconds after the session ended (p11-kit-remote exits
// when its client hangs up).
func noBridgeProcesses(t testing.TB, tk *token, names ...string) {
	t.Helper()
	var left []bridgeProc
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if left = bridgeProcesses(t, tk, names...); len(left) == 0 {
			return
		}
	}
	t.Errorf("still running after the session: %v", left)
}

// wantRemoteForward is the line remote-setup prints for the user's
// ~/.ssh/config on the workstation.
func wantRemoteForward(u *user.User) string {
	return "RemoteForward " + u.HomeDir + "/.simple-tpm-pk11/forwarded.sock ${XDG_RUNTIME_DIR}/simple-tpm-pk11/bridge.sock"
}

// remoteForwardLine picks the RemoteForward line out of remote-setup's
// output.
func remoteForwardLine(t testing.TB, out string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^stpm-bridge:     (RemoteForward .*)$`).FindAllStringSubmatch(out, -1)
	if len(m) != 1 {
		t.Fatalf("want one RemoteForward line in remote-setup's output:\n%s", out)
	}
	return m[0][1]
}

// remoteSetup runs "stpm-bridge remote-setup" as u, undone at cleanup,
// and returns what it printed.
func remoteSetup(t *testing.T, u *user.User) string {
	t.Helper()
	path := "PATH=/usr/local/bin:/usr/bin:/bin"
	out := runAs(t, u, []string{path}, filepath.Join(binDir, "stpm-bridge"), "remote-setup")
	t.Cleanup(func() { runAs(t, u, []string{path}, filepath.Join(binDir, "stpm-bridge"), "remote-setup", "--remove") })
	return out
}

// startServe runs "stpm-bridge serve" (in the background) with env and
// returns the address and pid it printed; the server is killed at cleanup
// if the test has not stopped it.
func startServe(t testing.TB, env []string, args ...string) (addr string, pid int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "stpm-bridge"), append([]string{"serve"}, args...)...)
	cmd.Env = env
	var errb strings.Builder
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("stpm-bridge serve: %v\n%s", err, errb.String())
	}
	m := regexp.MustCompile(`^P11_KIT_SERVER_ADDRESS=(unix:path=\S+); export P11_KIT_SERVER_ADDRESS;\nP11_KIT_SERVER_PID=(\d+); export P11_KIT_SERVER_PID;\n$`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("stpm-bridge serve printed %q", out)
	}
	pid, err = strconv.Atoi(m[2])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			t.Error(err)
		}
	})
	return m[1], pid
}

// stopServe stops a background "stpm-bridge serve" by its pid and waits
// until it has exited and its socket is gone.
func stopServe(t testing.TB, pid int, sock string) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); syscall.Kill(pid, 0) == nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("stpm-bridge serve (pid %d) still runs 10 s after SIGTERM", pid)
		}
	}
	waitGone(t, sock)
}

// TestBridgePlainSSH: the RemoteForward line that remote-setup prints,
// used as it is by plain ssh on the workstation (ssh expands
// ${XDG_RUNTIME_DIR}) with "stpm-bridge serve" running there, gives
// programs on the remote host that load p11-kit-proxy.so the token.
func TestBridgePlainSSH(t *testing.T) {
	rh := newRemoteHost(t, false, "ec256")
	u, tk, srv := rh.user, rh.tk, rh.srv
	proxy := proxyModule(t)
	line := remoteForwardLine(t, remoteSetup(t, u))
	if line != wantRemoteForward(u) {
		t.Errorf("remote-setup printed %q, want %q", line, wantRemoteForward(u))
	}
	rt := runtimeDir(t, tk)
	sock := filepath.Join(rt, "simple-tpm-pk11", "bridge.sock")
	addr, pid := startServe(t, tk.env)
	// sshd leaves the forwarded socket behind.
	t.Cleanup(func() { removeStable(t, u) })
	if addr != p11kit.UnixAddress(sock) {
		t.Fatalf("serve listens at %s, want %s", addr, sock)
	}
	args := append([]string{"-o", line, "-o", "ExitOnForwardFailure=yes"}, rh.outer...)
	stdout, stderr, err := sshtest.Run(t, sshtest.Env(t, "XDG_RUNTIME_DIR="+rt), "ssh", append(args, nestedSSH(t, srv, proxy, ""))...)
	if err != nil || !strings.HasSuffix(stdout, "nested-ok\n") {
		t.Fatalf("plain ssh with %q: %v\nstdout: %s\nstderr: %s\nsshd:\n%s", line, err, stdout, stderr, tail(srv.Log(), 30))
	}
	if !strings.Contains(srv.Log(), fingerprint(t, tk.path("ec256.key.pub"))) {
		t.Errorf("sshd did not accept the TPM key:\n%s", tail(srv.Log(), 20))
	}
	stopServe(t, pid, sock)
	noBridgeProcesses(t, tk)
}

// TestBridgeStockSSHD: an sshd with the default forwarding settings
// (StreamLocalBindUnlink no: sockets stay behind after a session) and a
// dead socket at the stable path on the remote host: two sessions in a
// row both reach the token through p11-kit-proxy.so.
func TestBridgeStockSSHD(t *testing.T) {
	// The first value of a keyword wins: these override sshtest's.
	rh := newRemoteHost(t, false, "ec256", "StreamLocalBindUnlink no", "StreamLocalBindMask 0177")
	u, tk, srv := rh.user, rh.tk, rh.srv
	proxy := proxyModule(t)
	remoteSetup(t, u)
	stable := filepath.Join(u.HomeDir, ".simple-tpm-pk11", "forwarded.sock")
	removeStable(t, u)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stable, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(stable, atoi(t, u.Uid), atoi(t, u.Gid)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeStable(t, u) })
	before := remoteSockets(t)
	nested := nestedSSH(t, srv, proxy, "")
	for i := 1; i <= 2; i++ {
		stdout, stderr, err := runBridge(t, tk, append(rh.outer, nested)...)
		if err != nil || !strings.HasSuffix(stdout, "nested-ok\n") {
			t.Fatalf("session %d: %v\nstdout: %s\nstderr: %s\nsshd:\n%s", i, err, stdout, stderr, tail(srv.Log(), 30))
		}
	}
	accepted := regexp.MustCompile(`Accepted publickey for ` + u.Username + ` from 127\.0\.0\.1 port \d+ ssh2: \S+ ` +
		regexp.QuoteMeta(fingerprint(t, tk.path("ec256.key.pub"))))
	if n := len(accepted.FindAllString(srv.Log(), -1)); n != 2 {
		t.Errorf("sshd accepted the TPM key %d times, want 2:\n%s", n, tail(srv.Log(), 30))
	}
	if exists(stable) {
		t.Errorf("%s is still there after the sessions", stable)
	}
	if after := remoteSockets(t); len(after) > len(before) {
		t.Errorf("forwarded sockets left in /tmp: %v", after)
	}
	noBridgeProcesses(t, tk)
}

func atoi(t testing.TB, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestBridgeOpenSocketMask: an sshd that creates forwarded sockets for
// everyone (StreamLocalBindMask 0000) let other users connect before any
// chmod could run: the session is refused before the command runs, with
// the cause and the fix, and the socket is removed.
func TestBridgeOpenSocketMask(t *testing.T) {
	rh := newRemoteHost(t, false, "ec256", "StreamLocalBindMask 0000")
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	before := remoteSockets(t)
	stdout, stderr, err := runBridge(t, rh.tk, append(rh.outer, "echo command-ran")...)
	want := regexp.MustCompile(`^stpm-bridge: error: the forwarded socket /tmp/stpm-bridge\.[0-9a-f]{24}\.sock on ` + regexp.QuoteMeta(host) +
		` arrived open to other users \(mode srwxrwxrwx\): sshd there has a StreamLocalBindMask wider than 0177\n` +
		`stpm-bridge: hint: ask the administrator of ` + regexp.QuoteMeta(host) +
		` to keep StreamLocalBindMask in sshd_config at its default, 0177 \(sockets only their owner can use\)\n$`)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || stdout != "" || !want.MatchString(stderr) {
		t.Errorf("got %v\nstdout: %s\nstderr: %s\nwant status 1, no output and stderr matching %s", err, stdout, stderr, want)
	}
	if after := remoteSockets(t); len(after) > len(before) {
		t.Errorf("forwarded sockets left in /tmp: %v", after)
	}
	noLocalSockets(t, rh.tk)
	noBridgeProcesses(t, rh.tk)
}

// TestBridgeKilled: stpm-bridge ssh killed with SIGKILL in the middle of
// a session takes ssh and its p11-kit server with it (the kernel's
// parent-death signal): nothing keeps the token forwarded. The session
// also uses --tpm: the server signs with that TPM although the
// environment names another.
func TestBridgeKilled(t *testing.T) {
	rh := newRemoteHost(t, false, "ec256")
	tk := rh.tk
	nested := nestedSSH(t, rh.srv, clientModule(t), "")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := append([]string{"ssh", "--tpm", tk.tpm.Spec}, rh.outer...)
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "stpm-bridge"), append(args, nested+"; echo session-ready; cat")...)
	cmd.Env = append(append([]string{}, tk.env...), "SIMPLE_TPM_PK11_TPM=swtpm:path=/nonexistent/swtpm.sock")
	cmd.Dir = tk.dir
	var errb strings.Builder
	cmd.Stderr = &errb
	// Pipes of our own, which Wait does not close: the end of ssh's
	// standard input would end the session by itself.
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer inW.Close()
	stdout, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	cmd.Stdin, cmd.Stdout = inR, outW
	err = cmd.Start()
	if cerr := errors.Join(inR.Close(), outW.Close()); cerr != nil {
		t.Fatal(cerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"ssh", "p11-kit", "p11-kit-server", "p11-kit-remote", "stpm-bridge"}
	t.Cleanup(func() {
		// Only when the test failed: what the bridge left running.
		for _, p := range bridgeProcesses(t, tk, names...) {
			if err := syscall.Kill(p.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				t.Error(err)
			}
		}
	})
	var out strings.Builder
	buf := make([]byte, 4096)
	for !strings.Contains(out.String(), "session-ready\n") {
		n, err := stdout.Read(buf)
		out.Write(buf[:n])
		if err != nil {
			if werr := cmd.Wait(); werr != nil {
				t.Logf("stpm-bridge ssh: %v", werr)
			}
			t.Fatalf("the session ended before it was ready: %v\nstdout: %s\nstderr: %s", err, out.String(), errb.String())
		}
	}
	if !strings.Contains(out.String(), "nested-ok\n") {
		t.Errorf("the nested login with --tpm failed:\n%s\nstderr: %s", out.String(), errb.String())
	}
	if len(bridgeProcesses(t, tk, "ssh")) == 0 {
		t.Fatal("no ssh of the session found: the check below would prove nothing")
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	var exit *exec.ExitError
	if err := cmd.Wait(); !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("stpm-bridge ssh: %v, want killed by SIGKILL", err)
	}
	noBridgeProcesses(t, tk, names...)
}

// TestBridgeReuse: with "stpm-bridge serve" running, "stpm-bridge ssh"
// uses it (and says so) instead of starting its own, and leaves it
// running; when that server dies during a session, the user is told.
func TestBridgeReuse(t *testing.T) {
	rh := newRemoteHost(t, false, "ec256")
	tk, srv := rh.tk, rh.srv
	nested := nestedSSH(t, srv, clientModule(t), "")
	sock := filepath.Join(runtimeDir(t, tk), "simple-tpm-pk11", "bridge.sock")
	_, pid := startServe(t, tk.env)

	stdout, stderr, err := runBridge(t, tk, append(rh.outer, nested)...)
	if err != nil || !strings.HasSuffix(stdout, "nested-ok\n") {
		t.Fatalf("stpm-bridge ssh: %v\nstdout: %s\nstderr: %s\nsshd:\n%s", err, stdout, stderr, tail(srv.Log(), 30))
	}
	if !strings.Contains(stderr, "stpm-bridge: using the running server at "+sock+"\n") {
		t.Errorf("no word about the running server:\n%s", stderr)
	}
	if !strings.Contains(srv.Log(), fingerprint(t, tk.path("ec256.key.pub"))) {
		t.Errorf("sshd did not accept the TPM key:\n%s", tail(srv.Log(), 20))
	}
	if servers := bridgeProcesses(t, tk, "p11-kit-server"); len(servers) != 1 || !strings.Contains(servers[0].cmdline, "-n "+sock+" ") {
		t.Errorf("want only the running server, found %v", servers)
	}
	if err := syscall.Kill(pid, 0); err != nil || !p11kit.Listening(sock) {
		t.Fatalf("the running server is gone after the session: %v", err)
	}

	// The reused server stops during a session.
	done := make(chan struct{})
	go func() {
		defer close(done)
		stdout, stderr, err = runBridge(t, tk, append(rh.outer, "sleep 3; "+nested+" || echo nested-failed")...)
	}()
	time.Sleep(time.Second)
	stopServe(t, pid, sock)
	<-done
	if err != nil || !strings.Contains(stdout, "nested-failed") {
		t.Errorf("session: %v\nstdout: %s\nstderr: %s", err, stdout, stderr)
	}
	if !strings.Contains(stderr, "stpm-bridge: the local p11-kit server stopped: the forwarded token is gone for this session\n") {
		t.Errorf("no word about the stopped server:\n%s", stderr)
	}
	noLocalSockets(t, tk)
	noBridgeProcesses(t, tk)
}

// cshUserName is a second test user whose login shell is csh.
const cshUserName = "stpm-test-csh"

// cshUser returns a user whose login shell is tcsh (or csh), made once.
func cshUser(t *testing.T) *user.User {
	t.Helper()
	var shell string
	for _, s := range []string{"/usr/bin/tcsh", "/bin/tcsh", "/usr/bin/csh", "/bin/csh"} {
		if _, err := os.Stat(s); err == nil {
			shell = s
			break
		}
	}
	if shell == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("no tcsh or csh: install the tcsh package")
		}
		t.Skip("no tcsh or csh")
	}
	if u, err := user.Lookup(cshUserName); err == nil {
		return u
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatalf("user %s is missing and the tests do not run as root to create it", cshUserName)
		}
		t.Skipf("user %s is missing; run the tests as root once to create it", cshUserName)
	}
	for _, args := range [][]string{
		{"useradd", "--system", "--create-home", "--home-dir", "/home/" + cshUserName, "--shell", shell, cshUserName},
		{"usermod", "-p", "*", cshUserName},
	} {
		if out, err := command(t, args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	u, err := user.Lookup(cshUserName)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestBridgeCshLoginShell: a remote user whose login shell is csh gets
// the session too (sshd runs the remote command with the login shell).
func TestBridgeCshLoginShell(t *testing.T) {
	for _, tool := range []string{"ssh", "p11-kit", "runuser"} {
		need(t, tool)
	}
	u := cshUser(t)
	rh := newRemoteHostFor(t, u, false, "ec256")
	stdout, stderr, err := runBridge(t, rh.tk, append(rh.outer, "echo \"shell=$SHELL\"; "+nestedSSH(t, rh.srv, clientModule(t), ""))...)
	if err != nil || !strings.HasSuffix(stdout, "nested-ok\n") || !strings.Contains(stdout, "shell=/") || !strings.Contains(stdout, "csh\n") {
		t.Fatalf("stpm-bridge ssh to a csh user: %v\nstdout: %s\nstderr: %s\nsshd:\n%s", err, stdout, stderr, tail(rh.srv.Log(), 30))
	}
	noBridgeProcesses(t, rh.tk)
}

// removeStable removes what is at the stable path in u's home (the test
// user is shared by the tests): a socket left by plain ssh -R.
func removeStable(t testing.TB, u *user.User) {
	t.Helper()
	if err := os.Remove(filepath.Join(u.HomeDir, ".simple-tpm-pk11", "forwarded.sock")); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Error(err)
	}
}

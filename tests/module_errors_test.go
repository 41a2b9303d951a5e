package tests

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/config"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/internal/sshtest"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/internal/swtpmtest"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/internal/testutil"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/keyfile"
)

// The tests here drive the module through p11host's "probe",
// "signloop" and "soak" modes (tests/c/p11host.c) with the TPM or the
// files broken on purpose, and check the exact CK_RV of each call, the
// module's one log line, and that nothing was written.

// cheapBound is how long loading the module and the calls that must not
// touch the TPM (C_Initialize, C_GetSlotList, C_GetInfo) may take. It
// is a correctness bound for "never blocks", not a benchmark: the
// calls take a few milliseconds, a blocked one takes seconds.
const cheapBound = 500 * time.Millisecond

// promptBound is how long a call that finds the TPM gone may take.
const promptBound = 5 * time.Second

// withEnv returns env with each NAME=VALUE of set replacing any earlier
// value of NAME.
func withEnv(env []string, set ...string) []string {
	out := make([]string, 0, len(env)+len(set))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		keep := true
		for _, s := range set {
			if sk, _, _ := strings.Cut(s, "="); sk == k {
				keep = false
			}
		}
		if keep {
			out = append(out, kv)
		}
	}
	return append(out, set...)
}

// snapshotDir records every file, directory and link under dir: mode,
// and for files the SHA-256 of the contents.
func snapshotDir(t testing.TB, dir string) map[string]string {
	t.Helper()
	snap := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		desc := info.Mode().String()
		switch {
		case info.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			desc += " " + hex.EncodeToString(sum[:])
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " -> " + target
		}
		snap[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// assertUnchanged runs fn and fails the test if any file under dir was
// added, removed, or changed in contents or mode meanwhile: a module
// that meets a bad file or a missing TPM must not write anything.
func assertUnchanged(t testing.TB, dir string, fn func()) {
	t.Helper()
	before := snapshotDir(t, dir)
	fn()
	after := snapshotDir(t, dir)
	var diffs []string
	for p, b := range before {
		switch a, ok := after[p]; {
		case !ok:
			diffs = append(diffs, "removed "+p)
		case a != b:
			diffs = append(diffs, fmt.Sprintf("changed %s: %s -> %s", p, b, a))
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			diffs = append(diffs, "added "+p)
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 0 {
		t.Errorf("files under %s changed:\n%s", dir, strings.Join(diffs, "\n"))
	}
}

// hostCommand is p11host with args, exactly env, in a process group of
// its own, killed (group and all) when ctx ends. With prefix (setpriv
// and its options) p11host runs under that command.
func hostCommand(ctx context.Context, t testing.TB, env, prefix []string, args ...string) *exec.Cmd {
	t.Helper()
	host := buildCHost(t)
	full := append(append(append([]string{}, prefix...), host), args...)
	cmd := exec.CommandContext(ctx, full[0], full[1:]...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// runHost runs p11host to the end, bounded by chostTimeout, and returns
// its standard output and standard error (the module's log).
func runHost(t testing.TB, env, prefix []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), chostTimeout)
	defer cancel()
	cmd := hostCommand(ctx, t, env, prefix, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("p11host %s: timed out after %v: %w", strings.Join(args, " "), chostTimeout, err)
	}
	return out.String(), errOut.String(), err
}

// lockedBuffer is a bytes.Buffer that a process writes while the test reads.
type lockedBuffer = testutil.LockedBuffer

// hostProc is a p11host that runs while the test changes the world: it
// reads its standard output line by line and writes commands to its
// standard input.
type hostProc struct {
	t      testing.TB
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *lockedBuffer
	cancel context.CancelFunc
	done   bool
}

// startHost starts p11host with exactly env; it is killed when the test
// ends, or after chostTimeout.
func startHost(t testing.TB, env []string, args ...string) *hostProc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), chostTimeout)
	h := &hostProc{t: t, cmd: hostCommand(ctx, t, env, nil, args...), lines: make(chan string, 1024),
		stderr: &lockedBuffer{}, cancel: cancel}
	var err error
	if h.stdin, err = h.cmd.StdinPipe(); err != nil {
		cancel()
		t.Fatal(err)
	}
	stdout, err := h.cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	h.cmd.Stderr = h.stderr
	if err := h.cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
		close(h.lines)
	}()
	t.Cleanup(func() {
		if !h.done {
			cancel()
			if err := h.cmd.Wait(); err != nil {
				t.Logf("p11host: %v", err)
			}
		}
		cancel()
	})
	return h
}

// next returns the next line of output; it fails the test if none comes
// within d or p11host exits.
func (h *hostProc) next(d time.Duration) string {
	h.t.Helper()
	select {
	case l, ok := <-h.lines:
		if !ok {
			h.t.Fatalf("p11host exited; stderr:\n%s", tail(h.stderr.String(), 20))
		}
		return l
	case <-time.After(d):
		h.t.Fatalf("p11host printed nothing for %v; stderr:\n%s", d, tail(h.stderr.String(), 20))
	}
	return ""
}

// quiet fails the test if p11host prints a line within d.
func (h *hostProc) quiet(d time.Duration) {
	h.t.Helper()
	select {
	case l := <-h.lines:
		h.t.Fatalf("p11host printed %q; want it still waiting", l)
	case <-time.After(d):
	}
}

// waitFor reads lines until one starts with prefix, within d.
func (h *hostProc) waitFor(prefix string, d time.Duration) string {
	h.t.Helper()
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			h.t.Fatalf("no line %q within %v; stderr:\n%s", prefix, d, tail(h.stderr.String(), 20))
		}
		if l := h.next(left); strings.HasPrefix(l, prefix) {
			return l
		}
	}
}

func (h *hostProc) send(line string) {
	h.t.Helper()
	if _, err := io.WriteString(h.stdin, line+"\n"); err != nil {
		h.t.Fatal(err)
	}
}

// wait waits for p11host to exit after its input is done.
func (h *hostProc) wait() error {
	h.done = true
	for range h.lines {
	}
	err := h.cmd.Wait()
	h.cancel()
	return err
}

var fieldRE = regexp.MustCompile(`(\w+)=("(?:[^"\\]|\\.)*"|\S+)`)

// fields parses a p11host record, "word key=value ...".
func fields(line string) map[string]string {
	f := map[string]string{}
	for _, m := range fieldRE.FindAllStringSubmatch(line, -1) {
		f[m[1]] = strings.Trim(m[2], `"`)
	}
	return f
}

// probeResult is what "p11host MODULE probe" printed: the cheap line
// and one record per call (C_Sign per key, as "C_Sign:LABEL").
type probeResult struct {
	cheap  map[string]string
	calls  map[string]map[string]string
	order  []string
	stdout string
	log    []string // the module's log lines
}

func (p *probeResult) rv(call string) string { return p.calls[call]["name"] }

func (p *probeResult) ms(t testing.TB, call string) time.Duration {
	t.Helper()
	n, err := strconv.Atoi(p.calls[call]["ms"])
	if err != nil {
		t.Fatalf("%s: no duration in\n%s", call, p.stdout)
	}
	return time.Duration(n) * time.Millisecond
}

// signs returns the C_Sign records.
func (p *probeResult) signs() map[string]map[string]string {
	out := map[string]map[string]string{}
	for k, v := range p.calls {
		if label, ok := strings.CutPrefix(k, "C_Sign:"); ok {
			out[label] = v
		}
	}
	return out
}

func parseProbe(t testing.TB, stdout, stderr string) *probeResult {
	t.Helper()
	p := &probeResult{calls: map[string]map[string]string{}, stdout: stdout}
	for _, l := range strings.Split(stdout, "\n") {
		f := fields(l)
		switch {
		case strings.HasPrefix(l, "probe load_us="):
			p.cheap = f
		case strings.HasPrefix(l, "probe call="):
			name := f["call"]
			if name == "C_Sign" {
				name += ":" + f["label"]
			}
			p.calls[name] = f
			p.order = append(p.order, name)
		}
	}
	if p.cheap == nil {
		t.Fatalf("p11host probe printed no load line:\n%s\nstderr:\n%s", stdout, stderr)
	}
	for _, l := range strings.Split(stderr, "\n") {
		if strings.Contains(l, "simple-tpm-pk11[") {
			p.log = append(p.log, l)
		}
	}
	return p
}

// probe runs "p11host MODULE probe" with exactly env (and prefix, see
// hostCommand) and parses what it printed.
func probe(t testing.TB, env, prefix []string, args ...string) *probeResult {
	t.Helper()
	stdout, stderr, err := runHost(t, env, prefix, append([]string{modulePath, "probe"}, args...)...)
	if err != nil {
		t.Fatalf("%v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	return parseProbe(t, stdout, stderr)
}

// checkCheap checks that loading and the calls that need no TPM
// succeeded within cheapBound.
func (p *probeResult) checkCheap(t testing.TB, slots string) {
	t.Helper()
	for _, k := range []string{"init_rv", "slots_rv", "info_rv"} {
		if p.cheap[k] != "0x00000000" {
			t.Errorf("%s=%s, want CKR_OK:\n%s", k, p.cheap[k], p.stdout)
		}
	}
	if p.cheap["slots"] != slots {
		t.Errorf("slots=%s, want %s", p.cheap["slots"], slots)
	}
	us, err := strconv.Atoi(p.cheap["cheap_us"])
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Duration(us) * time.Microsecond; d > cheapBound {
		t.Errorf("dlopen + C_Initialize + C_GetSlotList + C_GetInfo took %v, want under %v", d, cheapBound)
	}
}

// checkLog checks the module's log: each "C_X: CKR_Y" of lines logged
// exactly that many lines ("error: C_X: CKR_Y: ..."), each containing
// every string of want, and besides them there are exactly other lines.
func (p *probeResult) checkLog(t testing.TB, lines map[string]int, other int, want ...string) {
	t.Helper()
	total := 0
	for prefix, n := range lines {
		total += n
		got := 0
		for _, l := range p.log {
			if strings.Contains(l, "error: "+prefix+": ") {
				got++
				for _, w := range want {
					if !strings.Contains(l, w) {
						t.Errorf("log line lacks %q:\n%s", w, l)
					}
				}
			}
		}
		if got != n {
			t.Errorf("%d log lines for %s, want %d:\n%s", got, prefix, n, strings.Join(p.log, "\n"))
		}
	}
	if len(p.log) != total+other {
		t.Errorf("%d log lines, want %d:\n%s", len(p.log), total+other, strings.Join(p.log, "\n"))
	}
}

// deadSocket makes a unix socket file nobody listens on: connecting
// gives ECONNREFUSED, as a swtpm that died leaves it.
func deadSocket(t testing.TB) string {
	t.Helper()
	p := filepath.Join(sshtest.SocketDir(t), "dead.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestModuleCheapLoad: with the TPM's socket dead, loading the module
// and C_Initialize, C_GetSlotList and C_GetInfo succeed at once (p11-kit
// loads every module into every program that lists them); the first
// call that needs the TPM fails with CKR_DEVICE_ERROR, never
// CKR_PIN_INCORRECT, and logs one line naming the socket and the error.
func TestModuleCheapLoad(t *testing.T) {
	tk := newToken(t, true)
	sock := deadSocket(t)
	spec := "swtpm:path=" + sock
	env := withEnv(tk.env, "SIMPLE_TPM_PK11_TPM="+spec)
	var p *probeResult
	assertUnchanged(t, tk.home, func() {
		p = probe(t, env, nil, "--pin", testPIN)
	})
	p.checkCheap(t, "1")
	for _, call := range []string{"C_GetTokenInfo", "C_Login"} {
		if p.rv(call) != "CKR_DEVICE_ERROR" {
			t.Errorf("%s: %s, want CKR_DEVICE_ERROR:\n%s", call, p.rv(call), p.stdout)
		}
		if d := p.ms(t, call); d > promptBound {
			t.Errorf("%s took %v", call, d)
		}
	}
	if p.rv("C_OpenSession") != "CKR_OK" {
		t.Errorf("C_OpenSession: %s, want CKR_OK (it needs no TPM)", p.rv("C_OpenSession"))
	}
	// The login failed, so the PIN key (a private object) is not found.
	checkSignsDeviceError(t, p)
	if strings.Contains(p.stdout, "CKR_PIN_INCORRECT") {
		t.Errorf("a dead TPM reported as a wrong PIN:\n%s", p.stdout)
	}
	p.checkLog(t, map[string]int{"C_GetTokenInfo: CKR_DEVICE_ERROR": 1, "C_Login: CKR_DEVICE_ERROR": 1,
		"C_Sign: CKR_DEVICE_ERROR": len(testKeys)}, 0,
		"swtpm not reachable at "+spec+": connection refused",
		"(hint: start swtpm, or point --tpm / SIMPLE_TPM_PK11_TPM at the right socket)")
}

// TestModuleCheapLoadBusyTPM: while another process holds the swtpm's
// lock (as a signer in another program does), loading and C_Initialize
// still return at once, which also shows they send nothing to the TPM:
// every TPM command goes through that lock. C_GetTokenInfo waits for
// the lock and succeeds when it is released.
func TestModuleCheapLoadBusyTPM(t *testing.T) {
	tk := newToken(t, false)
	host, port, ok := strings.Cut(strings.TrimPrefix(tk.tpm.Spec, "swtpm:host="), ",port=")
	if !ok {
		t.Fatalf("unexpected spec %q", tk.tpm.Spec)
	}
	lockFile := filepath.Join(os.TempDir(), fmt.Sprintf("simple-tpm-pk11-swtpm-%s-%s.lock", host, port))
	f, err := os.OpenFile(lockFile, os.O_RDONLY|os.O_CREATE, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	h := startHost(t, tk.env, modulePath, "probe")
	first := h.next(time.Minute)
	p := parseProbe(t, first, "")
	p.checkCheap(t, "1")
	h.quiet(time.Second) // C_GetTokenInfo waits for the lock
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	line := h.waitFor("probe call=C_GetTokenInfo", time.Minute)
	if f := fields(line); f["name"] != "CKR_OK" {
		t.Errorf("C_GetTokenInfo after the lock was released: %s", line)
	}
	var rest []string
	for {
		l := h.next(time.Minute)
		rest = append(rest, l)
		if strings.HasPrefix(l, "probe call=C_Finalize") {
			break
		}
	}
	if err := h.wait(); err != nil {
		t.Fatalf("p11host: %v", err)
	}
	p = parseProbe(t, first+"\n"+strings.Join(rest, "\n"), h.stderr.String())
	for label, f := range p.signs() {
		if f["name"] != "CKR_OK" || f["verified"] != "1" {
			t.Errorf("C_Sign with %s: %v", label, f)
		}
	}
	if len(p.log) != 0 {
		t.Errorf("log lines:\n%s", strings.Join(p.log, "\n"))
	}
}

// TestModuleTPMErrors: a TPM device that does not exist, one the user
// may not open, and a swtpm that stopped: every call that needs the TPM
// gives CKR_DEVICE_ERROR (never CKR_PIN_INCORRECT, even for a wrong
// PIN) and one log line with the cause and a hint; loading stays cheap;
// nothing is written.
func TestModuleTPMErrors(t *testing.T) {
	t.Run("no-device", func(t *testing.T) {
		tk := newToken(t, false)
		env := withEnv(tk.env, "SIMPLE_TPM_PK11_TPM=device:/nonexistent/tpmrm0")
		var p *probeResult
		assertUnchanged(t, tk.home, func() { p = probe(t, env, nil) })
		p.checkCheap(t, "1")
		checkAllDeviceError(t, p)
		p.checkLog(t, map[string]int{"C_GetTokenInfo: CKR_DEVICE_ERROR": 1, "C_Sign: CKR_DEVICE_ERROR": len(testKeys)}, 0,
			"no TPM at /nonexistent/tpmrm0",
			"(hint: check 'ls -l /dev/tpm*' and that the TPM is enabled in the firmware; for a software TPM run swtpm and use --tpm swtpm:path=SOCKET)")
	})
	t.Run("permission-denied", func(t *testing.T) {
		if os.Geteuid() != 0 {
			if os.Getenv("CI") != "" {
				t.Fatal("needs root to run the module as another user")
			}
			t.Skip("needs root to run the module as another user")
		}
		need(t, "setpriv")
		tk := newToken(t, false)
		devDir := t.TempDir()
		dev := filepath.Join(devDir, "tpmrm0")
		if err := os.WriteFile(dev, nil, 0o600); err != nil { // root's, 0600
			t.Fatal(err)
		}
		openParents(t, devDir)
		openParents(t, tk.home)
		for _, d := range []string{devDir, tk.home} {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if out, err := command(t, "chown", "-R", "65534:65534", tk.home).CombinedOutput(); err != nil {
			t.Fatalf("chown: %v: %s", err, out)
		}
		env := withEnv(tk.env, "SIMPLE_TPM_PK11_TPM=device:"+dev)
		drop := []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}
		var p *probeResult
		assertUnchanged(t, tk.home, func() { p = probe(t, env, drop) })
		p.checkCheap(t, "1")
		checkAllDeviceError(t, p)
		p.checkLog(t, map[string]int{"C_GetTokenInfo: CKR_DEVICE_ERROR": 1, "C_Sign: CKR_DEVICE_ERROR": len(testKeys)}, 0,
			"permission denied opening "+dev,
			"(hint: add your user to the tss group ('sudo usermod -aG tss $USER', then log in again))")
	})
	t.Run("swtpm-stopped", func(t *testing.T) {
		tk := newToken(t, true)
		if err := tk.tpm.Stop(); err != nil {
			t.Fatal(err)
		}
		for _, pin := range []string{testPIN, "999999"} {
			var p *probeResult
			assertUnchanged(t, tk.home, func() { p = probe(t, tk.env, nil, "--pin", pin) })
			p.checkCheap(t, "1")
			if p.rv("C_Login") != "CKR_DEVICE_ERROR" {
				t.Errorf("C_Login with PIN %s and no TPM: %s, want CKR_DEVICE_ERROR", pin, p.rv("C_Login"))
			}
			if strings.Contains(p.stdout, "CKR_PIN_INCORRECT") || strings.Contains(strings.Join(p.log, "\n"), "incorrect PIN") {
				t.Errorf("a stopped TPM reported as a wrong PIN:\n%s\n%s", p.stdout, strings.Join(p.log, "\n"))
			}
			p.checkLog(t, map[string]int{"C_GetTokenInfo: CKR_DEVICE_ERROR": 1, "C_Login: CKR_DEVICE_ERROR": 1,
				"C_Sign: CKR_DEVICE_ERROR": len(testKeys)}, 0,
				"swtpm not reachable at "+tk.tpm.Spec+": connection refused")
		}
	})
}

// checkAllDeviceError: C_GetTokenInfo and every key's C_Sign returned
// CKR_DEVICE_ERROR promptly.
func checkAllDeviceError(t testing.TB, p *probeResult) {
	t.Helper()
	if p.rv("C_GetTokenInfo") != "CKR_DEVICE_ERROR" {
		t.Errorf("C_GetTokenInfo: %s, want CKR_DEVICE_ERROR", p.rv("C_GetTokenInfo"))
	}
	checkSignsDeviceError(t, p)
	for _, c := range p.order {
		if c == "C_Finalize" {
			continue
		}
		if d := p.ms(t, c); d > promptBound {
			t.Errorf("%s took %v", c, d)
		}
	}
}

// checkSignsDeviceError: every key without a PIN was found and its
// C_Sign returned CKR_DEVICE_ERROR.
func checkSignsDeviceError(t testing.TB, p *probeResult) {
	t.Helper()
	signs := p.signs()
	if len(signs) != len(testKeys) {
		t.Errorf("%d keys signed, want %d:\n%s", len(signs), len(testKeys), p.stdout)
	}
	for label, f := range signs {
		if f["name"] != "CKR_DEVICE_ERROR" {
			t.Errorf("C_Sign with %s: %s, want CKR_DEVICE_ERROR", label, f["name"])
		}
	}
}

// rewriteKey writes a copy of a token key with its DER changed by edit.
func (tk *token) rewriteKey(t testing.TB, from, to string, edit func(der []byte) []byte) {
	t.Helper()
	data, err := os.ReadFile(tk.path(from))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM block", from)
	}
	block.Bytes = edit(block.Bytes)
	tk.write(t, to, pem.EncodeToMemory(block))
}

// loadableOID is the DER of 2.23.133.10.1.3, the loadable key type.
var loadableOID = []byte{0x06, 0x06, 0x67, 0x81, 0x05, 0x0a, 0x01, 0x03}

// withOID replaces the key type OID's last arc.
func withOID(last byte) func([]byte) []byte {
	return func(der []byte) []byte {
		i := bytes.Index(der, loadableOID)
		if i < 0 {
			panic("no loadable key OID in the key file")
		}
		out := bytes.Clone(der)
		out[i+len(loadableOID)-1] = last
		return out
	}
}

// TestModuleFileErrors: bad key files and a missing config, through the
// module in a C program. A file that cannot be a key is left out at
// C_Initialize with one log line naming it, and the token keeps the
// other keys; a key the TPM refuses gives CKR_FUNCTION_FAILED at C_Sign
// with one log line naming the file; nothing is ever written.
func TestModuleFileErrors(t *testing.T) {
	t.Run("config-missing", func(t *testing.T) {
		tk := newToken(t, false)
		missing := tk.path("nonexistent-config")
		env := withEnv(tk.env, "SIMPLE_TPM_PK11_CONFIG="+missing)
		var p *probeResult
		assertUnchanged(t, tk.home, func() { p = probe(t, env, nil) })
		p.checkCheap(t, "1")
		for _, call := range []string{"C_GetTokenInfo", "C_OpenSession"} {
			if p.rv(call) != "CKR_TOKEN_NOT_PRESENT" {
				t.Errorf("%s: %s, want CKR_TOKEN_NOT_PRESENT", call, p.rv(call))
			}
		}
		want := fmt.Sprintf("error: config: open %s: no such file or directory; the token has no keys (fix the file or SIMPLE_TPM_PK11_CONFIG)", missing)
		n := 0
		for _, l := range p.log {
			if strings.Contains(l, missing) {
				n++
				if !strings.HasSuffix(l, want) {
					t.Errorf("config line:\n%s\nwant it to end with\n%s", l, want)
				}
			}
		}
		if n != 1 {
			t.Errorf("%d log lines name the config, want 1 (C_GetTokenInfo and C_OpenSession log the cause again only at debug level):\n%s", n, strings.Join(p.log, "\n"))
		}
		// With debug on, their lines name the config actually used.
		p = probe(t, withEnv(env, "SIMPLE_TPM_PK11_DEBUG=1"), nil)
		for _, call := range []string{"C_GetTokenInfo", "C_OpenSession"} {
			want := "debug: " + call + ": CKR_TOKEN_NOT_PRESENT: the token has no usable key: make one with stpm-keygen and name it in " + missing
			found := false
			for _, l := range p.log {
				found = found || strings.HasSuffix(l, want)
			}
			if !found {
				t.Errorf("no line ending with\n%s\nin:\n%s", want, strings.Join(p.log, "\n"))
			}
		}
	})

	// A file that is not a config at all, as SIMPLE_TPM_PK11_CONFIG may
	// name by mistake: a key file, binary garbage. Every line is a
	// problem; the module logs five and counts the rest in one line, so
	// that every program that loads it (p11-kit loads it into all of
	// them) does not print hundreds of lines. Then, as for an empty
	// config, the token has no key: the default key is not there.
	t.Run("config-corrupt", func(t *testing.T) {
		tk := newToken(t, false)
		bad := filepath.Join(tk.home, "elsewhere")
		if err := os.Mkdir(bad, 0o700); err != nil {
			t.Fatal(err)
		}
		pemKey, err := os.ReadFile(tk.path("rsa.key"))
		if err != nil {
			t.Fatal(err)
		}
		garbage := make([]byte, 4096)
		for i := range garbage {
			// Deterministic bytes, a line break every 61.
			garbage[i] = byte(i*131 + i*i*7 + 1)
			if i%61 == 60 {
				garbage[i] = '\n'
			}
		}
		for name, data := range map[string][]byte{"key.pem": pemKey, "garbage.bin": garbage} {
			t.Run(name, func(t *testing.T) {
				cfg := filepath.Join(bad, name)
				if err := os.WriteFile(cfg, data, 0o600); err != nil {
					t.Fatal(err)
				}
				problems := len(config.Parse(bytes.NewReader(data), cfg).Problems)
				if problems < 10 {
					t.Fatalf("%s has %d problems; the test needs more", name, problems)
				}
				env := withEnv(tk.env, "SIMPLE_TPM_PK11_CONFIG="+cfg)
				var p *probeResult
				assertUnchanged(t, tk.home, func() { p = probe(t, env, nil) })
				p.checkCheap(t, "1")
				for _, call := range []string{"C_GetTokenInfo", "C_OpenSession"} {
					if p.rv(call) != "CKR_TOKEN_NOT_PRESENT" {
						t.Errorf("%s: %s, want CKR_TOKEN_NOT_PRESENT", call, p.rv(call))
					}
				}
				// Five problems, the count of the rest, and why the
				// token is absent (once, at C_GetTokenInfo).
				if len(p.log) != 7 {
					t.Fatalf("%d log lines, want 7:\n%s", len(p.log), strings.Join(p.log, "\n"))
				}
				for i, l := range p.log[:5] {
					want := fmt.Sprintf("error: config %s:%d: unknown directive, not shown as it may hold a secret (known: key, tpm, key_pin, srk_pin, log, debug, label)", cfg, i+1)
					if !strings.HasSuffix(l, want) {
						t.Errorf("line %d:\n%s\nwant it to end with\n%s", i+1, l, want)
					}
				}
				want := fmt.Sprintf("error: config %s: %d more problems; it does not look like a simple-tpm-pk11 config (see simple-tpm-pk11-config(5))", cfg, problems-5)
				if !strings.HasSuffix(p.log[5], want) {
					t.Errorf("line 6:\n%s\nwant it to end with\n%s", p.log[5], want)
				}
				want = "error: C_GetTokenInfo: CKR_TOKEN_NOT_PRESENT: the token has no usable key: make one with stpm-keygen and name it in " + cfg
				if !strings.HasSuffix(p.log[6], want) {
					t.Errorf("line 7:\n%s\nwant it to end with\n%s", p.log[6], want)
				}
				if strings.Contains(strings.Join(p.log, "\n"), "MII") {
					t.Errorf("the log quotes the file:\n%s", strings.Join(p.log, "\n"))
				}
			})
		}
	})

	// An empty config: no problem, no key named, and the default key
	// (<hostname>.key next to it) does not exist: C_Initialize logs
	// nothing, the first call that needs the token says why it is absent.
	t.Run("config-empty", func(t *testing.T) {
		tk := newToken(t, false)
		bad := filepath.Join(tk.home, "elsewhere")
		if err := os.Mkdir(bad, 0o700); err != nil {
			t.Fatal(err)
		}
		cfg := filepath.Join(bad, "config")
		if err := os.WriteFile(cfg, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		env := withEnv(tk.env, "SIMPLE_TPM_PK11_CONFIG="+cfg)
		var p *probeResult
		assertUnchanged(t, tk.home, func() { p = probe(t, env, nil) })
		p.checkCheap(t, "1")
		for _, call := range []string{"C_GetTokenInfo", "C_OpenSession"} {
			if p.rv(call) != "CKR_TOKEN_NOT_PRESENT" {
				t.Errorf("%s: %s, want CKR_TOKEN_NOT_PRESENT", call, p.rv(call))
			}
		}
		want := "error: C_GetTokenInfo: CKR_TOKEN_NOT_PRESENT: the token has no usable key: make one with stpm-keygen and name it in " + cfg
		if len(p.log) != 1 || !strings.HasSuffix(p.log[0], want) {
			t.Errorf("want one log line ending with\n%s\ngot:\n%s", want, strings.Join(p.log, "\n"))
		}
	})

	// Key files the module reads at C_Initialize, each with the line it
	// is named on and what happens.
	tk := newToken(t, false)
	other := swtpmtest.Start(t, swtpmtest.Options{TCP: true})
	if _, err := stpm(t, other.Spec, tk.dir, "stpm-keygen", "-t", "ecdsa", "-o", tk.path("other-tpm.key")); err != nil {
		t.Fatal(err)
	}
	tk.rewriteKey(t, "ec256.key", "unknown-oid.key", withOID(0x09))
	tk.rewriteKey(t, "ec256.key", "sealed-oid.key", withOID(0x05))
	tk.keygen(t, "second", "-t", "ecdsa")
	a, err := keyfile.Load(tk.path("ec256.key"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := keyfile.Load(tk.path("second.key"))
	if err != nil {
		t.Fatal(err)
	}
	a.Private = b.Private // ec256's public part, second's private part
	mixed, err := a.MarshalPEM()
	if err != nil {
		t.Fatal(err)
	}
	tk.write(t, "mixed.key", mixed)
	whole, err := os.ReadFile(tk.path("ec256.key"))
	if err != nil {
		t.Fatal(err)
	}
	tk.write(t, "truncated.key", whole[:200]) // cut before the END line
	tk.write(t, "garbage.key", bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef, '\n'}, 100))
	block, _ := pem.Decode(whole)
	if block == nil {
		t.Fatal("ec256.key: no PEM block")
	}
	tk.write(t, "wrong-label.key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: block.Bytes}))
	const notKeyHint = ` (hint: a key file is the "TSS2 PRIVATE KEY" PEM that stpm-keygen or 'openssl genpkey -provider tpm2' writes; if this one was damaged, use a copy)`
	const noPEM = `no PEM block (want "-----BEGIN TSS2 PRIVATE KEY-----")` + notKeyHint

	for _, tc := range []struct {
		file string
		// leftOut: the key is not on the token and C_Initialize logs
		// this; else C_Sign fails with rv and logs this.
		leftOut bool
		rv, log string
	}{
		{"truncated.key", true, "", "malformed PEM block (bad base64, or no matching END line)" + notKeyHint},
		{"garbage.key", true, "", noPEM},
		{"wrong-label.key", true, "", `PEM label is "EC PRIVATE KEY", want "TSS2 PRIVATE KEY"` + notKeyHint},
		{"unknown-oid.key", true, "", "type: unknown key type OID 2.23.133.10.1.9"},
		{"sealed-oid.key", true, "", "key type 2.23.133.10.1.5 is not a loadable key (2.23.133.10.1.3) (hint: the file holds sealed data or a key for import, not a signing key: make one with stpm-keygen)"},
		{"other-tpm.key", false, "CKR_FUNCTION_FAILED", "the key was made by another TPM, this TPM was cleared since, or the key file's parts do not belong together (TPM_RC_INTEGRITY on load) (hint: make a new key on this TPM with stpm-keygen, or restore a backup with stpm-keygen --restore)"},
		// The TPM cannot tell a spliced file from a foreign one: both
		// fail the private part's integrity check.
		{"mixed.key", false, "CKR_FUNCTION_FAILED", "the key was made by another TPM, this TPM was cleared since, or the key file's parts do not belong together (TPM_RC_INTEGRITY on load)"},
	} {
		t.Run(strings.TrimSuffix(tc.file, ".key"), func(t *testing.T) {
			cfg := tk.write(t, "config-"+tc.file, []byte("key rsa.key\nkey "+tc.file+"\nkey ec384.key\n"))
			env := withEnv(tk.env, "SIMPLE_TPM_PK11_CONFIG="+cfg)
			var p *probeResult
			assertUnchanged(t, tk.home, func() { p = probe(t, env, nil) })
			p.checkCheap(t, "1")
			t.Log(strings.Join(p.log, "\n"))
			label := strings.TrimSuffix(tc.file, ".key")
			signs := p.signs()
			for _, good := range []string{"rsa", "ec384"} {
				if f := signs[good]; f["name"] != "CKR_OK" || f["verified"] != "1" {
					t.Errorf("the good key %s: %v", good, f)
				}
			}
			path := tk.path(tc.file)
			if tc.leftOut {
				if _, ok := signs[label]; ok || len(signs) != 2 {
					t.Errorf("%s is on the token:\n%s", tc.file, p.stdout)
				}
				if p.rv("C_GetTokenInfo") != "CKR_OK" {
					t.Errorf("C_GetTokenInfo: %s", p.rv("C_GetTokenInfo"))
				}
				want := fmt.Sprintf("error: config %s:2: key left out: %q: %s", cfg, path, tc.log)
				if len(p.log) != 1 || !strings.Contains(p.log[0], want) || (strings.HasSuffix(tc.log, notKeyHint) && !strings.HasSuffix(p.log[0], want)) {
					t.Errorf("want one log line with\n%s\ngot:\n%s", want, strings.Join(p.log, "\n"))
				}
				return
			}
			if f := signs[label]; f["name"] != tc.rv {
				t.Errorf("C_Sign with %s: %v, want %s", tc.file, f, tc.rv)
			}
			want := fmt.Sprintf("error: C_Sign: %s: key %s (%s): %s", tc.rv, label, path, tc.log)
			if len(p.log) != 1 || !strings.Contains(p.log[0], want) {
				t.Errorf("want one log line with\n%s\ngot:\n%s", want, strings.Join(p.log, "\n"))
			}
			tk.noTransient(t)
		})
	}
}

// TestModuleTPMKilledDuringSign: swtpm is SIGKILLed while a C program
// signs in a loop with the module loaded (RSA, so the TPM spends most of
// each C_Sign working). The call in flight and the ones after it fail
// with CKR_DEVICE_ERROR within promptBound, never another code; once
// swtpm is back on the same state, signing works again in the same
// process, without reloading the module. Up to five rounds, until one
// kill lands in the middle of a TPM command ("connection to TPM at ...
// lost"); the others land between commands ("not reachable").
func TestModuleTPMKilledDuringSign(t *testing.T) {
	tk := newToken(t, false)
	h := startHost(t, tk.env, modulePath, "signloop")
	if l := h.next(time.Minute); l != "loop ready" {
		t.Fatalf("start: %q", l)
	}
	if f := fields(h.waitFor("loop n=", time.Minute)); f["name"] != "CKR_OK" || f["verified"] != "1" {
		t.Fatalf("first signatures: %v", f)
	}
	lostLine := "connection to TPM at " + tk.tpm.Spec + " lost"
	for round := 1; round <= 5 && !strings.Contains(h.stderr.String(), lostLine); round++ {
		time.Sleep(time.Duration(100+37*round) * time.Millisecond) // signatures in flight all the time
		if err := syscall.Kill(tk.tpm.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		f := fields(h.waitFor("loop n=", promptBound))
		if f["name"] != "CKR_DEVICE_ERROR" {
			t.Errorf("round %d, after the kill: %v, want CKR_DEVICE_ERROR", round, f)
		}
		t.Logf("round %d: first failure %v after the kill, in a call of %s ms", round, time.Since(killed), f["ms"])
		time.Sleep(200 * time.Millisecond) // failing calls against a dead TPM
		tk.tpm.Restart(t)
		if f := fields(h.waitFor("loop n=", promptBound)); f["name"] != "CKR_OK" || f["verified"] != "1" {
			t.Fatalf("round %d, after the restart: %v", round, f)
		}
	}
	time.Sleep(200 * time.Millisecond)
	h.send("quit")
	done := fields(h.waitFor("loop done", time.Minute))
	if err := h.wait(); err != nil {
		t.Errorf("p11host: %v", err)
	}
	t.Logf("%v", done)
	if done["other"] != "0" {
		t.Errorf("calls that failed with another code than CKR_DEVICE_ERROR: %v", done)
	}
	if n, _ := strconv.Atoi(done["device_error"]); n == 0 {
		t.Errorf("no call failed: %v", done)
	}
	if ms, _ := strconv.Atoi(done["max_ms"]); time.Duration(ms)*time.Millisecond > promptBound {
		t.Errorf("a call took %d ms", ms)
	}
	lost := 0
	for _, l := range strings.Split(strings.TrimSpace(h.stderr.String()), "\n") {
		if !strings.Contains(l, "error: C_Sign: CKR_DEVICE_ERROR: key rsa (") {
			t.Errorf("unexpected log line: %s", l)
		}
		if strings.Contains(l, lostLine) {
			lost++
			t.Logf("killed mid-command: %s", l)
		}
	}
	t.Logf("%d calls saw the connection drop mid-command", lost)
	tk.noTransient(t)
}

// soakRSSGrowthKB is how much the soak may grow between its 10,000th and
// last signature.
const soakRSSGrowthKB = 8 << 10

// soakResult is what "p11host MODULE soak" reported.
type soakResult struct {
	signs, rssKB []int
	goroutines   []int // at the warm-up's and the end's C_Finalize
	done         map[string]string
}

// runSoak signs count times in one process and samples RSS every every
// signatures, with the module's debug log on for the goroutine counts.
func runSoak(t testing.TB, env []string, count, every int) *soakResult {
	t.Helper()
	env = withEnv(env, "SIMPLE_TPM_PK11_DEBUG=1", "P11HOST_SOAK_EVERY="+strconv.Itoa(every))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	cmd := hostCommand(ctx, t, env, nil, modulePath, "soak", "--count", strconv.Itoa(count))
	var out bytes.Buffer
	cmd.Stdout = &out
	// The debug log has a line per call: keep only the goroutine counts.
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	res := &soakResult{}
	var errLines []string
	gre := regexp.MustCompile(`finalize: (\d+) goroutines`)
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		l := sc.Text()
		if m := gre.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[1])
			res.goroutines = append(res.goroutines, n)
		} else if !strings.Contains(l, "debug: ") && len(errLines) < 20 {
			errLines = append(errLines, l)
		}
	}
	if err := cmd.Wait(); err != nil || ctx.Err() != nil {
		t.Fatalf("p11host soak: %v (%v)\n%s\n%s", err, ctx.Err(), out.String(), strings.Join(errLines, "\n"))
	}
	for _, l := range strings.Split(out.String(), "\n") {
		f := fields(l)
		switch {
		case strings.HasPrefix(l, "soak signs="):
			s, err1 := strconv.Atoi(f["signs"])
			r, err2 := strconv.Atoi(f["rss_kb"])
			if err := errors.Join(err1, err2); err != nil {
				t.Fatalf("%q: %v", l, err)
			}
			res.signs, res.rssKB = append(res.signs, s), append(res.rssKB, r)
		case strings.HasPrefix(l, "soak done"):
			res.done = f
		}
	}
	if res.done == nil || len(res.goroutines) != 2 {
		t.Fatalf("soak output incomplete (goroutine counts %v):\n%s\n%s", res.goroutines, out.String(), strings.Join(errLines, "\n"))
	}
	if res.done["failed"] != "0" || res.done["verified"] != strconv.Itoa(count) {
		t.Errorf("soak: %v\n%s", res.done, strings.Join(errLines, "\n"))
	}
	return res
}

// TestModuleSoak (STPM_LONG=1): 100,000 ECDSA P-256 signatures in one
// process on the swtpm. RSS may grow at most 8 MB between the
// 10,000th and the 100,000th; the goroutines at C_Finalize may not grow.
// It takes a few minutes; `make bench` records the same series in
// docs/PERFORMANCE.md.
func TestModuleSoak(t *testing.T) {
	if os.Getenv("STPM_LONG") == "" {
		t.Skip("a long run: set STPM_LONG=1")
	}
	count, every := 100000, 10000
	if n, err := strconv.Atoi(os.Getenv("STPM_SOAK_COUNT")); err == nil && n >= 2*every {
		count = n
	}
	tk := newToken(t, false)
	res := runSoak(t, tk.env, count, every)
	for i := range res.signs {
		t.Logf("signs=%d rss=%d kB", res.signs[i], res.rssKB[i])
	}
	t.Logf("goroutines at C_Finalize: after one signature %d, after %d: %d", res.goroutines[0], count, res.goroutines[1])
	at10k := -1
	for i, s := range res.signs {
		if s == every {
			at10k = res.rssKB[i]
		}
	}
	last := res.rssKB[len(res.rssKB)-1]
	if at10k < 0 {
		t.Fatalf("no sample at %d signatures: %v", every, res.signs)
	}
	if last-at10k > soakRSSGrowthKB {
		t.Errorf("RSS grew %d kB between %d and %d signatures (at most %d kB)", last-at10k, every, count, soakRSSGrowthKB)
	}
	if res.goroutines[1] > res.goroutines[0] {
		t.Errorf("goroutines at C_Finalize grew from %d to %d", res.goroutines[0], res.goroutines[1])
	}
	tk.noTransient(t)
}

// TestModuleFullTPM: the swtpm's three transient slots are taken by
// objects a dead client left (swtpm has no resource manager). The
// module unloads them and retries, so C_Sign succeeds with every key,
// logs nothing and writes nothing, and leaves the TPM empty (swtpmtest
// checks that at the end of the test).
func TestModuleFullTPM(t *testing.T) {
	tk := newToken(t, false)
	ctx := t.TempDir()
	for i := range 3 {
		tk.tpm.Tool(t, "tpm2_createprimary", "-C", "o", "-c", filepath.Join(ctx, fmt.Sprintf("p%d.ctx", i)))
	}
	if hs := tk.tpm.TransientHandles(t); len(hs) != 3 {
		t.Fatalf("the TPM holds %d transient objects, want 3 (full): %v", len(hs), hs)
	}
	var p *probeResult
	assertUnchanged(t, tk.home, func() { p = probe(t, tk.env, nil) })
	p.checkCheap(t, "1")
	if p.rv("C_GetTokenInfo") != "CKR_OK" {
		t.Errorf("C_GetTokenInfo: %s", p.rv("C_GetTokenInfo"))
	}
	signs := p.signs()
	if len(signs) != len(testKeys) {
		t.Errorf("%d keys signed, want %d:\n%s", len(signs), len(testKeys), p.stdout)
	}
	for label, f := range signs {
		if f["name"] != "CKR_OK" || f["verified"] != "1" {
			t.Errorf("C_Sign with %s on a full TPM: %v, want CKR_OK and a signature that verifies", label, f)
		}
	}
	if len(p.log) != 0 {
		t.Errorf("log lines:\n%s", strings.Join(p.log, "\n"))
	}
}

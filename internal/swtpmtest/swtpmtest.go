// Package swtpmtest starts a real swtpm (software TPM 2.0) process for a test
// and stops it by PID when the test ends.
//
// Each TPM gets its own state directory and its own data/control channels, so
// any number of instances can run at once. By default the data channel is a
// unix socket; with Options.TCP it is 127.0.0.1:P with the control channel on
// P+1, which is the layout tpm2-tss's "swtpm" TCTI (tpm2-tools, the openssl
// tpm2 provider) expects.
//
// Things to know about swtpm (0.7.1 here) when writing tests on it:
//   - It has no resource manager and serves ONE data connection at a time: a
//     second client (including the tpm2-tools helpers below) blocks until the
//     first one disconnects.
//   - It has only 3 transient object slots, and objects stay loaded after the
//     client that loaded them disconnects. tpm2_createprimary -c FILE does not
//     flush its object, so the 4th call fails with TPM_RC_OBJECT_MEMORY
//     (0x902) unless something runs `tpm2_flushcontext -t` in between.
//   - Restart keeps NV state (persistent handles, NV indices, dictionary-attack
//     settings); transient objects and sessions are gone afterwards
//     (--flags startup-clear).
package swtpmtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Options selects how the TPM is reached.
type Options struct {
	// TCP serves the data channel on 127.0.0.1:P and the control channel on
	// 127.0.0.1:P+1 instead of unix sockets in the state directory.
	TCP bool
	// Leftovers lets the test end with transient objects still loaded.
	// Without it, Start registers a check that fails the test if any
	// are: every operation must flush what it loaded, on error paths
	// too, since swtpm has only three slots and no resource manager.
	Leftovers bool
}

// TPM is a running swtpm instance.
type TPM struct {
	Dir  string // state directory (also holds the sockets, pid file and log)
	Spec string // "swtpm:path=DIR/swtpm.sock" or "swtpm:host=127.0.0.1,port=P"
	TCTI string // tpm2-tss TCTI: "swtpm:host=127.0.0.1,port=P" or "swtpm:path=DIR/swtpm.sock"
	PID  int    // PID of the current swtpm process (changes on Restart)

	tcp  bool
	port int // data port in TCP mode; control is port+1

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has been waited for
	log  *os.File
}

const (
	dataSock = "swtpm.sock"
	ctrlSock = "swtpm.sock.ctrl" // tpm2-tss finds the control channel at DATA.ctrl
	logName  = "swtpm.log"
	pidName  = "swtpm.pid"

	// Longest unix socket path: sun_path is 108 bytes including the NUL.
	maxSockPath = 107

	// Ports for TCP mode come from here: below the kernel's ephemeral
	// range, where outgoing connections never take them.
	portRangeLow, portRangeHigh = 20000, 32000

	readyTimeout = 5 * time.Second
	stopTimeout  = 5 * time.Second
	toolTimeout  = 30 * time.Second
)

// Find returns the path of the swtpm binary. When it is missing the test is
// skipped, or fails when the CI environment variable is set.
func Find(t testing.TB) string {
	t.Helper()
	return findTool(t, "swtpm")
}

func findTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	for _, dir := range []string{"/usr/bin", "/usr/local/bin"} {
		cand := filepath.Join(dir, name)
		if st, err := os.Stat(cand); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return cand
		}
	}
	msg := fmt.Sprintf("%s not found: install swtpm (scripts/install-deps.sh)", name)
	if name != "swtpm" {
		msg = fmt.Sprintf("%s not found: install tpm2-tools (scripts/install-deps.sh)", name)
	}
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// Start starts a fresh swtpm for the test. It fails the test if swtpm cannot be
// started, and registers a cleanup that stops it.
func Start(t testing.TB, opts Options) *TPM {
	t.Helper()
	bin := Find(t)

	dir := t.TempDir()
	if len(dir)+1+len(ctrlSock) > maxSockPath || len(dir)+1+len(dataSock) > maxSockPath || strings.ContainsAny(dir, "=,") {
		// t.TempDir() embeds the test name and can get too long for a
		// unix socket path, or hold the "=" and "," that separate a
		// TCTI's options; fall back to a short directory of our own.
		d, err := os.MkdirTemp("", "swtpm")
		if err != nil {
			t.Fatalf("swtpmtest: %v", err)
		}
		if len(d)+1+len(ctrlSock) > maxSockPath {
			os.RemoveAll(d)
			if d, err = os.MkdirTemp("/tmp", "swtpm"); err != nil {
				t.Fatalf("swtpmtest: %v", err)
			}
		}
		dir = d
		// Registered before the stop cleanup, so it runs after it.
		t.Cleanup(func() { os.RemoveAll(d) })
	}

	s := &TPM{Dir: dir, tcp: opts.TCP}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Logf("swtpmtest: stop: %v", err)
		}
	})
	if !opts.Leftovers {
		// Cleanups run last first: this one runs before the stop, after
		// every cleanup the test registers later (its servers, hosts).
		t.Cleanup(func() { s.checkNoTransient(t) })
	}

	if !opts.TCP {
		s.Spec = "swtpm:path=" + filepath.Join(dir, dataSock)
		s.TCTI = s.Spec
		if err := s.launch(bin); err != nil {
			t.Fatalf("swtpmtest: %v", err)
		}
		return s
	}

	// TCP: the port we picked may be taken by someone else before swtpm
	// binds it, so try a few.
	var lastErr error
	for attempt := 0; attempt < 8; attempt++ {
		port, err := freePortPair()
		if err != nil {
			lastErr = err
			continue
		}
		s.port = port
		s.Spec = fmt.Sprintf("swtpm:host=127.0.0.1,port=%d", port)
		s.TCTI = s.Spec
		if lastErr = s.launch(bin); lastErr == nil {
			return s
		}
	}
	t.Fatalf("swtpmtest: %v", lastErr)
	return nil
}

// Stop stops swtpm: SIGTERM, then SIGKILL if it has not exited after 5 s.
// Calling it again, or on a TPM that already exited, is a no-op.
func (s *TPM) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked()
}

func (s *TPM) stopLocked() error {
	if s.cmd == nil {
		return nil
	}
	defer func() {
		s.cmd = nil
		if s.log != nil {
			s.log.Close()
			s.log = nil
		}
	}()
	select {
	case <-s.done:
		return nil
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("SIGTERM swtpm pid %d: %w", s.PID, err)
	}
	select {
	case <-s.done:
		return nil
	case <-time.After(stopTimeout):
	}
	if err := s.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("SIGKILL swtpm pid %d: %w", s.PID, err)
	}
	<-s.done
	return fmt.Errorf("swtpm pid %d ignored SIGTERM for %v; killed", s.PID, stopTimeout)
}

// Restart stops swtpm and starts it again on the same state directory and the
// same socket or port, as a TPM that goes away and comes back would.
func (s *TPM) Restart(t testing.TB) {
	t.Helper()
	bin := Find(t)
	s.mu.Lock()
	err := s.stopLocked()
	s.mu.Unlock()
	if err != nil {
		t.Logf("swtpmtest: restart: %v", err)
	}
	// In TCP mode the port may be briefly unavailable; retry for a while
	// rather than move to another port, since callers hold the old Spec.
	deadline := time.Now().Add(readyTimeout)
	for {
		err = s.launch(bin)
		if err == nil {
			return
		}
		if !s.tcp || time.Now().After(deadline) {
			t.Fatalf("swtpmtest: restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// launch starts swtpm with the current settings and waits until the data
// channel accepts connections.
func (s *TPM) launch(bin string) error {
	s.mu.Lock()
	defer s.mu.Unlock()

	logPath := filepath.Join(s.Dir, logName)
	args := []string{"socket", "--tpm2",
		"--tpmstate", "dir=" + s.Dir,
	}
	if s.tcp {
		args = append(args,
			"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", s.port),
			"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", s.port+1))
	} else {
		// A socket file left by a killed swtpm would make the bind fail.
		os.Remove(filepath.Join(s.Dir, dataSock))
		os.Remove(filepath.Join(s.Dir, ctrlSock))
		args = append(args,
			"--server", "type=unixio,path="+filepath.Join(s.Dir, dataSock),
			"--ctrl", "type=unixio,path="+filepath.Join(s.Dir, ctrlSock))
	}
	args = append(args,
		"--flags", "not-need-init,startup-clear",
		"--pid", "file="+filepath.Join(s.Dir, pidName),
		"--log", "file="+logPath)

	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start swtpm: %w", err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	s.cmd, s.done, s.log, s.PID = cmd, done, logf, cmd.Process.Pid

	if err := s.waitReady(); err != nil {
		s.stopLocked()
		return fmt.Errorf("%v\n--- tail of %s ---\n%s", err, logPath, tail(logPath, 20))
	}
	return nil
}

// waitReady waits until swtpm accepts a connection on its data channel (and on
// its control channel in TCP mode). swtpm serves one data connection at a
// time, so each probe connection is closed at once.
func (s *TPM) waitReady() error {
	var addrs [][2]string
	if s.tcp {
		addrs = [][2]string{
			{"tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))},
			{"tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port+1))},
		}
	} else {
		addrs = [][2]string{{"unix", filepath.Join(s.Dir, dataSock)}}
	}
	deadline := time.Now().Add(readyTimeout)
	for _, a := range addrs {
		for {
			select {
			case <-s.done:
				return fmt.Errorf("swtpm (pid %d) exited before serving %s %s: %v",
					s.PID, a[0], a[1], s.cmd.ProcessState)
			default:
			}
			c, err := net.DialTimeout(a[0], a[1], 500*time.Millisecond)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("swtpm (pid %d) not serving %s %s after %v: %v",
					s.PID, a[0], a[1], readyTimeout, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// freePortPair returns a port P on 127.0.0.1 such that P and P+1 are both free
// right now.
func freePortPair() (int, error) {
	// Not from bind(0): Linux hands out odd ports there and even ones to
	// connect(), so P+1 is often held by an outgoing connection or its
	// TIME_WAIT, which a listener cannot take over. Below the ephemeral
	// range (32768 and up by default) neither happens.
	var lastErr error
	for i := 0; i < 200; i++ {
		p := portRangeLow + 2*rand.IntN((portRangeHigh-portRangeLow)/2)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			lastErr = err
			continue
		}
		l2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+1)))
		if cerr := l.Close(); cerr != nil && err == nil {
			l2.Close()
			return 0, cerr
		}
		if err != nil {
			lastErr = err
			continue
		}
		if err := l2.Close(); err != nil {
			return 0, err
		}
		return p, nil
	}
	return 0, fmt.Errorf("no free port pair on 127.0.0.1 in %d-%d: %v", portRangeLow, portRangeHigh, lastErr)
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Tool runs a tpm2-tools program (e.g. "tpm2_getcap") against this TPM, adding
// "-T TCTI" before args, and returns its stdout. It fails the test on error.
// tpm2-tss reaches the control channel at P+1 (TCP) or at DATA.ctrl (unix).
//
// It blocks while another client holds swtpm's single data connection, so do
// not call it while a test keeps a connection open (it gives up after 30 s).
func (s *TPM) Tool(t testing.TB, name string, args ...string) string {
	t.Helper()
	if s.TCTI == "" {
		t.Fatalf("swtpmtest: %s needs a TCTI: start the TPM with swtpmtest.Options{TCP: true}", name)
	}
	bin := findTool(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, append([]string{"-T", s.TCTI}, args...)...)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("swtpmtest: %s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// TransientHandles lists the transient object handles loaded in the TPM
// (e.g. "0x80000000"), via `tpm2_getcap handles-transient`.
func (s *TPM) TransientHandles(t testing.TB) []string {
	t.Helper()
	if s.TCTI == "" {
		t.Fatal("swtpmtest: TransientHandles needs tpm2-tools, which need TCP mode: start the TPM with swtpmtest.Options{TCP: true}")
	}
	return parseHandles(s.Tool(t, "tpm2_getcap", "handles-transient"))
}

// checkNoTransient fails the test when the TPM, if still running, holds
// transient objects.
func (s *TPM) checkNoTransient(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	running := s.cmd != nil
	if running {
		select {
		case <-s.done:
			running = false
		default:
		}
	}
	s.mu.Unlock()
	if !running {
		return
	}
	if hs := s.TransientHandles(t); len(hs) > 0 {
		t.Errorf("swtpmtest: the test left %d transient object(s) in the TPM: %s; every operation must flush what it loads", len(hs), strings.Join(hs, " "))
	}
}

// parseHandles reads tpm2_getcap's YAML list ("- 0x80000000" per line).
func parseHandles(out string) []string {
	var hs []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if h, ok := strings.CutPrefix(line, "- "); ok {
			hs = append(hs, strings.TrimSpace(h))
		}
	}
	return hs
}

// RelaxLockout raises the dictionary-attack limits (1000 failures, 1 s
// recovery) so tests can try wrong PINs; swtpm's default locks out after 3.
// It persists across Restart.
func (s *TPM) RelaxLockout(t testing.TB) {
	t.Helper()
	if s.TCTI == "" {
		t.Fatal("swtpmtest: RelaxLockout needs tpm2-tools, which need TCP mode: start the TPM with swtpmtest.Options{TCP: true}")
	}
	s.Tool(t, "tpm2_dictionarylockout", "-s", "-n", "1000", "-t", "1", "-l", "1")
}

package tpm

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// scripted answers each command with the next response code.
type scripted struct {
	codes []tpm2.TPMRC
	sent  [][]byte
}

func (s *scripted) Send(cmd []byte) ([]byte, error) {
	s.sent = append(s.sent, append([]byte(nil), cmd...))
	rc := tpm2.TPMRC(0)
	if len(s.codes) > 0 {
		rc, s.codes = s.codes[0], s.codes[1:]
	}
	return []byte{0x80, 0x01, 0, 0, 0, 10, byte(rc >> 24), byte(rc >> 16), byte(rc >> 8), byte(rc)}, nil
}
func (s *scripted) Close() error { return nil }

func TestRetrying(t *testing.T) {
	cmd := []byte{0x80, 0x01, 0, 0, 0, 10, 0, 0, 1, 0x7b}
	for _, tc := range []struct {
		name  string
		codes []tpm2.TPMRC
		sends int
		rc    tpm2.TPMRC
	}{
		{"ok", nil, 1, 0},
		{"retry then ok", []tpm2.TPMRC{tpm2.TPMRCRetry, tpm2.TPMRCYielded, tpm2.TPMRCTesting}, 4, 0},
		{"not started", []tpm2.TPMRC{tpm2.TPMRCInitialize}, 3, 0},
		{"other error passes", []tpm2.TPMRC{tpm2.TPMRCAuthFail}, 1, tpm2.TPMRCAuthFail},
		{"bounded", slices.Repeat([]tpm2.TPMRC{tpm2.TPMRCRetry}, maxRetries+5), maxRetries + 1, tpm2.TPMRCRetry},
	} {
		s := &scripted{codes: tc.codes}
		r := retrying{TPMCloser: s, sleep: func(time.Duration) {}}
		rsp, err := r.Send(cmd)
		if tc.name == "bounded" {
			if !errors.Is(err, ErrBusy) || !errors.Is(err, tpm2.TPMRCRetry) || rsp != nil {
				t.Errorf("%s: %v, %x; want ErrBusy carrying TPM_RC_RETRY, no response", tc.name, err, rsp)
			}
		} else if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		} else if got := responseCode(rsp); got != tc.rc {
			t.Errorf("%s: rc %v, want %v", tc.name, got, tc.rc)
		}
		if len(s.sent) != tc.sends {
			t.Errorf("%s: %d sends, want %d", tc.name, len(s.sent), tc.sends)
		}
		if tc.name == "not started" && !bytes.Equal(s.sent[1], startupClear) {
			t.Errorf("%s: second command %x, want TPM2_Startup(CLEAR)", tc.name, s.sent[1])
		}
	}
}

// busySign forwards every command to the simulator except TPM2_Sign,
// which it answers with TPM_RC_RETRY, as a TPM that stays busy does.
type busySign struct {
	transport.TPM
	signs int
}

func (b *busySign) Send(cmd []byte) ([]byte, error) {
	if len(cmd) >= 10 && tpm2.TPMCC(binary.BigEndian.Uint32(cmd[6:10])) == tpm2.TPMCCSign {
		b.signs++
		rc := tpm2.TPMRCRetry
		return []byte{0x80, 0x01, 0, 0, 0, 10, byte(rc >> 24), byte(rc >> 16), byte(rc >> 8), byte(rc)}, nil
	}
	return b.TPM.Send(cmd)
}

func (b *busySign) Close() error { return nil }

// TestRetryStormSign: a TPM that answers TPM_RC_RETRY to TPM2_Sign for
// ever gets maxRetries+1 tries with growing pauses, then the signature
// fails with ErrBusy and a message that says so, not with the raw code;
// the key loaded for it is flushed.
func TestRetryStormSign(t *testing.T) {
	tp := newSimTPM(t)
	k := createKey(t, tp, KeySpec{Type: ECDSA, Bits: 256})
	busy := &busySign{TPM: sim}
	var slept []time.Duration
	c := &Conn{tpm: retrying{TPMCloser: busy, sleep: func(d time.Duration) { slept = append(slept, d) }}, owner: tp}
	d := sha256.Sum256([]byte("x"))
	l, err := c.LoadKey(k, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Sign(l, nil, d[:], SignOpts{Hash: crypto.SHA256})
	err = c.finish(err)
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, ErrBusy) || !errors.Is(err, tpm2.TPMRCRetry) {
		t.Fatalf("got %v, want an *Error of kind ErrBusy carrying TPM_RC_RETRY", err)
	}
	if want := "the TPM stayed busy: TPM_RC_RETRY for 31 tries over about 2.4 s"; e.Msg != want {
		t.Errorf("message %q, want %q", e.Msg, want)
	}
	if want := "try again; if it lasts, restart the TPM daemon or swtpm"; Hint(err) != want {
		t.Errorf("hint %q, want %q", Hint(err), want)
	}
	if busy.signs != maxRetries+1 || len(slept) != maxRetries {
		t.Errorf("%d TPM2_Sign sent, %d pauses; want %d and %d", busy.signs, len(slept), maxRetries+1, maxRetries)
	}
	var total time.Duration
	for _, s := range slept {
		total += s
	}
	if total != 2427*time.Millisecond {
		t.Errorf("paused %v in all, want 2.427s (1 ms doubling up to 100 ms)", total)
	}
}

func TestDialErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := dial(Spec{Kind: SwtpmUnix, Path: filepath.Join(dir, "none.sock")})
	if !errors.Is(err, ErrUnreachable) {
		t.Errorf("missing socket: %v, want ErrUnreachable", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = dial(Spec{Kind: SwtpmTCP, Host: "127.0.0.1", Port: port})
	if !errors.Is(err, ErrUnreachable) || Hint(err) == "" {
		t.Errorf("closed port: %v, want ErrUnreachable with a hint", err)
	}
	_, err = dial(Spec{Kind: Device, Path: filepath.Join(dir, "tpmrm0")})
	if !errors.Is(err, ErrNoTPM) {
		t.Errorf("missing device: %v, want ErrNoTPM", err)
	}
}

// TestWaitLock: a waiter gets the lock when its holder lets go; one that
// gives up does not keep it once it arrives.
func TestWaitLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock.lock")
	holder, err := acquireLock(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := openLockFile(path)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := waitLock(f, path, 50*time.Millisecond); !errors.Is(err, ErrBusy) {
		t.Fatalf("waiting for a held lock: got %v, want ErrBusy", err)
	}
	if d := time.Since(start); d < 50*time.Millisecond || d > 5*time.Second {
		t.Errorf("gave up after %v, want about 50ms", d)
	}
	// The abandoned waiter takes the lock when the holder closes, and
	// drops it at once: the next one gets it.
	released := make(chan struct{})
	go func() {
		time.Sleep(20 * time.Millisecond)
		if err := closeLock(holder); err != nil {
			t.Error(err)
		}
		close(released)
	}()
	next, err := acquireLock(path)
	if err != nil {
		t.Fatalf("lock after the holder closed: %v", err)
	}
	<-released
	if err := closeLock(next); err != nil {
		t.Fatal(err)
	}
}

// TestLockTurns: two goroutines with their own lock files (as two
// processes have) that each take the lock again at once both get turns.
func TestLockTurns(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock.lock")
	var turns [2]int
	stop := time.Now().Add(300 * time.Millisecond)
	done := make(chan error, 2)
	for i := range 2 {
		go func() {
			for time.Now().Before(stop) {
				f, err := acquireLock(path)
				if err != nil {
					done <- err
					return
				}
				turns[i]++
				time.Sleep(time.Millisecond) // a signature's worth of work
				if err := closeLock(f); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	lo, hi := min(turns[0], turns[1]), max(turns[0], turns[1])
	if lo*3 < hi {
		t.Errorf("turns %v: one waiter starved", turns)
	}
}

// TestDeviceFallback: the default spec uses the resource manager device,
// falls back to the raw device when the kernel has none, and names both
// when neither exists; a device the user names is never swapped.
func TestDeviceFallback(t *testing.T) {
	dir := t.TempDir()
	oldRM, oldRaw := deviceRM, deviceRaw
	deviceRM, deviceRaw = filepath.Join(dir, "tpmrm0"), filepath.Join(dir, "tpm0")
	t.Cleanup(func() { deviceRM, deviceRaw = oldRM, oldRaw })

	_, err := dial(DefaultSpec())
	if !errors.Is(err, ErrNoTPM) || err.Error() != "no TPM at "+deviceRM+" or "+deviceRaw {
		t.Errorf("neither device: got %v", err)
	}
	if err := os.WriteFile(deviceRaw, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tp := Open(DefaultSpec())
	if tp.spec.Path != deviceRaw || tp.keep {
		t.Errorf("raw device only: Open chose %s (keep %v), want %s without keeping it open", tp.spec.Path, tp.keep, deviceRaw)
	}
	tr, err := dial(DefaultSpec())
	if err != nil {
		t.Fatalf("raw device only: %v", err)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	explicit := Spec{Kind: Device, Path: deviceRM}
	if _, err := dial(explicit); !errors.Is(err, ErrNoTPM) || err.Error() != "no TPM at "+deviceRM {
		t.Errorf("named device: got %v, want no fallback", err)
	}
	if tp := Open(explicit); tp.spec.Path != deviceRM {
		t.Errorf("named device: Open chose %s", tp.spec.Path)
	}
	if err := os.WriteFile(deviceRM, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if tp := Open(DefaultSpec()); tp.spec.Path != deviceRM || !tp.keep {
		t.Errorf("both devices: Open chose %s (keep %v), want %s kept open", tp.spec.Path, tp.keep, deviceRM)
	}
}

// TestNoLockFileForMissingSocket: a swtpm socket that does not exist gives
// the connection error, and no lock file appears next to it.
func TestNoLockFileForMissingSocket(t *testing.T) {
	dir := t.TempDir()
	spec := Spec{Kind: SwtpmUnix, Path: filepath.Join(dir, "none.sock")}
	err := Open(spec).Do(func(*Conn) error { return nil })
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "swtpm not reachable at swtpm:path="+spec.Path) {
		t.Errorf("got %v, want swtpm not reachable", err)
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Errorf("directory holds %v (%v), want nothing", ents, err)
	}
}

package swtpmtest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func alive(pid int) bool {
	return pid > 0 && syscall.Kill(pid, 0) == nil
}

// getRandom sends a raw TPM2_GetRandom(8) on the data channel of s and checks
// the response, proving the TPM answers commands (no tpm2-tools needed).
func getRandom(t *testing.T, s *TPM) {
	t.Helper()
	network, addr := "unix", filepath.Join(s.Dir, dataSock)
	if s.tcp {
		network, addr = "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	}
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// TPM_ST_NO_SESSIONS, size 12, TPM_CC_GetRandom, bytesRequested 8.
	cmd := []byte{0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8}
	if _, err := c.Write(cmd); err != nil {
		t.Fatalf("write: %v", err)
	}
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(c, hdr); err != nil {
		t.Fatalf("read header: %v", err)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	rc := binary.BigEndian.Uint32(hdr[6:10])
	if rc != 0 {
		t.Fatalf("GetRandom rc = %#x", rc)
	}
	if size != 10+2+8 {
		t.Fatalf("GetRandom response size = %d, want 20", size)
	}
	body := make([]byte, size-10)
	if _, err := io.ReadFull(c, body); err != nil {
		t.Fatalf("read body: %v", err)
	}
	if n := binary.BigEndian.Uint16(body); n != 8 {
		t.Fatalf("GetRandom returned %d bytes, want 8", n)
	}
}

func TestUnixStartStop(t *testing.T) {
	s := Start(t, Options{})
	if want := "swtpm:path=" + filepath.Join(s.Dir, "swtpm.sock"); s.Spec != want {
		t.Errorf("Spec = %q, want %q", s.Spec, want)
	}
	if s.TCTI != s.Spec {
		t.Errorf("TCTI = %q in unix mode, want %q", s.TCTI, s.Spec)
	}
	// tpm2-tools reach the unix-socket TPM too (control socket at DATA.ctrl).
	if hs := s.TransientHandles(t); len(hs) != 0 {
		t.Errorf("fresh TPM has transient objects %v", hs)
	}
	if !alive(s.PID) {
		t.Fatalf("swtpm pid %d not alive after Start", s.PID)
	}
	if b, err := os.ReadFile(filepath.Join(s.Dir, "swtpm.pid")); err != nil {
		t.Errorf("pid file: %v", err)
	} else if strings.TrimSpace(string(b)) != strconv.Itoa(s.PID) {
		t.Errorf("pid file says %q, PID is %d", b, s.PID)
	}
	getRandom(t, s)
	getRandom(t, s) // the probe and earlier clients must not hold the one data connection
	pid := s.PID
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if alive(pid) {
		t.Fatalf("swtpm pid %d still alive after Stop", pid)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

func TestTCPStartStop(t *testing.T) {
	s := Start(t, Options{TCP: true})
	want := fmt.Sprintf("swtpm:host=127.0.0.1,port=%d", s.port)
	if s.Spec != want || s.TCTI != want {
		t.Errorf("Spec = %q, TCTI = %q, want both %q", s.Spec, s.TCTI, want)
	}
	if !alive(s.PID) {
		t.Fatalf("swtpm pid %d not alive after Start", s.PID)
	}
	getRandom(t, s)
	pid := s.PID
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if alive(pid) {
		t.Fatalf("swtpm pid %d still alive after Stop", pid)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

func TestCleanupStopsAndRemoves(t *testing.T) {
	var pids []int
	var dirs []string
	// A long TMPDIR pushes t.TempDir() (and os.MkdirTemp("", ...)) past the
	// unix socket limit and exercises the short-directory fallback.
	longTmp := filepath.Join(t.TempDir(), strings.Repeat("x", 100))
	if err := os.Mkdir(longTmp, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"short", "longtmp"} {
		t.Run(name, func(t *testing.T) {
			if name == "longtmp" {
				t.Setenv("TMPDIR", longTmp)
			}
			s := Start(t, Options{})
			if n := len(filepath.Join(s.Dir, ctrlSock)); n > maxSockPath {
				t.Fatalf("socket path is %d bytes", n)
			}
			if name == "longtmp" && strings.HasPrefix(s.Dir, longTmp) {
				t.Fatalf("state dir %s is under the long TMPDIR", s.Dir)
			}
			getRandom(t, s)
			pids = append(pids, s.PID)
			dirs = append(dirs, s.Dir)
		})
	}
	for i, pid := range pids {
		if alive(pid) {
			t.Errorf("swtpm pid %d alive after its test ended", pid)
		}
		if _, err := os.Stat(dirs[i]); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("state dir %s still there after its test ended (err=%v)", dirs[i], err)
		}
	}
}

func TestTransientHandlesAndLockout(t *testing.T) {
	s := Start(t, Options{TCP: true})
	if hs := s.TransientHandles(t); len(hs) != 0 {
		t.Fatalf("fresh TPM has transient handles %v", hs)
	}
	// tpm2_createprimary saves the context to a file but, without a
	// resource manager, leaves the object loaded in swtpm.
	s.Tool(t, "tpm2_createprimary", "-C", "o", "-c", filepath.Join(s.Dir, "p.ctx"))
	hs := s.TransientHandles(t)
	if len(hs) != 1 || !strings.HasPrefix(hs[0], "0x80") {
		t.Fatalf("after createprimary: transient handles %v, want one 0x80xxxxxx", hs)
	}
	s.Tool(t, "tpm2_flushcontext", "-t")
	if hs := s.TransientHandles(t); len(hs) != 0 {
		t.Fatalf("after flushcontext -t: transient handles %v", hs)
	}

	s.RelaxLockout(t)
	props := s.Tool(t, "tpm2_getcap", "properties-variable")
	if !strings.Contains(props, "TPM2_PT_MAX_AUTH_FAIL: 0x3E8") {
		t.Fatalf("max auth fail not 1000 after RelaxLockout:\n%s", props)
	}
}

func TestRestartKeepsStateTCP(t *testing.T) {
	s := Start(t, Options{TCP: true, Leftovers: true})
	spec, port, oldPID := s.Spec, s.port, s.PID

	s.RelaxLockout(t)
	ctx := filepath.Join(s.Dir, "p.ctx")
	s.Tool(t, "tpm2_createprimary", "-C", "o", "-c", ctx)
	s.Tool(t, "tpm2_evictcontrol", "-C", "o", "-c", ctx, "0x81000001")
	s.Tool(t, "tpm2_nvdefine", "-C", "o", "-s", "8", "-a", "ownerread|ownerwrite", "0x1500016")
	data := filepath.Join(s.Dir, "nv.in")
	if err := os.WriteFile(data, []byte("persist!"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.Tool(t, "tpm2_nvwrite", "-C", "o", "-i", data, "0x1500016")

	s.Restart(t)
	if s.Spec != spec || s.port != port {
		t.Fatalf("after Restart: Spec %q port %d, want %q %d", s.Spec, s.port, spec, port)
	}
	if s.PID == oldPID || !alive(s.PID) {
		t.Fatalf("after Restart: PID %d (old %d) alive=%v", s.PID, oldPID, alive(s.PID))
	}
	if alive(oldPID) {
		t.Fatalf("old swtpm pid %d still alive after Restart", oldPID)
	}

	if hs := s.TransientHandles(t); len(hs) != 0 {
		t.Errorf("transient handles survived restart: %v", hs)
	}
	if hs := parseHandles(s.Tool(t, "tpm2_getcap", "handles-persistent")); !slices.Contains(hs, "0x81000001") {
		t.Errorf("persistent handle lost on restart: %v", hs)
	}
	if got := s.Tool(t, "tpm2_nvread", "-C", "o", "-s", "8", "0x1500016"); got != "persist!" {
		t.Errorf("NV index after restart reads %q", got)
	}
	if props := s.Tool(t, "tpm2_getcap", "properties-variable"); !strings.Contains(props, "TPM2_PT_MAX_AUTH_FAIL: 0x3E8") {
		t.Errorf("lockout settings lost on restart:\n%s", props)
	}
	s.Tool(t, "tpm2_createprimary", "-C", "o", "-c", filepath.Join(s.Dir, "p2.ctx"))
}

func TestRestartUnix(t *testing.T) {
	s := Start(t, Options{})
	spec, oldPID := s.Spec, s.PID
	getRandom(t, s)
	// Restart twice, once after an explicit Stop.
	s.Restart(t)
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	s.Restart(t)
	if s.Spec != spec {
		t.Fatalf("Spec changed: %q -> %q", spec, s.Spec)
	}
	if alive(oldPID) || !alive(s.PID) {
		t.Fatalf("old pid %d alive=%v, new pid %d alive=%v", oldPID, alive(oldPID), s.PID, alive(s.PID))
	}
	getRandom(t, s)
}

func TestTwoAtOnce(t *testing.T) {
	for _, tcp := range []bool{false, true} {
		t.Run(fmt.Sprintf("tcp=%v", tcp), func(t *testing.T) {
			t.Parallel()
			a := Start(t, Options{TCP: tcp, Leftovers: true})
			b := Start(t, Options{TCP: tcp})
			if a.Dir == b.Dir || a.Spec == b.Spec || a.PID == b.PID {
				t.Fatalf("instances collide: %+v / %+v", a.Spec, b.Spec)
			}
			if tcp && (a.port == b.port+1 || b.port == a.port+1) {
				t.Fatalf("port ranges overlap: %d and %d", a.port, b.port)
			}
			getRandom(t, a)
			getRandom(t, b)
			if !tcp {
				return
			}
			ctx := filepath.Join(a.Dir, "p.ctx")
			a.Tool(t, "tpm2_createprimary", "-C", "o", "-c", ctx)
			a.Tool(t, "tpm2_evictcontrol", "-C", "o", "-c", ctx, "0x81000001")
			if hs := b.TransientHandles(t); len(hs) != 0 {
				t.Errorf("b sees a's transient objects: %v", hs)
			}
			if hs := parseHandles(b.Tool(t, "tpm2_getcap", "handles-persistent")); len(hs) != 0 {
				t.Errorf("b sees a's persistent objects: %v", hs)
			}
		})
	}
}

// errorsTB records the errors reported to it.
type errorsTB struct {
	testing.TB
	errs []string
}

func (e *errorsTB) Errorf(format string, args ...any) {
	e.errs = append(e.errs, fmt.Sprintf(format, args...))
}

// TestLeftoversChecked: the check Start registers reports an object left
// loaded, and is quiet once it is flushed or the TPM has stopped.
func TestLeftoversChecked(t *testing.T) {
	s := Start(t, Options{TCP: true})
	s.Tool(t, "tpm2_createprimary", "-C", "o", "-c", filepath.Join(s.Dir, "p.ctx"))
	rec := &errorsTB{TB: t}
	s.checkNoTransient(rec)
	if len(rec.errs) != 1 || !strings.Contains(rec.errs[0], "left 1 transient object(s)") {
		t.Errorf("with an object loaded: errors %q, want one naming it", rec.errs)
	}
	s.Tool(t, "tpm2_flushcontext", "-t")
	rec.errs = nil
	s.checkNoTransient(rec)
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	s.checkNoTransient(rec)
	if len(rec.errs) != 0 {
		t.Errorf("flushed, then stopped: errors %q", rec.errs)
	}
}

func TestParseHandles(t *testing.T) {
	got := parseHandles("- 0x80000000\n- 0x80000001\n")
	if !slices.Equal(got, []string{"0x80000000", "0x80000001"}) {
		t.Errorf("parseHandles = %v", got)
	}
	if got := parseHandles(""); len(got) != 0 {
		t.Errorf("parseHandles(\"\") = %v", got)
	}
}

package tpm

import (
	"bytes"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
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
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := responseCode(rsp); got != tc.rc {
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

package tpm

import (
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/google/go-tpm/tpm2/transport"
)

// countingTPM passes commands to the simulator and counts them; closing
// it leaves the simulator open.
type countingTPM struct {
	transport.TPM
	sends *atomic.Int64
}

func (c countingTPM) Send(cmd []byte) ([]byte, error) {
	c.sends.Add(1)
	return c.TPM.Send(cmd)
}

func (countingTPM) Close() error { return nil }

// TestCapabilitiesCached: the first call asks the TPM; the next ones
// neither connect (on swtpm: take the lock and dial) nor send a command.
// A failed first attempt is not cached.
func TestCapabilitiesCached(t *testing.T) {
	var opens, sends atomic.Int64
	failFirst := true
	tp := &TPM{
		spec: Spec{Kind: SwtpmUnix, Path: filepath.Join(t.TempDir(), "swtpm.sock")},
		open: func() (transport.TPMCloser, error) {
			opens.Add(1)
			if failFirst {
				failFirst = false
				return nil, newErr(ErrUnreachable, nil, "", "swtpm not reachable (test)")
			}
			return countingTPM{TPM: sim, sends: &sends}, nil
		},
	}
	t.Cleanup(func() { assertNoTransient(t) })
	if _, err := tp.Capabilities(); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("first call with the TPM away: %v, want ErrUnreachable", err)
	}
	first, err := tp.Capabilities()
	if err != nil {
		t.Fatal(err)
	}
	if len(first.RSABits) == 0 || len(first.ECCBits) == 0 || !first.HasAlg(0x0018) {
		t.Fatalf("capabilities %+v: want RSA and ECC sizes and ECDSA", first)
	}
	opened, sent := opens.Load(), sends.Load()
	if opened != 2 || sent == 0 {
		t.Fatalf("after the first answer: %d opens, %d commands; want 2 opens (one failed) and some commands", opened, sent)
	}
	for range 50 {
		caps, err := tp.Capabilities()
		if err != nil {
			t.Fatal(err)
		}
		if caps != first {
			t.Fatal("a later call returned a different value")
		}
	}
	if opens.Load() != opened || sends.Load() != sent {
		t.Errorf("50 more calls: %d more opens, %d more commands; want none", opens.Load()-opened, sends.Load()-sent)
	}
}

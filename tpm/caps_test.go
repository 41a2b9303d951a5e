package tpm

import (
	"crypto"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// countingCaps counts TPM2_GetCapability(TPM_CAP_ALGS) commands.
type countingCaps struct {
	transport.TPM
	algQueries int
}

func (c *countingCaps) Send(cmd []byte) ([]byte, error) {
	const getCapability = 0x17a
	if len(cmd) >= 14 && binary.BigEndian.Uint32(cmd[6:10]) == getCapability &&
		binary.BigEndian.Uint32(cmd[10:14]) == uint32(tpm2.TPMCapAlgs) {
		c.algQueries++
	}
	return c.TPM.Send(cmd)
}

// TestCapsAskedOnce: the TPM's algorithms are asked once per TPM value,
// however many keys are made and signatures given.
func TestCapsAskedOnce(t *testing.T) {
	newSimTPM(t)
	cnt := &countingCaps{TPM: sim}
	tp := FromTransport(cnt)
	for _, ks := range []KeySpec{{Type: ECDSA, Bits: 256}, {Type: RSA, Bits: 2048}} {
		if err := tp.Do(func(c *Conn) error { return c.CheckSupported(ks) }); err != nil {
			t.Fatal(err)
		}
	}
	k := createKey(t, tp, KeySpec{Type: ECDSA, Bits: 256})
	d := sha512.Sum384([]byte("x"))
	for range 3 {
		if _, err := tp.SignDigest(k, nil, nil, d[:], SignOpts{Hash: crypto.SHA384}); err != nil {
			t.Fatal(err)
		}
	}
	if cnt.algQueries != 1 {
		t.Errorf("asked for the algorithms %d times, want once", cnt.algQueries)
	}
}

// TestCheckSupportedMissing: a TPM without what a request needs gets a
// clear error and a hint, not a TPM error code later.
func TestCheckSupportedMissing(t *testing.T) {
	newSimTPM(t)
	k := createKey(t, FromTransport(sim), KeySpec{Type: ECDSA, Bits: 256})
	for _, tc := range []struct {
		name string
		algs []tpm2.TPMAlgID
		op   func(tp *TPM) error
		msg  string
	}{
		{"no ECC", []tpm2.TPMAlgID{tpm2.TPMAlgRSA, tpm2.TPMAlgSHA256}, func(tp *TPM) error {
			return tp.Do(func(c *Conn) error { return c.CheckSupported(KeySpec{Type: ECDSA, Bits: 256}) })
		}, "this TPM does not support ECDSA keys"},
		{"no RSA", []tpm2.TPMAlgID{tpm2.TPMAlgECC, tpm2.TPMAlgSHA256}, func(tp *TPM) error {
			return tp.Do(func(c *Conn) error { return c.CheckSupported(KeySpec{Type: RSA, Bits: 2048}) })
		}, "this TPM does not support RSA keys"},
		{"no SHA-256", []tpm2.TPMAlgID{tpm2.TPMAlgECC, tpm2.TPMAlgSHA1}, func(tp *TPM) error {
			return tp.Do(func(c *Conn) error { return c.CheckSupported(KeySpec{Type: ECDSA, Bits: 256}) })
		}, "this TPM does not support SHA-256, which the keys are named with"},
		{"no SHA-512", []tpm2.TPMAlgID{tpm2.TPMAlgECC, tpm2.TPMAlgSHA256}, func(tp *TPM) error {
			d := sha512.Sum512([]byte("x"))
			_, err := tp.SignDigest(k, nil, nil, d[:], SignOpts{Hash: crypto.SHA512})
			return err
		}, "this TPM does not support SHA-512"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := FromTransport(sim)
			caps := &Caps{Algs: map[tpm2.TPMAlgID]bool{}}
			for _, a := range tc.algs {
				caps.Algs[a] = true
			}
			tp.caps = caps
			err := tc.op(tp)
			if !errors.Is(err, ErrUnsupported) || err.Error() != tc.msg || Hint(err) == "" {
				t.Errorf("got %v (hint %q), want %q with a hint", err, Hint(err), tc.msg)
			}
		})
	}
}

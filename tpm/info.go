package tpm

import (
	"bytes"

	"github.com/google/go-tpm/tpm2"
)

// Identity says which TPM this is.
type Identity struct {
	Manufacturer string
	Firmware     uint64
	// ParentName is the TPM name of the storage parent: it is the same
	// for as long as the TPM's owner seed is (it changes when the TPM is
	// cleared, which is also when its keys stop loading), so it makes a
	// stable serial number.
	ParentName []byte
}

// Identity asks the TPM who it is, once; later calls return the cached
// answer.
func (t *TPM) Identity(parent uint32, parentAuth []byte) (*Identity, error) {
	t.infoMu.Lock()
	defer t.infoMu.Unlock()
	if t.identity != nil {
		return t.identity, nil
	}
	var id Identity
	err := t.Do(func(c *Conn) error {
		caps, err := c.Caps()
		if err != nil {
			return err
		}
		p, err := c.LoadParent(parent, false, parentAuth)
		if err != nil {
			return err
		}
		id = Identity{Manufacturer: caps.Manufacturer, Firmware: caps.Firmware, ParentName: bytes.Clone(p.Name.Buffer)}
		return nil
	})
	if err != nil {
		return nil, err
	}
	t.identity = &id
	return t.identity, nil
}

// Capabilities returns what the TPM supports, asking it only once: later
// calls neither connect nor take the TPM lock (C_GetMechanismInfo is
// called once per mechanism, and on swtpm each connection waits for the
// lock). Like the identity, the answer is kept for the life of this TPM
// value, which the module makes anew at each C_Initialize. The returned
// value is shared: read it, never change it.
func (t *TPM) Capabilities() (*Caps, error) {
	if caps := t.sizedCaps(); caps != nil {
		return caps, nil
	}
	var caps *Caps
	err := t.Do(func(c *Conn) error {
		var err error
		if caps, err = c.Caps(); err != nil || caps.sized {
			return err
		}
		caps.RSABits, caps.ECCBits = nil, nil
		for _, bits := range []int{1024, 2048, 3072, 4096} {
			if c.testParms(KeySpec{Type: RSA, Bits: bits}) == nil {
				caps.RSABits = append(caps.RSABits, bits)
			}
		}
		for _, bits := range []int{256, 384} {
			if c.testParms(KeySpec{Type: ECDSA, Bits: bits}) == nil {
				caps.ECCBits = append(caps.ECCBits, bits)
			}
		}
		caps.sized = true
		return nil
	})
	if err != nil {
		return nil, err
	}
	return caps, nil
}

// sizedCaps returns the capabilities once Capabilities has filled in the
// key sizes, else nil.
func (t *TPM) sizedCaps() *Caps {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.caps != nil && t.caps.sized {
		return t.caps
	}
	return nil
}

// LockoutState reads the dictionary-attack counters now (never cached).
func (t *TPM) LockoutState() (Lockout, error) {
	var l Lockout
	err := t.Do(func(c *Conn) error {
		var err error
		l, err = c.Lockout()
		return err
	})
	return l, err
}

// Random fills b from the TPM's random number generator.
func (t *TPM) Random(b []byte) error {
	return t.Do(func(c *Conn) error {
		for off := 0; off < len(b); {
			rsp, err := tpm2.GetRandom{BytesRequested: uint16(min(len(b)-off, 32))}.Execute(c.tpm)
			if err != nil {
				return tpmErr("get random", err)
			}
			if len(rsp.RandomBytes.Buffer) == 0 {
				return newErr(ErrTPM, nil, "", "TPM returned no random bytes")
			}
			off += copy(b[off:], rsp.RandomBytes.Buffer)
		}
		return nil
	})
}

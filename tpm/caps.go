package tpm

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// Caps is what the TPM told us about itself, asked once per TPM value.
type Caps struct {
	Algs         map[tpm2.TPMAlgID]bool
	Manufacturer string // TPM_PT_MANUFACTURER as four ASCII characters, trimmed
	Firmware     uint64 // TPM_PT_FIRMWARE_VERSION_1 << 32 | _2
	// RSABits and ECCBits list the key sizes TPM2_TestParms accepts;
	// filled in by (*TPM).Capabilities.
	RSABits, ECCBits []int
	sized            bool
}

// Caps returns the TPM's algorithms and identity, querying the TPM only
// the first time.
func (c *Conn) Caps() (*Caps, error) {
	t := c.owner
	if t.caps != nil {
		return t.caps, nil
	}
	caps := &Caps{Algs: map[tpm2.TPMAlgID]bool{}}
	more := true
	next := uint32(0)
	for more {
		rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapAlgs, Property: next, PropertyCount: 64}.Execute(c.tpm)
		if err != nil {
			return nil, tpmErr("query algorithms", err)
		}
		algs, err := rsp.CapabilityData.Data.Algorithms()
		if err != nil {
			return nil, tpmErr("query algorithms", err)
		}
		for _, a := range algs.AlgProperties {
			caps.Algs[a.Alg] = true
			next = uint32(a.Alg) + 1
		}
		more = bool(rsp.MoreData) && len(algs.AlgProperties) > 0
	}
	props, err := c.properties(tpm2.TPMPTManufacturer, tpm2.TPMPTFirmwareVersion1, tpm2.TPMPTFirmwareVersion2)
	if err != nil {
		return nil, err
	}
	m := props[tpm2.TPMPTManufacturer]
	caps.Manufacturer = strings.TrimRight(string([]byte{byte(m >> 24), byte(m >> 16), byte(m >> 8), byte(m)}), "\x00 ")
	caps.Firmware = uint64(props[tpm2.TPMPTFirmwareVersion1])<<32 | uint64(props[tpm2.TPMPTFirmwareVersion2])
	t.caps = caps
	return caps, nil
}

// properties reads TPM properties (TPM_CAP_TPM_PROPERTIES), one query per
// contiguous run.
func (c *Conn) properties(pts ...tpm2.TPMPT) (map[tpm2.TPMPT]uint32, error) {
	out := map[tpm2.TPMPT]uint32{}
	first, last := pts[0], pts[0]
	for _, p := range pts {
		first, last = min(first, p), max(last, p)
	}
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: uint32(first), PropertyCount: uint32(last-first) + 1}.Execute(c.tpm)
	if err != nil {
		return nil, tpmErr("query TPM properties", err)
	}
	tp, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil {
		return nil, tpmErr("query TPM properties", err)
	}
	for _, p := range tp.TPMProperty {
		out[p.Property] = p.Value
	}
	return out, nil
}

// CheckSupported fails clearly when the TPM cannot make or use keys of
// this kind, naming what it does support.
func (c *Conn) CheckSupported(ks KeySpec) error {
	caps, err := c.Caps()
	if err != nil {
		return err
	}
	alg := tpm2.TPMAlgRSA
	if ks.Type == ECDSA {
		alg = tpm2.TPMAlgECC
	}
	if !caps.Algs[alg] {
		other := "-t ecdsa"
		if ks.Type == ECDSA {
			other = "-t rsa"
		}
		return newErr(ErrUnsupported, nil, "make a key of the other type ("+other+")",
			"this TPM does not support %s keys", strings.ToUpper(ks.Type.String()))
	}
	// Key files name their keys with SHA-256 (the templates' nameAlg).
	if !caps.Algs[tpm2.TPMAlgSHA256] {
		return newErr(ErrUnsupported, nil, "use a TPM 2.0 with SHA-256 (every current one has it; check the firmware's PCR bank settings)",
			"this TPM does not support SHA-256, which the keys are named with")
	}
	if c.testParms(ks) == nil {
		return nil
	}
	if ks.Type == ECDSA {
		return newErr(ErrUnsupported, nil, "use -b 256 (P-256), which every TPM 2.0 supports",
			"this TPM does not support ECDSA P-%d keys", ks.Bits)
	}
	largest := 0
	for _, bits := range []int{4096, 3072, 2048, 1024} {
		if c.testParms(KeySpec{Type: RSA, Bits: bits}) == nil {
			largest = bits
			break
		}
	}
	return newErr(ErrUnsupported, nil, fmt.Sprintf("use -b %d or smaller", largest),
		"this TPM does not support RSA %d keys (the largest it supports is %d bits)", ks.Bits, largest)
}

func (c *Conn) testParms(ks KeySpec) error {
	t := ks.template(false)
	_, err := tpm2.TestParms{Parameters: tpm2.TPMTPublicParms{Type: t.Type, Parameters: t.Parameters}}.Execute(c.tpm)
	return err
}

// Lockout is the TPM's dictionary-attack state.
type Lockout struct {
	Counter  uint32        // failed authorizations counted now
	Max      uint32        // failures that trigger lockout
	Interval time.Duration // time to forget one failure
	Recovery time.Duration // lockout hierarchy recovery time
}

// Remaining is how many wrong PINs the TPM still accepts.
func (l Lockout) Remaining() int {
	if l.Counter >= l.Max {
		return 0
	}
	return int(l.Max - l.Counter)
}

// Lockout reads the dictionary-attack counters (TPM_PT_LOCKOUT_*).
func (c *Conn) Lockout() (Lockout, error) {
	p, err := c.properties(tpm2.TPMPTLockoutCounter, tpm2.TPMPTMaxAuthFail, tpm2.TPMPTLockoutInterval, tpm2.TPMPTLockoutRecovery)
	if err != nil {
		return Lockout{}, err
	}
	return Lockout{
		Counter:  p[tpm2.TPMPTLockoutCounter],
		Max:      p[tpm2.TPMPTMaxAuthFail],
		Interval: time.Duration(p[tpm2.TPMPTLockoutInterval]) * time.Second,
		Recovery: time.Duration(p[tpm2.TPMPTLockoutRecovery]) * time.Second,
	}, nil
}

// authErr classifies a failed authorization of what ("PIN for
// key.key"): a wrong value with the tries the TPM has left, or lockout
// with how long to wait. Other errors pass through tpmErr.
func (c *Conn) authErr(err error, what string) error {
	switch {
	case errors.Is(err, tpm2.TPMRCAuthFail), errors.Is(err, tpm2.TPMRCBadAuth):
		e := newErr(ErrWrongPIN, err, pinHint(what), "incorrect %s", what)
		if errors.Is(err, tpm2.TPMRCAuthFail) {
			if l, lerr := c.Lockout(); lerr == nil && l.Max > 0 {
				e.Remaining = l.Remaining()
				e.Msg = fmt.Sprintf("incorrect %s (%s remaining)", what, tries(e.Remaining))
				if e.Remaining == 0 {
					e.Hint = fmt.Sprintf("the TPM is now locked out; it accepts a new try in about %v", l.Interval)
				}
			}
		}
		return e
	case errors.Is(err, tpm2.TPMRCLockout):
		e := newErr(ErrLockedOut, err, "", "the TPM is locked out after too many wrong PINs")
		if l, lerr := c.Lockout(); lerr == nil {
			e.Wait = l.Interval
			e.Msg = fmt.Sprintf("the TPM is locked out after too many wrong PINs; it accepts a new try in about %v", l.Interval)
		}
		e.Hint = "wait, or clear the lockout with 'tpm2_dictionarylockout --clear-lockout' (needs the lockout authorization)"
		return e
	}
	return tpmErr("TPM refused the operation", err)
}

// pinHint says what to do after a wrong value: for a key's PIN, type it
// again with care, since the TPM counts failures; for the SRK PIN, where
// it comes from.
func pinHint(what string) string {
	if strings.HasPrefix(what, "SRK PIN") {
		return "the SRK PIN is the owner hierarchy's authorization (or the persistent parent's): give the right one with -s or --srk-pin-file, or srk_pin in the config"
	}
	return "check the PIN (or key_pin in the config); each wrong one counts toward the TPM's dictionary-attack lockout"
}

func tries(n int) string {
	if n == 1 {
		return "1 try"
	}
	return fmt.Sprintf("%d tries", n)
}

// HasAlg reports whether the TPM listed algorithm id (TPM_ALG_ID).
func (c *Caps) HasAlg(id uint16) bool { return c.Algs[tpm2.TPMAlgID(id)] }

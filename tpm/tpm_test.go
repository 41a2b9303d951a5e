package tpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"os"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/simulator"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/keyfile"
)

// sim is the in-process reference TPM; there can be one per process.
var sim transport.TPMCloser

func TestMain(m *testing.M) {
	var err error
	sim, err = simulator.OpenSimulator()
	if err != nil {
		fmt.Fprintln(os.Stderr, "simulator:", err)
		os.Exit(1)
	}
	// Let the PIN tests fail many times without locking the TPM out.
	if err := relaxLockout(sim, 1000); err != nil {
		fmt.Fprintln(os.Stderr, "relax lockout:", err)
		os.Exit(1)
	}
	code := m.Run()
	if err := sim.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "close simulator:", err)
	}
	os.Exit(code)
}

// relaxLockout sends TPM2_DictionaryAttackParameters (Part 3, 25.3),
// which go-tpm does not wrap, with the lockout hierarchy's empty password.
func relaxLockout(t transport.TPM, maxTries uint32) error {
	cmd := []byte{0x80, 0x02, 0, 0, 0, 0, 0, 0, 0x01, 0x3a, 0x40, 0, 0, 0x0a,
		0, 0, 0, 9, 0x40, 0, 0, 0x09, 0, 0, 0, 0, 0}
	cmd = binary.BigEndian.AppendUint32(cmd, maxTries)
	cmd = binary.BigEndian.AppendUint32(cmd, 1) // recovery time, seconds
	cmd = binary.BigEndian.AppendUint32(cmd, 1) // lockout recovery, seconds
	binary.BigEndian.PutUint32(cmd[2:], uint32(len(cmd)))
	rsp, err := t.Send(cmd)
	if err != nil {
		return err
	}
	if rc := responseCode(rsp); rc != 0 {
		return rc
	}
	return nil
}

func newSimTPM(t *testing.T) *TPM {
	t.Helper()
	tp := FromTransport(sim)
	t.Cleanup(func() { assertNoTransient(t) })
	return tp
}

// assertNoTransient fails the test if any transient object is left in
// the TPM: every operation must flush what it loaded.
func assertNoTransient(t *testing.T) {
	t.Helper()
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: uint32(tpm2.TPMHTTransient) << 24, PropertyCount: 64}.Execute(sim)
	if err != nil {
		t.Fatalf("get handles: %v", err)
	}
	h, err := rsp.CapabilityData.Data.Handles()
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Handle) != 0 {
		t.Errorf("transient objects left in the TPM: %v", h.Handle)
		for _, x := range h.Handle {
			if _, err := (tpm2.FlushContext{FlushHandle: x}).Execute(sim); err != nil {
				t.Errorf("flush %v: %v", x, err)
			}
		}
	}
}

func createKey(t *testing.T, tp *TPM, ks KeySpec) *keyfile.Key {
	t.Helper()
	var k *keyfile.Key
	err := tp.Do(func(c *Conn) error {
		var err error
		k, err = c.CreateKey(ks)
		return err
	})
	if err != nil {
		t.Fatalf("CreateKey(%+v): %v", ks, err)
	}
	return k
}

func verify(t *testing.T, pub crypto.PublicKey, digest, sig []byte, opts SignOpts) {
	t.Helper()
	switch p := pub.(type) {
	case *rsa.PublicKey:
		var err error
		if opts.PSS {
			err = rsa.VerifyPSS(p, opts.Hash, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		} else {
			err = rsa.VerifyPKCS1v15(p, opts.Hash, digest, sig)
		}
		if err != nil {
			t.Fatalf("RSA signature does not verify: %v", err)
		}
	case *ecdsa.PublicKey:
		size := (p.Curve.Params().BitSize + 7) / 8
		if len(sig) != 2*size {
			t.Fatalf("ECDSA signature is %d bytes, want %d", len(sig), 2*size)
		}
		r, s := new(big.Int).SetBytes(sig[:size]), new(big.Int).SetBytes(sig[size:])
		if !ecdsa.Verify(p, digest, r, s) {
			t.Fatal("ECDSA signature does not verify")
		}
	default:
		t.Fatalf("unexpected public key %T", pub)
	}
}

func TestCreateAndSign(t *testing.T) {
	tp := newSimTPM(t)
	d256 := sha256.Sum256([]byte("hello"))
	d512 := sha512.Sum512([]byte("hello"))
	for _, tc := range []struct {
		ks   KeySpec
		opts []SignOpts
	}{
		{KeySpec{Type: RSA, Bits: 2048}, []SignOpts{{Hash: crypto.SHA256}, {Hash: crypto.SHA512}, {Hash: crypto.SHA256, PSS: true}}},
		{KeySpec{Type: ECDSA, Bits: 256}, []SignOpts{{Hash: crypto.SHA256}}},
		{KeySpec{Type: ECDSA, Bits: 384}, []SignOpts{{Hash: crypto.SHA256}, {Hash: crypto.SHA512}}},
	} {
		t.Run(fmt.Sprintf("%v-%d", tc.ks.Type, tc.ks.Bits), func(t *testing.T) {
			k := createKey(t, tp, tc.ks)
			if !k.EmptyAuth || k.Parent != OwnerParent || !k.Type.Equal(keyfile.OIDLoadableKey) {
				t.Errorf("key file fields: emptyAuth=%v parent=%#x type=%v", k.EmptyAuth, k.Parent, k.Type)
			}
			pub, err := PublicKey(k)
			if err != nil {
				t.Fatal(err)
			}
			tpub, err := KeyPublic(k)
			if err != nil {
				t.Fatal(err)
			}
			a := tpub.ObjectAttributes
			if !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin || !a.UserWithAuth || !a.SignEncrypt || a.Decrypt || a.Restricted || !a.NoDA {
				t.Errorf("attributes %+v: want fixedTPM fixedParent sensitiveDataOrigin userWithAuth sign noDA (no PIN to guess), no decrypt/restricted", a)
			}
			for _, o := range tc.opts {
				digest := d256[:]
				if o.Hash == crypto.SHA512 {
					digest = d512[:]
				}
				sig, err := tp.SignDigest(k, nil, nil, digest, o)
				if err != nil {
					t.Fatalf("sign %+v: %v", o, err)
				}
				verify(t, pub, digest, sig, o)
			}
		})
	}
}

func TestPIN(t *testing.T) {
	tp := newSimTPM(t)
	k := createKey(t, tp, KeySpec{Type: ECDSA, Bits: 256, PIN: []byte("1234")})
	if k.EmptyAuth || !NeedsPIN(k) {
		t.Fatal("key with a PIN must not have emptyAuth")
	}
	if pub, err := KeyPublic(k); err != nil || pub.ObjectAttributes.NoDA {
		t.Fatalf("key with a PIN: noDA set (%v), want dictionary-attack protection", err)
	}
	d := sha256.Sum256([]byte("x"))
	_, err := tp.SignDigest(k, nil, []byte("9999"), d[:], SignOpts{Hash: crypto.SHA256})
	var e *Error
	if !errors.Is(err, ErrWrongPIN) || !errors.As(err, &e) {
		t.Fatalf("wrong PIN: got %v, want ErrWrongPIN", err)
	}
	if e.Remaining <= 0 {
		t.Errorf("wrong PIN: Remaining = %d, want > 0 (message %q)", e.Remaining, e.Msg)
	}
	_, err = tp.SignDigest(k, nil, nil, d[:], SignOpts{Hash: crypto.SHA256})
	if !errors.Is(err, ErrWrongPIN) {
		t.Fatalf("no PIN: got %v, want ErrWrongPIN", err)
	}
	sig, err := tp.SignDigest(k, nil, []byte("1234"), d[:], SignOpts{Hash: crypto.SHA256})
	if err != nil {
		t.Fatalf("right PIN: %v", err)
	}
	pub, err := PublicKey(k)
	if err != nil {
		t.Fatal(err)
	}
	verify(t, pub, d[:], sig, SignOpts{Hash: crypto.SHA256})
}

func TestImport(t *testing.T) {
	tp := newSimTPM(t)
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, priv := range []crypto.Signer{rk, ek} {
		t.Run(fmt.Sprintf("%T", priv), func(t *testing.T) {
			var k *keyfile.Key
			err := tp.Do(func(c *Conn) error {
				var err error
				k, err = c.ImportKey(priv, KeySpec{PIN: []byte("pw")})
				return err
			})
			if err != nil {
				t.Fatalf("import: %v", err)
			}
			tpub, err := KeyPublic(k)
			if err != nil {
				t.Fatal(err)
			}
			if tpub.ObjectAttributes.FixedTPM || tpub.ObjectAttributes.SensitiveDataOrigin {
				t.Error("an imported key must not claim fixedTPM or sensitiveDataOrigin")
			}
			d := sha256.Sum256([]byte("imported"))
			sig, err := tp.SignDigest(k, nil, []byte("pw"), d[:], SignOpts{Hash: crypto.SHA256})
			if err != nil {
				t.Fatalf("sign: %v", err)
			}
			verify(t, priv.Public(), d[:], sig, SignOpts{Hash: crypto.SHA256})
		})
	}
}

// TestDuplicationRefused shows that a key made in the TPM cannot be
// exported: TPM2_Duplicate is refused, even when the key's policy would
// allow duplication, because fixedParent is set.
func TestDuplicationRefused(t *testing.T) {
	tp := newSimTPM(t)
	k := createKey(t, tp, KeySpec{Type: RSA, Bits: 2048})
	err := tp.Do(func(c *Conn) error {
		l, err := c.LoadKey(k, nil)
		if err != nil {
			return err
		}
		_, err = tpm2.Duplicate{
			ObjectHandle:    tpm2.AuthHandle{Handle: l.Handle, Name: l.Name, Auth: tpm2.Policy(tpm2.TPMAlgSHA256, 16, policyDuplicate)},
			NewParentHandle: tpm2.NamedHandle{Handle: l.parent.Handle, Name: l.parent.Name},
			Symmetric:       tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull},
		}.Execute(c.Transport())
		return err
	})
	if !errors.Is(err, tpm2.TPMRCPolicyFail) {
		t.Errorf("duplicate our key: got %v, want TPM_RC_POLICY_FAIL (no duplication policy)", err)
	}

	// A key whose policy does allow TPM2_Duplicate is still refused
	// because fixedParent is set: the attribute, not only the empty
	// policy, is what keeps keys in the TPM.
	err = tp.Do(func(c *Conn) error {
		p, err := c.LoadParent(OwnerParent, false, nil)
		if err != nil {
			return err
		}
		tmpl := KeySpec{Type: ECDSA, Bits: 256}.template(false)
		tmpl.ObjectAttributes.UserWithAuth = true
		tmpl.AuthPolicy = tpm2.TPM2BDigest{Buffer: duplicatePolicyDigest(t)}
		cr, err := tpm2.Create{ParentHandle: p.authHandle(false), InPublic: tpm2.New2B(tmpl)}.Execute(c.tpm)
		if err != nil {
			return err
		}
		lr, err := tpm2.Load{ParentHandle: p.authHandle(false), InPrivate: cr.OutPrivate, InPublic: cr.OutPublic}.Execute(c.tpm)
		if err != nil {
			return err
		}
		c.track(lr.ObjectHandle)
		_, err = tpm2.Duplicate{
			ObjectHandle:    tpm2.AuthHandle{Handle: lr.ObjectHandle, Name: lr.Name, Auth: tpm2.Policy(tpm2.TPMAlgSHA256, 16, policyDuplicate)},
			NewParentHandle: tpm2.NamedHandle{Handle: p.Handle, Name: p.Name},
			Symmetric:       tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull},
		}.Execute(c.tpm)
		return err
	})
	if !errors.Is(err, tpm2.TPMRCAttributes) {
		t.Errorf("duplicate a fixedParent key with a duplication policy: got %v, want TPM_RC_ATTRIBUTES", err)
	}
}

func policyDuplicate(t transport.TPM, h tpm2.TPMISHPolicy, _ tpm2.TPM2BNonce) error {
	_, err := tpm2.PolicyCommandCode{PolicySession: h, Code: tpm2.TPMCCDuplicate}.Execute(t)
	return err
}

func duplicatePolicyDigest(t *testing.T) []byte {
	// PolicyCommandCode: H(zeros || TPM_CC_PolicyCommandCode || TPM_CC_Duplicate), Part 3, 23.11.
	h := sha256.New()
	h.Write(make([]byte, 32))
	h.Write(binary.BigEndian.AppendUint32(nil, uint32(tpm2.TPMCCPolicyCommandCode)))
	h.Write(binary.BigEndian.AppendUint32(nil, uint32(tpm2.TPMCCDuplicate)))
	return h.Sum(nil)
}

func TestUnsupportedSize(t *testing.T) {
	tp := newSimTPM(t)
	for _, ks := range []KeySpec{{Type: RSA, Bits: 1000}, {Type: ECDSA, Bits: 521}} {
		err := tp.Do(func(c *Conn) error { _, err := c.CreateKey(ks); return err })
		if !errors.Is(err, ErrUnsupported) {
			t.Errorf("%+v: got %v, want ErrUnsupported", ks, err)
		}
	}
}

func TestPrimaryIsDeterministicAndSpecTemplate(t *testing.T) {
	tp := newSimTPM(t)
	var names [2]tpm2.TPM2BName
	for i := range names {
		err := tp.Do(func(c *Conn) error {
			p, err := c.LoadParent(OwnerParent, false, nil)
			if err != nil {
				return err
			}
			names[i] = p.Name
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if string(names[0].Buffer) != string(names[1].Buffer) {
		t.Error("the storage primary must be the same key every time")
	}
	// The spec's template has an empty unique; go-tpm's ECCSRKTemplate
	// (32 zero bytes) makes a different key.
	var other tpm2.TPM2BName
	err := tp.Do(func(c *Conn) error {
		rsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(c.tpm)
		if err != nil {
			return err
		}
		c.track(rsp.ObjectHandle)
		other = rsp.Name
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if string(other.Buffer) == string(names[0].Buffer) {
		t.Error("storage primary equals go-tpm's ECCSRKTemplate primary; the key file spec wants an empty unique")
	}
}

func TestBadKeyFiles(t *testing.T) {
	tp := newSimTPM(t)
	good := createKey(t, tp, KeySpec{Type: ECDSA, Bits: 256})
	other := createKey(t, tp, KeySpec{Type: ECDSA, Bits: 256})
	mixed := *good
	mixed.Private = other.Private
	d := sha256.Sum256(nil)
	_, err := tp.SignDigest(&mixed, nil, nil, d[:], SignOpts{Hash: crypto.SHA256})
	if !errors.Is(err, ErrWrongTPM) && !errors.Is(err, ErrBadKey) {
		t.Errorf("public/private mismatch: got %v, want ErrWrongTPM or ErrBadKey", err)
	}
	sealed := *good
	sealed.Type = keyfile.OIDSealedData
	if _, err := tp.SignDigest(&sealed, nil, nil, d[:], SignOpts{Hash: crypto.SHA256}); !errors.Is(err, ErrBadKey) {
		t.Errorf("sealed data: got %v, want ErrBadKey", err)
	}
	persistent := *good
	persistent.Parent = 0x81000099
	if _, err := tp.SignDigest(&persistent, nil, nil, d[:], SignOpts{Hash: crypto.SHA256}); !errors.Is(err, ErrNoParent) {
		t.Errorf("missing persistent parent: got %v, want ErrNoParent", err)
	}
}

// counting counts the commands sent, by command code.
type counting struct {
	transport.TPM
	n map[tpm2.TPMCC]int
}

func (c *counting) Send(cmd []byte) ([]byte, error) {
	c.n[tpm2.TPMCC(binary.BigEndian.Uint32(cmd[6:10]))]++
	return c.TPM.Send(cmd)
}

// TestKeepOpen: with a resource manager the parent and key stay loaded,
// so a signature costs one TPM2_Sign; Close unloads everything.
func TestKeepOpen(t *testing.T) {
	k := createKey(t, newSimTPM(t), KeySpec{Type: ECDSA, Bits: 256})
	cnt := &counting{TPM: sim, n: map[tpm2.TPMCC]int{}}
	tp := FromTransport(cnt)
	if err := tp.SetKeepOpen(true); err != nil {
		t.Fatal(err)
	}
	pub, err := PublicKey(k)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		d := sha256.Sum256([]byte{byte(i)})
		sig, err := tp.SignDigest(k, nil, nil, d[:], SignOpts{Hash: crypto.SHA256})
		if err != nil {
			t.Fatal(err)
		}
		verify(t, pub, d[:], sig, SignOpts{Hash: crypto.SHA256})
	}
	if cnt.n[tpm2.TPMCCCreatePrimary] != 1 || cnt.n[tpm2.TPMCCLoad] != 1 || cnt.n[tpm2.TPMCCSign] != 3 || cnt.n[tpm2.TPMCCFlushContext] != 0 {
		t.Errorf("commands %v: want one CreatePrimary and Load, three Signs, no flush", cnt.n)
	}
	// Someone else flushes our objects: the next signature reloads.
	if err := tp.Do(func(c *Conn) error {
		for _, l := range tp.keys {
			if err := c.flush(l.Handle); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256(nil)
	if _, err := tp.SignDigest(k, nil, nil, d[:], SignOpts{Hash: crypto.SHA256}); err != nil {
		t.Fatalf("sign after the key was flushed behind our back: %v", err)
	}
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}
	// newSimTPM's cleanup checks that nothing is left loaded.
}

// capturing records every command sent to the TPM.
type capturing struct {
	transport.TPM
	sent [][]byte
}

func (c *capturing) Send(cmd []byte) ([]byte, error) {
	c.sent = append(c.sent, append([]byte(nil), cmd...))
	return c.TPM.Send(cmd)
}

// TestPINNeverInClear inspects every byte sent to the TPM while keys with
// a PIN (and a parent with an auth value) are created, imported and used:
// the PIN must never appear, only HMACs and encrypted parameters.
func TestPINNeverInClear(t *testing.T) {
	newSimTPM(t) // checks for leftovers at the end
	pin := []byte("pin-7f3a-SECRET")
	cap := &capturing{TPM: sim}
	tp := FromTransport(cap)
	var keys []*keyfile.Key
	err := tp.Do(func(c *Conn) error {
		k, err := c.CreateKey(KeySpec{Type: ECDSA, Bits: 256, PIN: pin})
		if err != nil {
			return err
		}
		keys = append(keys, k)
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		k, err = c.ImportKey(priv, KeySpec{PIN: pin})
		keys = append(keys, k)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("x"))
	// Twice: loaded from the file, then from its saved context.
	for range 2 {
		for _, k := range keys {
			if _, err := tp.SignDigest(k, nil, pin, d[:], SignOpts{Hash: crypto.SHA256}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(cap.sent) < 10 {
		t.Fatalf("captured only %d commands", len(cap.sent))
	}
	for i, cmd := range cap.sent {
		if bytes.Contains(cmd, pin) {
			t.Errorf("command %d (cc %#x) carries the PIN in clear", i, binary.BigEndian.Uint32(cmd[6:10]))
		}
	}
	// The key files do not hold it either.
	for _, k := range keys {
		if bytes.Contains(k.Private, pin) || bytes.Contains(k.Public, pin) {
			t.Error("a key file holds the PIN")
		}
	}
}

// TestOwnerAuthSalted gives the owner hierarchy an auth value (the SRK
// PIN for the default parent) and checks that it never crosses the
// interface in clear and that every session carrying it is salted: an
// unsalted HMAC session would let a recorded bus be attacked offline.
func TestOwnerAuthSalted(t *testing.T) {
	newSimTPM(t)
	owner := []byte("owner-9c1e-SECRET")
	if _, err := (tpm2.HierarchyChangeAuth{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		NewAuth:    tpm2.TPM2BAuth{Buffer: owner},
	}).Execute(sim); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := (tpm2.HierarchyChangeAuth{
			AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(owner)},
			NewAuth:    tpm2.TPM2BAuth{},
		}).Execute(sim); err != nil {
			t.Errorf("reset owner auth: %v", err)
		}
	})
	cap := &capturing{TPM: sim}
	tp := FromTransport(cap)
	var k *keyfile.Key
	err := tp.Do(func(c *Conn) error {
		var err error
		k, err = c.CreateKey(KeySpec{Type: ECDSA, Bits: 256, ParentAuth: owner})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("x"))
	for range 2 {
		if _, err := tp.SignDigest(k, owner, nil, d[:], SignOpts{Hash: crypto.SHA256}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = FromTransport(sim).SignDigest(k, []byte("wrong"), nil, d[:], SignOpts{Hash: crypto.SHA256})
	if !errors.Is(err, ErrWrongPIN) {
		t.Fatalf("wrong owner auth: got %v, want ErrWrongPIN", err)
	}
	const startAuthSession, rhNull = 0x176, 0x40000007
	sessions := 0
	for i, cmd := range cap.sent {
		if bytes.Contains(cmd, owner) {
			t.Errorf("command %d (cc %#x) carries the owner auth in clear", i, binary.BigEndian.Uint32(cmd[6:10]))
		}
		if binary.BigEndian.Uint32(cmd[6:10]) != startAuthSession {
			continue
		}
		sessions++
		if tpmKey := binary.BigEndian.Uint32(cmd[10:14]); tpmKey == rhNull {
			t.Errorf("command %d starts an unsalted session", i)
		}
	}
	if sessions == 0 {
		t.Error("no session was started for the owner auth")
	}
}

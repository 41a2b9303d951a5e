package p11

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"hash"
	"math/big"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/tpm"
)

// maxRawInput bounds what C_SignUpdate collects for mechanisms whose
// input is a hash: no hash or DigestInfo is anywhere near this long.
const maxRawInput = 1024

// signOp is an active signing (or verifying) operation.
type signOp struct {
	p      *prepared
	key    *Key
	h      hash.Hash // for hashing mechanisms, fed by Update
	raw    []byte    // for the others
	update bool      // C_SignUpdate was called: only C_SignFinal may follow
}

func newOp(p *prepared, k *Key) signOp {
	op := signOp{p: p, key: k}
	if p.spec.hash != 0 {
		op.h = p.spec.hash.New()
	}
	return op
}

func (op *signOp) add(data []byte) error {
	if op.h != nil {
		op.h.Write(data)
		return nil
	}
	if len(op.raw)+len(data) > maxRawInput {
		return rvErr(CKR_DATA_LEN_RANGE, "input longer than %d bytes for a mechanism that signs a hash", maxRawInput)
	}
	op.raw = append(op.raw, data...)
	return nil
}

// digest returns what the TPM signs: the hash (and its algorithm) of all
// input given so far.
func (op *signOp) digest(last []byte) ([]byte, crypto.Hash, error) {
	if op.h != nil {
		op.h.Write(last)
		return op.h.Sum(nil), op.p.spec.hash, nil
	}
	in := append(op.raw, last...)
	return op.p.digestFor(in)
}

// opKind tells signing from verifying: both are a mechanism checked
// against a key, fed data, and ended by a final call.
type opKind int

const (
	opSign opKind = iota
	opVerify
)

var opNames = [2]string{"C_Sign", "C_Verify"}

// opInit is C_SignInit and C_VerifyInit.
func (m *Module) opInit(h uint, kind opKind, mech Mechanism, key uint) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.session(h)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ops[kind] != nil {
		return rvErr(CKR_OPERATION_ACTIVE, "a %s operation is already active in session %d", opNames[kind], h)
	}
	o, err := m.object(key)
	if err != nil && m.hiddenPrivate(key) {
		return rvErr(CKR_KEY_HANDLE_INVALID, "object %d is a private key, whose handle is valid only while logged in: C_Login, then find the key again", key)
	}
	if err != nil || o.class == CKO_CERTIFICATE {
		return rvErr(CKR_KEY_HANDLE_INVALID, "object %d is not a key %s can use", key, opNames[kind])
	}
	// A valid key of the wrong half: it lacks CKA_SIGN or CKA_VERIFY
	// (PKCS#11 2.40, 5.12-5.13: CKR_KEY_FUNCTION_NOT_PERMITTED).
	switch {
	case kind == opSign && o.class == CKO_PUBLIC_KEY:
		return rvErr(CKR_KEY_FUNCTION_NOT_PERMITTED, "object %d is the public key of %q, which cannot sign: use the private key with the same CKA_ID", key, o.key.Label)
	case kind == opVerify && o.class == CKO_PRIVATE_KEY:
		return rvErr(CKR_KEY_FUNCTION_NOT_PERMITTED, "object %d is the private key of %q, which has no CKA_VERIFY: verify with the public key with the same CKA_ID", key, o.key.Label)
	}
	p, err := prepare(mech, o.key)
	if err != nil {
		return err
	}
	op := newOp(p, o.key)
	s.ops[kind] = &op
	return nil
}

// active returns the session and its operation of that kind, with the
// session locked: the caller unlocks s.mu.
func (m *Module) active(h uint, kind opKind) (*Session, *signOp, error) {
	s, err := m.lookup(h)
	if err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, nil, rvErr(CKR_SESSION_CLOSED, "session %d was closed", h)
	}
	if s.ops[kind] == nil {
		s.mu.Unlock()
		return nil, nil, rvErr(CKR_OPERATION_NOT_INITIALIZED, "%s without %sInit", opNames[kind], opNames[kind])
	}
	return s, s.ops[kind], nil
}

// lookup finds an open session.
func (m *Module) lookup(h uint) (*Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.session(h)
}

// endOp ends the operation after a failure the caller layer found (bad
// arguments, absurd lengths) and returns err: a failed C_Sign or C_Verify
// ends the operation (PKCS#11 2.40, 5.12-5.13).
func (m *Module) endOp(h uint, kind opKind, err error) error {
	s, _, aerr := m.active(h, kind)
	if aerr != nil {
		return aerr
	}
	defer s.mu.Unlock()
	s.ops[kind] = nil
	return err
}

// update is C_SignUpdate and C_VerifyUpdate.
func (m *Module) update(h uint, kind opKind, data []byte) error {
	// Read before the session lock (lock order); signDigest checks again
	// at the end, so a C_Login or C_Logout in between changes nothing.
	havePIN := m.havePIN()
	s, op, err := m.active(h, kind)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	panicPoint("C_SignUpdate")
	if kind == opSign && op.key.NeedsPIN && !havePIN {
		s.ops[kind] = nil
		return rvErr(CKR_USER_NOT_LOGGED_IN, "key %q has a PIN and nobody is logged in (C_Logout during the operation?): C_Login, then start again", op.key.Label)
	}
	op.update = true
	if err := op.add(data); err != nil {
		s.ops[kind] = nil
		return err
	}
	return nil
}

// finish takes the operation for its last call, which ends it whatever
// the outcome; single says the call was C_Sign/C_Verify, not a Final.
func (m *Module) finish(h uint, kind opKind, single bool) (*signOp, error) {
	s, op, err := m.active(h, kind)
	if err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	s.ops[kind] = nil
	if single && op.update {
		return nil, rvErr(CKR_OPERATION_ACTIVE, "%s after %sUpdate; finish with %sFinal", opNames[kind], opNames[kind], opNames[kind])
	}
	return op, nil
}

// SignInit is C_SignInit.
func (m *Module) SignInit(h uint, mech Mechanism, key uint) error {
	return m.opInit(h, opSign, mech, key)
}

// EndSign ends a signing operation with err (see endOp).
func (m *Module) EndSign(h uint, err error) error { return m.endOp(h, opSign, err) }

// SignLength is the signature length C_Sign (single) or C_SignFinal will
// return, for the two-call rule. C_Sign cannot end a multi-part
// operation, not even to ask for the length: it gets
// CKR_OPERATION_ACTIVE, as the call with a buffer does, and the
// operation ends (PKCS#11 2.40, 5.12: only a successful length query or
// CKR_BUFFER_TOO_SMALL leaves it active).
func (m *Module) SignLength(h uint, single bool) (int, error) {
	s, op, err := m.active(h, opSign)
	if err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	if single && op.update {
		s.ops[opSign] = nil
		return 0, rvErr(CKR_OPERATION_ACTIVE, "%s after %sUpdate; finish with %sFinal", opNames[opSign], opNames[opSign], opNames[opSign])
	}
	return op.p.sigLen, nil
}

// Sign is C_Sign.
func (m *Module) Sign(h uint, data []byte) ([]byte, error) {
	op, err := m.finish(h, opSign, true)
	if err != nil {
		return nil, err
	}
	return m.signDigest(op, data)
}

// SignUpdate is C_SignUpdate.
func (m *Module) SignUpdate(h uint, data []byte) error { return m.update(h, opSign, data) }

// SignFinal is C_SignFinal.
func (m *Module) SignFinal(h uint) ([]byte, error) {
	op, err := m.finish(h, opSign, false)
	if err != nil {
		return nil, err
	}
	return m.signDigest(op, nil)
}

func (m *Module) signDigest(op *signOp, last []byte) ([]byte, error) {
	digest, h, err := op.digest(last)
	if err != nil {
		return nil, err
	}
	t, pin, srk, err := m.signAuth(op.key)
	if err != nil {
		return nil, err
	}
	defer zero(pin)
	defer zero(srk)
	sig, err := t.SignDigest(op.key.File, srk, pin, digest, tpm.SignOpts{Hash: h, PSS: op.p.spec.pss})
	if err != nil {
		return nil, keyErr(op.key, err)
	}
	return sig, nil
}

// signAuth returns the TPM, the PIN for k (nil when it has none) and the
// SRK PIN. A key with a PIN needs a login (or the config's key_pin) at
// the moment it signs: after C_Logout an operation started while logged
// in fails with CKR_USER_NOT_LOGGED_IN.
func (m *Module) signAuth(k *Key) (*tpm.TPM, []byte, []byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(); err != nil {
		return nil, nil, nil, err
	}
	panicPoint("C_Sign")
	var pin []byte
	if k.NeedsPIN {
		switch {
		case m.loggedIn:
			pin = bytes.Clone(m.userPIN)
		case len(m.keyPIN) > 0:
			pin = bytes.Clone(m.keyPIN)
		default:
			return nil, nil, nil, rvErr(CKR_USER_NOT_LOGGED_IN, "key %q has a PIN and nobody is logged in (C_Logout during the operation?): C_Login, then start again", k.Label)
		}
	}
	return m.tpm, pin, bytes.Clone(m.srkPIN), nil
}

// havePIN reports whether keys with a PIN can sign now: someone is
// logged in, or the config gives key_pin.
func (m *Module) havePIN() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.loggedIn || len(m.keyPIN) > 0
}

// keyErr names the key in a TPM failure for the log.
func keyErr(k *Key, err error) error {
	return &Error{RV: RV(err), Msg: "key " + k.Label + " (" + k.Path + "): " + err.Error(), Err: err}
}

// VerifyInit is C_VerifyInit. Verification is done in software with the
// public key: it needs no secret, so the TPM is not involved.
func (m *Module) VerifyInit(h uint, mech Mechanism, key uint) error {
	return m.opInit(h, opVerify, mech, key)
}

// EndVerify ends a verification with err (see endOp).
func (m *Module) EndVerify(h uint, err error) error { return m.endOp(h, opVerify, err) }

// Verify is C_Verify.
func (m *Module) Verify(h uint, data, sig []byte) error {
	op, err := m.finish(h, opVerify, true)
	if err != nil {
		return err
	}
	return op.check(data, sig)
}

// VerifyUpdate is C_VerifyUpdate.
func (m *Module) VerifyUpdate(h uint, data []byte) error { return m.update(h, opVerify, data) }

// VerifyFinal is C_VerifyFinal.
func (m *Module) VerifyFinal(h uint, sig []byte) error {
	op, err := m.finish(h, opVerify, false)
	if err != nil {
		return err
	}
	return op.check(nil, sig)
}

func (op *signOp) check(last, sig []byte) error {
	digest, h, err := op.digest(last)
	if err != nil {
		return err
	}
	if len(sig) != op.p.sigLen {
		return rvErr(CKR_SIGNATURE_LEN_RANGE, "signature is %d bytes, want %d", len(sig), op.p.sigLen)
	}
	ok := false
	switch pub := op.key.Public.(type) {
	case *rsa.PublicKey:
		if op.p.spec.pss {
			ok = rsa.VerifyPSS(pub, h, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: h}) == nil
		} else {
			ok = rsa.VerifyPKCS1v15(pub, h, digest, sig) == nil
		}
	case *ecdsa.PublicKey:
		half := len(sig) / 2
		ok = ecdsa.Verify(pub, digest, new(big.Int).SetBytes(sig[:half]), new(big.Int).SetBytes(sig[half:]))
	}
	if !ok {
		return rvErr(CKR_SIGNATURE_INVALID, "signature does not verify")
	}
	return nil
}

// MechanismInfo is CK_MECHANISM_INFO.
type MechanismInfo struct {
	MinKeySize, MaxKeySize, Flags uint
}

// MechanismList is C_GetMechanismList: the mechanisms this TPM can do,
// from what it reports about itself (asked once per C_Initialize).
func (m *Module) MechanismList(slot uint) ([]uint, error) {
	infos, err := m.mechanismInfos(slot)
	if err != nil {
		return nil, err
	}
	var out []uint
	for _, t := range mechOrder {
		if _, ok := infos[t]; ok {
			out = append(out, t)
		}
	}
	return out, nil
}

// GetMechanismInfo is C_GetMechanismInfo.
func (m *Module) GetMechanismInfo(slot, mech uint) (MechanismInfo, error) {
	infos, err := m.mechanismInfos(slot)
	if err != nil {
		return MechanismInfo{}, err
	}
	mi, ok := infos[mech]
	if !ok {
		return MechanismInfo{}, rvErr(CKR_MECHANISM_INVALID, "mechanism 0x%X is not supported by this token", mech)
	}
	return mi, nil
}

var mechOrder = []uint{
	CKM_RSA_PKCS, CKM_SHA1_RSA_PKCS, CKM_SHA256_RSA_PKCS, CKM_SHA384_RSA_PKCS, CKM_SHA512_RSA_PKCS,
	CKM_RSA_PKCS_PSS, CKM_SHA1_RSA_PKCS_PSS, CKM_SHA256_RSA_PKCS_PSS, CKM_SHA384_RSA_PKCS_PSS, CKM_SHA512_RSA_PKCS_PSS,
	CKM_ECDSA, CKM_ECDSA_SHA1, CKM_ECDSA_SHA256, CKM_ECDSA_SHA384, CKM_ECDSA_SHA512,
}

// mechanismInfos returns the mechanisms, working them out at the first
// call after C_Initialize. The map is shared: read it, never change it.
func (m *Module) mechanismInfos(slot uint) (map[uint]MechanismInfo, error) {
	t, infos, err := m.mechState(slot)
	if err != nil || infos != nil {
		return infos, err
	}
	caps, err := t.Capabilities()
	if err != nil {
		return nil, err
	}
	infos = mechanismsOf(caps)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.initialized && m.tpm == t {
		// Not after a C_Finalize (and C_Initialize) in between.
		m.mechs = infos
	}
	return infos, nil
}

// mechState returns the TPM and the mechanisms when already known.
func (m *Module) mechState(slot uint) (*tpm.TPM, map[uint]MechanismInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.checkSlot(slot); err != nil {
		return nil, nil, err
	}
	panicPoint("C_GetMechanismList")
	return m.tpm, m.mechs, nil
}

// TPM algorithm IDs (TPM 2.0 Part 2, 6.3) for the capabilities we test.
const (
	algRSA    = 0x0001
	algSHA1   = 0x0004
	algSHA256 = 0x000B
	algSHA384 = 0x000C
	algSHA512 = 0x000D
	algRSASSA = 0x0014
	algRSAPSS = 0x0016
	algECDSA  = 0x0018
	algECC    = 0x0023
)

func mechanismsOf(caps *tpm.Caps) map[uint]MechanismInfo {
	has := caps.HasAlg
	out := map[uint]MechanismInfo{}
	hashes := map[crypto.Hash]bool{crypto.SHA1: has(algSHA1), crypto.SHA256: has(algSHA256),
		crypto.SHA384: has(algSHA384), crypto.SHA512: has(algSHA512)}
	sign := uint(CKF_HW | CKF_SIGN | CKF_VERIFY)
	if has(algRSA) && len(caps.RSABits) > 0 {
		rsaInfo := MechanismInfo{uint(caps.RSABits[0]), uint(caps.RSABits[len(caps.RSABits)-1]), sign}
		for t, s := range mechs {
			if !s.rsa || (s.pss && !has(algRSAPSS)) || (!s.pss && !has(algRSASSA)) || (s.hash != 0 && !hashes[s.hash]) {
				continue
			}
			out[t] = rsaInfo
		}
	}
	if has(algECC) && has(algECDSA) && len(caps.ECCBits) > 0 {
		ecInfo := MechanismInfo{uint(caps.ECCBits[0]), uint(caps.ECCBits[len(caps.ECCBits)-1]),
			sign | CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS}
		for t, s := range mechs {
			if s.rsa || (s.hash != 0 && !hashes[s.hash]) {
				continue
			}
			out[t] = ecInfo
		}
	}
	return out
}

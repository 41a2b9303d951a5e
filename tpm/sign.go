package tpm

import (
	"crypto"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/keyfile"
)

// Loaded is a key loaded into the TPM for the length of one Do.
type Loaded struct {
	Handle tpm2.TPMHandle
	Name   tpm2.TPM2BName
	Public *tpm2.TPMTPublic
	parent *Parent
}

// NeedsPIN says whether a key file's key has an auth value.
func NeedsPIN(k *keyfile.Key) bool { return !k.EmptyAuth }

// CheckKeyFile rejects key files this package cannot use, before any TPM
// traffic.
func CheckKeyFile(k *keyfile.Key) error {
	if !k.Type.Equal(keyfile.OIDLoadableKey) {
		return newErr(ErrBadKey, nil, "the file holds sealed data or a key for import, not a signing key: make one with stpm-keygen",
			"key type %v is not a loadable key (2.23.133.10.1.3)", k.Type)
	}
	if len(k.Policy) > 0 || len(k.AuthPolicy) > 0 {
		return newErr(ErrBadKey, nil, "make a key without a policy with stpm-keygen",
			"key is bound to a TPM policy, which simple-tpm-pk11 does not support")
	}
	pub, err := KeyPublic(k)
	if err != nil {
		return err
	}
	if !pub.ObjectAttributes.SignEncrypt || pub.ObjectAttributes.Restricted {
		return newErr(ErrBadKey, nil, "", "key is not an unrestricted signing key")
	}
	return nil
}

// LoadKey loads a key file's key under its parent.
func (c *Conn) LoadKey(k *keyfile.Key, parentAuth []byte) (*Loaded, error) {
	return c.loadKey(k, func() (*Parent, error) { return c.LoadParent(k.Parent, k.RSAParent, parentAuth) })
}

// loadKey checks a key file and loads it under the parent that parent
// gives.
func (c *Conn) loadKey(k *keyfile.Key, parent func() (*Parent, error)) (*Loaded, error) {
	if err := CheckKeyFile(k); err != nil {
		return nil, err
	}
	pub, err := KeyPublic(k)
	if err != nil {
		return nil, err
	}
	priv, err := tpm2.Unmarshal[tpm2.TPM2BPrivate](k.Private)
	if err != nil {
		return nil, newErr(ErrBadKey, err, "", "private area is not a TPM2B_PRIVATE")
	}
	p, err := parent()
	if err != nil {
		return nil, err
	}
	rsp, err := tpm2.Load{
		ParentHandle: p.authHandle(false),
		InPrivate:    *priv,
		InPublic:     tpm2.New2B(*pub),
	}.Execute(c.tpm)
	if err != nil {
		return nil, c.loadErr(err)
	}
	c.track(rsp.ObjectHandle)
	return &Loaded{Handle: rsp.ObjectHandle, Name: rsp.Name, Public: pub, parent: p}, nil
}

func (c *Conn) loadErr(err error) error {
	switch {
	case errors.Is(err, tpm2.TPMRCIntegrity):
		return newErr(ErrWrongTPM, err, "make a new key on this TPM with stpm-keygen, or restore a backup with stpm-keygen --restore",
			"the key was made by another TPM, this TPM was cleared since, or the key file's parts do not belong together (TPM_RC_INTEGRITY on load)")
	case errors.Is(err, tpm2.TPMRCBinding), errors.Is(err, tpm2.TPMRCKey), errors.Is(err, tpm2.TPMRCSize),
		errors.Is(err, tpm2.TPMRCAttributes), errors.Is(err, tpm2.TPMRCType), errors.Is(err, tpm2.TPMRCScheme):
		return newErr(ErrBadKey, err, "", "the TPM rejected the key file: %s", rcName(err))
	case errors.Is(err, tpm2.TPMRCAuthFail), errors.Is(err, tpm2.TPMRCBadAuth), errors.Is(err, tpm2.TPMRCLockout):
		return c.authErr(err, "SRK PIN")
	}
	return tpmErr("load key", err)
}

// tpmHash maps a Go hash to its TPM algorithm.
func tpmHash(h crypto.Hash) (tpm2.TPMIAlgHash, error) {
	switch h {
	case crypto.SHA1:
		return tpm2.TPMAlgSHA1, nil
	case crypto.SHA256:
		return tpm2.TPMAlgSHA256, nil
	case crypto.SHA384:
		return tpm2.TPMAlgSHA384, nil
	case crypto.SHA512:
		return tpm2.TPMAlgSHA512, nil
	}
	return 0, newErr(ErrUnsupported, nil, "", "hash %v is not supported", h)
}

// SignOpts chooses the signature scheme.
type SignOpts struct {
	Hash crypto.Hash
	// PSS asks for RSASSA-PSS (salt length = hash length, the only one a
	// TPM makes) instead of PKCS#1 v1.5. Ignored for ECDSA.
	PSS bool
}

// Sign signs digest, which must be a hash of opts.Hash's size. RSA
// signatures come back as the big-endian signature value; ECDSA ones as
// r||s, each padded to the curve size (the PKCS#11 form).
func (c *Conn) Sign(l *Loaded, pin []byte, digest []byte, opts SignOpts) ([]byte, error) {
	halg, err := tpmHash(opts.Hash)
	if err != nil {
		return nil, err
	}
	if len(digest) != opts.Hash.Size() {
		return nil, newErr(ErrBadKey, nil, "", "digest is %d bytes, %v needs %d", len(digest), opts.Hash, opts.Hash.Size())
	}
	caps, err := c.Caps()
	if err != nil {
		return nil, err
	}
	if !caps.Algs[tpm2.TPMAlgID(halg)] {
		return nil, newErr(ErrUnsupported, nil, "sign with SHA-256 (for ssh: rsa-sha2-256), which every TPM 2.0 supports",
			"this TPM does not support %v", opts.Hash)
	}
	scheme := tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgECDSA,
		Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: halg})}
	if l.Public.Type == tpm2.TPMAlgRSA {
		alg := tpm2.TPMAlgRSASSA
		if opts.PSS {
			alg = tpm2.TPMAlgRSAPSS
		}
		scheme = tpm2.TPMTSigScheme{Scheme: alg,
			Details: tpm2.NewTPMUSigScheme(alg, &tpm2.TPMSSchemeHash{HashAlg: halg})}
	}
	rsp, err := tpm2.Sign{
		KeyHandle: tpm2.AuthHandle{Handle: l.Handle, Name: l.Name, Auth: authSession(pin, l.parent)},
		Digest:    tpm2.TPM2BDigest{Buffer: digest},
		InScheme:  scheme,
		Validation: tpm2.TPMTTKHashCheck{
			Tag:       tpm2.TPMSTHashCheck,
			Hierarchy: tpm2.TPMRHNull,
		},
	}.Execute(c.tpm)
	if err != nil {
		return nil, c.authErr(err, "PIN")
	}
	return sigBytes(l.Public, &rsp.Signature)
}

func sigBytes(pub *tpm2.TPMTPublic, sig *tpm2.TPMTSignature) ([]byte, error) {
	switch sig.SigAlg {
	case tpm2.TPMAlgRSASSA, tpm2.TPMAlgRSAPSS:
		var s *tpm2.TPMSSignatureRSA
		var err error
		if sig.SigAlg == tpm2.TPMAlgRSASSA {
			s, err = sig.Signature.RSASSA()
		} else {
			s, err = sig.Signature.RSAPSS()
		}
		if err != nil {
			return nil, tpmErr("RSA signature", err)
		}
		return s.Sig.Buffer, nil
	case tpm2.TPMAlgECDSA:
		s, err := sig.Signature.ECDSA()
		if err != nil {
			return nil, tpmErr("ECDSA signature", err)
		}
		parms, err := pub.Parameters.ECCDetail()
		if err != nil {
			return nil, tpmErr("ECDSA signature", err)
		}
		curve, err := goCurve(parms.CurveID)
		if err != nil {
			return nil, err
		}
		size := (curve.Params().BitSize + 7) / 8
		r, sv := s.SignatureR.Buffer, s.SignatureS.Buffer
		if len(r) > size || len(sv) > size {
			return nil, newErr(ErrTPM, nil, "", "ECDSA signature larger than the curve")
		}
		out := make([]byte, 2*size)
		copy(out[size-len(r):size], r)
		copy(out[2*size-len(sv):], sv)
		return out, nil
	}
	return nil, newErr(ErrTPM, nil, "", "unexpected signature algorithm 0x%04x", uint16(sig.SigAlg))
}

// SignDigest loads k and signs digest with it in one operation. In keep
// mode the parent and the key stay loaded for the next signature;
// otherwise the key's saved context makes the next load cheap.
func (t *TPM) SignDigest(k *keyfile.Key, parentAuth, pin, digest []byte, opts SignOpts) ([]byte, error) {
	var sig []byte
	err := t.Do(func(c *Conn) error {
		l, err := c.loadForSign(k, parentAuth)
		if err != nil {
			return err
		}
		sig, err = c.Sign(l, pin, digest, opts)
		if err != nil && (errors.Is(err, tpm2.TPMRCHandle) || errors.Is(err, tpm2.TPMRCReferenceH0)) {
			// Someone flushed our kept objects, or evicted the
			// persistent parent a saved key's session is salted to:
			// forget what we hold and load from the file again, once.
			if t.keep {
				if err = c.forgetKept(); err != nil {
					return err
				}
			}
			t.saved = nil
			if l, err = c.loadForSign(k, parentAuth); err == nil {
				sig, err = c.Sign(l, pin, digest, opts)
			}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return sig, nil
}

// String describes a loaded key for logs.
func (l *Loaded) String() string { return fmt.Sprintf("key 0x%08x", uint32(l.Handle)) }

// parentID names a parent in keep mode's cache.
type parentID struct {
	handle    uint32
	rsa       bool
	authClass string
}

// loadForSign loads k for one signature; in keep mode it reuses (and
// keeps) the parent and the key, otherwise it reloads a saved context of
// the key when it has one.
func (c *Conn) loadForSign(k *keyfile.Key, parentAuth []byte) (*Loaded, error) {
	t := c.owner
	// The parent's auth value is part of the cache key only by its hash,
	// so a wrong SRK PIN never hits a parent loaded with the right one.
	sum := sha256.Sum256(parentAuth)
	pid := parentID{k.Parent, k.RSAParent, string(sum[:])}
	id := string(k.Public) + "\x00" + string(k.Private) + "\x00" + fmt.Sprint(pid)
	if !t.keep {
		return c.loadSaved(id, k, parentAuth)
	}
	if l := t.keys[id]; l != nil {
		return l, nil
	}
	l, err := c.loadKey(k, func() (*Parent, error) {
		if p := t.parents[pid]; p != nil {
			return p, nil
		}
		p, err := c.LoadParent(k.Parent, k.RSAParent, parentAuth)
		if err != nil {
			return nil, err
		}
		c.retain(p.Handle)
		if t.parents == nil {
			t.parents = map[parentID]*Parent{}
		}
		t.parents[pid] = p
		return p, nil
	})
	if err != nil {
		return nil, err
	}
	c.retain(l.Handle)
	if t.keys == nil {
		t.keys = map[string]*Loaded{}
	}
	t.keys[id] = l
	return l, nil
}

// forgetKept unloads whatever keep mode still holds and empties its
// caches. Handles that are already gone are why it is called, so
// TPM_RC_HANDLE is not an error here; anything else is.
func (c *Conn) forgetKept() error {
	t := c.owner
	handles := []tpm2.TPMHandle{}
	for _, l := range t.keys {
		handles = append(handles, l.Handle)
	}
	for _, p := range t.parents {
		if p.Handle>>24 == 0x80 {
			handles = append(handles, p.Handle)
		}
	}
	t.parents, t.keys = nil, nil
	for _, h := range handles {
		if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(c.tpm); err != nil && !errors.Is(err, tpm2.TPMRCHandle) {
			return tpmErr("flush kept object", err)
		}
	}
	return nil
}

// savedKey is a key's context as TPM2_ContextSave gave it: the TPM's own
// encrypted, integrity-protected copy of the loaded key, which
// TPM2_ContextLoad takes back in one cheap command instead of making the
// storage primary again and loading the key under it. It is useless
// outside the TPM that made it and holds nothing secret in the clear.
type savedKey struct {
	key    tpm2.TPMSContext
	name   tpm2.TPM2BName
	public *tpm2.TPMTPublic
	// parent is the saved storage primary, kept only for keys with a
	// PIN: their authorization is an HMAC session salted to it.
	parent *tpm2.TPMSContext
	// parentInfo is the parent as loaded (name and public area, for the
	// salt; the handle of a persistent parent).
	parentInfo Parent
}

// maxSaved bounds the saved contexts one TPM keeps: a handful of keys,
// each under the parent auth values that loaded it.
const maxSaved = 64

// loadSaved loads k for one operation, from its saved context when there
// is one. A context the TPM refuses (the TPM was reset or cleared since,
// or the spec now names another TPM) is dropped and the key is loaded from
// its file, which reports the real cause if that fails too.
func (c *Conn) loadSaved(id string, k *keyfile.Key, parentAuth []byte) (*Loaded, error) {
	t := c.owner
	if s := t.saved[id]; s != nil {
		l, err := c.reload(s, !k.EmptyAuth)
		var rc tpm2.TPMRC
		if err == nil || !errors.As(err, &rc) {
			return l, err
		}
		delete(t.saved, id)
	}
	l, err := c.LoadKey(k, parentAuth)
	if err != nil {
		return nil, err
	}
	s, err := c.save(l, !k.EmptyAuth)
	var rc tpm2.TPMRC
	switch {
	case err == nil:
		if t.saved == nil || len(t.saved) >= maxSaved {
			t.saved = map[string]*savedKey{}
		}
		t.saved[id] = s
	case !errors.As(err, &rc):
		// The connection failed: the signature would too.
		return nil, err
	}
	// A TPM that refuses to save a context (a TPM error code) only makes
	// the next operation load the key from its file again.
	return l, nil
}

// save saves a loaded key's context, and its parent's when the key needs
// a salted session and the parent is transient.
func (c *Conn) save(l *Loaded, withParent bool) (*savedKey, error) {
	rsp, err := tpm2.ContextSave{SaveHandle: l.Handle}.Execute(c.tpm)
	if err != nil {
		return nil, err
	}
	s := &savedKey{key: rsp.Context, name: l.Name, public: l.Public}
	if withParent {
		s.parentInfo = *l.parent
		s.parentInfo.auth = nil
		if l.parent.Handle>>24 == 0x80 {
			prsp, err := tpm2.ContextSave{SaveHandle: l.parent.Handle}.Execute(c.tpm)
			if err != nil {
				return nil, err
			}
			s.parent = &prsp.Context
		}
	}
	return s, nil
}

// reload loads a saved key (and, for a salted session, its parent) for
// one operation; Do flushes them.
func (c *Conn) reload(s *savedKey, withParent bool) (*Loaded, error) {
	l := &Loaded{Name: s.name, Public: s.public}
	if withParent {
		p := s.parentInfo
		if s.parent != nil {
			rsp, err := tpm2.ContextLoad{Context: *s.parent}.Execute(c.tpm)
			if err != nil {
				return nil, err
			}
			c.track(rsp.LoadedHandle)
			p.Handle = rsp.LoadedHandle
		}
		l.parent = &p
	}
	rsp, err := tpm2.ContextLoad{Context: s.key}.Execute(c.tpm)
	if err != nil {
		return nil, err
	}
	c.track(rsp.LoadedHandle)
	l.Handle = rsp.LoadedHandle
	return l, nil
}

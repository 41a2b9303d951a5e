package tpm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"math/big"

	"github.com/google/go-tpm/tpm2"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/keyfile"
)

// KeyType is the algorithm of a key.
type KeyType int

const (
	RSA KeyType = iota
	ECDSA
)

func (k KeyType) String() string {
	if k == ECDSA {
		return "ecdsa"
	}
	return "rsa"
}

// KeySpec describes a key to create or import.
type KeySpec struct {
	Type KeyType
	// Bits is the RSA modulus size (2048, 3072, 4096) or the curve size
	// (256, 384).
	Bits int
	// PIN is the key's auth value; empty means no PIN.
	PIN []byte
	// Parent is the parent handle; 0 means OwnerParent.
	Parent uint32
	// ParentAuth is the SRK PIN (see LoadParent).
	ParentAuth []byte
}

// Validate checks the parts of a spec that need no TPM.
func (ks KeySpec) Validate() error {
	switch ks.Type {
	case RSA:
		switch ks.Bits {
		case 2048, 3072, 4096:
			return nil
		}
		return newErr(ErrUnsupported, nil, "use -b 2048, 3072 or 4096", "RSA keys of %d bits are not supported", ks.Bits)
	case ECDSA:
		switch ks.Bits {
		case 256, 384:
			return nil
		}
		return newErr(ErrUnsupported, nil, "use -b 256 (P-256) or -b 384 (P-384)", "ECDSA keys of %d bits are not supported", ks.Bits)
	}
	return newErr(ErrUnsupported, nil, "use rsa or ecdsa", "unknown key type")
}

func (ks KeySpec) parent() uint32 {
	if ks.Parent == 0 {
		return OwnerParent
	}
	return ks.Parent
}

func (ks KeySpec) curve() tpm2.TPMECCCurve {
	if ks.Bits == 384 {
		return tpm2.TPMECCNistP384
	}
	return tpm2.TPMECCNistP256
}

// template is the public area of a new key. Keys made in the TPM are
// non-migratable (fixedTPM, fixedParent) and can only sign: without the
// decrypt attribute the key cannot be abused as a decryption oracle. The
// scheme is NULL so each signature picks its own (PKCS#1 v1.5 or PSS, any
// hash), which ssh's rsa-sha2-256 and rsa-sha2-512 both need.
//
// A key with a PIN is under the TPM's dictionary-attack protection. A key
// without one has no secret to guess, and is left out of it (noDA): else
// a lockout caused by wrong PINs for one key would stop every other key
// from signing too, ssh logins with no PIN included.
func (ks KeySpec) template(imported bool) tpm2.TPMTPublic {
	attrs := tpm2.TPMAObject{
		FixedTPM:            !imported,
		FixedParent:         !imported,
		SensitiveDataOrigin: !imported,
		UserWithAuth:        true,
		NoDA:                len(ks.PIN) == 0,
		SignEncrypt:         true,
	}
	if ks.Type == ECDSA {
		return tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgECC,
			NameAlg:          tpm2.TPMAlgSHA256,
			ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
				Scheme:    tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
				CurveID:   ks.curve(),
				KDF:       tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
		}
	}
	return tpm2.TPMTPublic{
		Type:             tpm2.TPMAlgRSA,
		NameAlg:          tpm2.TPMAlgSHA256,
		ObjectAttributes: attrs,
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme:    tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgNull},
			KeyBits:   tpm2.TPMKeyBits(ks.Bits),
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{}),
	}
}

// CreateKey makes a new key inside the TPM under the spec's parent. The
// private part never exists outside the TPM; the returned key file holds
// it wrapped by the parent. The PIN travels to the TPM only inside a
// parameter-encrypted session salted to the parent.
func (c *Conn) CreateKey(ks KeySpec) (*keyfile.Key, error) {
	if err := ks.Validate(); err != nil {
		return nil, err
	}
	if err := c.CheckSupported(ks); err != nil {
		return nil, err
	}
	p, err := c.LoadParent(ks.parent(), false, ks.ParentAuth)
	if err != nil {
		return nil, err
	}
	rsp, err := tpm2.Create{
		ParentHandle: p.authHandle(true),
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{
			UserAuth: tpm2.TPM2BAuth{Buffer: ks.PIN},
		}},
		InPublic: tpm2.New2B(ks.template(false)),
	}.Execute(c.tpm)
	if err != nil {
		return nil, c.authErr(err, "SRK PIN")
	}
	return newKeyFile(ks, p, rsp.OutPublic, rsp.OutPrivate), nil
}

func newKeyFile(ks KeySpec, p *Parent, pub tpm2.TPM2BPublic, priv tpm2.TPM2BPrivate) *keyfile.Key {
	return &keyfile.Key{
		Type:      keyfile.OIDLoadableKey,
		EmptyAuth: len(ks.PIN) == 0,
		Parent:    ks.parent(),
		Public:    tpm2.Marshal(pub),
		Private:   tpm2.Marshal(priv),
	}
}

// ImportKey wraps a software key for the spec's parent (TPM2_Import with
// an outer wrapper keyed to the parent, so the private key crosses the
// TPM interface encrypted) and returns the loadable key file. Such a key
// is not fixedTPM: its owner holds a backup of it.
func (c *Conn) ImportKey(priv crypto.Signer, ks KeySpec) (*keyfile.Key, error) {
	sens, err := ks.fromSigner(priv)
	if err != nil {
		return nil, err
	}
	if err := c.CheckSupported(ks); err != nil {
		return nil, err
	}
	tmpl := ks.template(true)
	if err := setUnique(&tmpl, priv.Public()); err != nil {
		return nil, err
	}
	p, err := c.LoadParent(ks.parent(), false, ks.ParentAuth)
	if err != nil {
		return nil, err
	}
	name, err := tpm2.ObjectName(&tmpl)
	if err != nil {
		return nil, tpmErr("object name", err)
	}
	seed := make([]byte, 32)
	if _, err := rand.Read(seed); err != nil {
		return nil, err
	}
	sensitive := tpm2.TPMTSensitive{
		SensitiveType: tmpl.Type,
		AuthValue:     tpm2.TPM2BAuth{Buffer: ks.PIN},
		SeedValue:     tpm2.TPM2BDigest{Buffer: seed},
		Sensitive:     *sens,
	}
	ek, err := tpm2.ImportEncapsulationKey(&p.Public)
	if err != nil {
		return nil, tpmErr("parent encapsulation key", err)
	}
	plain := tpm2.Marshal(sensitive)
	dup, encSeed, err := tpm2.CreateDuplicate(rand.Reader, ek, name.Buffer, plain)
	clear(plain)
	clear(seed)
	if err != nil {
		return nil, tpmErr("wrap key for import", err)
	}
	rsp, err := tpm2.Import{
		ParentHandle: p.authHandle(false),
		ObjectPublic: tpm2.New2B(tmpl),
		Duplicate:    tpm2.TPM2BPrivate{Buffer: dup},
		InSymSeed:    tpm2.TPM2BEncryptedSecret{Buffer: encSeed},
		Symmetric:    tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull},
	}.Execute(c.tpm)
	if err != nil {
		return nil, c.authErr(err, "SRK PIN")
	}
	return newKeyFile(ks, p, tpm2.New2B(tmpl), rsp.OutPrivate), nil
}

// fromSigner fills in Type and Bits from a software key and returns its
// sensitive part in TPM form.
func (ks *KeySpec) fromSigner(priv crypto.Signer) (*tpm2.TPMUSensitiveComposite, error) {
	switch k := priv.(type) {
	case *rsa.PrivateKey:
		ks.Type, ks.Bits = RSA, k.N.BitLen()
		if err := ks.Validate(); err != nil {
			return nil, err
		}
		if len(k.Primes) != 2 || k.E != 65537 {
			return nil, newErr(ErrUnsupported, nil, "", "only two-prime RSA keys with exponent 65537 can be imported")
		}
		u := tpm2.NewTPMUSensitiveComposite(tpm2.TPMAlgRSA, &tpm2.TPM2BPrivateKeyRSA{Buffer: k.Primes[0].Bytes()})
		return &u, nil
	case *ecdsa.PrivateKey:
		ks.Type, ks.Bits = ECDSA, k.Curve.Params().BitSize
		if err := ks.Validate(); err != nil {
			return nil, err
		}
		d, err := k.Bytes()
		if err != nil {
			return nil, newErr(ErrUnsupported, err, "", "ECDSA key: %v", err)
		}
		u := tpm2.NewTPMUSensitiveComposite(tpm2.TPMAlgECC, &tpm2.TPM2BECCParameter{Buffer: d})
		return &u, nil
	}
	return nil, newErr(ErrUnsupported, nil, "", "unsupported key type %T", priv)
}

func setUnique(t *tpm2.TPMTPublic, pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		t.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.Bytes()})
		return nil
	case *ecdsa.PublicKey:
		point, err := k.Bytes() // 04 || X || Y, each padded to the curve size
		if err != nil {
			return err
		}
		size := (len(point) - 1) / 2
		t.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: point[1 : 1+size]},
			Y: tpm2.TPM2BECCParameter{Buffer: point[1+size:]},
		})
		return nil
	}
	return fmt.Errorf("unsupported public key %T", pub)
}

// KeyPublic decodes a key file's public area. It needs no TPM.
func KeyPublic(k *keyfile.Key) (*tpm2.TPMTPublic, error) {
	pub2b, err := tpm2.Unmarshal[tpm2.TPM2BPublic](k.Public)
	if err != nil {
		return nil, newErr(ErrBadKey, err, "", "public area is not a TPM2B_PUBLIC: %v", err)
	}
	pub, err := pub2b.Contents()
	if err != nil {
		return nil, newErr(ErrBadKey, err, "", "public area is not a TPMT_PUBLIC: %v", err)
	}
	return pub, nil
}

// PublicKey returns the key file's public key as a Go key.
func PublicKey(k *keyfile.Key) (crypto.PublicKey, error) {
	pub, err := KeyPublic(k)
	if err != nil {
		return nil, err
	}
	return publicFromTPM(pub)
}

func publicFromTPM(pub *tpm2.TPMTPublic) (crypto.PublicKey, error) {
	switch pub.Type {
	case tpm2.TPMAlgRSA:
		parms, err := pub.Parameters.RSADetail()
		if err != nil {
			return nil, newErr(ErrBadKey, err, "", "RSA parameters: %v", err)
		}
		n, err := pub.Unique.RSA()
		if err != nil {
			return nil, newErr(ErrBadKey, err, "", "RSA modulus: %v", err)
		}
		e := int(parms.Exponent)
		if e == 0 {
			e = 65537
		}
		if len(n.Buffer) == 0 {
			return nil, newErr(ErrBadKey, nil, "", "empty RSA modulus")
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(n.Buffer), E: e}, nil
	case tpm2.TPMAlgECC:
		parms, err := pub.Parameters.ECCDetail()
		if err != nil {
			return nil, newErr(ErrBadKey, err, "", "ECC parameters: %v", err)
		}
		curve, err := goCurve(parms.CurveID)
		if err != nil {
			return nil, err
		}
		pt, err := pub.Unique.ECC()
		if err != nil {
			return nil, newErr(ErrBadKey, err, "", "ECC point: %v", err)
		}
		size := (curve.Params().BitSize + 7) / 8
		if len(pt.X.Buffer) > size || len(pt.Y.Buffer) > size {
			return nil, newErr(ErrBadKey, nil, "", "ECC point larger than its curve")
		}
		uncompressed := make([]byte, 1+2*size)
		uncompressed[0] = 4
		copy(uncompressed[1+size-len(pt.X.Buffer):1+size], pt.X.Buffer)
		copy(uncompressed[1+2*size-len(pt.Y.Buffer):], pt.Y.Buffer)
		k, err := ecdsa.ParseUncompressedPublicKey(curve, uncompressed)
		if err != nil {
			return nil, newErr(ErrBadKey, err, "", "ECC point not on curve")
		}
		return k, nil
	}
	return nil, newErr(ErrBadKey, nil, "", "key algorithm 0x%04x is neither RSA nor ECC", uint16(pub.Type))
}

func goCurve(id tpm2.TPMECCCurve) (elliptic.Curve, error) {
	switch id {
	case tpm2.TPMECCNistP256:
		return elliptic.P256(), nil
	case tpm2.TPMECCNistP384:
		return elliptic.P384(), nil
	case tpm2.TPMECCNistP521:
		return elliptic.P521(), nil
	}
	return nil, newErr(ErrUnsupported, nil, "", "unsupported ECC curve 0x%04x", uint16(id))
}

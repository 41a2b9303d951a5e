package p11

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/asn1"
	"encoding/binary"
	"errors"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Mechanism is a CK_MECHANISM.
type Mechanism struct {
	Type  uint
	Param []byte
}

// mechSpec says how a signing mechanism works.
type mechSpec struct {
	rsa  bool
	pss  bool
	hash crypto.Hash // the mechanism hashes the data itself; 0: the input is a hash (or DigestInfo)
}

var mechs = map[uint]mechSpec{
	CKM_RSA_PKCS:            {rsa: true},
	CKM_SHA1_RSA_PKCS:       {rsa: true, hash: crypto.SHA1},
	CKM_SHA256_RSA_PKCS:     {rsa: true, hash: crypto.SHA256},
	CKM_SHA384_RSA_PKCS:     {rsa: true, hash: crypto.SHA384},
	CKM_SHA512_RSA_PKCS:     {rsa: true, hash: crypto.SHA512},
	CKM_RSA_PKCS_PSS:        {rsa: true, pss: true},
	CKM_SHA1_RSA_PKCS_PSS:   {rsa: true, pss: true, hash: crypto.SHA1},
	CKM_SHA256_RSA_PKCS_PSS: {rsa: true, pss: true, hash: crypto.SHA256},
	CKM_SHA384_RSA_PKCS_PSS: {rsa: true, pss: true, hash: crypto.SHA384},
	CKM_SHA512_RSA_PKCS_PSS: {rsa: true, pss: true, hash: crypto.SHA512},
	CKM_ECDSA:               {},
	CKM_ECDSA_SHA1:          {hash: crypto.SHA1},
	CKM_ECDSA_SHA256:        {hash: crypto.SHA256},
	CKM_ECDSA_SHA384:        {hash: crypto.SHA384},
	CKM_ECDSA_SHA512:        {hash: crypto.SHA512},
}

var hashMechs = map[uint]crypto.Hash{CKM_SHA_1: crypto.SHA1, CKM_SHA256: crypto.SHA256, CKM_SHA384: crypto.SHA384, CKM_SHA512: crypto.SHA512}
var mgfs = map[uint]crypto.Hash{CKG_MGF1_SHA1: crypto.SHA1, CKG_MGF1_SHA256: crypto.SHA256, CKG_MGF1_SHA384: crypto.SHA384, CKG_MGF1_SHA512: crypto.SHA512}

// prepared is a mechanism checked against a key.
type prepared struct {
	mech    uint
	spec    mechSpec
	pssHash crypto.Hash // the hash named by the PSS parameters
	sigLen  int
}

// prepare checks that mechanism m can be used with key k.
func prepare(m Mechanism, k *Key) (*prepared, error) {
	spec, ok := mechs[m.Type]
	if !ok {
		return nil, rvErr(CKR_MECHANISM_INVALID, "mechanism 0x%X is not a signing mechanism this token has", m.Type)
	}
	p := &prepared{mech: m.Type, spec: spec}
	switch pub := k.Public.(type) {
	case *rsa.PublicKey:
		if !spec.rsa {
			return nil, rvErr(CKR_KEY_TYPE_INCONSISTENT, "mechanism 0x%X needs an EC key; %q is RSA", m.Type, k.Label)
		}
		p.sigLen = (pub.N.BitLen() + 7) / 8
	case *ecdsa.PublicKey:
		if spec.rsa {
			return nil, rvErr(CKR_KEY_TYPE_INCONSISTENT, "mechanism 0x%X needs an RSA key; %q is EC", m.Type, k.Label)
		}
		p.sigLen = 2 * ((pub.Curve.Params().BitSize + 7) / 8)
	}
	if !spec.pss {
		if len(m.Param) != 0 {
			return nil, rvErr(CKR_MECHANISM_PARAM_INVALID, "mechanism 0x%X takes no parameter", m.Type)
		}
		return p, nil
	}
	h, err := parsePSSParams(m.Param, spec.hash)
	if err != nil {
		return nil, err
	}
	p.pssHash = h
	return p, nil
}

// parsePSSParams checks CK_RSA_PKCS_PSS_PARAMS {hashAlg, mgf, sLen}. A
// TPM signs PSS only with MGF1 over the same hash and a salt as long as
// the hash (TPM 2.0 Part 1, 11.2.4.2), so anything else is refused here
// rather than producing a signature the caller did not ask for.
func parsePSSParams(param []byte, mechHash crypto.Hash) (crypto.Hash, error) {
	if len(param) != 3*ulongSize {
		return 0, rvErr(CKR_MECHANISM_PARAM_INVALID, "PSS parameters are %d bytes, want CK_RSA_PKCS_PSS_PARAMS (%d)", len(param), 3*ulongSize)
	}
	get := func(i int) uint {
		if ulongSize == 8 {
			return uint(binary.NativeEndian.Uint64(param[8*i:]))
		}
		return uint(binary.NativeEndian.Uint32(param[4*i:]))
	}
	h, ok := hashMechs[get(0)]
	if !ok {
		return 0, rvErr(CKR_MECHANISM_PARAM_INVALID, "PSS hashAlg 0x%X is not SHA-1/256/384/512", get(0))
	}
	if mechHash != 0 && h != mechHash {
		return 0, rvErr(CKR_MECHANISM_PARAM_INVALID, "PSS hashAlg %v does not match the mechanism's %v", h, mechHash)
	}
	if mgf, ok := mgfs[get(1)]; !ok || mgf != h {
		return 0, rvErr(CKR_MECHANISM_PARAM_INVALID, "PSS mgf 0x%X: the TPM uses MGF1 with the signature hash %v", get(1), h)
	}
	if get(2) != uint(h.Size()) {
		return 0, rvErr(CKR_MECHANISM_PARAM_INVALID, "PSS salt length %d: the TPM uses the hash length, %d", get(2), h.Size())
	}
	return h, nil
}

// digestFor turns a mechanism's input (after any hashing) into the
// digest and hash the TPM signs.
func (p *prepared) digestFor(input []byte) ([]byte, crypto.Hash, error) {
	switch {
	case p.spec.hash != 0:
		h := p.spec.hash.New()
		h.Write(input)
		return h.Sum(nil), p.spec.hash, nil
	case p.spec.pss:
		if len(input) != p.pssHash.Size() {
			return nil, 0, rvErr(CKR_DATA_LEN_RANGE, "CKM_RSA_PKCS_PSS input is %d bytes, want a %v hash (%d)", len(input), p.pssHash, p.pssHash.Size())
		}
		return input, p.pssHash, nil
	case p.spec.rsa:
		if len(input) > p.sigLen-11 {
			return nil, 0, rvErr(CKR_DATA_LEN_RANGE, "CKM_RSA_PKCS input is %d bytes, more than fits the key", len(input))
		}
		h, digest, err := ParseDigestInfo(input)
		if err != nil {
			return nil, 0, rvErr(CKR_DATA_INVALID, "CKM_RSA_PKCS input is not a DigestInfo for SHA-1/256/384/512: the TPM signs only hashes (%v)", err)
		}
		return digest, h, nil
	default: // CKM_ECDSA: the input is the hash; its length names it.
		for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512} {
			if len(input) == h.Size() {
				return input, h, nil
			}
		}
		return nil, 0, rvErr(CKR_DATA_LEN_RANGE, "CKM_ECDSA input is %d bytes; want a SHA-1, SHA-256, SHA-384 or SHA-512 hash", len(input))
	}
}

var digestOIDs = []struct {
	oid  asn1.ObjectIdentifier
	hash crypto.Hash
}{
	{asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}, crypto.SHA1},
	{asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}, crypto.SHA256},
	{asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}, crypto.SHA384},
	{asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}, crypto.SHA512},
}

// ParseDigestInfo parses a PKCS#1 DigestInfo (RFC 8017, 9.2):
// SEQUENCE { SEQUENCE { OID, NULL (optional) }, OCTET STRING digest }.
func ParseDigestInfo(b []byte) (crypto.Hash, []byte, error) {
	in := cryptobyte.String(b)
	var di, alg cryptobyte.String
	var oid asn1.ObjectIdentifier
	var digest []byte
	if !in.ReadASN1(&di, cbasn1.SEQUENCE) || !in.Empty() ||
		!di.ReadASN1(&alg, cbasn1.SEQUENCE) || !alg.ReadASN1ObjectIdentifier(&oid) {
		return 0, nil, errors.New("not a DER DigestInfo")
	}
	if !alg.Empty() {
		var null cryptobyte.String
		if !alg.ReadASN1(&null, cbasn1.NULL) || !null.Empty() || !alg.Empty() {
			return 0, nil, errors.New("digest algorithm parameters must be NULL or absent")
		}
	}
	if !di.ReadASN1Bytes(&digest, cbasn1.OCTET_STRING) || !di.Empty() {
		return 0, nil, errors.New("not a DER DigestInfo")
	}
	for _, d := range digestOIDs {
		if d.oid.Equal(oid) {
			if len(digest) != d.hash.Size() {
				return 0, nil, errors.New("digest length does not match its algorithm")
			}
			return d.hash, digest, nil
		}
	}
	return 0, nil, errors.New("unsupported digest algorithm " + oid.String())
}

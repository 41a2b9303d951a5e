package p11

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"strings"
	"unsafe"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/keyfile"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/tpm"
)

// Key is one configured key: its file, its public half, and what the
// token shows of it.
type Key struct {
	Path     string
	Label    string
	File     *keyfile.Key
	Public   crypto.PublicKey
	ID       []byte // SHA-1 of the SubjectPublicKeyInfo, shared by all its objects
	NeedsPIN bool
	// NeedsLogin is true when the key has a PIN and the config gives
	// none (key_pin): its private key object is then CKA_PRIVATE and
	// shown only after C_Login.
	NeedsLogin bool
	// Imported is true for backup-able keys (made in software and
	// imported): not LOCAL, not NEVER_EXTRACTABLE.
	Imported bool
	Cert     *x509.Certificate // from KEYFILE.crt, if present
	spki     []byte
}

// loadKey reads a key file and its optional certificate. It does no TPM
// I/O: everything the token shows comes from the files.
func loadKey(path, label string) (*Key, error) {
	kf, err := keyfile.Load(path)
	if err != nil {
		return nil, err
	}
	if err := tpm.CheckKeyFile(kf); err != nil {
		return nil, fmt.Errorf("%q: %w", path, err)
	}
	pub, err := tpm.PublicKey(kf)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", path, err)
	}
	tpub, err := tpm.KeyPublic(kf)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", path, err)
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", path, err)
	}
	id := sha1.Sum(spki)
	k := &Key{
		Path: path, Label: label, File: kf, Public: pub, ID: id[:], spki: spki,
		NeedsPIN: tpm.NeedsPIN(kf),
		Imported: !tpub.ObjectAttributes.FixedTPM || !tpub.ObjectAttributes.SensitiveDataOrigin,
	}
	if k.Cert, err = loadCert(certPath(path), pub); err != nil {
		return nil, err
	}
	return k, nil
}

// certPath is where a certificate for a key sits: the key file's name
// with .crt in place of its extension (id.key -> id.crt).
func certPath(keyPath string) string {
	if i := strings.LastIndexByte(keyPath, '.'); i > strings.LastIndexByte(keyPath, '/') {
		return keyPath[:i] + ".crt"
	}
	return keyPath + ".crt"
}

func loadCert(path string, pub crypto.PublicKey) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("certificate %q: %w", path, errors.Unwrap(err))
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("certificate %q: not a PEM CERTIFICATE", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certificate %q: %v", path, err)
	}
	if eq, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(pub) {
		return nil, fmt.Errorf("certificate %q: its public key is not the key's", path)
	}
	return cert, nil
}

// object is one PKCS#11 object: a key's private half, public half or
// certificate.
type object struct {
	handle uint
	class  uint
	key    *Key
}

// private says whether the object is hidden until C_Login.
func (o *object) private() bool { return o.class == CKO_PRIVATE_KEY && o.key.NeedsLogin }

// Attribute encodings (PKCS#11 2.40 section 2.3): CK_ULONG in native byte
// order and size, CK_BBOOL as one byte.
var ulongSize = int(unsafe.Sizeof(uint(0)))

func ulong(v uint) []byte {
	b := make([]byte, ulongSize)
	if ulongSize == 8 {
		binary.NativeEndian.PutUint64(b, uint64(v))
	} else {
		binary.NativeEndian.PutUint32(b, uint32(v))
	}
	return b
}

func boolean(v bool) []byte {
	if v {
		return []byte{1}
	}
	return []byte{0}
}

var (
	oidP256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
	oidP384 = asn1.ObjectIdentifier{1, 3, 132, 0, 34}
	oidP521 = asn1.ObjectIdentifier{1, 3, 132, 0, 35}
)

func ecParams(c elliptic.Curve) []byte {
	var oid asn1.ObjectIdentifier
	switch c {
	case elliptic.P256():
		oid = oidP256
	case elliptic.P384():
		oid = oidP384
	case elliptic.P521():
		oid = oidP521
	}
	der, err := asn1.Marshal(oid)
	if err != nil {
		return nil
	}
	return der
}

// ecPoint is CKA_EC_POINT: the uncompressed point in a DER OCTET STRING,
// as OpenSSH, OpenSC and p11-kit read it.
func ecPoint(k *ecdsa.PublicKey) []byte {
	raw, err := k.Bytes()
	if err != nil {
		return nil
	}
	der, err := asn1.Marshal(raw)
	if err != nil {
		return nil
	}
	return der
}

// rsaSecrets are the private parts of an RSA key (PKCS#11 2.40 curr.,
// 2.1.3), ecSecrets those of an EC key (2.3.4): attributes the key type
// has but a TPM key never reveals. Any other attribute is one the key
// type does not have at all.
var (
	rsaSecrets = map[uint]bool{
		CKA_PRIVATE_EXPONENT: true,
		0x124:                true, 0x125: true, 0x126: true, 0x127: true, 0x128: true, // CKA_PRIME_1 .. CKA_COEFFICIENT
	}
	ecSecrets = map[uint]bool{CKA_VALUE: true}
)

// attr returns the value of one attribute, or the CK_RV saying why not.
func (o *object) attr(t uint) ([]byte, uint) {
	k := o.key
	common := func() ([]byte, bool) {
		switch t {
		case CKA_CLASS:
			return ulong(o.class), true
		case CKA_TOKEN:
			return boolean(true), true
		case CKA_PRIVATE:
			return boolean(o.private()), true
		case CKA_LABEL:
			return []byte(k.Label), true
		case CKA_ID:
			return bytes.Clone(k.ID), true
		case CKA_MODIFIABLE, CKA_COPYABLE, CKA_DESTROYABLE:
			return boolean(false), true
		}
		return nil, false
	}
	if v, ok := common(); ok {
		return v, CKR_OK
	}
	if o.class == CKO_CERTIFICATE {
		return certAttr(k.Cert, t)
	}
	switch t {
	case CKA_KEY_TYPE:
		if _, ok := k.Public.(*rsa.PublicKey); ok {
			return ulong(CKK_RSA), CKR_OK
		}
		return ulong(CKK_EC), CKR_OK
	case CKA_SUBJECT, CKA_START_DATE, CKA_END_DATE:
		if t == CKA_SUBJECT && k.Cert != nil {
			return bytes.Clone(k.Cert.RawSubject), CKR_OK
		}
		return []byte{}, CKR_OK
	case CKA_LOCAL:
		return boolean(!k.Imported), CKR_OK
	case CKA_KEY_GEN_MECHANISM:
		switch {
		case k.Imported:
			return ulong(CK_UNAVAILABLE_INFORMATION), CKR_OK
		case isRSA(k):
			return ulong(CKM_RSA_PKCS_KEY_PAIR_GEN), CKR_OK
		}
		return ulong(CKM_EC_KEY_PAIR_GEN), CKR_OK
	case CKA_DERIVE:
		return boolean(false), CKR_OK
	case CKA_PUBLIC_KEY_INFO:
		return bytes.Clone(k.spki), CKR_OK
	}
	if v, ok := keyMaterial(k, t); ok {
		return v, CKR_OK
	}
	if o.class == CKO_PUBLIC_KEY {
		switch t {
		case CKA_VERIFY:
			return boolean(true), CKR_OK
		case CKA_ENCRYPT, CKA_WRAP, CKA_VERIFY_RECOVER:
			return boolean(false), CKR_OK
		case CKA_TRUSTED:
			return boolean(false), CKR_OK
		}
		return nil, CKR_ATTRIBUTE_TYPE_INVALID
	}
	// CKO_PRIVATE_KEY
	switch t {
	case CKA_SIGN:
		return boolean(true), CKR_OK
	case CKA_DECRYPT, CKA_UNWRAP, CKA_SIGN_RECOVER, CKA_EXTRACTABLE, CKA_ALWAYS_AUTHENTICATE, CKA_WRAP_WITH_TRUSTED:
		return boolean(false), CKR_OK
	case CKA_SENSITIVE:
		return boolean(true), CKR_OK
	case CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE:
		return boolean(!k.Imported), CKR_OK
	}
	secrets := ecSecrets
	if isRSA(k) {
		secrets = rsaSecrets
	}
	if secrets[t] {
		return nil, CKR_ATTRIBUTE_SENSITIVE
	}
	return nil, CKR_ATTRIBUTE_TYPE_INVALID
}

func isRSA(k *Key) bool {
	_, ok := k.Public.(*rsa.PublicKey)
	return ok
}

// keyMaterial gives the public numbers, shown on both key objects.
func keyMaterial(k *Key, t uint) ([]byte, bool) {
	switch p := k.Public.(type) {
	case *rsa.PublicKey:
		switch t {
		case CKA_MODULUS:
			return p.N.Bytes(), true
		case CKA_MODULUS_BITS:
			return ulong(uint(p.N.BitLen())), true
		case CKA_PUBLIC_EXPONENT:
			return big.NewInt(int64(p.E)).Bytes(), true
		}
	case *ecdsa.PublicKey:
		switch t {
		case CKA_EC_PARAMS:
			return ecParams(p.Curve), true
		case CKA_EC_POINT:
			return ecPoint(p), true
		}
	}
	return nil, false
}

func certAttr(c *x509.Certificate, t uint) ([]byte, uint) {
	switch t {
	case CKA_CERTIFICATE_TYPE:
		return ulong(CKC_X_509), CKR_OK
	case CKA_TRUSTED:
		return boolean(false), CKR_OK
	case CKA_CERTIFICATE_CATEGORY:
		return ulong(0), CKR_OK // unspecified
	case CKA_SUBJECT:
		return bytes.Clone(c.RawSubject), CKR_OK
	case CKA_ISSUER:
		return bytes.Clone(c.RawIssuer), CKR_OK
	case CKA_SERIAL_NUMBER:
		der, err := asn1.Marshal(c.SerialNumber)
		if err != nil {
			return nil, CKR_GENERAL_ERROR
		}
		return der, CKR_OK
	case CKA_VALUE:
		return bytes.Clone(c.Raw), CKR_OK
	case CKA_PUBLIC_KEY_INFO:
		return bytes.Clone(c.RawSubjectPublicKeyInfo), CKR_OK
	case CKA_START_DATE, CKA_END_DATE:
		return []byte{}, CKR_OK
	}
	return nil, CKR_ATTRIBUTE_TYPE_INVALID
}

// Attribute is one entry of a search template.
type Attribute struct {
	Type  uint
	Value []byte
}

// matches reports whether the object has every attribute of tmpl with
// exactly that value.
func (o *object) matches(tmpl []Attribute) bool {
	for _, a := range tmpl {
		v, rv := o.attr(a.Type)
		if rv != CKR_OK || !bytes.Equal(v, normalize(a)) {
			return false
		}
	}
	return true
}

// normalize makes a template's CK_BBOOL comparable: any non-zero byte is
// true (applications pass 0xFF or 1).
func normalize(a Attribute) []byte {
	if len(a.Value) == 1 && isBoolAttr(a.Type) && a.Value[0] != 0 {
		return []byte{1}
	}
	return a.Value
}

func isBoolAttr(t uint) bool {
	switch t {
	case CKA_TOKEN, CKA_PRIVATE, CKA_MODIFIABLE, CKA_COPYABLE, CKA_DESTROYABLE, CKA_LOCAL, CKA_DERIVE,
		CKA_VERIFY, CKA_ENCRYPT, CKA_WRAP, CKA_VERIFY_RECOVER, CKA_TRUSTED, CKA_SIGN, CKA_DECRYPT, CKA_UNWRAP,
		CKA_SIGN_RECOVER, CKA_EXTRACTABLE, CKA_ALWAYS_AUTHENTICATE, CKA_WRAP_WITH_TRUSTED, CKA_SENSITIVE,
		CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE:
		return true
	}
	return false
}

// Package keybackup reads and writes the backup file of a "backup-able" key.
//
// A backup-able key is generated in software, imported into the TPM, and its
// private part is written exactly once to a backup file so that it can be
// restored later. The backup file is a PEM block labelled
// "ENCRYPTED PRIVATE KEY" (RFC 7468, Section 11) holding a PKCS#8
// EncryptedPrivateKeyInfo (RFC 5958, Section 3). The encryption scheme is
// PBES2 (RFC 8018, Section 6.2) with PBKDF2 (RFC 8018, Section 5.2) using
// HMAC-SHA-256 as the pseudorandom function and AES-256-CBC with PKCS#5
// padding (RFC 8018, Appendix B.2.5) as the cipher.
//
// The files written by Encrypt can be read by OpenSSL ("openssl pkey -in
// backup.pem"), and Decrypt reads the PBES2 files written by OpenSSL 3, for
// example by "openssl genpkey ... -aes256" or "openssl pkcs8 -topk8 -v2
// aes-256-cbc".
//
// Secrets: the derived key, the plaintext PKCS#8 DER and the copies this
// package makes of them are zeroed after use. Copies made inside the standard
// library (the passphrase string given to crypto/pbkdf2, HMAC and AES key
// schedules, the inner key bytes in crypto/x509) cannot be reached. The
// caller owns, and should zero, the passphrase slice.
package keybackup

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"hash"
	"math/big"
	"strings"
)

// DefaultIterations is the PBKDF2 iteration count used by Encrypt.
const DefaultIterations = 600000

// MaxIterations is the largest PBKDF2 iteration count accepted by
// EncryptWithIterations and Decrypt. Larger counts are rejected with
// ErrUnsupported so that a hostile file cannot make Decrypt run (almost)
// forever.
const MaxIterations = 10000000

// decryptIterLimit is the iteration limit enforced by Decrypt. It is
// MaxIterations except in the fuzz test, which lowers it so that mutated
// iteration counts cannot stall the fuzzer.
var decryptIterLimit = MaxIterations

// PEM block types (RFC 7468, Sections 10 and 11).
const (
	pemTypeEncrypted = "ENCRYPTED PRIVATE KEY"
	pemTypePlain     = "PRIVATE KEY"
)

const (
	saltLen = 16 // bytes of random PBKDF2 salt written by Encrypt
	ivLen   = aes.BlockSize
)

var (
	// ErrWrongPassphrase is returned by Decrypt when the passphrase does not
	// decrypt the file: the CBC padding or the decrypted PKCS#8 structure is
	// invalid. A corrupted ciphertext gives the same error.
	ErrWrongPassphrase = errors.New("keybackup: wrong passphrase or corrupted file")

	// ErrNotEncryptedPKCS8 is returned by Decrypt when the input holds no
	// well-formed "ENCRYPTED PRIVATE KEY" PEM block, for example an
	// unencrypted "PRIVATE KEY" block or a legacy OpenSSL encrypted PEM.
	ErrNotEncryptedPKCS8 = errors.New("keybackup: not a PEM encoded encrypted PKCS#8 private key")

	// ErrUnsupported is returned for algorithms or parameters this package
	// does not implement or refuses (for example DES, PBES1, scrypt, or an
	// out-of-range iteration count). The error message names the algorithm.
	ErrUnsupported = errors.New("keybackup: unsupported algorithm or parameter")
)

// detailError carries a specific message while matching one of the sentinel
// errors with errors.Is. The message never includes bytes of the input.
type detailError struct {
	kind error
	msg  string
}

func (e *detailError) Error() string { return e.msg }
func (e *detailError) Unwrap() error { return e.kind }

func errorf(kind error, format string, args ...any) error {
	return &detailError{kind: kind, msg: "keybackup: " + fmt.Sprintf(format, args...)}
}

// Object identifiers, RFC 8018 Appendix C and RFC 5958.
var (
	oidPBES2  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	oidPBKDF2 = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}

	oidHMACWithSHA1   = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 7}
	oidHMACWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}
	oidHMACWithSHA384 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 10}
	oidHMACWithSHA512 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 11}

	oidAES128CBC = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidAES192CBC = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 22}
	oidAES256CBC = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
)

// prfs are the PBKDF2 pseudorandom functions we implement (RFC 8018,
// Appendix B.1.1 and B.1.2).
var prfs = []struct {
	oid  asn1.ObjectIdentifier
	name string
	h    func() hash.Hash
}{
	{oidHMACWithSHA1, "hmacWithSHA1", sha1.New},
	{oidHMACWithSHA256, "hmacWithSHA256", sha256.New},
	{oidHMACWithSHA384, "hmacWithSHA384", sha512.New384},
	{oidHMACWithSHA512, "hmacWithSHA512", sha512.New},
}

// ciphers are the PBES2 encryption schemes we implement (RFC 8018,
// Appendix B.2.5).
var ciphers = []struct {
	oid    asn1.ObjectIdentifier
	name   string
	keyLen int
}{
	{oidAES128CBC, "aes-128-cbc", 16},
	{oidAES192CBC, "aes-192-cbc", 24},
	{oidAES256CBC, "aes-256-cbc", 32},
}

// knownNames names algorithms that appear in encrypted private keys in the
// wild but are not implemented here, for error messages.
var knownNames = []struct {
	oid  asn1.ObjectIdentifier
	name string
}{
	// PBES1, RFC 8018 Appendix A.3.
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 1}, "PBES1 pbeWithMD2AndDES-CBC"},
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 4}, "PBES1 pbeWithMD2AndRC2-CBC"},
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 3}, "PBES1 pbeWithMD5AndDES-CBC"},
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 6}, "PBES1 pbeWithMD5AndRC2-CBC"},
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 10}, "PBES1 pbeWithSHA1AndDES-CBC"},
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 11}, "PBES1 pbeWithSHA1AndRC2-CBC"},
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 14}, "PBMAC1"},
	// PKCS#12 PBE schemes, RFC 7292 Appendix C.
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 1, 1}, "pbeWithSHAAnd128BitRC4"},
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 1, 2}, "pbeWithSHAAnd40BitRC4"},
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 1, 3}, "pbeWithSHAAnd3-KeyTripleDES-CBC"},
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 1, 4}, "pbeWithSHAAnd2-KeyTripleDES-CBC"},
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 1, 5}, "pbeWithSHAAnd128BitRC2-CBC"},
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 1, 6}, "pbeWithSHAAnd40BitRC2-CBC"},
	// Key derivation functions other than PBKDF2 (RFC 7914, Section 7).
	{asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 11591, 4, 11}, "scrypt"},
	// PRFs, RFC 8018 Appendix B.1.2.
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 8}, "hmacWithSHA224"},
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 12}, "hmacWithSHA512-224"},
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 13}, "hmacWithSHA512-256"},
	// Ciphers, RFC 8018 Appendix B.2.
	{asn1.ObjectIdentifier{1, 3, 14, 3, 2, 7}, "des-cbc"},
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 7}, "des-ede3-cbc"},
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 2}, "rc2-cbc"},
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 9}, "rc5-cbc-pad"},
	// AES in modes other than CBC (NIST CSOR).
	{asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 1}, "aes-128-ecb"},
	{asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 6}, "aes-128-gcm"},
	{asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 21}, "aes-192-ecb"},
	{asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 26}, "aes-192-gcm"},
	{asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 41}, "aes-256-ecb"},
	{asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 46}, "aes-256-gcm"},
}

// algName returns a human readable name for oid. Unknown identifiers are
// shown in dotted form, truncated so that a hostile file cannot produce an
// arbitrarily long error message.
func algName(oid asn1.ObjectIdentifier) string {
	for _, c := range ciphers {
		if c.oid.Equal(oid) {
			return c.name
		}
	}
	for _, p := range prfs {
		if p.oid.Equal(oid) {
			return p.name
		}
	}
	for _, k := range knownNames {
		if k.oid.Equal(oid) {
			return k.name
		}
	}
	if oid.Equal(oidPBES2) {
		return "PBES2"
	}
	if oid.Equal(oidPBKDF2) {
		return "PBKDF2"
	}
	const maxLen = 64
	s := oid.String()
	if len(s) > maxLen {
		s = s[:maxLen] + "..."
	}
	return "OID " + s
}

// encryptedPrivateKeyInfo is RFC 5958, Section 3:
//
//	EncryptedPrivateKeyInfo ::= SEQUENCE {
//	  encryptionAlgorithm  EncryptionAlgorithmIdentifier,
//	  encryptedData        EncryptedData }
//	EncryptedData ::= OCTET STRING
type encryptedPrivateKeyInfo struct {
	Algorithm     pkix.AlgorithmIdentifier
	EncryptedData []byte
}

// pbes2Params is RFC 8018, Appendix A.4:
//
//	PBES2-params ::= SEQUENCE {
//	  keyDerivationFunc AlgorithmIdentifier {{PBES2-KDFs}},
//	  encryptionScheme  AlgorithmIdentifier {{PBES2-Encs}} }
type pbes2Params struct {
	KeyDerivationFunc pkix.AlgorithmIdentifier
	EncryptionScheme  pkix.AlgorithmIdentifier
}

// pbkdf2Params is RFC 8018, Appendix A.2, as written by Encrypt:
//
//	PBKDF2-params ::= SEQUENCE {
//	  salt CHOICE { specified OCTET STRING, otherSource AlgorithmIdentifier },
//	  iterationCount INTEGER (1..MAX),
//	  keyLength INTEGER (1..MAX) OPTIONAL,
//	  prf AlgorithmIdentifier {{PBKDF2-PRFs}} DEFAULT algid-hmacWithSHA1 }
//
// keyLength is omitted, as OpenSSL does for fixed-length ciphers.
type pbkdf2Params struct {
	Salt           []byte
	IterationCount int
	PRF            pkix.AlgorithmIdentifier
}

// pbkdf2ParamsIn is the same structure for parsing: the salt is kept raw so
// that the otherSource choice can be reported, and the integers are big so
// that absurd values are reported as unsupported rather than malformed.
type pbkdf2ParamsIn struct {
	Salt           asn1.RawValue
	IterationCount *big.Int
	KeyLength      *big.Int                 `asn1:"optional"`
	PRF            pkix.AlgorithmIdentifier `asn1:"optional"`
}

// privateKeyInfo is the prefix of OneAsymmetricKey (RFC 5958, Section 2):
//
//	OneAsymmetricKey ::= SEQUENCE {
//	  version                   Version,
//	  privateKeyAlgorithm       PrivateKeyAlgorithmIdentifier,
//	  privateKey                PrivateKey,
//	  attributes            [0] Attributes OPTIONAL,
//	  ...,
//	  [[2: publicKey        [1] PublicKey OPTIONAL ]],
//	  ... }
//
// It is used only to tell a wrong passphrase from a key that decrypts fine
// but is not supported by crypto/x509. The private key is a RawValue so that
// encoding/asn1 references the plaintext instead of copying it.
type privateKeyInfo struct {
	Version    int
	Algorithm  pkix.AlgorithmIdentifier
	PrivateKey asn1.RawValue
}

// zero overwrites b with zeros.
func zero(b []byte) {
	for i := range b {
		b[i] = 0
	}
}

// Encrypt returns the PEM file for key (an *rsa.PrivateKey or
// *ecdsa.PrivateKey) encrypted with passphrase, using PBKDF2-HMAC-SHA256 with
// DefaultIterations iterations and AES-256-CBC. An empty passphrase is
// rejected. Writing the result (once, with restrictive permissions) is up to
// the caller.
func Encrypt(key crypto.PrivateKey, passphrase []byte) ([]byte, error) {
	return EncryptWithIterations(key, passphrase, DefaultIterations)
}

// EncryptWithIterations is Encrypt with a caller-chosen PBKDF2 iteration
// count in [1, MaxIterations]. Counts below DefaultIterations are meant for
// tests only.
func EncryptWithIterations(key crypto.PrivateKey, passphrase []byte, iter int) ([]byte, error) {
	if iter < 1 {
		return nil, errorf(ErrUnsupported, "unsupported PBKDF2 iteration count: not positive")
	}
	if iter > MaxIterations {
		return nil, errorf(ErrUnsupported, "unsupported PBKDF2 iteration count: above the maximum of %d", MaxIterations)
	}
	if len(passphrase) == 0 {
		return nil, errors.New("keybackup: empty passphrase")
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if k == nil {
			return nil, errors.New("keybackup: nil RSA key")
		}
	case *ecdsa.PrivateKey:
		if k == nil {
			return nil, errors.New("keybackup: nil ECDSA key")
		}
	default:
		return nil, errorf(ErrUnsupported, "unsupported key type %T (want *rsa.PrivateKey or *ecdsa.PrivateKey)", key)
	}

	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("keybackup: marshaling PKCS#8: %w", err)
	}
	defer zero(der)

	salt := make([]byte, saltLen)
	iv := make([]byte, ivLen)
	if _, err := rand.Read(salt); err != nil {
		return nil, fmt.Errorf("keybackup: reading random salt: %w", err)
	}
	if _, err := rand.Read(iv); err != nil {
		return nil, fmt.Errorf("keybackup: reading random IV: %w", err)
	}

	// PBES2 encryption, RFC 8018 Section 6.2.1, steps 2 and 3: derive the
	// key with PBKDF2 (Section 5.2).
	dk, err := deriveKey(sha256.New, passphrase, salt, iter, 32)
	if err != nil {
		return nil, err
	}
	defer zero(dk)
	block, err := aes.NewCipher(dk)
	if err != nil {
		return nil, fmt.Errorf("keybackup: %w", err)
	}

	// Step 4: pad per RFC 8018 Section 6.1.1 step 4 (the AES-CBC-Pad scheme
	// of Appendix B.2.5) and encrypt in place, so that the only copy of the
	// plaintext besides der is overwritten by the ciphertext.
	padLen := aes.BlockSize - len(der)%aes.BlockSize
	buf := make([]byte, len(der)+padLen)
	copy(buf, der)
	for i := len(der); i < len(buf); i++ {
		buf[i] = byte(padLen)
	}
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(buf, buf)

	// Step 5 and RFC 5958 Section 3.
	ivDER, err := asn1.Marshal(iv)
	if err != nil {
		return nil, fmt.Errorf("keybackup: %w", err)
	}
	kdfDER, err := asn1.Marshal(pbkdf2Params{
		Salt:           salt,
		IterationCount: iter,
		// RFC 8018 Appendix B.1.2: the parameters are NULL.
		PRF: pkix.AlgorithmIdentifier{Algorithm: oidHMACWithSHA256, Parameters: asn1.NullRawValue},
	})
	if err != nil {
		return nil, fmt.Errorf("keybackup: %w", err)
	}
	pbes2DER, err := asn1.Marshal(pbes2Params{
		KeyDerivationFunc: pkix.AlgorithmIdentifier{Algorithm: oidPBKDF2, Parameters: asn1.RawValue{FullBytes: kdfDER}},
		EncryptionScheme:  pkix.AlgorithmIdentifier{Algorithm: oidAES256CBC, Parameters: asn1.RawValue{FullBytes: ivDER}},
	})
	if err != nil {
		return nil, fmt.Errorf("keybackup: %w", err)
	}
	epkiDER, err := asn1.Marshal(encryptedPrivateKeyInfo{
		Algorithm:     pkix.AlgorithmIdentifier{Algorithm: oidPBES2, Parameters: asn1.RawValue{FullBytes: pbes2DER}},
		EncryptedData: buf,
	})
	if err != nil {
		return nil, fmt.Errorf("keybackup: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemTypeEncrypted, Bytes: epkiDER}), nil
}

// deriveKey runs PBKDF2 (RFC 8018, Section 5.2).
//
// crypto/pbkdf2 takes the password as a string, so the conversion makes a
// copy of the passphrase that cannot be zeroed; the HMAC key schedule inside
// crypto/pbkdf2 holds another. The caller still owns, and may zero, the
// passphrase slice itself.
func deriveKey(h func() hash.Hash, passphrase, salt []byte, iter, keyLen int) ([]byte, error) {
	dk, err := pbkdf2.Key(h, string(passphrase), salt, iter, keyLen)
	if err != nil {
		// Only reachable with invalid parameters or restrictions such as
		// FIPS 140-3 mode; the message does not contain secrets.
		return nil, errorf(ErrUnsupported, "PBKDF2: %v", err)
	}
	return dk, nil
}

// Decrypt parses pemBytes, which must contain an "ENCRYPTED PRIVATE KEY" PEM
// block, and decrypts it with passphrase. It supports PBES2 with PBKDF2
// (PRF hmacWithSHA1, hmacWithSHA256, hmacWithSHA384 or hmacWithSHA512) and
// AES-128-CBC, AES-192-CBC or AES-256-CBC.
//
// The key is returned as parsed by x509.ParsePKCS8PrivateKey: *rsa.PrivateKey
// and *ecdsa.PrivateKey for the keys written by Encrypt, but other types
// (ed25519.PrivateKey, *ecdh.PrivateKey) for files made by other tools.
//
// Errors match ErrWrongPassphrase, ErrNotEncryptedPKCS8 (also for malformed
// encrypted structures) or ErrUnsupported with errors.Is.
func Decrypt(pemBytes, passphrase []byte) (crypto.PrivateKey, error) {
	der, err := findBlock(pemBytes)
	if err != nil {
		return nil, err
	}

	var epki encryptedPrivateKeyInfo
	if rest, err := asn1.Unmarshal(der, &epki); err != nil || len(rest) != 0 {
		return nil, errorf(ErrNotEncryptedPKCS8, "malformed EncryptedPrivateKeyInfo")
	}
	if !epki.Algorithm.Algorithm.Equal(oidPBES2) {
		return nil, errorf(ErrUnsupported, "unsupported encryption scheme %s (only PBES2 is supported)", algName(epki.Algorithm.Algorithm))
	}
	var pbes2 pbes2Params
	if rest, err := asn1.Unmarshal(epki.Algorithm.Parameters.FullBytes, &pbes2); err != nil || len(rest) != 0 {
		return nil, errorf(ErrNotEncryptedPKCS8, "malformed PBES2-params")
	}

	// The encryption scheme, RFC 8018 Appendix B.2.5.
	keyLen := 0
	for _, c := range ciphers {
		if c.oid.Equal(pbes2.EncryptionScheme.Algorithm) {
			keyLen = c.keyLen
		}
	}
	if keyLen == 0 {
		return nil, errorf(ErrUnsupported, "unsupported PBES2 cipher %s (supported: aes-128-cbc, aes-192-cbc, aes-256-cbc)", algName(pbes2.EncryptionScheme.Algorithm))
	}
	var iv []byte
	if rest, err := asn1.Unmarshal(pbes2.EncryptionScheme.Parameters.FullBytes, &iv); err != nil || len(rest) != 0 || len(iv) != ivLen {
		return nil, errorf(ErrNotEncryptedPKCS8, "malformed AES-CBC initialization vector")
	}

	// The key derivation function, RFC 8018 Section 5.2 and Appendix A.2.
	if !pbes2.KeyDerivationFunc.Algorithm.Equal(oidPBKDF2) {
		return nil, errorf(ErrUnsupported, "unsupported PBES2 key derivation function %s (only PBKDF2 is supported)", algName(pbes2.KeyDerivationFunc.Algorithm))
	}
	var kdf pbkdf2ParamsIn
	if rest, err := asn1.Unmarshal(pbes2.KeyDerivationFunc.Parameters.FullBytes, &kdf); err != nil || len(rest) != 0 {
		return nil, errorf(ErrNotEncryptedPKCS8, "malformed PBKDF2-params")
	}
	if kdf.Salt.Class != asn1.ClassUniversal || kdf.Salt.Tag != asn1.TagOctetString || kdf.Salt.IsCompound {
		return nil, errorf(ErrUnsupported, "unsupported PBKDF2 salt from otherSource (only a specified salt is supported)")
	}
	salt := kdf.Salt.Bytes
	switch {
	case kdf.IterationCount.Sign() <= 0:
		return nil, errorf(ErrUnsupported, "unsupported PBKDF2 iteration count: not positive")
	case !kdf.IterationCount.IsInt64() || kdf.IterationCount.Int64() > int64(decryptIterLimit):
		return nil, errorf(ErrUnsupported, "unsupported PBKDF2 iteration count: above the maximum of %d", decryptIterLimit)
	}
	iter := int(kdf.IterationCount.Int64())
	if kdf.KeyLength != nil && (!kdf.KeyLength.IsInt64() || kdf.KeyLength.Int64() != int64(keyLen)) {
		return nil, errorf(ErrUnsupported, "unsupported PBKDF2 key length: does not match %s", algName(pbes2.EncryptionScheme.Algorithm))
	}
	var prf func() hash.Hash
	if len(kdf.PRF.Algorithm) == 0 {
		// DEFAULT algid-hmacWithSHA1, RFC 8018 Appendix A.2.
		prf = sha1.New
	} else {
		for _, p := range prfs {
			if p.oid.Equal(kdf.PRF.Algorithm) {
				prf = p.h
			}
		}
	}
	if prf == nil {
		return nil, errorf(ErrUnsupported, "unsupported PBKDF2 PRF %s (supported: hmacWithSHA1, hmacWithSHA256, hmacWithSHA384, hmacWithSHA512)", algName(kdf.PRF.Algorithm))
	}

	ct := epki.EncryptedData
	if len(ct) == 0 || len(ct)%aes.BlockSize != 0 {
		return nil, errorf(ErrNotEncryptedPKCS8, "encrypted data is not a whole number of AES blocks")
	}

	// PBES2 decryption, RFC 8018 Section 6.2.2.
	dk, err := deriveKey(prf, passphrase, salt, iter, keyLen)
	if err != nil {
		return nil, err
	}
	defer zero(dk)
	block, err := aes.NewCipher(dk)
	if err != nil {
		return nil, fmt.Errorf("keybackup: %w", err)
	}
	plain := make([]byte, len(ct))
	defer zero(plain)
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(plain, ct)

	// Step 5: check and remove the padding.
	n, ok := unpad(plain)
	if !ok {
		return nil, ErrWrongPassphrase
	}
	plain = plain[:n] // the deferred zero still sees the original length

	// A random plaintext that happens to have valid padding is caught here:
	// it is overwhelmingly unlikely to be a DER PrivateKeyInfo.
	var pki privateKeyInfo
	if rest, err := asn1.Unmarshal(plain, &pki); err != nil || len(rest) != 0 ||
		(pki.Version != 0 && pki.Version != 1) ||
		pki.PrivateKey.Class != asn1.ClassUniversal || pki.PrivateKey.Tag != asn1.TagOctetString {
		return nil, ErrWrongPassphrase
	}

	// crypto/x509 copies the inner private key bytes while parsing; those
	// copies are beyond our reach.
	key, err := x509.ParsePKCS8PrivateKey(plain)
	if err != nil {
		return nil, errorf(ErrUnsupported, "decrypted private key (algorithm %s) cannot be parsed: %v", algName(pki.Algorithm.Algorithm), err)
	}
	return key, nil
}

// findBlock returns the DER contents of the first "ENCRYPTED PRIVATE KEY"
// PEM block in data.
func findBlock(data []byte) ([]byte, error) {
	var sawPlain, sawLegacy bool
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch {
		case block.Type == pemTypeEncrypted:
			return block.Bytes, nil
		case block.Headers["Proc-Type"] != "" || block.Headers["DEK-Info"] != "":
			// RFC 1421 style encryption as written by "openssl rsa -aes256".
			sawLegacy = true
			zero(block.Bytes)
		case block.Type == pemTypePlain || strings.HasSuffix(block.Type, " PRIVATE KEY"):
			sawPlain = true
			zero(block.Bytes)
		}
	}
	switch {
	case sawLegacy:
		return nil, errorf(ErrNotEncryptedPKCS8, "legacy PEM encryption (Proc-Type/DEK-Info) is not PKCS#8; convert it with \"openssl pkcs8 -topk8\"")
	case sawPlain:
		return nil, errorf(ErrNotEncryptedPKCS8, "the private key is not encrypted")
	}
	return nil, errorf(ErrNotEncryptedPKCS8, "no %q PEM block found", pemTypeEncrypted)
}

// unpad checks the padding of RFC 8018 Section 6.1.1 step 4 (equivalently
// RFC 5652 Section 6.3) on b, whose length is a positive multiple of the
// block size. It returns the unpadded length. The last block is always
// examined in full, so the running time does not depend on the padding
// length or on where the padding check fails.
func unpad(b []byte) (int, bool) {
	last := b[len(b)-1]
	padLen := int(last)
	good := subtle.ConstantTimeLessOrEq(1, padLen) & subtle.ConstantTimeLessOrEq(padLen, aes.BlockSize)
	for i := 0; i < aes.BlockSize; i++ {
		inPad := subtle.ConstantTimeLessOrEq(i+1, padLen)
		eq := subtle.ConstantTimeByteEq(b[len(b)-1-i], last)
		good &= (1 ^ inPad) | eq
	}
	if good != 1 {
		return 0, false
	}
	return len(b) - padLen, true
}

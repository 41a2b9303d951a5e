package keybackup

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"sync"
	"testing"
)

// testIter is the PBKDF2 iteration count used where the count does not
// matter, to keep the tests fast.
const testIter = 1000

var (
	keyOnce sync.Once
	keys    map[string]crypto.Signer
)

// testKeys returns freshly generated keys, shared by all tests of a run.
func testKeys(t testing.TB) map[string]crypto.Signer {
	t.Helper()
	keyOnce.Do(func() {
		rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		if err != nil {
			panic(err)
		}
		keys = map[string]crypto.Signer{"RSA-2048": rsaKey, "ECDSA-P256": p256, "ECDSA-P384": p384}
	})
	return keys
}

func sameKey(t *testing.T, got crypto.PrivateKey, want crypto.Signer) {
	t.Helper()
	k, ok := got.(interface{ Equal(crypto.PrivateKey) bool })
	if !ok {
		t.Fatalf("Decrypt returned %T, which has no Equal method", got)
	}
	if !k.Equal(want) {
		t.Fatalf("Decrypt returned a different %T key", got)
	}
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		key  string
		pass string
		iter int
	}{
		{"RSA-2048", "correct horse battery staple", testIter},
		{"ECDSA-P256", "correct horse battery staple", testIter},
		{"ECDSA-P384", "correct horse battery staple", testIter},
		{"ECDSA-P256", "x", 1},
		{"ECDSA-P384", "pässwörd \x00 with NUL", 2},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			key := testKeys(t)[tt.key]
			file, err := EncryptWithIterations(key, []byte(tt.pass), tt.iter)
			if err != nil {
				t.Fatalf("EncryptWithIterations: %v", err)
			}
			if !bytes.HasPrefix(file, []byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\n")) {
				t.Fatalf("unexpected PEM header in\n%s", file)
			}
			orig := bytes.Clone(file)
			got, err := Decrypt(file, []byte(tt.pass))
			if err != nil {
				t.Fatalf("Decrypt: %v", err)
			}
			sameKey(t, got, key)
			if !bytes.Equal(file, orig) {
				t.Error("Decrypt modified its input")
			}
		})
	}
}

// TestEncryptFormat checks the parameters written by Encrypt with the
// default iteration count against RFC 8018 and RFC 5958.
func TestEncryptFormat(t *testing.T) {
	key := testKeys(t)["ECDSA-P256"]
	pass := []byte("default iterations")
	file, err := Encrypt(key, pass)
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	block, rest := pem.Decode(file)
	if block == nil || block.Type != "ENCRYPTED PRIVATE KEY" || len(block.Headers) != 0 || len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("not a single ENCRYPTED PRIVATE KEY block:\n%s", file)
	}
	var epki encryptedPrivateKeyInfo
	mustUnmarshal(t, block.Bytes, &epki)
	var pbes2 pbes2Params
	mustUnmarshal(t, epki.Algorithm.Parameters.FullBytes, &pbes2)
	var kdf pbkdf2Params
	mustUnmarshal(t, pbes2.KeyDerivationFunc.Parameters.FullBytes, &kdf)
	var iv []byte
	mustUnmarshal(t, pbes2.EncryptionScheme.Parameters.FullBytes, &iv)

	checks := []struct {
		what      string
		got, want any
	}{
		{"scheme", epki.Algorithm.Algorithm.String(), oidPBES2.String()},
		{"kdf", pbes2.KeyDerivationFunc.Algorithm.String(), oidPBKDF2.String()},
		{"cipher", pbes2.EncryptionScheme.Algorithm.String(), oidAES256CBC.String()},
		{"prf", kdf.PRF.Algorithm.String(), oidHMACWithSHA256.String()},
		{"prf parameters", kdf.PRF.Parameters.Tag, asn1.TagNull},
		{"iterations", kdf.IterationCount, DefaultIterations},
		{"salt length", len(kdf.Salt), 16},
		{"iv length", len(iv), 16},
		{"ciphertext blocks", len(epki.EncryptedData) % 16, 0},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}

	got, err := Decrypt(file, pass)
	if err != nil {
		t.Fatalf("Decrypt: %v", err)
	}
	sameKey(t, got, key)

	// Salt and IV are random: a second file differs.
	file2, err := EncryptWithIterations(key, pass, 1)
	if err != nil {
		t.Fatal(err)
	}
	block2, _ := pem.Decode(file2)
	var epki2 encryptedPrivateKeyInfo
	mustUnmarshal(t, block2.Bytes, &epki2)
	if bytes.Equal(epki.EncryptedData, epki2.EncryptedData) {
		t.Error("two encryptions gave the same ciphertext")
	}
}

func mustUnmarshal(t *testing.T, der []byte, v any) {
	t.Helper()
	rest, err := asn1.Unmarshal(der, v)
	if err != nil || len(rest) != 0 {
		t.Fatalf("asn1.Unmarshal into %T: err=%v, %d trailing bytes", v, err, len(rest))
	}
}

func TestEncryptErrors(t *testing.T) {
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p256 := testKeys(t)["ECDSA-P256"]
	tests := []struct {
		name string
		key  crypto.PrivateKey
		pass string
		iter int
		want error // nil: any error
	}{
		{"zero iterations", p256, "pw", 0, ErrUnsupported},
		{"negative iterations", p256, "pw", -5, ErrUnsupported},
		{"too many iterations", p256, "pw", MaxIterations + 1, ErrUnsupported},
		{"ed25519 key", edKey, "pw", 1, ErrUnsupported},
		{"public key", p256.Public(), "pw", 1, ErrUnsupported},
		{"nil key", nil, "pw", 1, ErrUnsupported},
		{"typed nil RSA key", (*rsa.PrivateKey)(nil), "pw", 1, nil},
		{"typed nil ECDSA key", (*ecdsa.PrivateKey)(nil), "pw", 1, nil},
		{"empty passphrase", p256, "", 1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := EncryptWithIterations(tt.key, []byte(tt.pass), tt.iter)
			if err == nil {
				t.Fatalf("EncryptWithIterations succeeded:\n%s", out)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error %q does not match %q", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "keybackup: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

// fileSpec describes a hand-made EncryptedPrivateKeyInfo for building
// malformed or unusual inputs.
type fileSpec struct {
	scheme    asn1.ObjectIdentifier
	kdf       asn1.ObjectIdentifier
	kdfParams any // marshaled with asn1.Marshal
	cipher    asn1.ObjectIdentifier
	iv        []byte
	data      []byte
}

func (s fileSpec) build(t *testing.T) []byte {
	t.Helper()
	marshal := func(v any) []byte {
		t.Helper()
		b, err := asn1.Marshal(v)
		if err != nil {
			t.Fatalf("asn1.Marshal(%T): %v", v, err)
		}
		return b
	}
	pbes2 := marshal(pbes2Params{
		KeyDerivationFunc: pkix.AlgorithmIdentifier{Algorithm: s.kdf, Parameters: asn1.RawValue{FullBytes: marshal(s.kdfParams)}},
		EncryptionScheme:  pkix.AlgorithmIdentifier{Algorithm: s.cipher, Parameters: asn1.RawValue{FullBytes: marshal(s.iv)}},
	})
	der := marshal(encryptedPrivateKeyInfo{
		Algorithm:     pkix.AlgorithmIdentifier{Algorithm: s.scheme, Parameters: asn1.RawValue{FullBytes: pbes2}},
		EncryptedData: s.data,
	})
	return pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: der})
}

type bigIterParams struct {
	Salt           []byte
	IterationCount *big.Int
}

type keyLenParams struct {
	Salt           []byte
	IterationCount int
	KeyLength      int
	PRF            pkix.AlgorithmIdentifier
}

type otherSourceParams struct {
	Salt           pkix.AlgorithmIdentifier
	IterationCount int
}

func TestDecryptErrors(t *testing.T) {
	const pass = "the passphrase"
	key := testKeys(t)["ECDSA-P256"]
	good, err := EncryptWithIterations(key, []byte(pass), 1)
	if err != nil {
		t.Fatal(err)
	}
	goodBlock, _ := pem.Decode(good)

	plainDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	plainPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: plainDER})
	ecDER, err := x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	sec1PEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER})
	legacyPEM := pem.EncodeToMemory(&pem.Block{
		Type:    "EC PRIVATE KEY",
		Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-256-CBC,00112233445566778899AABBCCDDEEFF"},
		Bytes:   ecDER,
	})
	truncDER := pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: goodBlock.Bytes[:len(goodBlock.Bytes)-20]})
	trailing := pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: append(bytes.Clone(goodBlock.Bytes), 0, 0)})

	salt := bytes.Repeat([]byte{7}, 16)
	iv := bytes.Repeat([]byte{9}, 16)
	data := bytes.Repeat([]byte{1}, 64)
	sha256ID := pkix.AlgorithmIdentifier{Algorithm: oidHMACWithSHA256, Parameters: asn1.NullRawValue}
	spec := func(f func(*fileSpec)) []byte {
		s := fileSpec{
			scheme:    oidPBES2,
			kdf:       oidPBKDF2,
			kdfParams: pbkdf2Params{Salt: salt, IterationCount: 1, PRF: sha256ID},
			cipher:    oidAES256CBC,
			iv:        iv,
			data:      data,
		}
		f(&s)
		return s.build(t)
	}
	iterFile := func(n *big.Int) []byte {
		return spec(func(s *fileSpec) { s.kdfParams = bigIterParams{Salt: salt, IterationCount: n} })
	}
	huge := new(big.Int).Lsh(big.NewInt(1), 100)

	tests := []struct {
		name     string
		in       []byte
		pass     string
		want     error
		wantText string // must appear in the error message
	}{
		{"wrong passphrase", good, "not the passphrase", ErrWrongPassphrase, ""},
		{"empty passphrase", good, "", ErrWrongPassphrase, ""},
		{"flipped last byte", flipBase64(t, good), pass, ErrWrongPassphrase, ""},
		{"unencrypted PKCS#8", plainPEM, pass, ErrNotEncryptedPKCS8, "not encrypted"},
		{"unencrypted SEC1", sec1PEM, pass, ErrNotEncryptedPKCS8, "not encrypted"},
		{"legacy encrypted PEM", legacyPEM, pass, ErrNotEncryptedPKCS8, "legacy"},
		{"empty", nil, pass, ErrNotEncryptedPKCS8, ""},
		{"garbage", []byte("SECRETMARKER not a pem file"), pass, ErrNotEncryptedPKCS8, ""},
		{"truncated PEM", good[:len(good)/2], pass, ErrNotEncryptedPKCS8, ""},
		{"truncated DER", truncDER, pass, ErrNotEncryptedPKCS8, "malformed"},
		{"trailing DER", trailing, pass, ErrNotEncryptedPKCS8, "malformed"},
		{"garbage DER", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte("SECRETMARKER")}), pass, ErrNotEncryptedPKCS8, "malformed"},
		{"PBES1", spec(func(s *fileSpec) { s.scheme = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 3} }), pass, ErrUnsupported, "pbeWithMD5AndDES-CBC"},
		{"unknown scheme", spec(func(s *fileSpec) { s.scheme = asn1.ObjectIdentifier{1, 2, 3, 4} }), pass, ErrUnsupported, "OID 1.2.3.4"},
		{"scrypt", spec(func(s *fileSpec) { s.kdf = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 11591, 4, 11} }), pass, ErrUnsupported, "scrypt"},
		{"des-ede3-cbc", spec(func(s *fileSpec) { s.cipher = asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 7}; s.iv = iv[:8] }), pass, ErrUnsupported, "des-ede3-cbc"},
		{"aes-256-gcm", spec(func(s *fileSpec) { s.cipher = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 46} }), pass, ErrUnsupported, "aes-256-gcm"},
		{"hmacWithSHA224", spec(func(s *fileSpec) {
			s.kdfParams = pbkdf2Params{Salt: salt, IterationCount: 1, PRF: pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 8}, Parameters: asn1.NullRawValue}}
		}), pass, ErrUnsupported, "hmacWithSHA224"},
		{"salt otherSource", spec(func(s *fileSpec) {
			s.kdfParams = otherSourceParams{Salt: pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 3}}, IterationCount: 1}
		}), pass, ErrUnsupported, "otherSource"},
		{"key length mismatch", spec(func(s *fileSpec) {
			s.kdfParams = keyLenParams{Salt: salt, IterationCount: 1, KeyLength: 16, PRF: sha256ID}
		}), pass, ErrUnsupported, "key length"},
		{"zero iterations", iterFile(big.NewInt(0)), pass, ErrUnsupported, "iteration"},
		{"negative iterations", iterFile(big.NewInt(-1)), pass, ErrUnsupported, "iteration"},
		{"too many iterations", iterFile(big.NewInt(MaxIterations + 1)), pass, ErrUnsupported, "iteration"},
		{"huge iterations", iterFile(huge), pass, ErrUnsupported, "iteration"},
		{"huge negative iterations", iterFile(new(big.Int).Neg(huge)), pass, ErrUnsupported, "iteration"},
		{"short IV", spec(func(s *fileSpec) { s.iv = iv[:8] }), pass, ErrNotEncryptedPKCS8, "initialization vector"},
		{"partial block", spec(func(s *fileSpec) { s.data = data[:30] }), pass, ErrNotEncryptedPKCS8, "AES blocks"},
		{"no ciphertext", spec(func(s *fileSpec) { s.data = []byte{} }), pass, ErrNotEncryptedPKCS8, "AES blocks"},
		{"random ciphertext", spec(func(s *fileSpec) {}), pass, ErrWrongPassphrase, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := Decrypt(tt.in, []byte(tt.pass))
			if err == nil {
				t.Fatalf("Decrypt succeeded with %T", key)
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %q does not match %q", err, tt.want)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "keybackup: ") {
				t.Errorf("error %q lacks the package prefix", msg)
			}
			if !strings.Contains(msg, tt.wantText) {
				t.Errorf("error %q does not mention %q", msg, tt.wantText)
			}
			if strings.Contains(msg, "SECRETMARKER") || strings.Contains(msg, tt.pass) && tt.pass != "" {
				t.Errorf("error %q echoes its input", msg)
			}
		})
	}
}

// flipBase64 returns file with one bit of the last ciphertext byte flipped,
// which destroys the padding (or, rarely, the decrypted structure).
func flipBase64(t *testing.T, file []byte) []byte {
	t.Helper()
	block, _ := pem.Decode(file)
	der := bytes.Clone(block.Bytes)
	der[len(der)-1] ^= 0x01
	return pem.EncodeToMemory(&pem.Block{Type: block.Type, Bytes: der})
}

// TestDecryptSkipsOtherBlocks checks that the encrypted block is found after
// unrelated text and PEM blocks.
func TestDecryptSkipsOtherBlocks(t *testing.T) {
	key := testKeys(t)["ECDSA-P256"]
	file, err := EncryptWithIterations(key, []byte("pw"), 1)
	if err != nil {
		t.Fatal(err)
	}
	in := append([]byte("comment line\n"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}})...)
	in = append(in, file...)
	got, err := Decrypt(in, []byte("pw"))
	if err != nil {
		t.Fatalf("Decrypt: %v", err)
	}
	sameKey(t, got, key)
}

func TestUnpad(t *testing.T) {
	block := func(tail ...byte) []byte {
		b := bytes.Repeat([]byte{0xAA}, 32-len(tail))
		return append(b, tail...)
	}
	full := bytes.Repeat([]byte{16}, 16)
	tests := []struct {
		name   string
		in     []byte
		wantN  int
		wantOK bool
	}{
		{"one byte", block(1), 31, true},
		{"two bytes", block(2, 2), 30, true},
		{"full block", append(bytes.Repeat([]byte{0xAA}, 16), full...), 16, true},
		{"only padding", full, 0, true},
		{"zero", block(0), 0, false},
		{"too long", block(17), 0, false},
		{"inconsistent", block(3, 2, 3), 0, false},
		{"mismatch at start of padding", append(bytes.Repeat([]byte{0xAA}, 16), append([]byte{15}, bytes.Repeat([]byte{16}, 15)...)...), 0, false},
		{"0xff", block(0xff), 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, ok := unpad(tt.in)
			if n != tt.wantN || ok != tt.wantOK {
				t.Errorf("unpad = %d, %v; want %d, %v", n, ok, tt.wantN, tt.wantOK)
			}
		})
	}
}

func TestZero(t *testing.T) {
	b := []byte{1, 2, 3}
	zero(b)
	if !bytes.Equal(b, []byte{0, 0, 0}) {
		t.Errorf("zero left %v", b)
	}
	zero(nil)
}

package keybackup

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// FuzzDecrypt checks that Decrypt never panics and always returns either a
// key or one of the documented errors. The seed corpus is in
// testdata/fuzz/FuzzDecrypt (files made by Encrypt and by openssl with one
// PBKDF2 iteration, with right and wrong passphrases, and damaged files);
// a few more seeds are generated below.
func FuzzDecrypt(f *testing.F) {
	// Counts up to MaxIterations take seconds, which the fuzzer would
	// report as a hang; they are covered by TestDecryptErrors instead.
	oldLimit := decryptIterLimit
	decryptIterLimit = 10000
	f.Cleanup(func() { decryptIterLimit = oldLimit })

	key := testKeys(f)["ECDSA-P256"]
	if file, err := EncryptWithIterations(key, []byte("fuzz"), 1); err == nil {
		f.Add(file, []byte("fuzz"))
		f.Add(file, []byte("wrong"))
	}
	if der, err := x509.MarshalPKCS8PrivateKey(key); err == nil {
		f.Add(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), []byte("fuzz"))
		f.Add(pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: der}), []byte("fuzz"))
	}
	f.Add([]byte(""), []byte(""))
	f.Add([]byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\n-----END ENCRYPTED PRIVATE KEY-----\n"), []byte("x"))

	f.Fuzz(func(t *testing.T, data, passphrase []byte) {
		key, err := Decrypt(data, passphrase)
		if err != nil {
			if key != nil {
				t.Errorf("Decrypt returned both a %T key and error %v", key, err)
			}
			if !errors.Is(err, ErrWrongPassphrase) && !errors.Is(err, ErrNotEncryptedPKCS8) && !errors.Is(err, ErrUnsupported) {
				t.Errorf("Decrypt error %q matches none of the documented errors", err)
			}
			if !strings.HasPrefix(err.Error(), "keybackup: ") {
				t.Errorf("Decrypt error %q lacks the package prefix", err)
			}
			return
		}
		if key == nil {
			t.Fatal("Decrypt returned neither key nor error")
		}
	})
}

// TestSeedCorpus checks the outcome of Decrypt on each file of the fuzz seed
// corpus, so that the files made by openssl keep being checked when the
// openssl binary is absent.
func TestSeedCorpus(t *testing.T) {
	tests := []struct {
		file string
		want error // nil: success
	}{
		{"ours_p256", nil},
		{"ours_rsa2048", nil},
		{"ours_p256_wrong_passphrase", ErrWrongPassphrase},
		{"ours_truncated", ErrNotEncryptedPKCS8},
		{"openssl_aes128_sha1", nil},
		{"openssl_aes192_sha384", nil},
		{"openssl_aes256_sha512", nil},
		{"openssl_des3", ErrUnsupported},
		{"openssl_pbes1", ErrUnsupported},
		{"openssl_scrypt", ErrUnsupported},
		{"openssl_legacy", ErrNotEncryptedPKCS8},
		{"garbage", ErrNotEncryptedPKCS8},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data, pass := readSeed(t, filepath.Join("testdata", "fuzz", "FuzzDecrypt", tt.file))
			key, err := Decrypt(data, pass)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Decrypt error %v, want %v", err, tt.want)
			}
			if tt.want == nil && key == nil {
				t.Fatal("Decrypt returned a nil key")
			}
		})
	}
}

// readSeed parses a "go test fuzz v1" file with two []byte values.
func readSeed(t *testing.T, path string) (data, pass []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 3 || lines[0] != "go test fuzz v1" {
		t.Fatalf("%s: not a two-value fuzz corpus file", path)
	}
	var vals [2][]byte
	for i, l := range lines[1:] {
		q, ok := strings.CutPrefix(l, "[]byte(")
		q, ok2 := strings.CutSuffix(q, ")")
		s, err := strconv.Unquote(q)
		if !ok || !ok2 || err != nil {
			t.Fatalf("%s: line %d is not a quoted []byte", path, i+2)
		}
		vals[i] = []byte(s)
	}
	return vals[0], vals[1]
}

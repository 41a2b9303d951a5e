package keybackup

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// opensslBinary returns the path of the openssl binary. The interop tests
// are skipped without it, except on CI where they must run.
func opensslBinary(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("openssl is required on CI: %v", err)
		}
		t.Skipf("openssl not found: %v", err)
	}
	return path
}

// openssl runs the openssl binary and returns its standard output.
func openssl(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return stdout.Bytes()
}

// pubFromPEM returns the DER SubjectPublicKeyInfo in the PEM output of
// "openssl pkey -pubout".
func pubFromPEM(t *testing.T, out []byte) []byte {
	t.Helper()
	block, _ := pem.Decode(out)
	if block == nil || block.Type != "PUBLIC KEY" {
		t.Fatalf("openssl output is not a PUBLIC KEY PEM block:\n%s", out)
	}
	return block.Bytes
}

func marshalPub(t *testing.T, key crypto.PrivateKey) []byte {
	t.Helper()
	signer, ok := key.(crypto.Signer)
	if !ok {
		t.Fatalf("%T is not a crypto.Signer", key)
	}
	der, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		t.Fatalf("MarshalPKIXPublicKey: %v", err)
	}
	return der
}

// TestOpenSSLReadsOurFiles checks that "openssl pkey" decrypts the files
// written by Encrypt to the same key.
func TestOpenSSLReadsOurFiles(t *testing.T) {
	bin := opensslBinary(t)
	tests := []struct {
		name string
		key  string
		iter int // 0: Encrypt with the default count
	}{
		{"RSA-2048", "RSA-2048", testIter},
		{"ECDSA-P256", "ECDSA-P256", testIter},
		{"ECDSA-P384", "ECDSA-P384", testIter},
		{"ECDSA-P256 one iteration", "ECDSA-P256", 1},
		{"ECDSA-P256 default iterations", "ECDSA-P256", 0},
	}
	const pass = "interop passphrase"
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := testKeys(t)[tt.key]
			var file []byte
			var err error
			if tt.iter == 0 {
				file, err = Encrypt(key, []byte(pass))
			} else {
				file, err = EncryptWithIterations(key, []byte(pass), tt.iter)
			}
			if err != nil {
				t.Fatalf("encrypt: %v", err)
			}
			path := filepath.Join(t.TempDir(), "backup.pem")
			if err := os.WriteFile(path, file, 0o600); err != nil {
				t.Fatal(err)
			}
			out := openssl(t, bin, "pkey", "-in", path, "-passin", "pass:"+pass, "-pubout")
			if got, want := pubFromPEM(t, out), marshalPub(t, key); !bytes.Equal(got, want) {
				t.Errorf("openssl sees a different public key")
			}
		})
	}
}

// TestDecryptOpenSSLFiles checks that Decrypt reads encrypted PKCS#8 files
// written by openssl, and that it reports unsupported ones clearly.
func TestDecryptOpenSSLFiles(t *testing.T) {
	bin := opensslBinary(t)
	dir := t.TempDir()
	const pass = "openssl made this"

	plain := map[string]string{}
	for name, opts := range map[string][]string{
		"rsa":  {"-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"},
		"p256": {"-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"},
		"p384": {"-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"},
	} {
		plain[name] = filepath.Join(dir, name+".pem")
		openssl(t, bin, append([]string{"genpkey", "-out", plain[name]}, opts...)...)
	}

	tests := []struct {
		name     string
		args     []string // openssl arguments; "OUT" is replaced by the output path
		pass     string   // passphrase given to Decrypt
		want     error
		wantText string
	}{
		{"genpkey RSA -aes256", []string{"genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-aes256", "-pass", "pass:" + pass, "-out", "OUT"}, pass, nil, ""},
		{"genpkey P-256 -aes256", []string{"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-aes256", "-pass", "pass:" + pass, "-out", "OUT"}, pass, nil, ""},
		{"genpkey P-384 -aes-128-cbc", []string{"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-aes-128-cbc", "-pass", "pass:" + pass, "-out", "OUT"}, pass, nil, ""},
		{"pkcs8 RSA aes-256-cbc hmacWithSHA256", topk8(plain["rsa"], pass, "-v2", "aes-256-cbc", "-v2prf", "hmacWithSHA256"), pass, nil, ""},
		{"pkcs8 P-256 aes-256-cbc hmacWithSHA256", topk8(plain["p256"], pass, "-v2", "aes-256-cbc", "-v2prf", "hmacWithSHA256"), pass, nil, ""},
		{"pkcs8 P-384 aes-128-cbc hmacWithSHA1", topk8(plain["p384"], pass, "-v2", "aes-128-cbc", "-v2prf", "hmacWithSHA1"), pass, nil, ""},
		{"pkcs8 P-256 aes-192-cbc hmacWithSHA384", topk8(plain["p256"], pass, "-v2", "aes-192-cbc", "-v2prf", "hmacWithSHA384"), pass, nil, ""},
		{"pkcs8 RSA aes-256-cbc hmacWithSHA512 iter 1", topk8(plain["rsa"], pass, "-v2", "aes-256-cbc", "-v2prf", "hmacWithSHA512", "-iter", "1"), pass, nil, ""},
		{"pkcs8 P-256 aes-256-cbc iter 100000", topk8(plain["p256"], pass, "-v2", "aes-256-cbc", "-iter", "100000"), pass, nil, ""},
		{"genpkey Ed25519 -aes256", []string{"genpkey", "-algorithm", "ED25519", "-aes256", "-pass", "pass:" + pass, "-out", "OUT"}, pass, nil, ""},
		{"secp256k1 decrypts but is refused", []string{"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:secp256k1", "-aes256", "-pass", "pass:" + pass, "-out", "OUT"}, pass, ErrUnsupported, "cannot be parsed"},
		{"wrong passphrase genpkey", []string{"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-aes256", "-pass", "pass:" + pass, "-out", "OUT"}, "wrong", ErrWrongPassphrase, ""},
		{"wrong passphrase pkcs8", topk8(plain["rsa"], pass, "-v2", "aes-128-cbc", "-v2prf", "hmacWithSHA1"), pass + " ", ErrWrongPassphrase, ""},
		{"des3", topk8(plain["p256"], pass, "-v2", "des3"), pass, ErrUnsupported, "des-ede3-cbc"},
		{"PBES1", topk8(plain["p256"], pass, "-v1", "PBE-SHA1-3DES"), pass, ErrUnsupported, "pbeWithSHAAnd3-KeyTripleDES-CBC"},
		{"scrypt", topk8(plain["p256"], pass, "-scrypt"), pass, ErrUnsupported, "scrypt"},
		{"hmacWithSHA224", topk8(plain["p256"], pass, "-v2", "aes-256-cbc", "-v2prf", "hmacWithSHA224"), pass, ErrUnsupported, "hmacWithSHA224"},
		{"camellia", topk8(plain["p256"], pass, "-v2", "camellia-256-cbc"), pass, ErrUnsupported, "cipher"},
		{"unencrypted", []string{"pkcs8", "-topk8", "-nocrypt", "-in", plain["p256"], "-out", "OUT"}, pass, ErrNotEncryptedPKCS8, "not encrypted"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(dir, fmt.Sprintf("enc%02d.pem", i))
			args := make([]string, len(tt.args))
			for j, a := range tt.args {
				if a == "OUT" {
					a = out
				}
				args[j] = a
			}
			openssl(t, bin, args...)
			file, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}

			key, err := Decrypt(file, []byte(tt.pass))
			if tt.want != nil {
				if !errors.Is(err, tt.want) {
					t.Fatalf("Decrypt error %v, want %v", err, tt.want)
				}
				if !strings.Contains(err.Error(), tt.wantText) {
					t.Errorf("error %q does not name %q", err, tt.wantText)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decrypt: %v", err)
			}
			pub := openssl(t, bin, "pkey", "-in", out, "-passin", "pass:"+pass, "-pubout")
			if got, want := marshalPub(t, key), pubFromPEM(t, pub); !bytes.Equal(got, want) {
				t.Errorf("Decrypt returned a different key than openssl")
			}

			// Re-encrypt with Encrypt and decrypt again: the key survives.
			// Encrypt only takes the key types a TPM can import.
			again, err := EncryptWithIterations(key, []byte(tt.pass), 1)
			if _, ok := key.(ed25519.PrivateKey); ok {
				if !errors.Is(err, ErrUnsupported) {
					t.Errorf("EncryptWithIterations(ed25519) error %v, want %v", err, ErrUnsupported)
				}
				return
			}
			if err != nil {
				t.Fatalf("EncryptWithIterations: %v", err)
			}
			key2, err := Decrypt(again, []byte(tt.pass))
			if err != nil {
				t.Fatalf("Decrypt of re-encrypted key: %v", err)
			}
			if !bytes.Equal(marshalPub(t, key2), marshalPub(t, key)) {
				t.Errorf("re-encryption changed the key")
			}
		})
	}
}

// topk8 returns the arguments of "openssl pkcs8 -topk8" converting in to an
// encrypted PKCS#8 file.
func topk8(in, pass string, opts ...string) []string {
	args := []string{"pkcs8", "-topk8", "-in", in, "-passout", "pass:" + pass, "-out", "OUT"}
	return append(args, opts...)
}

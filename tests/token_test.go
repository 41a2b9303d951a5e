package tests

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/internal/sshtest"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/internal/swtpmtest"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/p11kit"
	"golang.org/x/crypto/ssh"
)

// token is a configured module: a swtpm, keys made by stpm-keygen, and a
// config naming them, in a HOME of its own.
type token struct {
	tpm  *swtpmtest.TPM
	home string
	dir  string // ~/.simple-tpm-pk11
	env  []string
}

// testKeys are the keys every token test gets; "pin" has PIN testPIN.
var testKeys = []struct {
	name string
	args []string
}{
	{"rsa", []string{"-t", "rsa"}},
	{"ec256", []string{"-t", "ecdsa"}},
	{"ec384", []string{"-t", "ecdsa", "-b", "384"}},
}

const testPIN = "123456"

// newToken starts a swtpm, makes the keys and writes the config. With
// pin, a PIN-protected ECDSA key "pin" is added.
func newToken(t testing.TB, pin bool) *token {
	t.Helper()
	sw := swtpmtest.Start(t, swtpmtest.Options{TCP: true})
	sw.RelaxLockout(t)
	home := t.TempDir()
	dir := filepath.Join(home, ".simple-tpm-pk11")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	tk := &token{tpm: sw, home: home, dir: dir}
	// A runtime directory of its own: stpm-bridge must never find the
	// developer's running server (stpm-bridge.service) and reuse it.
	tk.env = append(cleanEnv(), "HOME="+home, "XDG_RUNTIME_DIR="+sshtest.SocketDir(t), "SIMPLE_TPM_PK11_TPM="+sw.Spec, "SIMPLE_TPM_PK11_LOG_STDERR=1")
	var cfg strings.Builder
	for _, k := range testKeys {
		tk.keygen(t, k.name, k.args...)
		fmt.Fprintf(&cfg, "key %s.key\n", k.name)
	}
	if pin {
		if err := os.WriteFile(filepath.Join(dir, "pinfile"), []byte(testPIN+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		tk.keygen(t, "pin", "-t", "ecdsa", "--pin-file", filepath.Join(dir, "pinfile"))
		cfg.WriteString("key pin.key\n")
	}
	if err := os.WriteFile(filepath.Join(dir, "config"), []byte(cfg.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return tk
}

// cleanEnv is the environment without anything that points at the
// user's own keys, agents, TPM or running servers (XDG_RUNTIME_DIR: newToken
// sets one of its own).
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "HOME", k == "XDG_RUNTIME_DIR", k == "SSH_AUTH_SOCK", k == "DISPLAY", k == "SSH_ASKPASS", strings.HasPrefix(k, "SIMPLE_TPM_PK11_"),
			strings.HasPrefix(k, "P11_KIT_"):
			continue
		}
		out = append(out, kv)
	}
	return out
}

func (tk *token) keygen(t testing.TB, name string, args ...string) {
	t.Helper()
	args = append(args, "-o", filepath.Join(tk.dir, name+".key"))
	if _, err := stpm(t, tk.tpm.Spec, tk.dir, "stpm-keygen", args...); err != nil {
		t.Fatal(err)
	}
}

// run runs a program with the token's environment in its directory.
func (tk *token) run(t testing.TB, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := contextTimeout(2 * time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = tk.dir
	cmd.Env = tk.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (tk *token) mustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := tk.run(t, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func (tk *token) path(name string) string { return filepath.Join(tk.dir, name) }

func (tk *token) write(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := tk.path(name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// pem exports a key's public half for openssl, from the .pub stpm-keygen wrote.
func (tk *token) pem(t testing.TB, name string) string {
	t.Helper()
	out := tk.mustRun(t, "ssh-keygen", "-e", "-m", "PKCS8", "-f", tk.path(name+".key.pub"))
	return tk.write(t, name+".pem", []byte(out))
}

// publicKey is a key's public half, from the .pub file stpm-keygen wrote.
func (tk *token) publicKey(t testing.TB, name string) crypto.PublicKey {
	t.Helper()
	data, err := os.ReadFile(tk.path(name + ".key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		t.Fatal(err)
	}
	return pub.(ssh.CryptoPublicKey).CryptoPublicKey()
}

// id is a key's CKA_ID in hex: the SHA-1 of its SubjectPublicKeyInfo.
func (tk *token) id(t testing.TB, name string) string {
	t.Helper()
	spki, err := x509.MarshalPKIXPublicKey(tk.publicKey(t, name))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha1.Sum(spki)
	return hex.EncodeToString(sum[:])
}

// noTransient fails if the TPM holds any object after the test.
func (tk *token) noTransient(t testing.TB) {
	t.Helper()
	if hs := tk.tpm.TransientHandles(t); len(hs) != 0 {
		t.Errorf("transient objects left in the TPM: %v", hs)
	}
}

func TestPkcs11ToolInfo(t *testing.T) {
	need(t, "pkcs11-tool")
	tk := newToken(t, false)
	out := tk.mustRun(t, "pkcs11-tool", "--module", modulePath, "-I", "-L", "-M", "-O")
	for _, want := range []string{
		"Cryptoki version 2.40",
		"token label        : simple-tpm-pk11",
		"token manufacturer : IBM",
		"RSA-PKCS, keySize={", "SHA256-RSA-PKCS-PSS", "ECDSA, keySize={256,384}",
		"Private Key Object; RSA", "label:      rsa", "Public Key Object; RSA 2048 bits",
		"label:      ec256", "label:      ec384",
		"Access:     sensitive, always sensitive, never extractable, local",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("pkcs11-tool output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "error") {
		t.Errorf("errors in the output:\n%s", out)
	}
	tk.noTransient(t)
}

// digestInfo builds what CKM_RSA_PKCS signs for ssh's rsa-sha2-* (and
// for any PKCS#1 v1.5 signature of a hash): the DER DigestInfo prefix of
// RFC 8017 section 9.2, note 1, followed by the digest.
func digestInfo(prefix string, digest []byte) []byte {
	p := map[string][]byte{
		"sha1":   {0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14},
		"sha256": {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20},
		"sha384": {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30},
		"sha512": {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40},
	}[prefix]
	return append(append([]byte(nil), p...), digest...)
}

// signCase is one signature through pkcs11-tool: the input file, extra
// pkcs11-tool options, and the openssl dgst options that verify it over
// the file "data".
type signCase struct {
	input  string
	extra  []string
	verify []string
}

// pssCase is a PSS case: the mechanism hashes with hash (or the input is that
// hash, for plain RSA-PKCS-PSS), MGF1 with the same hash, salt as long as
// the hash (the only salt a TPM uses).
func pssCase(input, hash string, salt int, plain bool) signCase {
	extra := []string{"--mgf", "MGF1-" + strings.ToUpper(hash), "--salt-len", strconv.Itoa(salt)}
	if plain {
		name := strings.ToUpper(hash)
		if name == "SHA1" {
			name = "SHA-1" // pkcs11-tool's spelling
		}
		extra = append([]string{"--hash-algorithm", name}, extra...)
	}
	return signCase{input, extra, []string{"-" + hash, "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:" + strconv.Itoa(salt)}}
}

// ecdsaCase is an ECDSA case; pkcs11-tool writes the signature as DER.
func ecdsaCase(input, hash string) signCase {
	return signCase{input, []string{"--signature-format", "openssl"}, []string{"-" + hash}}
}

// signCases says, for each mechanism the module may list, which key type
// it takes and how to sign with it and verify. Keyed by pkcs11-tool's name.
var signCases = map[string]struct {
	rsa   bool
	cases func(key string) []signCase
}{
	// CKM_RSA_PKCS over DigestInfo(SHA-x(data)) is what ssh sends for
	// rsa-sha2-256/512: a plain PKCS#1 v1.5 signature of data.
	"RSA-PKCS": {true, func(string) []signCase {
		return []signCase{{"di1", nil, []string{"-sha1"}}, {"di256", nil, []string{"-sha256"}},
			{"di384", nil, []string{"-sha384"}}, {"di512", nil, []string{"-sha512"}}}
	}},
	"SHA1-RSA-PKCS":   {true, func(string) []signCase { return []signCase{{"data", nil, []string{"-sha1"}}} }},
	"SHA256-RSA-PKCS": {true, func(string) []signCase { return []signCase{{"data", nil, []string{"-sha256"}}} }},
	"SHA384-RSA-PKCS": {true, func(string) []signCase { return []signCase{{"data", nil, []string{"-sha384"}}} }},
	"SHA512-RSA-PKCS": {true, func(string) []signCase { return []signCase{{"data", nil, []string{"-sha512"}}} }},
	"RSA-PKCS-PSS": {true, func(string) []signCase {
		return []signCase{pssCase("d1", "sha1", 20, true), pssCase("d256", "sha256", 32, true), pssCase("d384", "sha384", 48, true), pssCase("d512", "sha512", 64, true)}
	}},
	"SHA1-RSA-PKCS-PSS":   {true, func(string) []signCase { return []signCase{pssCase("data", "sha1", 20, false)} }},
	"SHA256-RSA-PKCS-PSS": {true, func(string) []signCase { return []signCase{pssCase("data", "sha256", 32, false)} }},
	"SHA384-RSA-PKCS-PSS": {true, func(string) []signCase { return []signCase{pssCase("data", "sha384", 48, false)} }},
	"SHA512-RSA-PKCS-PSS": {true, func(string) []signCase { return []signCase{pssCase("data", "sha512", 64, false)} }},
	// CKM_ECDSA signs a hash: the one that goes with the curve, and SHA-1.
	"ECDSA": {false, func(key string) []signCase {
		if key == "ec384" {
			return []signCase{ecdsaCase("d384", "sha384"), ecdsaCase("d1", "sha1")}
		}
		return []signCase{ecdsaCase("d256", "sha256"), ecdsaCase("d1", "sha1")}
	}},
	"ECDSA-SHA1":   {false, func(string) []signCase { return []signCase{ecdsaCase("data", "sha1")} }},
	"ECDSA-SHA256": {false, func(string) []signCase { return []signCase{ecdsaCase("data", "sha256")} }},
	"ECDSA-SHA384": {false, func(string) []signCase { return []signCase{ecdsaCase("data", "sha384")} }},
	"ECDSA-SHA512": {false, func(string) []signCase { return []signCase{ecdsaCase("data", "sha512")} }},
}

// tokenPublicKey reads a key's public key object from the token with
// pkcs11-tool, checks it is the key of the .pub file stpm-keygen wrote,
// and writes it as PEM for openssl.
func (tk *token) tokenPublicKey(t testing.TB, name string) string {
	t.Helper()
	der := tk.path(name + ".token.der")
	var data []byte
	out, err := tk.run(t, "pkcs11-tool", "--module", modulePath, "--read-object", "--type", "pubkey", "--id", tk.id(t, name), "-o", der)
	if err == nil {
		if data, err = os.ReadFile(der); err != nil {
			t.Fatal(err)
		}
	} else if strings.Contains(out, "cannot create EVP_PKEY") {
		// pkcs11-tool 0.23 cannot export a P-384 key; the key's
		// attributes as it lists them are what the token holds.
		t.Logf("%s: pkcs11-tool --read-object: %s; using its listing of CKA_EC_PARAMS and CKA_EC_POINT", name, strings.TrimSpace(out))
		data = tk.listedECKey(t, name)
	} else {
		t.Fatalf("pkcs11-tool --read-object %s: %v\n%s", name, err, out)
	}
	pub, err := x509.ParsePKIXPublicKey(data)
	if err != nil {
		t.Fatalf("%s: the token's public key is not a SubjectPublicKeyInfo: %v", name, err)
	}
	if !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(tk.publicKey(t, name)) {
		t.Fatalf("%s: the token's public key differs from %s.key.pub", name, name)
	}
	return tk.write(t, name+".token.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: data}))
}

// listedECKey builds an EC public key's SubjectPublicKeyInfo from the
// CKA_EC_PARAMS and CKA_EC_POINT pkcs11-tool lists for it.
func (tk *token) listedECKey(t testing.TB, name string) []byte {
	t.Helper()
	list := tk.mustRun(t, "pkcs11-tool", "--module", modulePath, "--list-objects", "--type", "pubkey")
	out := ""
	for _, obj := range strings.Split(list, "Public Key Object;") {
		if strings.Contains(obj, "ID:         "+tk.id(t, name)+"\n") {
			out = obj
		}
	}
	attr := func(label string) []byte {
		m := regexp.MustCompile(label + `:\s+([0-9a-f]+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no %s in\n%s", label, out)
		}
		b, err := hex.DecodeString(m[1])
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	curves := map[string]elliptic.Curve{"06082a8648ce3d030107": elliptic.P256(), "06052b81040022": elliptic.P384()}
	curve := curves[hex.EncodeToString(attr("EC_PARAMS"))]
	point := attr("EC_POINT")
	if curve == nil || len(point) < 2 || point[0] != 0x04 || int(point[1]) != len(point)-2 {
		t.Fatalf("%s: unexpected CKA_EC_PARAMS or CKA_EC_POINT (want a named curve and a DER OCTET STRING):\n%s", name, out)
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(curve, point[2:])
	if err != nil {
		t.Fatalf("%s: CKA_EC_POINT: %v", name, err)
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return spki
}

// listedMechanisms parses pkcs11-tool -M: each mechanism with its flags.
func listedMechanisms(t testing.TB, out string) map[string][]string {
	t.Helper()
	mechs := map[string][]string{}
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, "  ") {
			continue
		}
		f := strings.Split(strings.TrimSpace(l), ", ")
		mechs[f[0]] = f[1:]
	}
	if len(mechs) == 0 {
		t.Fatalf("no mechanisms in pkcs11-tool -M:\n%s", out)
	}
	return mechs
}

// TestPkcs11ToolSign signs through pkcs11-tool with every mechanism the
// module lists, with every key of the type it takes (and for CKM_RSA_PKCS
// and the PSS mechanisms, with every hash), and verifies each signature
// with openssl against the public key read back from the token, which
// must be the one in the .pub file. Every mechanism must be flagged hw
// and sign.
func TestPkcs11ToolSign(t *testing.T) {
	need(t, "pkcs11-tool")
	need(t, "openssl")
	tk := newToken(t, false)
	data := []byte("sign me, TPM\n")
	dataFile := tk.write(t, "data", data)
	d1 := sha1.Sum(data)
	d256 := sha256.Sum256(data)
	d384 := sha512.Sum384(data)
	d512 := sha512.Sum512(data)
	for name, b := range map[string][]byte{
		"d1": d1[:], "d256": d256[:], "d384": d384[:], "d512": d512[:],
		"di1": digestInfo("sha1", d1[:]), "di256": digestInfo("sha256", d256[:]),
		"di384": digestInfo("sha384", d384[:]), "di512": digestInfo("sha512", d512[:]),
	} {
		tk.write(t, name, b)
	}
	pems := map[string]string{}
	for _, k := range testKeys {
		pems[k.name] = tk.tokenPublicKey(t, k.name)
	}
	mechs := listedMechanisms(t, tk.mustRun(t, "pkcs11-tool", "--module", modulePath, "-M"))
	for mech, flags := range mechs {
		for _, want := range []string{"hw", "sign"} {
			if !slices.Contains(flags, want) {
				t.Errorf("%s lacks the %s flag: %v", mech, want, flags)
			}
		}
		sc, ok := signCases[mech]
		if !ok {
			t.Errorf("the module lists %s, which this test does not know how to check", mech)
			continue
		}
		for _, k := range testKeys {
			if sc.rsa != (k.name == "rsa") {
				continue
			}
			for _, c := range sc.cases(k.name) {
				name := k.name + "/" + mech + "/" + c.input
				t.Run(name, func(t *testing.T) {
					sig := tk.path("sig-" + strings.ReplaceAll(name, "/", "-"))
					args := append([]string{"--module", modulePath, "--sign", "--id", tk.id(t, k.name), "-m", mech,
						"-i", tk.path(c.input), "-o", sig}, c.extra...)
					tk.mustRun(t, "pkcs11-tool", args...)
					v := append(append([]string{"dgst"}, c.verify...), "-verify", pems[k.name], "-signature", sig, dataFile)
					out := tk.mustRun(t, "openssl", v...)
					if !strings.Contains(out, "Verified OK") {
						t.Errorf("openssl %v: %s", v, out)
					}
				})
			}
		}
	}
	for mech := range signCases {
		if _, ok := mechs[mech]; !ok {
			t.Errorf("the module no longer lists %s", mech)
		}
	}
	tk.noTransient(t)
}

// TestPkcs11ToolTest runs pkcs11-tool's own self test with a login.
func TestPkcs11ToolTest(t *testing.T) {
	need(t, "pkcs11-tool")
	tk := newToken(t, true)
	out, err := tk.run(t, "pkcs11-tool", "--module", modulePath, "--test", "--login", "--pin", testPIN)
	if err != nil || !strings.Contains(out, "No errors") {
		t.Fatalf("pkcs11-tool --test: %v\n%s", err, out)
	}
	out, err = tk.run(t, "pkcs11-tool", "--module", modulePath, "--login", "--pin", "999999", "-O")
	if err == nil || !strings.Contains(out, "CKR_PIN_INCORRECT") {
		t.Errorf("wrong PIN: %v\n%s", err, out)
	}
	if !strings.Contains(out, "simple-tpm-pk11[") || !strings.Contains(out, "C_Login: CKR_PIN_INCORRECT: key pin") {
		t.Errorf("wrong PIN: the module's log line is missing:\n%s", out)
	}
	tk.noTransient(t)
}

func TestP11tool(t *testing.T) {
	need(t, "p11tool")
	tk := newToken(t, true)
	tk.env = append(tk.env, "GNUTLS_PIN="+testPIN)
	out := tk.mustRun(t, "p11tool", "--provider", modulePath, "--login", "--list-all")
	for _, k := range append(testKeys, struct {
		name string
		args []string
	}{"pin", nil}) {
		if !strings.Contains(out, "Label: "+k.name+"\n") {
			t.Errorf("p11tool --list-all lacks key %s:\n%s", k.name, out)
		}
	}
	urls := strings.Fields(tk.mustRun(t, "p11tool", "--provider", modulePath, "--login", "--list-all-privkeys", "--only-urls"))
	if len(urls) != len(testKeys)+1 {
		t.Fatalf("%d private keys, want %d: %v", len(urls), len(testKeys)+1, urls)
	}
	for _, u := range urls {
		out := tk.mustRun(t, "p11tool", "--provider", modulePath, "--login", "--test-sign", u)
		if strings.Count(out, "... ok") < 3 && strings.Count(out, "ok\n") < 3 {
			t.Errorf("p11tool --test-sign %s:\n%s", u, out)
		}
	}
	tk.noTransient(t)
}

// TestSSHKeygenD: ssh-keygen -D lists exactly the keys stpm-keygen wrote.
func TestSSHKeygenD(t *testing.T) {
	need(t, "ssh-keygen")
	tk := newToken(t, false)
	out := tk.mustRun(t, "ssh-keygen", "-D", modulePath)
	// Exactly the keys of the .pub files, each once, nothing else.
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			t.Fatalf("ssh-keygen -D printed %q", line)
		}
		got = append(got, f[0]+" "+f[1])
	}
	var want []string
	for _, k := range testKeys {
		data, err := os.ReadFile(tk.path(k.name + ".key.pub"))
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(string(data))
		want = append(want, f[0]+" "+f[1])
	}
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("ssh-keygen -D:\n%s\nwant exactly the keys of the .pub files:\n%s", out, strings.Join(want, "\n"))
	}
}

// startServer runs p11-kit server for the module with env (the token's),
// on a socket in a short temporary directory, until the test ends.
func startServer(t testing.TB, env []string) *p11kit.Server {
	t.Helper()
	ps, err := p11kit.StartServer(context.Background(), p11kit.ServerOptions{
		Module: modulePath,
		Socket: filepath.Join(sshtest.SocketDir(t), "p11.sock"),
		URI:    "pkcs11:token=simple-tpm-pk11",
		Env:    env,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ps.Stop(); err != nil {
			t.Error(err)
		}
	})
	return ps
}

// TestModuleLockout: through the module, wrong PINs count down in the
// token flags, the TPM's lockout gives CKR_PIN_LOCKED to C_Login while
// the keys without a PIN (outside dictionary-attack protection: nothing
// to guess) go on signing, and once the lockout has passed the right PIN
// works again. Each failing call logs exactly one line, and nothing
// under HOME is written.
func TestModuleLockout(t *testing.T) {
	need(t, "pkcs11-tool")
	tk := newToken(t, true)
	// Two tries, one forgiven every 2 s.
	tk.tpm.Tool(t, "tpm2_dictionarylockout", "-s", "-n", "2", "-t", "2", "-l", "1")
	const (
		logPrefix = `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} simple-tpm-pk11\[\d+\]: error: `
		locked    = `the TPM is locked out after too many wrong PINs; it accepts a new try in about 2s \(hint: wait, or clear the lockout with 'tpm2_dictionarylockout --clear-lockout' \(needs the lockout authorization\)\)`
	)
	key := func(label string) string {
		return "key " + label + " " + regexp.QuoteMeta("("+tk.path(label+".key")+")") + ": "
	}
	// login runs p11host's probe with pin (C_Login, then C_Sign with
	// every key found) and checks the codes and that the module's log
	// is exactly lines, one per failing call, in order.
	login := func(pin, loginRV, signRV string, lines ...string) {
		t.Helper()
		p := probe(t, tk.env, nil, "--pin", pin)
		if got := p.rv("C_Login"); got != loginRV {
			t.Fatalf("C_Login with %s: %s, want %s:\n%s", pin, got, loginRV, p.stdout)
		}
		wantKeys := len(testKeys)
		if loginRV == "CKR_OK" {
			wantKeys++ // the PIN key shows once logged in
		}
		signs := p.signs()
		if len(signs) != wantKeys {
			t.Errorf("%d keys signed, want %d:\n%s", len(signs), wantKeys, p.stdout)
		}
		for label, f := range signs {
			if f["name"] != signRV || (signRV == "CKR_OK" && f["verified"] != "1") {
				t.Errorf("C_Sign with %s after C_Login with %s: %v, want %s", label, pin, f, signRV)
			}
		}
		if len(p.log) != len(lines) {
			t.Errorf("C_Login with %s: %d log lines, want %d:\n%s", pin, len(p.log), len(lines), strings.Join(p.log, "\n"))
			return
		}
		for i, l := range lines {
			if re := regexp.MustCompile(logPrefix + l + "$"); !re.MatchString(p.log[i]) {
				t.Errorf("C_Login with %s: log line %d:\n%s\nwant it to match\n%s", pin, i+1, p.log[i], re)
			}
		}
	}
	// flags lists the token with pkcs11-tool; the module must log nothing.
	flags := func() string {
		t.Helper()
		ctx, cancel := contextTimeout(2 * time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "pkcs11-tool", "--module", modulePath, "-L")
		cmd.Dir, cmd.Env = tk.dir, tk.env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("pkcs11-tool -L: %v\n%s%s", err, stdout.String(), stderr.String())
		}
		if stderr.Len() != 0 {
			t.Errorf("pkcs11-tool -L: stderr:\n%s", stderr.String())
		}
		return stdout.String()
	}
	assertUnchanged(t, tk.home, func() {
		login("000000", "CKR_PIN_INCORRECT", "CKR_OK",
			"C_Login: CKR_PIN_INCORRECT: "+key("pin")+regexp.QuoteMeta("incorrect PIN (1 try remaining) (hint: check the PIN (or key_pin in the config); each wrong one counts toward the TPM's dictionary-attack lockout)"))
		if out := flags(); !strings.Contains(out, "user PIN count low") || !strings.Contains(out, "final user PIN try") {
			t.Errorf("token flags after a wrong PIN:\n%s", out)
		}
		login("000000", "CKR_PIN_INCORRECT", "CKR_OK",
			"C_Login: CKR_PIN_INCORRECT: "+key("pin")+regexp.QuoteMeta("incorrect PIN (0 tries remaining) (hint: the TPM is now locked out; it accepts a new try in about 2s)"))
		if out := flags(); !strings.Contains(out, "user PIN locked") {
			t.Errorf("token flags when locked out:\n%s", out)
		}
		login(testPIN, "CKR_PIN_LOCKED", "CKR_OK", "C_Login: CKR_PIN_LOCKED: "+key("pin")+locked)
		time.Sleep(4500 * time.Millisecond) // both failures forgiven
		login(testPIN, "CKR_OK", "CKR_OK")
	})
}

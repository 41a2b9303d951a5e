package tests

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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

// digestInfo builds what CKM_RSA_PKCS signs for ssh's rsa-sha2-*.
func digestInfo(prefix string, digest []byte) []byte {
	p := map[string][]byte{
		"sha256": {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20},
		"sha512": {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40},
	}[prefix]
	return append(append([]byte(nil), p...), digest...)
}

// TestPkcs11ToolSign signs with every mechanism through pkcs11-tool and
// verifies each signature with openssl against the exported public key.
func TestPkcs11ToolSign(t *testing.T) {
	need(t, "pkcs11-tool")
	need(t, "openssl")
	tk := newToken(t, false)
	data := []byte("sign me, TPM\n")
	dataFile := tk.write(t, "data", data)
	d256 := sha256.Sum256(data)
	d384 := sha512.Sum384(data)
	d512 := sha512.Sum512(data)
	tk.write(t, "d256", d256[:])
	tk.write(t, "d384", d384[:])
	tk.write(t, "di256", digestInfo("sha256", d256[:]))
	tk.write(t, "di512", digestInfo("sha512", d512[:]))
	pems := map[string]string{}
	for _, k := range testKeys {
		pems[k.name] = tk.pem(t, k.name)
	}
	for _, tc := range []struct {
		key, mech, input string
		extra            []string
		verify           []string // openssl command; SIG, PEM and DATA substituted
	}{
		// CKM_RSA_PKCS over DigestInfo(SHA-x(data)) is what ssh sends
		// for rsa-sha2-256/512: a plain PKCS#1 v1.5 signature of data.
		{"rsa", "RSA-PKCS", "di256", nil, []string{"dgst", "-sha256", "-verify", "PEM", "-signature", "SIG", "DATA"}},
		{"rsa", "RSA-PKCS", "di512", nil, []string{"dgst", "-sha512", "-verify", "PEM", "-signature", "SIG", "DATA"}},
		{"rsa", "SHA1-RSA-PKCS", "data", nil, []string{"dgst", "-sha1", "-verify", "PEM", "-signature", "SIG", "DATA"}},
		{"rsa", "SHA256-RSA-PKCS", "data", nil, []string{"dgst", "-sha256", "-verify", "PEM", "-signature", "SIG", "DATA"}},
		{"rsa", "SHA384-RSA-PKCS", "data", nil, []string{"dgst", "-sha384", "-verify", "PEM", "-signature", "SIG", "DATA"}},
		{"rsa", "SHA512-RSA-PKCS", "data", nil, []string{"dgst", "-sha512", "-verify", "PEM", "-signature", "SIG", "DATA"}},
		{"rsa", "SHA256-RSA-PKCS-PSS", "data", []string{"--mgf", "MGF1-SHA256", "--salt-len", "32"},
			[]string{"dgst", "-sha256", "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32", "-verify", "PEM", "-signature", "SIG", "DATA"}},
		{"rsa", "SHA512-RSA-PKCS-PSS", "data", []string{"--mgf", "MGF1-SHA512", "--salt-len", "64"},
			[]string{"dgst", "-sha512", "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:64", "-verify", "PEM", "-signature", "SIG", "DATA"}},
		{"rsa", "RSA-PKCS-PSS", "d256", []string{"--hash-algorithm", "SHA256", "--mgf", "MGF1-SHA256", "--salt-len", "32"},
			[]string{"dgst", "-sha256", "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32", "-verify", "PEM", "-signature", "SIG", "DATA"}},
		{"ec256", "ECDSA", "d256", []string{"--signature-format", "openssl"}, []string{"dgst", "-sha256", "-verify", "PEM", "-signature", "SIG", "DATA"}},
		{"ec256", "ECDSA-SHA256", "data", []string{"--signature-format", "openssl"}, []string{"dgst", "-sha256", "-verify", "PEM", "-signature", "SIG", "DATA"}},
		{"ec256", "ECDSA-SHA384", "data", []string{"--signature-format", "openssl"}, []string{"dgst", "-sha384", "-verify", "PEM", "-signature", "SIG", "DATA"}},
		{"ec256", "ECDSA-SHA512", "data", []string{"--signature-format", "openssl"}, []string{"dgst", "-sha512", "-verify", "PEM", "-signature", "SIG", "DATA"}},
		{"ec384", "ECDSA", "d384", []string{"--signature-format", "openssl"}, []string{"dgst", "-sha384", "-verify", "PEM", "-signature", "SIG", "DATA"}},
		{"ec384", "ECDSA-SHA384", "data", []string{"--signature-format", "openssl"}, []string{"dgst", "-sha384", "-verify", "PEM", "-signature", "SIG", "DATA"}},
		{"ec384", "ECDSA-SHA1", "data", []string{"--signature-format", "openssl"}, []string{"dgst", "-sha1", "-verify", "PEM", "-signature", "SIG", "DATA"}},
	} {
		name := tc.key + "/" + tc.mech + "/" + tc.input
		t.Run(name, func(t *testing.T) {
			sig := tk.path("sig-" + strings.ReplaceAll(name, "/", "-"))
			args := append([]string{"--module", modulePath, "--sign", "--id", tk.id(t, tc.key), "-m", tc.mech,
				"-i", tk.path(tc.input), "-o", sig}, tc.extra...)
			tk.mustRun(t, "pkcs11-tool", args...)
			v := make([]string, len(tc.verify))
			for i, a := range tc.verify {
				v[i] = map[string]string{"SIG": sig, "PEM": pems[tc.key], "DATA": dataFile}[a]
				if v[i] == "" {
					v[i] = a
				}
			}
			out := tk.mustRun(t, "openssl", v...)
			if !strings.Contains(out, "Verified OK") && !strings.Contains(out, "Signature Verified Successfully") {
				t.Errorf("openssl %v: %s", v, out)
			}
		})
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
	got := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 {
			got[f[0]+" "+f[1]] = true
		}
	}
	want := map[string]bool{}
	for _, k := range testKeys {
		data, err := os.ReadFile(tk.path(k.name + ".key.pub"))
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(string(data))
		want[f[0]+" "+f[1]] = true
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("ssh-keygen -D:\n%s\nwant the keys of the .pub files", out)
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
// token flags, the TPM's lockout gives CKR_PIN_LOCKED, and once the
// lockout has passed the right PIN works again.
func TestModuleLockout(t *testing.T) {
	need(t, "pkcs11-tool")
	tk := newToken(t, true)
	// Two tries, one forgiven every 2 s.
	tk.tpm.Tool(t, "tpm2_dictionarylockout", "-s", "-n", "2", "-t", "2", "-l", "1")
	// login tries a PIN that must fail and returns what was printed.
	login := func(pin string) string {
		t.Helper()
		out, err := tk.run(t, "pkcs11-tool", "--module", modulePath, "--login", "--pin", pin, "-O")
		if err == nil {
			t.Fatalf("login with %s succeeded:\n%s", pin, out)
		}
		return out
	}
	if out := login("000000"); !strings.Contains(out, "CKR_PIN_INCORRECT") || !strings.Contains(out, "(1 try remaining)") {
		t.Fatalf("first wrong PIN:\n%s", out)
	}
	if out := tk.mustRun(t, "pkcs11-tool", "--module", modulePath, "-L"); !strings.Contains(out, "user PIN count low") || !strings.Contains(out, "final user PIN try") {
		t.Errorf("token flags after a wrong PIN:\n%s", out)
	}
	if out := login("000000"); !strings.Contains(out, "CKR_PIN_INCORRECT") {
		t.Fatalf("second wrong PIN:\n%s", out)
	}
	if out := tk.mustRun(t, "pkcs11-tool", "--module", modulePath, "-L"); !strings.Contains(out, "user PIN locked") {
		t.Errorf("token flags when locked out:\n%s", out)
	}
	if out := login(testPIN); !strings.Contains(out, "CKR_PIN_LOCKED") || !strings.Contains(out, "accepts a new try in about 2s") {
		t.Fatalf("right PIN during lockout:\n%s", out)
	}
	time.Sleep(4500 * time.Millisecond) // both failures forgiven
	if out, err := tk.run(t, "pkcs11-tool", "--module", modulePath, "--login", "--pin", testPIN, "-O"); err != nil {
		t.Fatalf("right PIN after the lockout passed: %v\n%s", err, out)
	}
}

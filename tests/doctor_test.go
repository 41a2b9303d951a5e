package tests

import (
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/internal/rocatest"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/keyfile"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/tpm"
)

// TestDoctorHealthy: an ordinary user whose module is registered with
// p11-kit and whose ~/.ssh/config names p11-kit-proxy.so gets only ok
// lines, and exit status 0.
func TestDoctorHealthy(t *testing.T) {
	for _, tool := range []string{"p11-kit", "runuser"} {
		need(t, tool)
	}
	u := testUser(t)
	proxy := proxyModule(t)
	tk := newToken(t, true)
	sshDir := filepath.Join(tk.home, ".ssh")
	if err := os.Mkdir(sshDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sshDir, "config"), []byte("Host *\n    PKCS11Provider "+proxy+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	chownTree(t, u, tk.home)
	openParents(t, tk.home)
	// HOME is the token's, after asUser's: p11-kit's user module
	// directory and ~/.ssh are then this test's own.
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + tk.home, "SIMPLE_TPM_PK11_TPM=" + tk.tpm.Spec}
	runAs(t, u, env, filepath.Join(binDir, "stpm-bridge"), "register", "--module", modulePath)

	out, err := asUser(t, u, env, filepath.Join(binDir, "stpm-doctor")).CombinedOutput()
	if err != nil {
		t.Fatalf("stpm-doctor: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	for _, l := range lines {
		if !strings.HasPrefix(l, "ok: ") {
			t.Errorf("not ok: %q", l)
		}
	}
	cfg := filepath.Join(tk.dir, "config")
	for _, want := range []string{
		"ok: TPM " + tk.tpm.Spec + " (from SIMPLE_TPM_PK11_TPM)",
		`ok: config "` + cfg + `": 4 keys`,
		`ok: key "pin" (line 4): "` + filepath.Join(tk.dir, "pin.key") + `", ECDSA P-256, loads in this TPM, asks for its PIN when used`,
		"ok: registered with p11-kit in \"" + filepath.Join(tk.home, ".config/pkcs11/modules/simple-tpm-pk11.module") + "\"",
		`ok: p11-kit loads the module, and its token "simple-tpm-pk11" is visible through p11-kit-proxy.so`,
		"ok: ssh: ~/.ssh/config line 2 (Host *): PKCS11Provider " + proxy + ", which loads the module through p11-kit",
		"ok: ssh-agent may load p11-kit-proxy.so, which loads the module (ssh-add -s " + proxy + ")",
	} {
		if !strings.Contains(string(out), want+"\n") && !strings.Contains(string(out), want+";") {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	t.Logf("stpm-doctor on a healthy setup:\n%s", out)
}

// TestDoctorROCA: a key with the ROCA fingerprint, imported into the TPM
// (as stpm-keygen --restore imports a backup), makes stpm-doctor exit 1
// with a problem naming it.
func TestDoctorROCA(t *testing.T) {
	tk := newToken(t, false)
	weak, err := rocatest.Key(2048, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := tpm.ParseSpec(tk.tpm.Spec)
	if err != nil {
		t.Fatal(err)
	}
	var k *keyfile.Key
	if err := tpm.Open(spec).Do(func(c *tpm.Conn) error {
		var err error
		k, err = c.ImportKey(weak, tpm.KeySpec{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	pem, err := k.MarshalPEM()
	if err != nil {
		t.Fatal(err)
	}
	tk.write(t, "infineon.key", pem)
	cfg := tk.path("config")
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("key infineon.key\n"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := tk.run(t, filepath.Join(binDir, "stpm-doctor"))
	var ee *exec.ExitError
	if err == nil || !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("want exit status 1, got %v\n%s", err, out)
	}
	want := "problem: key \"infineon\" (line 4): its RSA modulus has the ROCA fingerprint (CVE-2017-15361): the private key can be computed from the public key\n" +
		"  fix: update the TPM's firmware (Infineon fixed it in 2017), then make a new key with stpm-keygen and replace the public key everywhere it is authorized; ECDSA keys (stpm-keygen -t ecdsa) are not affected\n"
	if !strings.Contains(out, want) || strings.Count(out, "ROCA fingerprint") != 1 {
		t.Errorf("want the imported key, and only it, flagged:\n%s", out)
	}
}

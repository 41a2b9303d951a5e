package tests

import (
	"os"
	"strings"
	"testing"
)

// TestPINNotLogged: with debug logging on, logging in with a right and a
// wrong PIN leaves the PINs out of everything the module writes; a
// config holding key_pin that others can read gets a warning.
func TestPINNotLogged(t *testing.T) {
	need(t, "pkcs11-tool")
	tk := newToken(t, true)
	env := append(append([]string{}, tk.env...), "SIMPLE_TPM_PK11_DEBUG=1")
	run := func(pin string, wantOK bool) string {
		t.Helper()
		cmd := command(t, "pkcs11-tool", "--module", modulePath, "--login", "--pin", pin, "-O")
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if (err == nil) != wantOK {
			t.Fatalf("login with %s: %v\n%s", pin, err, out)
		}
		return string(out)
	}
	out := run(testPIN, true) + run("987654", false)
	if !strings.Contains(out, "debug: C_Login: CKR_OK") || !strings.Contains(out, "C_Login: CKR_PIN_INCORRECT") {
		t.Fatalf("no login in the debug log:\n%s", out)
	}
	for _, pin := range []string{testPIN, "987654"} {
		if strings.Contains(out, pin) {
			t.Errorf("the PIN %s is in the log:\n%s", pin, out)
		}
	}

	cfg := tk.path("config")
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, append(b, []byte("key_pin "+testPIN+"\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := command(t, "pkcs11-tool", "--module", modulePath, "-L")
	cmd.Env = tk.env
	lout, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	want := "warning: \"" + cfg + "\" holds a PIN and is readable by others; run: chmod 600 \"" + cfg + "\""
	if !strings.Contains(string(lout), want) || strings.Contains(string(lout), testPIN) {
		t.Errorf("want %q without the PIN in:\n%s", want, lout)
	}
}

// TestUnreadableConfig: a config the user cannot read leaves the token
// without keys and says why in one line; the program goes on.
func TestUnreadableConfig(t *testing.T) {
	need(t, "pkcs11-tool")
	need(t, "runuser")
	u := testUser(t)
	tk := newToken(t, false)
	openParents(t, tk.home)
	if err := os.Chmod(tk.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The config stays root's and 0600.
	out, err := asUser(t, u, []string{"PATH=/usr/bin:/bin", "SIMPLE_TPM_PK11_CONFIG=" + tk.path("config"),
		"SIMPLE_TPM_PK11_TPM=" + tk.tpm.Spec}, "pkcs11-tool", "--module", modulePath, "-L").CombinedOutput()
	if err != nil {
		t.Fatalf("pkcs11-tool must still run: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "config: ") || !strings.Contains(string(out), "permission denied") ||
		!strings.Contains(string(out), "the token has no keys") {
		t.Errorf("no line about the unreadable config:\n%s", out)
	}
	if strings.Count(string(out), "simple-tpm-pk11[") != 1 {
		t.Errorf("want exactly one log line:\n%s", out)
	}
}

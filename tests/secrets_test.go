package tests

import (
	"fmt"
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
// without keys and says why in one line; the program goes on: loading
// and C_Initialize succeed, the slot is there without a token, and
// nothing is written.
func TestUnreadableConfig(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root to run the module as another user")
		}
		t.Skip("needs root to run the module as another user")
	}
	need(t, "setpriv")
	tk := newToken(t, false)
	openParents(t, tk.home)
	for _, d := range []string{tk.home, tk.dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg := tk.path("config") // root's and 0600
	env := withEnv(tk.env, "SIMPLE_TPM_PK11_CONFIG="+cfg)
	drop := []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}
	var p *probeResult
	assertUnchanged(t, tk.home, func() { p = probe(t, env, drop) })
	p.checkCheap(t, "1")
	for _, call := range []string{"C_GetTokenInfo", "C_OpenSession"} {
		if p.rv(call) != "CKR_TOKEN_NOT_PRESENT" {
			t.Errorf("%s: %s, want CKR_TOKEN_NOT_PRESENT:\n%s", call, p.rv(call), p.stdout)
		}
	}
	if p.rv("C_Finalize") != "CKR_OK" {
		t.Errorf("C_Finalize: %s", p.rv("C_Finalize"))
	}
	want := fmt.Sprintf("error: config: open %s: permission denied; the token has no keys (fix the file or SIMPLE_TPM_PK11_CONFIG)", cfg)
	if len(p.log) != 1 || !strings.HasSuffix(p.log[0], want) {
		t.Errorf("want exactly one log line ending with\n%s\ngot:\n%s", want, strings.Join(p.log, "\n"))
	}
}

package p11kit

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
)

func TestFind(t *testing.T) {
	for name, find := range map[string]func() (string, error){
		"tool": FindTool, "server": FindServer, "client": FindClientModule, "proxy": FindProxy,
	} {
		t.Run(name, func(t *testing.T) {
			p := needFile(t, find)
			if !strings.HasPrefix(p, "/") {
				t.Errorf("%s: %q is not absolute", name, p)
			}
		})
	}
}

func TestFindMissing(t *testing.T) {
	_, err := FindPKCS11Module("no-such-module.so", "some-package")
	var nf *NotFoundError
	if !errors.As(err, &nf) {
		t.Fatalf("err = %v, want *NotFoundError", err)
	}
	msg := err.Error()
	for _, want := range []string{"no-such-module.so", "/usr/lib/*/pkcs11/no-such-module.so", "/usr/lib64/pkcs11/no-such-module.so", "/usr/lib/pkcs11/no-such-module.so"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if !strings.Contains(nf.Hint(), "apt-get install some-package") {
		t.Errorf("hint %q", nf.Hint())
	}
}

// TestFindRejectsForeignArch: a file that is not a shared library for
// this architecture is skipped, and the error says why.
func TestFindRejectsForeignArch(t *testing.T) {
	if err := nativeELF("/etc/passwd"); err == nil {
		t.Error("nativeELF accepted /etc/passwd")
	}
	p := needFile(t, FindClientModule)
	if err := nativeELF(p); err != nil {
		t.Errorf("nativeELF(%s): %v", p, err)
	}
}

func TestClientModuleShellProbe(t *testing.T) {
	needTool(t, "sh")
	probe := ClientModuleShellProbe()
	if strings.Contains(probe, "'") {
		t.Errorf("probe contains a single quote: %s", probe)
	}
	want := needFile(t, FindClientModule)
	// As bridge uses it: inside $(...), and wrapped in '...' for sh -c.
	out, err := exec.Command("sh", "-c", "C=$("+probe+"); printf '[%s]' \"$C\"").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if string(out) != "["+want+"]" {
		t.Errorf("probe printed %q, want [%s]", out, want)
	}
	out, err = exec.Command("sh", "-c", "sh -c '"+probe+"'").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != want {
		t.Errorf("sh -c '...': %q, %v", out, err)
	}
	// Nothing found: no output, status 0.
	empty := strings.ReplaceAll(probe, "p11-kit-client.so", "no-such-module.so")
	out, err = exec.Command("sh", "-c", empty).CombinedOutput()
	if err != nil || len(out) != 0 {
		t.Errorf("probe for a missing file: %q, %v", out, err)
	}
}

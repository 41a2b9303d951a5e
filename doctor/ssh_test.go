package doctor

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseSSHConfig(t *testing.T) {
	data := `# PKCS11Provider /commented/out.so
pkcs11provider /top/level.so
Host work *.example.com
    PKCS11Provider=/quoted/"not".so
  PKCS11PROVIDER = "/with space/lib.so"
Match user me
	PKCS11Provider none
IdentityFile ~/.ssh/id
`
	got := parseSSHConfig([]byte(data))
	want := []providerLine{
		{2, "/top/level.so", ""},
		{4, `/quoted/"not".so`, "Host work *.example.com"},
		{5, "/with space/lib.so", "Host work *.example.com"},
		{7, "none", "Match user me"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestExpandSSHPath(t *testing.T) {
	t.Setenv("STPM_LIBDIR", "/opt/lib")
	for in, want := range map[string]string{
		"~/lib/m.so":           "/home/me/lib/m.so",
		"${STPM_LIBDIR}/m.so":  "/opt/lib/m.so",
		"/a/${STPM_LIBDIR}":    "/a//opt/lib",
		"/plain/~/m.so":        "/plain/~/m.so",
		"/unclosed/${VAR/m.so": "/unclosed/${VAR/m.so",
	} {
		if got := expandSSHPath(in, "/home/me"); got != want {
			t.Errorf("expand %q = %q, want %q", in, got, want)
		}
	}
}

func TestMatchPatternList(t *testing.T) {
	const def = "/usr/lib*/*,/usr/local/lib*/*"
	for _, tc := range []struct {
		path, list string
		want       bool
	}{
		{"/usr/local/lib/libsimple-tpm-pk11.so", def, true},
		{"/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so", def, true},
		{"/usr/lib64/pkcs11/x.so", def, true},
		{"/home/me/src/lib/libsimple-tpm-pk11.so", def, false},
		{"/usr/libexec/x.so", def, true}, // '*' crosses '/', as in OpenSSH
		{"/opt/lib/x.so", def, false},
		{"/opt/lib/x.so", "/opt/lib/?.so", true},
		{"/opt/lib/xy.so", "/opt/lib/?.so", false},
		{"/usr/lib/bad.so", "/usr/lib/*,!/usr/lib/bad.so", false},
		{"/usr/lib/good.so", "/usr/lib/*,!/usr/lib/bad.so", true},
		{"", def, false},
	} {
		if got := matchPatternList(tc.path, tc.list); got != tc.want {
			t.Errorf("match %q against %q = %v", tc.path, tc.list, got)
		}
	}
}

// sshDoctor is a doctor with a home directory and a module file of its own.
func sshDoctor(t *testing.T) (*Doctor, string) {
	t.Helper()
	home := t.TempDir()
	d := New(Options{})
	d.sys.home = func() (string, error) { return home, nil }
	d.module = filepath.Join(t.TempDir(), moduleBase)
	if err := os.WriteFile(d.module, []byte("not really a library"), 0o644); err != nil {
		t.Fatal(err)
	}
	proxy := filepath.Join(t.TempDir(), "p11-kit-proxy.so")
	if err := os.WriteFile(proxy, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	d.sys.findProxy = func() (string, error) { return proxy, nil }
	return d, home
}

func writeSSHConfig(t *testing.T, home, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(home, ".ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".ssh", "config"), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestSSHConfig(t *testing.T) {
	d, home := sshDoctor(t)
	proxy, _ := d.sys.findProxy()
	check := func(name string, want Status, wantMsg string) {
		t.Helper()
		rs := d.sshConfig(home)
		if len(rs) != 1 || rs[0].Status != want || !strings.Contains(rs[0].Msg, wantMsg) {
			t.Errorf("%s: got %+v, want one %v containing %q", name, rs, want, wantMsg)
		}
	}
	check("no config", Warning, "there is no ~/.ssh/config")
	writeSSHConfig(t, home, "Host *\n    IdentityFile ~/.ssh/id_ed25519\n    PKCS11Provider none\n")
	check("no provider", Warning, "names no PKCS11Provider")
	writeSSHConfig(t, home, "Host *\n    PKCS11Provider "+d.module+"\n")
	check("the module", OK, "line 2 (Host *): PKCS11Provider "+d.module+", the module")
	writeSSHConfig(t, home, "PKCS11Provider /nonexistent/libsimple-tpm-pk11.so\n")
	check("missing file", Problem, "PKCS11Provider /nonexistent/libsimple-tpm-pk11.so does not exist")
	writeSSHConfig(t, home, "PKCS11Provider "+proxy+"\n")
	check("proxy, not registered", Problem, "the module is not registered with p11-kit")
	d.registered = &registration{name: "simple-tpm-pk11"}
	check("proxy, registered", OK, "which loads the module through p11-kit")
	other := filepath.Join(home, "opensc-pkcs11.so")
	if err := os.WriteFile(other, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	writeSSHConfig(t, home, "Host work\n  PKCS11Provider ~/opensc-pkcs11.so\n")
	check("another module", Warning, "is another PKCS#11 module")
}

func TestSSHAgent(t *testing.T) {
	d, _ := sshDoctor(t)
	d.sys.agentAllowed = "/usr/lib*/*,/usr/local/lib*/*"
	r := d.sshAgent()
	if r.Status != Warning || !strings.Contains(r.Msg, "ssh-agent refuses to load") ||
		!strings.Contains(r.Fix, "-P '"+filepath.Dir(d.module)+"/*'") {
		t.Errorf("module outside the allowlist: %+v", r)
	}
	d.sys.agentAllowed = filepath.Dir(d.module) + "/*"
	if r := d.sshAgent(); r.Status != OK || !strings.Contains(r.Msg, "ssh-agent may load the module") {
		t.Errorf("module inside the allowlist: %+v", r)
	}
	// Registered: the agent may load p11-kit-proxy.so instead.
	proxy, _ := d.sys.findProxy()
	d.sys.agentAllowed = filepath.Dir(proxy) + "/*"
	d.registered = &registration{name: "simple-tpm-pk11"}
	if r := d.sshAgent(); r.Status != OK || !strings.Contains(r.Msg, "p11-kit-proxy.so, which loads the module") {
		t.Errorf("through the proxy: %+v", r)
	}
	d.module = ""
	if r := d.sshAgent(); r.Status != Skipped {
		t.Errorf("no module: %+v", r)
	}
}

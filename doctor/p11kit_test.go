package doctor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/p11kit"
)

// p11Doctor is a doctor whose module and p11-kit module directory are
// temporary, so the machine's own p11-kit setup plays no part.
func p11Doctor(t *testing.T) (d *Doctor, moduleDir string) {
	t.Helper()
	mod := filepath.Join(t.TempDir(), moduleBase)
	if err := os.WriteFile(mod, []byte("not really a library"), 0o644); err != nil {
		t.Fatal(err)
	}
	d = New(Options{Module: mod})
	moduleDir = t.TempDir()
	d.sys.moduleDirs = func() []string { return []string{moduleDir, filepath.Join(moduleDir, "absent")} }
	d.sys.findTool = func() (string, error) { return "/usr/bin/p11-kit", nil }
	d.sys.findProxy = func() (string, error) { return "/usr/lib/p11-kit-proxy.so", nil }
	d.sys.findServer = func() (string, error) { return "/usr/libexec/p11-kit/p11-kit-server", nil }
	d.sys.findClient = func() (string, error) { return "/usr/lib/pkcs11/p11-kit-client.so", nil }
	return d, moduleDir
}

// find returns the results whose message contains s.
func find(rs []Result, s string) []Result {
	var out []Result
	for _, r := range rs {
		if strings.Contains(r.Msg, s) {
			out = append(out, r)
		}
	}
	return out
}

func wantOne(t *testing.T, rs []Result, status Status, msg, fix string) {
	t.Helper()
	got := find(rs, msg)
	if len(got) != 1 || got[0].Status != status || !strings.Contains(got[0].Fix, fix) {
		t.Errorf("want one %v containing %q with fix %q, got:\n%s", status, msg, fix, format(rs))
	}
}

func format(rs []Result) string {
	var b strings.Builder
	for _, r := range rs {
		b.WriteString(r.String())
	}
	return b.String()
}

func TestP11KitMissing(t *testing.T) {
	d, _ := p11Doctor(t)
	d.sys.findTool = func() (string, error) {
		return "", &p11kit.NotFoundError{What: "the p11-kit command", Tried: []string{"$PATH", "/usr/bin/p11-kit"}, Package: "p11-kit"}
	}
	d.sys.findProxy = func() (string, error) { t.Error("looked for the proxy without p11-kit"); return "", os.ErrNotExist }
	rs := d.CheckP11Kit()
	wantOne(t, rs, Problem, "p11-kit is not installed", "install the p11-kit package (apt-get install p11-kit)")
	if rs := d.CheckBridge(); len(rs) != 1 || rs[0].Status != Skipped {
		t.Errorf("bridge without p11-kit:\n%s", format(rs))
	}
}

func TestP11KitNotRegistered(t *testing.T) {
	d, dir := p11Doctor(t)
	// Other modules' files are no registration of ours.
	if err := os.WriteFile(filepath.Join(dir, "opensc.module"), []byte("module: opensc-pkcs11.so\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rs := d.CheckP11Kit()
	wantOne(t, rs, OK, "module: "+d.opts.Module, "")
	wantOne(t, rs, Warning, "the module is not registered with p11-kit", "stpm-bridge register")
	if d.registered != nil {
		t.Errorf("registered: %+v", d.registered)
	}
}

func TestP11KitRegistered(t *testing.T) {
	d, dir := p11Doctor(t)
	file, err := p11kit.Register(dir, p11kit.ModuleFile{Name: "simple-tpm-pk11", Module: d.opts.Module, Critical: new(bool)}, false)
	if err != nil {
		t.Fatal(err)
	}
	// A remote module and a hidden temporary file are not read as ours.
	for name, text := range map[string]string{
		"simple-tpm-pk11-bridge.module": "remote: unix:path=/tmp/x.sock\n",
		".simple-tpm-pk11.module.tmp1":  "garbage\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rs := d.CheckP11Kit()
	wantOne(t, rs, OK, "registered with p11-kit in "+`"`+file+`"`, "")
	if len(find(rs, "not registered")) != 0 || d.registered == nil || d.registered.name != "simple-tpm-pk11" {
		t.Errorf("registration not found:\n%s", format(rs))
	}
	// The TPM was not checked here, so the module is not loaded.
	wantOne(t, rs, Skipped, "loading the module: not tried, the TPM is not usable", "")
}

func TestP11KitBadRegistrations(t *testing.T) {
	d, dir := p11Doctor(t)
	files := map[string]string{
		// A line p11-kit cannot parse makes it load nothing at all.
		"broken.module": "module: x.so\nthis is no key value line\n",
		// Ours, but at a path that is gone, and critical.
		"old-stpm.module": "module: /nonexistent/lib/" + moduleBase + "\ncritical: yes\n",
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rs := d.CheckP11Kit()
	wantOne(t, rs, Problem, "broken.module: module file line 2", "correct or remove the file")
	wantOne(t, rs, Problem, "registers /nonexistent/lib/"+moduleBase+" with p11-kit, which does not exist", "stpm-bridge register -f")
	wantOne(t, rs, Warning, "says critical: yes", "critical: no")
}

func TestBridgeCheck(t *testing.T) {
	d, _ := p11Doctor(t)
	d.p11kitTool = "/usr/bin/p11-kit"
	if rs := d.CheckBridge(); len(rs) != 1 || rs[0].Status != OK {
		t.Errorf("all there:\n%s", format(rs))
	}
	d.sys.findServer = func() (string, error) {
		return "", &p11kit.NotFoundError{What: "p11-kit-server", Package: "p11-kit", Other: "Fedora: p11-kit-server"}
	}
	d.sys.findClient = func() (string, error) {
		return "", &p11kit.NotFoundError{What: "p11-kit-client.so", Package: "p11-kit-modules"}
	}
	rs := d.CheckBridge()
	wantOne(t, rs, Warning, "p11-kit server is missing", "Fedora: p11-kit-server")
	wantOne(t, rs, Warning, "p11-kit-client.so is missing", "p11-kit-modules")
}

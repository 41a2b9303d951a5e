package p11kit

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// listOutput024 is real "p11-kit list-modules" output of p11-kit 0.24.1
// on Debian 12 (as uid 65534 with two remote modules in
// ~/.config/pkcs11/modules, plus root's softhsm2 token), including the
// "(null)" path of remote modules and an empty token label.
const listOutput024 = `p11-kit-trust: p11-kit-trust.so
    library-description: PKCS#11 Kit Trust Module
    library-manufacturer: PKCS#11 Kit
    library-version: 0.24
    token: System Trust
        manufacturer: PKCS#11 Kit
        model: p11-kit-trust
        serial-number: 1
        hardware-version: 0.24
        flags:
               write-protected
               token-initialized
opensc-pkcs11: opensc-pkcs11.so
    library-description: OpenSC smartcard framework
    library-manufacturer: OpenSC Project
    library-version: 0.23
remmod: (null)
    library-description: PKCS#11 Kit Proxy Module
    library-manufacturer: PKCS#11 Kit
    library-version: 1.1
    token: System Trust
        manufacturer: PKCS#11 Kit
        model: p11-kit-trust
        serial-number: 1
        hardware-version: 0.24
        flags:
               write-protected
               token-initialized
softhsm2: /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so
    library-description: Implementation of PKCS11
    library-manufacturer: SoftHSM
    library-version: 2.6
    token: 
        manufacturer: SoftHSM project
        model: SoftHSM v2
        serial-number: 
        hardware-version: 2.6
        firmware-version: 2.6
        flags:
               rng
               login-required
               restore-key-not-needed
               so-pin-locked
               so-pin-to-be-changed
`

func TestParseListModules024(t *testing.T) {
	mods, err := ParseListModules(listOutput024)
	if err != nil {
		t.Fatal(err)
	}
	trustTok := ListedToken{Label: "System Trust", Manufacturer: "PKCS#11 Kit", Model: "p11-kit-trust", Serial: "1",
		HardwareVersion: "0.24", Flags: []string{"write-protected", "token-initialized"}}
	want := []ListedModule{
		{Name: "p11-kit-trust", Path: "p11-kit-trust.so", Description: "PKCS#11 Kit Trust Module",
			Manufacturer: "PKCS#11 Kit", Version: "0.24", Tokens: []ListedToken{trustTok}},
		{Name: "opensc-pkcs11", Path: "opensc-pkcs11.so", Description: "OpenSC smartcard framework",
			Manufacturer: "OpenSC Project", Version: "0.23"},
		{Name: "remmod", Description: "PKCS#11 Kit Proxy Module", Manufacturer: "PKCS#11 Kit", Version: "1.1",
			Tokens: []ListedToken{trustTok}},
		{Name: "softhsm2", Path: "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so", Description: "Implementation of PKCS11",
			Manufacturer: "SoftHSM", Version: "2.6", Tokens: []ListedToken{{Manufacturer: "SoftHSM project",
				Model: "SoftHSM v2", HardwareVersion: "2.6", FirmwareVersion: "2.6",
				Flags: []string{"rng", "login-required", "restore-key-not-needed", "so-pin-locked", "so-pin-to-be-changed"}}}},
	}
	if !reflect.DeepEqual(mods, want) {
		t.Errorf("got  %+v\nwant %+v", mods, want)
	}
}

// TestParseListModulesNewer: the layout of later p11-kit releases, with
// "module: NAME", "path:" and "uri:" lines.
func TestParseListModulesNewer(t *testing.T) {
	out := "module: p11-kit-trust\n    path: /usr/lib/p11-kit-trust.so\n    uri: pkcs11:library-description=X\n" +
		"    library-description: X\n    token: System Trust\n        uri: pkcs11:token=System%20Trust\n" +
		"        flags:\n               write-protected\n"
	mods, err := ParseListModules(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(mods) != 1 || mods[0].Name != "p11-kit-trust" || mods[0].Path != "/usr/lib/p11-kit-trust.so" ||
		mods[0].URI != "pkcs11:library-description=X" || len(mods[0].Tokens) != 1 ||
		mods[0].Tokens[0].URI != "pkcs11:token=System%20Trust" || !reflect.DeepEqual(mods[0].Tokens[0].Flags, []string{"write-protected"}) {
		t.Errorf("%+v", mods)
	}
	if _, err := ParseListModules("    indented first\n"); err == nil {
		t.Error("accepted output starting with an indented line")
	}
	if mods, err := ParseListModules(""); err != nil || len(mods) != 0 {
		t.Errorf("empty output: %v, %v", mods, err)
	}
}

func TestListModulesSystem(t *testing.T) {
	needTool(t, "p11-kit")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := ListModules(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	mods, err := ParseListModules(out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if _, err := os.Stat("/usr/share/p11-kit/modules/p11-kit-trust.module"); err != nil {
		t.Logf("trust module not registered: %d modules listed", len(mods))
		return
	}
	if m := findListed(mods, "p11-kit-trust"); m == nil || len(m.Tokens) == 0 || m.Tokens[0].Label != "System Trust" {
		t.Errorf("p11-kit-trust with token System Trust not in %+v", mods)
	}
}

func findListed(mods []ListedModule, name string) *ListedModule {
	for i := range mods {
		if mods[i].Name == name {
			return &mods[i]
		}
	}
	return nil
}

// TestListModulesUserDir checks UserModuleDir's claims against p11-kit
// itself: a module file Register wrote into an unprivileged user's
// directory ($HOME/.config/pkcs11/modules, or $XDG_CONFIG_HOME/pkcs11/
// modules) is listed for that user, and root ignores it. The module is
// "remote: unix:path=SOCKET" to a p11-kit server exporting the trust
// module, so this also checks the remote form through the client side.
func TestListModulesUserDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run p11-kit as uid 65534")
	}
	needTool(t, "p11-kit", "setpriv")
	base := sharedDir(t)
	sock := filepath.Join(base, "trust.sock")
	srv := startTrust(t, sock, "pkcs11:")
	// The server makes its socket 0711: only root could connect.
	if err := os.Chmod(sock, 0o777); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(base, "home")
	xdg := filepath.Join(base, "xdg")
	for _, d := range []string{home, xdg} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	getenv := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	homeDir, err := userModuleDir(65534, 65534, getenv(map[string]string{"HOME": home}))
	if err != nil {
		t.Fatal(err)
	}
	xdgDir, err := userModuleDir(65534, 65534, getenv(map[string]string{"HOME": home, "XDG_CONFIG_HOME": xdg}))
	if err != nil {
		t.Fatal(err)
	}
	for dir, name := range map[string]string{homeDir: "stpm-test-home", xdgDir: "stpm-test-xdg"} {
		if _, err := Register(dir, ModuleFile{Name: name, Comment: "p11kit test", Remote: srv.Address, Critical: new(bool)}, false); err != nil {
			t.Fatal(err)
		}
	}
	chownAll(t, home, 65534)
	chownAll(t, xdg, 65534)

	list := func(asUser bool, extraEnv ...string) (string, error) {
		args := []string{"p11-kit", "list-modules"}
		if asUser {
			args = append([]string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}, args...)
		}
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=" + home}, extraEnv...)
		cmd.Dir = base
		out, err := cmd.Output()
		return string(out), err
	}
	names := func(out string) []string {
		t.Helper()
		mods, err := ParseListModules(out)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		var n []string
		for _, m := range mods {
			n = append(n, m.Name)
			if strings.HasPrefix(m.Name, "stpm-test-") {
				if m.Path != "" || len(m.Tokens) != 1 || m.Tokens[0].Label != "System Trust" {
					t.Errorf("remote module listed as %+v", m)
				}
			}
		}
		return n
	}
	has := func(list []string, s string) bool {
		for _, x := range list {
			if x == s {
				return true
			}
		}
		return false
	}

	out, err := list(true)
	if err != nil {
		t.Fatalf("as uid 65534: %v\n%s", err, out)
	}
	if n := names(out); !has(n, "stpm-test-home") || has(n, "stpm-test-xdg") {
		t.Errorf("as uid 65534 with HOME: modules %v, want stpm-test-home and not stpm-test-xdg", n)
	}
	out, err = list(true, "XDG_CONFIG_HOME="+xdg)
	if err != nil {
		t.Fatalf("as uid 65534 with XDG_CONFIG_HOME: %v\n%s", err, out)
	}
	if n := names(out); has(n, "stpm-test-home") || !has(n, "stpm-test-xdg") {
		t.Errorf("as uid 65534 with XDG_CONFIG_HOME: modules %v, want stpm-test-xdg only", n)
	}
	out, err = list(false, "XDG_CONFIG_HOME="+xdg)
	if err != nil {
		t.Fatalf("as root: %v\n%s", err, out)
	}
	if n := names(out); has(n, "stpm-test-home") || has(n, "stpm-test-xdg") {
		t.Errorf("as root: modules %v include the user's", n)
	}

	// One bad line in any module file: p11-kit lists nothing and says
	// nothing, exit status 1.
	bad := filepath.Join(homeDir, "broken.module")
	if err := os.WriteFile(bad, []byte("not a key value line\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = list(true)
	if err == nil || out != "" {
		t.Errorf("with a broken module file: %v, %q; want failure and no output (p11-kit 0.24)", err, out)
	}
	if err := os.Remove(bad); err != nil {
		t.Fatal(err)
	}
	for dir, name := range map[string]string{homeDir: "stpm-test-home", xdgDir: "stpm-test-xdg"} {
		if removed, err := Unregister(dir, name); !removed || err != nil {
			t.Errorf("Unregister %s: %v, %v", name, removed, err)
		}
	}
}

func chownAll(t *testing.T, root string, id int) {
	t.Helper()
	err := filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, id, id)
	})
	if err != nil {
		t.Fatal(err)
	}
}

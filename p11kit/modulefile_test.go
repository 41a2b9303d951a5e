package p11kit

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestModuleFileMarshal(t *testing.T) {
	no := false
	m := ModuleFile{
		Name:      "stpm",
		Comment:   "simple-tpm-pk11: TPM keys\nsecond line",
		Module:    "/usr/lib/x.so",
		Critical:  &no,
		DisableIn: []string{"firefox", "thunderbird-bin"},
		Extra:     []Field{{"priority", "5"}, {"x-custom", "a: b"}},
		WrittenBy: Marker,
	}
	want := "# simple-tpm-pk11: TPM keys\n# second line\n" +
		"module: /usr/lib/x.so\ncritical: no\ndisable-in: firefox, thunderbird-bin\n" +
		"priority: 5\nx-custom: a: b\nx-written-by: simple-tpm-pk11\n"
	if got := string(m.Marshal()); got != want {
		t.Errorf("Marshal:\n%s\nwant:\n%s", got, want)
	}
	if err := m.Validate(); err != nil {
		t.Error(err)
	}
	back, err := ParseModuleFile(m.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	back.Name = m.Name
	if !reflect.DeepEqual(back, m) {
		t.Errorf("round trip:\n%#v\nwant\n%#v", back, m)
	}
	// A line break in a value never becomes a second line.
	m.Module = "/a\nremote: |evil"
	if err := m.Validate(); err == nil {
		t.Error("Validate accepted a line break")
	}
	if strings.Count(string(m.Marshal()), "\nremote:") != 0 {
		t.Errorf("Marshal wrote a line break:\n%s", m.Marshal())
	}
}

func TestModuleFileRemote(t *testing.T) {
	yes := true
	m := ModuleFile{Name: "r", Remote: "unix:path=/run/x.sock", Critical: &yes, EnableIn: []string{"ssh"}}
	if got, want := string(m.Marshal()), "remote: unix:path=/run/x.sock\ncritical: yes\nenable-in: ssh\n"; got != want {
		t.Errorf("got %q want %q", got, want)
	}
	if err := m.Validate(); err != nil {
		t.Error(err)
	}
}

// TestParseSystemModuleFiles: p11-kit's own module files round-trip.
func TestParseSystemModuleFiles(t *testing.T) {
	files, err := filepath.Glob("/usr/share/p11-kit/modules/*.module")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		missing(t, "no module files in /usr/share/p11-kit/modules")
	}
	for _, f := range files {
		m, err := ReadModuleFile(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if m.Module == "" && m.Remote == "" {
			t.Errorf("%s: no module: %#v", f, m)
		}
		back, err := ParseModuleFile(m.Marshal())
		if err != nil {
			t.Errorf("%s: reparse: %v", f, err)
			continue
		}
		back.Name = m.Name
		if !reflect.DeepEqual(back, m) {
			t.Errorf("%s: round trip:\n%#v\nwant\n%#v", f, back, m)
		}
	}
}

func TestParseModuleFile(t *testing.T) {
	m, err := ParseModuleFile([]byte("  # top\n\n#second\nmodule :  /x.so  \r\ncritical: YES\nenable-in: a,b  c\n# later comment\nmodule: /y.so\n"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Comment != "top\nsecond" || m.Module != "/y.so" || m.Critical == nil || !*m.Critical ||
		!reflect.DeepEqual(m.EnableIn, []string{"a", "b", "c"}) {
		t.Errorf("%#v", m)
	}
	for _, bad := range []string{"garbage line\n", "module: x\ncritical: maybe\n", "bad key!: x\n"} {
		if _, err := ParseModuleFile([]byte(bad)); err == nil {
			t.Errorf("ParseModuleFile(%q) accepted it", bad)
		}
	}
}

func TestValidate(t *testing.T) {
	ok := ModuleFile{Name: "a", Module: "/a.so"}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, m := range map[string]ModuleFile{
		"no name":        {Module: "/a.so"},
		"hidden name":    {Name: ".a", Module: "/a.so"},
		"slash":          {Name: "a/b", Module: "/a.so"},
		"neither":        {Name: "a"},
		"both":           {Name: "a", Module: "/a.so", Remote: "|x"},
		"bad remote":     {Name: "a", Remote: "tcp:1.2.3.4"},
		"enable+disable": {Name: "a", Module: "/a.so", EnableIn: []string{"x"}, DisableIn: []string{"y"}},
		"comma in prog":  {Name: "a", Module: "/a.so", EnableIn: []string{"x,y"}},
		"extra module":   {Name: "a", Module: "/a.so", Extra: []Field{{"module", "/b.so"}}},
		"bad extra key":  {Name: "a", Module: "/a.so", Extra: []Field{{"a b", "c"}}},
		"spaces":         {Name: "a", Module: " /a.so"},
	} {
		if err := m.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %#v", name, m)
		}
	}
}

func TestRegisterUnregister(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "config", "pkcs11", "modules") // created by Register
	m := ModuleFile{Name: "stpm", Comment: "test", Module: "/usr/lib/stpm.so", Critical: new(bool)}
	path, err := Register(dir, m, false)
	if err != nil {
		t.Fatal(err)
	}
	if path != filepath.Join(dir, "stpm.module") {
		t.Errorf("path %s", path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode())
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm()&0o755 != 0o755 && di.Mode().Perm() != 0o755 {
		t.Errorf("dir mode %v", di.Mode())
	}
	got, err := ReadModuleFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m.WrittenBy = Marker
	if !reflect.DeepEqual(got, m) {
		t.Errorf("read back %#v\nwant %#v", got, m)
	}
	onlyFiles := func(want ...string) {
		t.Helper()
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		if !reflect.DeepEqual(names, want) {
			t.Errorf("files %v, want %v (no temporary files left)", names, want)
		}
	}
	onlyFiles("stpm.module")

	// Same again: fine. Changed: ours, so replaced.
	if _, err := Register(dir, m, false); err != nil {
		t.Fatal(err)
	}
	m.Module = "/usr/lib/other.so"
	if _, err := Register(dir, m, false); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadModuleFile(path); err != nil || got.Module != "/usr/lib/other.so" {
		t.Fatalf("after update: %#v, %v", got, err)
	}

	// A file we did not write is neither replaced nor removed.
	foreign := filepath.Join(dir, "theirs.module")
	const theirs = "module: /usr/lib/theirs.so\n"
	if err := os.WriteFile(foreign, []byte(theirs), 0o644); err != nil {
		t.Fatal(err)
	}
	mt := ModuleFile{Name: "theirs", Module: "/usr/lib/mine.so"}
	var fe *ForeignFileError
	if _, err := Register(dir, mt, false); !errors.As(err, &fe) {
		t.Errorf("Register over a foreign file: %v, want *ForeignFileError", err)
	}
	removed, err := Unregister(dir, "theirs")
	if removed || !errors.As(err, &fe) {
		t.Errorf("Unregister of a foreign file: %v, %v", removed, err)
	}
	if data, err := os.ReadFile(foreign); err != nil || string(data) != theirs {
		t.Errorf("foreign file changed: %q, %v", data, err)
	}
	// Unparsable: also foreign.
	if err := os.WriteFile(foreign, []byte("garbage\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if removed, err := Unregister(dir, "theirs"); removed || !errors.As(err, &fe) {
		t.Errorf("Unregister of a garbage file: %v, %v", removed, err)
	}
	// force overwrites, and then it is ours.
	if _, err := Register(dir, mt, true); err != nil {
		t.Fatal(err)
	}
	if removed, err := Unregister(dir, "theirs"); !removed || err != nil {
		t.Errorf("Unregister after force: %v, %v", removed, err)
	}

	if removed, err := Unregister(dir, "stpm"); !removed || err != nil {
		t.Errorf("Unregister: %v, %v", removed, err)
	}
	if removed, err := Unregister(dir, "stpm"); removed || err != nil {
		t.Errorf("second Unregister: %v, %v", removed, err)
	}
	onlyFiles()
	if _, err := Unregister(dir, "../x"); err == nil {
		t.Error("Unregister accepted ../x")
	}
	if _, err := Register(dir, ModuleFile{Name: "bad"}, false); err == nil {
		t.Error("Register accepted a file without module or remote")
	}
}

func TestUserModuleDir(t *testing.T) {
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	for _, c := range []struct {
		uid, euid int
		getenv    func(string) string
		want      string
		err       bool
	}{
		{0, 0, env("HOME", "/root"), SystemModuleDir, false},
		{1000, 0, env("HOME", "/home/u"), SystemModuleDir, false},
		{1000, 1001, env("HOME", "/home/u"), SystemModuleDir, false}, // setuid: p11-kit skips user config
		{1000, 1000, env("HOME", "/home/u"), "/home/u/.config/pkcs11/modules", false},
		{1000, 1000, env("HOME", "/home/u", "XDG_CONFIG_HOME", "/x"), "/x/pkcs11/modules", false},
		{1000, 1000, env("HOME", "/home/u", "XDG_CONFIG_HOME", "rel"), "", true},
		{1000, 1000, env("HOME", "rel"), "", true},
	} {
		got, err := userModuleDir(c.uid, c.euid, c.getenv)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("uid %d euid %d: %q, %v; want %q (error %v)", c.uid, c.euid, got, err, c.want, c.err)
		}
	}
	// No HOME: the passwd entry, as p11-kit does.
	got, err := userModuleDir(65534, 65534, env())
	if err != nil {
		t.Logf("no passwd entry for 65534: %v", err)
	} else if !strings.HasSuffix(got, "/.config/pkcs11/modules") {
		t.Errorf("no HOME: %q", got)
	}
	if d, err := UserModuleDir(); err != nil || d == "" {
		t.Errorf("UserModuleDir: %q, %v", d, err)
	}
}

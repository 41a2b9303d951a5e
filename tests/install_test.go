package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMakeInstall: make install puts the commands, the module, a p11-kit
// module file naming the installed module path (not DESTDIR's), the man
// pages, the bash completions and the systemd user unit (running the
// installed stpm-bridge) where they belong; make uninstall removes every
// file again. Once with PREFIX=/usr, where p11-kit finds the module file,
// once with another PREFIX and LIBDIR, as the Debian package uses it.
func TestMakeInstall(t *testing.T) {
	need(t, "make")
	need(t, "go-md2man")
	for _, tc := range []struct {
		name, prefix, libdir string
	}{
		{"usr", "/usr", ""},
		{"opt-libdir", "/opt/stpm", "/opt/stpm/lib/pkcs11"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testInstall(t, tc.prefix, tc.libdir)
		})
	}
}

func testInstall(t *testing.T, prefix, libdir string) {
	dest := t.TempDir()
	vars := []string{"PREFIX=" + prefix, "DESTDIR=" + dest}
	if libdir != "" {
		vars = append(vars, "LIBDIR="+libdir)
	} else {
		libdir = prefix + "/lib"
	}
	run := func(target string) {
		t.Helper()
		cmd := command(t, "make", append([]string{"-C", "..", "--no-print-directory", target}, vars...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make %s: %v\n%s", target, err, out)
		}
	}
	run("install")
	root := filepath.Join(dest, prefix)
	want := []string{filepath.Join(dest, libdir, "libsimple-tpm-pk11.so"), filepath.Join(root, "lib/systemd/user/stpm-bridge.service")}
	for _, c := range sourceCommands(t) {
		want = append(want, filepath.Join(root, "bin", c), filepath.Join(root, "share/bash-completion/completions", c))
	}
	for _, src := range manSources(t) {
		name, sec := manName(src)
		want = append(want, filepath.Join(root, "share/man/man"+sec, name+"."+sec))
	}
	for _, f := range want {
		if fi, err := os.Stat(f); err != nil {
			t.Errorf("not installed: %v", err)
		} else if perm := fi.Mode().Perm(); perm&0o644 != 0o644 || perm&0o022 != 0 {
			t.Errorf("%s has mode %v", f, fi.Mode())
		}
	}
	mf, err := os.ReadFile(filepath.Join(root, "share/p11-kit/modules/simple-tpm-pk11.module"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mf), "\nmodule: "+libdir+"/libsimple-tpm-pk11.so\n") || !strings.Contains(string(mf), "\ncritical: no\n") {
		t.Errorf("module file:\n%s", mf)
	}
	unit, err := os.ReadFile(filepath.Join(root, "lib/systemd/user/stpm-bridge.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "\nExecStart="+prefix+"/bin/stpm-bridge serve -f ") {
		t.Errorf("the installed unit does not run %s/bin/stpm-bridge:\n%s", prefix, unit)
	}

	run("uninstall")
	var left []string
	if err := filepath.Walk(dest, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			left = append(left, p)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("left after uninstall: %v", left)
	}
}

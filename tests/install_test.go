package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMakeInstall: make install puts the commands, the module and a
// p11-kit module file naming the installed module path (not DESTDIR's)
// where p11-kit looks for a PREFIX=/usr install; make uninstall removes
// them all.
func TestMakeInstall(t *testing.T) {
	need(t, "make")
	dest := t.TempDir()
	run := func(target string) {
		t.Helper()
		cmd := exec.Command("make", "-C", "..", "--no-print-directory", target, "PREFIX=/usr", "DESTDIR="+dest)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make %s: %v\n%s", target, err, out)
		}
	}
	run("install")
	for _, f := range []string{"bin/stpm-keygen", "bin/stpm-sign", "bin/stpm-verify", "bin/stpm-bridge", "lib/libsimple-tpm-pk11.so"} {
		if _, err := os.Stat(filepath.Join(dest, "usr", f)); err != nil {
			t.Errorf("%s not installed: %v", f, err)
		}
	}
	mf, err := os.ReadFile(filepath.Join(dest, "usr/share/p11-kit/modules/simple-tpm-pk11.module"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mf), "\nmodule: /usr/lib/libsimple-tpm-pk11.so\n") || !strings.Contains(string(mf), "\ncritical: no\n") {
		t.Errorf("module file:\n%s", mf)
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

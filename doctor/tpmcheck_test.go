package doctor

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/tpm"
)

// isolate keeps the user's own config, TPM and module out of a test.
func isolate(t *testing.T) (home string) {
	t.Helper()
	home = t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("SIMPLE_TPM_PK11_CONFIG", "")
	t.Setenv("SIMPLE_TPM_PK11_TPM", "")
	t.Setenv("SIMPLE_TPM_PK11_MODULE", "")
	return home
}

// fakeTPM answers every command with one fixed response.
type fakeTPM struct{ rsp []byte }

func (f fakeTPM) Send([]byte) ([]byte, error) { return f.rsp, nil }

// tpm12BadTag is a TPM 1.2's answer to a TPM 2.0 command: TPM_BADTAG.
var tpm12BadTag = []byte{0x00, 0xc4, 0, 0, 0, 10, 0, 0, 0, 0x1e}

func TestTPM12BySysfs(t *testing.T) {
	isolate(t)
	sysfs := t.TempDir()
	if err := os.MkdirAll(filepath.Join(sysfs, "tpm0"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sysfs, "tpm0", "tpm_version_major"), []byte("1\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	d := New(Options{TPM: "device:/dev/tpm0"})
	d.sys.sysfsTPM = sysfs
	rs := d.CheckTPM()
	wantOne(t, rs, Problem, "/dev/tpm0 is a TPM 1.2, which is not supported", "needs a TPM 2.0")
	if d.tpmOK {
		t.Error("a TPM 1.2 passed as usable")
	}
	if rs := d.CheckParent(); len(rs) != 1 || rs[0].Status != Skipped {
		t.Errorf("parent after a TPM 1.2:\n%s", format(rs))
	}
	// A TPM 2.0 in sysfs is opened and asked (and here is missing).
	if err := os.WriteFile(filepath.Join(sysfs, "tpm0", "tpm_version_major"), []byte("2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d = New(Options{TPM: "device:/dev/tpm0"})
	d.sys.sysfsTPM = sysfs
	d.sys.openTPM = func(tpm.Spec) *tpm.TPM { return tpm.FromTransport(fakeTPM{tpm12BadTag}) }
	rs = d.CheckTPM()
	if len(find(rs, "is a TPM 1.2")) != 0 || len(find(rs, "answers as a TPM 1.2")) != 1 {
		t.Errorf("sysfs says 2.0, the device answers as 1.2:\n%s", format(rs))
	}
}

func TestTPM12ByResponseTag(t *testing.T) {
	isolate(t)
	d := New(Options{TPM: "device:/dev/tpm7"})
	d.sys.sysfsTPM = t.TempDir()
	d.sys.openTPM = func(tpm.Spec) *tpm.TPM { return tpm.FromTransport(fakeTPM{tpm12BadTag}) }
	rs := d.CheckTPM()
	wantOne(t, rs, Problem, "answers as a TPM 1.2, which is not supported", "needs a TPM 2.0")
	if d.tpmOK {
		t.Error("a TPM 1.2 passed as usable")
	}
}

func TestBadSpec(t *testing.T) {
	isolate(t)
	d := New(Options{TPM: "tabrmd:"})
	rs := d.CheckTPM()
	if len(rs) != 1 || rs[0].Status != Problem || !strings.Contains(rs[0].Msg, `bad TPM spec "tabrmd:"`) ||
		!strings.Contains(rs[0].Fix, "swtpm:path=SOCKET") {
		t.Errorf("bad spec:\n%s", format(rs))
	}
	if rs := d.CheckWeaknesses(); len(find(rs, "TPM-Fail")) != 1 || find(rs, "TPM-Fail")[0].Status != Skipped {
		t.Errorf("weaknesses without a TPM:\n%s", format(rs))
	}
}

// TestNoTPM: a device that does not exist, and a swtpm that is not
// running, are problems naming what was tried, and what needs the TPM is
// skipped rather than failed again.
func TestNoTPM(t *testing.T) {
	isolate(t)
	dir := t.TempDir()
	for _, tc := range []struct{ spec, msg, fix string }{
		{"device:" + dir + "/tpmrm0", "no TPM at " + dir + "/tpmrm0", "ls -l /dev/tpm*"},
		{"swtpm:path=" + dir + "/swtpm.sock", "swtpm not reachable at swtpm:path=" + dir + "/swtpm.sock: no such file or directory", "start swtpm"},
		{"swtpm:host=127.0.0.1,port=1", "swtpm not reachable at swtpm:host=127.0.0.1,port=1: connection refused", "start swtpm"},
	} {
		d := New(Options{TPM: tc.spec})
		rs := d.CheckTPM()
		wantOne(t, rs, Problem, tc.msg, tc.fix)
		if rs := d.CheckParent(); len(rs) != 1 || rs[0].Status != Skipped {
			t.Errorf("%s: parent:\n%s", tc.spec, format(rs))
		}
	}
}

// TestPermissionFix: the fix for a device this user may not open follows
// the device's group and mode.
func TestPermissionFix(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file to another group")
	}
	dev := filepath.Join(t.TempDir(), "tpmrm0")
	if err := os.WriteFile(dev, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := permissionFix(dev); !strings.Contains(got, "install the tpm-udev package") {
		t.Errorf("root-only device: %q", got)
	}
	g, err := user.LookupGroup("tss")
	if err != nil {
		t.Skipf("no tss group here: %v", err)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dev, 0, gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dev, 0o660); err != nil {
		t.Fatal(err)
	}
	want := "add your user to the tss group ('sudo usermod -aG tss $USER'), then log in again"
	if got := permissionFix(dev); got != want {
		t.Errorf("tss device: %q, want %q", got, want)
	}
	if got := permissionFix(filepath.Join(dev, "missing")); got != "" {
		t.Errorf("missing device: %q", got)
	}
}

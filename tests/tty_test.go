package tests

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/internal/swtpmtest"
	"golang.org/x/sys/unix"
)

// openPTY returns the master and the slave of a new pseudo-terminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// terminal collects what a program writes to its terminal.
type terminal struct{ lockedBuffer }

// waitFor waits until the terminal shows s.
func (tm *terminal) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(tm.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("the terminal never showed %q; it shows:\n%s", s, tm.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPINPromptNoEcho: stpm-keygen -p and stpm-sign ask for the PIN on
// the controlling terminal (not standard input) and the terminal does not
// echo it. Each answer is typed only after its prompt shows, as a person
// would; typeahead before a prompt is echoed by any terminal.
func TestPINPromptNoEcho(t *testing.T) {
	sw := swtpmtest.Start(t, swtpmtest.Options{TCP: true})
	dir := t.TempDir()
	data := filepath.Join(dir, "data.txt")
	if err := os.WriteFile(data, []byte("data\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const pin = "s3cret-4711"
	for _, tc := range []struct {
		name    string
		args    []string
		prompts []string
	}{
		{"stpm-keygen", []string{"-t", "ecdsa", "-p", "-o", filepath.Join(dir, "p.key")}, []string{"Enter new PIN for", "Again"}},
		{"stpm-sign", []string{"-k", filepath.Join(dir, "p.key"), "-f", data, "-o", filepath.Join(dir, "p.sig")}, []string{"Enter PIN"}},
	} {
		master, slave := openPTY(t)
		tm := &terminal{}
		copied := make(chan struct{})
		go func() {
			defer close(copied)
			_, _ = io.Copy(tm, master) // ends with EIO once the slave side is gone
		}()
		cmd := command(t, filepath.Join(binDir, tc.name), tc.args...)
		cmd.Env = append(os.Environ(), "SIMPLE_TPM_PK11_TPM="+sw.Spec, "HOME="+dir)
		cmd.Stdin, cmd.Stdout = slave, slave
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for _, p := range tc.prompts {
			tm.waitFor(t, p)
			// ReadPassword turns echo off right after the prompt.
			time.Sleep(200 * time.Millisecond)
			if _, err := master.WriteString(pin + "\n"); err != nil {
				t.Fatal(err)
			}
		}
		err := cmd.Wait()
		if cerr := slave.Close(); cerr != nil {
			t.Fatal(cerr)
		}
		<-copied
		if err != nil {
			t.Fatalf("%s: %v\n%s\nterminal:\n%s", tc.name, err, stderr.String(), tm.String())
		}
		if strings.Contains(tm.String(), pin) || strings.Contains(stderr.String(), pin) {
			t.Errorf("%s echoed the PIN:\n%s", tc.name, tm.String())
		}
	}
	if _, err := stpm(t, sw.Spec, dir, "stpm-verify", "-k", filepath.Join(dir, "p.key.pub"), "-f", data, "-s", filepath.Join(dir, "p.sig")); err != nil {
		t.Fatal(err)
	}
}

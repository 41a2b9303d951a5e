package tests

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/internal/swtpmtest"
)

// TestKeyWriteDiskFull: stpm-keygen -f over an existing key on a full
// file system fails with the system's reason and leaves the old key and
// its .pub whole, with no temporary file behind. The file system is a
// two-page tmpfs in a private mount namespace (root only): the old key
// and .pub take one page each, so the new key cannot be written.
func TestKeyWriteDiskFull(t *testing.T) {
	need(t, "unshare")
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root for a private mount namespace")
		}
		t.Skip("needs root for a private mount namespace")
	}
	sw := swtpmtest.Start(t, swtpmtest.Options{TCP: true})
	dir := t.TempDir()
	if _, err := stpm(t, sw.Spec, dir, "stpm-keygen", "-t", "ecdsa", "-o", filepath.Join(dir, "k.key")); err != nil {
		t.Fatal(err)
	}
	full := filepath.Join(dir, "full")
	if err := os.Mkdir(full, 0o700); err != nil {
		t.Fatal(err)
	}
	script := `set -e
mount -t tmpfs -o size=8k,mode=0700 stpm-full "$1"
cp "$2/k.key" "$2/k.key.pub" "$1/"
set +e
"$3" -t ecdsa -f -o "$1/k.key"
echo "exit=$?"
cmp "$1/k.key" "$2/k.key" && echo key-intact
cmp "$1/k.key.pub" "$2/k.key.pub" && echo pub-intact
ls -A "$1"
`
	cmd := command(t, "unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
		full, dir, filepath.Join(binDir, "stpm-keygen"))
	cmd.Env = append(os.Environ(), "SIMPLE_TPM_PK11_TPM="+sw.Spec, "HOME="+dir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v\n%s%s", err, stdout.String(), stderr.String())
	}
	out := strings.Fields(stdout.String())
	if got, want := strings.Join(out, " "), "exit=1 key-intact pub-intact k.key k.key.pub"; got != want {
		t.Errorf("got %q, want %q\nstderr:\n%s", got, want, stderr.String())
	}
	want := `stpm-keygen: error: "` + full + `/k.key": not written: no space left on device
stpm-keygen: hint: free space there and run again; a file that was already there is unchanged
`
	if stderr.String() != want {
		t.Errorf("stderr:\n%s\nwant:\n%s", stderr.String(), want)
	}
}

package cli

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestMessages(t *testing.T) {
	var buf bytes.Buffer
	u := &UI{Prog: "stpm-x", Stderr: &buf}
	code := u.Fail(WithHint(KeyErr("a\nb.key", errors.New("bad thing")), "do this"))
	if code != ExitError {
		t.Errorf("Fail returned %d", code)
	}
	want := "stpm-x: error: \"a\\nb.key\": bad thing\nstpm-x: hint: do this\n"
	if buf.String() != want {
		t.Errorf("got %q\nwant %q", buf.String(), want)
	}
	buf.Reset()
	if code := u.Usage("stpm-x -k KEY", "missing -k"); code != ExitUsage {
		t.Errorf("Usage returned %d", code)
	}
	want = "stpm-x: error: missing -k\nstpm-x: hint: usage: stpm-x -k KEY (see stpm-x --help)\n"
	if buf.String() != want {
		t.Errorf("got %q\nwant %q", buf.String(), want)
	}
}

func TestReadSecretFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ content, want string }{
		{"1234\n", "1234"},
		{"1234", "1234"},
		{"pin with # and spaces \r\nsecond line\n", "pin with # and spaces "},
		{"\n", ""},
	} {
		p := filepath.Join(dir, "pin")
		if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := ReadSecretFile(p)
		if err != nil || string(got) != tc.want {
			t.Errorf("ReadSecretFile(%q) = %q, %v; want %q", tc.content, got, err, tc.want)
		}
	}
	_, err := ReadSecretFile(filepath.Join(dir, "missing"))
	if err == nil || err.Error() != `reading "`+filepath.Join(dir, "missing")+`": no such file or directory` {
		t.Errorf("missing file: %v", err)
	}
}

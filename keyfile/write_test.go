package keyfile

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
)

// dirNames lists dir, so tests can check that no temporary file is left.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func fileMode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode()
}

func TestWrite(t *testing.T) {
	const old = "old contents\n"
	tests := []struct {
		name      string
		existing  bool // an "old" file with mode 0644 is at the path
		overwrite bool
		key       *Key
		wantErr   error // nil: success
		wantNames []string
	}{
		{name: "new file", key: fullKey(), wantNames: []string{"id"}},
		{name: "new file, overwrite allowed", overwrite: true, key: fullKey(), wantNames: []string{"id"}},
		{name: "existing file refused", existing: true, key: fullKey(), wantErr: fs.ErrExist, wantNames: []string{"id", "link"}},
		{name: "existing file overwritten", existing: true, overwrite: true, key: fullKey(), wantNames: []string{"id", "link"}},
		{name: "invalid key", key: &Key{}, wantErr: ErrUnsupportedType},
		{name: "invalid key, existing file kept", existing: true, overwrite: true, key: &Key{}, wantErr: ErrUnsupportedType, wantNames: []string{"id", "link"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "id")
			if tt.existing {
				if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
					t.Fatal(err)
				}
				// A second name for the old file: if Write truncated and
				// rewrote it in place instead of replacing the directory
				// entry, the old contents would change under this name.
				if err := os.Link(path, filepath.Join(dir, "link")); err != nil {
					t.Fatal(err)
				}
			}

			err := Write(path, tt.key, tt.overwrite)

			if names := dirNames(t, dir); !slices.Equal(names, tt.wantNames) {
				t.Errorf("directory holds %q, want %q (temporary file left?)", names, tt.wantNames)
			}
			if tt.existing {
				if got, _ := os.ReadFile(filepath.Join(dir, "link")); string(got) != old {
					t.Errorf("old file was modified in place: %q", got)
				}
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if tt.existing {
					if got, _ := os.ReadFile(path); string(got) != old {
						t.Errorf("existing file changed to %q", got)
					}
					if m := fileMode(t, path); m.Perm() != 0o644 {
						t.Errorf("existing file mode changed to %v", m)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m := fileMode(t, path); m != 0o600 {
				t.Errorf("mode = %v, want -rw-------", m)
			}
			k, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(k, tt.key) {
				t.Errorf("read back %+v, want %+v", k, tt.key)
			}
		})
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "id.pub")
	data := []byte("ecdsa-sha2-nistp256 AAAA test\n")
	if err := WriteFileAtomic(path, data, 0o644, false); err != nil {
		t.Fatal(err)
	}
	if m := fileMode(t, path); m != 0o644 {
		t.Errorf("mode = %v, want -rw-r--r--", m)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, data) {
		t.Errorf("contents = %q", got)
	}

	// A symlink at the path is refused like any existing name, and replaced
	// (not followed) when overwriting.
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("target\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(link, data, 0o600, false); !errors.Is(err, fs.ErrExist) {
		t.Errorf("symlink not refused: %v", err)
	}
	if err := WriteFileAtomic(link, data, 0o600, true); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(target); string(got) != "target\n" {
		t.Errorf("symlink target was written through: %q", got)
	}
	if fi, err := os.Lstat(link); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("link was not replaced by a regular file: %v %v", fi, err)
	}

	if err := WriteFileAtomic(filepath.Join(dir, "x"), data, os.ModeSetuid|0o600, false); err == nil {
		t.Error("non-permission mode bits accepted")
	}
	if err := WriteFileAtomic(filepath.Join(dir, "missing", "x"), data, 0o600, false); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing directory: err = %v", err)
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"id.pub", "link", "target"}) {
		t.Errorf("directory holds %q (temporary file left?)", names)
	}
}

// TestWriteMissingDir: the error names the file and its directory, never
// the temporary name the caller did not choose.
func TestWriteMissingDir(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nodir", "k.key")
	err := WriteFileAtomic(path, []byte("x"), 0o600, false)
	if err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
	want := fmt.Sprintf("%q: cannot create a file in %q: no such file or directory", path, filepath.Dir(path))
	if err.Error() != want {
		t.Errorf("got %q\nwant %q", err, want)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%v does not wrap fs.ErrNotExist", err)
	}
}

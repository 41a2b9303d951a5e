package cli

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// ReadErr describes a failure to read path without repeating the path
// the operating system's error already names: `reading "d": is a
// directory`.
func ReadErr(path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Errorf("reading %q: %w", path, err)
}

// HashFile returns the SHA-256 of a file, or of standard input for "-".
func HashFile(path string) ([]byte, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, ReadErr(path, err)
		}
		defer f.Close() // read-only: a close error cannot lose data
		r = f
	}
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return nil, ReadErr(path, err)
	}
	return h.Sum(nil), nil
}

package cli

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
)

// HashFile returns the SHA-256 of a file, or of standard input for "-".
func HashFile(path string) ([]byte, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("reading %q: %w", path, errors.Unwrap(err))
		}
		defer f.Close() // read-only: a close error cannot lose data
		r = f
	}
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return nil, fmt.Errorf("reading %q: %w", path, err)
	}
	return h.Sum(nil), nil
}

package cli

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"golang.org/x/term"
)

// ErrNoTerminal means a PIN was needed and there is no terminal to ask on.
var ErrNoTerminal = errors.New("no terminal to ask for the PIN on")

// Zero overwrites a secret.
func Zero(b []byte) {
	for i := range b {
		b[i] = 0
	}
}

// ReadSecretFile reads a PIN or passphrase from the first line of a file
// (the trailing newline is not part of it).
func ReadSecretFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, ReadErr(path, err)
	}
	line, _, _ := bytes.Cut(data, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	out := bytes.Clone(line)
	Zero(data)
	return out, nil
}

// AskSecret asks for a secret on the terminal without echo. With confirm
// it asks twice and insists both match. It never reads stdin, which may
// carry the data to sign.
func AskSecret(u *UI, prompt string, confirm bool) ([]byte, error) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return nil, WithHint(ErrNoTerminal, "give it in a file with --pin-file (mode 0600)")
	}
	defer func() {
		if cerr := tty.Close(); cerr != nil {
			u.Warnf("closing terminal: %v", cerr)
		}
	}()
	read := func(p string) ([]byte, error) {
		if _, err := fmt.Fprintf(tty, "%s: ", p); err != nil {
			return nil, err
		}
		b, err := term.ReadPassword(int(tty.Fd()))
		if _, werr := fmt.Fprintln(tty); werr != nil && err == nil {
			err = werr
		}
		if err != nil {
			return nil, fmt.Errorf("reading from the terminal: %w", err)
		}
		return b, nil
	}
	first, err := read(prompt)
	if err != nil {
		return nil, err
	}
	if !confirm {
		return first, nil
	}
	second, err := read("Again")
	if err != nil {
		Zero(first)
		return nil, err
	}
	defer Zero(second)
	if !bytes.Equal(first, second) {
		Zero(first)
		return nil, errors.New("the two entries differ")
	}
	return first, nil
}

// Secret gets a secret from file when given, else from the terminal.
func Secret(u *UI, file, prompt string, confirm bool) ([]byte, error) {
	if file != "" {
		return ReadSecretFile(file)
	}
	return AskSecret(u, prompt, confirm)
}

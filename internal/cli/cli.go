// Package cli holds what the stpm-* commands share: how they speak to the
// user, read PINs and pick the TPM.
//
// Message rules: everything goes to stderr with the program's name as a
// prefix, as "error:", "warning:" or "hint:" lines, lowercase, no final
// period. File paths are quoted with %q; file contents (which may be
// secrets) are never echoed.
package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/tpm"
)

// Exit statuses shared by the commands.
const (
	ExitOK    = 0
	ExitError = 1
	ExitUsage = 2
)

// Version is set at build time with -ldflags "-X ...cli.Version=...".
var Version = "devel"

// UI writes a program's messages.
type UI struct {
	Prog   string
	Stderr io.Writer
}

// New returns a UI writing to os.Stderr.
func New(prog string) *UI { return &UI{Prog: prog, Stderr: os.Stderr} }

func (u *UI) line(kind, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if kind != "" {
		kind += ": "
	}
	// Each message is one line: a newline inside would let a file name
	// forge a second message.
	msg = strings.ReplaceAll(msg, "\n", " ")
	fmt.Fprintf(u.Stderr, "%s: %s%s\n", u.Prog, kind, msg)
}

// Errorf prints an error line.
func (u *UI) Errorf(format string, args ...any) { u.line("error", format, args...) }

// Warnf prints a warning line.
func (u *UI) Warnf(format string, args ...any) { u.line("warning", format, args...) }

// Hintf prints a hint line.
func (u *UI) Hintf(format string, args ...any) { u.line("hint", format, args...) }

// Infof prints a progress or result line.
func (u *UI) Infof(format string, args ...any) { u.line("", format, args...) }

// Fail prints err (and its hint, if it has one) and returns ExitError.
func (u *UI) Fail(err error) int {
	u.Errorf("%v", err)
	if h := Hint(err); h != "" {
		u.Hintf("%s", h)
	}
	return ExitError
}

// Usage prints a usage error and the one-line synopsis, and returns
// ExitUsage.
func (u *UI) Usage(synopsis, format string, args ...any) int {
	u.Errorf(format, args...)
	u.Hintf("usage: %s (see %s --help)", synopsis, u.Prog)
	return ExitUsage
}

// Hinter is an error that carries advice for the user.
type Hinter interface{ Hint() string }

// Hint returns the advice attached to err by this project's packages.
func Hint(err error) string {
	if h := tpm.Hint(err); h != "" {
		return h
	}
	var h Hinter
	if errors.As(err, &h) {
		return h.Hint()
	}
	return ""
}

// HintError attaches a hint to an error.
type HintError struct {
	Err  error
	Text string
}

func (e *HintError) Error() string { return e.Err.Error() }
func (e *HintError) Unwrap() error { return e.Err }
func (e *HintError) Hint() string  { return e.Text }

// WithHint attaches advice to err.
func WithHint(err error, hint string) error {
	if err == nil {
		return nil
	}
	return &HintError{Err: err, Text: hint}
}

// KeyErr names the key file an error concerns: `"k.key": incorrect PIN`.
func KeyErr(path string, err error) error {
	if err == nil {
		return nil
	}
	return &keyError{path: path, err: err}
}

type keyError struct {
	path string
	err  error
}

func (e *keyError) Error() string { return fmt.Sprintf("%q: %v", e.path, e.err) }
func (e *keyError) Unwrap() error { return e.err }

var getenv = os.Getenv

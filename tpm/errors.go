package tpm

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// Sentinel kinds of failure. Every error this package returns for a known
// cause is an *Error whose Kind is one of these, so callers map them to
// exit codes or CK_RV values with errors.Is.
var (
	ErrNoTPM       = errors.New("no TPM")
	ErrPermission  = errors.New("permission denied")
	ErrUnreachable = errors.New("TPM not reachable")
	ErrBusy        = errors.New("TPM busy")
	ErrWrongPIN    = errors.New("incorrect PIN")
	ErrLockedOut   = errors.New("TPM locked out")
	ErrWrongTPM    = errors.New("key from another TPM")
	ErrUnsupported = errors.New("not supported by this TPM")
	ErrNoParent    = errors.New("parent key missing")
	ErrBadKey      = errors.New("unusable key")
	ErrTPM         = errors.New("TPM error")
)

// Error is a failure with what a user needs: the message, a hint saying
// what to do, and for PIN failures what the TPM said about its counters.
type Error struct {
	Kind error
	Msg  string
	Hint string
	Err  error // the underlying cause, if any
	// Remaining is the number of wrong PINs the TPM still accepts before
	// it locks out, or -1 when unknown.
	Remaining int
	// Wait is how long a locked-out TPM needs before it accepts a try.
	Wait time.Duration
}

func (e *Error) Error() string { return e.Msg }

// Unwrap lets errors.Is match both the kind and the cause.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// Hint returns the advice attached to err, if any.
func Hint(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Hint
	}
	return ""
}

func newErr(kind error, cause error, hint, format string, args ...any) *Error {
	return &Error{Kind: kind, Err: cause, Hint: hint, Msg: fmt.Sprintf(format, args...), Remaining: -1}
}

// responseCode reads the response code from a raw TPM response.
func responseCode(rsp []byte) tpm2.TPMRC {
	if len(rsp) < 10 {
		return 0
	}
	return tpm2.TPMRC(uint32(rsp[6])<<24 | uint32(rsp[7])<<16 | uint32(rsp[8])<<8 | uint32(rsp[9]))
}

// rcName gives the spec name of a response code for messages and logs.
func rcName(err error) string {
	var rc tpm2.TPMRC
	if errors.As(err, &rc) {
		return fmt.Sprintf("0x%03x: %v", uint32(rc), rc)
	}
	return err.Error()
}

// tpmErr wraps an unexpected TPM failure in op.
func tpmErr(op string, err error) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	return newErr(ErrTPM, err, "", "%s: %s", op, rcName(err))
}

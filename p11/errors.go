package p11

import (
	"errors"
	"fmt"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/tpm"
)

// Error is a failure with the CK_RV to return and a message for the log
// that names the cause and, where there is one, the fix.
type Error struct {
	RV  uint
	Msg string
	Err error
	// Logged says the cause is already in the log (an error line at
	// C_Initialize or an earlier call): the caller logs this one at
	// debug level only, so a program that asks again and again does not
	// fill the log with the same line.
	Logged bool
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Err }

// Logged reports whether err's cause was already logged (see Error.Logged).
func Logged(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Logged
}

// rvErr makes an Error.
func rvErr(rv uint, format string, args ...any) *Error {
	return &Error{RV: rv, Msg: fmt.Sprintf(format, args...)}
}

// RV maps any error to the CK_RV a caller should see. TPM failures keep
// their meaning:
//
//   - no TPM, no permission, TPM unreachable or busy, a TPM failure:
//     CKR_DEVICE_ERROR. This is checked first, so an error that also
//     carries a PIN failure (joined errors) is still a device error: a
//     TPM that cannot be reached never reads as an incorrect PIN;
//   - wrong PIN: CKR_PIN_INCORRECT; TPM locked out: CKR_PIN_LOCKED;
//   - a key the TPM cannot use (made by another TPM, parent missing,
//     unusable key file, unsupported algorithm): CKR_FUNCTION_FAILED;
//   - an *Error: its own code; anything else: CKR_GENERAL_ERROR.
func RV(err error) uint {
	if err == nil {
		return CKR_OK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.RV
	}
	switch {
	case errors.Is(err, tpm.ErrNoTPM), errors.Is(err, tpm.ErrPermission),
		errors.Is(err, tpm.ErrUnreachable), errors.Is(err, tpm.ErrBusy), errors.Is(err, tpm.ErrTPM):
		return CKR_DEVICE_ERROR
	case errors.Is(err, tpm.ErrWrongPIN):
		return CKR_PIN_INCORRECT
	case errors.Is(err, tpm.ErrLockedOut):
		return CKR_PIN_LOCKED
	case errors.Is(err, tpm.ErrWrongTPM), errors.Is(err, tpm.ErrBadKey), errors.Is(err, tpm.ErrNoParent),
		errors.Is(err, tpm.ErrUnsupported):
		return CKR_FUNCTION_FAILED
	}
	return CKR_GENERAL_ERROR
}

// Message gives the log text for err, with the TPM layer's hint.
func Message(err error) string {
	msg := err.Error()
	if h := tpm.Hint(err); h != "" {
		msg += " (hint: " + h + ")"
	}
	return msg
}

// RVName gives the spec name of a return value for logs.
func RVName(rv uint) string {
	if n, ok := rvNames[rv]; ok {
		return n
	}
	return fmt.Sprintf("CKR_0x%X", rv)
}

var rvNames = map[uint]string{
	CKR_OK: "CKR_OK", CKR_HOST_MEMORY: "CKR_HOST_MEMORY", CKR_SLOT_ID_INVALID: "CKR_SLOT_ID_INVALID",
	CKR_GENERAL_ERROR: "CKR_GENERAL_ERROR", CKR_FUNCTION_FAILED: "CKR_FUNCTION_FAILED",
	CKR_ARGUMENTS_BAD: "CKR_ARGUMENTS_BAD", CKR_NO_EVENT: "CKR_NO_EVENT", CKR_CANT_LOCK: "CKR_CANT_LOCK",
	CKR_ATTRIBUTE_SENSITIVE: "CKR_ATTRIBUTE_SENSITIVE", CKR_ATTRIBUTE_TYPE_INVALID: "CKR_ATTRIBUTE_TYPE_INVALID",
	CKR_ATTRIBUTE_VALUE_INVALID: "CKR_ATTRIBUTE_VALUE_INVALID", CKR_DATA_INVALID: "CKR_DATA_INVALID",
	CKR_DATA_LEN_RANGE: "CKR_DATA_LEN_RANGE", CKR_DEVICE_ERROR: "CKR_DEVICE_ERROR",
	CKR_DEVICE_REMOVED: "CKR_DEVICE_REMOVED", CKR_FUNCTION_NOT_SUPPORTED: "CKR_FUNCTION_NOT_SUPPORTED",
	CKR_KEY_HANDLE_INVALID: "CKR_KEY_HANDLE_INVALID", CKR_KEY_TYPE_INCONSISTENT: "CKR_KEY_TYPE_INCONSISTENT",
	CKR_KEY_FUNCTION_NOT_PERMITTED: "CKR_KEY_FUNCTION_NOT_PERMITTED", CKR_MECHANISM_INVALID: "CKR_MECHANISM_INVALID",
	CKR_MECHANISM_PARAM_INVALID: "CKR_MECHANISM_PARAM_INVALID", CKR_OBJECT_HANDLE_INVALID: "CKR_OBJECT_HANDLE_INVALID",
	CKR_OPERATION_ACTIVE: "CKR_OPERATION_ACTIVE", CKR_OPERATION_NOT_INITIALIZED: "CKR_OPERATION_NOT_INITIALIZED",
	CKR_PIN_INCORRECT: "CKR_PIN_INCORRECT", CKR_PIN_LEN_RANGE: "CKR_PIN_LEN_RANGE", CKR_PIN_LOCKED: "CKR_PIN_LOCKED",
	CKR_SESSION_HANDLE_INVALID:         "CKR_SESSION_HANDLE_INVALID",
	CKR_SESSION_PARALLEL_NOT_SUPPORTED: "CKR_SESSION_PARALLEL_NOT_SUPPORTED",
	CKR_SESSION_READ_ONLY:              "CKR_SESSION_READ_ONLY", CKR_SIGNATURE_INVALID: "CKR_SIGNATURE_INVALID",
	CKR_SIGNATURE_LEN_RANGE: "CKR_SIGNATURE_LEN_RANGE", CKR_TEMPLATE_INCONSISTENT: "CKR_TEMPLATE_INCONSISTENT",
	CKR_TOKEN_NOT_PRESENT: "CKR_TOKEN_NOT_PRESENT", CKR_TOKEN_WRITE_PROTECTED: "CKR_TOKEN_WRITE_PROTECTED",
	CKR_USER_ALREADY_LOGGED_IN: "CKR_USER_ALREADY_LOGGED_IN", CKR_USER_NOT_LOGGED_IN: "CKR_USER_NOT_LOGGED_IN",
	CKR_USER_TYPE_INVALID: "CKR_USER_TYPE_INVALID", CKR_RANDOM_SEED_NOT_SUPPORTED: "CKR_RANDOM_SEED_NOT_SUPPORTED",
	CKR_BUFFER_TOO_SMALL: "CKR_BUFFER_TOO_SMALL", CKR_CRYPTOKI_NOT_INITIALIZED: "CKR_CRYPTOKI_NOT_INITIALIZED",
	CKR_CRYPTOKI_ALREADY_INITIALIZED: "CKR_CRYPTOKI_ALREADY_INITIALIZED",
	CKR_NEED_TO_CREATE_THREADS:       "CKR_NEED_TO_CREATE_THREADS", CKR_SESSION_CLOSED: "CKR_SESSION_CLOSED",
	CKR_FUNCTION_NOT_PARALLEL: "CKR_FUNCTION_NOT_PARALLEL",
}

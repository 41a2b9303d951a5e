package p11

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/simple-tpm-pk11/simple-tpm-pk11/config"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/keyfile"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/tpm"
)

// TestRV pins the CK_RV each kind of failure maps to.
func TestRV(t *testing.T) {
	kind := func(k error) error { return &tpm.Error{Kind: k, Msg: k.Error(), Remaining: -1} }
	key := &Key{Label: "k", Path: "k.key"}
	_, badFile := keyfile.Parse([]byte("-----BEGIN TSS2 PRIVATE KEY-----\nAAAA\n-----END TSS2 PRIVATE KEY-----\n"))
	if badFile == nil {
		t.Fatal("a corrupt key file parsed")
	}
	for _, tc := range []struct {
		name string
		err  error
		want uint
	}{
		{"nil", nil, CKR_OK},
		{"no TPM", kind(tpm.ErrNoTPM), CKR_DEVICE_ERROR},
		{"permission denied", kind(tpm.ErrPermission), CKR_DEVICE_ERROR},
		{"TPM unreachable", kind(tpm.ErrUnreachable), CKR_DEVICE_ERROR},
		{"TPM busy", kind(tpm.ErrBusy), CKR_DEVICE_ERROR},
		{"TPM failure", kind(tpm.ErrTPM), CKR_DEVICE_ERROR},
		{"wrong PIN", kind(tpm.ErrWrongPIN), CKR_PIN_INCORRECT},
		{"locked out", kind(tpm.ErrLockedOut), CKR_PIN_LOCKED},
		{"key from another TPM", kind(tpm.ErrWrongTPM), CKR_FUNCTION_FAILED},
		{"unusable key", kind(tpm.ErrBadKey), CKR_FUNCTION_FAILED},
		{"parent missing", kind(tpm.ErrNoParent), CKR_FUNCTION_FAILED},
		{"unsupported", kind(tpm.ErrUnsupported), CKR_FUNCTION_FAILED},
		{"wrong PIN, wrapped", fmt.Errorf("login: %w", kind(tpm.ErrWrongPIN)), CKR_PIN_INCORRECT},
		{"wrong PIN, named key", keyErr(key, kind(tpm.ErrWrongPIN)), CKR_PIN_INCORRECT},
		{"unreachable, named key", keyErr(key, kind(tpm.ErrUnreachable)), CKR_DEVICE_ERROR},
		{"unreachable joined with wrong PIN", errors.Join(kind(tpm.ErrWrongPIN), kind(tpm.ErrUnreachable)), CKR_DEVICE_ERROR},
		{"wrong PIN caused by a lost connection", &tpm.Error{Kind: tpm.ErrWrongPIN, Err: kind(tpm.ErrUnreachable)}, CKR_DEVICE_ERROR},
		{"module error", rvErr(CKR_PIN_LEN_RANGE, "long"), CKR_PIN_LEN_RANGE},
		{"module error, wrapped", fmt.Errorf("x: %w", rvErr(CKR_KEY_HANDLE_INVALID, "h")), CKR_KEY_HANDLE_INVALID},
		{"key file parse error (left out at C_Initialize, never returned)", badFile, CKR_GENERAL_ERROR},
		{"unknown", errors.New("something else"), CKR_GENERAL_ERROR},
	} {
		if got := RV(tc.err); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, RVName(got), RVName(tc.want))
		}
	}
}

// TestLoginTPMUnreachable: with the TPM away, C_Login answers
// CKR_DEVICE_ERROR naming the TPM, never CKR_PIN_INCORRECT, and does not
// log in.
func TestLoginTPMUnreachable(t *testing.T) {
	dir := makeKeys(t)
	spec, err := tpm.ParseSpec("swtpm:path=" + filepath.Join(t.TempDir(), "gone.sock"))
	if err != nil {
		t.Fatal(err)
	}
	m := startModule(t, func() (*config.Config, error) {
		return config.Parse(strings.NewReader("key pin.key\n"), filepath.Join(dir, "config")), nil
	}, tpm.Open(spec))
	h := open(t, m)
	for _, pin := range []string{testPIN, "9999"} {
		err := m.Login(h, CKU_USER, []byte(pin))
		wantRV(t, "login with the TPM away, PIN "+pin, err, CKR_DEVICE_ERROR)
		if err != nil && !strings.Contains(Message(err), "gone.sock") {
			t.Errorf("message %q does not name the TPM", Message(err))
		}
	}
	si, err := m.GetSessionInfo(h)
	if err != nil || si.State != CKS_RO_PUBLIC_SESSION {
		t.Errorf("after failed logins: state %d (%v), want CKS_RO_PUBLIC_SESSION", si.State, err)
	}
}

package p11

import (
	"bytes"
	"testing"
)

// TestPrivateKeyWhileLoggedOut pins what a key with a PIN answers when
// nobody is logged in. Its private key object is private: before C_Login
// and after C_Logout its handle is invalid (PKCS#11 2.40, 5.6: C_Logout
// invalidates the application's handles to private objects), so
// C_SignInit answers CKR_KEY_HANDLE_INVALID whether the handle was found
// while logged in or not. An operation started while logged in fails
// with CKR_USER_NOT_LOGGED_IN at its next call after C_Logout, and ends.
func TestPrivateKeyWhileLoggedOut(t *testing.T) {
	m := newModule(t, "key pin.key\nkey ec.key\n")
	h := open(t, m)
	const pinPriv = 1 // 3i+1 for the first key
	digest := bytes.Repeat([]byte{7}, 32)

	wantRV(t, "SignInit before login", m.SignInit(h, Mechanism{Type: CKM_ECDSA}, pinPriv), CKR_KEY_HANDLE_INVALID)
	_, err := m.GetAttributeValue(h, pinPriv, []uint{CKA_CLASS})
	wantRV(t, "attributes before login", err, CKR_OBJECT_HANDLE_INVALID)

	wantRV(t, "login", m.Login(h, CKU_USER, []byte(testPIN)), CKR_OK)
	priv := find(t, m, h, Attribute{CKA_LABEL, []byte("pin")}, Attribute{CKA_CLASS, ulong(CKO_PRIVATE_KEY)})
	if len(priv) != 1 || priv[0] != pinPriv {
		t.Fatalf("after login: private key %v, want [%d]", priv, pinPriv)
	}

	// Single-part: C_Logout between C_SignInit and C_Sign.
	wantRV(t, "SignInit logged in", m.SignInit(h, Mechanism{Type: CKM_ECDSA}, pinPriv), CKR_OK)
	wantRV(t, "logout", m.Logout(h), CKR_OK)
	_, err = m.Sign(h, digest)
	wantRV(t, "Sign after logout", err, CKR_USER_NOT_LOGGED_IN)
	_, err = m.Sign(h, digest)
	wantRV(t, "the failed Sign ended the operation", err, CKR_OPERATION_NOT_INITIALIZED)
	wantRV(t, "SignInit after logout with the handle found while logged in",
		m.SignInit(h, Mechanism{Type: CKM_ECDSA}, pinPriv), CKR_KEY_HANDLE_INVALID)

	// Multi-part: C_Logout between two C_SignUpdate calls, and before
	// C_SignFinal.
	for _, last := range []string{"SignUpdate", "SignFinal"} {
		wantRV(t, "login", m.Login(h, CKU_USER, []byte(testPIN)), CKR_OK)
		wantRV(t, "SignInit", m.SignInit(h, Mechanism{Type: CKM_ECDSA_SHA256}, pinPriv), CKR_OK)
		wantRV(t, "SignUpdate logged in", m.SignUpdate(h, []byte("a")), CKR_OK)
		wantRV(t, "logout", m.Logout(h), CKR_OK)
		if last == "SignUpdate" {
			wantRV(t, "SignUpdate after logout", m.SignUpdate(h, []byte("b")), CKR_USER_NOT_LOGGED_IN)
		} else {
			_, err = m.SignFinal(h)
			wantRV(t, "SignFinal after logout", err, CKR_USER_NOT_LOGGED_IN)
		}
		_, err = m.SignFinal(h)
		wantRV(t, last+" after logout ended the operation", err, CKR_OPERATION_NOT_INITIALIZED)
	}

	// The key without a PIN signs while logged out; the PIN key again
	// after a new login.
	ec := find(t, m, h, Attribute{CKA_LABEL, []byte("ec")}, Attribute{CKA_CLASS, ulong(CKO_PRIVATE_KEY)})
	if len(ec) != 1 {
		t.Fatal("the key without a PIN is visible while logged out")
	}
	sign(t, m, h, ec[0], CKM_ECDSA, nil)
	wantRV(t, "login", m.Login(h, CKU_USER, []byte(testPIN)), CKR_OK)
	sign(t, m, h, pinPriv, CKM_ECDSA, nil)
}

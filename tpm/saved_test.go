package tpm

import (
	"crypto"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// TestSavedContext: per operation, the first signature makes the primary
// and loads the key; later ones reload the key's saved context, and for a
// key with a PIN its parent's too (the session stays salted).
func TestSavedContext(t *testing.T) {
	for _, pin := range [][]byte{nil, []byte("4321")} {
		k := createKey(t, newSimTPM(t), KeySpec{Type: ECDSA, Bits: 256, PIN: pin})
		cnt := &counting{TPM: sim, n: map[tpm2.TPMCC]int{}}
		tp := FromTransport(cnt)
		pub, err := PublicKey(k)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			d := sha256.Sum256([]byte{byte(i)})
			sig, err := tp.SignDigest(k, nil, pin, d[:], SignOpts{Hash: crypto.SHA256})
			if err != nil {
				t.Fatalf("signature %d: %v", i, err)
			}
			verify(t, pub, d[:], sig, SignOpts{Hash: crypto.SHA256})
		}
		saves, loads := 1, 2
		if pin != nil {
			saves, loads = 2, 4
		}
		if cnt.n[tpm2.TPMCCCreatePrimary] != 1 || cnt.n[tpm2.TPMCCLoad] != 1 || cnt.n[tpm2.TPMCCContextSave] != saves ||
			cnt.n[tpm2.TPMCCContextLoad] != loads || cnt.n[tpm2.TPMCCSign] != 3 {
			t.Errorf("PIN %q: commands %v: want one CreatePrimary and Load, %d ContextSave, %d ContextLoad, three Signs",
				pin, cnt.n, saves, loads)
		}
		if pin == nil {
			continue
		}
		// A wrong PIN on the reloaded key is still a wrong PIN.
		d := sha256.Sum256(nil)
		if _, err := tp.SignDigest(k, nil, []byte("9999"), d[:], SignOpts{Hash: crypto.SHA256}); !errors.Is(err, ErrWrongPIN) {
			t.Errorf("wrong PIN: got %v, want ErrWrongPIN", err)
		}
		if _, err := tp.SignDigest(k, nil, pin, d[:], SignOpts{Hash: crypto.SHA256}); err != nil {
			t.Errorf("right PIN after a wrong one: %v", err)
		}
	}
}

// TestSavedContextAfterClear: once the TPM is cleared a saved context is
// refused; the key is loaded from its file and the error says what
// happened (the key belongs to the TPM as it was), not that a context
// failed.
func TestSavedContextAfterClear(t *testing.T) {
	tp := newSimTPM(t)
	k := createKey(t, tp, KeySpec{Type: ECDSA, Bits: 256})
	d := sha256.Sum256(nil)
	for range 2 {
		if _, err := tp.SignDigest(k, nil, nil, d[:], SignOpts{Hash: crypto.SHA256}); err != nil {
			t.Fatal(err)
		}
	}
	if len(tp.saved) != 1 {
		t.Fatalf("%d saved contexts, want 1", len(tp.saved))
	}
	if _, err := (tpm2.Clear{AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHLockout, Auth: tpm2.PasswordAuth(nil)}}).Execute(sim); err != nil {
		t.Fatal(err)
	}
	if err := relaxLockout(sim, 1000); err != nil {
		t.Fatal(err)
	}
	_, err := tp.SignDigest(k, nil, nil, d[:], SignOpts{Hash: crypto.SHA256})
	if !errors.Is(err, ErrWrongTPM) {
		t.Fatalf("sign after TPM2_Clear: got %v, want ErrWrongTPM", err)
	}
	if len(tp.saved) != 0 {
		t.Errorf("the refused context is still saved")
	}
	// A new key on the cleared TPM works and is saved again.
	k = createKey(t, tp, KeySpec{Type: ECDSA, Bits: 256})
	for range 2 {
		if _, err := tp.SignDigest(k, nil, nil, d[:], SignOpts{Hash: crypto.SHA256}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSavedContextParentEvicted: a key with a PIN under a persistent
// parent salts its session to that parent; when the parent is evicted the
// next signature reports the missing parent, as loading the file does.
func TestSavedContextParentEvicted(t *testing.T) {
	tp := newSimTPM(t)
	const handle = 0x81000042
	err := tp.Do(func(c *Conn) error {
		p, err := c.LoadParent(OwnerParent, false, nil)
		if err != nil {
			return err
		}
		_, err = tpm2.EvictControl{
			Auth:             tpm2.TPMRHOwner,
			ObjectHandle:     tpm2.NamedHandle{Handle: p.Handle, Name: p.Name},
			PersistentHandle: handle,
		}.Execute(c.tpm)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	evict := func() error {
		return tp.Do(func(c *Conn) error {
			rsp, err := tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(handle)}.Execute(c.tpm)
			if err != nil {
				return err
			}
			_, err = tpm2.EvictControl{
				Auth:             tpm2.TPMRHOwner,
				ObjectHandle:     tpm2.NamedHandle{Handle: tpm2.TPMHandle(handle), Name: rsp.Name},
				PersistentHandle: handle,
			}.Execute(c.tpm)
			return err
		})
	}
	evicted := false
	defer func() {
		if !evicted {
			if err := evict(); err != nil {
				t.Error(err)
			}
		}
	}()
	pin := []byte("5678")
	k := createKey(t, tp, KeySpec{Type: RSA, Bits: 2048, PIN: pin, Parent: handle})
	d := sha256.Sum256(nil)
	for range 2 {
		if _, err := tp.SignDigest(k, nil, pin, d[:], SignOpts{Hash: crypto.SHA256}); err != nil {
			t.Fatal(err)
		}
	}
	if err := evict(); err != nil {
		t.Fatal(err)
	}
	evicted = true
	if _, err := tp.SignDigest(k, nil, pin, d[:], SignOpts{Hash: crypto.SHA256}); !errors.Is(err, ErrNoParent) {
		t.Fatalf("sign after the parent was evicted: got %v, want ErrNoParent", err)
	}
}

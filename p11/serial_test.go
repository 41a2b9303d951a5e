package p11

import (
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/keyfile"
	"github.com/simple-tpm-pk11/simple-tpm-pk11/tpm"
)

// persistentParent is where the serial test keeps a storage key of its
// own, so that the configured keys have different parents.
const persistentParent = 0x81000100

var (
	persistOnce sync.Once
	persistErr  error
)

// makePersistentKey makes persist.key, an ECDSA key under a persistent
// storage key, next to the other test keys.
func makePersistentKey(t *testing.T) {
	t.Helper()
	dir := makeKeys(t)
	persistOnce.Do(func() {
		tp := tpm.FromTransport(sim)
		persistErr = tp.Do(func(c *tpm.Conn) error {
			raw := c.Transport()
			p, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tpm2.ECCSRKTemplate)}.Execute(raw)
			if err != nil {
				return err
			}
			_, err = tpm2.EvictControl{
				Auth:             tpm2.TPMRHOwner,
				ObjectHandle:     tpm2.NamedHandle{Handle: p.ObjectHandle, Name: p.Name},
				PersistentHandle: persistentParent,
			}.Execute(raw)
			if _, ferr := (tpm2.FlushContext{FlushHandle: p.ObjectHandle}).Execute(raw); err == nil {
				err = ferr
			}
			if err != nil {
				return err
			}
			k, err := c.CreateKey(tpm.KeySpec{Type: tpm.ECDSA, Bits: 256, Parent: persistentParent})
			if err != nil {
				return err
			}
			return keyfile.Write(filepath.Join(dir, "persist.key"), k, false)
		})
	})
	if persistErr != nil {
		t.Fatal(persistErr)
	}
}

// TestSerialIgnoresKeyOrder: the token's serial number stays the same
// when the config lists its keys in another order, even when they have
// different parents.
func TestSerialIgnoresKeyOrder(t *testing.T) {
	makePersistentKey(t)
	serial := func(cfg string) string {
		m := newModule(t, cfg)
		ti, err := m.GetTokenInfo(SlotID)
		if err != nil {
			t.Fatal(err)
		}
		if len(ti.Serial) != 16 {
			t.Fatalf("serial %q: want 16 hex digits", ti.Serial)
		}
		return ti.Serial
	}
	first := serial("key persist.key\nkey ec.key\nkey rsa.key\n")
	for _, cfg := range []string{"key ec.key\nkey persist.key\nkey rsa.key\n", "key rsa.key\nkey ec.key\nkey persist.key\n"} {
		if got := serial(cfg); got != first {
			t.Errorf("config %q: serial %s, want %s as with the keys in another order", cfg, got, first)
		}
	}
	// The keys under the owner hierarchy's storage primary alone give
	// the same serial: it is the parent used whenever a key has it.
	if got := serial("key ec.key\n"); got != first {
		t.Errorf("owner-parent key alone: serial %s, want %s", got, first)
	}
}

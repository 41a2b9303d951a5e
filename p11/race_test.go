package p11

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestCloseAllSessionsWhileSigning closes sessions from one goroutine
// while others sign and feed data on them. Run with -race: closing a
// session and an operation on it must touch the session's state under the
// same lock.
func TestCloseAllSessionsWhileSigning(t *testing.T) {
	m := newModule(t, "key ec.key\n")
	h0 := open(t, m)
	key := find(t, m, h0, Attribute{CKA_CLASS, ulong(CKO_PRIVATE_KEY)})[0]
	deadline := time.Now().Add(2 * time.Second)
	var signed, closed atomic.Int64
	var wg sync.WaitGroup
	// What a call on a session another goroutine closes may answer.
	gone := func(err error) bool {
		rv := RV(err)
		return rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED
	}
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				h, err := m.OpenSession(SlotID, CKF_SERIAL_SESSION)
				if err != nil {
					t.Error(err)
					return
				}
				if err := m.SignInit(h, Mechanism{Type: CKM_ECDSA_SHA256}, key); err != nil {
					if !gone(err) {
						t.Errorf("SignInit: %v", err)
						return
					}
					continue
				}
				ok := true
				for range 20 {
					if err := m.SignUpdate(h, []byte("part")); err != nil {
						if !gone(err) {
							t.Errorf("SignUpdate: %v", err)
							return
						}
						ok = false
						break
					}
				}
				if !ok {
					continue
				}
				if _, err := m.SignFinal(h); err != nil {
					if !gone(err) {
						t.Errorf("SignFinal: %v", err)
						return
					}
					continue
				}
				signed.Add(1)
				if err := m.CloseSession(h); err != nil && !gone(err) {
					t.Errorf("CloseSession: %v", err)
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for time.Now().Before(deadline) {
			if err := m.CloseAllSessions(SlotID); err != nil {
				t.Errorf("CloseAllSessions: %v", err)
				return
			}
			closed.Add(1)
			time.Sleep(50 * time.Microsecond)
		}
	}()
	wg.Wait()
	if signed.Load() == 0 || closed.Load() == 0 {
		t.Errorf("%d signatures, %d CloseAllSessions: the test did not exercise both", signed.Load(), closed.Load())
	}
}

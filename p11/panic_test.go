package p11

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// guarded calls f the way the export layer does: a panic becomes
// Panicked's answer.
func guarded(m *Module, fn string, f func() error) (rv uint) {
	defer func() {
		if r := recover(); r != nil {
			rv = m.Panicked(fn, r)
		}
	}()
	return RV(f())
}

// within runs f and waits at most 10 s for it; false means it never
// returned (a lock left held).
func within(f func() uint) (uint, bool) {
	done := make(chan uint, 1)
	go func() { done <- f() }()
	select {
	case rv := <-done:
		return rv, true
	case <-time.After(10 * time.Second):
		return 0, false
	}
}

// TestPanicLeavesModuleUsable panics inside calls at the points where
// they hold the module lock (or a session's), and checks that the call
// answers CKR_GENERAL_ERROR with one log line and that the next calls
// work: every lock is released by a deferred unlock.
func TestPanicLeavesModuleUsable(t *testing.T) {
	m := newModule(t, "key pin.key\nkey ec.key\n")
	var log bytes.Buffer
	m.log.Store(NewLogger(&log, false))
	h := open(t, m)
	ec := find(t, m, h, Attribute{CKA_LABEL, []byte("ec")}, Attribute{CKA_CLASS, ulong(CKO_PRIVATE_KEY)})[0]
	sum := bytes.Repeat([]byte{1}, 32)
	for _, tc := range []struct {
		point  string
		before func() error // sets the stage, without the panic
		call   func() error // panics at point
		after  func() error // must work once the panic is gone
	}{
		{point: "C_GetTokenInfo",
			call:  func() error { _, err := m.GetTokenInfo(SlotID); return err },
			after: func() error { _, err := m.GetTokenInfo(SlotID); return err }},
		{point: "C_GetMechanismList",
			call:  func() error { _, err := m.MechanismList(SlotID); return err },
			after: func() error { _, err := m.GetMechanismInfo(SlotID, CKM_ECDSA); return err }},
		{point: "C_Login",
			call:  func() error { return m.Login(h, CKU_USER, []byte(testPIN)) },
			after: func() error { return m.Login(h, CKU_USER, []byte(testPIN)) }},
		{point: "C_Sign",
			before: func() error { return m.SignInit(h, Mechanism{Type: CKM_ECDSA}, ec) },
			call:   func() error { _, err := m.Sign(h, sum); return err },
			after: func() error {
				if err := m.SignInit(h, Mechanism{Type: CKM_ECDSA}, ec); err != nil {
					return err
				}
				_, err := m.Sign(h, sum)
				return err
			}},
		{point: "C_SignUpdate",
			before: func() error { return m.SignInit(h, Mechanism{Type: CKM_ECDSA_SHA256}, ec) },
			call:   func() error { return m.SignUpdate(h, []byte("a")) },
			after: func() error {
				if err := m.SignUpdate(h, []byte("b")); err != nil {
					return err
				}
				_, err := m.SignFinal(h)
				return err
			}},
	} {
		if tc.before != nil {
			if err := tc.before(); err != nil {
				t.Fatalf("%s: %v", tc.point, err)
			}
		}
		log.Reset()
		testPanic = func(where string) {
			if where == tc.point {
				panic("test panic at " + where)
			}
		}
		rv, ok := within(func() uint { return guarded(m, tc.point, tc.call) })
		testPanic = nil
		if !ok {
			t.Fatalf("%s: the panicking call did not return", tc.point)
		}
		if rv != CKR_GENERAL_ERROR {
			t.Errorf("%s: %s after a panic, want CKR_GENERAL_ERROR", tc.point, RVName(rv))
		}
		want := tc.point + ": internal error: test panic at " + tc.point + "; please report it"
		if got := log.String(); !strings.Contains(got, want) || strings.Count(got, "\n") != 1 {
			t.Errorf("%s: log %q, want one line with %q", tc.point, got, want)
		}
		for name, f := range map[string]func() error{
			"the same call": tc.after,
			"another call":  func() error { _, err := m.GetSessionInfo(h); return err },
		} {
			rv, ok := within(func() uint { return RV(f()) })
			if !ok {
				t.Fatalf("%s: %s after the panic hangs: a lock was left held", tc.point, name)
			}
			if rv != CKR_OK {
				t.Errorf("%s: %s after the panic: %s", tc.point, name, RVName(rv))
			}
		}
	}
}

// TestPanickedTakesNoLock: the panic path logs even while the module
// lock is held.
func TestPanickedTakesNoLock(t *testing.T) {
	m := newModule(t, "key ec.key\n")
	var log bytes.Buffer
	m.log.Store(NewLogger(&log, false))
	m.mu.Lock()
	rv, ok := within(func() uint { return m.Panicked("C_Sign", "boom") })
	m.mu.Unlock()
	if !ok {
		t.Fatal("Panicked waits for the module lock")
	}
	if rv != CKR_GENERAL_ERROR || !strings.Contains(log.String(), "C_Sign: internal error: boom; please report it with this log: goroutine ") {
		t.Errorf("Panicked: %s, log %q", RVName(rv), log.String())
	}
}

package p11

import "runtime/debug"

// Panicked is the answer of a call that panicked: one log line with the
// panic and the stack, and CKR_GENERAL_ERROR, so that a panic never
// unwinds into the C caller. The export layer calls it from the function
// it defers (recover works only there). It takes no lock of the module:
// the panicking call may have held the module lock, which its deferred
// unlock releases while the panic unwinds, before this runs.
func (m *Module) Panicked(fn string, r any) uint {
	m.Log().Errorf("%s: internal error: %v; please report it with this log: %s", fn, r, debug.Stack())
	return CKR_GENERAL_ERROR
}

// testPanic is set only by this package's tests: it is called at points
// where a call holds a lock, to check that a panic there leaves the
// module usable.
var testPanic func(where string)

func panicPoint(where string) {
	if testPanic != nil {
		testPanic(where)
	}
}

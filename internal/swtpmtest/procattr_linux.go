package swtpmtest

import "syscall"

// sysProcAttr makes the kernel send SIGTERM to swtpm when the test process
// dies without running its cleanups (e.g. killed by a timeout), so no swtpm is
// left behind. Caveat: Pdeathsig fires when the OS thread that started the
// child exits, which in Go only happens when a goroutine locked to its thread
// (runtime.LockOSThread) returns; do not call Start from such a goroutine.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}

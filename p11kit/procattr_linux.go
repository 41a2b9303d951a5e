package p11kit

import "syscall"

// sysProcAttr puts the server in a process group of its own, so that a
// terminal's ^C goes to its parent only (which then calls Stop), and asks
// the kernel to send it SIGTERM if the thread that started it dies. Go
// ends a thread only when a goroutine exits while locked to it, and
// StartServer starts the server from a goroutine locked to its thread
// until the server exits, so that happens only when this process dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

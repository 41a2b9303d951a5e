package p11kit

import "syscall"

// sysProcAttr puts the server in a process group of its own, so that a
// terminal's ^C goes to its parent only (which then calls Stop), and asks
// the kernel to send it SIGTERM if the thread that started it dies. Go
// does not end its threads unless a goroutine exits while locked to one,
// so in practice that is when this process dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

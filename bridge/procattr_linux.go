package bridge

import "syscall"

// sshProcAttr has the kernel send ssh SIGTERM when the thread that
// started it ends, which SSH makes the moment this process dies.
func sshProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}

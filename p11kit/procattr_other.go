//go:build !linux

package p11kit

import "syscall"

// sysProcAttr puts the server in a process group of its own, so that a
// terminal's ^C goes to its parent only (which then calls Stop).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

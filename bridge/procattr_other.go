//go:build !linux

package bridge

import "syscall"

// sshProcAttr: no parent-death signal outside Linux.
func sshProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }

//go:build !linux

package swtpmtest

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }

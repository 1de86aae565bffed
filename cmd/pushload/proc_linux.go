package main

import "syscall"

// childAttr makes the kernel kill a child if pushload itself dies, so that
// no node or answerer outlives a crashed or killed benchmark.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

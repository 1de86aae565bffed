package store

import "syscall"

// dropResident tells the kernel that the process no longer needs the
// pages of [addr, addr+n) of a shared file mapping: they leave the
// process's resident set (they stay in the page cache, and a later read
// faults them back in from there).
func dropResident(addr, n uintptr) {
	if n == 0 {
		return
	}
	_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, addr, n, syscall.MADV_DONTNEED)
}

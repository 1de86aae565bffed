//go:build !linux

package store

func dropResident(addr, n uintptr) {}

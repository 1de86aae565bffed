//go:build !unix

package node

func openFileLimit() uint64 { return 0 }

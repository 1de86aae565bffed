package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/ddpush/ddpush-operator/node"
	"github.com/ddpush/ddpush-operator/node/store"
)

// runCheck is `pushnode check`: it verifies a store without changing it
// and exits 0 when it is sound, 1 when it is damaged or cannot be
// checked, 2 on bad usage.
func runCheck(args []string, stdout, stderr io.Writer) int {
	cfg := node.DefaultConfig()
	fs := flag.NewFlagSet("pushnode check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory of the bbolt store to check")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: pushnode check [--data-dir DIR]\n\n"+
			"Verifies the node's store without changing it: bbolt's structure and\n"+
			"consistency, and every stored record, push, key and event. Exits 0 when\n"+
			"the store is sound, 1 when it is damaged or cannot be checked. The node\n"+
			"must not be running on it. %s sets the directory too.\n\nFlags:\n", node.EnvName("data-dir"))
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "pushnode check: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if err := node.ApplyEnv(fs, os.Getenv); err != nil {
		fmt.Fprintf(stderr, "pushnode check: %v\n", err)
		return 2
	}
	r, err := store.Check(cfg.DataDir)
	if err != nil {
		fmt.Fprintf(stderr, "pushnode check: cannot check the store: %v\n", err)
		return 1
	}
	if !r.OK() {
		fmt.Fprintf(stdout, "store %s: DAMAGED (%d problems)\n", r.Path, r.ProblemCount)
		for _, p := range r.Problems {
			fmt.Fprintf(stdout, "  - %s\n", p)
		}
		if n := r.ProblemCount - len(r.Problems); n > 0 {
			fmt.Fprintf(stdout, "  ... and %d more\n", n)
		}
		fmt.Fprintln(stdout, "What to do: restore the file from a backup, or move it aside to start empty; see docs/store.md.")
		return 1
	}
	fmt.Fprintf(stdout, "store %s: OK\n", r.Path)
	fmt.Fprintf(stdout, "  %d bytes, %d pages of %d bytes in use\n", r.Bytes, r.Pages, r.PageSize)
	fmt.Fprintf(stdout, "  %d client records (%d with pending pushes), %d pushes, %d idempotency keys, %d events\n", r.Clients, r.Pending, r.Pushes, r.Keys, r.Events)
	return 0
}

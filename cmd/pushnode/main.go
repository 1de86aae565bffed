// Command pushnode runs a DDPush-compatible push node. With no arguments
// it keeps its data in ./data and listens on the protocol's ports: 9966
// (UDP and TCP) for phones, 9999 for app servers, 8080 for HTTP.
// `pushnode check` verifies a store instead (see check.go).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ddpush/ddpush-operator/node"
	"github.com/ddpush/ddpush-operator/node/store"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) > 0 && args[0] == "check" {
		return runCheck(args[1:], os.Stdout, os.Stderr)
	}
	cfg := node.DefaultConfig()
	fs := cfg.FlagSet("pushnode", os.Stderr)
	version := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: pushnode [flags]\n       pushnode check [--data-dir DIR]\n\nRuns a DDPush v1 push node (check: verifies its store; see pushnode check --help). Every flag can also be set by an environment\nvariable: %s plus the flag in upper snake case (--heartbeat-policy is\n%s).\n\nFlags:\n", node.EnvPrefix, node.EnvName("heartbeat-policy"))
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *version {
		fmt.Println(node.Version)
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "pushnode: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if err := node.ApplyEnv(fs, os.Getenv); err != nil {
		fmt.Fprintf(os.Stderr, "pushnode: %v\n", err)
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "pushnode: invalid settings:\n%v\n", err)
		return 2
	}
	log := cfg.Logger(os.Stderr)
	// Listen for signals before the node says it is ready, so that a
	// SIGTERM right after "ready" still shuts it down gracefully.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	n, err := node.Start(cfg, log)
	if err != nil {
		var damaged *store.DamagedError
		if errors.As(err, &damaged) {
			log.Error("cannot start: the store is damaged", "err", err,
				"help", "run `pushnode check --data-dir "+cfg.DataDir+"`, then restore the file from a backup or move it aside to start empty (docs/store.md)")
			return 1
		}
		log.Error("cannot start", "err", err)
		return 1
	}
	s := <-sig
	log.Info("shutting down", "signal", s.String())
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := n.Stop(ctx); err != nil {
		log.Error("shutdown", "err", err)
		return 1
	}
	return 0
}

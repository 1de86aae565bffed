// Command localcluster runs a one-machine Kubernetes cluster for developing
// this project: etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler built from source (hack/k8s-binaries.sh), plus a small pod
// runner that plays the kubelet of a single node called "local" and runs
// each pod as a local process of this repository's binaries.
//
// It is a development tool, not a Kubernetes distribution: pods have no
// container isolation, there is no kube-proxy and no cluster DNS. See
// docs/local-cluster.md.
//
//	localcluster up       start everything in the background and wait until usable
//	localcluster down     stop what up started (by pid)
//	localcluster status   show what runs
//	localcluster runner   the pod runner loop (started by up)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

const usage = `localcluster runs a one-machine Kubernetes cluster for development.

Usage:
  localcluster up      [--dir DIR] [--k8s-bin DIR] [--bin DIR] [--timeout 90s]
  localcluster down    [--dir DIR]
  localcluster status  [--dir DIR]
  localcluster runner  [--dir DIR] [--bin DIR]     (started by up; runs the node's pods)

State (kubeconfig, pids, logs, volumes) lives in DIR, by default .localcluster
at the repository root. Kubernetes binaries come from --k8s-bin, by default
$KUBEBUILDER_ASSETS or what hack/k8s-binaries.sh prints.
`

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "localcluster:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Print(usage)
		return nil
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet("localcluster "+cmd, flag.ContinueOnError)
	root, _ := repoRoot()
	dir := fs.String("dir", filepath.Join(root, ".localcluster"), "state directory")
	k8sBin := fs.String("k8s-bin", os.Getenv("KUBEBUILDER_ASSETS"), "directory holding etcd, kube-apiserver, kube-controller-manager, kube-scheduler")
	bin := fs.String("bin", filepath.Join(root, "bin"), "directory holding this repository's binaries (pushnode, manager, pushctl)")
	timeout := fs.Duration("timeout", 90*time.Second, "how long up waits for the cluster to become usable")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	l, err := newLayout(*dir)
	if err != nil {
		return err
	}
	binDir, err := filepath.Abs(*bin)
	if err != nil {
		return err
	}
	switch cmd {
	case "up":
		kb := *k8sBin
		if kb == "" {
			if kb, err = k8sBinaries(root); err != nil {
				return err
			}
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return up(ctx, l, kb, binDir, *timeout)
	case "down":
		return down(l)
	case "status":
		return status(l)
	case "runner":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return runRunner(ctx, l, binDir)
	}
	return fmt.Errorf("unknown command %q (try localcluster help)", cmd)
}

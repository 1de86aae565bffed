package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// runningComponents are the components whose recorded process runs.
func runningComponents(l layout) []string {
	var out []string
	for _, c := range components {
		if r, err := readPid(l.pidFile(c)); err == nil && r.alive() {
			out = append(out, c)
		}
	}
	return out
}

// down stops every process recorded in pids/: helpers that scripts
// recorded there, then what up started (newest first), then any pod
// process the runner left behind; each by its recorded pid and start
// time: SIGTERM, then SIGKILL after a timeout. The state directory stays
// for inspection until the next up.
func down(l layout) error {
	var errs []error
	// Helpers recorded by scripts (e.g. hack/demo.sh's phone) first.
	extra, _ := filepath.Glob(l.pidFile("*"))
	for _, p := range extra {
		name := strings.TrimSuffix(filepath.Base(p), ".pid")
		if slices.Contains(components, name) {
			continue
		}
		stopped, err := stopPidFile(p, 5*time.Second)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
		if stopped {
			say("stopped %s", name)
		}
	}
	for i := len(components) - 1; i >= 0; i-- {
		name := components[i]
		timeout := 15 * time.Second
		if name == "runner" {
			timeout = 45 * time.Second // it stops its pods first, each with its grace period
		}
		stopped, err := stopPidFile(l.pidFile(name), timeout)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
		if stopped {
			say("stopped %s", name)
		}
	}
	// Pod processes outlive the runner only if it was killed.
	pids, _ := filepath.Glob(filepath.Join(l.podPidDir(), "*.pid"))
	for _, p := range pids {
		stopped, err := stopPidFile(p, 10*time.Second)
		if err != nil {
			errs = append(errs, err)
		}
		if stopped {
			say("stopped leftover pod process %s", strings.TrimSuffix(filepath.Base(p), ".pid"))
		}
	}
	if len(errs) == 0 {
		say("down; state kept in %s until the next up", l.dir)
	}
	return errors.Join(errs...)
}

func status(l layout) error {
	if b, err := os.ReadFile(l.clusterFile()); err == nil {
		var info clusterInfo
		if json.Unmarshal(b, &info) == nil {
			fmt.Printf("apiserver   %s (started %s)\nkubeconfig  %s\n", info.APIServer, info.Started.Format(time.RFC3339), l.kubeconfig())
		}
	}
	for _, c := range components {
		st := "stopped"
		if r, err := readPid(l.pidFile(c)); err == nil && r.alive() {
			st = fmt.Sprintf("running  pid %d", r.pid)
		}
		fmt.Printf("%-24s %s   log %s\n", c, st, l.log(c))
	}
	extra, _ := filepath.Glob(l.pidFile("*"))
	pods, _ := filepath.Glob(filepath.Join(l.podPidDir(), "*.pid"))
	for _, p := range append(extra, pods...) {
		name := strings.TrimSuffix(filepath.Base(p), ".pid")
		if slices.Contains(components, name) {
			continue
		}
		if r, err := readPid(p); err == nil && r.alive() {
			what := "helper"
			if filepath.Dir(p) == l.podPidDir() {
				what = "pod process"
			}
			fmt.Printf("%-11s %-50s pid %d\n", what, name, r.pid)
		}
	}
	if len(runningComponents(l)) == 0 {
		fmt.Println("not running")
	}
	return nil
}

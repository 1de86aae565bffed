// Command pushload is a load generator for DDPush v1 push servers. It
// speaks only the wire protocol (UDP heartbeats and acks to the client
// port, push requests to the push port), so the same tool measures this
// project's pushnode, the original Java DDPush server, or anything else
// that claims compatibility. Only the HTTP bulk push mode uses pushnode's
// HTTP API.
//
// Workloads, each a subcommand (pushload help WORKLOAD lists its flags):
//
//	heartbeat   heartbeat answers per second (policy "always")
//	ceiling     the same against a do-nothing answerer: what the machine can do
//	push        pushes per second and push-to-phone latency (port 9999 or HTTP bulk)
//	backlog     offline clients with a pending 0x20 all heartbeat: deliveries/s
//	scale       memory per record, start-to-ready time, store size (starts pushnode)
//	durability  pushes answered 0 across a SIGKILL (starts pushnode)
//	report      turn saved results into a table with the targets
//
// Every workload targets --client/--push/--http, or, with --node-binary,
// starts a fresh pushnode on loopback ports itself and stops it after.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

type workload struct {
	name  string
	short string
	run   func(ctx context.Context, args []string, stdout io.Writer) error
}

var workloads = []workload{
	{"heartbeat", "heartbeat answers/s, optionally compared with the do-nothing ceiling", runHeartbeat},
	{"ceiling", "heartbeat answers/s of a do-nothing answerer (this machine's ceiling)", runCeiling},
	{"push", "pushes/s and push-to-phone latency over the push port or the HTTP bulk API", runPush},
	{"backlog", "offline clients each with a pending 0x20 all heartbeat: deliveries/s", runBacklog},
	{"scale", "resident memory per record, start-to-ready and store size at N records (starts pushnode)", runScale},
	{"durability", "pushes answered 0 while the node is SIGKILLed, found after restart (starts pushnode)", runDurability},
	{"report", "print a results table from saved results", runReport},
	{serveCeilingCmd, "", runServeCeiling}, // internal: the ceiling answerer's child process
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: pushload WORKLOAD [flags]\n\nA load generator that speaks only the DDPush v1 wire protocol.\n\nWorkloads:")
	for _, wl := range workloads {
		if wl.short != "" {
			fmt.Fprintf(w, "  %-11s %s\n", wl.name, wl.short)
		}
	}
	fmt.Fprintln(w, "\n`pushload WORKLOAD -h` lists a workload's flags. Targets default to 127.0.0.1 and the\nprotocol's ports; --node-binary makes a workload start (and stop) its own pushnode.")
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		if len(args) > 1 {
			return run([]string{args[1], "-h"}, stdout, stderr)
		}
		usage(stdout)
		return 0
	}
	var wl *workload
	for i := range workloads {
		if workloads[i].name == args[0] {
			wl = &workloads[i]
		}
	}
	if wl == nil {
		fmt.Fprintf(stderr, "pushload: unknown workload %q\n", args[0])
		usage(stderr)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Children (nodes, the ceiling answerer) are stopped whatever happens.
	defer killChildren()
	err := wl.run(ctx, args[1:], stdout)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "pushload %s: %v\n", wl.name, err)
		return 2
	default:
		fmt.Fprintf(stderr, "pushload %s: %v\n", wl.name, err)
		return 1
	}
}

var errUsage = errors.New("usage")

func usageErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, a...))
}

// newFlags makes a workload's flag set; parse errors are returned, not
// printed twice.
func newFlags(name string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("pushload "+name, flag.ContinueOnError)
	fs.SetOutput(out)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageErr("%v", err)
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected arguments %q", fs.Args())
	}
	return nil
}

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, " ") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

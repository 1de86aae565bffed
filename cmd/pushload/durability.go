package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/ddpush/ddpush-operator/node/wire"
)

func runDurability(ctx context.Context, args []string, stdout io.Writer) error {
	var cm common
	fs := newFlags("durability", stdout)
	cm.register(fs)
	conns := fs.Int("conns", 32, "push port connections")
	size := fs.Int("size", 32, "custom payload bytes (at least 17)")
	killAfter := fs.Duration("kill-after", 3*time.Second, "SIGKILL the node this long after the pushes start")
	maxPushes := fs.Int("max-pushes", 1_000_000, "uuids prepared (one push each); the kill comes earlier if they run out")
	rounds := fs.Int("rounds", 1, "kill-and-restart rounds, each on a fresh data directory")
	sockets := fs.Int("sockets", 64, "UDP sockets of the phones that check the pushes after the restart")
	window := fs.Int("window", 32, "heartbeats in flight per socket while checking")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: pushload durability --node-binary BIN [flags]\n\nStarts pushnode, pushes a custom message to a new uuid per push from many\nconnections, SIGKILLs the node while pushes are in flight, restarts it on the same\ndata, and has every uuid whose push was answered 0 heartbeat: its message must be\nthere, byte for byte. Needs --node-binary: it kills the server, so it does not\napply to a server pushload did not start.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if cm.nodeBinary == "" {
		return usageErr("durability kills and restarts the server: give --node-binary (it does not apply to a foreign server)")
	}
	if err := cm.validate(); err != nil {
		return err
	}
	if *conns < 1 || *killAfter <= 0 || *maxPushes < 1 || *rounds < 1 {
		return usageErr("--conns, --kill-after, --max-pushes and --rounds must be positive")
	}
	if *size < payloadHeader || *size > rbufSize-wire.ServerHeaderLen {
		return usageErr("--size must be %d..%d", payloadHeader, rbufSize-wire.ServerHeaderLen)
	}
	res := newResult("durability")
	for k, v := range map[string]any{"conns": *conns, "size": *size, "kill_after": killAfter.String(), "rounds": *rounds} {
		res.Params[k] = v
	}
	res.Target = "pushnode started by pushload (" + filepath.Base(cm.nodeBinary) + ")"
	var accepted, found, lost, unanswered int64
	var rates, readies []float64
	for r := range *rounds {
		a, fnd, l, un, rate, ready, err := durabilityRound(ctx, &cm, *conns, *size, *killAfter, *maxPushes, *sockets, *window, r, stdout)
		if err != nil {
			return fmt.Errorf("round %d: %w", r+1, err)
		}
		readies = append(readies, ready.Seconds())
		accepted += a
		found += fnd
		lost += l
		unanswered += un
		rates = append(rates, rate)
	}
	res.Metrics["accepted_before_kill"] = float64(accepted)
	res.Metrics["found_after_restart"] = float64(found)
	res.Metrics["lost"] = float64(lost)
	res.Metrics["in_flight_at_kill"] = float64(unanswered)
	res.Metrics["pushes_per_s_before_kill"] = median(rates)
	res.Metrics["restart_to_ready_max_s"] = maxOf(readies)
	if lost > 0 {
		res.note("%d pushes answered 0 were not found after the restart", lost)
	}
	return res.emit(stdout, cm.out)
}

func durabilityRound(ctx context.Context, cm *common, conns, size int, killAfter time.Duration, maxPushes, sockets, window, round int, stdout io.Writer) (accepted, found, lost, unanswered int64, rate float64, ready time.Duration, err error) {
	tmp, err := os.MkdirTemp("", "pushload-durability-")
	if err != nil {
		return
	}
	defer os.RemoveAll(tmp)
	data := filepath.Join(tmp, "data")
	flags := append([]string{"--heartbeat-policy", "always"}, cm.nodeArgs...)
	n, err := startNode(ctx, cm.nodeBinary, data, flags, cm.nodeEnv, 60*time.Second)
	if err != nil {
		return
	}
	defer n.Kill()
	prefix := fmt.Sprintf("%sr%d-", cm.prefix, round)
	ids := uuids(prefix, 0, maxPushes)

	stop := make(chan struct{})
	killed := make(chan time.Duration, 1)
	go func() {
		t := time.NewTimer(killAfter)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		start := time.Now()
		n.Kill() // SIGKILL while the pushes keep coming
		killed <- time.Since(start)
		close(stop)
	}()
	pr, _ := pushEach(ctx, n.Push, ids, allIndices(len(ids)), conns, size, byte(cm.appID), stop)
	<-killed
	if ctx.Err() != nil {
		return 0, 0, 0, 0, 0, 0, ctx.Err()
	}
	accepted, unanswered = pr.Accepted, pr.Unanswered
	rate = float64(pr.Accepted) / killAfter.Seconds()
	fmt.Fprintf(stdout, "round %d: %d pushes answered 0 before SIGKILL (%.0f/s), %d in flight\n", round+1, accepted, rate, unanswered)

	// Restart on the same data and look for every answered push.
	n2, err := startNode(ctx, cm.nodeBinary, data, flags, cm.nodeEnv, 60*time.Second)
	if err != nil {
		return
	}
	defer n2.Kill()
	ready = n2.ReadyAfter
	var todo []int
	for _, a := range pr.Answered {
		todo = append(todo, a...)
	}
	f, err := newFleet(n2.Client, ids, sockets, 64, byte(cm.appID))
	if err != nil {
		return
	}
	defer f.close()
	var ok, missing, wrong atomic.Int64
	st, err := drain(ctx, f, todo, drainConfig{window: window, retry: 500 * time.Millisecond, tries: 10, timeout: 5 * time.Minute},
		func(si int, s *phoneSock, phone int, m *wire.ServerMessage) verdict {
			if phone < 0 {
				return waitMore
			}
			switch m.Cmd {
			case wire.CmdCustom:
				pl, good := parsePayload(m.Body)
				if !good || pl.start != phone || len(m.Body) != size || !bytes.Equal(m.Body[payloadHeader:], filler(size-payloadHeader)) {
					wrong.Add(1)
					return finished
				}
				ok.Add(1)
				s.queue(byte(cm.appID), wire.CmdCustom, ids[phone], nil)
				return finished
			case wire.CmdHeartbeat:
				missing.Add(1) // nothing pending: the push is gone
				return finished
			}
			return waitMore
		})
	if err != nil {
		return
	}
	found = ok.Load()
	lost = int64(len(todo)) - found
	fmt.Fprintf(stdout, "round %d: after restart (%v to ready, %d records) found %d of %d (%d missing, %d wrong, %d unanswered)\n",
		round+1, n2.ReadyAfter.Round(time.Millisecond), n2.Records, found, len(todo), missing.Load(), wrong.Load(), st.Failed)
	_, _ = n2.Stop(30 * time.Second)
	return
}

// filler is what appendPayload pads with.
func filler(n int) []byte { return bytes.Repeat([]byte{'x'}, n) }

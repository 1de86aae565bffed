package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ddpush/ddpush-operator/node/wire"
)

func runBacklog(ctx context.Context, args []string, stdout io.Writer) error {
	var cm common
	fs := newFlags("backlog", stdout)
	cm.register(fs)
	clients := fs.Int("clients", 100_000, "offline clients, each pushed one 0x20 before any heartbeat")
	conns := fs.Int("conns", 32, "push port connections filling the backlog")
	size := fs.Int("size", 64, "custom payload bytes (at least 17)")
	sockets := fs.Int("sockets", 64, "UDP sockets the phones share")
	batch := fs.Int("batch", 64, "datagrams per sendmmsg/recvmmsg")
	window := fs.Int("window", 32, "heartbeats in flight per socket (at most 127; with acks in flight too, more overflows the server's socket buffer)")
	retry := fs.Duration("retry", 500*time.Millisecond, "heartbeat a phone again when its message has not come within this")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up on the whole drain after this")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: pushload backlog [flags]\n\nPushes one custom message to each of --clients never-seen uuids (offline\nclients), then has them all heartbeat: deliveries per second until every\nmessage is received and acked, then a second heartbeat of every client checks\nthat the acks took (needs the heartbeat policy \"always\").\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := cm.validate(); err != nil {
		return err
	}
	if *clients < 1 || *conns < 1 || *sockets < 1 || *window < 1 || *retry <= 0 {
		return usageErr("--clients, --conns, --sockets, --window and --retry must be positive")
	}
	if *size < payloadHeader || *size > rbufSize-wire.ServerHeaderLen {
		return usageErr("--size must be %d..%d", payloadHeader, rbufSize-wire.ServerHeaderLen)
	}
	res := newResult("backlog")
	for k, v := range map[string]any{"clients": *clients, "conns": *conns, "size": *size, "sockets": *sockets, "window": *window} {
		res.Params[k] = v
	}
	t, err := cm.open(ctx, "--heartbeat-policy", "always")
	if err != nil {
		return err
	}
	defer t.close()
	res.Target = t.Name
	ids := uuids(cm.prefix, 0, *clients)

	// 1. The backlog: one custom message per offline client.
	fill, err := pushEach(ctx, t.Push, ids, allIndices(len(ids)), *conns, *size, byte(cm.appID), nil)
	if err != nil {
		return fmt.Errorf("fill: %w", err)
	}
	if fill.Accepted != int64(len(ids)) {
		return fmt.Errorf("fill: %d of %d pushes accepted (%d rejected)", fill.Accepted, len(ids), fill.Rejected)
	}
	res.Metrics["fill_pushes_per_s"] = fill.Rate
	fmt.Fprintf(stdout, "backlog: %d offline clients with a pending 0x20 (%.0f pushes/s)\n", len(ids), fill.Rate)

	// 2. Every client heartbeats; each gets its message and acks it.
	f, err := newFleet(t.Client, ids, *sockets, *batch, byte(cm.appID))
	if err != nil {
		return err
	}
	defer f.close()
	delivered := make([]bool, len(ids))
	var deliveries, empty, strange atomic.Int64
	prof := cm.profile(ctx, t, "backlog", 5*time.Second)
	cpu := startCPU(t.pid())
	st, err := drain(ctx, f, allIndices(len(ids)), drainConfig{window: *window, retry: *retry, tries: 20, timeout: *timeout},
		func(si int, s *phoneSock, phone int, m *wire.ServerMessage) verdict {
			switch m.Cmd {
			case wire.CmdCustom:
				pl, ok := parsePayload(m.Body)
				if !ok || pl.start < 0 || pl.start >= len(ids) {
					strange.Add(1)
					return waitMore
				}
				if !delivered[pl.start] {
					delivered[pl.start] = true
					deliveries.Add(1)
				}
				s.queue(byte(cm.appID), wire.CmdCustom, ids[pl.start], nil)
				if pl.start == phone {
					return finished
				}
			case wire.CmdHeartbeat:
				// Nothing pending: delivered on an earlier answer, or lost.
				if phone >= 0 && !delivered[phone] {
					empty.Add(1)
				}
				return finished
			}
			return waitMore
		})
	m := map[string]float64{}
	cpu.done(m)
	waitProfile(prof, res)
	if err != nil {
		return fmt.Errorf("deliver: %w", err)
	}
	secs := st.Last.Seconds()
	res.Metrics["deliveries"] = float64(deliveries.Load())
	rate := 0.0
	if secs > 0 {
		rate = float64(deliveries.Load()) / secs
	}
	res.Metrics["deliveries_per_s"] = rate
	res.Metrics["drain_seconds"] = secs
	res.Metrics["heartbeats_resent"] = float64(st.Retries)
	res.Metrics["clients_given_up"] = float64(st.Failed)
	res.Metrics["missing_messages"] = float64(empty.Load())
	res.Metrics["server_cpu_cores"] = m["server_cpu_cores"]
	res.Metrics["generator_cpu_cores"] = m["generator_cpu_cores"]
	res.Metrics["machine_busy_cores"] = m["machine_busy_cores"]
	fmt.Fprintf(stdout, "delivered %d of %d in %.2fs: %.0f deliveries/s (%d heartbeats resent, %d answered without their message)\n",
		deliveries.Load(), len(ids), secs, rate, st.Retries, empty.Load())
	if st.Failed > 0 {
		res.note("%d clients never received their message: the rate counts none of them", st.Failed)
	}
	if empty.Load() > 0 {
		res.note("%d clients answered 0x00 without their pending message: pushes answered 0 were lost", empty.Load())
	}

	// 3. Every ack took: a second heartbeat finds nothing pending.
	time.Sleep(200 * time.Millisecond)
	var redelivered atomic.Int64
	vst, err := drain(ctx, f, allIndices(len(ids)), drainConfig{window: *window, retry: *retry, tries: 3, timeout: *timeout},
		func(si int, s *phoneSock, phone int, m *wire.ServerMessage) verdict {
			switch m.Cmd {
			case wire.CmdCustom:
				redelivered.Add(1)
				if pl, ok := parsePayload(m.Body); ok && pl.start >= 0 && pl.start < len(ids) {
					s.queue(byte(cm.appID), wire.CmdCustom, ids[pl.start], nil)
				}
			case wire.CmdHeartbeat:
				return finished
			}
			return waitMore
		})
	switch {
	case err != nil:
		res.note("ack check failed: %v", err)
	case vst.Done == 0:
		res.note("ack check skipped: the server does not answer heartbeats with 0x00 (policy not \"always\")")
	default:
		res.Metrics["redelivered_after_ack"] = float64(redelivered.Load())
		res.Metrics["acks_confirmed"] = float64(vst.Done)
	}
	return res.emit(stdout, cm.out)
}

func allIndices(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// pushResult is what pushEach measured.
type pushResult struct {
	Accepted, Rejected int64
	Rate               float64       // accepted per second
	Elapsed            time.Duration //
	// Answered lists, per connection, the phone indices answered 0.
	Answered [][]int
	// Unanswered is the number of pushes sent whose answer never came.
	Unanswered int64
}

// pushEach pushes one custom message (payload: its phone index) to each
// phone in idx over conns push connections (phone idx[k] on connection
// k % conns). With stopOnError, a transport error ends that connection
// quietly (the server was killed); otherwise it is returned.
func pushEach(ctx context.Context, addr string, ids []wire.UUID, idx []int, conns, size int, appID byte, stop <-chan struct{}) (pushResult, error) {
	var res pushResult
	res.Answered = make([][]int, conns)
	var accepted, rejected, unanswered atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, conns)
	start := time.Now()
	for c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				errs[c] = err
				return
			}
			defer conn.Close()
			var req, body []byte
			var ans [1]byte
			for k := c; k < len(idx); k += conns {
				if ctx.Err() != nil {
					errs[c] = ctx.Err()
					return
				}
				if stop != nil {
					select {
					case <-stop:
						return
					default:
					}
				}
				i := idx[k]
				body = appendPayload(body[:0], time.Now(), i, 1, 0, size)
				req = wire.AppendPush(req[:0], appID, wire.CmdCustom, ids[i], body)
				_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
				if _, err := conn.Write(req); err != nil {
					unanswered.Add(1)
					if stop == nil {
						errs[c] = err
					}
					return
				}
				if _, err := io.ReadFull(conn, ans[:]); err != nil {
					unanswered.Add(1)
					if stop == nil {
						errs[c] = err
					}
					return
				}
				if ans[0] == wire.PushAccepted {
					accepted.Add(1)
					res.Answered[c] = append(res.Answered[c], i)
				} else {
					rejected.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	res.Accepted, res.Rejected, res.Unanswered = accepted.Load(), rejected.Load(), unanswered.Load()
	res.Rate = float64(res.Accepted) / res.Elapsed.Seconds()
	return res, errors.Join(errs...)
}

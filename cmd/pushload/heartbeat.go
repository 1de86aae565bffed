package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ddpush/ddpush-operator/node/wire"
)

// hbConfig sizes the heartbeat generator.
type hbConfig struct {
	uuids    int
	sockets  int
	batch    int           // datagrams per sendmmsg/recvmmsg
	window   int           // heartbeats in flight per socket
	warmup   time.Duration // not counted
	duration time.Duration // counted
	timeout  time.Duration // silence after which the heartbeats in flight count as lost
}

func (c *hbConfig) register(fs *flag.FlagSet) {
	fs.IntVar(&c.uuids, "uuids", 100_000, "distinct phones (uuids) heartbeating")
	fs.IntVar(&c.sockets, "sockets", 64, "UDP sockets the phones share (phone i uses socket i % sockets)")
	fs.IntVar(&c.batch, "batch", 32, "datagrams per sendmmsg/recvmmsg")
	fs.IntVar(&c.window, "window", 64, "heartbeats in flight per socket")
	fs.DurationVar(&c.warmup, "warmup", 2*time.Second, "load before counting (creates the records)")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "counted load per round")
	fs.DurationVar(&c.timeout, "timeout", 200*time.Millisecond, "silence after which heartbeats in flight count as lost and are resent")
}

func (c *hbConfig) validate() error {
	if c.uuids < 1 || c.sockets < 1 || c.batch < 1 || c.window < 1 || c.duration <= 0 || c.warmup < 0 || c.timeout <= 0 {
		return usageErr("--uuids, --sockets, --batch, --window, --duration and --timeout must be positive")
	}
	c.window = max(c.window, c.batch)
	return nil
}

func (c *hbConfig) params(p map[string]any) {
	p["uuids"] = c.uuids
	p["sockets"] = c.sockets
	p["batch"] = c.batch
	p["window"] = c.window
	p["warmup"] = c.warmup.String()
	p["duration"] = c.duration.String()
}

// hbStats is what one heartbeat run measured.
type hbStats struct {
	Answers  int64   // 0x00 answers inside the counted window
	Rate     float64 // answers per second
	Other    int64   // other server messages (pending pushes) inside the window
	Lost     int64   // heartbeats given up after the timeout, whole run
	Sent     int64   // heartbeats sent, whole run
	Received int64   // datagrams received, whole run
}

// heartbeatLoad keeps window heartbeats in flight on every socket, sent
// and received in batches, for warmup+duration, and counts the answers
// that arrive during the counted window.
func heartbeatLoad(ctx context.Context, server string, ids []wire.UUID, c hbConfig, appID byte) (hbStats, error) {
	f, err := newFleet(server, ids, c.sockets, c.batch, appID)
	if err != nil {
		return hbStats{}, err
	}
	defer f.close()
	start := time.Now()
	from, to := start.Add(c.warmup), start.Add(c.warmup+c.duration)
	var answers, other, lost atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, len(f.socks))
	for si, s := range f.socks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			phones := f.phones(si)
			next, inflight := 0, 0
			var a, o, l int64
			defer func() { answers.Add(a); other.Add(o); lost.Add(l) }()
			var m wire.ServerMessage
			for {
				now := time.Now()
				if !now.Before(to) || ctx.Err() != nil {
					return
				}
				if inflight <= c.window-c.batch {
					for k := c.window - inflight; k > 0; k-- {
						s.queue(appID, wire.CmdHeartbeat, ids[phones[next]], nil)
						next++
						if next == len(phones) {
							next = 0
						}
					}
					n := s.pending()
					if err := s.flush(); err != nil {
						errs[si] = err
						return
					}
					inflight += n
				}
				n, err := s.read(now.Add(c.timeout))
				if err != nil {
					errs[si] = err
					return
				}
				if n == 0 {
					l += int64(inflight)
					inflight = 0
					continue
				}
				t := time.Now()
				counted := !t.Before(from) && t.Before(to)
				for j := range n {
					inflight = max(inflight-1, 0)
					if wire.DecodeServer(s.msg(j), &m) != nil || !counted {
						continue
					}
					if m.Cmd == wire.CmdHeartbeat {
						a++
					} else {
						o++
					}
				}
			}
		}()
	}
	wg.Wait()
	st := hbStats{Answers: answers.Load(), Other: other.Load(), Lost: lost.Load()}
	for _, s := range f.socks {
		st.Sent += s.Sent
		st.Received += s.Recvd
	}
	st.Rate = float64(st.Answers) / c.duration.Seconds()
	for _, err := range errs {
		if err != nil {
			if isRefused(err) {
				return st, fmt.Errorf("%s refuses UDP (nothing listens there?): %w", server, err)
			}
			return st, err
		}
	}
	if ctx.Err() != nil {
		return st, ctx.Err()
	}
	return st, nil
}

func runHeartbeat(ctx context.Context, args []string, stdout io.Writer) error {
	var cm common
	var hc hbConfig
	fs := newFlags("heartbeat", stdout)
	cm.register(fs)
	hc.register(fs)
	rounds := fs.Int("rounds", 1, "rounds; with --compare-ceiling each round measures the ceiling, then the server")
	compare := fs.Bool("compare-ceiling", false, "also measure the do-nothing answerer in the same run and report the server as a share of it")
	readers := fs.Int("ceiling-readers", 0, "reader goroutines of the ceiling answerer (default: as pushnode, max(2, GOMAXPROCS))")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: pushload heartbeat [flags]\n\nHeartbeat answers per second. The server must answer every heartbeat with 0x00\n(pushnode: --heartbeat-policy always; Java DDPush: ACK_HEARTBEAT_POLICY=always).\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := cm.validate(); err != nil {
		return err
	}
	if err := hc.validate(); err != nil {
		return err
	}
	if *rounds < 1 {
		return usageErr("--rounds must be positive")
	}
	res := newResult("heartbeat")
	hc.params(res.Params)
	res.Params["rounds"] = *rounds
	res.Params["compare_ceiling"] = *compare

	t, err := cm.open(ctx, "--heartbeat-policy", "always", "--max-records", fmt.Sprint(hc.uuids+1000))
	if err != nil {
		return err
	}
	defer t.close()
	res.Target = t.Name
	var ceil *ceilingProc
	if *compare {
		if ceil, err = startCeiling(ctx, *readers, false, cm.nodeEnv); err != nil {
			return err
		}
		defer ceil.stop()
		res.Params["ceiling_readers"] = ceil.readers
	}
	ids := uuids(cm.prefix, 0, hc.uuids)
	var nodeRates, ceilRates, shares, nodeCPU, ceilCPU, genCPU, busy []float64
	var lostTotal, otherTotal int64
	for r := range *rounds {
		if ceil != nil {
			m := map[string]float64{}
			cpu := startCPU(ceil.pid())
			st, err := heartbeatLoad(ctx, ceil.addr, ids, hc, byte(cm.appID))
			cpu.done(m)
			if err != nil {
				return fmt.Errorf("ceiling round %d: %w", r+1, err)
			}
			ceilRates = append(ceilRates, st.Rate)
			ceilCPU = append(ceilCPU, m["server_cpu_cores"])
			fmt.Fprintf(stdout, "round %d ceiling: %.0f answers/s (answerer %.2f cores, generator %.2f cores)\n", r+1, st.Rate, m["server_cpu_cores"], m["generator_cpu_cores"])
		}
		var prof <-chan error
		if r == 0 {
			prof = cm.profile(ctx, t, "heartbeat", hc.warmup+hc.duration)
		}
		m := map[string]float64{}
		cpu := startCPU(t.pid())
		st, err := heartbeatLoad(ctx, t.Client, ids, hc, byte(cm.appID))
		cpu.done(m)
		waitProfile(prof, res)
		if err != nil {
			return fmt.Errorf("round %d: %w", r+1, err)
		}
		if st.Answers == 0 {
			return fmt.Errorf("no heartbeat answered: is the server's heartbeat policy \"always\"? (%d sent, %d received)", st.Sent, st.Received)
		}
		nodeRates = append(nodeRates, st.Rate)
		if ceil != nil {
			shares = append(shares, st.Rate/ceilRates[len(ceilRates)-1])
		}
		nodeCPU = append(nodeCPU, m["server_cpu_cores"])
		busy = append(busy, m["machine_busy_cores"])
		genCPU = append(genCPU, m["generator_cpu_cores"])
		lostTotal += st.Lost
		otherTotal += st.Other
		fmt.Fprintf(stdout, "round %d server:  %.0f answers/s (server %.2f cores, generator %.2f cores, machine %.2f cores busy, %d lost)\n", r+1, st.Rate, m["server_cpu_cores"], m["generator_cpu_cores"], m["machine_busy_cores"], st.Lost)
	}
	res.Metrics["answers_per_s"] = median(nodeRates)
	res.Metrics["answers_per_s_max"] = maxOf(nodeRates)
	res.Metrics["lost_heartbeats"] = float64(lostTotal)
	res.Metrics["other_messages"] = float64(otherTotal)
	res.Metrics["generator_cpu_cores"] = median(genCPU)
	res.Metrics["machine_busy_cores"] = median(busy)
	if t.node != nil {
		res.Metrics["server_cpu_cores"] = median(nodeCPU)
	}
	if ceil != nil {
		res.Metrics["ceiling_answers_per_s"] = median(ceilRates)
		res.Metrics["ceiling_cpu_cores"] = median(ceilCPU)
		// Each server round is compared with the ceiling round just before
		// it, so that drift in what the machine can do cancels out.
		res.Metrics["share_of_ceiling"] = median(shares)
		res.Metrics["share_of_ceiling_min"] = minOf(shares)
		res.Metrics["share_of_ceiling_max"] = maxOf(shares)
		res.note("server at %.1f%% of the do-nothing ceiling (median over %d alternating rounds of server/ceiling; medians %.0f and %.0f answers/s)",
			100*median(shares), *rounds, median(nodeRates), median(ceilRates))
	}
	return res.emit(stdout, cm.out)
}

func minOf(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	m := v[0]
	for _, x := range v {
		m = min(m, x)
	}
	return m
}

func maxOf(v []float64) float64 {
	m := 0.0
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

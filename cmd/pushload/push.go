package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// The custom payloads pushload pushes carry what the phones need to
// measure latency and to ack the right uuid, followed by filler:
//
//	[0:8]   send time, unix nanoseconds
//	[8:12]  first phone index the push went to
//	[12:16] number of phones (1 on the push port; the bulk size over HTTP)
//	[16]    phase (which measurement the push belongs to)
const payloadHeader = 17

func appendPayload(dst []byte, sent time.Time, start, count int, phase byte, size int) []byte {
	n := len(dst)
	dst = binary.BigEndian.AppendUint64(dst, uint64(sent.UnixNano()))
	dst = binary.BigEndian.AppendUint32(dst, uint32(start))
	dst = binary.BigEndian.AppendUint32(dst, uint32(count))
	dst = append(dst, phase)
	for len(dst)-n < size {
		dst = append(dst, 'x')
	}
	return dst
}

type payload struct {
	sent         int64
	start, count int
	phase        byte
}

func parsePayload(b []byte) (payload, bool) {
	if len(b) < payloadHeader {
		return payload{}, false
	}
	return payload{
		sent:  int64(binary.BigEndian.Uint64(b)),
		start: int(binary.BigEndian.Uint32(b[8:])),
		count: int(binary.BigEndian.Uint32(b[12:])),
		phase: b[16],
	}, true
}

type pushConfig struct {
	phones   int
	sockets  int
	batch    int
	conns    int
	size     int
	warmup   time.Duration
	duration time.Duration
	settle   time.Duration
	rates    string
	via      string
	bulk     int
	httpConn int
}

// phase is one measurement: pushes at a rate (0: as fast as possible).
type phase struct {
	name     string
	rate     float64
	from, to atomic.Int64 // the counted window, unix ns
	hists    []*hist      // push-to-phone latency, per phone socket
	hmu      []sync.Mutex // guards hists[i]: phones keep receiving while a phase is summed up
	answer   []*hist      // push answer latency, per pusher
	accepted atomic.Int64 // answered 0 inside the window (targets, for bulk)
	total    atomic.Int64 // answered 0 in the whole phase
	rejected atomic.Int64
	failed   atomic.Int64 // transport errors
	deliv    atomic.Int64 // custom messages phones received for this phase
	dupes    atomic.Int64 // ... of which a phone had already acked (retransmissions)
}

func runPush(ctx context.Context, args []string, stdout io.Writer) error {
	var cm common
	var pc pushConfig
	fs := newFlags("push", stdout)
	cm.register(fs)
	fs.IntVar(&pc.phones, "phones", 10_000, "online phones the pushes go to, round robin; they ack everything")
	fs.IntVar(&pc.sockets, "sockets", 64, "UDP sockets the phones share")
	fs.IntVar(&pc.batch, "batch", 64, "datagrams per sendmmsg/recvmmsg on the phones' side")
	fs.IntVar(&pc.conns, "conns", 32, "push port connections (each waits for the answer before the next push, as DDPush's Pusher does)")
	fs.IntVar(&pc.size, "size", 64, "custom payload bytes (at least 17: send time, target and phase)")
	fs.DurationVar(&pc.warmup, "warmup", 2*time.Second, "pushing before counting, per phase")
	fs.DurationVar(&pc.duration, "duration", 10*time.Second, "counted pushing per phase")
	fs.DurationVar(&pc.settle, "settle", 3*time.Second, "longest wait for the last deliveries after a phase")
	fs.StringVar(&pc.rates, "rates", "max,half", "phases: max (as fast as possible), half (half the rate max reached) or pushes/s")
	fs.StringVar(&pc.via, "via", "port", "port: DDPush push port (9999); http: pushnode's HTTP bulk API")
	fs.IntVar(&pc.bulk, "bulk", 500, "with --via http: phones per bulk request")
	fs.IntVar(&pc.httpConn, "http-conns", 4, "with --via http: concurrent bulk requests")
	compare := fs.Bool("compare-ceiling", false, "also run the max phase against a do-nothing push answerer (answers 0 at once, forwards to the phone, keeps nothing) and report the server as a share of it")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: pushload push [flags]\n\nPushes per second to online phones that ack everything, and the latency from\nsending a push to the phone receiving it (the payload carries its send time).\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := cm.validate(); err != nil {
		return err
	}
	if pc.phones < 1 || pc.sockets < 1 || pc.conns < 1 || pc.duration <= 0 || pc.bulk < 1 || pc.httpConn < 1 {
		return usageErr("--phones, --sockets, --conns, --duration, --bulk and --http-conns must be positive")
	}
	if pc.size < payloadHeader || pc.size > rbufSize-wire.ServerHeaderLen {
		return usageErr("--size must be %d..%d", payloadHeader, rbufSize-wire.ServerHeaderLen)
	}
	if pc.via != "port" && pc.via != "http" {
		return usageErr("--via is port or http")
	}
	var phases []*phase
	for _, r := range strings.Split(pc.rates, ",") {
		r = strings.TrimSpace(r)
		p := &phase{name: r}
		switch r {
		case "max":
		case "half":
			if len(phases) == 0 {
				return usageErr("--rates: half needs a phase before it")
			}
		default:
			v, err := strconv.ParseFloat(r, 64)
			if err != nil || v <= 0 {
				return usageErr("--rates: %q is not max, half or a positive rate", r)
			}
			p.rate = v
			p.name = "rate" + r
		}
		phases = append(phases, p)
	}
	if len(phases) == 0 || len(phases) > 8 {
		return usageErr("--rates: give 1 to 8 phases")
	}

	res := newResult("push")
	for k, v := range map[string]any{"phones": pc.phones, "sockets": pc.sockets, "conns": pc.conns, "size": pc.size,
		"warmup": pc.warmup.String(), "duration": pc.duration.String(), "rates": pc.rates, "via": pc.via} {
		res.Params[k] = v
	}
	if pc.via == "http" {
		res.Workload = "push-http"
		res.Params["bulk"] = pc.bulk
		res.Params["http_conns"] = pc.httpConn
		delete(res.Params, "conns")
	}
	t, err := cm.open(ctx, "--heartbeat-policy", "always")
	if err != nil {
		return err
	}
	defer t.close()
	res.Target = t.Name
	if pc.via == "http" && t.Token == "" {
		return usageErr("--via http needs --token or --token-file")
	}

	var ceil *ceilingProc
	if *compare {
		if ceil, err = startCeiling(ctx, 0, true, cm.nodeEnv); err != nil {
			return err
		}
		defer ceil.stop()
	}
	ids := uuids(cm.prefix, 0, pc.phones)
	maxRate, err := measurePush(ctx, &cm, t, ids, pc, phases, "", res, stdout)
	if err != nil {
		return err
	}
	if ceil != nil {
		// The same load against an answerer that answers 0 at once and
		// forwards each push to the phone's last address: no state to
		// speak of, nothing durable. What this machine can do at all.
		ct := &target{Client: ceil.addr, Push: ceil.push, Name: "ceiling"}
		cp := []*phase{{name: "max"}}
		cpc := pc
		cpc.via = "port"
		cids := uuids(cm.prefix+"ceiling-", 0, pc.phones)
		ceilRate, err := measurePushOn(ctx, &cm, ct, ceil.pid(), cids, cpc, cp, "ceiling_", res, stdout)
		if err != nil {
			return fmt.Errorf("ceiling: %w", err)
		}
		if ceilRate > 0 {
			res.Metrics["share_of_ceiling"] = maxRate / ceilRate
			res.note("%.0f pushes/s is %.1f%% of the do-nothing push answerer's %.0f pushes/s in the same run", maxRate, 100*maxRate/ceilRate, ceilRate)
		}
	}
	return res.emit(stdout, cm.out)
}

// measurePush runs the phases against t and records their metrics
// (prefixed) in res. It returns the rate of the last flat-out phase.
func measurePush(ctx context.Context, cm *common, t *target, ids []wire.UUID, pc pushConfig, phases []*phase, prefix string, res *Result, stdout io.Writer) (float64, error) {
	return measurePushOn(ctx, cm, t, t.pid(), ids, pc, phases, prefix, res, stdout)
}

func measurePushOn(ctx context.Context, cm *common, t *target, pid int, ids []wire.UUID, pc pushConfig, phases []*phase, prefix string, res *Result, stdout io.Writer) (float64, error) {
	f, err := newFleet(t.Client, ids, pc.sockets, pc.batch, byte(cm.appID))
	if err != nil {
		return 0, err
	}
	defer f.close()
	for _, p := range phases {
		for range f.socks {
			p.hists = append(p.hists, newHist())
		}
		p.hmu = make([]sync.Mutex, len(f.socks))
	}
	ph := &phones{f: f, phases: phases, appID: byte(cm.appID)}
	stopPhones := ph.start()
	defer stopPhones()

	var maxRate float64
	for i, p := range phases {
		if p.name == "half" {
			p.rate = maxRate / 2
		}
		if err := ph.heartbeatAll(ctx); err != nil {
			return 0, err
		}
		if i == 0 && ph.hbAnswers.Load() == 0 {
			res.note("no heartbeat was answered: phones are assumed online (the server's heartbeat policy is not \"always\")")
		}
		var prof <-chan error
		if prefix == "" {
			prof = cm.profile(ctx, t, res.Workload+"-"+p.name, pc.warmup+pc.duration)
		}
		cpu := startCPU(pid)
		m := map[string]float64{}
		err := runPhase(ctx, t, ids, pc, byte(i), p, byte(cm.appID))
		cpu.done(m)
		waitProfile(prof, res)
		if err != nil {
			return 0, fmt.Errorf("phase %s: %w", p.name, err)
		}
		// Wait for the last deliveries.
		deadline := time.Now().Add(pc.settle)
		for p.deliv.Load()-p.dupes.Load() < p.total.Load() && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
		rate := float64(p.accepted.Load()) / pc.duration.Seconds()
		if p.rate == 0 {
			maxRate = rate
		}
		pre := prefix + p.name + "_"
		res.Metrics[pre+"pushes_per_s"] = rate
		if p.rate > 0 {
			res.Metrics[pre+"target_per_s"] = p.rate
		}
		res.Metrics[pre+"accepted"] = float64(p.total.Load())
		res.Metrics[pre+"rejected"] = float64(p.rejected.Load())
		res.Metrics[pre+"errors"] = float64(p.failed.Load())
		res.Metrics[pre+"delivered"] = float64(p.deliv.Load() - p.dupes.Load())
		res.Metrics[pre+"redelivered"] = float64(p.dupes.Load())
		res.Metrics[pre+"server_cpu_cores"] = m["server_cpu_cores"]
		res.Metrics[pre+"generator_cpu_cores"] = m["generator_cpu_cores"]
		res.Metrics[pre+"machine_busy_cores"] = m["machine_busy_cores"]
		if v, ok := m["other_cpu_cores"]; ok {
			res.Metrics[pre+"other_cpu_cores"] = v
		}
		lat := newHist()
		for i, h := range p.hists {
			p.hmu[i].Lock()
			lat.merge(h)
			p.hmu[i].Unlock()
		}
		latencyMetrics(res.Metrics, pre+"push_to_phone", lat)
		ans := newHist()
		for _, h := range p.answer {
			ans.merge(h)
		}
		latencyMetrics(res.Metrics, pre+"answer", ans)
		who := "phase " + p.name
		if prefix != "" {
			who = strings.TrimSuffix(prefix, "_") + " " + p.name
		}
		fmt.Fprintf(stdout, "%s: %.0f pushes/s, push-to-phone p50 %.3f ms p99 %.3f ms max %.3f ms, answer p99 %.3f ms, delivered %d of %d (server %.2f cores, generator %.2f cores)\n",
			who, rate, ms(lat.quantile(.5)), ms(lat.quantile(.99)), ms(lat.quantile(1)), ms(ans.quantile(.99)), p.deliv.Load()-p.dupes.Load(), p.total.Load(), m["server_cpu_cores"], m["generator_cpu_cores"])
		if p.failed.Load() > 0 {
			res.note("%s: %d pushes failed on the transport", who, p.failed.Load())
		}
	}
	return maxRate, nil
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// runPhase pushes for warmup+duration at p.rate (0: flat out).
func runPhase(ctx context.Context, t *target, ids []wire.UUID, pc pushConfig, idx byte, p *phase, appID byte) error {
	start := time.Now()
	p.from.Store(start.Add(pc.warmup).UnixNano())
	p.to.Store(start.Add(pc.warmup + pc.duration).UnixNano())
	end := start.Add(pc.warmup + pc.duration)
	if pc.via == "http" {
		return httpPushers(ctx, t, ids, pc, idx, p, start, end)
	}
	return portPushers(ctx, t.Push, ids, pc, idx, p, start, end, appID)
}

func portPushers(ctx context.Context, addr string, ids []wire.UUID, pc pushConfig, idx byte, p *phase, start, end time.Time, appID byte) error {
	var wg sync.WaitGroup
	errs := make([]error, pc.conns)
	p.answer = make([]*hist, pc.conns)
	var interval time.Duration
	if p.rate > 0 {
		interval = time.Duration(float64(pc.conns) / p.rate * 1e9)
	}
	from, to := p.from.Load(), p.to.Load()
	for c := range pc.conns {
		h := newHist()
		p.answer[c] = h
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				errs[c] = err
				return
			}
			defer conn.Close()
			if tc, ok := conn.(*net.TCPConn); ok {
				_ = tc.SetNoDelay(true)
			}
			var req, body []byte
			var ans [1]byte
			// Spread the connections' first pushes over one interval.
			next := start.Add(time.Duration(c) * interval / time.Duration(pc.conns))
			for k := 0; ; k++ {
				if interval > 0 {
					if d := time.Until(next); d > 0 {
						time.Sleep(d)
					}
					next = next.Add(interval)
				}
				now := time.Now()
				if !now.Before(end) || ctx.Err() != nil {
					return
				}
				target := (c + k*pc.conns) % len(ids)
				body = appendPayload(body[:0], now, target, 1, idx, pc.size)
				req = wire.AppendPush(req[:0], appID, wire.CmdCustom, ids[target], body)
				_ = conn.SetDeadline(now.Add(10 * time.Second))
				if _, err := conn.Write(req); err != nil {
					p.failed.Add(1)
					errs[c] = err
					return
				}
				if _, err := io.ReadFull(conn, ans[:]); err != nil {
					p.failed.Add(1)
					errs[c] = err
					return
				}
				done := time.Now()
				if ans[0] != wire.PushAccepted {
					p.rejected.Add(1)
					continue
				}
				p.total.Add(1)
				if n := done.UnixNano(); n >= from && n < to {
					p.accepted.Add(1)
					h.add(done.Sub(now))
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func httpPushers(ctx context.Context, t *target, ids []wire.UUID, pc pushConfig, idx byte, p *phase, start, end time.Time) error {
	hexIDs := make([]string, len(ids))
	for i, u := range ids {
		hexIDs[i] = u.String()
	}
	client := api.NewClient("http://"+t.HTTP, t.Token)
	client.HTTP.Transport = &http.Transport{MaxIdleConnsPerHost: pc.httpConn, DisableCompression: true}
	var wg sync.WaitGroup
	errs := make([]error, pc.httpConn)
	p.answer = make([]*hist, pc.httpConn)
	var interval time.Duration
	if p.rate > 0 {
		interval = time.Duration(float64(pc.httpConn*pc.bulk) / p.rate * 1e9)
	}
	var counter atomic.Int64
	from, to := p.from.Load(), p.to.Load()
	for c := range pc.httpConn {
		h := newHist()
		p.answer[c] = h
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := start.Add(time.Duration(c) * interval / time.Duration(pc.httpConn))
			var body []byte
			for {
				if interval > 0 {
					if d := time.Until(next); d > 0 {
						time.Sleep(d)
					}
					next = next.Add(interval)
				}
				now := time.Now()
				if !now.Before(end) || ctx.Err() != nil {
					return
				}
				k := int(counter.Add(1) - 1)
				first := (k * pc.bulk) % len(ids)
				n := min(pc.bulk, len(ids)-first)
				body = appendPayload(body[:0], now, first, n, idx, pc.size)
				rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				resp, err := client.BulkPush(rctx, api.BulkPushRequest{UUIDs: hexIDs[first : first+n], Kind: "custom", BinaryData: body})
				cancel()
				if err != nil {
					p.failed.Add(int64(n))
					if ctx.Err() == nil {
						errs[c] = err
					}
					return
				}
				done := time.Now()
				p.rejected.Add(int64(resp.Rejected))
				p.total.Add(int64(resp.Accepted))
				if dn := done.UnixNano(); dn >= from && dn < to {
					p.accepted.Add(int64(resp.Accepted))
					h.add(done.Sub(now))
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// phones runs the receiving side of a fleet: every custom message is
// timed against the send time in its payload and acked for the uuid it
// was meant for, as the DDPush client acks.
type phones struct {
	f         *fleet
	phases    []*phase
	appID     byte
	hbAnswers atomic.Int64
	stop      atomic.Bool
}

func (ph *phones) start() (stop func()) {
	var wg sync.WaitGroup
	for si, s := range ph.f.socks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ph.receive(si, s)
		}()
	}
	return func() {
		ph.stop.Store(true)
		wg.Wait()
	}
}

// heartbeatAll heartbeats every phone once, so that the server sees them
// online, and waits for the answers (when the policy gives any).
func (ph *phones) heartbeatAll(ctx context.Context) error {
	before := ph.hbAnswers.Load()
	// The receiving goroutines own the sockets' read side; sending from
	// here is safe with a separate queue per call.
	for si := range ph.f.socks {
		w := ph.f.socks[si].sender()
		for _, i := range ph.f.phones(si) {
			w.queue(ph.appID, wire.CmdHeartbeat, ph.f.ids[i], nil)
		}
		if err := w.flush(); err != nil {
			return fmt.Errorf("heartbeat phones: %w", err)
		}
	}
	want := int64(len(ph.f.ids))
	deadline := time.Now().Add(3 * time.Second)
	for ph.hbAnswers.Load()-before < want && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if ph.hbAnswers.Load() == before {
		time.Sleep(200 * time.Millisecond) // no answers at all: give the server a moment
	}
	return ctx.Err()
}

func (ph *phones) receive(si int, s *phoneSock) {
	S := len(ph.f.socks)
	// Bulk pushes reach a socket once per phone of the bulk on it; the
	// k-th copy is acked for the k-th of those phones.
	seen := map[[2]int64]int{}
	var m wire.ServerMessage
	for !ph.stop.Load() {
		n, err := s.read(time.Now().Add(50 * time.Millisecond))
		if err != nil {
			if ph.stop.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		now := time.Now()
		for j := range n {
			if wire.DecodeServer(s.msg(j), &m) != nil {
				continue
			}
			switch m.Cmd {
			case wire.CmdHeartbeat:
				ph.hbAnswers.Add(1)
			case wire.CmdCustom:
				pl, ok := parsePayload(m.Body)
				if !ok || int(pl.phase) >= len(ph.phases) {
					continue
				}
				p := ph.phases[pl.phase]
				p.deliv.Add(1)
				target := pl.start
				if pl.count > 1 {
					key := [2]int64{pl.sent, int64(pl.start)}
					k := seen[key]
					first := pl.start + ((si-pl.start%S)%S+S)%S
					target = first + k*S
					if target >= pl.start+pl.count {
						p.dupes.Add(1)
						target = first // a retransmission: ack again
					} else {
						seen[key] = k + 1
						if first+(k+1)*S >= pl.start+pl.count {
							delete(seen, key)
						}
					}
				}
				if target < 0 || target >= len(ph.f.ids) {
					continue
				}
				if sent := pl.sent; sent >= p.from.Load() && sent < p.to.Load() {
					p.hmu[si].Lock()
					p.hists[si].add(now.Sub(time.Unix(0, sent)))
					p.hmu[si].Unlock()
				}
				s.queue(ph.appID, wire.CmdCustom, ph.f.ids[target], nil)
			case wire.CmdGeneral:
				// Not pushed by this workload; nothing to ack for.
			}
		}
		if s.pending() > 0 {
			_ = s.flush()
		}
	}
}

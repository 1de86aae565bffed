package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"sync"
	"syscall"
	"time"

	"github.com/ddpush/ddpush-operator/node/udpbatch"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// The ceiling is a do-nothing DDPush answerer: it answers every valid
// heartbeat with 0x00 and keeps no state. It serves through the same
// batching code as pushnode's UDP server (node/udpbatch, same readers,
// batch and buffer sizes) and runs as its own process, as the node does,
// so "share of the ceiling" compares the node with the same machinery
// minus the node's work.

const serveCeilingCmd = "serve-ceiling"

// ceilingEnv marks a re-executed pushload (or pushload test binary) as
// the ceiling's child process.
const ceilingEnv = "PUSHLOAD_SERVE_CEILING"

type ceilingProc struct {
	cmd     *exec.Cmd
	addr    string // UDP client port
	push    string // TCP push port, when started for pushes
	readers int
	exited  chan struct{}
}

func (c *ceilingProc) pid() int { return c.cmd.Process.Pid }

func (c *ceilingProc) stop() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(5 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

// startCeiling runs the answerer as a child process on a free loopback
// port. With push, it also answers push requests (see servePushCeiling).
// env is added to its environment: the node's (--node-env), so that both
// run with the same runtime settings.
func startCeiling(ctx context.Context, readers int, push bool, env []string) (*ceilingProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{serveCeilingCmd, "--listen", "127.0.0.1:0", "--readers", fmt.Sprint(readers)}
	if push {
		args = append(args, "--push-listen", "127.0.0.1:0")
	}
	if p := os.Getenv("PUSHLOAD_CEILING_CPUPROFILE"); p != "" {
		args = append(args, "--cpuprofile", p)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(append(os.Environ(), env...), ceilingEnv+"=1")
	cmd.SysProcAttr = childAttr()
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	addChild(cmd)
	c := &ceilingProc{cmd: cmd, exited: make(chan struct{})}
	ready := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "ceiling ready" {
				ready <- m
			}
		}
		_ = cmd.Wait()
		removeChild(cmd)
		close(c.exited)
	}()
	select {
	case m := <-ready:
		c.addr, _ = m["addr"].(string)
		c.push, _ = m["push"].(string)
		if r, ok := m["readers"].(float64); ok {
			c.readers = int(r)
		}
		return c, nil
	case <-c.exited:
		return nil, fmt.Errorf("ceiling answerer exited before ready")
	case <-time.After(10 * time.Second):
		c.stop()
		return nil, fmt.Errorf("ceiling answerer not ready within 10s")
	case <-ctx.Done():
		c.stop()
		return nil, ctx.Err()
	}
}

// ceilingHandler answers a valid heartbeat with 0x00 and ignores the rest.
func ceilingHandler(pkt []byte, _ netip.AddrPort, _ time.Time, out []byte) []byte {
	var m wire.ClientMessage
	if wire.DecodeClient(pkt, &m) != nil || m.Cmd != wire.CmdHeartbeat {
		return out
	}
	return wire.AppendServer(out, m.AppID, wire.CmdHeartbeat, nil)
}

// serveCeiling answers on conn until it is closed. With book, it also
// remembers where each uuid heartbeats from, for the push answerer.
func serveCeiling(conn *net.UDPConn, readers int, book *addrBook) error {
	h := ceilingHandler
	if book != nil {
		h = func(pkt []byte, from netip.AddrPort, _ time.Time, out []byte) []byte {
			var m wire.ClientMessage
			if wire.DecodeClient(pkt, &m) != nil || m.Cmd != wire.CmdHeartbeat {
				return out // acks need no answer
			}
			book.set(m.UUID, from)
			return wire.AppendServer(out, m.AppID, wire.CmdHeartbeat, nil)
		}
	}
	return udpbatch.Serve(conn, readers, udpbatch.DefaultBatch, udpbatch.BufSize, h, wire.ServerFrameLen, udpbatch.Counters{})
}

// addrBook is the only state of the push answerer: each uuid's last
// heartbeat source.
type addrBook struct {
	shards [256]struct {
		mu sync.Mutex
		m  map[wire.UUID]netip.AddrPort
	}
}

func newAddrBook() *addrBook {
	b := &addrBook{}
	for i := range b.shards {
		b.shards[i].m = make(map[wire.UUID]netip.AddrPort)
	}
	return b
}

func (b *addrBook) set(u wire.UUID, a netip.AddrPort) {
	s := &b.shards[u[0]]
	s.mu.Lock()
	s.m[u] = a
	s.mu.Unlock()
}

func (b *addrBook) get(u wire.UUID) (netip.AddrPort, bool) {
	s := &b.shards[u[0]]
	s.mu.Lock()
	a, ok := s.m[u]
	s.mu.Unlock()
	return a, ok
}

// servePushCeiling answers every valid push request 0 at once, keeping
// nothing, and sends the message straight to the phone's last heartbeat
// address (appId 0, as an instant push). It is what the push path costs
// on this machine without a node's work: the request and answer, the
// datagram to the phone, and the phone's ack.
func servePushCeiling(ln net.Listener, udp *net.UDPConn, book *addrBook) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			r := bufio.NewReaderSize(c, wire.PushHeaderLen+wire.MaxContentLenLimit)
			var p wire.PushRequest
			var out []byte
			ans := []byte{0}
			for {
				hdr, err := r.Peek(wire.PushHeaderLen)
				if err != nil {
					return
				}
				n, err := wire.PushFrameLen(hdr, wire.MaxContentLenLimit)
				if err != nil {
					return
				}
				frame, err := r.Peek(n)
				if err != nil {
					return
				}
				ans[0] = wire.PushAccepted
				if wire.DecodePush(frame, wire.MaxContentLenLimit, &p) != nil {
					ans[0] = wire.PushRejected
				} else if to, ok := book.get(p.UUID); ok {
					switch p.Cmd {
					case wire.CmdClassified:
						out = wire.AppendServerMask(out[:0], 0, p.Mask())
					default:
						out = wire.AppendServer(out[:0], 0, p.Cmd, p.Body)
					}
					_, _ = udp.WriteToUDPAddrPort(out, to)
				}
				if _, err := r.Discard(n); err != nil {
					return
				}
				if _, err := c.Write(ans); err != nil {
					return
				}
			}
		}()
	}
}

func listenCeiling(addr string) (*net.UDPConn, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	conn, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, err
	}
	// The same socket buffers as pushnode's.
	_ = conn.SetReadBuffer(udpbatch.SocketBuffer)
	_ = conn.SetWriteBuffer(udpbatch.SocketBuffer)
	return conn, nil
}

// runServeCeiling is the child process: it prints one JSON ready line with
// its address and serves until SIGTERM or its parent dies.
func runServeCeiling(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlags(serveCeilingCmd, stdout)
	listen := fs.String("listen", "127.0.0.1:0", "UDP address to answer on")
	readers := fs.Int("readers", 0, "reader goroutines (default: as pushnode)")
	pushListen := fs.String("push-listen", "", "also answer push requests on this TCP address")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the answerer's whole life to this file")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	if err := checkTarget(*listen, false); err != nil {
		return err
	}
	var book *addrBook
	var pushLn net.Listener
	if *pushListen != "" {
		if err := checkTarget(*pushListen, false); err != nil {
			return err
		}
		ln, err := net.Listen("tcp", *pushListen)
		if err != nil {
			return err
		}
		defer ln.Close()
		pushLn, book = ln, newAddrBook()
	}
	if *readers <= 0 {
		*readers = udpbatch.DefaultReaders()
	}
	conn, err := listenCeiling(*listen)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- serveCeiling(conn, *readers, book) }()
	ready := map[string]any{"msg": "ceiling ready", "addr": conn.LocalAddr().String(), "readers": *readers}
	if pushLn != nil {
		go servePushCeiling(pushLn, conn, book)
		ready["push"] = pushLn.Addr().String()
	}
	b, _ := json.Marshal(ready)
	fmt.Fprintln(stdout, string(b))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	select {
	case <-sig:
	case <-ctx.Done():
	case err := <-done:
		return err
	}
	conn.Close()
	return <-done
}

func runCeiling(ctx context.Context, args []string, stdout io.Writer) error {
	var hc hbConfig
	var cm common
	fs := newFlags("ceiling", stdout)
	hc.register(fs)
	fs.StringVar(&cm.out, "out", "", "write the result as JSON to this file")
	readers := fs.Int("readers", 0, "reader goroutines of the answerer (default: as pushnode, max(2, GOMAXPROCS))")
	rounds := fs.Int("rounds", 1, "rounds (the median is reported)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: pushload ceiling [flags]\n\nHeartbeat answers per second of a do-nothing answerer (no state) started as a\nchild process on loopback, with the same batched UDP machinery as pushnode:\nwhat this machine can do at all with this generator.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := hc.validate(); err != nil {
		return err
	}
	res := newResult("ceiling")
	hc.params(res.Params)
	c, err := startCeiling(ctx, *readers, false, nil)
	if err != nil {
		return err
	}
	defer c.stop()
	res.Target = "do-nothing answerer at " + c.addr
	res.Params["readers"] = c.readers
	ids := uuids(fmt.Sprintf("ceiling-%d-", time.Now().UnixNano()), 0, hc.uuids)
	var rates, cpus []float64
	for r := range max(*rounds, 1) {
		m := map[string]float64{}
		cpu := startCPU(c.pid())
		st, err := heartbeatLoad(ctx, c.addr, ids, hc, 1)
		cpu.done(m)
		if err != nil {
			return err
		}
		rates = append(rates, st.Rate)
		cpus = append(cpus, m["server_cpu_cores"])
		fmt.Fprintf(stdout, "round %d: %.0f answers/s (answerer %.2f cores, generator %.2f cores)\n", r+1, st.Rate, m["server_cpu_cores"], m["generator_cpu_cores"])
	}
	res.Metrics["answers_per_s"] = median(rates)
	res.Metrics["server_cpu_cores"] = median(cpus)
	return res.emit(stdout, cm.out)
}

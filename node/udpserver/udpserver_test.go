package udpserver

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node/clients"
	"github.com/ddpush/ddpush-operator/node/core"
	"github.com/ddpush/ddpush-operator/node/ratelimit"
	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/wire"
)

func start(t testing.TB) (*Server, *core.Core) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := core.Open(t.TempDir(), core.Options{
		Table:  clients.Config{CreateByHeartbeat: true, Policy: state.PolicyAlways, OnlineWindow: int64(time.Minute)},
		Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go c.Run(ctx)
	s, err := Listen("127.0.0.1:0", c, ratelimit.New(0), log)
	if err != nil {
		t.Fatal(err)
	}
	c.SetUDPSender(s)
	go s.Serve()
	t.Cleanup(func() {
		s.Close()
		cancel()
		<-c.Done()
	})
	return s, c
}

func uuid(i int) wire.UUID { return wire.UUID{byte(i), byte(i >> 8), 0xdd} }

// TestHeartbeatPathAllocatesNothing sends heartbeats of known clients
// through a real socket and counts every allocation of the process: the
// batched read, the table, the answer and the batched send together
// allocate nothing per packet.
func TestHeartbeatPathAllocatesNothing(t *testing.T) {
	s, _ := start(t)
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(s.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const burst = 32
	var hbs [burst][]byte
	for i := range hbs {
		hbs[i] = wire.AppendClient(nil, 1, wire.CmdHeartbeat, uuid(i), nil)
	}
	buf := make([]byte, 64)
	round := func() {
		for i := range hbs {
			if _, err := conn.Write(hbs[i]); err != nil {
				t.Fatal(err)
			}
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		for range hbs {
			n, err := conn.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			if n != wire.ServerHeaderLen || buf[2] != wire.CmdHeartbeat {
				t.Fatalf("answer % x", buf[:n])
			}
		}
	}
	for range 20 {
		round() // create the records and grow every buffer once
	}
	perRound := testing.AllocsPerRun(200, round)
	t.Logf("%.4f allocations per heartbeat", perRound/burst)
	if perPacket := perRound / burst; perPacket > 0.05 {
		t.Fatalf("%.3f allocations per heartbeat (%.1f per burst of %d)", perPacket, perRound, burst)
	}
}

func TestEveryServerMessageIsItsOwnDatagram(t *testing.T) {
	s, c := start(t)
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(s.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	u := uuid(7)
	for _, p := range []core.PushSpec{{UUID: u, Kind: state.General}, {UUID: u, Kind: state.Classified, Bits: 5}, {UUID: u, Kind: state.Custom, Payload: []byte("hi")}} {
		if _, err := c.Push(context.Background(), p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := conn.Write(wire.AppendClient(nil, 9, wire.CmdHeartbeat, u, nil)); err != nil {
		t.Fatal(err)
	}
	var got []byte
	buf := make([]byte, 128)
	for range 3 {
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		var m wire.ServerMessage
		if err := wire.DecodeServer(buf[:n], &m); err != nil {
			t.Fatalf("datagram % x: %v", buf[:n], err)
		}
		if m.AppID != 9 {
			t.Fatalf("appId %d, want the heartbeat's 9", m.AppID)
		}
		got = append(got, m.Cmd)
	}
	if string(got) != string([]byte{wire.CmdGeneral, wire.CmdClassified, wire.CmdCustom}) {
		t.Fatalf("commands % x, want 10 11 20 in order", got)
	}
}

func BenchmarkHandleHeartbeat(b *testing.B) {
	s, _ := start(b)
	from := netip.MustParseAddrPort("127.0.0.1:40000")
	const n = 1 << 14
	pkts := make([][]byte, n)
	out := make([]byte, 0, 64)
	for i := range pkts {
		pkts[i] = wire.AppendClient(nil, 1, wire.CmdHeartbeat, uuid(i), nil)
		out = s.handle(pkts[i], from, time.Now(), out[:0])
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		out = s.handle(pkts[i&(n-1)], from, time.Now(), out[:0])
	}
}

// TestCloseRightAfterServe races Serve on its goroutine against an
// immediate Close, as a node stopped right after it started does (the race
// detector flagged the WaitGroup the two shared), and closes a server
// whose Serve never ran.
func TestCloseRightAfterServe(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := core.Open(t.TempDir(), core.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		s, err := Listen("127.0.0.1:0", c, ratelimit.New(0), log)
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan struct{})
		go func() {
			s.Serve()
			close(served)
		}()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-served:
		case <-time.After(10 * time.Second):
			t.Fatal("Serve did not return after Close")
		}
	}
	s, err := Listen("127.0.0.1:0", c, ratelimit.New(0), log)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = s.Close()
		s.Serve() // after Close: returns at once
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close without Serve, or Serve after Close, blocked")
	}
}

package node_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node"
	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/nodetest"
	"github.com/ddpush/ddpush-operator/node/pusher"
	"github.com/ddpush/ddpush-operator/node/stats"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// quiet is how long a test listens to be sure nothing more arrives. It is
// only used after the node has provably processed the packet (its
// counters say so), so it bounds a reply already on its way.
const quiet = 150 * time.Millisecond

func uuidOf(s string) wire.UUID {
	var u wire.UUID
	copy(u[:], s)
	return u
}

// udpPeer is a raw UDP client socket, so tests control source addresses.
type udpPeer struct {
	t    *testing.T
	conn *net.UDPConn
}

func newUDPPeer(t *testing.T, n *nodetest.Node) *udpPeer {
	t.Helper()
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(n.ClientAddr()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &udpPeer{t: t, conn: c}
}

func (p *udpPeer) send(b []byte) {
	p.t.Helper()
	if _, err := p.conn.Write(b); err != nil {
		p.t.Fatal(err)
	}
}

func (p *udpPeer) recv(timeout time.Duration) ([]byte, error) {
	_ = p.conn.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 70000)
	n, err := p.conn.Read(buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

func (p *udpPeer) expect(want []byte) {
	p.t.Helper()
	got, err := p.recv(5 * time.Second)
	if err != nil {
		p.t.Fatalf("expected % x, got error %v", want, err)
	}
	if !bytes.Equal(got, want) {
		p.t.Fatalf("got % x, want % x", got, want)
	}
}

func (p *udpPeer) expectNone() {
	p.t.Helper()
	if got, err := p.recv(quiet); err == nil {
		p.t.Fatalf("expected nothing, got % x", got)
	}
}

// waitIn waits until the node has counted n client packets over tr.
func waitIn(t *testing.T, n *nodetest.Node, tr stats.Transport, want uint64) {
	t.Helper()
	nodetest.Eventually(t, 5*time.Second, func() error {
		if got := n.Core().Stats().PacketsIn[tr].Load(); got < want {
			return fmt.Errorf("%d packets in, want %d", got, want)
		}
		return nil
	})
}

func heartbeat(appID byte, u wire.UUID) []byte {
	return wire.AppendClient(nil, appID, wire.CmdHeartbeat, u, nil)
}

func srv(appID, cmd byte, body []byte) []byte { return wire.AppendServer(nil, appID, cmd, body) }

func maskBytes(m uint64) []byte { return binary.BigEndian.AppendUint64(nil, m) }

func dialPusher(t *testing.T, n *nodetest.Node) *pusher.Pusher {
	t.Helper()
	p, err := pusher.Dial(n.PushAddr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestUDPHeartbeatPolicies(t *testing.T) {
	for _, tc := range []struct {
		policy string
		// Whether 0x00 answers: the first heartbeat, a repeat from the
		// same address, one from a new address.
		first, same, moved bool
	}{
		{"never", false, false, false},
		{"always", true, true, true},
		{"address-changed", true, false, true},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			n := nodetest.Start(t, func(c *node.Config) { c.HeartbeatPolicy = tc.policy })
			u := uuidOf("policy-" + tc.policy)
			a, b := newUDPPeer(t, n), newUDPPeer(t, n)
			step := func(p *udpPeer, count uint64, answered bool) {
				t.Helper()
				p.send(heartbeat(7, u))
				waitIn(t, n, stats.UDP, count)
				if answered {
					p.expect(srv(7, wire.CmdHeartbeat, nil))
				} else {
					p.expectNone()
				}
			}
			step(a, 1, tc.first)
			step(a, 2, tc.same)
			step(b, 3, tc.moved)
		})
	}
}

func TestUDPPendingMessagesResentUntilAcked(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.HeartbeatPolicy = "always" })
	u := uuidOf("pending-resend-01")
	p := dialPusher(t, n)
	// An offline client: everything waits, only the latest of each kind.
	must(t, p.General(u))
	must(t, p.Classified(u, 0x5))
	must(t, p.Classified(u, 0x2))
	must(t, p.Custom(u, []byte("first")))
	must(t, p.Custom(u, []byte("second")))

	phone := newUDPPeer(t, n)
	all := func(mask uint64) {
		t.Helper()
		phone.expect(srv(9, wire.CmdGeneral, nil))
		phone.expect(srv(9, wire.CmdClassified, maskBytes(mask)))
		phone.expect(srv(9, wire.CmdCustom, []byte("second")))
	}
	phone.send(heartbeat(9, u))
	all(0x7)
	// No ack: the next heartbeat resends everything, and no 0x00.
	phone.send(heartbeat(9, u))
	all(0x7)
	phone.expectNone()

	// Acking bit 0 leaves bits 1 and 2 pending.
	phone.send(wire.AppendClient(nil, 9, wire.CmdClassified, u, maskBytes(0x1)))
	waitIn(t, n, stats.UDP, 3)
	phone.send(heartbeat(9, u))
	all(0x6)

	phone.send(wire.AppendClient(nil, 9, wire.CmdGeneral, u, nil))
	phone.send(wire.AppendClient(nil, 9, wire.CmdClassified, u, maskBytes(0x6)))
	phone.send(wire.AppendClient(nil, 9, wire.CmdCustom, u, nil))
	waitIn(t, n, stats.UDP, 7)
	phone.send(heartbeat(9, u))
	phone.expect(srv(9, wire.CmdHeartbeat, nil)) // nothing pending any more
	phone.expectNone()

	info, err := n.API.Client(context.Background(), u.String())
	must(t, err)
	if len(info.Pending) != 0 || info.Mask != 0 {
		t.Fatalf("pending after all acks: %+v", info)
	}
}

func TestUDPInstantPushToOnlineClient(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.OnlineWindow = time.Second })
	u := uuidOf("instant-udp-0001")
	phone := newUDPPeer(t, n)
	phone.send(heartbeat(3, u))
	waitIn(t, n, stats.UDP, 1)
	phone.expectNone() // policy never, nothing pending

	p := dialPusher(t, n)
	must(t, p.Custom(u, []byte("now")))
	phone.expect(srv(0, wire.CmdCustom, []byte("now"))) // appId 0: not an answer
	must(t, p.Classified(u, 0x10))
	phone.expect(srv(0, wire.CmdClassified, maskBytes(0x10)))
	must(t, p.Classified(u, 0x01))
	phone.expect(srv(0, wire.CmdClassified, maskBytes(0x11))) // the whole pending mask
	must(t, p.General(u))
	phone.expect(srv(0, wire.CmdGeneral, nil))

	// Past the online window the client is offline: nothing is sent until
	// its next heartbeat.
	time.Sleep(1200 * time.Millisecond)
	res, err := n.API.Push(context.Background(), api.PushRequest{UUID: u.String(), Kind: "custom", Data: "later"})
	must(t, err)
	if res.Fate != api.FateQueued {
		t.Fatalf("push to a client past the online window: fate %s, want queued", res.Fate)
	}
	phone.expectNone()
	phone.send(heartbeat(3, u))
	phone.expect(srv(3, wire.CmdGeneral, nil))
	phone.expect(srv(3, wire.CmdClassified, maskBytes(0x11)))
	phone.expect(srv(3, wire.CmdCustom, []byte("later")))
}

func TestUDPUnknownUUIDs(t *testing.T) {
	t.Run("ack from an unknown uuid is ignored", func(t *testing.T) {
		n := nodetest.Start(t, nil)
		phone := newUDPPeer(t, n)
		u := uuidOf("unknown-ack-0001")
		for _, cmd := range []byte{wire.CmdGeneral, wire.CmdCustom} {
			phone.send(wire.AppendClient(nil, 1, cmd, u, nil))
		}
		phone.send(wire.AppendClient(nil, 1, wire.CmdClassified, u, maskBytes(1)))
		waitIn(t, n, stats.UDP, 3)
		if n.Core().Records() != 0 {
			t.Fatalf("acks created %d records", n.Core().Records())
		}
	})
	t.Run("heartbeat creation can be disabled", func(t *testing.T) {
		n := nodetest.Start(t, func(c *node.Config) { c.CreateByHeartbeat = false; c.HeartbeatPolicy = "always" })
		phone := newUDPPeer(t, n)
		u := uuidOf("no-create-000001")
		phone.send(heartbeat(1, u))
		waitIn(t, n, stats.UDP, 1)
		phone.expectNone()
		if got := n.Core().Stats().Drops[stats.DropUnknownUUID].Load(); got != 1 || n.Core().Records() != 0 {
			t.Fatalf("unknown_uuid drops %d, records %d; want 1, 0", got, n.Core().Records())
		}
		// A push creates the record; heartbeats then work.
		must(t, dialPusher(t, n).General(u))
		phone.send(heartbeat(1, u))
		phone.expect(srv(1, wire.CmdGeneral, nil))
	})
	t.Run("record cap refuses new heartbeat records but not pushes", func(t *testing.T) {
		n := nodetest.Start(t, func(c *node.Config) { c.MaxRecords = 2 })
		phone := newUDPPeer(t, n)
		for i := range 3 {
			phone.send(heartbeat(1, uuidOf(fmt.Sprintf("capped-%09d", i))))
		}
		waitIn(t, n, stats.UDP, 3)
		if n.Core().Records() != 2 || n.Core().Stats().Drops[stats.DropRecordCap].Load() != 1 {
			t.Fatalf("records %d, record_cap drops %d; want 2, 1", n.Core().Records(), n.Core().Stats().Drops[stats.DropRecordCap].Load())
		}
		must(t, dialPusher(t, n).General(uuidOf("pushed-past-cap1")))
		if n.Core().Records() != 3 {
			t.Fatalf("a push past the cap did not create its record")
		}
	})
}

// malformedClientMessages are dropped by the node without any effect.
func malformedClientMessages() map[string][]byte {
	u := uuidOf("malformed-uuid-1")
	hb := heartbeat(1, u)
	with := func(b []byte, f func([]byte)) []byte {
		c := append([]byte(nil), b...)
		f(c)
		return c
	}
	return map[string][]byte{
		"empty":               {},
		"one byte":            {1},
		"truncated header":    hb[:20],
		"version 0":           with(hb, func(b []byte) { b[0] = 0 }),
		"version 2":           with(hb, func(b []byte) { b[0] = 2 }),
		"unknown cmd 0x01":    with(hb, func(b []byte) { b[2] = 0x01 }),
		"unknown cmd 0x21":    with(hb, func(b []byte) { b[2] = 0x21 }),
		"declared 1, sent 0":  with(hb, func(b []byte) { b[20] = 1 }),
		"heartbeat with body": wire.AppendClient(nil, 1, wire.CmdHeartbeat, u, []byte{0}),
		"0x11 ack of 7 bytes": wire.AppendClient(nil, 1, wire.CmdClassified, u, make([]byte, 7)),
		"0x11 ack of 9 bytes": wire.AppendClient(nil, 1, wire.CmdClassified, u, make([]byte, 9)),
		"0x20 ack with body":  wire.AppendClient(nil, 1, wire.CmdCustom, u, []byte("x")),
		"reset with body":     wire.AppendClient(nil, 1, wire.CmdReset, u, []byte{1}),
		"trailing byte":       append(append([]byte(nil), hb...), 0),
		"garbage":             bytes.Repeat([]byte{0xff}, 64),
	}
}

func TestUDPMalformedInputDropped(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.HeartbeatPolicy = "always" })
	phone := newUDPPeer(t, n)
	msgs := malformedClientMessages()
	for _, b := range msgs {
		phone.send(b) // an empty datagram is still a packet
	}
	waitIn(t, n, stats.UDP, uint64(len(msgs)))
	phone.expectNone()
	if got := n.Core().Stats().Drops[stats.DropMalformed].Load(); got != uint64(len(msgs)) {
		t.Fatalf("malformed drops %d, want %d", got, len(msgs))
	}
	if n.Core().Records() != 0 {
		t.Fatalf("malformed input created %d records", n.Core().Records())
	}
	// A reset is valid and does nothing: no record, no answer.
	phone.send(wire.AppendClient(nil, 1, wire.CmdReset, uuidOf("reset-uuid-00001"), nil))
	waitIn(t, n, stats.UDP, uint64(len(msgs))+1)
	phone.expectNone()
	if n.Core().Records() != 0 {
		t.Fatal("reset created a record")
	}
}

func TestUDPRateLimitPerSource(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.RateLimit = 5; c.HeartbeatPolicy = "always" })
	phone := newUDPPeer(t, n)
	u := uuidOf("rate-limited-001")
	for range 40 {
		phone.send(heartbeat(1, u))
	}
	waitIn(t, n, stats.UDP, 40)
	answers := 0
	for {
		if _, err := phone.recv(quiet); err != nil {
			break
		}
		answers++
	}
	dropped := n.Core().Stats().Drops[stats.DropRateLimited].Load()
	// The node counts packets as it reads them; on a loaded machine 40
	// packets may be read across a few one-second windows of 5 each.
	if answers == 0 || dropped < 20 || dropped != uint64(40-answers) {
		t.Fatalf("answers %d, rate_limited drops %d", answers, dropped)
	}
}

// tcpPeer is a raw TCP client.
type tcpPeer struct {
	t    *testing.T
	conn net.Conn
}

func newTCPPeer(t *testing.T, n *nodetest.Node) *tcpPeer {
	t.Helper()
	c, err := net.DialTimeout("tcp", n.ClientAddr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &tcpPeer{t: t, conn: c}
}

func (p *tcpPeer) send(b []byte) {
	p.t.Helper()
	if _, err := p.conn.Write(b); err != nil {
		p.t.Fatal(err)
	}
}

func (p *tcpPeer) expect(want []byte) {
	p.t.Helper()
	_ = p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(p.conn, got); err != nil {
		p.t.Fatalf("expected % x: %v", want, err)
	}
	if !bytes.Equal(got, want) {
		p.t.Fatalf("got % x, want % x", got, want)
	}
}

func (p *tcpPeer) expectNone() {
	p.t.Helper()
	_ = p.conn.SetReadDeadline(time.Now().Add(quiet))
	var b [64]byte
	if n, err := p.conn.Read(b[:]); err == nil {
		p.t.Fatalf("expected nothing, got % x", b[:n])
	}
}

// expectClosed waits for the node to close the connection.
func (p *tcpPeer) expectClosed() {
	p.t.Helper()
	_ = p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [64]byte
	for {
		n, err := p.conn.Read(b[:])
		if err == nil {
			p.t.Fatalf("expected the connection closed, got % x", b[:n])
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			p.t.Fatal("connection still open")
		}
		return
	}
}

func TestTCPClient(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.HeartbeatPolicy = "always" })
	u := uuidOf("tcp-client-00001")
	p := dialPusher(t, n)
	must(t, p.Custom(u, []byte("queued")))

	c := newTCPPeer(t, n)
	// Over TCP the node never answers 0x00 and sends pending messages on
	// the same connection, with the client's appId.
	c.send(heartbeat(4, u))
	c.expect(srv(4, wire.CmdCustom, []byte("queued")))
	c.send(wire.AppendClient(nil, 4, wire.CmdCustom, u, nil))
	waitIn(t, n, stats.TCP, 2)
	c.send(heartbeat(4, u))
	waitIn(t, n, stats.TCP, 3)
	c.expectNone()

	// The connection makes the client online: pushes go out at once.
	must(t, p.General(u))
	c.expect(srv(0, wire.CmdGeneral, nil))
	must(t, p.Classified(u, 0x3))
	c.expect(srv(0, wire.CmdClassified, maskBytes(0x3)))

	info, err := n.API.Client(context.Background(), u.String())
	must(t, err)
	if !info.Online || info.Transport != "tcp" || info.Address != "" {
		t.Fatalf("client over TCP: %+v", info)
	}

	// A closed connection makes the client offline.
	c.conn.Close()
	nodetest.Eventually(t, 5*time.Second, func() error {
		info, err := n.API.Client(context.Background(), u.String())
		if err != nil {
			return err
		}
		if info.Online {
			return errors.New("still online")
		}
		return nil
	})
	res, err := n.API.Push(context.Background(), api.PushRequest{UUID: u.String(), Kind: "general"})
	must(t, err)
	if res.Fate != api.FateQueued {
		t.Fatalf("push after disconnect: %s, want queued", res.Fate)
	}
}

func TestTCPStreamFraming(t *testing.T) {
	n := nodetest.Start(t, nil)
	u := uuidOf("tcp-framing-0001")
	must(t, dialPusher(t, n).General(u))
	c := newTCPPeer(t, n)
	// Malformed messages that keep the stream in sync are dropped one by one.
	bad := [][]byte{
		func() []byte { b := heartbeat(1, u); b[0] = 2; return b }(),
		func() []byte { b := heartbeat(1, u); b[2] = 0x42; return b }(),
		wire.AppendClient(nil, 1, wire.CmdHeartbeat, u, []byte{1, 2}),
		wire.AppendClient(nil, 1, wire.CmdCustom, u, []byte("12345678")),
	}
	for _, b := range bad {
		c.send(b)
	}
	// A heartbeat split across writes is still one message.
	hb := heartbeat(1, u)
	for i := range hb {
		c.send(hb[i : i+1])
	}
	c.expect(srv(1, wire.CmdGeneral, nil))
	if got := n.Core().Stats().Drops[stats.DropMalformed].Load(); got != uint64(len(bad)) {
		t.Fatalf("malformed drops %d, want %d", got, len(bad))
	}
	// Two messages in one write are two messages. (Two clients: for one
	// client the node would send only the latest answer of a kind.)
	u2 := uuidOf("tcp-framing-0002")
	must(t, dialPusher(t, n).Custom(u2, []byte("second")))
	c.send(append(heartbeat(2, u), heartbeat(3, u2)...))
	c.expect(srv(2, wire.CmdGeneral, nil))
	c.expect(srv(3, wire.CmdCustom, []byte("second")))
}

func TestTCPProtocolViolationCloses(t *testing.T) {
	n := nodetest.Start(t, nil)
	c := newTCPPeer(t, n)
	b := heartbeat(1, uuidOf("violation-000001"))
	binary.BigEndian.PutUint16(b[19:], 9) // above the largest legal body
	c.send(b)
	c.expectClosed()
	nodetest.Eventually(t, 5*time.Second, func() error {
		if n.Core().Stats().Drops[stats.DropTCPViolation].Load() != 1 {
			return errors.New("tcp_violation not counted")
		}
		return nil
	})
	if n.Core().Records() != 0 {
		t.Fatal("violation created a record")
	}
}

func TestTCPTimeouts(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) {
		c.TCPIdleTimeout = 300 * time.Millisecond
		c.TCPFrameTimeout = 300 * time.Millisecond
		c.PushIdleTimeout = 300 * time.Millisecond
	})
	idle := newTCPPeer(t, n)
	slow := newTCPPeer(t, n)
	slow.send(heartbeat(1, uuidOf("slow-frame-00001"))[:10])
	idle.expectClosed()
	slow.expectClosed()
	pidle, err := net.Dial("tcp", n.PushAddr().String())
	must(t, err)
	defer pidle.Close()
	(&tcpPeer{t: t, conn: pidle}).expectClosed()
	st := n.Core().Stats()
	nodetest.Eventually(t, 5*time.Second, func() error {
		if st.Drops[stats.DropTCPIdle].Load() != 1 || st.Drops[stats.DropTCPSlowFrame].Load() != 1 || st.Drops[stats.DropPushIdle].Load() != 1 {
			return fmt.Errorf("drops %v", st.DropsByName())
		}
		return nil
	})
}

func TestPushPortAnswers(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.MaxContentLen = 16 })
	u := uuidOf("push-port-answer")
	p := dialPusher(t, n)
	mk := func(version, cmd byte, body []byte) []byte {
		b := wire.AppendPush(nil, 1, cmd, u, body)
		b[0] = version
		return b
	}
	for _, tc := range []struct {
		name string
		req  []byte
		want byte
	}{
		{"general", mk(1, wire.CmdGeneral, nil), 0},
		{"classified", mk(1, wire.CmdClassified, maskBytes(8)), 0},
		{"custom of 1 byte", mk(1, wire.CmdCustom, []byte("x")), 0},
		{"custom of the maximum", mk(1, wire.CmdCustom, bytes.Repeat([]byte("y"), 16)), 0},
		{"appId 0 is not checked", wire.AppendPush(nil, 0, wire.CmdGeneral, u, nil), 0},
		{"version 2", mk(2, wire.CmdGeneral, nil), 1},
		{"heartbeat cmd", mk(1, wire.CmdHeartbeat, nil), 1},
		{"reset cmd", mk(1, wire.CmdReset, nil), 1},
		{"general with a body", mk(1, wire.CmdGeneral, []byte{1}), 1},
		{"classified of 7 bytes", mk(1, wire.CmdClassified, make([]byte, 7)), 1},
		{"classified of 9 bytes", mk(1, wire.CmdClassified, make([]byte, 9)), 1},
		{"empty custom", mk(1, wire.CmdCustom, nil), 1},
	} {
		ans, err := p.Raw(tc.req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if ans != tc.want {
			t.Errorf("%s: answer %d, want %d", tc.name, ans, tc.want)
		}
	}
	info, err := n.API.Client(context.Background(), u.String())
	must(t, err)
	if len(info.Pending) != 3 || info.Mask != 8 {
		t.Fatalf("after accepted pushes only: %+v", info)
	}
	// A declared length above the maximum closes without an answer.
	req := mk(1, wire.CmdCustom, bytes.Repeat([]byte("z"), 17))
	if _, err := p.Raw(req); err == nil {
		t.Fatal("oversized push was answered")
	}
}

func TestExpiryCleanerRemovesIdleRecords(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) {
		c.ExpiryAge = 300 * time.Millisecond
		c.ExpiryInterval = 50 * time.Millisecond
	})
	ctx := context.Background()
	res, err := n.API.Push(ctx, api.PushRequest{UUID: uuidOf("expiring-uuid-01").String(), Kind: "custom", Data: "bye"})
	must(t, err)
	nodetest.Eventually(t, 10*time.Second, func() error {
		p, err := n.API.GetPush(ctx, res.ID)
		if err != nil {
			return err
		}
		if p.Fate != api.FateExpired {
			return fmt.Errorf("fate %s", p.Fate)
		}
		return nil
	})
	// The expired fate can be read a moment before the client table has
	// dropped the record (seen on a loaded machine): wait for the count too.
	nodetest.Eventually(t, 10*time.Second, func() error {
		if r := n.Core().Records(); r != 0 {
			return fmt.Errorf("%d records left", r)
		}
		return nil
	})
	if _, err := n.API.Client(ctx, uuidOf("expiring-uuid-01").String()); err == nil {
		t.Fatal("expired client still found")
	}
}

func TestRestartKeepsPendingAndHeartbeatState(t *testing.T) {
	dir := t.TempDir()
	cfg := nodetest.Config(t, dir)
	cfg.HeartbeatPolicy = "always"
	n := nodetest.StartConfig(t, cfg)
	u := uuidOf("restart-uuid-001")
	phone := newUDPPeer(t, n)
	phone.send(heartbeat(1, u))
	phone.expect(srv(1, wire.CmdHeartbeat, nil))
	offline := uuidOf("restart-offline1")
	p := dialPusher(t, n)
	must(t, p.Custom(offline, []byte("kept")))
	must(t, p.Classified(offline, 0x30))
	n.Stop(t)

	// The same data directory, new ports.
	n2 := nodetest.StartConfig(t, cfg)
	if n2.Core().Records() != 2 {
		t.Fatalf("records after restart: %d", n2.Core().Records())
	}
	info, err := n2.API.Client(context.Background(), u.String())
	must(t, err)
	if info.Address != phone.conn.LocalAddr().String() {
		t.Fatalf("heartbeat address after restart: %q, want %q", info.Address, phone.conn.LocalAddr())
	}
	ph := newUDPPeer(t, n2)
	ph.send(heartbeat(2, offline))
	ph.expect(srv(2, wire.CmdClassified, maskBytes(0x30)))
	ph.expect(srv(2, wire.CmdCustom, []byte("kept")))
}

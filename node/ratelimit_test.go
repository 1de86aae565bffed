package node_test

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node"
	"github.com/ddpush/ddpush-operator/node/nodetest"
	"github.com/ddpush/ddpush-operator/node/stats"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// A phone at its source address's limit does not silence phones at other
// addresses of the same /16 (every loopback address is this machine, so
// the test sends from several): each address has its own budget, over
// UDP and TCP alike.
func TestRateLimitIsPerAddress(t *testing.T) {
	const rate = 5
	n := nodetest.Start(t, func(c *node.Config) {
		c.RateLimit = rate
		c.HeartbeatPolicy = "always"
		c.ClientAddr = "127.0.0.1:0"
	})
	to := net.UDPAddrFromAddrPort(n.ClientAddr())
	from := func(ip string) *net.UDPConn {
		t.Helper()
		c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 0)), to)
		if err != nil {
			t.Fatalf("send from %s: %v", ip, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	busy := from("127.0.0.1")
	u := uuidOf("rate-busy-000001")
	var udpIn uint64
	// exhaust spends the busy sender's budget right before a neighbour
	// sends, so that a budget shared with the neighbour would be gone.
	exhaust := func() {
		t.Helper()
		for range 2 * rate {
			if _, err := busy.Write(heartbeat(1, u)); err != nil {
				t.Fatal(err)
			}
		}
		udpIn += 2 * rate
		waitIn(t, n, stats.UDP, udpIn)
	}
	exhaust()
	nodetest.Eventually(t, 5*time.Second, func() error {
		if n.Core().Stats().Drops[stats.DropRateLimited].Load() == 0 {
			return errors.New("the busy sender was not limited")
		}
		return nil
	})

	// Neighbours differing in the last and in the third octet, over UDP:
	// each is answered at its first heartbeat.
	for i, ip := range []string{"127.0.0.2", "127.0.1.1", "127.0.255.254"} {
		c := from(ip)
		nu := uuidOf("rate-neighbour-" + string(rune('a'+i)))
		exhaust()
		if _, err := c.Write(heartbeat(2, nu)); err != nil {
			t.Fatal(err)
		}
		udpIn++
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 64)
		k, err := c.Read(b)
		if err != nil {
			t.Fatalf("%s, a neighbour of the busy sender, got no answer: %v", ip, err)
		}
		if want := srv(2, wire.CmdHeartbeat, nil); string(b[:k]) != string(want) {
			t.Fatalf("%s got % x, want % x", ip, b[:k], want)
		}
	}

	// And over TCP from another address: the limiter is shared by both
	// transports, the budget is the address's.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.3.4")}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", n.ClientAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	tu := uuidOf("rate-neighbour-t")
	exhaust()
	if _, err := c.Write(heartbeat(3, tu)); err != nil {
		t.Fatal(err)
	}
	// Sent once, never again: a dropped heartbeat leaves no record.
	nodetest.Eventually(t, 5*time.Second, func() error {
		if _, ok := n.Core().Lookup(tu); !ok {
			return errors.New("the TCP heartbeat from 127.0.3.4 left no record")
		}
		return nil
	})
}

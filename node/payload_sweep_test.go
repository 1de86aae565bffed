package node_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node"
	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/nodetest"
	"github.com/ddpush/ddpush-operator/node/pusher"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// The payload sweep pushes a custom message of every length, from 0 to one
// past the node's maximum, through every way an app server pushes, to a
// phone on each transport, and checks the exact bytes the phone receives
// (or that it receives nothing and the push is refused). It exists because
// a length that happens to equal another field's (8, a 0x11 mask) was once
// refused on one entry point and accepted on another.

const sweepTicket = "sweep-ticket"

// pushEntry is one way an app server pushes. Its functions report whether
// the node accepted the push; anything but a clear answer fails the test.
type pushEntry struct {
	name string
	// text entries carry the payload as JSON text, so it must be UTF-8.
	text       bool
	custom     func(u wire.UUID, payload []byte) bool
	classified func(u wire.UUID, bits uint64) bool
}

// pushEntries are the node's entry points, each bound to t.
func pushEntries(t *testing.T, n *nodetest.Node) []pushEntry {
	ctx := context.Background()
	httpAccepted := func(err error) bool {
		t.Helper()
		var se *api.StatusError
		if errors.As(err, &se) && se.Code == http.StatusBadRequest {
			return false
		}
		if err != nil {
			t.Fatalf("HTTP push: %v", err)
		}
		return true
	}

	// The push port: a refused length may close the connection (as the
	// Java server does), so the pusher redials.
	var p *pusher.Pusher
	port := func(req []byte) bool {
		t.Helper()
		if p == nil {
			p = dialPusher(t, n)
		}
		ans, err := p.Raw(req)
		if err != nil {
			p.Close()
			p = nil
			return false
		}
		return ans == wire.PushAccepted
	}

	compat := func(typ, uuid, data string) bool {
		t.Helper()
		q := "act=user&type=" + typ + "&uuid=" + uuid + "&ticket=" + sweepTicket
		if data != "" {
			q += "&data=" + data
		}
		resp, err := http.Get("http://" + n.HTTPAddr().String() + "/?" + q)
		if err != nil {
			t.Fatalf("compat push: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || (string(b) != "1" && string(b) != "0") {
			t.Fatalf("compat push: %s %q", resp.Status, b)
		}
		return string(b) == "1"
	}

	return []pushEntry{
		{
			name: "push port",
			custom: func(u wire.UUID, b []byte) bool {
				return port(wire.AppendPush(nil, 1, wire.CmdCustom, u, b))
			},
			classified: func(u wire.UUID, bits uint64) bool {
				return port(wire.AppendPush(nil, 1, wire.CmdClassified, u, maskBytes(bits)))
			},
		},
		{
			name: "HTTP binaryData",
			custom: func(u wire.UUID, b []byte) bool {
				_, err := n.API.Push(ctx, api.PushRequest{UUID: u.String(), Kind: api.KindCustom, BinaryData: b})
				return httpAccepted(err)
			},
			classified: func(u wire.UUID, bits uint64) bool {
				v := api.Bits(bits)
				_, err := n.API.Push(ctx, api.PushRequest{UUID: u.String(), Kind: api.KindClassified, Bits: &v})
				return httpAccepted(err)
			},
		},
		{
			// The request the web console sends: the payload as text.
			name: "HTTP data",
			text: true,
			custom: func(u wire.UUID, b []byte) bool {
				_, err := n.API.Push(ctx, api.PushRequest{UUID: u.String(), Kind: api.KindCustom, Data: string(b)})
				return httpAccepted(err)
			},
			classified: func(u wire.UUID, bits uint64) bool {
				v := api.Bits(bits)
				_, err := n.API.Push(ctx, api.PushRequest{UUID: u.String(), Kind: api.KindClassified, Bits: &v})
				return httpAccepted(err)
			},
		},
		{
			name: "HTTP bulk",
			custom: func(u wire.UUID, b []byte) bool {
				res, err := n.API.BulkPush(ctx, api.BulkPushRequest{UUIDs: []string{u.String()}, Kind: api.KindCustom, BinaryData: b})
				return httpAccepted(err) && res.Accepted == 1
			},
			classified: func(u wire.UUID, bits uint64) bool {
				v := api.Bits(bits)
				res, err := n.API.BulkPush(ctx, api.BulkPushRequest{UUIDs: []string{u.String()}, Kind: api.KindClassified, Bits: &v})
				return httpAccepted(err) && res.Accepted == 1
			},
		},
		{
			name: "compat bridge",
			custom: func(u wire.UUID, b []byte) bool {
				var enc strings.Builder
				for _, c := range b {
					fmt.Fprintf(&enc, "%%%02X", c)
				}
				return compat("20", u.String(), enc.String())
			},
			classified: func(u wire.UUID, bits uint64) bool {
				return compat("11", u.String(), url.QueryEscape(strconv.FormatInt(int64(bits), 10)))
			},
		},
	}
}

// sweepPhone is a raw client socket that checks every byte it receives.
type sweepPhone struct {
	t   *testing.T
	tcp bool
	c   net.Conn
	u   wire.UUID
}

func dialSweepPhone(t *testing.T, n *nodetest.Node, network string, u wire.UUID) *sweepPhone {
	t.Helper()
	c, err := net.DialTimeout(network, n.ClientAddr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ph := &sweepPhone{t: t, tcp: network == "tcp", c: c, u: u}
	if _, err := c.Write(heartbeat(1, u)); err != nil {
		t.Fatal(err)
	}
	nodetest.Eventually(t, 10*time.Second, func() error {
		info, err := n.API.Client(context.Background(), u.String())
		if err != nil || !info.Online || !strings.Contains(info.Transport, network) {
			return fmt.Errorf("phone %s not online over %s: %+v %v", u, network, info, err)
		}
		return nil
	})
	return ph
}

// expect reads the next server message and checks it is want, byte for
// byte: one datagram over UDP, the next len(want) bytes over TCP.
func (ph *sweepPhone) expect(want []byte) {
	ph.t.Helper()
	_ = ph.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got []byte
	if ph.tcp {
		got = make([]byte, len(want))
		if _, err := io.ReadFull(ph.c, got); err != nil {
			ph.t.Fatalf("waiting for %d bytes: %v", len(want), err)
		}
	} else {
		buf := make([]byte, wire.MaxUDPPayload+1)
		n, err := ph.c.Read(buf)
		if err != nil {
			ph.t.Fatalf("waiting for a %d-byte datagram: %v", len(want), err)
		}
		got = buf[:n]
	}
	if string(got) != string(want) {
		ph.t.Fatalf("received %d bytes % .40x…, want %d bytes % .40x…", len(got), got, len(want), want)
	}
}

// expectNone checks that nothing arrives for a while.
func (ph *sweepPhone) expectNone() {
	ph.t.Helper()
	_ = ph.c.SetReadDeadline(time.Now().Add(quiet))
	buf := make([]byte, 64)
	if n, err := ph.c.Read(buf); err == nil {
		ph.t.Fatalf("expected nothing, received % x", buf[:n])
	}
}

// serverMessage is the exact bytes of a server message, written out here
// by the table (version 1, appId 0 for a push sent at once, cmd, length).
func serverMessage(cmd byte, body []byte) []byte {
	return append([]byte{1, 0, cmd, byte(len(body) >> 8), byte(len(body))}, body...)
}

// sweepPayload is n bytes that differ per length and per entry, and are
// ASCII letters when the entry carries text.
func sweepPayload(n, seed int, text bool) []byte {
	b := make([]byte, n)
	for i := range b {
		if text {
			b[i] = 'a' + byte((i+n+seed)%26)
		} else {
			b[i] = byte(i*31 + n + seed)
		}
	}
	return b
}

func TestEveryPayloadLengthThroughEveryEntryToEveryTransport(t *testing.T) {
	all := func(max int) []int {
		var ls []int
		for l := 0; l <= max+1; l++ {
			ls = append(ls, l)
		}
		return ls
	}
	for _, sc := range []struct {
		max     int
		lengths []int
	}{
		// Every length, around every fixed size (8, 16, 21, 29).
		{40, all(40)},
		// Maxima below a mask's 8 bytes: 0x11 still carries its 8.
		{1, all(1)},
		{7, all(7)},
		{wire.DefaultMaxContentLen, []int{0, 1, 7, 8, 9, 16, 21, 29, 499, 500, 501}},
		// The largest: one UDP datagram; 4091 fills a 4 KiB reader.
		{wire.MaxContentLenLimit, []int{0, 1, 8, 4091, 4092, wire.MaxContentLenLimit, wire.MaxContentLenLimit + 1}},
	} {
		t.Run(fmt.Sprintf("max %d", sc.max), func(t *testing.T) {
			t.Parallel()
			n := nodetest.Start(t, func(c *node.Config) {
				c.MaxContentLen = sc.max
				// The sweep never heartbeats again, so the phone must
				// stay online for instant pushes throughout.
				c.OnlineWindow = time.Hour
				c.CompatTicketFile = filepath.Join(t.TempDir(), "ticket")
				if err := os.WriteFile(c.CompatTicketFile, []byte(sweepTicket), 0o600); err != nil {
					t.Fatal(err)
				}
			})
			for ei, e := range pushEntries(t, n) {
				for _, network := range []string{"udp", "tcp"} {
					t.Run(e.name+" to "+network, func(t *testing.T) {
						t.Parallel()
						e := pushEntries(t, n)[ei]
						u := uuidOf(fmt.Sprintf("sweep-%-4d-%d-%s", sc.max, ei, network))
						ph := dialSweepPhone(t, n, network, u)
						for _, l := range sc.lengths {
							payload := sweepPayload(l, ei, e.text)
							ok := e.custom(u, payload)
							if want := l >= 1 && l <= sc.max; ok != want {
								t.Fatalf("custom of %d bytes (max %d): accepted %v, want %v", l, sc.max, ok, want)
							}
							if ok {
								ph.expect(serverMessage(wire.CmdCustom, payload))
							} else {
								ph.expectNone()
							}
						}
						// A 0x11 carries its 8 bytes whatever the maximum.
						const bits = 0x0102030405060708
						if !e.classified(u, bits) {
							t.Fatalf("classified push refused with max %d", sc.max)
						}
						ph.expect(serverMessage(wire.CmdClassified, maskBytes(bits)))
						ph.expectNone()
					})
				}
			}
		})
	}
}

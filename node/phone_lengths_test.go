package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node"
	"github.com/ddpush/ddpush-operator/node/nodetest"
	"github.com/ddpush/ddpush-operator/node/phone"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// The simulated phone receives custom messages of the lengths that sit on
// a boundary, on both transports, sent at once and resent on a heartbeat,
// and acks each as what it is: an 8-byte custom message is acked as 0x20
// and never taken for a 0x11 mask.
func TestPhoneReceivesBoundaryLengths(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) {
		c.MaxContentLen = wire.MaxContentLenLimit
		c.OnlineWindow = time.Hour
	})
	ctx := context.Background()
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			dial := func(name string) (*phone.Phone, wire.UUID) {
				u := uuidOf(name)
				ph, err := phone.Dial(network, n.ClientAddr().String(), u)
				must(t, err)
				t.Cleanup(func() { ph.Close() })
				ph.AppID = 7
				return ph, u
			}
			// acked waits until the phone's ack cleared everything.
			acked := func(u wire.UUID, what string) {
				nodetest.Eventually(t, 10*time.Second, func() error {
					info, err := n.API.Client(ctx, u.String())
					if err != nil || len(info.Pending) != 0 || info.Mask != 0 {
						return fmt.Errorf("after the ack of %s: %+v %v", what, info, err)
					}
					return nil
				})
			}
			ph, u := dial("phone-online-" + network)
			must(t, ph.Heartbeat())
			nodetest.Eventually(t, 10*time.Second, func() error {
				info, err := n.API.Client(ctx, u.String())
				if err != nil || !info.Online {
					return fmt.Errorf("not online: %+v %v", info, err)
				}
				return nil
			})
			p := dialPusher(t, n)
			for _, l := range []int{1, 7, 8, 9, 29, 4091, 4092, wire.MaxContentLenLimit} {
				payload := sweepPayload(l, 3, false)
				check := func(m phone.Message, wantApp byte, how string) {
					t.Helper()
					if m.Cmd != wire.CmdCustom || m.AppID != wantApp || string(m.Body) != string(payload) {
						t.Fatalf("%d bytes %s: got cmd %#x appId %d, %d bytes", l, how, m.Cmd, m.AppID, len(m.Body))
					}
				}
				// Sent at once to the online phone, with appId 0.
				must(t, p.Custom(u, payload))
				m, err := ph.Next(10 * time.Second)
				must(t, err)
				check(m, 0, "sent at once")
				acked(u, fmt.Sprintf("%d bytes", l))

				// Queued for a phone never seen, and sent as the answer
				// to its first heartbeat, with its appId.
				off, ou := dial(fmt.Sprintf("off-%s-%d", network, l))
				must(t, p.Custom(ou, payload))
				must(t, off.Heartbeat())
				m, err = off.Next(10 * time.Second)
				must(t, err)
				check(m, off.AppID, "answering a heartbeat")
				acked(ou, fmt.Sprintf("%d bytes", l))
			}
			// And a 0x11 is read and acked as its mask.
			must(t, p.Classified(u, 0xa5a5a5a5a5a5a5a5))
			m, err := ph.Next(10 * time.Second)
			must(t, err)
			if m.Cmd != wire.CmdClassified || string(m.Body) != string(maskBytes(0xa5a5a5a5a5a5a5a5)) {
				t.Fatalf("classified: cmd %#x body % x", m.Cmd, m.Body)
			}
			acked(u, "a 0x11")
		})
	}
}

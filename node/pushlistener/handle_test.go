package pushlistener_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node/core"
	"github.com/ddpush/ddpush-operator/node/pushlistener"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// startPort runs a real core (bbolt in a temporary directory) and the push
// port on loopback, both stopped when the test ends.
func startPort(t *testing.T, maxContent int) (*core.Core, string) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := core.Open(t.TempDir(), core.Options{MaxContentLen: maxContent, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go c.Run(ctx)
	l, err := pushlistener.Listen("127.0.0.1:0", c, pushlistener.Options{FrameTimeout: 5 * time.Second}, log)
	if err != nil {
		t.Fatal(err)
	}
	go l.Serve()
	t.Cleanup(func() {
		l.Close()
		cancel()
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Error("core did not stop")
		}
	})
	return c, l.Addr().String()
}

// pushTable: the answer to a push of cmd with an n-byte body on a node
// whose maximum content length is max, from docs/protocol.md section 4:
// 0 accepted, 1 refused, -1 the connection is closed unanswered.
func pushTable(cmd byte, n, max int) int {
	limit := max
	if cmd == wire.CmdClassified {
		limit = 8
		if max > 8 {
			limit = max
		}
	}
	switch {
	case n > limit:
		return -1
	case cmd == wire.CmdGeneral && n == 0,
		cmd == wire.CmdClassified && n == 8,
		cmd == wire.CmdCustom && n >= 1:
		return 0
	}
	return 1
}

// Every command with every body length gets the answer of the table, and
// an accepted push changes only what its kind holds: an 8-byte custom
// payload is stored as data and leaves the mask alone, on every maximum.
func TestEveryRequestIsAnsweredAsTheTableSays(t *testing.T) {
	for _, max := range []int{1, 7, 8, 9, 24} {
		t.Run(fmt.Sprintf("max %d", max), func(t *testing.T) {
			t.Parallel()
			c, addr := startPort(t, max)
			var conn net.Conn
			for _, cmd := range []byte{wire.CmdHeartbeat, wire.CmdGeneral, wire.CmdClassified, wire.CmdCustom, 0x21, wire.CmdReset} {
				for n := 0; n <= max+2 || n <= 10; n++ {
					u := wire.UUID{cmd, byte(n), byte(max), 0x5a}
					body := bytes.Repeat([]byte{0xa5}, n)
					if conn == nil {
						var err error
						if conn, err = net.DialTimeout("tcp", addr, 5*time.Second); err != nil {
							t.Fatal(err)
						}
						cc := conn
						t.Cleanup(func() { cc.Close() })
					}
					_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
					if _, err := conn.Write(wire.AppendPush(nil, 1, cmd, u, body)); err != nil {
						t.Fatal(err)
					}
					var ans [1]byte
					_, err := io.ReadFull(conn, ans[:])
					got := int(ans[0])
					if err != nil {
						var ne net.Error
						if errors.As(err, &ne) && ne.Timeout() {
							t.Fatalf("cmd %#x with %d bytes: no answer and not closed", cmd, n)
						}
						got = -1
						conn.Close()
						conn = nil
					}
					if want := pushTable(cmd, n, max); got != want {
						t.Fatalf("cmd %#x with %d bytes (max %d): answer %d, want %d", cmd, n, max, got, want)
					}
					snap, ok := c.Lookup(u)
					if ok != (got == 0) {
						t.Fatalf("cmd %#x with %d bytes: record exists %v after answer %d", cmd, n, ok, got)
					}
					if !ok {
						continue
					}
					switch cmd {
					case wire.CmdGeneral:
						if snap.Ext.GeneralID == 0 || snap.Ext.Mask != 0 || snap.Ext.Custom != nil {
							t.Fatalf("general push left %+v", snap.Ext)
						}
					case wire.CmdClassified:
						if snap.Ext.Mask != 0xa5a5a5a5a5a5a5a5 || snap.Ext.Custom != nil {
							t.Fatalf("classified push left %+v", snap.Ext)
						}
					case wire.CmdCustom:
						if !bytes.Equal(snap.Ext.Custom, body) || snap.Ext.Mask != 0 || snap.Ext.GeneralID != 0 {
							t.Fatalf("custom push of %d bytes left mask %#x, payload % x", n, snap.Ext.Mask, snap.Ext.Custom)
						}
					}
				}
			}
		})
	}
}

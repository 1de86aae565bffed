// Package tcpaccept is the accept loop the node's TCP listeners share:
// it survives transient accept errors, refuses connections past a cap,
// and ends when the listener is closed.
package tcpaccept

import (
	"errors"
	"log/slog"
	"net"
	"sync/atomic"
	"time"
)

// Loop accepts from ln until it is closed. A connection beyond max open
// ones (0: no cap, counted in open, which serve must decrement) is closed
// at once after refused is called; every other one is handed to serve.
func Loop(ln net.Listener, max int, open *atomic.Int64, refused func(), log *slog.Logger, serve func(net.Conn)) error {
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Typically out of file descriptors: back off rather than spin.
			log.Warn("accept", "addr", ln.Addr().String(), "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if max > 0 && open.Load() >= int64(max) {
			refused()
			nc.Close()
			continue
		}
		open.Add(1)
		serve(nc)
	}
}

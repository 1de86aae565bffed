package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ddpush/ddpush-operator/node/wire"
)

// drain heartbeats a set of phones until each has had the answer it
// waits for: the pending message of a backlog, the push expected after a
// restart, or the 0x00 that proves a record exists. Each socket keeps up
// to window heartbeats in flight; the appId of each heartbeat (echoed by
// the server in every answer, docs/protocol.md section 3) tags it, so that an
// answer is matched to its phone without any extra state on the server.
// A phone not answered within retry is heartbeated again, up to tries
// times.
type drainConfig struct {
	window  int
	retry   time.Duration
	tries   int
	timeout time.Duration // whole drain
}

// verdict is what a handler makes of one answer.
type verdict uint8

const (
	waitMore verdict = iota // not the answer this phone waits for
	finished                // this phone is done
)

// drainHandler judges message m received by socket si in answer to a
// heartbeat of phone (-1 when the answer cannot be matched, e.g. a late
// one). It may queue an ack on s.
type drainHandler func(si int, s *phoneSock, phone int, m *wire.ServerMessage) verdict

type drainStats struct {
	Done    int64 // phones finished
	Failed  int64 // phones given up after tries
	Retries int64 // heartbeats sent again
	Elapsed time.Duration
	Last    time.Duration // from start to the last phone finished
}

type inflight struct {
	phone int
	sent  time.Time
	tries int
}

func drain(ctx context.Context, f *fleet, todo []int, c drainConfig, h drainHandler) (drainStats, error) {
	c.window = max(1, min(c.window, 127)) // appIds 1..255 cycle: an id is not reused while an answer to it may be late
	perSock := make([][]int, len(f.socks))
	for _, i := range todo {
		si := i % len(f.socks)
		perSock[si] = append(perSock[si], i)
	}
	start := time.Now()
	deadline := start.Add(c.timeout)
	var done, failed, retries atomic.Int64
	var last atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, len(f.socks))
	for si, s := range f.socks {
		if len(perSock[si]) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			queue := perSock[si]
			var retryQ []inflight
			var slots [256]inflight
			active := 0
			nextID := 1
			tries := map[int]int{}
			for i := range slots {
				slots[i].phone = -1
			}
			var m wire.ServerMessage
			for {
				now := time.Now()
				if now.After(deadline) {
					errs[si] = fmt.Errorf("drain: %d phones of socket %d not finished within %v", len(queue)+len(retryQ)+active, si, c.timeout)
					return
				}
				if ctx.Err() != nil {
					errs[si] = ctx.Err()
					return
				}
				// Fill the window: retries first.
				for active < c.window && (len(retryQ) > 0 || len(queue) > 0) {
					var p int
					if len(retryQ) > 0 {
						p = retryQ[0].phone
						retryQ = retryQ[1:]
					} else {
						p = queue[0]
						queue = queue[1:]
					}
					for slots[nextID].phone >= 0 {
						nextID = nextID%255 + 1
					}
					slots[nextID] = inflight{phone: p, sent: now, tries: tries[p] + 1}
					tries[p]++
					s.queue(byte(nextID), wire.CmdHeartbeat, f.ids[p], nil)
					nextID = nextID%255 + 1
					active++
				}
				if s.pending() > 0 {
					if err := s.flush(); err != nil {
						errs[si] = err
						return
					}
				}
				if active == 0 && len(queue) == 0 && len(retryQ) == 0 {
					return
				}
				n, err := s.read(now.Add(min(c.retry/2, 50*time.Millisecond)))
				if err != nil {
					errs[si] = err
					return
				}
				for j := range n {
					if wire.DecodeServer(s.msg(j), &m) != nil {
						continue
					}
					phone := -1
					slot := &slots[m.AppID]
					if m.AppID != 0 && slot.phone >= 0 {
						phone = slot.phone
					}
					if h(si, s, phone, &m) == finished && phone >= 0 {
						slot.phone = -1
						active--
						delete(tries, phone)
						done.Add(1)
						last.Store(int64(time.Since(start)))
					}
				}
				if s.pending() > 0 {
					if err := s.flush(); err != nil {
						errs[si] = err
						return
					}
				}
				// Give up waiting on heartbeats unanswered for too long.
				now = time.Now()
				for id := 1; id < 256; id++ {
					sl := &slots[id]
					if sl.phone < 0 || now.Sub(sl.sent) < c.retry {
						continue
					}
					if sl.tries >= c.tries {
						failed.Add(1)
						delete(tries, sl.phone)
					} else {
						retries.Add(1)
						retryQ = append(retryQ, *sl)
					}
					sl.phone = -1
					active--
				}
			}
		}()
	}
	wg.Wait()
	st := drainStats{Done: done.Load(), Failed: failed.Load(), Retries: retries.Load(), Elapsed: time.Since(start), Last: time.Duration(last.Load())}
	for _, err := range errs {
		if err != nil {
			if isRefused(err) {
				return st, fmt.Errorf("the server refuses UDP (not listening?): %w", err)
			}
			return st, errors.Join(errs...)
		}
	}
	return st, nil
}

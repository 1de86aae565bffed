package peer

import (
	"context"
	"sync"
	"sync/atomic"
)

// queue is a link's bounded send queue: encoded frames appended to one
// buffer. The writer swaps the buffer out and sends it as one batch, then
// looks again, so frames that arrive while a batch is being written go
// out together in the next one (the writer flushes when the queue is
// empty). Bounded by frames and by bytes: a full queue refuses at once
// (see room for the reserve requests and answers have).
type queue struct {
	mu        sync.Mutex
	open      bool // a stream is up and its writer draining
	buf       []byte
	frames    int
	calls     []queuedCall // requests in buf, by position
	maxFrames int
	maxBytes  int
	wake      chan struct{}
}

func (q *queue) init(maxFrames, maxBytes int) {
	q.maxFrames, q.maxBytes = maxFrames, maxBytes
	q.wake = make(chan struct{}, 1)
}

// room says whether a frame of n bytes fits; the caller holds mu.
// Requests and answers (call) may go past the queue's bounds, up to
// twice its frames and the largest batch: a flood of phone packets or
// ToPhone frames must not starve the pushes and their answers, which
// are few and which someone waits for.
func (q *queue) room(n int, call bool) bool {
	if call {
		return q.frames < 2*q.maxFrames && len(q.buf)+n <= MaxBatchBytes
	}
	return q.frames < q.maxFrames && len(q.buf)+n <= q.maxBytes
}

func (q *queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// setOpen opens or closes the queue. Closing discards what is queued and
// returns the number of frames discarded; the caller fails their calls.
func (q *queue) setOpen(open bool) (discarded int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.open = open
	discarded = q.frames
	q.buf, q.frames = q.buf[:0], 0
	clear(q.calls)
	q.calls = q.calls[:0]
	return discarded
}

// Call states: a request is queued until the writer hands it to the
// stream (sent) or its caller gives up first (abandoned); exactly one of
// the two transitions wins.
const (
	callQueued uint32 = iota
	callSent
	callAbandoned
)

// call is one request waiting for its answer.
type call struct {
	corr  uint64
	kind  Type // the answer's frame type
	state atomic.Uint32
	done  chan struct{}
	push  PushAns
	look  LookupAns
	err   error
}

type queuedCall struct {
	c          *call
	start, end int
}

// writeLoop drains the queue until ctx ends or send fails.
func (q *queue) writeLoop(ctx context.Context, send func(any) error, st *counters) error {
	var spare []byte
	var spareCalls []queuedCall
	msg := &batchMsg{}
	for {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-q.wake:
		}
		for {
			q.mu.Lock()
			if q.frames == 0 {
				q.mu.Unlock()
				break
			}
			batch, frames, calls := q.buf, q.frames, q.calls
			q.buf, q.frames, q.calls = spare[:0], 0, spareCalls[:0]
			q.mu.Unlock()

			if len(calls) > 0 {
				batch, frames = handOver(batch, frames, calls)
				clear(calls)
			}
			if frames > 0 {
				msg.b = batch
				if err := send(msg); err != nil {
					return err
				}
				st.countOut(frames, len(batch))
			}
			spare, spareCalls = batch[:0], calls[:0]
		}
	}
}

// handOver marks the batch's requests as sent, and cuts out those whose
// callers gave up while they were queued: those must never reach the
// peer, since their callers were told they were not sent.
func handOver(batch []byte, frames int, calls []queuedCall) ([]byte, int) {
	w, r := 0, 0
	cut := false
	for _, qc := range calls {
		if qc.c.state.CompareAndSwap(callQueued, callSent) {
			continue
		}
		cut = true
		w += copy(batch[w:], batch[r:qc.start])
		r = qc.end
		frames--
	}
	if !cut {
		return batch, frames
	}
	w += copy(batch[w:], batch[r:])
	return batch[:w], frames
}

package core

import (
	"sync"
	"sync/atomic"

	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/store"
)

// eventLog holds the delivery events that heartbeats and acks produce
// until a commit takes them, numbers what a commit writes, and tells
// followers how far the durable log goes. Events are numbered only when
// a commit takes them, and the numbers of a failed commit are handed out
// again, so the durable log has no holes and followers only ever see
// what a commit made durable.
type eventLog struct {
	mu  sync.Mutex
	evs []state.Event

	nextSeq uint64 // next number to hand out; the committer's alone

	durable atomic.Uint64 // last durable sequence number
	waitMu  sync.Mutex
	changed chan struct{} // closed when durable moves
}

func newEventLog(nextSeq uint64) *eventLog {
	l := &eventLog{nextSeq: nextSeq, changed: make(chan struct{})}
	l.durable.Store(nextSeq - 1)
	return l
}

// Append implements clients.EventSink.
func (l *eventLog) Append(evs []state.Event) {
	l.mu.Lock()
	l.evs = append(l.evs, evs...)
	l.mu.Unlock()
}

func (l *eventLog) pending() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.evs) > 0
}

// take hands the buffered events to a commit, giving back the previous
// buffer for reuse.
func (l *eventLog) take(buf []state.Event) []state.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.evs
	clear(buf)
	l.evs = buf[:0]
	return out
}

// giveBack returns what a failed commit took, ahead of anything newer.
func (l *eventLog) giveBack(evs []state.Event) {
	l.mu.Lock()
	l.evs = append(append([]state.Event(nil), evs...), l.evs...)
	l.mu.Unlock()
}

// number appends evs to dst with the sequence numbers that follow the
// last durable one, and returns the number after the last.
func (l *eventLog) number(dst []store.Event, seq uint64, evs []state.Event) ([]store.Event, uint64) {
	for _, e := range evs {
		dst = append(dst, store.Event{Seq: seq, Event: e})
		seq++
	}
	return dst, seq
}

// publish marks everything up to seq durable and wakes followers.
func (l *eventLog) publish(seq uint64) {
	if seq <= l.durable.Load() {
		return
	}
	l.durable.Store(seq)
	l.waitMu.Lock()
	close(l.changed)
	l.changed = make(chan struct{})
	l.waitMu.Unlock()
}

// wait returns a channel closed when the durable sequence next moves.
func (l *eventLog) wait() <-chan struct{} {
	l.waitMu.Lock()
	defer l.waitMu.Unlock()
	return l.changed
}

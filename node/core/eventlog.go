package core

import (
	"sync"
	"sync/atomic"

	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/store"
)

// eventLog numbers delivery events and holds them, with the pushes they
// belong to, until a commit makes them durable. Followers only ever see
// durable events, so nothing they read can be undone by a crash.
type eventLog struct {
	mu      sync.Mutex
	nextSeq uint64
	evs     []store.Event
	pushes  []store.Push

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
	for _, e := range evs {
		l.evs = append(l.evs, store.Event{Seq: l.nextSeq, Event: e})
		l.nextSeq++
	}
	l.mu.Unlock()
}

// addPush registers a push before its record changes, so that the commit
// carrying its events always carries the push too.
func (l *eventLog) addPush(p store.Push) {
	l.mu.Lock()
	l.pushes = append(l.pushes, p)
	l.mu.Unlock()
}

func (l *eventLog) pending() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.evs) > 0 || len(l.pushes) > 0
}

// take hands the buffered events and pushes to a commit, giving back the
// previous buffers for reuse.
func (l *eventLog) take(evs []store.Event, pushes []store.Push) ([]store.Event, []store.Push, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	outE, outP := l.evs, l.pushes
	clear(evs)
	clear(pushes)
	l.evs, l.pushes = evs[:0], pushes[:0]
	return outE, outP, l.nextSeq
}

// giveBack returns what a failed commit took, ahead of anything newer.
func (l *eventLog) giveBack(evs []store.Event, pushes []store.Push) {
	l.mu.Lock()
	l.evs = append(append([]store.Event(nil), evs...), l.evs...)
	l.pushes = append(append([]store.Push(nil), pushes...), l.pushes...)
	l.mu.Unlock()
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

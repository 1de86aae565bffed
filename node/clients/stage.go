package clients

import (
	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// Stage is what one commit does to the table: pushes and expiry,
// prepared on copies of the records they change. Nothing of it is
// visible until Release: readers see the live records, which are what
// the store holds, and heartbeats and acks of the records it holds wait
// until it ends. CollectChanges includes it, so the commit writes the
// staged records; after the commit, Release makes them live, or Abort
// drops them as if they had never been made.
//
// One stage at a time: the committer begins one, stages into it, commits
// and ends it before beginning the next.
type Stage struct {
	t        *ClientTable
	released chan struct{}
	touched  [shardCount]bool
	shards   []uint8 // touched, in order
	evs      []state.Event
	expired  bool
	// Spare, if set, keeps the records it reports true for from Expire:
	// records of slots this pod does not serve (a slot move's copy, not
	// yet committed here) are not its to remove.
	Spare func(u *wire.UUID) bool
}

// stagedRecord is one record a stage changes.
type stagedRecord struct {
	rec  state.Record // what the record becomes, unless gone
	live bool         // a live record existed when the stage took the uuid
	gone bool         // the stage removes the record
}

// Begin starts a stage.
func (t *ClientTable) Begin() *Stage {
	st := &Stage{t: t, released: make(chan struct{})}
	t.released.Store(&st.released)
	return st
}

func (st *Stage) touch(s *shard, i uint8) {
	if !st.touched[i] {
		st.touched[i] = true
		st.shards = append(st.shards, i)
	}
	if s.staged == nil {
		s.staged = make(map[wire.UUID]*stagedRecord)
	}
}

// Events are the delivery events of what was staged, in order.
func (st *Stage) Events() []state.Event { return st.evs }

// Push stages an accepted push with id. It always succeeds: pushes create
// records even past the cap. It returns the fate the push has at the end
// of the stage so far and, when the client is online, the delivery to
// send once the stage is committed, its message appended to out.
func (st *Stage) Push(now int64, u wire.UUID, id uint64, kind state.Kind, bits uint64, payload []byte, out []byte) (state.Fate, Delivery) {
	if st.expired {
		panic("clients: push staged after expiry in the same stage")
	}
	s := st.t.shard(&u)
	s.mu.Lock()
	defer s.mu.Unlock()
	st.touch(s, uint8(shardOf(&u)))
	sr := s.staged[u]
	if sr == nil {
		sr = &stagedRecord{}
		if r := s.lookup(&u); r != nil {
			sr.live = true
			sr.rec = r.Clone()
			r.Flags |= state.FlagHeld
		} else {
			sr.rec = state.Record{UUID: u, LastSeen: now}
		}
		s.staged[u] = sr
	}
	first := len(st.evs)
	rep, udp, tcp, evs := sr.rec.Push(now, st.t.cfg.OnlineWindow, id, kind, bits, payload, st.evs)
	st.evs = evs
	fate := state.Queued
	for _, e := range st.evs[first:] {
		if e.PushID == id {
			fate = e.Fate
		}
	}
	var d Delivery
	if udp || tcp {
		d.Msg = rep.Append(out, 0)
		if udp {
			d.UDP, _ = sr.rec.Addr()
			d.Front = sr.rec.Front
			d.SendUDP = true
		}
		if tcp {
			d.Conn = sr.rec.Conn()
		}
	}
	return fate, d
}

// Expire stages the removal of every record whose last activity is before
// cutoff, and reports how many. Their pending pushes become Expired. A
// client with a live TCP connection is kept: it is demonstrably there.
// Pushes cannot be staged after it in the same stage.
func (st *Stage) Expire(now, cutoff int64) int {
	st.expired = true
	removed := 0
	for i := range st.t.shards {
		s := &st.t.shards[i]
		s.mu.Lock()
		for _, sr := range s.staged {
			if sr.gone || sr.rec.LastSeen >= cutoff || sr.rec.Conn() != nil || (st.Spare != nil && st.Spare(&sr.rec.UUID)) {
				continue
			}
			st.evs = sr.rec.Expire(now, st.evs)
			sr.gone = true
			removed++
		}
		for j := range s.n {
			r := s.rec(j)
			if r.Flags&state.FlagInUse == 0 || r.Flags&state.FlagHeld != 0 || r.LastSeen >= cutoff || r.Conn() != nil || (st.Spare != nil && st.Spare(&r.UUID)) {
				continue
			}
			st.evs = r.Expire(now, st.evs)
			r.Flags |= state.FlagHeld
			s.expiring = append(s.expiring, j)
			st.touch(s, uint8(i))
			removed++
		}
		s.mu.Unlock()
	}
	return removed
}

// Release makes the stage live: staged records replace the live ones,
// removed ones go, and the records are released. Call it once the store
// holds what CollectChanges collected of the stage.
func (st *Stage) Release() {
	t := st.t
	for _, i := range st.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for u, sr := range s.staged {
			r := s.lookup(&u)
			switch {
			case sr.gone:
				if r != nil {
					s.remove(r)
					t.count.Add(-1)
				}
				continue
			case r == nil:
				r = s.insert(&u)
				t.count.Add(1)
			}
			// The connection is not staged: keep the live one, which a
			// closing connection may have detached meanwhile.
			conn := r.Conn()
			*r = sr.rec
			r.Flags = r.Flags&^(state.FlagHeld|state.FlagDirty) | state.FlagInUse
			r.SetConn(conn)
		}
		for _, j := range s.expiring {
			s.remove(s.rec(j))
			t.count.Add(-1)
		}
		st.end(s)
		s.mu.Unlock()
	}
	close(st.released)
}

// Abort drops the stage: the live records stay as they are, as if
// nothing had been staged.
func (st *Stage) Abort() {
	t := st.t
	for _, i := range st.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for u := range s.staged {
			if r := s.lookup(&u); r != nil {
				r.Flags &^= state.FlagHeld
			}
		}
		for _, j := range s.expiring {
			s.rec(j).Flags &^= state.FlagHeld
		}
		st.end(s)
		s.mu.Unlock()
	}
	close(st.released)
}

func (st *Stage) end(s *shard) {
	clear(s.staged) // kept for the next stage: one map per shard, not per commit
	clear(s.expiring)
	s.expiring = s.expiring[:0]
}

// Package reshard moves slots between the pods of a sharded PushNode,
// Redis Cluster style: the source streams a set of slots' stored entries
// to the target while it keeps serving them, then holds them for a short
// handoff (the slots' records leave its table, what changed meanwhile
// goes after the rest), the target commits by installing the next slot
// map, and only then does the source take up that map, forward what
// arrives late for the slots, and delete its copy. At any moment one pod
// serves a slot; a restart at any step ends with the slot at exactly one
// of the two.
package reshard

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/core"
	"github.com/ddpush/ddpush-operator/node/shard"
	"github.com/ddpush/ddpush-operator/node/slotmap"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// Options configure a Mover.
type Options struct {
	Core   *core.Core
	Router *shard.Router
	// Token authenticates the calls to other pods' HTTP APIs.
	Token  string
	Logger *slog.Logger
	// Metrics, if set, counts what moves do.
	Metrics *Metrics
	// PauseAt, for fault-injection tests only, makes a source wait this
	// long before the step it names ("stream", "handoff", "commit",
	// "cleanup").
	PauseAt  string
	PauseFor time.Duration
}

// Mover runs this pod's side of slot moves.
type Mover struct {
	opt  Options
	log  *slog.Logger
	http *http.Client

	mu     sync.Mutex
	moves  map[string]*move
	seq    uint64
	active string // the id of the move this pod is the source of, while it runs
	closed bool
	stop   chan struct{}
	wg     sync.WaitGroup
}

// move is one move as this pod keeps it, in memory and (as state) in
// its store.
type move struct {
	state
	set slotmap.Set
	m   slotmap.Map // source: the map the move installs
	// target: where the phones of the handoff's records are reached
	fronts map[wire.UUID]api.MoveFront
}

// keepFinished is how many finished moves a pod keeps the state of, for
// GET /v1/moves/{id}; older ones are forgotten, except the moves a target
// committed (one per batch of slots it took, a few hundred bytes each).
const keepFinished = 64

// state is what a pod stores of a move.
type state struct {
	// Seq orders moves by when this pod learnt of them.
	Seq        uint64  `json:"seq"`
	ID         string  `json:"id"`
	Role       string  `json:"role"` // "source" or "target"
	Phase      string  `json:"phase"`
	Source     int     `json:"source"`
	Target     int     `json:"target"`
	TargetURL  string  `json:"targetURL,omitempty"`
	Slots      string  `json:"slots"`
	Epoch      uint64  `json:"epoch"`
	Map        []byte  `json:"map,omitempty"` // source: the binary form of the map
	Records    int64   `json:"records"`
	Pushes     int64   `json:"pushes"`
	HoldMillis float64 `json:"holdMillis,omitempty"`
	Error      string  `json:"error,omitempty"`
}

const (
	roleSource = "source"
	roleTarget = "target"
)

// New reads the moves this pod stored and settles those a restart cut
// short: a source that stopped in the handoff holds its slots until it
// learns from the target whether the move committed there. Call it
// before the node serves anything.
func New(opt Options) (*Mover, error) {
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	mv := &Mover{
		opt: opt, log: opt.Logger.With("part", "reshard"), moves: map[string]*move{}, stop: make(chan struct{}),
		http: &http.Client{Timeout: 60 * time.Second},
	}
	stored, err := opt.Core.Store().Moves()
	if err != nil {
		return nil, err
	}
	for id, b := range stored {
		var st state
		if err := json.Unmarshal(b, &st); err != nil {
			mv.log.Error("a stored move does not decode; it is ignored", "id", id, "err", err)
			continue
		}
		m := &move{state: st}
		if m.set, err = slotmap.ParseSet(st.Slots); err != nil {
			mv.log.Error("a stored move names bad slots; it is ignored", "id", id, "err", err)
			continue
		}
		if len(st.Map) > 0 {
			if err := m.m.UnmarshalBinary(st.Map); err != nil {
				mv.log.Error("a stored move's map does not decode; it is ignored", "id", id, "err", err)
				continue
			}
		}
		mv.moves[id] = m
		mv.seq = max(mv.seq, st.Seq)
	}
	for _, m := range mv.moves {
		if m.Role != roleSource {
			continue
		}
		switch m.Phase {
		case api.MoveStreaming:
			// Nothing was committed at the target before the handoff:
			// the slots are still only here. The target's copy goes
			// when the move runs again, or is called off.
			m.Phase, m.Error = api.MoveFailed, "this pod restarted while it streamed the slots; start the move again"
			_ = mv.save(m, nil)
			mv.goCallOff(m)
		case api.MoveHandoff:
			opt.Router.Hold(m.set)
			opt.Core.Fence(&m.set)
			mv.active = m.ID
			mv.goResolve(m)
		case api.MoveCommitted:
			// The map stored with this state gives the slots away; the
			// records loaded at start-up are deleted again.
			mv.active = m.ID
			mv.wg.Add(1)
			go func() {
				defer mv.wg.Done()
				mv.cleanup(m)
			}()
		}
	}
	return mv, nil
}

// Close stops what runs in the background; a move cut short resumes
// when the pod starts again.
func (mv *Mover) Close() {
	mv.mu.Lock()
	if !mv.closed {
		mv.closed = true
		close(mv.stop)
	}
	mv.mu.Unlock()
	mv.wg.Wait()
}

// Get is the state of a move this pod takes part in.
func (mv *Mover) Get(id string) (api.Move, bool) {
	mv.mu.Lock()
	defer mv.mu.Unlock()
	m := mv.moves[id]
	if m == nil {
		return api.Move{}, false
	}
	return m.view(), true
}

func (m *move) view() api.Move {
	return api.Move{ID: m.ID, Phase: m.Phase, Source: m.Source, Target: m.Target, Epoch: m.Epoch,
		Slots: m.set.Len(), Records: m.Records, Pushes: m.Pushes, HoldMillis: m.HoldMillis, Error: m.Error}
}

// save stores m's state; with slotMap set, the map in the same
// transaction. The caller holds no lock.
func (mv *Mover) save(m *move, slotMap []byte) error {
	mv.mu.Lock()
	b, err := json.Marshal(&m.state)
	mv.mu.Unlock()
	if err != nil {
		return err
	}
	return mv.opt.Core.Store().PutMove(m.ID, b, slotMap)
}

// set changes m under the lock.
func (mv *Mover) update(m *move, fn func(s *state)) {
	mv.mu.Lock()
	fn(&m.state)
	mv.mu.Unlock()
}

// InputError is a move request that cannot be done as asked.
type InputError struct{ Msg string }

func (e *InputError) Error() string { return e.Msg }

// ConflictError is a move request that clashes with this pod's state.
type ConflictError struct{ Msg string }

func (e *ConflictError) Error() string { return e.Msg }

func inputf(format string, args ...any) error    { return &InputError{fmt.Sprintf(format, args...)} }
func conflictf(format string, args ...any) error { return &ConflictError{fmt.Sprintf(format, args...)} }

// sleep waits d, or less if the mover closes; it reports false then.
func (mv *Mover) sleep(d time.Duration) bool {
	select {
	case <-time.After(d):
		return true
	case <-mv.stop:
		return false
	}
}

func (mv *Mover) pause(step string) {
	if mv.opt.PauseAt == step && mv.opt.PauseFor > 0 {
		mv.log.Warn("pausing a move for a fault-injection test", "step", step, "for", mv.opt.PauseFor)
		mv.sleep(mv.opt.PauseFor)
	}
}

func (mv *Mover) client(url string) *api.Client {
	c := api.NewClient(url, mv.opt.Token)
	c.HTTP = mv.http
	return c
}

// ctx is a context that ends when the mover closes.
func (mv *Mover) ctx() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-mv.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

var errClosed = errors.New("the node is stopping")

func errf(format string, args ...any) error { return fmt.Errorf(format, args...) }

func jsonOf(s *state) ([]byte, error) { return json.Marshal(s) }

// adopt registers a new move and forgets the oldest finished ones past
// keepFinished. The caller holds mv.mu.
func (mv *Mover) adopt(m *move) (forget []string) {
	mv.seq++
	m.Seq = mv.seq
	mv.moves[m.ID] = m
	var finished []*move
	for _, o := range mv.moves {
		// A target keeps its committed moves: an abort of one must be
		// refused for as long as its source may still ask.
		if o.ID != m.ID && o.ID != mv.active && (o.Phase == api.MoveDone || o.Phase == api.MoveFailed || o.Phase == phaseAborted) {
			finished = append(finished, o)
		}
	}
	if len(finished) <= keepFinished {
		return nil
	}
	slices.SortFunc(finished, func(a, b *move) int { return cmp.Compare(a.Seq, b.Seq) })
	for _, o := range finished[:len(finished)-keepFinished] {
		delete(mv.moves, o.ID)
		forget = append(forget, o.ID)
	}
	return forget
}

// forget deletes the stored state of moves adopt let go of.
func (mv *Mover) forget(ids []string) {
	if err := mv.opt.Core.Store().DeleteMoves(ids); err != nil {
		mv.log.Warn("forget old moves", "err", err)
	}
}

// Busy names the move this pod is the source of while it runs: the pod
// then takes no new slot map from elsewhere, since the move ends by
// installing its own.
func (mv *Mover) Busy() string {
	mv.mu.Lock()
	defer mv.mu.Unlock()
	return mv.active
}

// goCallOff tells, in the background, the target of a move that failed
// here before its handoff to drop what it got: its copy would stay until
// the next move of the slots. A few tries; the next move drops it anyway.
func (mv *Mover) goCallOff(m *move) {
	mv.wg.Add(1)
	go func() {
		defer mv.wg.Done()
		for try := range 5 {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := mv.targetClient(m).AbortMove(ctx, m.ID)
			cancel()
			if err == nil {
				return
			}
			mv.log.Warn("could not tell the target to drop what a move cut short sent it", "id", m.ID, "try", try+1, "err", err)
			if !mv.sleep(time.Duration(try+1) * time.Second) {
				return
			}
		}
	}()
}

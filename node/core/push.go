package core

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/stats"
	"github.com/ddpush/ddpush-operator/node/store"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// PushSpec is one push to make.
type PushSpec struct {
	UUID    wire.UUID
	Kind    state.Kind
	Bits    uint64 // Classified
	Payload []byte // Custom; owned by the core once passed
	// Key makes the push idempotent: a second push with the same key
	// returns the first one's result instead of pushing again.
	Key string
	// NotAfter, when set, is the last moment the push may start being
	// committed; later it is refused with ErrTooLate. A pod relaying the
	// push sets it to before it stops waiting for the answer, so that a
	// push it could only answer "outcome unknown" is not committed.
	NotAfter time.Time
}

// ErrTooLate refuses a push whose NotAfter passed before its commit began.
var ErrTooLate = errors.New("the pod that relayed the push stopped waiting for it before its commit began")

// PushResult says what became of an accepted push.
type PushResult struct {
	ID         uint64
	UUID       wire.UUID
	Kind       state.Kind
	Fate       state.Fate // the fate it was committed with; the current fate for a duplicate
	AcceptedAt time.Time
	Duplicate  bool
	// Relayed: another pod, the uuid's home, accepted it: Home is its
	// ordinal, and ID is one of its ids.
	Relayed bool
	Home    int
}

// InputError is a push the node refuses as malformed.
type InputError struct{ Msg string }

func (e *InputError) Error() string { return e.Msg }

// MaxKeyLen bounds idempotency keys.
const MaxKeyLen = 256

// Validate checks a push spec against the protocol and the node's limits.
func (c *Core) Validate(p *PushSpec) error {
	switch p.Kind {
	case state.General:
		if p.Bits != 0 || len(p.Payload) != 0 {
			return &InputError{"a general push carries no bits and no data"}
		}
	case state.Classified:
		if len(p.Payload) != 0 {
			return &InputError{"a classified push carries bits, not data"}
		}
	case state.Custom:
		if p.Bits != 0 {
			return &InputError{"a custom push carries data, not bits"}
		}
		if len(p.Payload) == 0 {
			return &InputError{"a custom push needs at least one byte of data"}
		}
		if len(p.Payload) > c.opt.MaxContentLen {
			return &InputError{fmt.Sprintf("data is %d bytes, above this node's maximum of %d", len(p.Payload), c.opt.MaxContentLen)}
		}
	default:
		return &InputError{"kind must be general, classified or custom"}
	}
	if len(p.Key) > MaxKeyLen {
		return &InputError{fmt.Sprintf("idempotency key is %d bytes, above the maximum of %d", len(p.Key), MaxKeyLen)}
	}
	return nil
}

type inflight struct {
	done chan struct{}
	res  PushResult
	err  error
}

// Push accepts a push and returns once it is durable, or refuses it with
// an error, in which case nothing of it happened: no phone received it,
// it replaced nothing, and its key is free. Pushes from concurrent
// callers share one commit.
func (c *Core) Push(ctx context.Context, p PushSpec) (PushResult, error) {
	if err := c.Validate(&p); err != nil {
		return PushResult{}, err
	}
	if r := c.relay.Load(); r != nil && !r.r.Local(p.UUID) {
		return r.r.Push(ctx, p)
	}
	res, err := c.pushValid(ctx, p)
	if errors.Is(err, ErrSlotMoving) {
		if r := c.relay.Load(); r != nil {
			return r.r.Push(ctx, p)
		}
	}
	return res, err
}

// PushLocal accepts a push for a uuid homed here (see Push); a pod's peer
// server calls it for pushes relayed by other pods.
func (c *Core) PushLocal(ctx context.Context, p PushSpec) (PushResult, error) {
	if err := c.Validate(&p); err != nil {
		return PushResult{}, err
	}
	return c.pushValid(ctx, p)
}

// pushValid accepts a push Validate passed.
func (c *Core) pushValid(ctx context.Context, p PushSpec) (PushResult, error) {
	if p.Key == "" {
		return c.push(p)
	}
	for {
		c.keyMu.Lock()
		if f := c.inflight[p.Key]; f != nil {
			c.keyMu.Unlock()
			select {
			case <-f.done:
			case <-ctx.Done():
				return PushResult{}, ctx.Err()
			}
			if f.err != nil {
				continue // the first attempt was refused: try for real
			}
			return c.duplicate(f.res.ID, f.res)
		}
		stored, ok, err := c.store.PushByKey(p.Key)
		if err != nil {
			c.keyMu.Unlock()
			return PushResult{}, err
		}
		if ok {
			c.keyMu.Unlock()
			return c.resultOf(stored, true), nil
		}
		f := &inflight{done: make(chan struct{})}
		c.inflight[p.Key] = f
		c.keyMu.Unlock()

		f.res, f.err = c.push(p)
		c.keyMu.Lock()
		delete(c.inflight, p.Key)
		c.keyMu.Unlock()
		close(f.done)
		return f.res, f.err
	}
}

func (c *Core) duplicate(id uint64, fallback PushResult) (PushResult, error) {
	stored, ok, err := c.store.GetPush(id)
	if err != nil {
		return PushResult{}, err
	}
	if !ok {
		fallback.Duplicate = true
		return fallback, nil
	}
	return c.resultOf(stored, true), nil
}

func (c *Core) resultOf(p store.Push, dup bool) PushResult {
	return PushResult{ID: p.ID, UUID: p.UUID, Kind: p.Kind, Fate: p.Fate, AcceptedAt: time.Unix(0, p.AcceptedAt), Duplicate: dup}
}

// push queues p for the next commit and waits for it. The wait ignores
// the caller's cancellation: once queued, the push is committed or
// refused whether or not the caller still waits, and a caller that gave
// up must not report a failure for a push that lands (a retry with the
// same key would push twice).
func (c *Core) push(p PushSpec) (PushResult, error) {
	o := &op{push: p}
	cy, err := c.enqueue(o)
	if err != nil {
		return PushResult{}, err
	}
	<-cy.done
	if o.err != nil {
		return PushResult{}, fmt.Errorf("push to %s not accepted: %w", p.UUID, o.err)
	}
	return o.res, nil
}

// deliver sends a committed push to its online client.
func (c *Core) deliver(msg []byte, d *delivery) {
	if d.sendUDP && d.front != 0 {
		if r := c.relay.Load(); r != nil {
			r.r.ToPhoneUDP(int(d.front-1), d.udp, msg)
		} else {
			c.st.Drop(stats.DropUDPSendError)
		}
	} else if d.sendUDP {
		if h := c.udp.Load(); h != nil {
			if err := h.s.SendUDP(msg, d.udp); err != nil {
				c.st.Drop(stats.DropUDPSendError)
			} else {
				c.st.PacketsOut[stats.UDP].Add(1)
			}
		}
	}
	if cs, ok := d.conn.(ConnSender); ok {
		// The connection copies what it keeps, and counts what it
		// writes: a message it replaces before writing is not sent.
		cs.Send(msg)
	}
}

// KeyReuseDiffers says how a request reusing an idempotency key differs from
// the push first made with it, or "" when it is the same push: the same
// target (however named: uuid in either case, or the user id it derives
// from), kind, bits and payload bytes (as data or as binaryData).
func KeyReuseDiffers(p *store.Push, spec *PushSpec) string {
	switch {
	case p.UUID != spec.UUID:
		return "went to uuid " + p.UUID.String()
	case p.Kind != spec.Kind:
		return "was a " + p.Kind.String() + " push"
	case p.Kind == state.Classified && p.Bits != spec.Bits:
		return fmt.Sprintf("carried bits %#x", p.Bits)
	case p.Kind == state.Custom && p.Size != len(spec.Payload):
		return fmt.Sprintf("carried %d bytes", p.Size)
	case p.Kind == state.Custom && p.Digest != (store.PayloadDigest{}) && p.Digest != store.DigestOf(spec.Payload):
		return fmt.Sprintf("carried other %d bytes", p.Size)
	}
	return ""
}

// KeyReusedError is a push refused because its idempotency key was first
// used for another push (ID), which Why says how it differs from.
type KeyReusedError struct {
	Key string
	ID  uint64
	Why string
}

func (e *KeyReusedError) Error() string {
	return fmt.Sprintf("idempotency key %q was first used for push %d, which %s: a key may only repeat the same push (a retry); use a new key for a new push", e.Key, e.ID, e.Why)
}

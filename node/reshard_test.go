package node_test

import (
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node"
	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/nodetest"
	"github.com/ddpush/ddpush-operator/node/phone"
	"github.com/ddpush/ddpush-operator/node/slotmap"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// movePods runs two pods of one PushNode as processes: pod 0 owns every
// slot, pod 1 none, as when a PushNode of one pod grows to two.
type movePods struct {
	t     *testing.T
	mu    sync.Mutex // guards procs against the pushers while a pod restarts
	procs [2]*nodetest.Process
	dirs  [2]string
	peers map[int]string
	m     slotmap.Map
}

func startMovePods(t *testing.T, pause0 string) *movePods {
	t.Helper()
	mp := &movePods{t: t, peers: map[int]string{}}
	base := t.TempDir()
	for i := range mp.procs {
		mp.dirs[i] = filepath.Join(base, strconv.Itoa(i), "data")
		if err := os.MkdirAll(filepath.Dir(mp.dirs[i]), 0o755); err != nil {
			t.Fatal(err)
		}
		mp.start(i, map[bool]string{true: pause0}[i == 0])
	}
	m, err := slotmap.New(1, []slotmap.Range{{From: 0, To: slotmap.NumSlots - 1, Ordinal: 0}}, mp.peers)
	if err != nil {
		t.Fatal(err)
	}
	mp.install(m)
	return mp
}

// start starts pod i, or restarts it on the addresses it had, as a pod
// comes back under its own name; pause is the fault-injection pause of
// its moves, if any.
func (mp *movePods) start(i int, pause string) {
	mp.t.Helper()
	if pause != "" {
		os.Setenv(node.MovePauseEnv, pause)
		defer os.Unsetenv(node.MovePauseEnv)
	}
	// A peer secret apart from the API token, as the operator gives its
	// pods: the move's calls between pods take the API token.
	peerToken := filepath.Join(filepath.Dir(mp.dirs[i]), "peer-token")
	if err := os.WriteFile(peerToken, []byte("peer-secret-of-the-pods"), 0o600); err != nil {
		mp.t.Fatal(err)
	}
	args := []string{"--peer-addr", "127.0.0.1:0", "--ordinal", strconv.Itoa(i), "--peer-token-file", peerToken}
	if old := mp.procs[i]; old != nil {
		args = append(args, "--client-addr", old.Client, "--push-addr", old.Push, "--http-addr", old.HTTP, "--peer-addr", old.Peer)
	}
	p := nodetest.StartProcess(mp.t, mp.dirs[i], args...)
	mp.mu.Lock()
	mp.procs[i] = p
	mp.mu.Unlock()
	mp.peers[i] = p.Peer
}

// proc is pod i, for goroutines that run while pods restart.
func (mp *movePods) proc(i int) *nodetest.Process {
	mp.mu.Lock()
	defer mp.mu.Unlock()
	return mp.procs[i]
}

// install hands m to both pods.
// waitPaused returns once pod i's move has reached the step its
// fault-injection setting pauses at (the pod logs it), which on a busy
// machine can take a while.
func (mp *movePods) waitPaused(i int) {
	mp.t.Helper()
	nodetest.Eventually(mp.t, 20*time.Second, func() error {
		if !strings.Contains(mp.procs[i].Logs(), "pausing a move for a fault-injection test") {
			return fmt.Errorf("pod %d has not reached the paused step", i)
		}
		return nil
	})
	time.Sleep(100 * time.Millisecond)
}

func (mp *movePods) install(m slotmap.Map) {
	mp.t.Helper()
	mp.m = m
	for _, p := range mp.procs {
		putMapTo(mp.t, p, m)
	}
}

// moveMap is mp.m with slots from..to given to pod 1, at the next epoch.
func (mp *movePods) moveMap(from, to int) slotmap.Map {
	mp.t.Helper()
	ranges := []slotmap.Range{{From: from, To: to, Ordinal: 1}}
	if from > 0 {
		ranges = append(ranges, slotmap.Range{From: 0, To: from - 1, Ordinal: 0})
	}
	if to < slotmap.NumSlots-1 {
		ranges = append(ranges, slotmap.Range{From: to + 1, To: slotmap.NumSlots - 1, Ordinal: 0})
	}
	m, err := slotmap.New(mp.m.Epoch()+1, ranges, mp.peers)
	if err != nil {
		mp.t.Fatal(err)
	}
	return m
}

func (mp *movePods) startMove(id string, m slotmap.Map) (api.Move, error) {
	return mp.procs[0].API.StartMove(context.Background(), api.MoveRequest{
		ID: id, Map: api.FromMap(m), Target: 1, TargetURL: "http://" + mp.procs[1].HTTP})
}

// runMove starts (or restarts) move id and waits until it is done,
// starting it again while it fails, as the operator does.
func (mp *movePods) runMove(id string, m slotmap.Map, within time.Duration) api.Move {
	mp.t.Helper()
	var last api.Move
	nodetest.Eventually(mp.t, within, func() error {
		got, err := mp.procs[0].API.GetMove(context.Background(), id)
		var se *api.StatusError
		if err != nil && !(errors.As(err, &se) && se.Code == http.StatusNotFound) {
			return err
		}
		if err != nil || got.Phase == api.MoveFailed {
			if got, err = mp.startMove(id, m); err != nil {
				return fmt.Errorf("start move: %w", err)
			}
		}
		last = got
		if got.Phase != api.MoveDone {
			time.Sleep(50 * time.Millisecond)
			return fmt.Errorf("move %s is %s (%s)", id, got.Phase, got.Error)
		}
		return nil
	})
	return last
}

// pushOutcome is what a push was answered.
// clientSettled looks a phone up, asking again for up to 15 s while the
// answer is a 503 or no answer: a pod just restarted, or a peer link
// being re-made after one, is a passing state, not the answer the test
// checks.
func clientSettled(ctx context.Context, a *api.Client, uuid string) (api.ClientInfo, error) {
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := a.Client(ctx, uuid)
		var se *api.StatusError
		passing := err != nil && (!errors.As(err, &se) || se.Code == http.StatusServiceUnavailable)
		if !passing || time.Now().After(deadline) {
			return c, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type pushOutcome int

const (
	pushAccepted pushOutcome = iota + 1
	pushRefused
	pushUnknown
)

// refusals collects why pushes were refused, for the logs.
var refusals sync.Map

// pushOnce pushes a custom message to u through p and classifies the
// answer. A connection that fails may have carried a push that was
// accepted: unknown.
func pushOnce(p *nodetest.Process, u wire.UUID, data string) (pushOutcome, uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	res, err := p.API.Push(ctx, api.PushRequest{UUID: u.String(), Kind: "custom", Data: data})
	var se *api.StatusError
	switch {
	case err == nil:
		return pushAccepted, res.ID
	case errors.As(err, &se) && se.Code == http.StatusServiceUnavailable:
		refusals.Store(se.Message, true)
		return pushRefused, 0
	default:
		return pushUnknown, 0
	}
}

// TestSlotMoveUnderLoad moves half the slots between two real nodes
// while phones heartbeat and ack through both pods and app servers push
// through both: every push answered accepted reaches its phone exactly
// once, every refused one never, each record ends at exactly one pod,
// and the phones never change the address they talk to.
func TestSlotMoveUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes")
	}
	mp := startMovePods(t, "")
	ctx := context.Background()

	// Records that are not online: the bulk of what a move carries.
	const idle = 3000
	uuids := make([]string, idle)
	for i := range uuids {
		uuids[i] = wire.UUID(md5.Sum([]byte("idle" + strconv.Itoa(i)))).String()
	}
	for i := 0; i < idle; i += 500 {
		if _, err := mp.procs[0].API.BulkPush(ctx, api.BulkPushRequest{UUIDs: uuids[i : i+500], Kind: "general"}); err != nil {
			t.Fatal(err)
		}
	}

	// Phones on both pods, half of them homed in the moving slots.
	const nPhones = 40
	phones := make([]*phone.Phone, nPhones)
	for i := range phones {
		u := wire.UUID(md5.Sum([]byte("live" + strconv.Itoa(i))))
		network := []string{"udp", "tcp"}[i%2]
		ph, err := phone.Dial(network, mp.procs[(i/2)%2].Client, u)
		if err != nil {
			t.Fatal(err)
		}
		ph.AutoAck = true
		defer ph.Close()
		phones[i] = ph
	}
	var mu sync.Mutex
	got := map[string]int{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// Pushed phones heartbeat once to come online and then only ack: a
	// heartbeat that crosses a message on its way makes the node send it
	// again, as the protocol wants, which would hide what a move does.
	for _, ph := range phones {
		if err := ph.Heartbeat(); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for {
				select {
				case msg := <-ph.Messages():
					if msg.Cmd == wire.CmdCustom {
						mu.Lock()
						got[string(msg.Body)]++
						mu.Unlock()
					}
				case <-stop:
					return
				}
			}
		})
	}
	// Other phones only heartbeat, all through the move.
	beaters := make([]*phone.Phone, nPhones)
	for i := range beaters {
		ph, err := phone.Dial([]string{"udp", "tcp"}[i%2], mp.procs[(i/2)%2].Client, wire.UUID(md5.Sum([]byte("beat"+strconv.Itoa(i)))))
		if err != nil {
			t.Fatal(err)
		}
		defer ph.Close()
		beaters[i] = ph
		wg.Go(func() {
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ph.Messages():
				case <-tick.C:
					_ = ph.Heartbeat()
				case <-stop:
					return
				}
			}
		})
	}
	nodetest.Eventually(t, 10*time.Second, func() error {
		for _, ph := range append(phones[:nPhones:nPhones], beaters...) {
			c, err := mp.procs[1].API.Client(ctx, ph.UUID.String())
			if err != nil || !c.Online {
				return fmt.Errorf("phone %s not online: %v", ph.UUID, err)
			}
		}
		return nil
	})

	// App servers push to the phones, one message after another, through
	// both pods, before, during and after the move.
	outcomes := map[string]pushOutcome{}
	pushing := make(chan struct{})
	var pwg sync.WaitGroup
	for w := range 4 {
		pwg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-pushing:
					return
				default:
				}
				ph := phones[(w+4*i)%nPhones]
				data := fmt.Sprintf("w%d-%d", w, i)
				o, _ := pushOnce(mp.proc((w+i)%2), ph.UUID, data)
				mu.Lock()
				outcomes[data] = o
				mu.Unlock()
				// The protocol keeps one custom message per phone: wait
				// for this one before the next to the same phone.
				if o == pushAccepted {
					deadline := time.Now().Add(10 * time.Second)
					for time.Now().Before(deadline) {
						mu.Lock()
						n := got[data]
						mu.Unlock()
						if n > 0 {
							break
						}
						time.Sleep(5 * time.Millisecond)
					}
				}
			}
		})
	}
	time.Sleep(500 * time.Millisecond)
	m2 := mp.moveMap(0, 511)
	var mv api.Move
	if os.Getenv("NOMOVE") == "" {
		mv = mp.runMove("e2", m2, 60*time.Second)
		mp.install(m2)
	} else {
		time.Sleep(2 * time.Second)
	}
	time.Sleep(500 * time.Millisecond)
	close(pushing)
	pwg.Wait()

	// Everything accepted has arrived, without a heartbeat to fetch it.
	nodetest.Eventually(t, 5*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		for data, o := range outcomes {
			if o == pushAccepted && got[data] == 0 {
				return fmt.Errorf("accepted push %s not delivered", data)
			}
		}
		return nil
	})
	for _, ph := range beaters {
		c, err := mp.procs[0].API.Client(ctx, ph.UUID.String())
		if err != nil || !c.Online {
			t.Errorf("heartbeating phone %s (slot %d) is not online after the move: %+v %v", ph.UUID, slotmap.Slot(ph.UUID), c, err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	counts := map[pushOutcome]int{}
	for data, o := range outcomes {
		counts[o]++
		switch n := got[data]; {
		case o == pushAccepted && n != 1:
			t.Errorf("accepted push %s reached its phone %d times", data, n)
		case o == pushRefused && n != 0:
			t.Errorf("refused push %s reached its phone", data)
		}
	}
	t.Logf("move: %d records, %d pushes, hold %.2f ms; pushes: %d accepted, %d refused, %d unknown",
		mv.Records, mv.Pushes, mv.HoldMillis, counts[pushAccepted], counts[pushRefused], counts[pushUnknown])
	refusals.Range(func(k, _ any) bool { t.Logf("refused: %s", k); return true })
	if counts[pushAccepted] < 20 {
		t.Errorf("only %d pushes accepted", counts[pushAccepted])
	}

	// Each record is at exactly one pod, with its pending push.
	var total int64
	for _, p := range mp.procs {
		st, err := p.API.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		total += st.Records
	}
	if want := int64(idle + 2*nPhones); total != want {
		t.Errorf("the pods hold %d records together, want %d", total, want)
	}
	for i := 0; i < idle; i += 97 {
		for _, p := range mp.procs {
			c, err := clientSettled(ctx, p.API, uuids[i])
			if err != nil || len(c.Pending) != 1 || c.Pending[0].Kind != "general" {
				t.Fatalf("idle record %s through pod %s: %+v, %v", uuids[i], p.HTTP, c, err)
			}
		}
	}
}

// TestSlotMoveSurvivesKills SIGKILLs the source or the target of a move
// at each of its steps while pushes keep coming: the move then ends,
// started again as the operator would, with every slot at exactly one
// pod, every accepted push pending at its home and no refused one.
func TestSlotMoveSurvivesKills(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills node processes")
	}
	cases := []struct {
		name   string
		pause  string // where the source waits, for the kill to land there
		victim int
		phase  string // the move's phase at the source when the kill lands
	}{
		{"source-before-streaming", "stream:3s", 0, api.MoveStreaming},
		{"source-in-handoff", "commit:3s", 0, api.MoveHandoff},
		{"source-after-flip", "cleanup:3s", 0, api.MoveCommitted},
		{"target-after-streaming", "handoff:3s", 1, api.MoveStreaming},
		{"target-before-commit", "commit:3s", 1, api.MoveHandoff},
		{"target-after-commit", "cleanup:3s", 1, api.MoveCommitted},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { moveWithKill(t, tc.pause, tc.victim, tc.phase) })
	}
}

func moveWithKill(t *testing.T, pause string, victim int, phase string) {
	mp := startMovePods(t, pause)
	ctx := context.Background()
	type pushed struct {
		u  wire.UUID
		o  pushOutcome
		id uint64
	}
	var mu sync.Mutex
	var all []pushed
	pushing := make(chan struct{})
	var pwg sync.WaitGroup
	// One push per uuid, so that what a uuid holds tells what happened
	// to its push.
	for w := range 3 {
		pwg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-pushing:
					return
				default:
				}
				u := wire.UUID(md5.Sum([]byte(fmt.Sprintf("kill-%d-%d", w, i))))
				o, id := pushOnce(mp.proc(rand.IntN(2)), u, "x")
				mu.Lock()
				all = append(all, pushed{u, o, id})
				mu.Unlock()
				if o != pushAccepted {
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	m2 := mp.moveMap(0, 511)
	if _, err := mp.startMove("e2", m2); err != nil {
		t.Fatal(err)
	}
	mp.waitPaused(0)
	if got, err := mp.procs[0].API.GetMove(ctx, "e2"); err != nil || got.Phase != phase {
		t.Fatalf("the kill would land in phase %q (%v), not %q", got.Phase, err, phase)
	}
	_ = mp.procs[victim].Signal(t, syscall.SIGKILL, 10*time.Second)
	time.Sleep(300 * time.Millisecond)
	mp.start(victim, "")
	// As the operator does: start the move again until it is done (a
	// move that committed before the kill finishes by itself).
	mp.runMove("e2", m2, 60*time.Second)
	mp.install(m2)
	time.Sleep(300 * time.Millisecond)
	close(pushing)
	pwg.Wait()

	var total int64
	for _, p := range mp.procs {
		st, err := p.API.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		total += st.Records
	}
	counts := map[pushOutcome]int{}
	held := int64(0)
	for _, p := range all {
		counts[p.o]++
		c, err := clientSettled(ctx, mp.procs[1].API, p.u.String())
		var se *api.StatusError
		found := err == nil
		if err != nil && !(errors.As(err, &se) && se.Code == http.StatusNotFound) {
			t.Fatalf("look up %s: %v", p.u, err)
		}
		if found {
			held++
		}
		switch p.o {
		case pushAccepted:
			if !found || len(c.Pending) != 1 || c.Pending[0].PushID != p.id {
				t.Errorf("accepted push %d to %s (slot %d) is not pending at its home: %+v", p.id, p.u, slotmap.Slot(p.u), c)
			}
		case pushRefused:
			if found {
				t.Errorf("refused push to %s (slot %d) is pending: %+v", p.u, slotmap.Slot(p.u), c)
			}
		}
	}
	if total != held {
		t.Errorf("the pods hold %d records together, and %d uuids have one: a record is at two pods", total, held)
	}
	t.Logf("pushes: %d accepted, %d refused, %d unknown", counts[pushAccepted], counts[pushRefused], counts[pushUnknown])
	if counts[pushAccepted] == 0 {
		t.Error("no push was accepted")
	}
}

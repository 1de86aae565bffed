package node_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/nodetest"
	"github.com/ddpush/ddpush-operator/node/pusher"
	"github.com/ddpush/ddpush-operator/node/wire"
)

func durabilityUUID(worker, i int) wire.UUID {
	return uuidOf(fmt.Sprintf("dur-%03d-%09d", worker, i))
}

// TestSIGKILLLosesNoAcceptedPush pushes from many connections into a node
// process, kills it with SIGKILL mid-stream, restarts it on the same data
// and finds every push that was answered 0.
func TestSIGKILLLosesNoAcceptedPush(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	proc := nodetest.StartProcess(t, data)

	const workers = 16
	accepted := make([][]int, workers)
	var total atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := pusher.Dial(proc.Push, 5*time.Second)
			if err != nil {
				t.Errorf("worker %d: %v", w, err)
				return
			}
			defer p.Close()
			for i := 0; ; i++ {
				u := durabilityUUID(w, i)
				if err := p.Custom(u, u[:]); err != nil {
					return // the node is gone
				}
				accepted[w] = append(accepted[w], i)
				total.Add(1)
			}
		}()
	}
	// Kill once a good number of pushes are in, while they keep coming.
	nodetest.Eventually(t, 30*time.Second, func() error {
		if n := total.Load(); n < 3000 {
			return fmt.Errorf("%d pushes accepted", n)
		}
		return nil
	})
	if err := proc.Signal(t, syscall.SIGKILL, 10*time.Second); err == nil {
		t.Fatal("SIGKILL: process exited cleanly?")
	}
	wg.Wait()
	t.Logf("%d pushes answered 0 before SIGKILL", total.Load())

	restarted := nodetest.StartProcess(t, data)
	ctx := context.Background()
	missing := atomic.Int64{}
	var cw sync.WaitGroup
	for w := range workers {
		cw.Add(1)
		go func() {
			defer cw.Done()
			for _, i := range accepted[w] {
				u := durabilityUUID(w, i)
				info, err := restarted.API.Client(ctx, u.String())
				if err != nil || len(info.Pending) != 1 || string(info.Pending[0].Data) != string(u[:]) {
					if missing.Add(1) <= 5 {
						t.Errorf("accepted push to %s lost: %+v, %v", u, info, err)
					}
				}
			}
		}()
	}
	cw.Wait()
	if m := missing.Load(); m > 0 {
		t.Fatalf("%d of %d accepted pushes lost across SIGKILL", m, total.Load())
	}
}

// TestSIGTERMFlushesAndExits checks a graceful stop: quick, exit code 0,
// and soft state (the heartbeat's address) kept.
func TestSIGTERMFlushesAndExits(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	proc := nodetest.StartProcess(t, data, "--flush-interval", "1h", "--heartbeat-policy", "always")
	u := uuidOf("sigterm-uuid-001")
	c, err := net.Dial("udp", proc.Client)
	must(t, err)
	defer c.Close()
	_, err = c.Write(heartbeat(1, u))
	must(t, err)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [16]byte
	_, err = c.Read(b[:]) // answered: the heartbeat was applied
	must(t, err)

	start := time.Now()
	if err := proc.Signal(t, syscall.SIGTERM, 5*time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, proc.Logs())
	}
	t.Logf("stopped in %v", time.Since(start))

	restarted := nodetest.StartProcess(t, data)
	info, err := restarted.API.Client(context.Background(), u.String())
	if err != nil {
		var se *api.StatusError
		if errors.As(err, &se) {
			t.Fatalf("heartbeat record lost on SIGTERM (flush interval was 1h): %v", err)
		}
		t.Fatal(err)
	}
	if info.Address != c.LocalAddr().String() {
		t.Fatalf("address %q, want %q", info.Address, c.LocalAddr())
	}
}

// TestSIGTERMUnderContinuousPushes stops a node process while sixteen app
// server connections keep pushing (and reconnecting). The node must exit
// promptly and cleanly, not when the clients give up, and every push it
// answered 0 must be there after a restart.
func TestSIGTERMUnderContinuousPushes(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	proc := nodetest.StartProcess(t, data)

	const workers = 16
	accepted := make([][]int, workers)
	var total atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			i := 0
			for {
				select {
				case <-stop:
					return
				default:
				}
				p, err := pusher.Dial(proc.Push, 2*time.Second)
				if err != nil {
					time.Sleep(10 * time.Millisecond) // the node is gone: keep trying, as app servers do
					continue
				}
				for ; ; i++ {
					u := durabilityUUID(100+w, i)
					if err := p.Custom(u, u[:]); err != nil {
						if errors.Is(err, pusher.ErrRejected) {
							t.Errorf("worker %d: push %d rejected", w, i)
						}
						i++ // unanswered: it may or may not be in
						break
					}
					accepted[w] = append(accepted[w], i)
					total.Add(1)
				}
				p.Close()
			}
		})
	}
	nodetest.Eventually(t, 30*time.Second, func() error {
		if n := total.Load(); n < 3000 {
			return fmt.Errorf("%d pushes accepted", n)
		}
		return nil
	})
	start := time.Now()
	err := proc.Signal(t, syscall.SIGTERM, 15*time.Second)
	took := time.Since(start)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, proc.Logs())
	}
	t.Logf("stopped in %v with %d pushes answered 0", took, total.Load())
	if took > 5*time.Second {
		t.Errorf("stop took %v while clients kept pushing; want under 5 s", took)
	}
	if strings.Contains(proc.Logs(), "by force") {
		t.Errorf("connections closed by force:\n%s", proc.Logs())
	}

	restarted := nodetest.StartProcess(t, data)
	ctx := context.Background()
	var missing atomic.Int64
	var cw sync.WaitGroup
	for w := range workers {
		cw.Go(func() {
			for _, i := range accepted[w] {
				u := durabilityUUID(100+w, i)
				info, err := restarted.API.Client(ctx, u.String())
				if err != nil || len(info.Pending) != 1 || string(info.Pending[0].Data) != string(u[:]) {
					if missing.Add(1) <= 5 {
						t.Errorf("accepted push to %s lost: %+v, %v", u, info, err)
					}
				}
			}
		})
	}
	cw.Wait()
	if m := missing.Load(); m > 0 {
		t.Fatalf("%d of %d accepted pushes lost across SIGTERM", m, total.Load())
	}
}

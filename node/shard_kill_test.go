package node_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/nodetest"
	"github.com/ddpush/ddpush-operator/node/phone"
	"github.com/ddpush/ddpush-operator/node/pusher"
	"github.com/ddpush/ddpush-operator/node/slotmap"
	"github.com/ddpush/ddpush-operator/node/wire"
)

func putMapTo(t *testing.T, p *nodetest.Process, m slotmap.Map) {
	t.Helper()
	body, _ := m.MarshalJSON()
	req, _ := http.NewRequest(http.MethodPut, "http://"+p.HTTP+api.PathSlotMap, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+nodetest.Token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("PUT slot map: %d", res.StatusCode)
	}
}

// TestShardHomeKilledUnderLoad SIGKILLs the home of a set of uuids while
// pushes for them enter at another pod and their phones hang on a third:
// every push answered "accepted" reaches its phone once the home is back,
// every push answered "not accepted" never does, and pushes while the
// home is down are refused, over HTTP and over 9999.
func TestShardHomeKilledUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills node processes")
	}
	base := t.TempDir()
	var procs [3]*nodetest.Process
	dirs := [3]string{}
	peers := map[int]string{}
	for i := range procs {
		dirs[i] = filepath.Join(base, strconv.Itoa(i), "data")
		if err := os.MkdirAll(filepath.Dir(dirs[i]), 0o755); err != nil {
			t.Fatal(err)
		}
		procs[i] = nodetest.StartProcess(t, dirs[i], "--peer-addr", "127.0.0.1:0", "--ordinal", strconv.Itoa(i))
		peers[i] = procs[i].Peer
	}
	m1, err := slotmap.EvenSplit(3, 1, peers)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		putMapTo(t, p, m1)
	}
	ctx := context.Background()
	const n = 90
	uuids := make([]wire.UUID, n)
	phones := make([]*phone.Phone, n)
	for i := range uuids {
		uuids[i] = uuidHomedOn(t, m1, 2, "kill"+strconv.Itoa(i))
		ph, err := phone.Dial("udp", procs[0].Client, uuids[i])
		if err != nil {
			t.Fatal(err)
		}
		defer ph.Close()
		phones[i] = ph
	}
	nodetest.Eventually(t, 10*time.Second, func() error {
		for i, ph := range phones {
			if err := ph.Heartbeat(); err != nil {
				return err
			}
			c, err := procs[0].API.Client(ctx, uuids[i].String())
			if err != nil || !c.Online {
				return fmt.Errorf("phone %d not online at its home: %v", i, err)
			}
		}
		return nil
	})

	// Every phone reports what it receives.
	var mu sync.Mutex
	got := make([]int, n)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i, ph := range phones {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case msg := <-ph.Messages():
					if msg.Cmd == wire.CmdGeneral {
						mu.Lock()
						got[i]++
						mu.Unlock()
					}
				case <-stop:
					return
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()

	const (
		accepted = iota + 1
		refused
		unknown
	)
	answer := make([]int, n)
	push := func(i int) {
		_, err := procs[1].API.Push(ctx, api.PushRequest{UUID: uuids[i].String(), Kind: "general"})
		var se *api.StatusError
		switch {
		case err == nil:
			answer[i] = accepted
		case errors.As(err, &se) && se.Code == http.StatusServiceUnavailable:
			answer[i] = refused
		case errors.As(err, &se) && se.Code == http.StatusGatewayTimeout:
			answer[i] = unknown
		default:
			t.Fatalf("push %d: %v", i, err)
		}
	}
	// A third of the pushes before the kill, one in flight at the kill,
	// a third while the home is down, the rest after it is back.
	for i := range n / 3 {
		push(i)
	}
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		_ = procs[2].Signal(t, syscall.SIGKILL, 10*time.Second)
	}()
	i := n / 3
	for ; i < 2*n/3; i++ {
		push(i)
	}
	<-killed
	ps, err := pusher.Dial(procs[1].Push, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := ps.General(uuids[0]); !errors.Is(err, pusher.ErrRejected) {
		t.Fatalf("9999 push to a killed home: %v", err)
	}
	ps.Close()

	procs[2] = nodetest.StartProcess(t, dirs[2], "--peer-addr", "127.0.0.1:0", "--ordinal", "2")
	peers[2] = procs[2].Peer
	m2, err := slotmap.New(2, m1.Spec().Ranges, peers)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		putMapTo(t, p, m2)
	}
	nodetest.Eventually(t, 10*time.Second, func() error {
		st, err := procs[1].API.Status(ctx)
		if err != nil {
			return err
		}
		for _, p := range st.Peers {
			if !p.Up {
				return fmt.Errorf("link to pod %d down: %s", p.Ordinal, p.LastError)
			}
		}
		return nil
	})
	for ; i < n; i++ {
		push(i)
		if answer[i] != accepted {
			t.Fatalf("push %d after the home came back: answer %d", i, answer[i])
		}
	}
	// Phones heartbeat until everything accepted has reached them.
	nodetest.Eventually(t, 20*time.Second, func() error {
		for _, ph := range phones {
			_ = ph.Heartbeat()
		}
		time.Sleep(50 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		for i := range n {
			if answer[i] == accepted && got[i] == 0 {
				return fmt.Errorf("accepted push %d not delivered", i)
			}
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	counts := map[int]int{}
	for i := range n {
		counts[answer[i]]++
		if answer[i] == refused && got[i] != 0 {
			t.Errorf("push %d was refused (503) but reached its phone", i)
		}
	}
	t.Logf("answers: %d accepted, %d refused, %d unknown", counts[accepted], counts[refused], counts[unknown])
	if counts[refused] == 0 {
		t.Errorf("no push was refused while the home was down")
	}
}

// TestShardFrontKilledDetachesItsTCPPhones: a front that dies holding TCP
// phones homed elsewhere sends no Detach; when it starts again, its old
// connections are forgotten at the home, which then reports those phones
// offline, as a single node does when a connection closes.
func TestShardFrontKilledDetachesItsTCPPhones(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills node processes")
	}
	t.Run("restarted", func(t *testing.T) { frontKilled(t, false) })
	t.Run("gone", func(t *testing.T) { frontKilled(t, true) })
}

// frontKilled kills a front holding a TCP phone and either starts it
// again or leaves it away.
func frontKilled(t *testing.T, lost bool) {
	base := t.TempDir()
	var procs [2]*nodetest.Process
	var dirs [2]string
	peers := map[int]string{}
	for i := range procs {
		dirs[i] = filepath.Join(base, strconv.Itoa(i), "data")
		if err := os.MkdirAll(filepath.Dir(dirs[i]), 0o755); err != nil {
			t.Fatal(err)
		}
		procs[i] = nodetest.StartProcess(t, dirs[i], "--peer-addr", "127.0.0.1:0", "--ordinal", strconv.Itoa(i), "--peer-lost-grace", "2s")
		peers[i] = procs[i].Peer
	}
	m1, _ := slotmap.EvenSplit(2, 1, peers)
	for _, p := range procs {
		putMapTo(t, p, m1)
	}
	ctx := context.Background()
	u := uuidHomedOn(t, m1, 1, "front-killed")
	ph, err := phone.Dial("tcp", procs[0].Client, u)
	if err != nil {
		t.Fatal(err)
	}
	defer ph.Close()
	online := func(want bool) func() error {
		return func() error {
			c, err := procs[1].API.Client(ctx, u.String())
			if err != nil {
				return err
			}
			if c.Online != want {
				return fmt.Errorf("online %v, want %v (transport %q)", c.Online, want, c.Transport)
			}
			return nil
		}
	}
	nodetest.Eventually(t, 10*time.Second, func() error {
		if err := ph.Heartbeat(); err != nil {
			return err
		}
		return online(true)()
	})
	_ = procs[0].Signal(t, syscall.SIGKILL, 10*time.Second)
	// The home cannot tell a dead front from a slow one yet.
	if err := online(true)(); err != nil {
		t.Fatal(err)
	}
	if lost {
		// It stays away past the grace (2 s here): its phones go offline.
		nodetest.Eventually(t, 10*time.Second, online(false))
		return
	}
	procs[0] = nodetest.StartProcess(t, dirs[0], "--peer-addr", "127.0.0.1:0", "--ordinal", "0")
	peers[0] = procs[0].Peer
	m2, _ := slotmap.New(2, m1.Spec().Ranges, peers)
	for _, p := range procs {
		putMapTo(t, p, m2)
	}
	nodetest.Eventually(t, 10*time.Second, online(false))
}

// TestShardHomeFrozenPushesNotCommittedLate: a home frozen (SIGSTOP)
// longer than a front waits does not commit, once it runs again, the
// pushes the front already answered as not accepted.
func TestShardHomeFrozenPushesNotCommittedLate(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and stops node processes")
	}
	base := t.TempDir()
	var procs [2]*nodetest.Process
	peers := map[int]string{}
	for i := range procs {
		dir := filepath.Join(base, strconv.Itoa(i), "data")
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			t.Fatal(err)
		}
		procs[i] = nodetest.StartProcess(t, dir, "--peer-addr", "127.0.0.1:0", "--ordinal", strconv.Itoa(i))
		peers[i] = procs[i].Peer
	}
	m, _ := slotmap.EvenSplit(2, 1, peers)
	for _, p := range procs {
		putMapTo(t, p, m)
	}
	ctx := context.Background()
	u := uuidHomedOn(t, m, 1, "frozen")
	ph, err := phone.Dial("udp", procs[0].Client, u)
	if err != nil {
		t.Fatal(err)
	}
	defer ph.Close()
	nodetest.Eventually(t, 10*time.Second, func() error {
		if err := ph.Heartbeat(); err != nil {
			return err
		}
		c, err := procs[0].API.Client(ctx, u.String())
		if err != nil || !c.Online {
			return fmt.Errorf("not online: %v", err)
		}
		return nil
	})
	if err := procs[1].Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	cont := func() { _ = procs[1].Cmd.Process.Signal(syscall.SIGCONT) }
	defer cont()
	// A busy machine may run the home a moment longer: pushes it read
	// before it stopped may rightly be committed (and answered unknown).
	nodetest.Eventually(t, 10*time.Second, func() error { return stopped(procs[1].Cmd.Process.Pid) })
	var wg sync.WaitGroup
	var portErr, httpErr error
	wg.Go(func() {
		ps, err := pusher.Dial(procs[0].Push, 10*time.Second)
		if err != nil {
			portErr = err
			return
		}
		defer ps.Close()
		portErr = ps.Custom(u, []byte("via-9999"))
	})
	wg.Go(func() {
		_, httpErr = procs[0].API.Push(ctx, api.PushRequest{UUID: u.String(), Kind: "general"})
	})
	wg.Wait()
	if !errors.Is(portErr, pusher.ErrRejected) {
		t.Fatalf("9999 push to a frozen home: %v", portErr)
	}
	var se *api.StatusError
	if !errors.As(httpErr, &se) || (se.Code != http.StatusServiceUnavailable && se.Code != http.StatusGatewayTimeout) {
		t.Fatalf("HTTP push to a frozen home: %v", httpErr)
	}
	time.Sleep(500 * time.Millisecond) // past the front's wait and margin
	cont()
	// The home runs again: nothing of the refused pushes may reach the
	// phone, now or on its next heartbeats.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		_ = ph.Heartbeat()
		msg, err := ph.Next(300 * time.Millisecond)
		if err == nil && msg.Cmd != wire.CmdHeartbeat {
			t.Fatalf("a push answered as not accepted reached the phone: 0x%02x %q", msg.Cmd, msg.Body)
		}
	}
	c, err := procs[1].API.Client(ctx, u.String())
	if err != nil || len(c.Pending) != 0 {
		t.Fatalf("the home holds %+v (%v)", c.Pending, err)
	}
}

// stopped reports (as an error when not) whether process pid is stopped.
func stopped(pid int) error {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return err
	}
	// pid (comm) state ...: comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return fmt.Errorf("stat %q", b)
	}
	if b[i+2] != 'T' {
		return fmt.Errorf("state %c, not stopped", b[i+2])
	}
	return nil
}

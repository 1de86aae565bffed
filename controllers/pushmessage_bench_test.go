package controllers_test

// PushMessages at volume, measured against the same apiserver's own limit:
//
//	make bench-operator
//
// runs BenchmarkPushMessages on envtest's real kube-apiserver and etcd with
// a real node process and phones online. Each round creates the same number
// of PushMessages and times them from create to Delivered:
//
//   - ceiling: a do-nothing controller that marks each PushMessage Delivered
//     with one status write as soon as it sees it; nothing can go faster on
//     this apiserver with this client;
//   - operator: the real controllers, pushing through the node to phones
//     that acknowledge;
//   - operator-half: the operator again, creating at half the rate it
//     reached, for the latency a sender sees below saturation.
//
// The ceiling and operator rounds run in pairs, alternately
// (PMBENCH_PAIRS), and the goals are read from the pair with the median
// share, since this machine's other work shifts both rounds of a pair.
//
// Writes per message are the watch's MODIFIED events for it (every write
// the apiserver accepted for the object after its create) plus the Events
// that name it; every request the apiserver served in a round (reads
// included) is logged per message. CPU is this process's (controllers,
// creators, watcher and phones: the same creators and watcher in every
// round). PMBENCH_DUMP=1 also logs one finished PushMessage as stored and
// each round's start and end (Unix seconds), to line up with a CPU
// sampler of the other processes (apiserver, etcd, node).
// PMBENCH_CEILING_CONDITIONS=N (0-4) makes the ceiling write a delivered
// message's whole status with N conditions (see ceilingConditions).
// PMBENCH_APISERVER_PROFILE=S takes a CPU profile of the apiserver over
// each round's first S seconds, into PMBENCH_PROFILE_DIR.

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/controllers"
)

// benchCount is how many PushMessages each round creates (PMBENCH_COUNT,
// default 800: long enough that the first second, while connections and
// caches start, weighs little).
func benchCount(b *testing.B) int { return envCount(b, "PMBENCH_COUNT", 800) }

// envCount is the positive count in the environment variable name, or def
// when it is unset.
func envCount(b *testing.B, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 1 {
		b.Fatalf("%s=%q: want a positive count", name, s)
	}
	return v
}

// benchCreators is how many goroutines create PushMessages at once.
const benchCreators = 8

type roundResult struct {
	rate          float64 // Delivered per second, first create to last Delivered
	p50, p99, max time.Duration
	writes        float64 // apiserver writes per message besides its create
	events        float64 // Events per message
	cpu           time.Duration
	undelivered   int
	objectBytes   int     // one Delivered PushMessage as stored
	heapPerMsg    float64 // this process's live heap growth per message kept
}

// benchPairs is how many ceiling and operator rounds run, alternately
// (PMBENCH_PAIRS, default 3). Whatever else the machine is doing shifts
// both rounds of a pair alike; the goals are read from the pair with the
// median share.
func benchPairs(b *testing.B) int { return envCount(b, "PMBENCH_PAIRS", 3) }

func BenchmarkPushMessages(b *testing.B) {
	n := benchCount(b)
	type pair struct{ ceiling, operator roundResult }
	var pairs []pair
	for i := range benchPairs(b) {
		var p pair
		b.Run(fmt.Sprintf("ceiling-%d", i+1), func(b *testing.B) {
			startCeiling(b)
			round := func(n int) roundResult {
				ns := namespace(b)
				return runRound(b, ns, n, 0, func(i int) *ddpushv1.PushMessage {
					return &ddpushv1.PushMessage{
						ObjectMeta: objectMeta(ns, i),
						Spec:       ddpushv1.PushMessageSpec{PushNodeName: "none", UserID: strconv.Itoa(100000 + i), Kind: ddpushv1.KindCustom, Data: "x"},
					}
				})
			}
			// A first, unmeasured round warms the apiserver, etcd and
			// the client up, as the ceiling's round would otherwise pay
			// for what the operator's rounds after it get for free.
			if i == 0 {
				round(min(n, 100))
			}
			p.ceiling = round(n)
			report(b, p.ceiling, nil)
		})
		b.Run(fmt.Sprintf("operator-%d", i+1), func(b *testing.B) {
			p.operator = runOperatorRound(b, n, 0)
			report(b, p.operator, &p.ceiling)
		})
		pairs = append(pairs, p)
	}
	share := func(p pair) float64 {
		if p.ceiling.rate <= 0 {
			return 0
		}
		return 100 * p.operator.rate / p.ceiling.rate
	}
	slices.SortFunc(pairs, func(a, b pair) int { return cmp.Compare(share(a), share(b)) })
	var shares []string
	for _, p := range pairs {
		shares = append(shares, fmt.Sprintf("%.1f%% (%.1f/%.1f)", share(p), p.operator.rate, p.ceiling.rate))
	}
	median := pairs[len(pairs)/2]
	b.Run("operator-half", func(b *testing.B) {
		half := median.operator.rate / 2
		if half <= 0 {
			b.Skip("the operator round delivered nothing, so there is no rate to halve")
		}
		r := runOperatorRound(b, n, half)
		report(b, r, &median.ceiling)
		b.ReportMetric(half, "paced-msgs/s")
		fmt.Printf("\nshare of the ceiling in each pair, lowest first (operator/ceiling msgs/s): %s\n", strings.Join(shares, ", "))
		printGoals(median.ceiling, median.operator, r)
	})
}

// printGoals prints the measures against their goals, as BENCHMARKS.md
// shows them.
func printGoals(ceiling, operator, half roundResult) {
	share := 0.0
	if ceiling.rate > 0 {
		share = 100 * operator.rate / ceiling.rate
	}
	met := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT MET"
	}
	fmt.Printf("\n| measure | this run | goal | |\n|---|---|---|---|\n")
	fmt.Printf("| PushMessages/s create -> Delivered | %.1f/s, %.1f%% of the do-nothing controller's %.1f/s | >= 70%% | %s |\n",
		operator.rate, share, ceiling.rate, met(share >= 70))
	fmt.Printf("| create -> Delivered p99 at half that rate | %v | <= 1s | %s |\n", half.p99, met(half.p99 <= time.Second))
	fmt.Printf("| apiserver writes per delivered message, besides its create | %.2f (at half rate %.2f) | <= 2 | %s |\n",
		operator.writes, half.writes, met(operator.writes <= 2 && half.writes <= 2))
	fmt.Printf("| Events per delivered message | %.2f | failures only | %s |\n", operator.events, met(operator.events == 0))
	fmt.Printf("| a node that does not answer | TestSilentNodeDelaysOnlyItsOwnMessages | delays only its own | (a test) |\n\n")
}

// runOperatorRound runs the real controllers against a real node with one
// phone online per message (distinct users, so no push supersedes another).
func runOperatorRound(b *testing.B, n int, rate float64) roundResult {
	loc := &testLocator{}
	startManager(b, loc)
	f := startNode(b, loc)
	phones := make([]string, n)
	for i := range phones {
		phones[i] = strconv.Itoa(200000 + i)
		p := f.phone(b, phones[i]) // acknowledges what it receives
		go func() {
			for range p.Messages() {
			}
		}()
	}
	return runRound(b, f.ns, n, rate, func(i int) *ddpushv1.PushMessage {
		pm := f.message(fmt.Sprintf("m%05d", i), phones[i], ddpushv1.KindCustom)
		pm.Spec.Data = "bench"
		return pm
	})
}

func objectMeta(ns string, i int) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("m%05d", i)}
}

// runRound creates n PushMessages (at rate per second, or as fast as
// benchCreators goroutines can when rate is 0) and waits until every one
// is Delivered or a deadline passes.
func runRound(b *testing.B, ns string, n int, rate float64, build func(i int) *ddpushv1.PushMessage) roundResult {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	wc, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	must(b, err)
	w, err := wc.Watch(ctx, &ddpushv1.PushMessageList{}, client.InNamespace(ns))
	must(b, err)
	defer w.Stop()

	var mu sync.Mutex
	created := make(map[string]time.Time, n)
	delivered := make(map[string]time.Time, n)
	modified := 0
	allDone := make(chan struct{})
	go func() {
		for ev := range w.ResultChan() {
			pm, ok := ev.Object.(*ddpushv1.PushMessage)
			if !ok {
				continue
			}
			now := time.Now()
			mu.Lock()
			if ev.Type == watch.Modified {
				modified++
			}
			if _, seen := delivered[pm.Name]; !seen && pm.Status.Phase == ddpushv1.PhaseDelivered {
				delivered[pm.Name] = now
				if len(delivered) == n {
					close(allDone)
				}
			}
			mu.Unlock()
		}
	}()

	heap0 := heapInUse()
	req0 := apiserverRequests(b)
	profiled := profileAPIServer(ctx, b)
	cpu0 := processCPU()
	b.ResetTimer()
	start := time.Now()
	next := make(chan int)
	var wg sync.WaitGroup
	for range benchCreators {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				pm := build(i)
				t := time.Now()
				if err := k8s.Create(ctx, pm); err != nil {
					b.Errorf("create %s: %v", pm.Name, err)
					continue
				}
				mu.Lock()
				created[pm.Name] = t
				mu.Unlock()
			}
		}()
	}
	for i := range n {
		if rate > 0 {
			if d := time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second)))); d > 0 {
				time.Sleep(d)
			}
		}
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case <-allDone:
	case <-time.After(5 * time.Minute):
	}
	b.StopTimer()
	if os.Getenv("PMBENCH_DUMP") != "" {
		b.Logf("window %.2f %.2f", float64(start.UnixNano())/1e9, float64(time.Now().UnixNano())/1e9)
	}
	cpu := processCPU() - cpu0
	heap := heapInUse() - heap0
	b.Logf("apiserver requests per message: %s", requestsPerMessage(req0, apiserverRequests(b), n))
	<-profiled

	mu.Lock()
	defer mu.Unlock()
	var lat []time.Duration
	last := start
	for name, at := range delivered {
		if c, ok := created[name]; ok {
			lat = append(lat, at.Sub(c))
		}
		if at.After(last) {
			last = at
		}
	}
	slices.Sort(lat)
	r := roundResult{cpu: cpu, undelivered: n - len(delivered), writes: float64(modified) / float64(n),
		heapPerMsg: float64(heap) / float64(n)}
	if len(lat) > 0 {
		r.p50, r.p99, r.max = lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)], lat[len(lat)-1]
		r.rate = float64(len(delivered)) / last.Sub(start).Seconds()
	}
	var evs eventsv1.EventList
	must(b, k8s.List(ctx, &evs, client.InNamespace(ns)))
	count := 0
	for _, e := range evs.Items {
		if e.Regarding.Kind == "PushMessage" {
			count++
		}
	}
	r.events = float64(count) / float64(n)
	// What one finished message costs in etcd: CRDs are stored as JSON,
	// managed fields included.
	var one ddpushv1.PushMessage
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: build(0).Name}, &one); err == nil {
		if raw, err := json.Marshal(&one); err == nil {
			r.objectBytes = len(raw)
			if os.Getenv("PMBENCH_DUMP") != "" {
				b.Logf("%s", raw)
			}
		}
	}
	if r.undelivered > 0 {
		b.Errorf("%d of %d PushMessages not Delivered within the deadline", r.undelivered, n)
	}
	clearRound(ctx, b, ns)
	return r
}

// clearRound deletes a round's PushMessages and Events, and waits until
// they are gone: a later round's controllers would otherwise start by
// listing (and reconciling) every message of the rounds before, and each
// round would start on a larger store than the one before it.
func clearRound(ctx context.Context, b *testing.B, ns string) {
	b.Helper()
	must(b, k8s.DeleteAllOf(ctx, &ddpushv1.PushMessage{}, client.InNamespace(ns)))
	must(b, k8s.DeleteAllOf(ctx, &eventsv1.Event{}, client.InNamespace(ns)))
	deadline := time.Now().Add(time.Minute)
	for {
		var left ddpushv1.PushMessageList
		must(b, k8s.List(ctx, &left, client.InNamespace(ns)))
		if len(left.Items) == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d PushMessages of the round still there a minute after deleting them", len(left.Items))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func report(b *testing.B, r roundResult, ceiling *roundResult) {
	b.ReportMetric(r.rate, "msgs/s")
	b.ReportMetric(float64(r.p50.Milliseconds()), "p50-ms")
	b.ReportMetric(float64(r.p99.Milliseconds()), "p99-ms")
	b.ReportMetric(r.writes, "writes/msg")
	b.ReportMetric(r.events, "events/msg")
	b.ReportMetric(float64(r.objectBytes), "stored-bytes/msg")
	b.ReportMetric(r.heapPerMsg, "heap-bytes/msg")
	b.ReportMetric(float64(r.cpu.Microseconds())/1000/float64(max(1, b.N)), "cpu-ms")
	if ceiling != nil && ceiling.rate > 0 {
		b.ReportMetric(100*r.rate/ceiling.rate, "%-of-ceiling")
	}
}

// heapInUse is the live heap after a collection: what the informer caches
// (and everything else in this process) hold.
func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// startCeiling runs the do-nothing controller: one status write per
// PushMessage, marking it Delivered.
func startCeiling(b *testing.B) {
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0", Controller: ctrlConfig(),
	})
	must(b, err)
	c := mgr.GetClient()
	// As many workers as the operator's PushMessage controller has.
	must(b, ctrl.NewControllerManagedBy(mgr).For(&ddpushv1.PushMessage{}).Named("pushmessage-ceiling").
		WithOptions(controller.Options{MaxConcurrentReconciles: controllers.DefaultPushMessageWorkers}).
		Complete(reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			var pm ddpushv1.PushMessage
			if err := c.Get(ctx, req.NamespacedName, &pm); err != nil {
				return reconcile.Result{}, client.IgnoreNotFound(err)
			}
			if pm.Status.Phase == ddpushv1.PhaseDelivered {
				return reconcile.Result{}, nil
			}
			pm.Status.Phase = ddpushv1.PhaseDelivered
			if n := ceilingConditions(); n >= 0 {
				deliveredStatus(&pm.Status, n)
			}
			return reconcile.Result{}, c.Status().Update(ctx, &pm)
		})))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	b.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
		}
	})
}

// ceilingConditions is PMBENCH_CEILING_CONDITIONS: when set (0 to 4), the
// ceiling writes the whole status of a delivered message with that many
// conditions instead of the phase alone, to measure what the status's
// shape costs the apiserver; -1 when unset.
func ceilingConditions() int {
	n, err := strconv.Atoi(os.Getenv("PMBENCH_CEILING_CONDITIONS"))
	if err != nil || n < 0 {
		return -1
	}
	return min(n, 4)
}

// deliveredStatus fills st as the operator leaves a delivered message,
// with n conditions.
func deliveredStatus(st *ddpushv1.PushMessageStatus, n int) {
	now := metav1.Now()
	st.ObservedGeneration = 1
	st.Reason, st.Message = "Acknowledged", "the client acknowledged the message"
	st.PushID, st.TargetUUID, st.NodePod, st.NodeIncarnation = 2, "03e6c61603f6c550ab49ab6a2d83f793", "node-0", "95c5b5613372210925c9dcd64a2b4365"
	st.SubmittedAt, st.SentAt, st.DeliveredAt, st.CompletionTime = &now, &now, &now, &now
	for _, ty := range []string{"Finished", "Delivered", "Submitted", "NodeAvailable"}[:n] {
		st.Conditions = append(st.Conditions, metav1.Condition{Type: ty, Status: metav1.ConditionTrue, ObservedGeneration: 1,
			LastTransitionTime: now, Reason: "Acknowledged", Message: "the client acknowledged the message"})
	}
}

// apiserverRequests reads the apiserver's request counters, summed by verb
// and resource (watch streams and the metrics read itself excluded), so a
// round can say what each message cost the apiserver, reads included.
func apiserverRequests(b *testing.B) map[string]float64 {
	b.Helper()
	hc, err := rest.HTTPClientFor(cfg)
	must(b, err)
	resp, err := hc.Get(strings.TrimRight(cfg.Host, "/") + "/metrics")
	must(b, err)
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			continue
		}
		labels, value, ok := strings.Cut(line[len("apiserver_request_total{"):], "} ")
		if !ok {
			continue
		}
		l := map[string]string{}
		for _, kv := range strings.Split(labels, ",") {
			k, v, _ := strings.Cut(kv, "=")
			l[k] = strings.Trim(v, `"`)
		}
		if l["verb"] == "WATCH" {
			continue
		}
		res := l["resource"]
		if res == "" {
			res = "(no resource: discovery, health)"
		}
		key := l["verb"] + " " + res
		if l["subresource"] != "" {
			key += "/" + l["subresource"]
		}
		if c := l["code"]; c != "" && !strings.HasPrefix(c, "2") {
			key += " (" + c + ")" // refused: a conflict, say
		}
		v, _ := strconv.ParseFloat(value, 64)
		out[key] += v
	}
	return out
}

// profileAPIServer takes a CPU profile of the apiserver over the first
// PMBENCH_APISERVER_PROFILE seconds of a round (unset: none) into the
// directory PMBENCH_PROFILE_DIR (default: the working directory), one file
// per round, named after the benchmark. The returned channel is closed
// once the profile is written.
func profileAPIServer(ctx context.Context, b *testing.B) <-chan struct{} {
	done := make(chan struct{})
	secs, err := strconv.Atoi(os.Getenv("PMBENCH_APISERVER_PROFILE"))
	if err != nil || secs <= 0 {
		close(done)
		return done
	}
	dir := cmp.Or(os.Getenv("PMBENCH_PROFILE_DIR"), ".")
	path := filepath.Join(dir, "apiserver-"+strings.NewReplacer("/", "-").Replace(b.Name())+".pprof")
	hc, err := rest.HTTPClientFor(cfg)
	must(b, err)
	go func() {
		defer close(done)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", strings.TrimRight(cfg.Host, "/"), secs), nil)
		if err != nil {
			b.Logf("apiserver profile: %v", err)
			return
		}
		resp, err := hc.Do(req)
		if err != nil {
			b.Logf("apiserver profile: %v", err)
			return
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Logf("apiserver profile: %d %v", resp.StatusCode, err)
			return
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			b.Logf("apiserver profile: %v", err)
			return
		}
		b.Logf("apiserver profile of the round's first %ds: %s", secs, path)
	}()
	return done
}

// requestsPerMessage is what a round asked of the apiserver, per message,
// largest first.
func requestsPerMessage(before, after map[string]float64, n int) string {
	type kv struct {
		k string
		v float64
	}
	var l []kv
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			l = append(l, kv{k, d / float64(n)})
		}
	}
	slices.SortFunc(l, func(a, b kv) int { return cmp.Compare(b.v, a.v) })
	var s []string
	for _, e := range l {
		if e.v >= 0.01 {
			s = append(s, fmt.Sprintf("%s %.2f", e.k, e.v))
		}
	}
	return strings.Join(s, ", ")
}

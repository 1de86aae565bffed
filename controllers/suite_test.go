package controllers_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/controllers"
	"github.com/ddpush/ddpush-operator/controllers/builders"
)

// The API server and etcd are real (built from source by
// hack/k8s-binaries.sh); they are shared by the tests of this package.
var (
	cfg    *rest.Config
	k8s    client.Client
	scheme = runtime.NewScheme()
)

func TestMain(m *testing.M) {
	flag.Parse()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(ddpushv1.AddToScheme(scheme))
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is not set: run `make test`, or set it to the output of hack/k8s-binaries.sh")
		os.Exit(1)
	}
	if testing.Verbose() {
		logf.SetLogger(zap.New(zap.UseDevMode(true)))
	} else {
		logf.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapLevelError())))
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	var err error
	cfg, err = env.Start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "start envtest: %v\n", err)
		os.Exit(1)
	}
	k8s, err = client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		fmt.Fprintf(os.Stderr, "client: %v\n", err)
		_ = env.Stop()
		os.Exit(1)
	}
	code := m.Run()
	if err := env.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "stop envtest: %v\n", err)
	}
	os.Exit(code)
}

// testLocator is the seam through which the operator finds a node: here
// each pod is a real node process.
type testLocator struct {
	mu   sync.Mutex
	pods map[types.NamespacedName][]testPod
}

type testPod struct{ url, peer string }

// set points pod 0 of a PushNode at url.
func (l *testLocator) set(pn types.NamespacedName, url string) {
	l.setPod(pn, 0, url, "")
}

// setPod points pod ordinal of a PushNode at url, whose peer link server
// listens on peer.
func (l *testLocator) setPod(pn types.NamespacedName, ordinal int, url, peer string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pods == nil {
		l.pods = map[types.NamespacedName][]testPod{}
	}
	pods := l.pods[pn]
	for len(pods) <= ordinal {
		pods = append(pods, testPod{})
	}
	pods[ordinal] = testPod{url: url, peer: peer}
	l.pods[pn] = pods
}

func (l *testLocator) Pod(_ context.Context, pn *ddpushv1.PushNode, ordinal int) (controllers.Endpoint, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	pods := l.pods[types.NamespacedName{Namespace: pn.Namespace, Name: pn.Name}]
	if ordinal >= len(pods) || pods[ordinal].url == "" {
		return controllers.Endpoint{}, &controllers.ErrNodeNotReachable{Reason: fmt.Sprintf("no node process for pod %d of %s", ordinal, pn.Name)}
	}
	return controllers.Endpoint{URL: pods[ordinal].url, Pod: controllers.PodName(pn, ordinal), Ordinal: ordinal}, nil
}

func (l *testLocator) ForUUID(ctx context.Context, pn *ddpushv1.PushNode, uuid string) (controllers.Endpoint, error) {
	o, err := controllers.HomeOrdinal(pn, uuid)
	if err != nil {
		return controllers.Endpoint{}, err
	}
	return l.Pod(ctx, pn, o)
}

func (l *testLocator) PeerAddr(pn *ddpushv1.PushNode, ordinal int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	pods := l.pods[types.NamespacedName{Namespace: pn.Namespace, Name: pn.Name}]
	if ordinal < len(pods) && pods[ordinal].peer != "" {
		return pods[ordinal].peer
	}
	return builders.PeerAddr(pn, ordinal)
}

// manager runs the operator's controllers against the test API server
// until stop is called.
type manager struct {
	cancel context.CancelFunc
	done   chan error
	// once: a test that stops its manager early stops it again in its
	// cleanup, which must not wait for a second end.
	once sync.Once
}

func startManager(t testing.TB, loc controllers.NodeLocator) *manager {
	t.Helper()
	return startManagerWith(t, cfg, loc, nil)
}

// startManagerWith runs the controllers as the user of restCfg, watching
// only namespaces if any are given.
func startManagerWith(t testing.TB, restCfg *rest.Config, loc controllers.NodeLocator, namespaces []string) *manager {
	t.Helper()
	return startManagerOpts(t, restCfg, loc, namespaces, nil)
}

// startManagerOpts is startManagerWith whose controller options tune
// may change first.
func startManagerOpts(t testing.TB, restCfg *rest.Config, loc controllers.NodeLocator, namespaces []string, tune func(*controllers.Options)) *manager {
	t.Helper()
	mgr, err := ctrl.NewManager(restCfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		// Each manager gets its own controller names' metrics; tests
		// start several in one process.
		Controller: ctrlConfig(),
		Cache:      controllers.CacheOptions(namespaces),
	})
	if err != nil {
		t.Fatal(err)
	}
	opts := controllers.Options{
		Builders: builders.Options{DefaultImage: "example.test/pushnode:test"},
		Locator:  loc,
		// Tests do not wait a minute for a removed conflicting object.
		ConflictRetry: time.Second,
	}
	if tune != nil {
		tune(&opts)
	}
	if err := controllers.Setup(mgr, opts); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &manager{cancel: cancel, done: make(chan error, 1)}
	go func() { m.done <- mgr.Start(ctx) }()
	t.Cleanup(m.stop)
	return m
}

func (m *manager) stop() {
	m.once.Do(func() {
		m.cancel()
		select {
		case <-m.done:
		case <-time.After(30 * time.Second):
		}
	})
}

// eventually retries check until it returns nil or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = check(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not true within %v: %v", what, timeout, err)
}

// namespace creates a namespace for one test.
func namespace(t testing.TB) string {
	t.Helper()
	ns := &corev1.Namespace{}
	ns.GenerateName = "test-"
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// markReady plays the StatefulSet controller, which envtest does not run:
// it reports the node pod ready.
func markReady(t testing.TB, ns, name string) {
	t.Helper()
	markReadyN(t, ns, name, 1)
}

// markReadyN reports n node pods ready.
func markReadyN(t testing.TB, ns, name string, n int32) {
	t.Helper()
	ctx := context.Background()
	eventually(t, 20*time.Second, "StatefulSet ready", func() error {
		var sts appsv1.StatefulSet
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &sts); err != nil {
			return err
		}
		sts.Status.Replicas = n
		sts.Status.ReadyReplicas = n
		sts.Status.AvailableReplicas = n
		sts.Status.UpdatedReplicas = n
		sts.Status.CurrentReplicas = n
		sts.Status.ObservedGeneration = sts.Generation
		sts.Status.CurrentRevision = "rev-1"
		sts.Status.UpdateRevision = "rev-1"
		return k8s.Status().Update(ctx, &sts)
	})
}

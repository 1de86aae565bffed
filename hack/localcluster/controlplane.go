package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// cluster.json: what up chose, for status and for people.
type clusterInfo struct {
	APIServer string    `json:"apiServer"`
	Etcd      string    `json:"etcd"`
	K8sBin    string    `json:"k8sBin"`
	Bin       string    `json:"bin"`
	Started   time.Time `json:"started"`
}

// The controllers this cluster needs: workloads (StatefulSet, Deployment,
// ReplicaSet), the garbage collector (owner references), node lifecycle
// (removes the not-ready taint once the runner reports Ready), volume
// binding and protection, the namespace's default ServiceAccount (pods are
// rejected by admission until it exists), namespace deletion, and the
// kube-root-ca.crt ConfigMap that the admission-added service-account
// volume of every pod that does not opt out names. Not the endpoint slice
// controller: EndpointSlices refuse loopback addresses, which pod IPs
// are here.
var kcmControllers = []string{
	"statefulset-controller", "replicaset-controller", "deployment-controller",
	"garbage-collector-controller", "node-lifecycle-controller",
	"persistentvolume-binder-controller", "persistentvolume-protection-controller",
	"persistentvolumeclaim-protection-controller", "serviceaccount-controller",
	"namespace-controller", "root-ca-certificate-publisher-controller",
}

func componentArgs(l layout, name string, etcdClient, etcdPeer, apiPort int) []string {
	kc := "--kubeconfig=" + l.kubeconfig()
	switch name {
	case "etcd":
		peer := fmt.Sprintf("http://127.0.0.1:%d", etcdPeer)
		client := fmt.Sprintf("http://127.0.0.1:%d", etcdClient)
		return []string{
			"--name=localcluster", "--data-dir=" + l.etcdData(),
			"--listen-client-urls=" + client, "--advertise-client-urls=" + client,
			"--listen-peer-urls=" + peer, "--initial-advertise-peer-urls=" + peer,
			"--initial-cluster=localcluster=" + peer,
			"--unsafe-no-fsync=true", // as envtest: a development cluster
		}
	case "kube-apiserver":
		return []string{
			fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", etcdClient),
			"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(apiPort),
			"--cert-dir=" + l.pki(""),
			"--tls-cert-file=" + l.pki(servingCert), "--tls-private-key-file=" + l.pki(servingKey),
			"--client-ca-file=" + l.pki(caCert),
			"--authorization-mode=RBAC",
			"--service-cluster-ip-range=10.0.0.0/24",
			"--allow-privileged=true",
			"--service-account-issuer=https://127.0.0.1:" + strconv.Itoa(apiPort),
			"--service-account-key-file=" + l.pki(saPublicKey),
			"--service-account-signing-key-file=" + l.pki(saPrivateKey),
			// The "kubernetes" Service's endpoints would be 127.0.0.1,
			// which Endpoints validation refuses: do not maintain them.
			"--endpoint-reconciler-type=none",
		}
	case "kube-controller-manager":
		return []string{kc, "--leader-elect=false", "--secure-port=0",
			"--use-service-account-credentials=false", "--cluster-name=localcluster",
			"--root-ca-file=" + l.pki(caCert),
			"--controllers=" + strings.Join(kcmControllers, ",")}
	case "kube-scheduler":
		return []string{kc, "--leader-elect=false", "--secure-port=0"}
	}
	return nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func say(format string, args ...any) { fmt.Printf("localcluster: "+format+"\n", args...) }

// up starts a fresh cluster in the background and returns once a pod can
// be scheduled and run. On failure or interrupt it stops what it started.
func up(ctx context.Context, l layout, k8sBin, binDir string, timeout time.Duration) (err error) {
	if running := runningComponents(l); len(running) == len(components) {
		say("already up (%s); kubeconfig %s", strings.Join(running, ", "), l.kubeconfig())
		return nil
	} else if len(running) > 0 {
		return fmt.Errorf("partly running (%s): run `localcluster down` first", strings.Join(running, ", "))
	}
	for _, b := range components[:4] {
		if _, err := os.Stat(filepath.Join(k8sBin, b)); err != nil {
			return fmt.Errorf("no %s in %s (run hack/k8s-binaries.sh)", b, k8sBin)
		}
	}
	for _, b := range []string{"pushnode", "manager", "pushctl"} {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			return fmt.Errorf("no %s in %s: run `make build` first", b, binDir)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	// Every up is a new cluster: forget the last one's state.
	for _, p := range []string{"etcd", "pki", "pids", "logs", "pods", "volumes", "kubeconfig", "cluster.json"} {
		if err := os.RemoveAll(l.path(p)); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(l.path("logs"), 0o755); err != nil {
		return err
	}
	var ports [3]int
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return err
		}
	}
	etcdClient, etcdPeer, apiPort := ports[0], ports[1], ports[2]
	server := fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	p, err := writePKI(l)
	if err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	if err := writeKubeconfig(l, p, server); err != nil {
		return err
	}
	info := clusterInfo{APIServer: server, Etcd: fmt.Sprintf("http://127.0.0.1:%d", etcdClient), K8sBin: k8sBin, Bin: binDir, Started: time.Now()}
	if b, err := json.MarshalIndent(info, "", "  "); err == nil {
		_ = os.WriteFile(l.clusterFile(), append(b, '\n'), 0o644)
	}

	defer func() {
		if err != nil {
			say("failed; stopping what was started")
			_ = down(l)
		}
	}()
	exited := make(chan string, len(components))
	start := func(name string) error {
		path := filepath.Join(k8sBin, name)
		args := componentArgs(l, name, etcdClient, etcdPeer, apiPort)
		if name == "runner" {
			path, args = self, []string{"runner", "--dir=" + l.dir, "--bin=" + binDir}
		}
		cmd, err := startDetached(name, path, args, l.log(name), l.pidFile(name))
		if err != nil {
			return err
		}
		go func() { _ = cmd.Wait(); exited <- name }()
		return nil
	}
	w := waiter{ctx: ctx, l: l, exited: exited}
	t0 := time.Now()

	say("starting etcd (log: %s)", l.log("etcd"))
	if err := start("etcd"); err != nil {
		return err
	}
	hc := &http.Client{Timeout: 2 * time.Second}
	if err := w.wait(30*time.Second, "etcd to be healthy", "etcd", func(context.Context) (bool, string) {
		resp, err := hc.Get(info.Etcd + "/health")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), `"health":"true"`), string(b)
	}); err != nil {
		return err
	}

	say("starting kube-apiserver on %s (log: %s)", server, l.log("kube-apiserver"))
	if err := start("kube-apiserver"); err != nil {
		return err
	}
	cs, err := clientFor(l)
	if err != nil {
		return err
	}
	if err := w.wait(60*time.Second, "kube-apiserver to be ready", "kube-apiserver", func(ctx context.Context) (bool, string) {
		b, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			return false, err.Error()
		}
		return string(b) == "ok", string(b)
	}); err != nil {
		return err
	}

	for _, name := range []string{"kube-controller-manager", "kube-scheduler", "runner"} {
		say("starting %s (log: %s)", name, l.log(name))
		if err := start(name); err != nil {
			return err
		}
	}
	if err := w.wait(timeout, "node \"local\" to be Ready and schedulable", "runner", func(ctx context.Context) (bool, string) {
		n, err := cs.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, t := range n.Spec.Taints {
			if t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute {
				return false, "tainted " + t.Key + " (kube-controller-manager's node-lifecycle-controller removes it once the node is Ready)"
			}
		}
		return nodeReady(n), "registered, not Ready yet"
	}); err != nil {
		return err
	}
	if err := w.wait(timeout, "the default ServiceAccount (pods are refused without it)", "kube-controller-manager", func(ctx context.Context) (bool, string) {
		_, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, "not created yet by the serviceaccount-controller"
		}
		return err == nil, fmt.Sprint(err)
	}); err != nil {
		return err
	}
	say("up in %.1fs", time.Since(t0).Seconds())
	say("  export KUBECONFIG=%s", l.kubeconfig())
	say("  logs: %s/   pods' logs: %s/", l.path("logs"), l.path("logs", "pods"))
	say("  pods run as local processes with pod IPs 127.77.x.y; there is no kube-proxy: reach pods by pod IP")
	return nil
}

func clientFor(l layout) (*kubernetes.Clientset, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", l.kubeconfig())
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 50, 100
	return kubernetes.NewForConfig(cfg)
}

// waiter bounds every wait and, when a wait fails, says which log to read.
type waiter struct {
	ctx    context.Context
	l      layout
	exited <-chan string
}

func (w waiter) wait(timeout time.Duration, what, component string, cond func(context.Context) (bool, string)) error {
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(w.ctx, timeout)
	defer cancel()
	last := ""
	for {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		ok, detail := cond(cctx)
		ccancel()
		if ok {
			say("  %s: ok (%.1fs)", what, time.Since(t0).Seconds())
			return nil
		}
		last = detail
		select {
		case name := <-w.exited:
			return fmt.Errorf("%s exited while waiting for %s; its log %s ends with:\n%s", name, what, w.l.log(name), tail(w.l.log(name), 15))
		case <-ctx.Done():
			if w.ctx.Err() != nil {
				return errors.New("interrupted")
			}
			return fmt.Errorf("timed out after %s waiting for %s (last: %s); see %s, which ends with:\n%s",
				timeout, what, last, w.l.log(component), tail(w.l.log(component), 15))
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "  (" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

package main

import (
	"context"
	"fmt"
	"log"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
)

// runner plays the kubelet of node "local": it registers the node, keeps
// it Ready, provisions hostPath volumes for claims, and runs every pod
// scheduled to the node as local processes, one podWorker per pod UID.
type runner struct {
	ctx    context.Context // the runner's life; pods stop (not deleted) when it ends
	l      layout
	binDir string
	cs     kubernetes.Interface
	ips    *ipam
	rec    record.EventRecorder

	mu      sync.Mutex
	workers map[types.UID]*podWorker
	done    map[types.UID]bool // pods whose worker finished (deleted); ignore late events
	wg      sync.WaitGroup
}

func runRunner(ctx context.Context, l layout, binDir string) error {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetPrefix("runner: ")
	cs, err := clientFor(l)
	if err != nil {
		return err
	}
	agent := &nodeAgent{cs: cs, dir: l.dir}
	for {
		if err = agent.register(ctx); err == nil {
			break
		}
		log.Printf("registering node %q: %v (retrying)", nodeName, err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Second):
		}
	}
	log.Printf("registered node %q", nodeName)
	go agent.run(ctx)

	eb := record.NewBroadcaster()
	eb.StartLogging(log.Printf)
	eb.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	defer eb.Shutdown()
	r := &runner{
		ctx: ctx, l: l, binDir: binDir, cs: cs, ips: newIPAM(),
		rec:     eb.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "localcluster-runner", Host: nodeName}),
		workers: map[types.UID]*podWorker{}, done: map[types.UID]bool{},
	}

	go runProvisioner(ctx, r)

	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = "spec.nodeName=" + nodeName
	}))
	inf := factory.Core().V1().Pods().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.dispatch(obj.(*corev1.Pod)) },
		UpdateFunc: func(_, obj any) { r.dispatch(obj.(*corev1.Pod)) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok {
				r.gone(p)
			}
		},
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	log.Printf("running pods of node %q from %s", nodeName, binDir)
	<-ctx.Done()
	log.Printf("stopping: terminating every pod process")
	r.wg.Wait()
	factory.Shutdown()
	log.Printf("stopped")
	return nil
}

func (r *runner) dispatch(p *corev1.Pod) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done[p.UID] || r.ctx.Err() != nil {
		return
	}
	w := r.workers[p.UID]
	if w == nil {
		w = newPodWorker(r, p)
		r.workers[p.UID] = w
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			w.run()
			r.mu.Lock()
			delete(r.workers, p.UID)
			r.done[p.UID] = true
			r.mu.Unlock()
		}()
	}
	w.update(p)
}

// gone: the pod object was deleted (by us after termination, or forced).
func (r *runner) gone(p *corev1.Pod) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.done, p.UID)
	if w := r.workers[p.UID]; w != nil {
		w.markGone()
	}
}

func (r *runner) event(p *corev1.Pod, typ, reason, format string, args ...any) {
	r.rec.Event(p, typ, reason, fmt.Sprintf(format, args...))
}

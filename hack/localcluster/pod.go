package main

import (
	"context"
	"errors"
	"log"
	"os"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// podWorker runs one pod (one UID) from its first sight to its deletion:
// it gives the pod an IP, runs its containers as processes, restarts them
// per restartPolicy, probes them, reports status, and on deletion stops
// them within the grace period and removes the pod object.
type podWorker struct {
	r          *runner
	pod        *corev1.Pod // latest seen
	updates    chan *corev1.Pod
	goneCh     chan struct{}
	goneOnce   sync.Once
	exits      chan exitEvent
	ip         string
	dir        string // ConfigMap, Secret, downward API and emptyDir volumes
	containers []*container
	// notRunnable says why this pod cannot run here (it is left Pending).
	notRunnable string
	written     *corev1.PodStatus // last status written
}

func newPodWorker(r *runner, p *corev1.Pod) *podWorker {
	return &podWorker{
		r: r, pod: p, updates: make(chan *corev1.Pod, 1), goneCh: make(chan struct{}),
		exits: make(chan exitEvent, 4*len(p.Spec.Containers)+4),
		dir:   r.l.podDir(p.Namespace, p.Name, string(p.UID)),
	}
}

// update hands the worker the latest pod (only the newest matters).
func (w *podWorker) update(p *corev1.Pod) {
	select {
	case <-w.updates:
	default:
	}
	w.updates <- p
}

func (w *podWorker) markGone() { w.goneOnce.Do(func() { close(w.goneCh) }) }

func (w *podWorker) logf(format string, args ...any) {
	log.Printf("pod %s/%s: "+format, append([]any{w.pod.Namespace, w.pod.Name}, args...)...)
}

func (w *podWorker) run() {
	w.pod = <-w.updates
	p := w.pod
	if p.DeletionTimestamp != nil { // deleted before it ever ran here
		w.deletePod()
		return
	}
	if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		w.waitForDeletion() // finished before the runner (re)started: nothing to run
		return
	}
	for i := range p.Spec.Containers {
		c, err := newContainer(w, i)
		if err != nil && w.notRunnable == "" {
			w.notRunnable = err.Error()
		}
		w.containers = append(w.containers, c)
	}
	if len(p.Spec.InitContainers) > 0 && w.notRunnable == "" {
		w.notRunnable = "init containers are not supported by the local runner"
	}
	if w.notRunnable == "" {
		w.notRunnable = unsupportedVolumes(p)
	}
	if w.notRunnable == "" {
		var err error
		if w.ip, err = w.r.ips.allocate(p.UID, p.Namespace+"/"+p.Name, p.Status.PodIP); err != nil {
			w.notRunnable = err.Error()
		}
		defer w.r.ips.release(p.UID, w.ip)
	}
	if w.notRunnable != "" {
		w.logf("not runnable locally: %s", w.notRunnable)
		w.r.event(p, corev1.EventTypeWarning, "NotRunnableLocally", "%s", w.notRunnable)
		w.syncStatus()
		w.waitForDeletion()
		return
	}
	w.logf("runs at pod IP %s", w.ip)
	w.step() // start the containers now, not at the first tick
	w.syncStatus()

	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case p := <-w.updates:
			w.pod = p
			if p.DeletionTimestamp != nil {
				grace := int64(30)
				if p.DeletionGracePeriodSeconds != nil {
					grace = *p.DeletionGracePeriodSeconds
				}
				w.terminate(time.Duration(grace) * time.Second)
				w.deletePod()
				return
			}
		case <-w.goneCh: // deleted with no grace (--force): stop quickly
			w.terminate(minGrace)
			w.removeDir()
			return
		case <-w.r.ctx.Done(): // the runner stops: stop the processes, keep the pod
			w.terminate(min(w.graceSpec(), 30*time.Second))
			return
		case e := <-w.exits:
			w.exited(e)
		case <-tick.C:
			w.step()
		}
		w.syncStatus()
	}
}

func (w *podWorker) graceSpec() time.Duration {
	if g := w.pod.Spec.TerminationGracePeriodSeconds; g != nil {
		return time.Duration(*g) * time.Second
	}
	return 30 * time.Second
}

// waitForDeletion serves a pod that runs nothing: it deletes the object
// once it is marked for deletion.
func (w *podWorker) waitForDeletion() {
	for {
		select {
		case p := <-w.updates:
			w.pod = p
			if p.DeletionTimestamp != nil {
				w.deletePod()
				return
			}
		case <-w.goneCh:
			return
		case <-w.r.ctx.Done():
			return
		}
	}
}

// step starts containers that are due and runs probes that are due.
func (w *podWorker) step() {
	now := time.Now()
	for _, c := range w.containers {
		if c.proc == nil {
			if c.wantStart && !now.Before(c.nextStart) {
				c.start()
			}
			continue
		}
		c.runProbes(now)
	}
}

// exited records a container's end and decides whether it restarts.
func (w *podWorker) exited(e exitEvent) {
	c := e.c
	if c.proc != e.proc {
		return
	}
	c.finished(e)
	policy := w.pod.Spec.RestartPolicy
	restart := policy == corev1.RestartPolicyAlways || policy == "" ||
		(policy == corev1.RestartPolicyOnFailure && e.code != 0)
	if !restart {
		c.wantStart = false
		return
	}
	c.scheduleRestart()
}

// minGrace is the kubelet's floor for a grace period, even for a forced
// deletion.
const minGrace = 2 * time.Second

// terminate stops every process: SIGTERM to each process group, SIGKILL
// after grace.
func (w *podWorker) terminate(grace time.Duration) {
	grace = max(grace, minGrace)
	running := 0
	for _, c := range w.containers {
		c.wantStart = false
		if c.proc != nil {
			running++
			w.logf("stopping container %s (pid %d), grace %s", c.spec.Name, c.proc.Pid, grace)
			w.r.event(w.pod, corev1.EventTypeNormal, "Killing", "Stopping container %s", c.spec.Name)
			signalGroup(c.proc.Pid, syscall.SIGTERM)
		}
	}
	deadline := time.After(grace)
	killed := false
	for running > 0 {
		select {
		case e := <-w.exits:
			if e.c.proc == e.proc {
				e.c.finished(e)
				running--
			}
		case <-deadline:
			if !killed {
				killed = true
				for _, c := range w.containers {
					if c.proc != nil {
						w.logf("container %s did not stop within %s: SIGKILL", c.spec.Name, grace)
						signalGroup(c.proc.Pid, syscall.SIGKILL)
					}
				}
				deadline = time.After(10 * time.Second)
			} else {
				w.logf("processes survived SIGKILL; giving up on them")
				return
			}
		}
	}
}

// deletePod removes the pod object once its processes are gone, as the
// kubelet does, so that its controller may replace it.
func (w *podWorker) deletePod() {
	w.removeDir()
	w.r.ips.release(w.pod.UID, w.ip) // before its successor may ask for it
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := w.r.cs.CoreV1().Pods(w.pod.Namespace).Delete(ctx, w.pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To[int64](0),
		Preconditions:      &metav1.Preconditions{UID: &w.pod.UID},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		w.logf("deleting the pod object: %v", err)
		return
	}
	w.logf("stopped and deleted")
}

func (w *podWorker) removeDir() {
	if err := os.RemoveAll(w.dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		w.logf("removing %s: %v", w.dir, err)
	}
}

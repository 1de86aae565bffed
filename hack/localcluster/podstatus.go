package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// syncStatus writes the pod's status if it changed since the last write.
func (w *podWorker) syncStatus() {
	st := w.buildStatus(w.pod)
	if w.written != nil && equality.Semantic.DeepEqual(w.written, st) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pods := w.r.cs.CoreV1().Pods(w.pod.Namespace)
	for attempt := 0; attempt < 2; attempt++ {
		p := w.pod.DeepCopy()
		p.Status = *st
		upd, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{})
		if err == nil {
			w.pod, w.written = upd, st
			return
		}
		if !apierrors.IsConflict(err) {
			if !apierrors.IsNotFound(err) && w.r.ctx.Err() == nil {
				w.logf("updating status: %v", err)
			}
			return // the next change or tick tries again
		}
		fresh, err := pods.Get(ctx, w.pod.Name, metav1.GetOptions{})
		if err != nil || fresh.UID != w.pod.UID {
			return
		}
		w.pod = fresh
		st = w.buildStatus(fresh)
	}
}

// buildStatus is the pod's status as the kubelet would report it, keeping
// what others set (PodScheduled, QoS class).
func (w *podWorker) buildStatus(p *corev1.Pod) *corev1.PodStatus {
	st := p.Status.DeepCopy()
	now := metav1.NewTime(time.Now().Truncate(time.Second)) // as stored
	st.HostIP, st.HostIPs = hostIP, []corev1.HostIP{{IP: hostIP}}
	if w.ip != "" {
		st.PodIP, st.PodIPs = w.ip, []corev1.PodIP{{IP: w.ip}}
	}
	if st.StartTime == nil {
		st.StartTime = &now
	}
	st.Phase = w.phase()
	st.Reason, st.Message = "", ""
	st.ContainerStatuses = nil
	var unready []string
	for _, c := range w.containers {
		cs := c.status()
		if w.notRunnable != "" {
			cs.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "NotRunnableLocally", Message: w.notRunnable}}
		}
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
		if !cs.Ready {
			unready = append(unready, c.spec.Name)
		}
	}
	set := func(t corev1.PodConditionType, ok bool, reason, msg string) {
		c := corev1.PodCondition{Type: t, Status: corev1.ConditionFalse, Reason: reason, Message: msg, LastTransitionTime: now}
		if ok {
			c.Status, c.Reason, c.Message = corev1.ConditionTrue, "", ""
		}
		for i, old := range st.Conditions {
			if old.Type == t {
				if old.Status == c.Status {
					c.LastTransitionTime = old.LastTransitionTime
				}
				st.Conditions[i] = c
				return
			}
		}
		st.Conditions = append(st.Conditions, c)
	}
	started := w.ip != "" && w.notRunnable == ""
	set(corev1.PodReadyToStartContainers, started, "", "")
	set(corev1.PodInitialized, true, "", "")
	reason, msg := "ContainersNotReady", fmt.Sprintf("containers with unready status: [%s]", strings.Join(unready, " "))
	if w.notRunnable != "" {
		reason, msg = "NotRunnableLocally", w.notRunnable
	}
	set(corev1.ContainersReady, len(unready) == 0, reason, msg)
	ready := len(unready) == 0
	for _, g := range p.Spec.ReadinessGates {
		if !conditionTrue(st.Conditions, g.ConditionType) {
			ready, reason, msg = false, "ReadinessGatesNotReady", fmt.Sprintf("readiness gate %s is not True", g.ConditionType)
		}
	}
	set(corev1.PodReady, ready, reason, msg)
	return st
}

func conditionTrue(cs []corev1.PodCondition, t corev1.PodConditionType) bool {
	for _, c := range cs {
		if c.Type == t {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// phase: Pending until every container has started once; Running while
// any runs or will restart; Succeeded or Failed once all are done for good.
func (w *podWorker) phase() corev1.PodPhase {
	if w.notRunnable != "" {
		return corev1.PodPending
	}
	done, failed := 0, false
	for _, c := range w.containers {
		if !c.everRan {
			return corev1.PodPending
		}
		if c.proc == nil && !c.wantStart && c.last != nil {
			done++
			failed = failed || c.last.ExitCode != 0
		}
	}
	if done == len(w.containers) && done > 0 {
		if failed {
			return corev1.PodFailed
		}
		return corev1.PodSucceeded
	}
	return corev1.PodRunning
}

func (c *container) status() corev1.ContainerStatus {
	cs := corev1.ContainerStatus{
		Name: c.spec.Name, Image: c.spec.Image, ImageID: "localcluster://" + c.bin,
		RestartCount: c.restarts, Ready: c.proc != nil && c.ready, Started: ptr.To(c.proc != nil && c.startupOK),
	}
	if c.last != nil {
		cs.LastTerminationState.Terminated = c.last
	}
	switch {
	case c.proc != nil:
		cs.ContainerID = c.containerID()
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(c.started)}
	case c.waiting != nil:
		cs.State.Waiting = c.waiting
	case c.last != nil:
		cs.State.Terminated = c.last
		cs.ContainerID = c.last.ContainerID
		cs.LastTerminationState = corev1.ContainerState{}
	default:
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
	}
	return cs
}

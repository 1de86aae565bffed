package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// programs maps a container's command to this repository's binary: the
// image holds them at these paths, bin/ holds them here. Nothing else can
// run locally.
var programs = map[string]string{"/pushnode": "pushnode", "/manager": "manager", "/pushctl": "pushctl"}

const (
	backoffFirst = time.Second
	backoffMax   = 30 * time.Second
	// A container that ran this long starts its next back-off afresh.
	backoffReset = time.Minute
)

// container is one container of a pod, run as a process (and its process
// group) of the mapped binary.
type container struct {
	w        *podWorker
	spec     corev1.Container
	bin      string
	proc     *os.Process // nil when not running
	pidPath  string
	started  time.Time
	everRan  bool
	restarts int32
	// wantStart: start (again) at nextStart; false once the pod stops or
	// the restart policy says the container is done.
	wantStart bool
	nextStart time.Time
	backoff   time.Duration
	last      *corev1.ContainerStateTerminated
	waiting   *corev1.ContainerStateWaiting
	// probe state of the running process
	startupOK, ready             bool
	startup, readiness, liveness *prober
	killDeadline                 time.Time // a liveness kill in progress
	lastWaitingMsg               string
}

type exitEvent struct {
	c      *container
	proc   *os.Process
	code   int
	signal syscall.Signal
	at     time.Time
}

func newContainer(w *podWorker, i int) (*container, error) {
	spec := w.pod.Spec.Containers[i]
	uid := string(w.pod.UID)
	uid = uid[:min(8, len(uid))]
	c := &container{
		w: w, spec: spec, wantStart: true,
		pidPath: filepath.Join(w.r.l.podPidDir(), w.pod.Namespace+"_"+w.pod.Name+"_"+uid+"_"+spec.Name+".pid"),
		waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"},
	}
	if len(spec.Command) == 0 {
		c.wantStart = false
		return c, fmt.Errorf("container %s has no command; the local runner runs only this repository's binaries, named by the command (/pushnode, /manager, /pushctl)", spec.Name)
	}
	name, ok := programs[spec.Command[0]]
	if !ok {
		c.wantStart = false
		return c, fmt.Errorf("container %s runs %q, which is not runnable locally: only /pushnode, /manager and /pushctl (this repository's binaries in bin/) are", spec.Name, spec.Command[0])
	}
	c.bin = filepath.Join(w.r.binDir, name)
	return c, nil
}

func (c *container) containerID() string {
	if c.proc == nil {
		return ""
	}
	return fmt.Sprintf("localcluster://%d", c.proc.Pid)
}

// notReady records why the container cannot start yet and retries soon.
func (c *container) notReady(reason string, err error) {
	c.waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: err.Error()}
	c.nextStart = time.Now().Add(2 * time.Second)
	if msg := err.Error(); msg != c.lastWaitingMsg {
		c.lastWaitingMsg = msg
		c.w.logf("container %s: %s: %v", c.spec.Name, reason, err)
		evReason := "Failed"
		if reason == "ContainerCreating" {
			evReason = "FailedMount"
		}
		c.w.r.event(c.w.pod, corev1.EventTypeWarning, evReason, "%s", msg)
	}
}

// start resolves volumes, environment and arguments now (so a restart sees
// the ConfigMaps and Secrets as they are) and starts the process.
func (c *container) start() {
	w := c.w
	ctx, cancel := context.WithTimeout(w.r.ctx, 10*time.Second)
	defer cancel()
	vols, err := w.prepareVolumes(ctx)
	if err != nil {
		c.notReady("ContainerCreating", err)
		return
	}
	env, err := w.containerEnv(ctx, c.spec)
	if err != nil {
		c.notReady("CreateContainerConfigError", err)
		return
	}
	m, err := newMapper(w.ip, c.spec, vols, env)
	if err != nil {
		c.notReady("CreateContainerConfigError", err)
		return
	}
	environ := m.environ(env)
	environ = append(environ, "PATH="+os.Getenv("PATH"), "HOSTNAME="+w.pod.Name, "HOME="+w.dir)
	if c.spec.Command[0] == "/manager" {
		// No service-account token is mounted here and in-cluster
		// config cannot work: the manager uses the admin kubeconfig.
		environ = append(environ, "KUBECONFIG="+w.r.l.kubeconfig())
	}
	args := m.args(append(append([]string{}, c.spec.Command[1:]...), c.spec.Args...), env)
	workDir := w.dir
	if c.spec.WorkingDir != "" {
		workDir = m.path(c.spec.WorkingDir)
	}
	if err := os.MkdirAll(workDir, 0o755); err != nil {
		c.notReady("CreateContainerConfigError", err)
		return
	}
	logPath := w.r.l.podLog(w.pod.Namespace, w.pod.Name, c.spec.Name)
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		c.notReady("CreateContainerError", err)
		return
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.notReady("CreateContainerError", err)
		return
	}
	defer logf.Close()
	n := c.restarts + 1
	if c.everRan {
		n++
	}
	fmt.Fprintf(logf, "=== %s: start %d of container %s: %s %s\n", time.Now().Format(time.RFC3339), n, c.spec.Name, c.bin, strings.Join(args, " "))
	cmd := exec.Command(c.bin, args...)
	cmd.Env, cmd.Dir = environ, workDir
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so that it and its children are signalled
	// together; killed if the runner dies without stopping it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		c.notReady("RunContainerError", err)
		return
	}
	if c.everRan {
		c.restarts++
	}
	c.everRan = true
	c.proc, c.started = cmd.Process, time.Now()
	c.waiting, c.lastWaitingMsg = nil, ""
	c.ready, c.killDeadline = false, time.Time{}
	c.startup = newProber("Startup", c.spec.StartupProbe, c.started)
	c.readiness = newProber("Readiness", c.spec.ReadinessProbe, c.started)
	c.liveness = newProber("Liveness", c.spec.LivenessProbe, c.started)
	c.startupOK = c.startup == nil
	if err := writePid(c.pidPath, cmd.Process.Pid); err != nil {
		w.logf("pid file of %s: %v", c.spec.Name, err)
	}
	w.logf("started container %s: pid %d, %s %s (log %s)", c.spec.Name, cmd.Process.Pid, c.bin, strings.Join(args, " "), logPath)
	w.r.event(w.pod, corev1.EventTypeNormal, "Started", "Started container %s as local process %d (%s)", c.spec.Name, cmd.Process.Pid, filepath.Base(c.bin))
	proc, exits := cmd.Process, w.exits
	go func() {
		_ = cmd.Wait()
		e := exitEvent{c: c, proc: proc, at: time.Now(), code: cmd.ProcessState.ExitCode()}
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			e.signal = ws.Signal()
			e.code = 128 + int(e.signal)
		}
		exits <- e
	}()
}

// finished records the end of the running process.
func (c *container) finished(e exitEvent) {
	reason := "Completed"
	if e.code != 0 {
		reason = "Error"
	}
	c.last = &corev1.ContainerStateTerminated{
		ExitCode: int32(e.code), Signal: int32(e.signal), Reason: reason,
		StartedAt: metav1.NewTime(c.started), FinishedAt: metav1.NewTime(e.at), ContainerID: c.containerID(),
	}
	c.w.logf("container %s (pid %d) exited: code %d", c.spec.Name, e.proc.Pid, e.code)
	if e.at.Sub(c.started) > backoffReset {
		c.backoff = 0
	}
	c.proc, c.ready, c.startupOK, c.waiting = nil, false, false, nil
	_ = os.Remove(c.pidPath)
}

// scheduleRestart starts the container again after the back-off (1s,
// doubling to 30s: shorter than the kubelet's 10s to 5m, for development).
func (c *container) scheduleRestart() {
	if c.backoff == 0 {
		c.backoff = backoffFirst
	} else {
		c.backoff = min(2*c.backoff, backoffMax)
	}
	c.nextStart = time.Now().Add(c.backoff)
	c.waiting = &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff",
		Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s", c.backoff, c.spec.Name, c.w.pod.Name)}
	c.w.r.event(c.w.pod, corev1.EventTypeWarning, "BackOff", "Back-off %s restarting container %s (exit code %d)", c.backoff, c.spec.Name, c.last.ExitCode)
}

// kill stops the process for a failed probe; the restart policy then
// decides, as for any exit.
func (c *container) kill(why string) {
	if c.proc == nil || !c.killDeadline.IsZero() {
		return
	}
	c.w.logf("container %s %s: killing it", c.spec.Name, why)
	c.w.r.event(c.w.pod, corev1.EventTypeNormal, "Killing", "Container %s %s, will be restarted", c.spec.Name, why)
	signalGroup(c.proc.Pid, syscall.SIGTERM)
	c.killDeadline = time.Now().Add(c.w.graceSpec())
}

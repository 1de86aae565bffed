package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A pid file holds "PID STARTTIME": the start time (from /proc/PID/stat)
// tells our process from an unrelated one that got the same pid later, so
// that down never signals a process it did not start.
type pidRecord struct {
	pid   int
	start uint64
}

// procStart returns the start time of a live (not zombie) process.
func procStart(pid int) (uint64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state), so field 22 (starttime) is f[19].
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return 0, false
	}
	st, err := strconv.ParseUint(f[19], 10, 64)
	return st, err == nil
}

func writePid(path string, pid int) error {
	st, ok := procStart(pid)
	if !ok {
		return fmt.Errorf("process %d exited at once", pid)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, fmt.Appendf(nil, "%d %d\n", pid, st), 0o644)
}

func readPid(path string) (pidRecord, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return pidRecord{}, err
	}
	var r pidRecord
	if _, err := fmt.Sscanf(string(b), "%d %d", &r.pid, &r.start); err != nil {
		return pidRecord{}, fmt.Errorf("%s: %v", path, err)
	}
	return r, nil
}

func (r pidRecord) alive() bool {
	st, ok := procStart(r.pid)
	return ok && st == r.start
}

// startDetached starts a process in its own session, so that it outlives
// the command that started it, with stdout and stderr appended to logPath,
// and records its pid.
func startDetached(name, path string, args []string, logPath, pidPath string) (*exec.Cmd, error) {
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== %s: %s %s\n", time.Now().Format(time.RFC3339), path, strings.Join(args, " "))
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	if err := writePid(pidPath, cmd.Process.Pid); err != nil {
		return nil, fmt.Errorf("start %s: %w (see %s)", name, err, logPath)
	}
	return cmd, nil
}

// stopPidFile stops the process (group) recorded in path: SIGTERM, then
// SIGKILL after timeout. It removes the pid file once the process is gone.
// It returns false if there was nothing to stop.
func stopPidFile(path string, timeout time.Duration) (bool, error) {
	r, err := readPid(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		os.Remove(path)
		return false, err
	}
	if !r.alive() {
		os.Remove(path)
		return false, nil
	}
	signalGroup(r.pid, syscall.SIGTERM)
	if !waitGone(r, timeout) {
		signalGroup(r.pid, syscall.SIGKILL)
		if !waitGone(r, 5*time.Second) {
			return true, fmt.Errorf("pid %d survived SIGKILL", r.pid)
		}
	}
	os.Remove(path)
	return true, nil
}

// signalGroup signals the process group led by pid (every process here is
// started as a group leader), or the process alone if it has no group.
func signalGroup(pid int, sig syscall.Signal) {
	if err := syscall.Kill(-pid, sig); err != nil {
		_ = syscall.Kill(pid, sig)
	}
}

func waitGone(r pidRecord, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for r.alive() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	return true
}

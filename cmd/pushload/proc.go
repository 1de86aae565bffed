package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Every child process pushload starts is registered here and killed when
// pushload returns, whatever the path out.
var (
	childMu  sync.Mutex
	children = map[*exec.Cmd]struct{}{}
)

func addChild(c *exec.Cmd) {
	childMu.Lock()
	children[c] = struct{}{}
	childMu.Unlock()
}

func removeChild(c *exec.Cmd) {
	childMu.Lock()
	delete(children, c)
	childMu.Unlock()
}

func killChildren() {
	childMu.Lock()
	defer childMu.Unlock()
	for c := range children {
		if c.Process != nil {
			_ = c.Process.Kill()
		}
	}
}

// nodeProc is a pushnode started by pushload on loopback ports.
type nodeProc struct {
	cmd     *exec.Cmd
	Client  string
	Push    string
	HTTP    string
	Token   string
	DataDir string
	Records int64
	// ReadyAfter is the time from starting the process to reading its
	// "push node ready" log line.
	ReadyAfter time.Duration

	exited chan struct{}
	err    error
	logMu  sync.Mutex
	logs   []string // the last lines, for error messages
}

const nodeToken = "pushload-token"

// startNode runs bin on dataDir with every listener on a free loopback
// port and waits for its JSON ready line, as node/nodetest does. The
// token file is written next to the data directory.
func startNode(ctx context.Context, bin, dataDir string, extra, env []string, timeout time.Duration) (*nodeProc, error) {
	tokenFile := filepath.Join(filepath.Dir(dataDir), "pushload-api-token")
	if err := os.WriteFile(tokenFile, []byte(nodeToken+"\n"), 0o600); err != nil {
		return nil, err
	}
	args := append([]string{"--data-dir", dataDir, "--client-addr", "127.0.0.1:0", "--push-addr", "127.0.0.1:0",
		"--http-addr", "127.0.0.1:0", "--api-token-file", tokenFile, "--log-format", "json", "--rate-limit", "0", "--pprof"}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = childAttr()
	cmd.Env = append(cleanNodeEnv(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	p := &nodeProc{cmd: cmd, Token: nodeToken, DataDir: dataDir, exited: make(chan struct{})}
	ready := make(chan map[string]any, 1)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	addChild(cmd)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			p.logMu.Lock()
			p.logs = append(p.logs, line)
			if len(p.logs) > 50 {
				p.logs = p.logs[len(p.logs)-50:]
			}
			p.logMu.Unlock()
			if sent {
				continue
			}
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "push node ready" {
				m["_at"] = time.Since(start)
				ready <- m
				sent = true
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		p.err = cmd.Wait()
		removeChild(cmd)
		close(p.exited)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case m := <-ready:
		p.ReadyAfter = m["_at"].(time.Duration)
		p.Client, _ = m["client"].(string)
		p.Push, _ = m["push"].(string)
		p.HTTP, _ = m["http"].(string)
		if r, ok := m["records"].(float64); ok {
			p.Records = int64(r)
		}
		return p, nil
	case <-p.exited:
		return nil, fmt.Errorf("pushnode exited before ready: %v\n%s", p.err, p.Logs())
	case <-t.C:
		p.Kill()
		return nil, fmt.Errorf("pushnode not ready within %v\n%s", timeout, p.Logs())
	case <-ctx.Done():
		p.Kill()
		return nil, ctx.Err()
	}
}

// cleanNodeEnv drops PUSHNODE_* variables of the caller, so that the
// node runs exactly with the flags pushload gives it.
func cleanNodeEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PUSHNODE_") {
			env = append(env, kv)
		}
	}
	return env
}

// Logs is the tail of what the node logged.
func (p *nodeProc) Logs() string {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	return strings.Join(p.logs, "\n")
}

// Pid is the node's process id.
func (p *nodeProc) Pid() int { return p.cmd.Process.Pid }

// Kill sends SIGKILL and waits for the exit.
func (p *nodeProc) Kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// Stop sends SIGTERM and waits up to timeout, then kills. It returns the
// time the node took to exit and its exit error.
func (p *nodeProc) Stop(timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.exited:
		return time.Since(start), p.err
	case <-t.C:
		p.Kill()
		return time.Since(start), fmt.Errorf("pushnode did not exit within %v of SIGTERM; killed", timeout)
	}
}

// procMem is what /proc/PID/status says about a process's memory.
type procMem struct {
	RSS, RSSAnon, RSSFile, HWM int64 // bytes
}

func readProcMem(pid int) (procMem, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procMem{}, err
	}
	var m procMem
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			m.RSS = v << 10
		case "RssAnon:":
			m.RSSAnon = v << 10
		case "RssFile:":
			m.RSSFile = v << 10
		case "VmHWM:":
			m.HWM = v << 10
		}
	}
	if m.RSS == 0 {
		return m, errors.New("no VmRSS in /proc status")
	}
	return m, nil
}

// procCPU is the user+system CPU time a process used so far.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100) // USER_HZ is 100 on Linux
}

// machineBusy is the CPU time all CPUs spent outside idle and iowait
// since boot, from /proc/stat.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return time.Duration(busy) * (time.Second / 100)
}

// cpuMeter measures the CPU used by pushload and, when known, by the
// server process over an interval, in cores (1.0 = one CPU busy), and
// what the rest of the machine used meanwhile: a benchmark on a busy
// machine says so.
type cpuMeter struct {
	pid                  int
	start                time.Time
	self, server, system time.Duration
}

func startCPU(pid int) *cpuMeter {
	m := &cpuMeter{pid: pid, start: time.Now(), self: selfCPU(), system: machineBusy()}
	if pid > 0 {
		m.server = procCPU(pid)
	}
	return m
}

func (m *cpuMeter) done(metrics map[string]float64) {
	el := time.Since(m.start).Seconds()
	if el <= 0 {
		return
	}
	self := (selfCPU() - m.self).Seconds() / el
	metrics["generator_cpu_cores"] = self
	var server float64
	if m.pid > 0 {
		server = (procCPU(m.pid) - m.server).Seconds() / el
		metrics["server_cpu_cores"] = server
	}
	if sys := machineBusy(); sys > 0 && m.system > 0 {
		busy := (sys - m.system).Seconds() / el
		metrics["machine_busy_cores"] = busy
		if m.pid > 0 {
			// Includes kernel work (softirq) not charged to either process.
			metrics["other_cpu_cores"] = max(busy-self-server, 0)
		}
	}
}

// captureProfile fetches a CPU profile of seconds from a pushnode started
// with --pprof and writes it to path. It runs in the background; wait on
// the returned channel.
func captureProfile(ctx context.Context, httpAddr, token string, seconds int, path string) <-chan error {
	ch := make(chan error, 1)
	go func() {
		ch <- fetchToFile(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", httpAddr, seconds), token, path, time.Duration(seconds+30)*time.Second)
	}()
	return ch
}

func fetchToFile(ctx context.Context, url, token, path string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// readMetric reads one unlabelled metric of a node's /metrics; found is
// false when the node does not export it.
func readMetric(ctx context.Context, addr, token, name string) (v float64, found bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, false, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, false, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil, err
		}
	}
	return 0, false, sc.Err()
}

package nodetest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node/api"
)

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// repoRoot finds the module root from the test's working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Binary builds cmd/pushnode once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		root, err := repoRoot()
		if err != nil {
			buildErr = err
			return
		}
		dir, err := os.MkdirTemp("", "pushnode-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "pushnode")
		cmd := exec.Command("go", "build", "-o", buildPath, "./cmd/pushnode")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/pushnode: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// Process is a node running as a child process.
type Process struct {
	Cmd    *exec.Cmd
	Client string // client address
	Push   string
	HTTP   string
	Peer   string // the peer link address, with --peer-addr
	API    *api.Client
	exited chan error
	logs   *strings.Builder
	mu     sync.Mutex
}

// StartProcess runs the real pushnode binary on dataDir with every
// listener on a free loopback port, and waits until it is ready. Extra
// flags are appended. The process is killed when the test ends.
func StartProcess(t testing.TB, dataDir string, extra ...string) *Process {
	t.Helper()
	tokenFile := filepath.Join(filepath.Dir(dataDir), "token")
	if err := os.WriteFile(tokenFile, []byte(Token), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--data-dir", dataDir, "--client-addr", "127.0.0.1:0", "--push-addr", "127.0.0.1:0",
		"--http-addr", "127.0.0.1:0", "--api-token-file", tokenFile, "--log-format", "json", "--rate-limit", "0"}, extra...)
	cmd := exec.Command(Binary(t), args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &Process{Cmd: cmd, exited: make(chan error, 1), logs: &strings.Builder{}}
	ready := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.logs.WriteString(line + "\n")
			p.mu.Unlock()
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "push node ready" {
				ready <- m
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		p.exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
		}
	})
	select {
	case m := <-ready:
		p.Client, _ = m["client"].(string)
		p.Push, _ = m["push"].(string)
		p.HTTP, _ = m["http"].(string)
		p.Peer, _ = m["peer"].(string)
	case err := <-p.exited:
		t.Fatalf("pushnode exited before ready: %v\n%s", err, p.Logs())
	case <-time.After(30 * time.Second):
		t.Fatalf("pushnode not ready within 30s\n%s", p.Logs())
	}
	p.API = api.NewClient("http://"+p.HTTP, Token)
	return p
}

// Logs is what the process logged so far.
func (p *Process) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// Signal sends sig and waits up to timeout for the process to exit.
func (p *Process) Signal(t testing.TB, sig syscall.Signal, timeout time.Duration) error {
	t.Helper()
	if err := p.Cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.exited:
		p.exited <- err
		return err
	case <-time.After(timeout):
		t.Fatalf("pushnode did not exit within %v of %v\n%s", timeout, sig, p.Logs())
		return nil
	}
}

// WaitReady waits for /readyz.
func (p *Process) WaitReady(t testing.TB) {
	Eventually(t, 10*time.Second, func() error {
		if !p.API.Ready(context.Background()) {
			return fmt.Errorf("not ready")
		}
		return nil
	})
}

// Exit is how a pushnode process that ran to its end ended.
type Exit struct {
	Code   int
	Stdout string
	Stderr string
}

// RunProcess runs the pushnode binary with args until it exits, for at
// most 30 s, as the user cred names (nil: this process's user).
func RunProcess(t testing.TB, cred *syscall.Credential, args ...string) Exit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, Binary(t), args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("pushnode %q did not exit within 30s\n%s", args, stderr.String())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run pushnode %q: %v", args, err)
	}
	return Exit{Code: cmd.ProcessState.ExitCode(), Stdout: stdout.String(), Stderr: stderr.String()}
}

// NodeArgs are the arguments of a node on dataDir with every listener on
// a free loopback port and JSON logs.
func NodeArgs(t testing.TB, dataDir string) []string {
	t.Helper()
	tokenFile := filepath.Join(filepath.Dir(dataDir), "token")
	if err := os.WriteFile(tokenFile, []byte(Token), 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{"--data-dir", dataDir, "--client-addr", "127.0.0.1:0", "--push-addr", "127.0.0.1:0",
		"--http-addr", "127.0.0.1:0", "--api-token-file", tokenFile, "--log-format", "json", "--rate-limit", "0"}
}

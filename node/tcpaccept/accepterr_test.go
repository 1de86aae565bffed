package tcpaccept

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

const helperEnv = "TCPACCEPT_EMFILE_HELPER"

// TestAcceptOutOfDescriptorsBacksOffAndLogsOnce runs a listener in a
// child process whose descriptor limit leaves room for three connections,
// opens many more, and checks that the accept loop neither spins nor
// floods the log while it cannot accept, and serves again once
// descriptors are free.
func TestAcceptOutOfDescriptorsBacksOffAndLogsOnce(t *testing.T) {
	if os.Getenv(helperEnv) != "" {
		emfileHelper()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestAcceptOutOfDescriptorsBacksOffAndLogsOnce$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() {
		t.Fatalf("helper did not start: %s", stderr.String())
	}
	addr := strings.TrimSpace(sc.Text())

	var conns []net.Conn
	for range 50 {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	time.Sleep(1500 * time.Millisecond) // the helper is out of descriptors all along
	for _, c := range conns {
		c.Close()
	}
	// Descriptors are free again: a new connection is served.
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		t.Fatalf("not served once descriptors were free: %v\n%s", err, stderr.String())
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v\n%s", err, stderr.String())
	}
	lines := strings.Count(stderr.String(), "cannot accept connections")
	if lines != 1 {
		t.Errorf("%d accept error lines in about 2 s, want 1 (once per interval):\n%s", lines, stderr.String())
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	t.Logf("helper CPU time %v", cpu)
	if cpu > time.Second {
		t.Errorf("helper used %v of CPU in about 2 s: the accept loop spins", cpu)
	}
}

// emfileHelper is the child: a listener with three descriptors to spare.
func emfileHelper() {
	l, err := Listen("127.0.0.1:0", Options{Name: "helper", LogInterval: time.Hour,
		Log: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	// ReadDir's own descriptor is closed again, hence no +1 for it.
	lim := syscall.Rlimit{Cur: uint64(len(entries) - 1 + 3), Max: uint64(len(entries) - 1 + 3)}
	var old syscall.Rlimit
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old)
	lim.Max = old.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	go l.Serve(echo)
	fmt.Println(l.Addr().String())
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes stdin
	_ = l.Close()
	os.Exit(0)
}

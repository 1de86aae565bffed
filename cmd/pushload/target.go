package main

import (
	"context"
	"crypto/md5"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ddpush/ddpush-operator/node/wire"
)

// common are the flags every workload shares: where the server is, or
// which pushnode binary to start, and where results go.
type common struct {
	client      string
	push        string
	http        string
	token       string
	tokenFile   string
	allowRemote bool

	nodeBinary string
	nodeArgs   stringList
	nodeEnv    stringList

	out        string
	profileDir string
	prefix     string
	appID      int
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.client, "client", "127.0.0.1:9966", "the server's client port (UDP), host:port")
	fs.StringVar(&c.push, "push", "127.0.0.1:9999", "the server's push port (TCP), host:port")
	fs.StringVar(&c.http, "http", "127.0.0.1:8080", "pushnode's HTTP API, host:port (only the HTTP bulk push mode uses it)")
	fs.StringVar(&c.token, "token", "", "bearer token of pushnode's HTTP API")
	fs.StringVar(&c.tokenFile, "token-file", "", "file holding the bearer token (instead of --token)")
	fs.BoolVar(&c.allowRemote, "allow-remote", false, "allow targets outside 127.0.0.0/8 and ::1 (a load generator aimed at the wrong host does harm)")
	fs.StringVar(&c.nodeBinary, "node-binary", "", "start this pushnode binary on loopback ports with a fresh data directory and measure it (ignores --client/--push/--http)")
	fs.Var(&c.nodeArgs, "node-arg", "extra flag for the started pushnode (repeatable), e.g. --node-arg=--flush-interval=2s")
	fs.Var(&c.nodeEnv, "node-env", "extra environment variable KEY=VALUE for the started pushnode (repeatable), e.g. --node-env GOMAXPROCS=4")
	fs.StringVar(&c.out, "out", "", "write the result as JSON to this file")
	fs.StringVar(&c.profileDir, "profile-dir", "", "with --node-binary: save a CPU profile of the node during the measurement here")
	fs.StringVar(&c.prefix, "uuid-prefix", "", "uuids are md5(prefix + index); default: unique per run, so runs never see each other's records")
	fs.IntVar(&c.appID, "app-id", 1, "appId of client messages and push requests")
}

func (c *common) validate() error {
	if c.prefix == "" {
		c.prefix = fmt.Sprintf("pushload-%d-", time.Now().UnixNano())
	}
	if c.appID < 1 || c.appID > 255 {
		return usageErr("--app-id must be 1..255")
	}
	if c.tokenFile != "" {
		b, err := os.ReadFile(c.tokenFile)
		if err != nil {
			return err
		}
		c.token = strings.TrimSpace(string(b))
	}
	for _, kv := range c.nodeEnv {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return usageErr("--node-env %q is not KEY=VALUE", kv)
		}
	}
	if c.nodeBinary != "" {
		return nil
	}
	for _, a := range []string{c.client, c.push, c.http} {
		if err := checkTarget(a, c.allowRemote); err != nil {
			return err
		}
	}
	return nil
}

// checkTarget refuses non-loopback targets unless allowed.
func checkTarget(hostport string, allowRemote bool) error {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return usageErr("%q is not host:port: %v", hostport, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return usageErr("%q: bad port", hostport)
	}
	if allowRemote {
		return nil
	}
	ips, err := net.LookupIP(host)
	if err != nil {
		return fmt.Errorf("resolve %q: %w", host, err)
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return usageErr("%s is not a loopback address; pass --allow-remote to load another host", hostport)
		}
	}
	return nil
}

// target is the server a workload measures.
type target struct {
	Client, Push, HTTP, Token string
	Name                      string
	node                      *nodeProc // set when pushload started the node
	tmp                       string
}

// pid of the server when pushload started it, else 0.
func (t *target) pid() int {
	if t.node == nil {
		return 0
	}
	return t.node.Pid()
}

// open starts a pushnode with the workload's flags when --node-binary is
// set, otherwise it describes the given addresses. close stops it.
func (c *common) open(ctx context.Context, nodeFlags ...string) (*target, error) {
	if c.nodeBinary == "" {
		return &target{Client: c.client, Push: c.push, HTTP: c.http, Token: c.token, Name: "server at " + c.client}, nil
	}
	tmp, err := os.MkdirTemp("", "pushload-")
	if err != nil {
		return nil, err
	}
	args := append(append([]string{}, nodeFlags...), c.nodeArgs...)
	n, err := startNode(ctx, c.nodeBinary, filepath.Join(tmp, "data"), args, c.nodeEnv, 60*time.Second)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	return &target{Client: n.Client, Push: n.Push, HTTP: n.HTTP, Token: n.Token, node: n, tmp: tmp,
		Name: "pushnode started by pushload (" + strings.TrimSpace(strings.Join(c.nodeEnv, " ")+" "+filepath.Base(c.nodeBinary)+" "+strings.Join(args, " ")) + ")"}, nil
}

func (t *target) close() {
	if t.node != nil {
		_, _ = t.node.Stop(30 * time.Second)
	}
	if t.tmp != "" {
		os.RemoveAll(t.tmp)
	}
}

// profile starts a CPU profile of a started node; wait on the result.
func (c *common) profile(ctx context.Context, t *target, name string, d time.Duration) <-chan error {
	if c.profileDir == "" || t.node == nil {
		return nil
	}
	secs := max(int(d.Round(time.Second)/time.Second), 1)
	return captureProfile(ctx, t.HTTP, t.Token, secs, filepath.Join(c.profileDir, name+".cpu.pprof"))
}

func waitProfile(ch <-chan error, res *Result) {
	if ch == nil {
		return
	}
	if err := <-ch; err != nil {
		res.Notes = append(res.Notes, "CPU profile not saved: "+err.Error())
	}
}

// uuids returns md5(prefix + i) for i in [from, from+n), as DDPush
// clients derive uuids from user ids.
func uuids(prefix string, from, n int) []wire.UUID {
	out := make([]wire.UUID, n)
	buf := []byte(prefix)
	for i := range out {
		b := strconv.AppendInt(buf[:len(prefix)], int64(from+i), 10)
		out[i] = md5.Sum(b)
		buf = b
	}
	return out
}

func resolveUDP(hostport string) (*net.UDPAddr, error) {
	a, err := net.ResolveUDPAddr("udp", hostport)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", hostport, err)
	}
	return a, nil
}

// Result is what a workload reports; --out saves it as JSON.
type Result struct {
	Workload string             `json:"workload"`
	Target   string             `json:"target"`
	At       time.Time          `json:"at"`
	Params   map[string]any     `json:"params"`
	Metrics  map[string]float64 `json:"metrics"`
	Notes    []string           `json:"notes,omitempty"`
}

func newResult(name string) *Result {
	return &Result{Workload: name, At: time.Now().UTC(), Params: map[string]any{}, Metrics: map[string]float64{}}
}

func (r *Result) note(format string, a ...any) { r.Notes = append(r.Notes, fmt.Sprintf(format, a...)) }

// emit prints the result and saves it when --out is set.
func (r *Result) emit(w io.Writer, out string) error {
	fmt.Fprintf(w, "== %s: %s\n", r.Workload, r.Target)
	for _, k := range sortedKeys(r.Params) {
		fmt.Fprintf(w, "   param  %-32s %v\n", k, r.Params[k])
	}
	for _, k := range sortedKeys(r.Metrics) {
		fmt.Fprintf(w, "   result %-32s %s\n", k, fmtNum(r.Metrics[k]))
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "   note   %s\n", n)
	}
	if out == "" {
		return nil
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	return os.WriteFile(out, append(b, '\n'), 0o644)
}

func fmtNum(v float64) string {
	switch {
	case v == float64(int64(v)) && v < 1e15 && v > -1e15:
		return strconv.FormatInt(int64(v), 10)
	case v >= 100 || v <= -100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	default:
		return strconv.FormatFloat(v, 'g', 4, 64)
	}
}

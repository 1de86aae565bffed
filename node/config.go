package node

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ddpush/ddpush-operator/node/slotmap"
	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// EnvPrefix starts the environment variable of every flag:
// --heartbeat-policy is PUSHNODE_HEARTBEAT_POLICY.
const EnvPrefix = "PUSHNODE_"

// Config is every setting of a node.
type Config struct {
	DataDir string

	ClientAddr string // UDP and TCP
	UDP        bool
	TCP        bool
	PushAddr   string
	HTTPAddr   string

	MaxContentLen     int
	OnlineWindow      time.Duration
	ExpiryAge         time.Duration
	ExpiryInterval    time.Duration
	HeartbeatPolicy   string
	CreateByHeartbeat bool
	MaxRecords        int64

	RateLimit       int
	TCPIdleTimeout  time.Duration
	TCPFrameTimeout time.Duration
	MaxTCPClients   int
	PushIdleTimeout time.Duration
	MaxPushConns    int

	// Per source address: one peer must not take every place.
	MaxTCPClientsPerSource int
	MaxPushConnsPerSource  int

	HTTPReadTimeout       time.Duration // a request body must arrive within it
	HTTPWriteTimeout      time.Duration // an answer must be taken within it
	HTTPMaxConns          int
	HTTPMaxConnsPerSource int

	APITokenFile     string
	CompatTicketFile string

	FlushInterval   time.Duration
	EventRetention  uint64
	PushRetention   time.Duration
	ShutdownTimeout time.Duration

	LogLevel  string
	LogFormat string
	// Pprof serves net/http/pprof under /debug/pprof/ (token required).
	Pprof bool

	// PeerAddr is where this pod listens for the other pods of a sharded
	// PushNode; empty: the node is whole and takes no slot map.
	PeerAddr string
	// PeerTokenFile holds the secret the pods of a sharded PushNode
	// authenticate each other with; empty uses the API token (which app
	// servers hold too, so a separate secret is better).
	PeerTokenFile string
	// PeerLostGrace is how long another pod's link may stay away before
	// the TCP phones it held count as offline here.
	PeerLostGrace time.Duration
	// Ordinal is this pod's ordinal; -1 takes it from the pod name
	// ($POD_NAME, else $HOSTNAME, ending in -N). Used only with PeerAddr.
	Ordinal int
}

// DefaultConfig is what `pushnode` with no arguments runs.
func DefaultConfig() Config {
	return Config{
		DataDir:           "./data",
		ClientAddr:        ":9966",
		UDP:               true,
		TCP:               true,
		PushAddr:          ":9999",
		Ordinal:           -1,
		PeerLostGrace:     15 * time.Second,
		HTTPAddr:          ":8080",
		MaxContentLen:     wire.DefaultMaxContentLen,
		OnlineWindow:      60 * time.Second,
		ExpiryAge:         50 * time.Hour,
		ExpiryInterval:    time.Minute,
		HeartbeatPolicy:   "never",
		CreateByHeartbeat: true,
		MaxRecords:        2_000_000,
		RateLimit:         1000,
		TCPIdleTimeout:    5 * time.Minute,
		TCPFrameTimeout:   10 * time.Second,
		MaxTCPClients:     100_000,
		PushIdleTimeout:   600 * time.Second,
		MaxPushConns:      1024,
		FlushInterval:     time.Second,
		EventRetention:    1_000_000,
		PushRetention:     24 * time.Hour,
		ShutdownTimeout:   10 * time.Second,
		LogLevel:          "info",
		LogFormat:         "text",

		MaxTCPClientsPerSource: 1000,
		MaxPushConnsPerSource:  256,
		HTTPReadTimeout:        30 * time.Second,
		HTTPWriteTimeout:       60 * time.Second,
		HTTPMaxConns:           1024,
		HTTPMaxConnsPerSource:  128,
	}
}

// FlagSet binds every setting of c to a flag.
func (c *Config) FlagSet(name string, output io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(output)
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory of the bbolt store (a persistent volume in Kubernetes)")
	fs.StringVar(&c.ClientAddr, "client-addr", c.ClientAddr, "UDP and TCP address phones connect to")
	fs.BoolVar(&c.UDP, "udp", c.UDP, "serve clients over UDP")
	fs.BoolVar(&c.TCP, "tcp", c.TCP, "serve clients over TCP")
	fs.StringVar(&c.PushAddr, "push-addr", c.PushAddr, "TCP address app servers push to (no authentication: keep it internal)")
	fs.StringVar(&c.HTTPAddr, "http-addr", c.HTTPAddr, "address of the HTTP API, console, health and metrics")
	fs.IntVar(&c.MaxContentLen, "max-content-length", c.MaxContentLen, fmt.Sprintf("largest custom (0x20) payload in bytes, 1 to %d (DDPush clients with their default 1024-byte buffer take at most %d)", wire.MaxContentLenLimit, JavaClientMaxContentLen))
	fs.DurationVar(&c.OnlineWindow, "online-window", c.OnlineWindow, "how long after a UDP heartbeat a client gets instant pushes")
	fs.DurationVar(&c.ExpiryAge, "expiry-age", c.ExpiryAge, "remove records inactive for longer (0 keeps them forever)")
	fs.DurationVar(&c.ExpiryInterval, "expiry-interval", c.ExpiryInterval, "how often the expiry cleaner runs")
	fs.StringVar(&c.HeartbeatPolicy, "heartbeat-policy", c.HeartbeatPolicy, "answer a UDP heartbeat with nothing pending: never, always or address-changed")
	fs.BoolVar(&c.CreateByHeartbeat, "create-by-heartbeat", c.CreateByHeartbeat, "a heartbeat from an unknown uuid creates its record")
	fs.Int64Var(&c.MaxRecords, "max-records", c.MaxRecords, "records heartbeats may create (pushes still create past it); 0 means no cap")
	fs.IntVar(&c.RateLimit, "rate-limit", c.RateLimit, "client packets per second allowed from one source address; 0 disables")
	fs.DurationVar(&c.TCPIdleTimeout, "tcp-idle-timeout", c.TCPIdleTimeout, "close a client TCP connection silent for this long")
	fs.DurationVar(&c.TCPFrameTimeout, "tcp-frame-timeout", c.TCPFrameTimeout, "close a TCP connection whose started message does not complete in time")
	fs.IntVar(&c.MaxTCPClients, "max-tcp-clients", c.MaxTCPClients, "concurrent client TCP connections; 0 means no cap")
	fs.DurationVar(&c.PushIdleTimeout, "push-idle-timeout", c.PushIdleTimeout, "close a push connection idle for this long")
	fs.IntVar(&c.MaxPushConns, "max-push-conns", c.MaxPushConns, "concurrent push connections; 0 means no cap")
	fs.IntVar(&c.MaxTCPClientsPerSource, "max-tcp-clients-per-source", c.MaxTCPClientsPerSource, "concurrent client TCP connections from one address (phones behind one NAT share it); 0 means no cap")
	fs.IntVar(&c.MaxPushConnsPerSource, "max-push-conns-per-source", c.MaxPushConnsPerSource, "concurrent push connections from one address; 0 means no cap")
	fs.DurationVar(&c.HTTPReadTimeout, "http-read-timeout", c.HTTPReadTimeout, "longest time an HTTP request body may take to arrive")
	fs.DurationVar(&c.HTTPWriteTimeout, "http-write-timeout", c.HTTPWriteTimeout, "longest time an HTTP answer may take to be sent (on event streams: each event)")
	fs.IntVar(&c.HTTPMaxConns, "http-max-conns", c.HTTPMaxConns, "concurrent HTTP connections; 0 means no cap")
	fs.IntVar(&c.HTTPMaxConnsPerSource, "http-max-conns-per-source", c.HTTPMaxConnsPerSource, "concurrent HTTP connections from one address; 0 means no cap")
	fs.StringVar(&c.APITokenFile, "api-token-file", c.APITokenFile, "file holding the HTTP API's bearer token (default: generated into <data-dir>/api-token)")
	fs.StringVar(&c.CompatTicketFile, "compat-ticket-file", c.CompatTicketFile, "file holding the ticket of the HttpPushServer-compatible endpoint (unset: endpoint disabled)")
	fs.DurationVar(&c.FlushInterval, "flush-interval", c.FlushInterval, "longest time heartbeat state stays only in memory")
	fs.Uint64Var(&c.EventRetention, "event-retention", c.EventRetention, "delivery events kept for followers")
	fs.DurationVar(&c.PushRetention, "push-retention", c.PushRetention, "how long a finished push stays readable by id and idempotency key")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "longest graceful shutdown")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "text or json")
	fs.BoolVar(&c.Pprof, "pprof", c.Pprof, "serve Go profiles under /debug/pprof/ on the HTTP port (bearer token required)")
	fs.StringVar(&c.PeerAddr, "peer-addr", c.PeerAddr, "TCP address the other pods of a sharded PushNode reach this one at (unset: a whole node, no slot map)")
	fs.StringVar(&c.PeerTokenFile, "peer-token-file", c.PeerTokenFile, "file holding the secret the pods of a sharded PushNode authenticate each other with (unset: the API token)")
	fs.DurationVar(&c.PeerLostGrace, "peer-lost-grace", c.PeerLostGrace, "how long another pod's link may stay away before the TCP phones it held count as offline here")
	fs.IntVar(&c.Ordinal, "ordinal", c.Ordinal, "this pod's ordinal in a sharded PushNode, 0-511 (-1: from the pod name in $POD_NAME or $HOSTNAME, which ends in -N)")
	return fs
}

// EnvName is the environment variable of a flag.
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// ApplyEnv sets every flag not given on the command line from its
// environment variable, if set.
func ApplyEnv(fs *flag.FlagSet, getenv func(string) string) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			return
		}
		env := EnvName(f.Name)
		if v := getenv(env); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %v", env, v, err))
			}
		}
	})
	return errors.Join(errs...)
}

// Validate reports every invalid setting at once.
func (c *Config) Validate() error {
	var errs []error
	if c.Ordinal < -1 || c.Ordinal >= slotmap.MaxOrdinals {
		errs = append(errs, fmt.Errorf("ordinal %d is out of range: 0-%d, or -1 to take it from the pod name", c.Ordinal, slotmap.MaxOrdinals-1))
	}
	if _, ok := state.ParsePolicy(c.HeartbeatPolicy); !ok {
		errs = append(errs, fmt.Errorf("heartbeat-policy %q is not never, always or address-changed", c.HeartbeatPolicy))
	}
	if c.MaxContentLen < 1 || c.MaxContentLen > wire.MaxContentLenLimit {
		errs = append(errs, fmt.Errorf("max-content-length %d is out of range: a custom payload is at least 1 byte, and at most %d so that "+
			"the message carrying it (5-byte header and payload) fits one UDP datagram", c.MaxContentLen, wire.MaxContentLenLimit))
	}
	if !c.UDP && !c.TCP {
		errs = append(errs, errors.New("udp and tcp are both off: phones could not reach the node"))
	}
	if c.OnlineWindow <= 0 {
		errs = append(errs, errors.New("online-window must be positive"))
	}
	if c.ExpiryAge < 0 {
		errs = append(errs, errors.New("expiry-age must not be negative"))
	}
	if c.MaxRecords < 0 {
		errs = append(errs, errors.New("max-records must not be negative"))
	}
	if c.RateLimit < 0 || c.RateLimit > math.MaxInt32 {
		errs = append(errs, fmt.Errorf("rate-limit %d is out of range: 0 (no limit) to %d packets per second", c.RateLimit, math.MaxInt32))
	}
	// A negative cap would read as "no cap".
	for name, v := range map[string]int{"max-tcp-clients": c.MaxTCPClients, "max-push-conns": c.MaxPushConns} {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative (0 means no cap)", name))
		}
	}
	for _, cap := range []struct {
		name string
		v    int
	}{{"max-tcp-clients", c.MaxTCPClients}, {"max-tcp-clients-per-source", c.MaxTCPClientsPerSource},
		{"max-push-conns", c.MaxPushConns}, {"max-push-conns-per-source", c.MaxPushConnsPerSource},
		{"http-max-conns", c.HTTPMaxConns}, {"http-max-conns-per-source", c.HTTPMaxConnsPerSource}} {
		if cap.v < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative (0 means no cap)", cap.name))
		}
	}
	for name, d := range map[string]time.Duration{"expiry-interval": c.ExpiryInterval, "tcp-idle-timeout": c.TCPIdleTimeout,
		"tcp-frame-timeout": c.TCPFrameTimeout, "push-idle-timeout": c.PushIdleTimeout, "flush-interval": c.FlushInterval,
		"push-retention": c.PushRetention, "shutdown-timeout": c.ShutdownTimeout,
		"http-read-timeout": c.HTTPReadTimeout, "http-write-timeout": c.HTTPWriteTimeout} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive", name))
		}
	}
	if c.EventRetention == 0 {
		errs = append(errs, errors.New("event-retention must be positive"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data-dir is required"))
	}
	if _, err := c.logLevel(); err != nil {
		errs = append(errs, err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("log-format %q is not text or json", c.LogFormat))
	}
	return errors.Join(errs...)
}

// JavaClientMaxContentLen is the largest custom payload the DDPush Java
// clients receive with their default 1024-byte receive buffer (less the
// 5-byte header): a longer message is cut short and dropped by the phone,
// and resent on every heartbeat without ever being acknowledged.
const JavaClientMaxContentLen = 1024 - wire.ServerHeaderLen

// Warnings lists valid settings that are likely mistakes, for the log.
func (c *Config) Warnings() []string {
	var w []string
	if c.MaxContentLen > JavaClientMaxContentLen {
		w = append(w, fmt.Sprintf("max-content-length %d is above %d: DDPush clients with their default 1024-byte buffer drop longer custom messages; "+
			"raise the clients' buffer, or keep payloads at most %d bytes", c.MaxContentLen, JavaClientMaxContentLen, JavaClientMaxContentLen))
	}
	return w
}

func (c *Config) logLevel() (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return l, fmt.Errorf("log-level %q is not debug, info, warn or error", c.LogLevel)
	}
	return l, nil
}

// Logger builds the node's logger.
func (c *Config) Logger(w io.Writer) *slog.Logger {
	lvl, _ := c.logLevel()
	opts := &slog.HandlerOptions{Level: lvl}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// TokenFileName is where a node keeps the API token it generated.
const TokenFileName = "api-token"

// readSecret reads a token file, trimming surrounding whitespace.
func readSecret(path, what string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read %s %s: %w", what, path, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s %s is empty", what, path)
	}
	return s, nil
}

// apiToken reads the configured token, or generates one into the data
// directory on first start so that a bare `pushnode` is never open.
func (c *Config) apiToken(log *slog.Logger) (string, error) {
	if c.APITokenFile != "" {
		return readSecret(c.APITokenFile, "API token file")
	}
	path := filepath.Join(c.DataDir, TokenFileName)
	if t, err := readSecret(path, "API token file"); err == nil {
		return t, nil
	}
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	t := hex.EncodeToString(b[:])
	if err := os.MkdirAll(c.DataDir, 0o750); err != nil {
		return "", fmt.Errorf("create data directory %s: %w", c.DataDir, err)
	}
	if err := os.WriteFile(path, []byte(t+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write generated API token %s: %w", path, err)
	}
	log.Info("generated an API token", "file", path)
	return t, nil
}

// ResolveOrdinal is the pod's ordinal: the flag, else the number ending
// the pod name (StatefulSet pods are named <set>-<ordinal>).
func (c *Config) ResolveOrdinal(getenv func(string) string) (int, error) {
	if c.Ordinal >= 0 {
		return c.Ordinal, nil
	}
	for _, env := range []string{"POD_NAME", "HOSTNAME"} {
		if name := getenv(env); name != "" {
			if o, ok := slotmap.OrdinalFromPodName(name); ok {
				return o, nil
			}
			return 0, fmt.Errorf("--ordinal not given and $%s (%q) does not end in -N: give --ordinal", env, name)
		}
	}
	if name, err := os.Hostname(); err == nil {
		if o, ok := slotmap.OrdinalFromPodName(name); ok {
			return o, nil
		}
	}
	return 0, errors.New("--ordinal not given and the pod name does not end in -N: give --ordinal")
}

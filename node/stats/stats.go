// Package stats counts what a node does. The hot paths only add to
// atomic counters; the Prometheus collectors and the status endpoint read
// the same counters, so the two never disagree.
package stats

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ddpush/ddpush-operator/node/state"
)

// Drop is a reason a packet, request or connection was dropped.
type Drop uint8

const (
	DropMalformed        Drop = iota // a client message that is not valid DDPush v1
	DropRateLimited                  // the source exceeded its packet rate
	DropUnknownUUID                  // heartbeat from an unknown uuid with creation disabled
	DropRecordCap                    // heartbeat would create a record past the cap
	DropTCPViolation                 // client TCP stream declared an impossible length
	DropTCPIdle                      // client TCP connection idle too long
	DropTCPSlowFrame                 // a frame took too long to arrive
	DropTCPSlowReader                // client did not read what was sent to it
	DropTCPConnLimit                 // too many client TCP connections
	DropPushViolation                // push request declared a length above the maximum
	DropPushIdle                     // push connection idle too long
	DropPushSlowFrame                // push request took too long to arrive
	DropPushConnLimit                // too many push connections
	DropUDPSendError                 // a UDP send failed
	DropTCPPerSource                 // too many client TCP connections from one address
	DropPushPerSource                // too many push connections from one address
	DropHTTPConnLimit                // too many HTTP connections
	DropHTTPPerSource                // too many HTTP connections from one address
	DropRecordBusy                   // a client message waited too long for a record a commit held
	DropNotHome                      // a relayed message for a uuid this pod's slot map homes elsewhere
	DropRelayedMalformed             // a relayed phone packet that did not decode
	DropRelayConnGone                // a home's message for a TCP phone whose connection here closed
	DropRelayTooLate                 // a relayed push that reached its home after the front stopped waiting
	DropNoSlotMap                    // a phone packet at a pod of a sharded PushNode that has no slot map yet
	DropMoveHeld                     // a phone packet past the bound of what a slot move's handoff holds
	numDrops
)

var dropNames = [numDrops]string{
	"malformed", "rate_limited", "unknown_uuid", "record_cap",
	"tcp_violation", "tcp_idle", "tcp_slow_frame", "tcp_slow_reader", "tcp_conn_limit",
	"push_violation", "push_idle", "push_slow_frame", "push_conn_limit", "udp_send_error",
	"tcp_source_limit", "push_source_limit", "http_conn_limit", "http_source_limit",
	"record_busy", "not_home", "relayed_malformed", "relay_conn_gone", "relay_too_late", "no_slot_map",
	"move_held",
}

func (d Drop) String() string { return dropNames[d] }

// Transport indexes packet counters.
type Transport uint8

const (
	UDP Transport = iota
	TCP
	numTransports
)

var transportNames = [numTransports]string{"udp", "tcp"}

// PushResult is how a push request ended.
type PushResult uint8

const (
	PushAccepted  PushResult = iota
	PushRejected             // bad format, or failed to commit
	PushDuplicate            // idempotency key seen before
	numResults
)

var resultNames = [numResults]string{"accepted", "rejected", "duplicate"}

// Source is where a push came from.
type Source uint8

const (
	FromPushPort Source = iota // TCP 9999
	FromHTTP
	numSources
)

var sourceNames = [numSources]string{"push_port", "http"}

// Stats holds every counter of a node.
type Stats struct {
	PacketsIn  [numTransports]atomic.Uint64
	PacketsOut [numTransports]atomic.Uint64
	Drops      [numDrops]atomic.Uint64
	// Pushes by source, kind (index = state.Kind, 0 for unparseable) and result.
	Pushes     [numSources][4][numResults]atomic.Uint64
	Deliveries [6]atomic.Uint64 // by state.Fate
	Commits    atomic.Uint64
	// CommitFailures counts commits the store refused (a full disk, an
	// I/O error, a damaged file).
	CommitFailures atomic.Uint64
	// DamagedEntries counts stored entries that could not be decoded and
	// were skipped.
	DamagedEntries atomic.Uint64

	AckLatency    prometheus.Histogram
	CommitLatency prometheus.Histogram
	CommitBatch   prometheus.Histogram
}

// New returns zeroed stats.
func New() *Stats {
	return &Stats{
		AckLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pushnode_ack_latency_seconds",
			Help:    "Time from accepting a push to the client's ack.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 12),
		}),
		CommitLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pushnode_commit_duration_seconds",
			Help:    "Duration of one store commit (write and fsync).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		CommitBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pushnode_commit_pushes",
			Help:    "Pushes made durable by one commit (group commit size).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
	}
}

// Drop counts one drop.
func (s *Stats) Drop(d Drop) { s.Drops[d].Add(1) }

// Push counts one push request.
func (s *Stats) Push(src Source, k state.Kind, r PushResult) {
	if k > 3 {
		k = 0
	}
	s.Pushes[src][k][r].Add(1)
}

// Gauges are the values read from the node when scraped.
type Gauges struct {
	Records    func() float64
	Online     func() float64
	StoreBytes func() float64
	EventSeq   func() float64
	// WriteBack is the records changed by heartbeats and acks that are
	// not written back yet.
	WriteBack func() float64
}

// Register adds the node's collectors to reg.
func (s *Stats) Register(reg prometheus.Registerer, g Gauges) error {
	cs := []prometheus.Collector{
		s.AckLatency, s.CommitLatency, s.CommitBatch,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pushnode_records", Help: "Client records held."}, g.Records),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pushnode_online_clients", Help: "Clients that would receive a push now."}, g.Online),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pushnode_store_bytes", Help: "Size of the bbolt file."}, g.StoreBytes),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pushnode_event_sequence", Help: "Sequence number of the last durable delivery event."}, g.EventSeq),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pushnode_writeback_pending_records", Help: "Records changed by heartbeats and acks that are not written to the store yet."}, g.WriteBack),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "pushnode_commits_total", Help: "Store commits."}, func() float64 { return float64(s.Commits.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "pushnode_commit_failures_total", Help: "Store commits that failed; what they carried was refused or is retried."}, func() float64 { return float64(s.CommitFailures.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "pushnode_store_damaged_entries_total", Help: "Stored entries that could not be decoded and were skipped (see pushnode check)."}, func() float64 { return float64(s.DamagedEntries.Load()) }),
	}
	for t := range numTransports {
		cs = append(cs,
			counter("pushnode_packets_received_total", "Client messages received.", prometheus.Labels{"transport": transportNames[t]}, &s.PacketsIn[t]),
			counter("pushnode_packets_sent_total", "Server messages sent.", prometheus.Labels{"transport": transportNames[t]}, &s.PacketsOut[t]))
	}
	for d := range numDrops {
		cs = append(cs, counter("pushnode_drops_total", "Packets, requests and connections dropped, by reason.", prometheus.Labels{"reason": dropNames[d]}, &s.Drops[d]))
	}
	for src := range numSources {
		for k := range 4 {
			kind := "invalid"
			if k > 0 {
				kind = state.Kind(k).String()
			}
			for r := range numResults {
				cs = append(cs, counter("pushnode_pushes_total", "Push requests by source, kind and result.",
					prometheus.Labels{"source": sourceNames[src], "kind": kind, "result": resultNames[r]}, &s.Pushes[src][k][r]))
			}
		}
	}
	for f := state.Queued; f <= state.Expired; f++ {
		cs = append(cs, counter("pushnode_deliveries_total", "Delivery events by fate.", prometheus.Labels{"fate": f.String()}, &s.Deliveries[f]))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func counter(name, help string, l prometheus.Labels, v *atomic.Uint64) prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: l}, func() float64 { return float64(v.Load()) })
}

// PushesBy sums push requests by result over sources and kinds.
func (s *Stats) PushesBy(r PushResult) uint64 {
	var n uint64
	for src := range numSources {
		for k := range 4 {
			n += s.Pushes[src][k][r].Load()
		}
	}
	return n
}

// DropsByName returns the drop counters keyed by reason.
func (s *Stats) DropsByName() map[string]uint64 {
	m := make(map[string]uint64, numDrops)
	for d := range numDrops {
		m[dropNames[d]] = s.Drops[d].Load()
	}
	return m
}

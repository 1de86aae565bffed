package peer

import (
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Drop is why a frame was not delivered.
type Drop uint8

const (
	DropLinkDown   Drop = iota // no link (or no session) to send it on
	DropQueueFull              // the link's send queue was full
	DropFlushed                // queued when the link broke
	DropStaleConn              // a RemoteConn from an earlier incarnation of the front
	DropMalformed              // a frame from the peer that does not decode
	DropUnexpected             // a frame type this side does not take
	DropLateAnswer             // an answer nobody waits for any more
	DropNoHandler              // a frame this side has no handler for
	numDrops
)

var dropNames = [numDrops]string{
	"link_down", "queue_full", "flushed", "stale_conn",
	"malformed", "unexpected", "late_answer", "no_handler",
}

func (d Drop) String() string { return dropNames[d] }

// counters of one link, updated with atomics on the hot paths.
type counters struct {
	framesOut, bytesOut, batchesOut atomic.Uint64
	framesIn, bytesIn, batchesIn    atomic.Uint64
	connects                        atomic.Uint64
	drops                           [numDrops]atomic.Uint64
}

func (c *counters) drop(d Drop) { c.drops[d].Add(1) }

// countOut counts one batch of frames sent.
func (c *counters) countOut(frames, bytes int) {
	c.batchesOut.Add(1)
	c.framesOut.Add(uint64(frames))
	c.bytesOut.Add(uint64(bytes))
}

// Side tells which end of a link the stats are from.
type Side string

const (
	Dialed   Side = "dialed"   // this pod dialed the peer (it is the front)
	Accepted Side = "accepted" // the peer dialed this pod (it is the home)
)

// LinkStats is a snapshot of one link's counters. Bytes count frames as
// encoded (headers included), not gRPC's own framing.
type LinkStats struct {
	Peer       int // the other pod's ordinal
	Side       Side
	Addr       string // the peer's address, as dialed or as seen
	Up         bool
	FramesOut  uint64
	BytesOut   uint64
	BatchesOut uint64
	FramesIn   uint64
	BytesIn    uint64
	BatchesIn  uint64
	Connects   uint64 // handshakes completed
	Drops      [numDrops]uint64
	LastError  string // why the link last went down or failed to come up
}

func (c *counters) snapshot(s *LinkStats) {
	s.FramesOut = c.framesOut.Load()
	s.BytesOut = c.bytesOut.Load()
	s.BatchesOut = c.batchesOut.Load()
	s.FramesIn = c.framesIn.Load()
	s.BytesIn = c.bytesIn.Load()
	s.BatchesIn = c.batchesIn.Load()
	s.Connects = c.connects.Load()
	for i := range s.Drops {
		s.Drops[i] = c.drops[i].Load()
	}
}

// Dropped is the count for one reason.
func (s *LinkStats) Dropped(d Drop) uint64 { return s.Drops[d] }

// Collector exposes link stats to Prometheus:
//
//	pushnode_peer_frames_total{peer,side,direction}
//	pushnode_peer_bytes_total{peer,side,direction}
//	pushnode_peer_batches_total{peer,side,direction}
//	pushnode_peer_drops_total{peer,side,reason}
//	pushnode_peer_connects_total{peer,side}
//	pushnode_peer_link_up{peer,side}
//	pushnode_peer_handshakes_refused_total
type Collector struct {
	links   func() []LinkStats
	refused func() uint64
}

// NewCollector reads links (typically every Link's and the Server's
// Stats) at each scrape; refused (may be nil) counts refused handshakes
// (Server.Refused).
func NewCollector(links func() []LinkStats, refused func() uint64) *Collector {
	return &Collector{links: links, refused: refused}
}

var (
	descFrames   = prometheus.NewDesc("pushnode_peer_frames_total", "Frames over peer links.", []string{"peer", "side", "direction"}, nil)
	descBytes    = prometheus.NewDesc("pushnode_peer_bytes_total", "Frame bytes over peer links.", []string{"peer", "side", "direction"}, nil)
	descBatches  = prometheus.NewDesc("pushnode_peer_batches_total", "Stream messages (batches of frames) over peer links.", []string{"peer", "side", "direction"}, nil)
	descDrops    = prometheus.NewDesc("pushnode_peer_drops_total", "Frames not delivered over peer links, by reason.", []string{"peer", "side", "reason"}, nil)
	descConnects = prometheus.NewDesc("pushnode_peer_connects_total", "Peer link handshakes completed.", []string{"peer", "side"}, nil)
	descUp       = prometheus.NewDesc("pushnode_peer_link_up", "1 while the peer link is up.", []string{"peer", "side"}, nil)
	descRefused  = prometheus.NewDesc("pushnode_peer_handshakes_refused_total", "Incoming peer streams refused (bad token, bad hello).", nil, nil)
)

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descFrames, descBytes, descBatches, descDrops, descConnects, descUp, descRefused} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for _, s := range c.links() {
		p, side := strconv.Itoa(s.Peer), string(s.Side)
		counter(descFrames, s.FramesOut, p, side, "out")
		counter(descFrames, s.FramesIn, p, side, "in")
		counter(descBytes, s.BytesOut, p, side, "out")
		counter(descBytes, s.BytesIn, p, side, "in")
		counter(descBatches, s.BatchesOut, p, side, "out")
		counter(descBatches, s.BatchesIn, p, side, "in")
		for d, v := range s.Drops {
			counter(descDrops, v, p, side, Drop(d).String())
		}
		counter(descConnects, s.Connects, p, side)
		up := 0.0
		if s.Up {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, up, p, side)
	}
	if c.refused != nil {
		counter(descRefused, c.refused())
	}
}

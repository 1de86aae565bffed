package reshard

import "github.com/prometheus/client_golang/prometheus"

// Metrics count what slot moves do at this pod.
type Metrics struct {
	SlotsMoved   prometheus.Counter
	RecordsMoved prometheus.Counter
	PushesMoved  prometheus.Counter
	Hold         prometheus.Histogram
	Moves        *prometheus.CounterVec
}

// NewMetrics registers the move metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		SlotsMoved: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushnode_reshard_slots_moved_total", Help: "Slots this pod handed to another pod."}),
		RecordsMoved: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushnode_reshard_records_moved_total", Help: "Client records this pod sent to the targets of its slot moves, the handoffs' tails included."}),
		PushesMoved: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushnode_reshard_pushes_moved_total", Help: "Stored pushes this pod sent to the targets of its slot moves."}),
		Hold: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "pushnode_reshard_hold_seconds", Help: "How long a slot move's handoff held its slots' pushes and phone packets.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}}),
		Moves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushnode_reshard_moves_total", Help: "Slot moves this pod was the source of, by how they ended."}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.SlotsMoved, m.RecordsMoved, m.PushesMoved, m.Hold, m.Moves)
	}
	return m
}

package peer

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
)

// The gRPC side: one bidirectional streaming method whose messages are
// batches of our own frames, carried by a codec of our own (no protoc).

const (
	serviceName = "ddpush.peer.v1.Peer"
	methodName  = "Link"
	fullMethod  = "/" + serviceName + "/" + methodName
	codecName   = "ddpush-peer"
)

// flowWindow is the HTTP/2 flow-control window of a link, stream and
// connection alike: as large as a default send queue, so a writer is not
// held back by window updates while its peer keeps up (measured: 64 KiB
// windows grown by gRPC's estimator cost about 20% more CPU per relayed
// frame and half the throughput), and small enough that a peer that
// stops reading holds at most 1 MiB per link in gRPC's buffers.
const flowWindow = 1 << 20

var streamDesc = grpc.StreamDesc{StreamName: methodName, ServerStreams: true, ClientStreams: true}

// batchMsg is one stream message: a batch of frames.
type batchMsg struct {
	b []byte
}

// codec moves batches as they are. Marshal copies the batch into a
// pooled buffer (gRPC frees it once written), so the writer can reuse
// its own buffer as soon as SendMsg returns; Unmarshal copies into the
// receiver's reusable buffer, which it owns until its next RecvMsg.
type codec struct{}

func (codec) Name() string { return codecName }

func (codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(*batchMsg)
	if !ok {
		return nil, fmt.Errorf("peer codec: cannot marshal %T", v)
	}
	return mem.BufferSlice{mem.Copy(m.b, mem.DefaultBufferPool())}, nil
}

// keepRecvBuffer is the largest receive buffer kept between messages;
// a larger one (after a burst) is let go.
const keepRecvBuffer = 256 << 10

func (codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*batchMsg)
	if !ok {
		return fmt.Errorf("peer codec: cannot unmarshal into %T", v)
	}
	n := data.Len()
	if cap(m.b) < n || cap(m.b) > keepRecvBuffer && n <= keepRecvBuffer {
		m.b = make([]byte, n, max(n, 4096))
	}
	m.b = m.b[:n]
	data.CopyTo(m.b)
	return nil
}

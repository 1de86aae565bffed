package wire

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// The sweeps below run every command byte with every body length through
// each decoder and check the outcome against the tables of
// docs/protocol.md, written out here independently of the codec. They
// exist because one command's body length can equal another's: an 8-byte
// custom payload is as long as a 0x11 mask, and must never be read as one.

// sweepLens are the body lengths every sweep tries: all of 0..40 (which
// holds the sizes of every fixed field: 8 for a mask, 16 for a uuid, 21
// and 29 for client messages), and the edges of the default maximum and
// of the length field.
func sweepLens() []int {
	var ls []int
	for n := 0; n <= 40; n++ {
		ls = append(ls, n)
	}
	return append(ls, DefaultMaxContentLen-1, DefaultMaxContentLen, DefaultMaxContentLen+1,
		MaxContentLenLimit, MaxContentLenLimit+1, MaxLengthField)
}

// filler is the content of every swept body: all 0xa5, so a body read as
// a mask would be 0xa5a5a5a5a5a5a5a5 and show. One byte past the longest
// body lets a sweep append a trailing byte without copying.
var filler = bytes.Repeat([]byte{0xa5}, PushHeaderLen+MaxLengthField+1)

// body is n filler bytes.
func body(n int) []byte { return filler[:n] }

// request writes a client or push header for an n-byte body in front of
// filler bytes in buf, and returns the request with one spare byte
// after it (req[:len(req)+1] is the request with a trailing byte).
func request(buf []byte, cmd byte, n int) []byte {
	copy(buf, hdr(1, 3, cmd, seqUUID, uint16(n)))
	return buf[:ClientHeaderLen+n]
}

func newRequestBuf() []byte { return bytes.Clone(filler) }

// clientTable: the body length each client command carries.
func clientTable(cmd byte) (int, bool) {
	switch cmd {
	case 0x00, 0x10, 0x20, 0xff:
		return 0, true
	case 0x11:
		return 8, true
	}
	return 0, false
}

func TestDecodeClientEveryCommandEveryLength(t *testing.T) {
	buf := newRequestBuf()
	for c := range 256 {
		cmd := byte(c)
		for _, n := range sweepLens() {
			in := request(buf, cmd, n)
			var m ClientMessage
			err := DecodeClient(in, &m)
			want, known := clientTable(cmd)
			if ok := known && n == want; ok != (err == nil) {
				t.Fatalf("cmd %#x with %d-byte body: err %v, want accepted %v", cmd, n, err, ok)
			}
			if err != nil {
				continue
			}
			if m.Cmd != cmd || m.AppID != 3 || m.UUID != seqUUID || !bytes.Equal(m.Body, body(n)) {
				t.Fatalf("cmd %#x with %d-byte body decoded as %+v", cmd, n, m)
			}
			wantMask := uint64(0)
			if cmd == CmdClassified {
				wantMask = 0xa5a5a5a5a5a5a5a5
			}
			if m.Mask() != wantMask {
				t.Fatalf("cmd %#x with %d-byte body: Mask() = %#x, want %#x", cmd, n, m.Mask(), wantMask)
			}
			// One byte more or less than declared is never a message.
			if err := DecodeClient(in[:len(in)+1], &m); err == nil {
				t.Fatalf("cmd %#x: a trailing byte was accepted", cmd)
			}
			if n > 0 {
				if err := DecodeClient(in[:len(in)-1], &m); err == nil {
					t.Fatalf("cmd %#x: a missing byte was accepted", cmd)
				}
			}
		}
	}
}

// serverTable: whether a server command may carry an n-byte body.
func serverTable(cmd byte, n int) bool {
	switch cmd {
	case 0x00, 0x10:
		return n == 0
	case 0x11:
		return n == 8
	case 0x20:
		return n >= 1
	}
	return false
}

func TestDecodeServerEveryCommandEveryLength(t *testing.T) {
	var in []byte
	for c := range 256 {
		cmd := byte(c)
		for _, n := range sweepLens() {
			in = AppendServer(in[:0], 4, cmd, body(n))
			if len(in) != ServerHeaderLen+n || int(binary.BigEndian.Uint16(in[3:5])) != n {
				t.Fatalf("AppendServer of %d bytes wrote length field % x", n, in[3:5])
			}
			var m ServerMessage
			err := DecodeServer(in, &m)
			if ok := serverTable(cmd, n); ok != (err == nil) {
				t.Fatalf("cmd %#x with %d-byte body: err %v, want accepted %v", cmd, n, err, ok)
			}
			if err != nil {
				continue
			}
			if m.Cmd != cmd || m.AppID != 4 || !bytes.Equal(m.Body, body(n)) {
				t.Fatalf("cmd %#x with %d-byte body decoded as cmd %#x appId %d, %d bytes", cmd, n, m.Cmd, m.AppID, len(m.Body))
			}
			wantMask := uint64(0)
			if cmd == CmdClassified {
				wantMask = 0xa5a5a5a5a5a5a5a5
			}
			if m.Mask() != wantMask {
				t.Fatalf("cmd %#x with %d-byte body: Mask() = %#x, want %#x", cmd, n, m.Mask(), wantMask)
			}
			if got := ServerFrameLen(in); got != len(in) {
				t.Fatalf("ServerFrameLen = %d, want %d", got, len(in))
			}
			if err := DecodeServer(append(in, 0), &m); err == nil {
				t.Fatalf("cmd %#x: a trailing byte was accepted", cmd)
			}
		}
	}
}

// pushTable: whether a push of cmd with an n-byte body is accepted by a
// node whose maximum content length is max.
func pushTable(cmd byte, n, max int) bool {
	switch cmd {
	case 0x10:
		return n == 0
	case 0x11:
		return n == 8
	case 0x20:
		return n >= 1 && n <= max
	}
	return false
}

func TestDecodePushEveryCommandEveryLength(t *testing.T) {
	// The maxima: the smallest allowed, the ones around a mask's 8 bytes,
	// the default and the largest.
	buf := newRequestBuf()
	for _, max := range []int{1, 7, 8, 9, DefaultMaxContentLen, MaxContentLenLimit} {
		for c := range 256 {
			cmd := byte(c)
			for _, n := range sweepLens() {
				in := request(buf, cmd, n)
				var p PushRequest
				err := DecodePush(in, max, &p)
				ok := pushTable(cmd, n, max)
				if ok != (err == nil) {
					t.Fatalf("max %d, cmd %#x with %d-byte body: err %v, want accepted %v", max, cmd, n, err, ok)
				}
				frame, ferr := PushFrameLen(in, max)
				if ok && (ferr != nil || frame != len(in)) {
					t.Fatalf("max %d, cmd %#x with %d-byte body: PushFrameLen = %d, %v for an accepted request", max, cmd, n, frame, ferr)
				}
				if ok && len(in) > MaxPushFrameLen(max) {
					t.Fatalf("max %d: accepted a %d-byte request, MaxPushFrameLen is %d", max, len(in), MaxPushFrameLen(max))
				}
				if err != nil {
					continue
				}
				wantMask := uint64(0)
				if cmd == CmdClassified {
					wantMask = 0xa5a5a5a5a5a5a5a5
				}
				if p.Cmd != cmd || p.UUID != seqUUID || !bytes.Equal(p.Body, body(n)) || p.Mask() != wantMask {
					t.Fatalf("max %d, cmd %#x with %d-byte body decoded as cmd %#x, %d bytes, mask %#x", max, cmd, n, p.Cmd, len(p.Body), p.Mask())
				}
				if err := DecodePush(in[:len(in)+1], max, &p); err == nil {
					t.Fatalf("max %d, cmd %#x: a trailing byte was accepted", max, cmd)
				}
			}
		}
	}
}

// A mask is read only from a 0x11, whatever the message type and even
// when a decoded value is filled in by hand.
func TestMaskOnlyFromClassified(t *testing.T) {
	b := body(8)
	for c := range 256 {
		cmd := byte(c)
		want := uint64(0)
		if cmd == CmdClassified {
			want = 0xa5a5a5a5a5a5a5a5
		}
		cm := ClientMessage{Cmd: cmd, Body: b}
		sm := ServerMessage{Cmd: cmd, Body: b}
		pr := PushRequest{Cmd: cmd, Body: b}
		if cm.Mask() != want || sm.Mask() != want || pr.Mask() != want {
			t.Fatalf("cmd %#x with an 8-byte body: masks %#x %#x %#x, want %#x", cmd, cm.Mask(), sm.Mask(), pr.Mask(), want)
		}
	}
}

func TestMaxPushFrameLen(t *testing.T) {
	for _, tt := range []struct{ max, want int }{
		{1, 29}, {7, 29}, {8, 29}, {9, 30}, {500, 521}, {MaxContentLenLimit, 21 + MaxContentLenLimit},
	} {
		if got := MaxPushFrameLen(tt.max); got != tt.want {
			t.Errorf("MaxPushFrameLen(%d) = %d, want %d", tt.max, got, tt.want)
		}
	}
}

// The largest custom message a node may promise fits one UDP datagram.
func TestMaxContentFitsOneDatagram(t *testing.T) {
	if got := len(AppendServer(nil, 0, CmdCustom, body(MaxContentLenLimit))); got != MaxUDPPayload {
		t.Fatalf("largest server message is %d bytes, the largest IPv4 UDP payload is %d", got, MaxUDPPayload)
	}
}

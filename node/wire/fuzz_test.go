package wire

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

// Seeds shared by the fuzz targets: every valid message of the tables and
// every malformed example above.
func seedClient(f *testing.F) {
	for _, b := range validClient {
		f.Add(b)
	}
	for _, tt := range badClient {
		f.Add(tt.in)
	}
}

func FuzzDecodeClient(f *testing.F) {
	seedClient(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		var m ClientMessage
		if err := DecodeClient(in, &m); err != nil {
			return
		}
		if len(in) > MaxClientMessageLen {
			t.Fatalf("accepted a %d-byte client message", len(in))
		}
		if want := ClientBodyLen(m.Cmd); want != len(m.Body) {
			t.Fatalf("cmd %#x accepted with %d-byte body", m.Cmd, len(m.Body))
		}
		if m.Cmd != CmdClassified && m.Mask() != 0 {
			t.Fatalf("cmd %#x read as mask %#x", m.Cmd, m.Mask())
		}
		if out := AppendClient(nil, m.AppID, m.Cmd, m.UUID, m.Body); !bytes.Equal(out, in) {
			t.Fatalf("re-encoding differs:\n in % x\nout % x", in, out)
		}
	})
}

func FuzzDecodePush(f *testing.F) {
	for _, b := range [][]byte{
		hdr(1, 3, 0x10, user10001, 0),
		cat(hdr(1, 3, 0x11, user10001, 8), mask8),
		cat(hdr(1, 3, 0x20, user10001, 5), []byte("hello")),
		cat(hdr(1, 0, 0x20, user10001, 1), []byte("x")),
		hdr(1, 3, 0x20, user10001, 0),
		hdr(1, 3, 0x00, user10001, 0),
		hdr(2, 3, 0x10, user10001, 0),
		cat(hdr(1, 3, 0x11, user10001, 7), mask8[:7]),
		cat(hdr(1, 3, 0x10, user10001, 1), []byte{0}),
		nil,
	} {
		f.Add(b, uint16(DefaultMaxContentLen))
	}
	f.Add(cat(hdr(1, 3, 0x20, user10001, 3), []byte("abc")), uint16(2))
	// A 0x11 on a node whose maximum is below 8, and 8-byte custom bodies.
	f.Add(cat(hdr(1, 3, 0x11, user10001, 8), mask8), uint16(1))
	f.Add(cat(hdr(1, 3, 0x20, user10001, 8), mask8), uint16(8))
	f.Add(cat(hdr(1, 3, 0x20, user10001, 8), mask8), uint16(7))
	f.Fuzz(func(t *testing.T, in []byte, max uint16) {
		maxContent := int(max)
		var p PushRequest
		err := DecodePush(in, maxContent, &p)
		// Framing and decoding must agree, for every command and every
		// maximum: what DecodePush accepts, PushFrameLen cuts whole and
		// a reader of MaxPushFrameLen bytes can hold.
		n, ferr := PushFrameLen(in, maxContent)
		if err != nil {
			return
		}
		if ferr != nil {
			t.Fatalf("DecodePush accepted cmd %#x (max %d) that PushFrameLen calls a violation: %v", p.Cmd, maxContent, ferr)
		}
		if n != len(in) {
			t.Fatalf("DecodePush accepted %d bytes, PushFrameLen says %d", len(in), n)
		}
		if n > MaxPushFrameLen(maxContent) {
			t.Fatalf("accepted a %d-byte frame, longer than MaxPushFrameLen(%d) = %d", n, maxContent, MaxPushFrameLen(maxContent))
		}
		if p.Cmd != CmdClassified && p.Mask() != 0 {
			t.Fatalf("cmd %#x read as mask %#x", p.Cmd, p.Mask())
		}
		switch p.Cmd {
		case CmdGeneral:
			if len(p.Body) != 0 {
				t.Fatal("general push with body")
			}
		case CmdClassified:
			if len(p.Body) != 8 {
				t.Fatal("classified push without 8 bytes")
			}
		case CmdCustom:
			if len(p.Body) < 1 || len(p.Body) > maxContent {
				t.Fatalf("custom push of %d bytes with max %d", len(p.Body), maxContent)
			}
		default:
			t.Fatalf("accepted cmd %#x", p.Cmd)
		}
		if out := AppendPush(nil, p.AppID, p.Cmd, p.UUID, p.Body); !bytes.Equal(out, in) {
			t.Fatalf("re-encoding differs:\n in % x\nout % x", in, out)
		}
	})
}

func FuzzDecodeServer(f *testing.F) {
	for _, b := range [][]byte{
		AppendServer(nil, 1, CmdHeartbeat, nil),
		AppendServer(nil, 0, CmdGeneral, nil),
		AppendServerMask(nil, 1, 0x8001020304050607),
		AppendServer(nil, 1, CmdCustom, []byte("payload")),
		{1, 4, 0x20, 0, 0},
		{1, 4, 0x11, 0, 7, 1, 2, 3, 4, 5, 6, 7},
		{2, 4, 0x00, 0, 0},
		{1, 4, 0xff, 0, 0},
		{1, 4},
		nil,
	} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var m ServerMessage
		if err := DecodeServer(in, &m); err != nil {
			return
		}
		if n := ServerFrameLen(in); n != len(in) {
			t.Fatalf("ServerFrameLen = %d for an accepted %d-byte message", n, len(in))
		}
		if out := AppendServer(nil, m.AppID, m.Cmd, m.Body); !bytes.Equal(out, in) {
			t.Fatalf("re-encoding differs:\n in % x\nout % x", in, out)
		}
		if m.Cmd == CmdClassified {
			if out := AppendServerMask(nil, m.AppID, m.Mask()); !bytes.Equal(out, in) {
				t.Fatalf("AppendServerMask differs:\n in % x\nout % x", in, out)
			}
		} else if m.Mask() != 0 {
			t.Fatalf("cmd %#x read as mask %#x", m.Cmd, m.Mask())
		}
	})
}

// streamEvent is what a TCP reader does with each frame: decode it, or
// drop it with a reason, or close the stream.
type streamEvent struct {
	frame string
	err   error
}

// readStream runs the reader loop of a TCP connection over in, delivered
// in chunks of the given sizes (cycled), and returns what it saw.
func readStream(t *testing.T, in []byte, chunks []int) []streamEvent {
	var evs []streamEvent
	var buf []byte
	pos, ci := 0, 0
	for {
		// Drain every whole frame the buffer holds.
		for {
			n, err := ClientFrameLen(buf)
			if err != nil {
				if !errors.Is(err, ErrBodyTooLong) {
					t.Fatalf("ClientFrameLen error %v", err)
				}
				return append(evs, streamEvent{frame: string(buf[:ClientHeaderLen]), err: err})
			}
			if n == 0 || len(buf) < n {
				break
			}
			if n < ClientHeaderLen || n > MaxClientMessageLen {
				t.Fatalf("ClientFrameLen = %d", n)
			}
			var m ClientMessage
			err = DecodeClient(buf[:n], &m)
			if err == nil {
				if out := AppendClient(nil, m.AppID, m.Cmd, m.UUID, m.Body); !bytes.Equal(out, buf[:n]) {
					t.Fatalf("re-encoding differs:\n in % x\nout % x", buf[:n], out)
				}
			} else if errors.Is(err, ErrShort) || errors.Is(err, ErrLength) {
				// The frame was cut to its declared length, so these
				// cannot happen: framing and decoding disagree.
				t.Fatalf("framed message rejected with %v", err)
			}
			evs = append(evs, streamEvent{frame: string(buf[:n]), err: err})
			buf = buf[n:]
		}
		if pos == len(in) {
			return evs
		}
		size := 1
		if len(chunks) > 0 {
			size = chunks[ci%len(chunks)]
			ci++
		}
		size = max(size, 1)
		size = min(size, len(in)-pos)
		buf = append(buf, in[pos:pos+size]...)
		pos += size
	}
}

func FuzzClientStream(f *testing.F) {
	var all []byte
	for _, k := range []string{"heartbeat", "ack general", "ack classified", "ack custom", "reset"} {
		all = append(all, validClient[k]...)
	}
	f.Add(all, uint64(1))
	f.Add(all, uint64(0x0d0e0f))
	f.Add(validClient["heartbeat"], uint64(21))
	for _, tt := range badClient {
		f.Add(cat(validClient["ack classified"], tt.in, validClient["heartbeat"]), uint64(7))
	}
	f.Add(cat(validClient["heartbeat"], hdr(1, 7, 0x00, seqUUID, 9), validClient["heartbeat"]), uint64(3))
	f.Fuzz(func(t *testing.T, in []byte, seed uint64) {
		// Chunk sizes come from the seed so the fuzzer can explore how a
		// TCP read splits frames, including mid-header and mid-body.
		rng := rand.New(rand.NewPCG(seed, seed>>32))
		chunks := make([]int, 1+rng.IntN(8))
		for i := range chunks {
			chunks[i] = 1 + rng.IntN(40)
		}
		got := readStream(t, in, chunks)
		// However the bytes are split, the reader must see the same
		// frames as when it gets them all at once.
		want := readStream(t, in, []int{len(in)})
		if len(got) != len(want) {
			t.Fatalf("chunked read saw %d frames, whole read %d (chunks %v)", len(got), len(want), chunks)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("frame %d differs: chunked %q/%v, whole %q/%v", i, got[i].frame, got[i].err, want[i].frame, want[i].err)
			}
		}
	})
}

// TestClientStreamSplitsEverywhere is the deterministic cousin of
// FuzzClientStream: every legal message back to back, with a bad one in
// the middle, read one byte at a time and at every other chunk size.
func TestClientStreamSplitsEverywhere(t *testing.T) {
	in := cat(
		validClient["heartbeat"],
		validClient["ack classified"],
		cat(hdr(1, 7, 0x00, seqUUID, 1), []byte{0}), // framed, then dropped
		hdr(2, 7, 0x10, seqUUID, 0),                 // framed, then dropped
		validClient["ack custom"],
		hdr(1, 7, 0x00, seqUUID, 9), // closes the stream
		validClient["reset"],        // never read
	)
	wantErrs := []error{nil, nil, ErrBodyForCmd, ErrVersion, nil, ErrBodyTooLong}
	for size := 1; size <= len(in); size++ {
		evs := readStream(t, in, []int{size})
		if len(evs) != len(wantErrs) {
			t.Fatalf("chunk %d: %d events, want %d", size, len(evs), len(wantErrs))
		}
		for i, ev := range evs {
			if !errors.Is(ev.err, wantErrs[i]) || (wantErrs[i] == nil && ev.err != nil) {
				t.Errorf("chunk %d event %d: err %v, want %v", size, i, ev.err, wantErrs[i])
			}
		}
	}
}

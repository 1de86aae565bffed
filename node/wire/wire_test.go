package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

// The uuid of user "10001" as clients compute it: md5("10001").
var user10001 = UUID{
	0xfa, 0x0f, 0xbc, 0x1d, 0xc4, 0x39, 0x2c, 0x39,
	0x70, 0xe0, 0xe5, 0xc2, 0x0e, 0x5a, 0x0e, 0xe8,
}

// A uuid whose bytes are all distinct, so that any misplaced byte shows.
var seqUUID = UUID{
	0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
	0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
}

// hdr writes a 21-byte client/push header by hand, independently of
// AppendClient, so that the codec is checked against the table and not
// against itself.
func hdr(version, appID, cmd byte, u UUID, declared uint16) []byte {
	b := []byte{version, appID, cmd}
	b = append(b, u[:]...)
	return append(b, byte(declared>>8), byte(declared))
}

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

var (
	mask8 = []byte{0x80, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07}
	// validClient holds one valid client message of every cmd of
	// docs/protocol.md section 2.
	validClient = map[string][]byte{
		"heartbeat":      hdr(1, 7, 0x00, seqUUID, 0),
		"ack general":    hdr(1, 7, 0x10, seqUUID, 0),
		"ack classified": cat(hdr(1, 7, 0x11, seqUUID, 8), mask8),
		"ack custom":     hdr(1, 7, 0x20, seqUUID, 0),
		"reset":          hdr(1, 7, 0xff, seqUUID, 0),
	}
	// badClient holds a malformed client message of every kind, with the
	// reason it must be dropped for.
	badClient = []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"one byte", []byte{1}, ErrShort},
		{"truncated header 20 bytes", hdr(1, 7, 0x00, seqUUID, 0)[:20], ErrShort},
		{"version 0", hdr(0, 7, 0x00, seqUUID, 0), ErrVersion},
		{"version 2", hdr(2, 7, 0x00, seqUUID, 0), ErrVersion},
		{"version 0xff", hdr(0xff, 7, 0x00, seqUUID, 0), ErrVersion},
		{"cmd 0x01", hdr(1, 7, 0x01, seqUUID, 0), ErrCommand},
		{"cmd 0x12", hdr(1, 7, 0x12, seqUUID, 0), ErrCommand},
		{"cmd 0x21", hdr(1, 7, 0x21, seqUUID, 0), ErrCommand},
		{"cmd 0xfe", hdr(1, 7, 0xfe, seqUUID, 0), ErrCommand},
		{"heartbeat with trailing byte", cat(hdr(1, 7, 0x00, seqUUID, 0), []byte{0}), ErrLength},
		{"heartbeat declaring 1 but carrying 0", hdr(1, 7, 0x00, seqUUID, 1), ErrLength},
		{"heartbeat with 1-byte body", cat(hdr(1, 7, 0x00, seqUUID, 1), []byte{9}), ErrBodyForCmd},
		{"ack general with body", cat(hdr(1, 7, 0x10, seqUUID, 1), []byte{9}), ErrBodyForCmd},
		{"ack classified with 7 bytes", cat(hdr(1, 7, 0x11, seqUUID, 7), mask8[:7]), ErrBodyForCmd},
		{"ack classified with 9 bytes", cat(hdr(1, 7, 0x11, seqUUID, 9), mask8, []byte{8}), ErrBodyForCmd},
		{"ack classified with no body", hdr(1, 7, 0x11, seqUUID, 0), ErrBodyForCmd},
		{"ack classified truncated body", cat(hdr(1, 7, 0x11, seqUUID, 8), mask8[:7]), ErrLength},
		{"ack classified with extra byte", cat(hdr(1, 7, 0x11, seqUUID, 8), mask8, []byte{0}), ErrLength},
		{"ack custom with body", cat(hdr(1, 7, 0x20, seqUUID, 2), []byte{1, 2}), ErrBodyForCmd},
		{"reset with body", cat(hdr(1, 7, 0xff, seqUUID, 1), []byte{1}), ErrBodyForCmd},
		{"declared 0xffff", hdr(1, 7, 0x00, seqUUID, 0xffff), ErrLength},
		{"garbage", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), ErrVersion},
		{"zeros", make([]byte, 21), ErrVersion},
	}
)

func TestDecodeClientAcceptsEveryCommand(t *testing.T) {
	tests := []struct {
		name     string
		in       []byte
		appID    byte
		cmd      byte
		body     []byte
		wantMask uint64
	}{
		{"heartbeat", hdr(1, 7, 0x00, user10001, 0), 7, CmdHeartbeat, nil, 0},
		{"ack general", hdr(1, 1, 0x10, user10001, 0), 1, CmdGeneral, nil, 0},
		{"ack classified", cat(hdr(1, 255, 0x11, user10001, 8), mask8), 255, CmdClassified, mask8, 0x8001020304050607},
		{"ack classified all bits", cat(hdr(1, 2, 0x11, user10001, 8), bytes.Repeat([]byte{0xff}, 8)), 2, CmdClassified, bytes.Repeat([]byte{0xff}, 8), ^uint64(0)},
		{"ack custom", hdr(1, 3, 0x20, user10001, 0), 3, CmdCustom, nil, 0},
		{"reset", hdr(1, 4, 0xff, user10001, 0), 4, CmdReset, nil, 0},
		// appId 0 is outside 1..255 but the node only echoes it, so it
		// must not be a reason to drop a heartbeat.
		{"heartbeat appId 0", hdr(1, 0, 0x00, user10001, 0), 0, CmdHeartbeat, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := ClientMessage{AppID: 99, Cmd: 99, Body: []byte("stale")}
			if err := DecodeClient(tt.in, &m); err != nil {
				t.Fatalf("DecodeClient(% x) = %v, want nil", tt.in, err)
			}
			if m.AppID != tt.appID || m.Cmd != tt.cmd || m.UUID != user10001 {
				t.Errorf("got appId %d cmd %#x uuid %s, want %d %#x %s", m.AppID, m.Cmd, m.UUID, tt.appID, tt.cmd, user10001)
			}
			if len(m.Body) != len(tt.body) || !bytes.Equal(m.Body, tt.body) {
				t.Errorf("body = % x, want % x", m.Body, tt.body)
			}
			if got := m.Mask(); got != tt.wantMask {
				t.Errorf("Mask() = %#x, want %#x", got, tt.wantMask)
			}
		})
	}
}

func TestDecodeClientRejectsMalformed(t *testing.T) {
	for _, tt := range badClient {
		t.Run(tt.name, func(t *testing.T) {
			want := ClientMessage{AppID: 42, Cmd: 0x42, UUID: user10001, Body: []byte("keep")}
			m := want
			err := DecodeClient(tt.in, &m)
			if !errors.Is(err, tt.want) {
				t.Fatalf("DecodeClient(% x) = %v, want %v", tt.in, err, tt.want)
			}
			// A rejected datagram must not leave half-decoded fields
			// behind for a caller that reuses the message.
			if m.AppID != want.AppID || m.Cmd != want.Cmd || m.UUID != want.UUID || string(m.Body) != "keep" {
				t.Errorf("rejected decode modified the message: %+v", m)
			}
		})
	}
}

func TestDecodeClientBodyAliasesInput(t *testing.T) {
	in := cat(hdr(1, 7, 0x11, seqUUID, 8), mask8)
	var m ClientMessage
	if err := DecodeClient(in, &m); err != nil {
		t.Fatal(err)
	}
	// The doc promises Body aliases the buffer (the zero-alloc path relies
	// on it); callers are told to copy.
	in[21] = 0x00
	if m.Body[0] != 0x00 {
		t.Error("Body does not alias the input buffer")
	}
}

func TestClientMaskNeedsEightBytes(t *testing.T) {
	for _, n := range []int{0, 7, 9} {
		m := ClientMessage{Cmd: CmdClassified, Body: make([]byte, n)}
		for i := range m.Body {
			m.Body[i] = 0xff
		}
		if got := m.Mask(); got != 0 {
			t.Errorf("Mask() with %d-byte body = %#x, want 0", n, got)
		}
	}
}

func TestClientBodyLen(t *testing.T) {
	for c := range 256 {
		cmd := byte(c)
		want := -1
		switch cmd {
		case 0x00, 0x10, 0x20, 0xff:
			want = 0
		case 0x11:
			want = 8
		}
		if got := ClientBodyLen(cmd); got != want {
			t.Errorf("ClientBodyLen(%#x) = %d, want %d", cmd, got, want)
		}
	}
}

func TestDecodeClientAcceptsExactlyTheTableCommands(t *testing.T) {
	for c := range 256 {
		cmd := byte(c)
		n := uint16(0)
		if cmd == 0x11 {
			n = 8
		}
		in := cat(hdr(1, 1, cmd, seqUUID, n), make([]byte, n))
		var m ClientMessage
		err := DecodeClient(in, &m)
		valid := cmd == 0x00 || cmd == 0x10 || cmd == 0x11 || cmd == 0x20 || cmd == 0xff
		if valid && err != nil {
			t.Errorf("cmd %#x rejected: %v", cmd, err)
		}
		if !valid && !errors.Is(err, ErrCommand) {
			t.Errorf("cmd %#x: err = %v, want ErrCommand", cmd, err)
		}
	}
}

func TestAppendClientIsByteExact(t *testing.T) {
	tests := []struct {
		name  string
		appID byte
		cmd   byte
		body  []byte
		want  []byte
	}{
		{"heartbeat", 5, CmdHeartbeat, nil, []byte{
			0x01, 0x05, 0x00,
			0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
			0x00, 0x00,
		}},
		{"ack classified", 5, CmdClassified, mask8, []byte{
			0x01, 0x05, 0x11,
			0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
			0x00, 0x08,
			0x80, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte("xx")
			got := AppendClient(append([]byte(nil), prefix...), tt.appID, tt.cmd, seqUUID, tt.body)
			if !bytes.Equal(got, append(prefix, tt.want...)) {
				t.Errorf("AppendClient =\n% x\nwant\n% x", got, append(prefix, tt.want...))
			}
		})
	}
}

func TestAppendServerIsByteExact(t *testing.T) {
	payload := []byte("hello")
	long := bytes.Repeat([]byte{'z'}, 300) // 300 = 0x012c: both length bytes matter
	tests := []struct {
		name string
		got  []byte
		want []byte
	}{
		{"heartbeat answer", AppendServer(nil, 9, CmdHeartbeat, nil), []byte{0x01, 0x09, 0x00, 0x00, 0x00}},
		{"general notice", AppendServer(nil, 9, CmdGeneral, nil), []byte{0x01, 0x09, 0x10, 0x00, 0x00}},
		{"general notice appId 0", AppendServer(nil, 0, CmdGeneral, nil), []byte{0x01, 0x00, 0x10, 0x00, 0x00}},
		{"classified via AppendServerMask", AppendServerMask(nil, 9, 0x0102030405060708),
			[]byte{0x01, 0x09, 0x11, 0x00, 0x08, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08}},
		{"classified bit 0 only", AppendServerMask(nil, 1, 1),
			[]byte{0x01, 0x01, 0x11, 0x00, 0x08, 0, 0, 0, 0, 0, 0, 0, 0x01}},
		{"classified bit 63 only", AppendServerMask(nil, 1, 1<<63),
			[]byte{0x01, 0x01, 0x11, 0x00, 0x08, 0x80, 0, 0, 0, 0, 0, 0, 0}},
		{"classified via AppendServer", AppendServer(nil, 9, CmdClassified, []byte{1, 2, 3, 4, 5, 6, 7, 8}),
			[]byte{0x01, 0x09, 0x11, 0x00, 0x08, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08}},
		{"custom", AppendServer(nil, 200, CmdCustom, payload),
			[]byte{0x01, 0xc8, 0x20, 0x00, 0x05, 'h', 'e', 'l', 'l', 'o'}},
		{"custom 300 bytes", AppendServer(nil, 1, CmdCustom, long),
			cat([]byte{0x01, 0x01, 0x20, 0x01, 0x2c}, long)},
		{"appends after existing bytes", AppendServer([]byte{0xaa}, 9, CmdHeartbeat, nil),
			[]byte{0xaa, 0x01, 0x09, 0x00, 0x00, 0x00}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !bytes.Equal(tt.got, tt.want) {
				t.Errorf("got\n% x\nwant\n% x", tt.got, tt.want)
			}
		})
	}
}

func TestAppendPushIsByteExact(t *testing.T) {
	tests := []struct {
		name  string
		appID byte
		cmd   byte
		body  []byte
		want  []byte
	}{
		{"general", 3, CmdGeneral, nil, []byte{
			0x01, 0x03, 0x10,
			0xfa, 0x0f, 0xbc, 0x1d, 0xc4, 0x39, 0x2c, 0x39, 0x70, 0xe0, 0xe5, 0xc2, 0x0e, 0x5a, 0x0e, 0xe8,
			0x00, 0x00,
		}},
		{"classified", 3, CmdClassified, []byte{0, 0, 0, 0, 0, 0, 0x01, 0x00}, []byte{
			0x01, 0x03, 0x11,
			0xfa, 0x0f, 0xbc, 0x1d, 0xc4, 0x39, 0x2c, 0x39, 0x70, 0xe0, 0xe5, 0xc2, 0x0e, 0x5a, 0x0e, 0xe8,
			0x00, 0x08,
			0, 0, 0, 0, 0, 0, 0x01, 0x00,
		}},
		{"custom", 3, CmdCustom, []byte("hi"), []byte{
			0x01, 0x03, 0x20,
			0xfa, 0x0f, 0xbc, 0x1d, 0xc4, 0x39, 0x2c, 0x39, 0x70, 0xe0, 0xe5, 0xc2, 0x0e, 0x5a, 0x0e, 0xe8,
			0x00, 0x02, 'h', 'i',
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := AppendPush(nil, tt.appID, tt.cmd, user10001, tt.body)
			if !bytes.Equal(got, tt.want) {
				t.Errorf("AppendPush =\n% x\nwant\n% x", got, tt.want)
			}
		})
	}
}

func TestClientFrameLen(t *testing.T) {
	full := cat(hdr(1, 7, 0x11, seqUUID, 8), mask8)
	tests := []struct {
		name    string
		in      []byte
		want    int
		wantErr error
	}{
		{"empty", nil, 0, nil},
		{"20 bytes", full[:20], 0, nil},
		{"header of 0x11", full[:21], 29, nil},
		{"whole 0x11", full, 29, nil},
		{"header of heartbeat", hdr(1, 7, 0x00, seqUUID, 0), 21, nil},
		// 8 is legal for the stream even for a heartbeat: DecodeClient
		// drops the frame, the stream stays in sync.
		{"declared 8 on heartbeat", hdr(1, 7, 0x00, seqUUID, 8), 29, nil},
		{"declared 9", hdr(1, 7, 0x11, seqUUID, 9), 0, ErrBodyTooLong},
		{"declared 0x0100", hdr(1, 7, 0x11, seqUUID, 0x0100), 0, ErrBodyTooLong},
		{"declared 0xffff", hdr(1, 7, 0x00, seqUUID, 0xffff), 0, ErrBodyTooLong},
		// Framing only reads the length: version and cmd are judged when
		// the whole frame is decoded.
		{"bad version still framed", hdr(9, 7, 0x00, seqUUID, 0), 21, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ClientFrameLen(tt.in)
			if got != tt.want || !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Errorf("ClientFrameLen = %d, %v; want %d, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestDecodeServer(t *testing.T) {
	good := []struct {
		name  string
		in    []byte
		appID byte
		cmd   byte
		body  []byte
		mask  uint64
	}{
		{"heartbeat answer", []byte{1, 4, 0x00, 0, 0}, 4, CmdHeartbeat, nil, 0},
		{"general", []byte{1, 0, 0x10, 0, 0}, 0, CmdGeneral, nil, 0},
		{"classified", []byte{1, 4, 0x11, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8}, 4, CmdClassified, []byte{1, 2, 3, 4, 5, 6, 7, 8}, 0x0102030405060708},
		{"custom one byte", []byte{1, 4, 0x20, 0, 1, 'x'}, 4, CmdCustom, []byte("x"), 0},
	}
	for _, tt := range good {
		t.Run(tt.name, func(t *testing.T) {
			var m ServerMessage
			if err := DecodeServer(tt.in, &m); err != nil {
				t.Fatalf("DecodeServer(% x) = %v", tt.in, err)
			}
			if m.AppID != tt.appID || m.Cmd != tt.cmd || !bytes.Equal(m.Body, tt.body) || m.Mask() != tt.mask {
				t.Errorf("got %+v mask %#x", m, m.Mask())
			}
		})
	}
	bad := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"4 bytes", []byte{1, 4, 0, 0}, ErrShort},
		{"version 2", []byte{2, 4, 0x00, 0, 0}, ErrVersion},
		{"cmd 0xff", []byte{1, 4, 0xff, 0, 0}, ErrCommand},
		{"cmd 0x01", []byte{1, 4, 0x01, 0, 0}, ErrCommand},
		{"length mismatch", []byte{1, 4, 0x20, 0, 2, 'x'}, ErrLength},
		{"trailing byte", []byte{1, 4, 0x00, 0, 0, 0}, ErrLength},
		{"heartbeat with body", []byte{1, 4, 0x00, 0, 1, 0}, ErrBodyForCmd},
		{"general with body", []byte{1, 4, 0x10, 0, 1, 0}, ErrBodyForCmd},
		{"classified with 7", []byte{1, 4, 0x11, 0, 7, 1, 2, 3, 4, 5, 6, 7}, ErrBodyForCmd},
		{"classified with 9", []byte{1, 4, 0x11, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9}, ErrBodyForCmd},
		// DDPush clients reject an empty 0x20; so does our test client.
		{"empty custom", []byte{1, 4, 0x20, 0, 0}, ErrBodyForCmd},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			var m ServerMessage
			if err := DecodeServer(tt.in, &m); !errors.Is(err, tt.want) {
				t.Errorf("DecodeServer(% x) = %v, want %v", tt.in, err, tt.want)
			}
		})
	}
}

func TestServerFrameLen(t *testing.T) {
	tests := []struct {
		in   []byte
		want int
	}{
		{nil, 0},
		{[]byte{1, 0, 0x20, 0x01}, 0},
		{[]byte{1, 0, 0x00, 0, 0}, 5},
		{[]byte{1, 0, 0x20, 0x01, 0x2c}, 5 + 300},
		{[]byte{1, 0, 0x20, 0xff, 0xff}, 5 + 65535},
	}
	for _, tt := range tests {
		if got := ServerFrameLen(tt.in); got != tt.want {
			t.Errorf("ServerFrameLen(% x) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestPushFrameLen(t *testing.T) {
	tests := []struct {
		name       string
		in         []byte
		maxContent int
		want       int
		wantErr    error
	}{
		{"empty", nil, 500, 0, nil},
		{"20 bytes", hdr(1, 1, 0x20, seqUUID, 5)[:20], 500, 0, nil},
		{"general", hdr(1, 1, 0x10, seqUUID, 0), 500, 21, nil},
		{"custom at the max", hdr(1, 1, 0x20, seqUUID, 500), 500, 521, nil},
		{"custom one over the max", hdr(1, 1, 0x20, seqUUID, 501), 500, 0, ErrBodyTooLong},
		{"custom 0xffff with max 0xffff", hdr(1, 1, 0x20, seqUUID, 0xffff), MaxLengthField, 21 + 0xffff, nil},
		{"small max", hdr(1, 1, 0x20, seqUUID, 11), 10, 0, ErrBodyTooLong},
		// The maximum bounds custom payloads; a 0x11 always has its 8.
		{"classified with max 1", hdr(1, 1, 0x11, seqUUID, 8), 1, 29, nil},
		{"classified with max 7", hdr(1, 1, 0x11, seqUUID, 8), 7, 29, nil},
		{"classified declaring 9 with max 7", hdr(1, 1, 0x11, seqUUID, 9), 7, 0, ErrBodyTooLong},
		{"custom of 8 with max 7", hdr(1, 1, 0x20, seqUUID, 8), 7, 0, ErrBodyTooLong},
		{"general declaring 8 with max 7", hdr(1, 1, 0x10, seqUUID, 8), 7, 0, ErrBodyTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PushFrameLen(tt.in, tt.maxContent)
			if got != tt.want || !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Errorf("PushFrameLen = %d, %v; want %d, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestDecodePushAccepts(t *testing.T) {
	tests := []struct {
		name       string
		in         []byte
		maxContent int
		appID      byte
		cmd        byte
		body       []byte
		mask       uint64
	}{
		{"general", hdr(1, 3, 0x10, user10001, 0), 500, 3, CmdGeneral, nil, 0},
		{"classified", cat(hdr(1, 3, 0x11, user10001, 8), mask8), 500, 3, CmdClassified, mask8, 0x8001020304050607},
		// A zero mask is well formed: the Java server answers 0.
		{"classified zero bits", cat(hdr(1, 3, 0x11, user10001, 8), make([]byte, 8)), 500, 3, CmdClassified, make([]byte, 8), 0},
		{"custom 1 byte", cat(hdr(1, 3, 0x20, user10001, 1), []byte("a")), 500, 3, CmdCustom, []byte("a"), 0},
		{"custom at max", cat(hdr(1, 3, 0x20, user10001, 500), bytes.Repeat([]byte("m"), 500)), 500, 3, CmdCustom, bytes.Repeat([]byte("m"), 500), 0},
		// The Java server does not check the appId, so neither do we.
		{"appId 0", hdr(1, 0, 0x10, user10001, 0), 500, 0, CmdGeneral, nil, 0},
		{"appId 255", hdr(1, 255, 0x10, user10001, 0), 500, 255, CmdGeneral, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p PushRequest
			if err := DecodePush(tt.in, tt.maxContent, &p); err != nil {
				t.Fatalf("DecodePush = %v", err)
			}
			if p.AppID != tt.appID || p.Cmd != tt.cmd || p.UUID != user10001 || !bytes.Equal(p.Body, tt.body) || p.Mask() != tt.mask {
				t.Errorf("got %+v mask %#x", p, p.Mask())
			}
		})
	}
}

func TestDecodePushRejects(t *testing.T) {
	tests := []struct {
		name       string
		in         []byte
		maxContent int
		want       error
	}{
		{"empty", nil, 500, ErrShort},
		{"truncated header", hdr(1, 3, 0x10, user10001, 0)[:20], 500, ErrShort},
		{"version 0", hdr(0, 3, 0x10, user10001, 0), 500, ErrVersion},
		{"version 2", hdr(2, 3, 0x10, user10001, 0), 500, ErrVersion},
		// A heartbeat, ack-only or reset command is not a push.
		{"cmd 0x00", hdr(1, 3, 0x00, user10001, 0), 500, ErrCommand},
		{"cmd 0xff", hdr(1, 3, 0xff, user10001, 0), 500, ErrCommand},
		{"cmd 0x12", hdr(1, 3, 0x12, user10001, 0), 500, ErrCommand},
		{"length mismatch", hdr(1, 3, 0x20, user10001, 5), 500, ErrLength},
		{"trailing byte", cat(hdr(1, 3, 0x10, user10001, 0), []byte{0}), 500, ErrLength},
		{"general with body", cat(hdr(1, 3, 0x10, user10001, 1), []byte{1}), 500, ErrBodyForCmd},
		{"classified with 0", hdr(1, 3, 0x11, user10001, 0), 500, ErrBodyForCmd},
		{"classified with 7", cat(hdr(1, 3, 0x11, user10001, 7), mask8[:7]), 500, ErrBodyForCmd},
		{"classified with 9", cat(hdr(1, 3, 0x11, user10001, 9), mask8, []byte{0}), 500, ErrBodyForCmd},
		{"custom empty", hdr(1, 3, 0x20, user10001, 0), 500, ErrBodyForCmd},
		{"custom over max", cat(hdr(1, 3, 0x20, user10001, 501), make([]byte, 501)), 500, ErrBodyTooLong},
		{"custom over small max", cat(hdr(1, 3, 0x20, user10001, 3), []byte("abc")), 2, ErrBodyTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p PushRequest
			if err := DecodePush(tt.in, tt.maxContent, &p); !errors.Is(err, tt.want) {
				t.Errorf("DecodePush(% x) = %v, want %v", tt.in, err, tt.want)
			}
		})
	}
}

func TestUUIDStringRoundTrip(t *testing.T) {
	const md5Of10001 = "fa0fbc1dc4392c3970e0e5c20e5a0ee8"
	if got := user10001.String(); got != md5Of10001 {
		t.Fatalf("String() = %q, want %q", got, md5Of10001)
	}
	for _, s := range []string{md5Of10001, strings.ToUpper(md5Of10001), "FA0fbc1dC4392c3970E0e5c20e5a0eE8"} {
		u, err := ParseUUID(s)
		if err != nil {
			t.Errorf("ParseUUID(%q) = %v", s, err)
			continue
		}
		if u != user10001 {
			t.Errorf("ParseUUID(%q) = %s, want %s", s, u, user10001)
		}
	}
	for _, u := range []UUID{{}, seqUUID, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}} {
		got, err := ParseUUID(u.String())
		if err != nil || got != u {
			t.Errorf("ParseUUID(%q) = %s, %v", u.String(), got, err)
		}
	}
	if got := string(seqUUID.AppendHex([]byte("id="))); got != "id=00112233445566778899aabbccddeeff" {
		t.Errorf("AppendHex = %q", got)
	}
}

func TestParseUUIDRejects(t *testing.T) {
	for _, s := range []string{
		"",
		"fa0fbc1dc4392c3970e0e5c20e5a0ee",   // 31
		"fa0fbc1dc4392c3970e0e5c20e5a0ee8a", // 33
		"fa0fbc1d-c439-2c39-70e0-e5c20e5a0ee8",
		"ga0fbc1dc4392c3970e0e5c20e5a0ee8",
		"fa0fbc1dc4392c3970e0e5c20e5a0eeg",
		"fa0fbc1dc4392c3970e0e5c20e5a0ee ",
		"0xfbc1dc4392c3970e0e5c20e5a0ee8aa",
		"fa0fbc1dc4392c3970e0e5c20e5a0e\u00e9", // 32 bytes, non-ASCII
	} {
		u, err := ParseUUID(s)
		if !errors.Is(err, ErrBadUUID) {
			t.Errorf("ParseUUID(%q) = %v, want ErrBadUUID", s, err)
		}
		if u != (UUID{}) {
			t.Errorf("ParseUUID(%q) returned non-zero uuid %s with its error", s, u)
		}
	}
}

func TestDecodeClientDoesNotAllocate(t *testing.T) {
	in := cat(hdr(1, 7, 0x11, seqUUID, 8), mask8)
	hb := hdr(1, 7, 0x00, seqUUID, 0)
	bad := hdr(2, 7, 0x00, seqUUID, 0)
	var m ClientMessage
	allocs := testing.AllocsPerRun(1000, func() {
		if DecodeClient(in, &m) != nil || DecodeClient(hb, &m) != nil || DecodeClient(bad, &m) == nil {
			panic("unexpected result")
		}
		if _, err := ClientFrameLen(in); err != nil {
			panic(err)
		}
	})
	if allocs != 0 {
		t.Errorf("DecodeClient allocates %v times per run, want 0", allocs)
	}
}

func BenchmarkDecodeClient(b *testing.B) {
	in := hdr(1, 7, 0x00, seqUUID, 0)
	var m ClientMessage
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if err := DecodeClient(in, &m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeClientClassifiedAck(b *testing.B) {
	in := cat(hdr(1, 7, 0x11, seqUUID, 8), mask8)
	var m ClientMessage
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if err := DecodeClient(in, &m); err != nil {
			b.Fatal(err)
		}
	}
}

// The length field is big-endian; a little-endian reader would see 0x0800
// for a 0x11 ack's 8 and reject every classified ack.
func TestLengthFieldIsBigEndian(t *testing.T) {
	in := cat(hdr(1, 7, 0x11, seqUUID, 8), mask8)
	if in[19] != 0 || in[20] != 8 {
		t.Fatalf("test header is wrong: % x", in[19:21])
	}
	if n, err := ClientFrameLen(in); n != 29 || err != nil {
		t.Errorf("ClientFrameLen = %d, %v", n, err)
	}
	swapped := append([]byte(nil), in...)
	binary.LittleEndian.PutUint16(swapped[19:21], 8)
	var m ClientMessage
	if err := DecodeClient(swapped, &m); err == nil {
		t.Error("little-endian length accepted")
	}
}

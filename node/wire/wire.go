// Package wire encodes and decodes the DDPush v1 wire protocol: client
// messages (phone to node, port 9966), server messages (node to phone) and
// push requests (app server to node, port 9999), as docs/protocol.md
// describes them. It does no I/O and never allocates on the decode path,
// so the heartbeat path can use it per packet.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Version is the only protocol version DDPush v1 peers speak.
const Version = 1

// Commands shared by client messages, server messages and push requests.
const (
	CmdHeartbeat  = 0x00
	CmdGeneral    = 0x10
	CmdClassified = 0x11
	CmdCustom     = 0x20
	CmdReset      = 0xff
)

// Sizes fixed by the protocol.
const (
	UUIDLen = 16
	// ClientHeaderLen is version, appId, cmd, uuid and the body length.
	ClientHeaderLen = 21
	// MaxClientMessageLen is the largest legal client message (a 0x11 ack).
	MaxClientMessageLen = ClientHeaderLen + 8
	// MaxClientBodyLen is the largest body a client message may declare;
	// over TCP a larger declaration is a protocol violation.
	MaxClientBodyLen = MaxClientMessageLen - ClientHeaderLen
	ServerHeaderLen  = 5
	PushHeaderLen    = 21
	// MaskLen is the body of every 0x11 message: a 64-bit mask.
	MaskLen = 8
	// DefaultMaxContentLen is the Java server's PUSH_MSG_MAX_CONTENT_LEN.
	DefaultMaxContentLen = 500
	// MaxLengthField is the largest body length the 16-bit field holds.
	MaxLengthField = 65535
	// MaxUDPPayload is the largest UDP payload over IPv4 (65535 less the
	// 20-byte IP and 8-byte UDP headers); IPv6 allows a little more.
	MaxUDPPayload = 65507
	// MaxContentLenLimit is the largest custom payload a node can promise
	// to deliver: its server message (5-byte header and payload) must fit
	// one UDP datagram. Over TCP and on the push port the length field
	// alone would allow MaxLengthField.
	MaxContentLenLimit = MaxUDPPayload - ServerHeaderLen
)

// Push answers on port 9999.
const (
	PushAccepted byte = 0
	PushRejected byte = 1
)

// UUID is a client's 16-byte identity.
type UUID [UUIDLen]byte

const hexDigits = "0123456789abcdef"

// String renders the uuid as 32 lowercase hex characters.
func (u UUID) String() string {
	var b [32]byte
	u.AppendHex(b[:0])
	return string(b[:])
}

// AppendHex appends the 32-character lowercase hex form of u to dst.
func (u UUID) AppendHex(dst []byte) []byte {
	for _, c := range u {
		dst = append(dst, hexDigits[c>>4], hexDigits[c&0x0f])
	}
	return dst
}

// ErrBadUUID is returned by ParseUUID for anything but 32 hex characters.
var ErrBadUUID = errors.New("uuid must be 32 hex characters")

// ParseUUID reads a uuid from its 32-character hex form (either case).
func ParseUUID(s string) (UUID, error) {
	var u UUID
	if len(s) != 2*UUIDLen {
		return u, fmt.Errorf("%w, got %d characters", ErrBadUUID, len(s))
	}
	for i := range UUIDLen {
		hi, ok1 := unhex(s[2*i])
		lo, ok2 := unhex(s[2*i+1])
		if !ok1 || !ok2 {
			return UUID{}, fmt.Errorf("%w, got %q", ErrBadUUID, s)
		}
		u[i] = hi<<4 | lo
	}
	return u, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// bodyMask reads the 64-bit mask of a 0x11 message. Only 0x11 carries a
// mask: a body of another command is never read as one, whatever its
// length (an 8-byte 0x20 payload is data, not bits).
func bodyMask(cmd byte, b []byte) uint64 {
	if cmd != CmdClassified || len(b) != MaskLen {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// ClientMessage is a decoded phone-to-node message. Body aliases the
// decoded buffer; copy it before keeping it.
type ClientMessage struct {
	AppID byte
	Cmd   byte
	UUID  UUID
	Body  []byte
	// Raw is the whole message as it came (aliases the buffer too): a
	// pod that is not the uuid's home relays it as is.
	Raw []byte
}

// Mask returns the 64-bit mask of a 0x11 ack, and 0 for any other command.
func (m *ClientMessage) Mask() uint64 { return bodyMask(m.Cmd, m.Body) }

// Reasons a message is dropped; they double as metric labels.
var (
	ErrShort       = errors.New("shorter than the 21-byte header")
	ErrVersion     = errors.New("version is not 1")
	ErrCommand     = errors.New("unknown command")
	ErrLength      = errors.New("total length does not match the declared body length")
	ErrBodyForCmd  = errors.New("body length not allowed for this command")
	ErrBodyTooLong = errors.New("declared body length above the maximum")
)

// ClientBodyLen is the body length a valid client message of cmd carries,
// or -1 if cmd is not a client command.
func ClientBodyLen(cmd byte) int {
	switch cmd {
	case CmdHeartbeat, CmdGeneral, CmdCustom, CmdReset:
		return 0
	case CmdClassified:
		return 8
	}
	return -1
}

// DecodeClient decodes exactly one client message from b, which must hold
// nothing else (a UDP datagram, or one frame cut from a TCP stream).
func DecodeClient(b []byte, m *ClientMessage) error {
	if len(b) < ClientHeaderLen {
		return ErrShort
	}
	if b[0] != Version {
		return ErrVersion
	}
	want := ClientBodyLen(b[2])
	if want < 0 {
		return ErrCommand
	}
	n := int(binary.BigEndian.Uint16(b[19:21]))
	if len(b) != ClientHeaderLen+n {
		return ErrLength
	}
	if n != want {
		return ErrBodyForCmd
	}
	m.AppID = b[1]
	m.Cmd = b[2]
	copy(m.UUID[:], b[3:19])
	m.Body = b[ClientHeaderLen:]
	m.Raw = b
	return nil
}

// ClientFrameLen reports, from the first bytes of a TCP stream, how long the
// next client message is. It returns 0 when fewer than 21 bytes are known,
// and ErrBodyTooLong when the declared body cannot be legal: the stream is
// then out of sync and must be closed.
func ClientFrameLen(b []byte) (int, error) {
	if len(b) < ClientHeaderLen {
		return 0, nil
	}
	n := int(binary.BigEndian.Uint16(b[19:21]))
	if n > MaxClientBodyLen {
		return 0, ErrBodyTooLong
	}
	return ClientHeaderLen + n, nil
}

// AppendClient appends an encoded client message to dst.
func AppendClient(dst []byte, appID, cmd byte, uuid UUID, body []byte) []byte {
	dst = append(dst, Version, appID, cmd)
	dst = append(dst, uuid[:]...)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(body)))
	return append(dst, body...)
}

// AppendServer appends an encoded server message to dst.
func AppendServer(dst []byte, appID, cmd byte, body []byte) []byte {
	dst = append(dst, Version, appID, cmd)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(body)))
	return append(dst, body...)
}

// AppendServerMask appends a 0x11 server message carrying mask.
func AppendServerMask(dst []byte, appID byte, mask uint64) []byte {
	dst = append(dst, Version, appID, CmdClassified, 0, 8)
	return binary.BigEndian.AppendUint64(dst, mask)
}

// ServerMessage is a decoded node-to-phone message. Body aliases the input.
type ServerMessage struct {
	AppID byte
	Cmd   byte
	Body  []byte
}

// Mask returns the 64-bit mask of a 0x11 notice, and 0 for any other
// command.
func (m *ServerMessage) Mask() uint64 { return bodyMask(m.Cmd, m.Body) }

// DecodeServer decodes one server message that fills b exactly. It applies
// the checks a DDPush client applies: a 0x20 must carry a payload, a 0x11
// exactly 8 bytes, 0x00 and 0x10 none.
func DecodeServer(b []byte, m *ServerMessage) error {
	if len(b) < ServerHeaderLen {
		return ErrShort
	}
	if b[0] != Version {
		return ErrVersion
	}
	n := int(binary.BigEndian.Uint16(b[3:5]))
	if len(b) != ServerHeaderLen+n {
		return ErrLength
	}
	switch b[2] {
	case CmdHeartbeat, CmdGeneral:
		if n != 0 {
			return ErrBodyForCmd
		}
	case CmdClassified:
		if n != 8 {
			return ErrBodyForCmd
		}
	case CmdCustom:
		if n == 0 {
			return ErrBodyForCmd
		}
	default:
		return ErrCommand
	}
	m.AppID = b[1]
	m.Cmd = b[2]
	m.Body = b[ServerHeaderLen:]
	return nil
}

// ServerFrameLen reports the length of the next server message in a TCP
// stream, or 0 when fewer than 5 bytes are known.
func ServerFrameLen(b []byte) int {
	if len(b) < ServerHeaderLen {
		return 0
	}
	return ServerHeaderLen + int(binary.BigEndian.Uint16(b[3:5]))
}

// PushRequest is a decoded app-server push. Body aliases the input.
type PushRequest struct {
	AppID byte
	Cmd   byte
	UUID  UUID
	Body  []byte
}

// Mask returns the bits of a 0x11 push, and 0 for any other command.
func (p *PushRequest) Mask() uint64 { return bodyMask(p.Cmd, p.Body) }

// pushBodyLimit is the largest body a push request of cmd may declare
// before the stream counts as out of sync. maxContent bounds custom
// payloads only: a 0x11 always carries its 8 bytes, even on a node whose
// maximum content length is smaller.
func pushBodyLimit(cmd byte, maxContent int) int {
	if cmd == CmdClassified {
		return max(maxContent, MaskLen)
	}
	return maxContent
}

// MaxPushFrameLen is the longest push request a node with maxContent
// reads: what a reader of the push port must be able to buffer.
func MaxPushFrameLen(maxContent int) int {
	return PushHeaderLen + max(maxContent, MaskLen)
}

// PushFrameLen reports, from the first bytes of a 9999 stream, how long the
// next push request is. A declared body above maxContent (above 8 for a
// 0x11) is a violation: the Java server closes the connection without
// answering, and so do we.
func PushFrameLen(b []byte, maxContent int) (int, error) {
	if len(b) < PushHeaderLen {
		return 0, nil
	}
	n := int(binary.BigEndian.Uint16(b[19:21]))
	if n > pushBodyLimit(b[2], maxContent) {
		return 0, ErrBodyTooLong
	}
	return PushHeaderLen + n, nil
}

// DecodePush decodes one push request that fills b exactly, with the
// checks the Java server makes before answering 0. The appId is not
// checked, as the Java server does not check it.
func DecodePush(b []byte, maxContent int, p *PushRequest) error {
	if len(b) < PushHeaderLen {
		return ErrShort
	}
	if b[0] != Version {
		return ErrVersion
	}
	n := int(binary.BigEndian.Uint16(b[19:21]))
	if len(b) != PushHeaderLen+n {
		return ErrLength
	}
	switch b[2] {
	case CmdGeneral:
		if n != 0 {
			return ErrBodyForCmd
		}
	case CmdClassified:
		if n != MaskLen {
			return ErrBodyForCmd
		}
	case CmdCustom:
		if n < 1 {
			return ErrBodyForCmd
		}
		if n > maxContent {
			return ErrBodyTooLong
		}
	default:
		return ErrCommand
	}
	p.AppID = b[1]
	p.Cmd = b[2]
	copy(p.UUID[:], b[3:19])
	p.Body = b[PushHeaderLen:]
	return nil
}

// AppendPush appends an encoded push request to dst.
func AppendPush(dst []byte, appID, cmd byte, uuid UUID, body []byte) []byte {
	return AppendClient(dst, appID, cmd, uuid, body)
}

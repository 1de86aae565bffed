package store

import (
	"encoding/binary"
	"testing"

	"github.com/ddpush/ddpush-operator/node/state"
)

// A push made with a key keeps its payload digest through the stored
// form; one without a key is written in the first form, unchanged.
func TestPushStoredFormKeepsTheDigest(t *testing.T) {
	for _, p := range []Push{
		{ID: 9, UUID: u(3), Kind: state.Custom, Fate: state.Sent, Size: 8, Key: "order-77", Digest: DigestOf([]byte("12345678")), AcceptedAt: 5, SentAt: 6},
		{ID: 9, UUID: u(3), Kind: state.Classified, Fate: state.Queued, Size: 8, Bits: 1 << 63, Key: "k", AcceptedAt: -1},
		{ID: 9, UUID: u(3), Kind: state.General, Fate: state.Queued, AcceptedAt: 1},
	} {
		b := p.appendBinary(nil)
		wantForm := byte(pushForm1)
		if p.Key != "" {
			wantForm = pushForm2
		}
		if b[0] != wantForm {
			t.Fatalf("push with key %q written in form %d, want %d", p.Key, b[0], wantForm)
		}
		var got Push
		if err := got.unmarshal(9, b); err != nil {
			t.Fatalf("unmarshal %+v: %v", p, err)
		}
		if got != p {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, p)
		}
		// Any byte missing or added is a corrupt entry, not another push.
		if err := got.unmarshal(9, b[:len(b)-1]); err == nil {
			t.Fatalf("a truncated entry of %+v was read", p)
		}
		if err := got.unmarshal(9, append(b, 0)); err == nil {
			t.Fatalf("an entry of %+v with a trailing byte was read", p)
		}
	}
}

// Entries written before digests existed (form 1, with a key) still read.
func TestPushFormOneWithKeyStillReads(t *testing.T) {
	b := []byte{pushForm1}
	uu := u(4)
	b = append(b, uu[:]...)
	b = append(b, byte(state.Custom), byte(state.Queued))
	b = binary.AppendUvarint(b, 3)
	b = binary.BigEndian.AppendUint64(b, 0)
	b = binary.AppendVarint(b, 10)
	b = binary.AppendVarint(b, 0)
	b = binary.AppendVarint(b, 0)
	b = binary.AppendUvarint(b, 2)
	b = append(b, "k1"...)
	var p Push
	if err := p.unmarshal(1, b); err != nil {
		t.Fatal(err)
	}
	if p.Key != "k1" || p.Size != 3 || p.Digest != (PayloadDigest{}) || p.AcceptedAt != 10 {
		t.Fatalf("form 1 read as %+v", p)
	}
}

// An event entry is read only when it is whole: a byte missing or added
// is a corrupt entry.
func TestEventEntryIsExact(t *testing.T) {
	e := state.Event{PushID: 300, UUID: u(7), Kind: state.Custom, Fate: state.Sent, At: -5}
	b := appendEvent(nil, &e)
	got, err := decodeEvent(9, b)
	if err != nil || got.Event != e || got.Seq != 9 {
		t.Fatalf("decodeEvent = %+v, %v; want %+v", got, err, e)
	}
	if _, err := decodeEvent(9, b[:len(b)-1]); err == nil {
		t.Fatal("a truncated event was read")
	}
	if _, err := decodeEvent(9, append(b, 0)); err == nil {
		t.Fatal("an event with a trailing byte was read")
	}
}

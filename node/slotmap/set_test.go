package slotmap

import (
	"errors"
	"testing"
)

func TestSetStringParsesBack(t *testing.T) {
	for _, s := range []string{"", "0", "1023", "0-1023", "1,3,5-7", "0-511", "512-1023", "0,1023"} {
		set, err := ParseSet(s)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if got := set.String(); got != s {
			t.Errorf("%q came back as %q", s, got)
		}
	}
	full, _ := ParseSet("0-1023")
	if full.Len() != NumSlots {
		t.Errorf("0-1023 has %d slots", full.Len())
	}
	// Neighbouring ranges merge.
	if set, _ := ParseSet("0-3,4-5"); set.String() != "0-5" {
		t.Errorf("0-3,4-5 is %q", set.String())
	}
}

func TestParseSetRefusesBadSlots(t *testing.T) {
	for _, s := range []string{"1024", "-1", "5-3", "a", "1-", "0-1024", ",", "1,,2", " 1", "1-2-3"} {
		if _, err := ParseSet(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: %v, want ErrInvalid", s, err)
		}
	}
}

func TestGainedAndLost(t *testing.T) {
	peers := map[int]string{0: "a:1", 1: "b:1", 2: "c:1"}
	old, _ := New(1, []Range{{0, 1023, 0}}, peers)
	next, _ := New(2, []Range{{0, 99, 1}, {100, 1023, 0}}, peers)
	if g := Gained(old, next, 1); g.String() != "0-99" {
		t.Errorf("pod 1 gains %q", g.String())
	}
	if l := Lost(old, next, 0); l.String() != "0-99" {
		t.Errorf("pod 0 loses %q", l.String())
	}
	if g, l := Gained(old, next, 2), Lost(old, next, 2); g.Len()+l.Len() != 0 {
		t.Errorf("pod 2 gains %q and loses %q", g.String(), l.String())
	}
	// No map counts as pod 0 owning everything.
	if l := Lost(Map{}, next, 0); l.String() != "0-99" {
		t.Errorf("from no map, pod 0 loses %q", l.String())
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node/httpapi"
	"github.com/ddpush/ddpush-operator/node/nodetest"
	"github.com/ddpush/ddpush-operator/node/slotmap"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// userOwnedBy finds a user id whose uuid has its home at ordinal o.
func userOwnedBy(t *testing.T, m slotmap.Map, o int) (string, wire.UUID) {
	t.Helper()
	for i := range 10000 {
		user := fmt.Sprintf("user-%d", i)
		if u := httpapi.UserUUID(user); m.OwnerOf(u) == o {
			return user, u
		}
	}
	t.Fatalf("no user id found for ordinal %d", o)
	return "", wire.UUID{}
}

func runOut(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	if err := run(ctx, args, &out); err != nil {
		t.Fatalf("pushctl %s: %v", strings.Join(args, " "), err)
	}
	return out.String()
}

// A lone node has no slot map: it is the home of every uuid, and both
// commands say so instead of failing.
func TestPushctlSlotMapOfALoneNode(t *testing.T) {
	n := nodetest.Start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	common := []string{"--http", "http://" + n.HTTPAddr().String(), "--token", nodetest.Token}

	if got := runOut(t, ctx, append([]string{"slotmap"}, common...)...); !strings.Contains(got, "not sharded") || !strings.Contains(got, "serves every slot") {
		t.Errorf("slotmap of a lone node printed %q", got)
	}
	u := httpapi.UserUUID("10001")
	got := runOut(t, ctx, append([]string{"home", "--user", "10001"}, common...)...)
	for _, want := range []string{u.String(), fmt.Sprintf("slot   %d\n", slotmap.Slot(u)), "no slot map and serves every slot"} {
		if !strings.Contains(got, want) {
			t.Errorf("home of a lone node printed %q, want %q in it", got, want)
		}
	}
}

// Three pods share the uuid space: any pod names the same home for a uuid,
// and the map prints as a table of ordinals, slots, shares and links.
func TestPushctlSlotMapOfAShardedNode(t *testing.T) {
	n := nodetest.Start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m := nodetest.EvenMap(t, 3, 7)
	var pods []string
	for self := range 3 {
		up := map[int]bool{0: true, 1: true, 2: true}
		if self == 0 {
			up[2] = false // pod 0 has lost its link to pod 2
		}
		f := nodetest.StartSlotMapFront(t, n, self, m, up)
		pods = append(pods, f.URL)
	}
	flags := func(pod int) []string { return []string{"--http", pods[pod], "--token", nodetest.Token} }

	user, u := userOwnedBy(t, m, 2)
	for pod := range 3 {
		for _, args := range [][]string{
			append([]string{"home", "--user", user}, flags(pod)...),
			append([]string{"home", "--user-id", user}, flags(pod)...),
			append([]string{"home", u.String()}, flags(pod)...),
			append(append([]string{"home"}, flags(pod)...), u.String()),
			append([]string{"home", "--uuid", strings.ToUpper(u.String())}, flags(pod)...),
		} {
			got := runOut(t, ctx, args...)
			for _, want := range []string{
				"uuid   " + u.String(),
				fmt.Sprintf("slot   %d\n", slotmap.Slot(u)),
				"home   ordinal 2",
				"peer   pushnode-2.pushnode-peers:9977",
				fmt.Sprintf("asked  ordinal %d, slot map epoch 7", pod),
			} {
				if !strings.Contains(got, want) {
					t.Errorf("%v printed:\n%s\nwant %q in it", args, got, want)
				}
			}
			if strings.Contains(got, "(the pod asked)") != (pod == 2) {
				t.Errorf("%v: the pod asked is marked wrongly:\n%s", args, got)
			}
		}
	}

	var o struct {
		UUID    string `json:"uuid"`
		Slot    int    `json:"slot"`
		Ordinal int    `json:"ordinal"`
		Self    int    `json:"self"`
		Epoch   uint64 `json:"epoch"`
	}
	if err := json.Unmarshal([]byte(runOut(t, ctx, append([]string{"home", "--json", "--user", user}, flags(1)...)...)), &o); err != nil {
		t.Fatal(err)
	}
	if o.UUID != u.String() || o.Slot != int(slotmap.Slot(u)) || o.Ordinal != 2 || o.Self != 1 || o.Epoch != 7 {
		t.Errorf("home --json: %+v", o)
	}

	got := runOut(t, ctx, append([]string{"slotmap"}, flags(0)...)...)
	t.Logf("pushctl slotmap:\n%s", got)
	if !strings.HasPrefix(got, "slot map epoch 7, as ordinal 0 has it") {
		t.Errorf("slotmap header: %q", got)
	}
	for _, row := range []string{
		`0 \*\s+342\s+33\.4%\s+0-341\s+pushnode-0\.pushnode-peers:9977\s+self`,
		`1\s+341\s+33\.3%\s+342-682\s+pushnode-1\.pushnode-peers:9977\s+up`,
		`2\s+341\s+33\.3%\s+683-1023\s+pushnode-2\.pushnode-peers:9977\s+down`,
	} {
		if !regexp.MustCompile(`(?m)^` + row + `\s*$`).MatchString(got) {
			t.Errorf("slotmap lacks a row matching %q:\n%s", row, got)
		}
	}
	if got := runOut(t, ctx, append([]string{"slotmap", "--json"}, flags(1)...)...); !strings.Contains(got, `"self": 1`) || !strings.Contains(got, `"epoch": 7`) {
		t.Errorf("slotmap --json: %s", got)
	}
}

// Ranges that are not contiguous print as a list, and an ordinal with a
// peer and no slots (a pod being added or drained) shows with none.
func TestPushctlSlotMapWithScatteredRanges(t *testing.T) {
	n := nodetest.Start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := slotmap.New(3, []slotmap.Range{{From: 0, To: 99, Ordinal: 1}, {From: 100, To: 511, Ordinal: 0}, {From: 512, To: 1023, Ordinal: 1}},
		map[int]string{0: "10.0.0.1:9977", 1: "10.0.0.2:9977", 2: "10.0.0.3:9977"})
	if err != nil {
		t.Fatal(err)
	}
	f := nodetest.StartSlotMapFront(t, n, 2, m, map[int]bool{0: true, 1: true})
	got := runOut(t, ctx, "slotmap", "--http", f.URL, "--token", nodetest.Token)
	for _, row := range []string{
		`0\s+412\s+40\.2%\s+100-511\s+10\.0\.0\.1:9977\s+up`,
		`1\s+612\s+59\.8%\s+0-99,512-1023\s+10\.0\.0\.2:9977\s+up`,
		`2 \*\s+0\s+0\.0%\s+-\s+10\.0\.0\.3:9977\s+self`,
	} {
		if !regexp.MustCompile(`(?m)^` + row + `\s*$`).MatchString(got) {
			t.Errorf("slotmap lacks a row matching %q:\n%s", row, got)
		}
	}
}

func TestPushctlHomeRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	const good = "d89f3a35931c386956c1a402a8e09941"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"home", "--token", "x"}, "a target is required"},
		{[]string{"home", "--token", "x", "abc"}, `"abc" is not a uuid: uuid must be 32 hex`},
		{[]string{"home", "--token", "x", "--uuid", strings.Repeat("g", 32)}, "is not a uuid"},
		{[]string{"home", "--token", "x", "--uuid", good, "--user", "1"}, "not both"},
		{[]string{"home", "--token", "x", good, "--user-id", "1"}, "not both"},
		{[]string{"home", "--token", "x", good, "--uuid", good}, "give the uuid once"},
		{[]string{"home", "--token", "x", good, good}, "one target only"},
		{[]string{"home", "--user", "1", "--token-file", "/nonexistent"}, "no API token"},
		{[]string{"slotmap", "--token", "x", "extra"}, "usage: pushctl slotmap"},
		{[]string{"home", "--token", nodetest.Token, "--http", "http://127.0.0.1:1", good}, "connection refused"},
	} {
		err := run(ctx, tc.args, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}

// A wrong token is the node's refusal, not "no slot map".
func TestPushctlSlotMapWrongToken(t *testing.T) {
	n := nodetest.Start(t, nil)
	f := nodetest.StartSlotMapFront(t, n, 0, slotmap.Map{}, nil)
	for _, base := range []string{"http://" + n.HTTPAddr().String(), f.URL} {
		for _, args := range [][]string{{"slotmap"}, {"home", "--user", "1"}} {
			err := run(context.Background(), append(args, "--http", base, "--token", "wrong"), &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), "401") {
				t.Errorf("%v against %s with a wrong token: %v, want the node's 401", args, base, err)
			}
		}
	}
}

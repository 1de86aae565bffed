package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node"
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
	pods, m := nodetest.StartShards(t, 3, 7, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	flags := func(pod int) []string {
		return []string{"--http", "http://" + pods[pod].HTTPAddr().String(), "--token", nodetest.Token}
	}
	peer := func(o int) string { p, _ := m.Peer(o); return p }

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
				"peer   " + peer(2),
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

	row := func(ord string, slots int, share, ranges, addr, link string) string {
		return fmt.Sprintf(`%s\s+%d\s+%s\s+%s\s+%s\s+%s`, ord, slots, regexp.QuoteMeta(share), ranges, regexp.QuoteMeta(addr), link)
	}
	check := func(got string, rows ...string) {
		t.Helper()
		for _, r := range rows {
			if !regexp.MustCompile(`(?m)^` + r + `\s*$`).MatchString(got) {
				t.Errorf("slotmap lacks a row matching %q:\n%s", r, got)
			}
		}
	}
	got := runOut(t, ctx, append([]string{"slotmap"}, flags(0)...)...)
	if !strings.HasPrefix(got, "slot map epoch 7, as ordinal 0 has it") {
		t.Errorf("slotmap header: %q", got)
	}
	check(got,
		row(`0 \*`, 342, "33.4%", "0-341", peer(0), "self"),
		row("1", 341, "33.3%", "342-682", peer(1), "up"),
		row("2", 341, "33.3%", "683-1023", peer(2), "up"))
	if got := runOut(t, ctx, append([]string{"slotmap", "--json"}, flags(1)...)...); !strings.Contains(got, `"self": 1`) || !strings.Contains(got, `"epoch": 7`) {
		t.Errorf("slotmap --json: %s", got)
	}

	// Pod 2 goes away: pod 0 shows its link to it down.
	pods[2].Stop(t)
	nodetest.Eventually(t, 15*time.Second, func() error {
		st, err := pods[0].API.Status(ctx)
		if err != nil {
			return err
		}
		for _, p := range st.Peers {
			if p.Ordinal == 2 && !p.Up {
				return nil
			}
		}
		return fmt.Errorf("pod 0 still has its link to pod 2 up: %+v", st.Peers)
	})
	got = runOut(t, ctx, append([]string{"slotmap"}, flags(0)...)...)
	t.Logf("pushctl slotmap with pod 2 gone:\n%s", got)
	check(got, row("2", 341, "33.3%", "683-1023", peer(2), "down"))
}

// Ranges that are not contiguous print as a list, and an ordinal with a
// peer and no slots (a pod being added or drained) shows with none.
func TestPushctlSlotMapWithScatteredRanges(t *testing.T) {
	// The pods get this map as their first: a pod in force refuses one
	// that moves slots.
	pods := make([]*nodetest.Node, 3)
	peers := map[int]string{}
	for i := range pods {
		pods[i] = nodetest.Start(t, func(c *node.Config) { c.PeerAddr, c.Ordinal = "127.0.0.1:0", i })
		peers[i] = pods[i].Shard().PeerAddr()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := slotmap.New(2, []slotmap.Range{{From: 0, To: 99, Ordinal: 1}, {From: 100, To: 511, Ordinal: 0}, {From: 512, To: 1023, Ordinal: 1}}, peers)
	if err != nil {
		t.Fatal(err)
	}
	nodetest.PutSlotMap(t, m, pods...)
	got := runOut(t, ctx, "slotmap", "--http", "http://"+pods[2].HTTPAddr().String(), "--token", nodetest.Token)
	peer := func(o int) string { p, _ := m.Peer(o); return regexp.QuoteMeta(p) }
	for _, row := range []string{
		`0\s+412\s+40\.2%\s+100-511\s+` + peer(0) + `\s+up`,
		`1\s+612\s+59\.8%\s+0-99,512-1023\s+` + peer(1) + `\s+up`,
		`2 \*\s+0\s+0\.0%\s+-\s+` + peer(2) + `\s+self`,
	} {
		if !regexp.MustCompile(`(?m)^` + row + `\s*$`).MatchString(got) {
			t.Errorf("slotmap lacks a row matching %q:\n%s", row, got)
		}
	}
	// An older map is refused by the node, and the table still shows epoch 2.
	older, err := slotmap.New(1, m.Spec().Ranges, peers)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pods[2].API.PutSlotMap(ctx, older); err == nil || !strings.Contains(err.Error(), "409") {
		t.Errorf("PUT of an older map: %v, want a 409", err)
	}
	if got := runOut(t, ctx, "slotmap", "--http", "http://"+pods[2].HTTPAddr().String(), "--token", nodetest.Token); !strings.HasPrefix(got, "slot map epoch 2, as ordinal 2") {
		t.Errorf("after the refused map: %q", got)
	}
}

// A pod started as one of several that has not been given a map yet
// serves every slot, and says which ordinal it is.
func TestPushctlSlotMapOfAPodWithoutAMap(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.PeerAddr = "127.0.0.1:0"; c.Ordinal = 4 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	common := []string{"--http", "http://" + n.HTTPAddr().String(), "--token", nodetest.Token}
	if got := runOut(t, ctx, append([]string{"slotmap"}, common...)...); got != "not sharded: the node asked (ordinal 4) has no slot map and serves every slot\n" {
		t.Errorf("slotmap printed %q", got)
	}
	if got := runOut(t, ctx, append([]string{"home", "--user", "10001"}, common...)...); !strings.Contains(got, "home   the node asked (ordinal 4): it has no slot map") {
		t.Errorf("home printed %q", got)
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
	for _, args := range [][]string{{"slotmap"}, {"home", "--user", "1"}} {
		err := run(context.Background(), append(args, "--http", "http://"+n.HTTPAddr().String(), "--token", "wrong"), &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), "401") {
			t.Errorf("%v with a wrong token: %v, want the node's 401", args, err)
		}
	}
}

func TestPodOfPeer(t *testing.T) {
	for _, tc := range []struct {
		addr    string
		ordinal int
		want    string
	}{
		{"pushnode-sample-2.pushnode-sample-headless.ddpush.svc:9977", 2, "pushnode-sample-2"},
		{"pushnode-sample-2.pushnode-sample-headless.ddpush.svc:9977", 1, ""}, // another pod's name
		{"pushnode-12:9977", 12, "pushnode-12"},
		{"10.0.0.7:9977", 0, ""},
		{"[fd00::7]:9977", 0, ""},
		{"pushnode.example:9977", 0, ""},
		{"", 0, ""},
	} {
		if got := podOfPeer(tc.addr, tc.ordinal); got != tc.want {
			t.Errorf("podOfPeer(%q, %d) = %q, want %q", tc.addr, tc.ordinal, got, tc.want)
		}
	}
}

// A user id that is not UTF-8 reaches the node byte for byte, so the node
// names the home of the uuid a phone derives from those bytes.
func TestPushctlHomeOfAUserIDThatIsNotUTF8(t *testing.T) {
	pods, m := nodetest.StartShards(t, 2, 3, nil)
	const user = "us\xe9r"
	u := httpapi.UserUUID(user)
	got := runOut(t, context.Background(), "home", "--user", user, "--http", "http://"+pods[0].HTTPAddr().String(), "--token", nodetest.Token)
	if want := fmt.Sprintf("home   ordinal %d", m.OwnerOf(u)); !strings.Contains(got, "uuid   "+u.String()) || !strings.Contains(got, want) {
		t.Errorf("home printed %q, want uuid %s and %q", got, u, want)
	}
}

// A node from before slot maps has no such endpoint (its 404 names no
// ordinal): it is a whole node, and both commands say so. No node of this
// version answers like that, so a server stands in for one.
func TestPushctlAgainstANodeWithoutSlotMaps(t *testing.T) {
	old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"error":"no such endpoint: %s %s"}`, r.Method, r.URL.Path)
	}))
	defer old.Close()
	common := []string{"--http", old.URL, "--token", "x"}
	if got := runOut(t, context.Background(), append([]string{"slotmap"}, common...)...); got != "not sharded: the node asked has no slot map and serves every slot\n" {
		t.Errorf("slotmap printed %q", got)
	}
	u := httpapi.UserUUID("10001")
	got := runOut(t, context.Background(), append([]string{"home", "--user", "10001"}, common...)...)
	if !strings.Contains(got, "uuid   "+u.String()) || !strings.Contains(got, fmt.Sprintf("slot   %d\n", slotmap.Slot(u))) || !strings.Contains(got, "home   the node asked: it has no slot map") {
		t.Errorf("home printed %q", got)
	}
}

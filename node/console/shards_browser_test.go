package console_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ddpush/ddpush-operator/node"
	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/httpapi"
	"github.com/ddpush/ddpush-operator/node/nodetest"
	"github.com/ddpush/ddpush-operator/node/slotmap"
)

// The Shards view: a lone node, and a pod not yet given a map, say they
// serve every slot; a pod of a sharded PushNode shows its ordinal, the
// map's epoch, each pod's slots and share, and its peer links, and follows
// a new map and a lost link without a reload.
func TestConsoleShards(t *testing.T) {
	lone := nodetest.Start(t, nil)
	waiting := nodetest.Start(t, func(c *node.Config) { c.PeerAddr = "127.0.0.1:0"; c.Ordinal = 4 })
	pods, m := nodetest.StartShards(t, 3, 7, nil)
	b := newBrowser(t)
	url := func(n *nodetest.Node) string { return "http://" + n.HTTPAddr().String() }
	peer := func(o int) string { p, _ := m.Peer(o); return p }

	signIn := func(n *nodetest.Node) {
		t.Helper()
		b.do("sign in at "+url(n), 30*time.Second,
			chromedp.Navigate(url(n)+"/console/"),
			chromedp.WaitVisible(chromedp.ID("token")),
			chromedp.SendKeys(chromedp.ID("token"), nodetest.Token+"\r"))
		b.waitJS("signed in", visible("dashboard-view"), 15*time.Second)
	}

	// A lone node.
	signIn(lone)
	b.do("open the node's settings", 10*time.Second, chromedp.Click(chromedp.CSS(`#dashboard-view details > summary`)))
	if got := b.text("#node-facts"); !strings.Contains(got, "none: this node serves every slot") {
		t.Errorf("node settings of a lone node: %q", got)
	}
	b.do("open Shards", 10*time.Second, chromedp.Click(chromedp.CSS(`#nav a[data-view="shards"]`)))
	b.waitJS("not sharded", visible("shards-none"), 15*time.Second)
	if got := b.text("#shards-none"); !strings.Contains(got, "Not sharded: this node serves every slot") || !strings.Contains(got, "ordinal 0") {
		t.Errorf("a lone node's Shards view says %q", got)
	}
	if b.text("#shards-error") != "" {
		t.Errorf("a lone node's Shards view shows an error: %q", b.text("#shards-error"))
	}
	b.shot("shards-01-lone-node")

	// A pod of a sharded PushNode that has no map yet.
	signIn(waiting)
	b.do("open Shards by its address", 20*time.Second, chromedp.Navigate(url(waiting)+"/console/#shards"))
	b.waitJS("not sharded", visible("shards-none"), 15*time.Second)
	if got := b.text("#shards-none-detail"); !strings.Contains(got, "ordinal 4") {
		t.Errorf("a pod without a map does not name its ordinal: %q", got)
	}
	// Given a map whose peer addresses are the pods' DNS names, as the
	// operator writes them, it names the pods (their links cannot come
	// up here: the names do not resolve).
	named := map[int]string{}
	for o := range 5 {
		named[o] = fmt.Sprintf("pushnode-sample-%d.pushnode-sample-headless.ddpush.svc:9977", o)
	}
	dns, err := slotmap.EvenSplit(5, 1, named)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := waiting.API.PutSlotMap(context.Background(), dns); err != nil {
		t.Fatal(err)
	}
	b.waitJS("the map shows", visible("shards-map")+` && document.querySelectorAll('#sh-table tbody tr').length === 5`, 20*time.Second)
	if got := b.text("#sh-self-note"); got != "pod pushnode-sample-4" {
		t.Errorf("this pod's card says %q, want its pod name", got)
	}
	if got := b.text(`#sh-table tr[data-ordinal="2"] .pod`); got != "pushnode-sample-2" {
		t.Errorf("ordinal 2's cell says %q, want its pod name", got)
	}
	b.shot("shards-02-named-pods")

	// Pod 1 of three.
	signIn(pods[1])
	b.do("open Shards by its address", 20*time.Second, chromedp.Navigate(url(pods[1])+"/console/#shards"))
	b.waitJS("the slot map", visible("shards-map")+` && document.querySelectorAll('#sh-table tbody tr').length === 3`, 15*time.Second)
	cards := func(want map[string]string) {
		t.Helper()
		for sel, w := range want {
			if got := b.text(sel); got != w {
				t.Errorf("%s shows %q, want %q", sel, got, w)
			}
		}
	}
	cards(map[string]string{
		"#sh-self": "1", "#sh-epoch": "7", "#sh-slots": "341", "#sh-share": "33.3%",
		"#sh-links": "2 / 2 up", "#sh-links-note": "every link is up",
	})
	rows := func() string {
		var r [][]string
		b.eval(`[...document.querySelectorAll('#sh-table tbody tr')].map(r => [...r.cells].slice(0, 5).map(c => c.textContent)
			.concat([r.querySelector('.badge').textContent]))`, &r)
		return fmt.Sprintf("%q", r)
	}
	want := fmt.Sprintf("%q", [][]string{
		{"0", "342", "33.4%", "0–341", peer(0), "up"},
		{"1", "341", "33.3%", "342–682", peer(1), "this pod"},
		{"2", "341", "33.3%", "683–1023", peer(2), "up"},
	})
	if got := rows(); got != want {
		t.Errorf("table rows\n%s\nwant\n%s", got, want)
	}
	var strip []string
	b.eval(`[...document.querySelectorAll('#sh-strip rect')].map(r => r.getAttribute('class') + ' ' + r.getAttribute('x') + '+' + r.getAttribute('width'))`, &strip)
	if fmt.Sprint(strip) != "[other a0 0+342 own 342+341 other a0 683+341]" {
		t.Errorf("slot strip %q", strip)
	}
	b.fitsWidth("desktop shards view")
	b.noProblems()
	b.shot("shards-03-pod-of-three")

	// A client whose home is pod 2, looked up on pod 1: the lookup is
	// relayed, and the card says where the record lives.
	user, home := "", 0
	for i := 0; home != 2; i++ {
		user = fmt.Sprintf("user-%d", i)
		home = m.OwnerOf(httpapi.UserUUID(user))
	}
	if _, err := pods[1].API.Push(context.Background(), api.PushRequest{UserID: user, Kind: api.KindGeneral}); err != nil {
		t.Fatal(err)
	}
	b.do("look the client up", 20*time.Second, chromedp.Navigate(url(pods[1])+"/console/#client/userId/"+user))
	b.waitJS("the client's home", visible("c-home"), 15*time.Second)
	if got := b.text("#c-home"); !strings.Contains(got, "ordinal 2") || !strings.Contains(got, "this pod (ordinal 1) relays to it") {
		t.Errorf("the client card's home: %q", got)
	}
	if got := b.text("#c-pending tbody"); !strings.Contains(got, "general") {
		t.Errorf("the relayed lookup's pending messages: %q", got)
	}
	b.shot("shards-03-client-home")
	b.do("back to Shards", 20*time.Second, chromedp.Click(chromedp.CSS(`#nav a[data-view="shards"]`)))
	b.waitJS("the slot map", visible("shards-map"), 15*time.Second)

	// The operator hands out a map of a new epoch (the same slots: moving
	// slots needs resharding): the view follows at the next status.
	m2, err := slotmap.New(8, m.Spec().Ranges, m.Peers())
	if err != nil {
		t.Fatal(err)
	}
	nodetest.PutSlotMap(t, m2, pods...)
	b.waitJS("the new epoch", `document.getElementById('sh-epoch').textContent === '8'`, 20*time.Second)
	cards(map[string]string{"#sh-slots": "341", "#sh-share": "33.3%"})
	if got := rows(); got != want {
		t.Errorf("table rows after the new map\n%s\nwant\n%s", got, want)
	}

	// Pod 2 goes away: its link shows down, with why.
	pods[2].Stop(t)
	b.waitJS("the link to pod 2 down", `document.querySelector('#sh-table tr[data-ordinal="2"] .badge[data-link="down"]')`, 30*time.Second)
	cards(map[string]string{"#sh-links": "1 / 2 up", "#sh-links-note": "down to ordinal 2"})
	b.shot("shards-04-link-down")

	// A phone-sized screen.
	b.do("phone-sized viewport", 10*time.Second,
		chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile))
	b.fitsWidth("phone shards view")
	b.screen("shards-05-phone")
	b.do("scroll to the table", 10*time.Second, chromedp.ScrollIntoView(chromedp.ID("sh-table")))
	b.fitsWidth("phone shards table")
	b.screen("shards-06-phone-table")
	b.noProblems()
}

package console_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ddpush/ddpush-operator/node/nodetest"
	"github.com/ddpush/ddpush-operator/node/slotmap"
)

// The Shards view: a lone node says it serves every slot; a pod of a
// sharded PushNode shows its ordinal, the map's epoch, each pod's slots
// and share, and its peer links, and follows a new map and the loss of
// its map without a reload.
func TestConsoleShards(t *testing.T) {
	n := nodetest.Start(t, nil)
	// The pod with ordinal 1 of three, whose link to pod 2 is down.
	front := nodetest.StartSlotMapFront(t, n, 1, nodetest.EvenMap(t, 3, 7), map[int]bool{0: true, 2: false})
	b := newBrowser(t)

	signIn := func(base string) {
		t.Helper()
		b.do("sign in at "+base, 30*time.Second,
			chromedp.Navigate(base+"/console/"),
			chromedp.WaitVisible(chromedp.ID("token")),
			chromedp.SendKeys(chromedp.ID("token"), nodetest.Token+"\r"))
		b.waitJS("signed in", visible("dashboard-view"), 15*time.Second)
	}

	// A lone node.
	signIn("http://" + n.HTTPAddr().String())
	b.do("open the node's settings", 10*time.Second, chromedp.Click(chromedp.CSS(`#dashboard-view details > summary`)))
	if got := b.text("#node-facts"); !strings.Contains(got, "none: this node serves every slot") {
		t.Errorf("node settings of a lone node: %q", got)
	}
	b.do("open Shards", 10*time.Second, chromedp.Click(chromedp.CSS(`#nav a[data-view="shards"]`)))
	b.waitJS("not sharded", visible("shards-none"), 15*time.Second)
	if got := b.text("#shards-none"); !strings.Contains(got, "Not sharded: this node serves every slot") {
		t.Errorf("a lone node's Shards view says %q", got)
	}
	if b.text("#shards-error") != "" {
		t.Errorf("a lone node's Shards view shows an error: %q", b.text("#shards-error"))
	}
	b.shot("shards-01-lone-node")

	// A pod of three.
	signIn(front.URL)
	b.do("open Shards by its address", 20*time.Second, chromedp.Navigate(front.URL+"/console/#shards"))
	b.waitJS("the slot map", visible("shards-map")+` && document.querySelectorAll('#sh-table tbody tr').length === 3`, 15*time.Second)
	for sel, want := range map[string]string{
		"#sh-self": "1", "#sh-epoch": "7", "#sh-slots": "341", "#sh-share": "33.3%",
		"#sh-links": "1 / 2 up", "#sh-links-note": "down to ordinal 2",
	} {
		if got := b.text(sel); got != want {
			t.Errorf("%s shows %q, want %q", sel, got, want)
		}
	}
	var rows [][]string
	b.eval(`[...document.querySelectorAll('#sh-table tbody tr')].map(r => [...r.cells].map(c => c.textContent))`, &rows)
	want := [][]string{
		{"0", "342", "33.4%", "0–341", "pushnode-0.pushnode-peers:9977", "up"},
		{"1", "341", "33.3%", "342–682", "pushnode-1.pushnode-peers:9977", "this pod"},
		{"2", "341", "33.3%", "683–1023", "pushnode-2.pushnode-peers:9977", "down"},
	}
	if fmt.Sprint(rows) != fmt.Sprint(want) {
		t.Errorf("table rows\n%q\nwant\n%q", rows, want)
	}
	var strip []string
	b.eval(`[...document.querySelectorAll('#sh-strip rect')].map(r => r.getAttribute('class') + ' ' + r.getAttribute('x') + '+' + r.getAttribute('width'))`, &strip)
	if fmt.Sprint(strip) != "[other a0 0+342 own 342+341 other a0 683+341]" {
		t.Errorf("slot strip %q", strip)
	}
	b.fitsWidth("desktop shards view")
	b.noProblems()
	b.shot("shards-02-pod-of-three")

	// The operator moves to two pods: a new epoch shows at the next status.
	m2, err := slotmap.EvenSplit(2, 8, map[int]string{0: "pushnode-0.pushnode-peers:9977", 1: "pushnode-1.pushnode-peers:9977"})
	if err != nil {
		t.Fatal(err)
	}
	front.Set(m2, map[int]bool{0: true})
	b.waitJS("the new epoch", `document.getElementById('sh-epoch').textContent === '8' && document.querySelectorAll('#sh-table tbody tr').length === 2`, 20*time.Second)
	if got, share, links := b.text("#sh-slots"), b.text("#sh-share"), b.text("#sh-links"); got != "512" || share != "50.0%" || links != "1 / 1 up" {
		t.Errorf("after the new map: %s slots, %s share, links %s; want 512, 50.0%%, 1 / 1 up", got, share, links)
	}

	// A phone-sized screen.
	b.do("phone-sized viewport", 10*time.Second,
		chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile))
	b.fitsWidth("phone shards view")
	b.screen("shards-03-phone")

	// The map taken away: the pod serves every slot again.
	front.Set(slotmap.Map{}, nil)
	b.waitJS("not sharded any more", visible("shards-none")+` && !(`+visible("shards-map")+`)`, 20*time.Second)
	if got := b.text("#shards-none-detail"); !strings.Contains(got, "ordinal 1") {
		t.Errorf("the unsharded pod does not name its ordinal: %q", got)
	}
	b.noProblems()
}

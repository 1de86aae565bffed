package console_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ddpush/ddpush-operator/node"
	"github.com/ddpush/ddpush-operator/node/httpapi"
	"github.com/ddpush/ddpush-operator/node/nodetest"
	"github.com/ddpush/ddpush-operator/node/phone"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// The console pushes custom messages of every length up to the node's
// maximum (and refuses 0 and one past it), to a phone on UDP and one on
// TCP, and each phone receives exactly the bytes typed; a 0x11 mask and an
// 8-byte text arrive each as what it is. A bulk push naming one client
// twice is refused with the node's reason.
func TestConsolePushesEveryLength(t *testing.T) {
	const max = 24
	n := nodetest.Start(t, func(c *node.Config) { c.MaxContentLen = max; c.OnlineWindow = time.Hour })
	b := newBrowser(t)
	base := "http://" + n.HTTPAddr().String()

	phones := map[string]*phone.Phone{}
	for _, network := range []string{"udp", "tcp"} {
		user := "console-" + network
		ph, err := phone.Dial(network, n.ClientAddr().String(), httpapi.UserUUID(user))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ph.Close() })
		if err := ph.Heartbeat(); err != nil {
			t.Fatal(err)
		}
		nodetest.Eventually(t, 10*time.Second, func() error {
			c, err := n.API.Client(context.Background(), httpapi.UserUUID(user).String())
			if err != nil || !c.Online {
				return fmt.Errorf("%s phone not online: %v", network, err)
			}
			return nil
		})
		phones[network] = ph
	}

	b.do("sign in", 30*time.Second,
		chromedp.Navigate(base+"/console/"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), nodetest.Token+"\r"))
	b.waitJS("signed in", visible("dashboard-view"), 15*time.Second)

	// next waits for the phone's next message of cmd, skipping others.
	next := func(ph *phone.Phone, cmd byte) phone.Message {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			m, err := ph.Next(time.Until(deadline))
			if err != nil {
				b.fail(fmt.Sprintf("waiting for a %#x message", cmd), err)
			}
			if m.Cmd == cmd {
				return m
			}
		}
	}
	// set puts a value in a field as typing would, so the page's input
	// handlers run.
	set := func(id, value string) {
		t.Helper()
		var ok bool
		b.eval(fmt.Sprintf(`(e => (e.value = %q, e.dispatchEvent(new Event('input')), true))(document.getElementById(%q))`, value, id), &ok)
	}
	lastPush := 0.0
	submit := func() {
		t.Helper()
		b.do("push", 10*time.Second, chromedp.Click(chromedp.ID("push-submit")))
		b.waitJS("the push result", fmt.Sprintf(`(e => e && Number(e.dataset.push) > %v)(document.querySelector('#push-result [data-push]'))`, lastPush), 15*time.Second)
		b.eval(`Number(document.querySelector('#push-result [data-push]').dataset.push)`, &lastPush)
	}
	refused := func(why string) {
		t.Helper()
		b.do("push", 10*time.Second, chromedp.Click(chromedp.ID("push-submit")))
		b.waitJS("the console refuses: "+why, fmt.Sprintf(`(e => !e.hidden && e.textContent.includes(%q))(document.querySelector('#push-form .form-error'))`, why), 10*time.Second)
	}

	for _, network := range []string{"udp", "tcp"} {
		ph := phones[network]
		b.do("open the "+network+" phone", 20*time.Second,
			chromedp.Navigate(base+"/console/#client/userId/console-"+network))
		b.waitJS("the client card", visible("client-card")+
			fmt.Sprintf(` && document.getElementById('c-uuid').textContent === %q`, httpapi.UserUUID("console-"+network).String()), 15*time.Second)
		b.do("choose custom", 10*time.Second,
			chromedp.Click(chromedp.CSS(`#push-form input[name="kind"][value="custom"]`)),
			chromedp.WaitVisible(chromedp.ID("p-data")))
		texts := []string{strings.Repeat("é", max/2), "1234567é"} // multi-byte: 24 bytes; and 9
		for l := 1; l <= max; l++ {
			var s strings.Builder
			for i := range l {
				s.WriteByte('a' + byte((i+l)%26))
			}
			texts = append(texts, s.String())
		}
		for _, text := range texts {
			set("p-data", text)
			if got, want := b.text("#p-count"), fmt.Sprintf("%d / %d bytes", len(text), max); got != want {
				t.Errorf("count for %d bytes: %q, want %q", len(text), got, want)
			}
			submit()
			m := next(ph, wire.CmdCustom)
			if string(m.Body) != text || m.AppID != 0 {
				t.Fatalf("%s phone: pushed %q (%d bytes), received %q with appId %d", network, text, len(text), m.Body, m.AppID)
			}
		}
		set("p-data", strings.Repeat("x", max+1))
		refused(fmt.Sprintf("at most %d", max))
		set("p-data", strings.Repeat("é", max/2)+"x")
		refused(fmt.Sprintf("at most %d", max))
		set("p-data", "")
		refused("at least one byte")
		if m, err := ph.Next(quietWait); err == nil {
			t.Fatalf("%s phone received %#x %q after refused pushes", network, m.Cmd, m.Body)
		}

		// A mask goes out as a 0x11 with its 8 bytes.
		b.do("choose classified", 10*time.Second,
			chromedp.Click(chromedp.CSS(`#push-form input[name="kind"][value="classified"]`)),
			chromedp.WaitVisible(chromedp.ID("p-bits")))
		set("p-bits", "0x0102030405060708")
		submit()
		if m := next(ph, wire.CmdClassified); string(m.Body) != "\x01\x02\x03\x04\x05\x06\x07\x08" {
			t.Fatalf("%s phone: mask % x", network, m.Body)
		}
	}

	// Bulk: a client named twice, once in capitals, is refused as such.
	u := httpapi.UserUUID("console-udp").String()
	b.do("bulk with a repeated target", 20*time.Second,
		chromedp.Click(chromedp.CSS(`#nav a[data-view="bulk"]`)),
		chromedp.WaitVisible(chromedp.ID("b-targets")))
	set("b-targets", u+"\n"+strings.ToUpper(u))
	b.do("submit", 10*time.Second, chromedp.Click(chromedp.ID("bulk-submit")))
	b.waitJS("the refusal names the repeat", `(e => !e.hidden && e.textContent.includes('same client'))(document.querySelector('#bulk-form .form-error'))`, 10*time.Second)
	b.noProblems()
}

// quietWait is how long a phone listens to be sure nothing comes.
const quietWait = 300 * time.Millisecond

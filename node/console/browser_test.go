package console_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/ddpush/ddpush-operator/node/httpapi"
	"github.com/ddpush/ddpush-operator/node/nodetest"
	"github.com/ddpush/ddpush-operator/node/phone"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// The browser test runs the console in headless Chromium (Debian's
// chromium package; hack/install-chromium.sh installs it) against a real
// node and a simulated phone. It skips only when no Chromium is found and
// CONSOLE_E2E_REQUIRED is unset; CI sets it, so there it always runs.
// Screenshots go to $ARTIFACTS_DIR/console, or testdata/artifacts.

// chromiumPath finds the browser: $CHROMIUM, then Debian's.
func chromiumPath() string {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

func artifactsDir(t *testing.T) string {
	dir := filepath.Join("testdata", "artifacts")
	if d := os.Getenv("ARTIFACTS_DIR"); d != "" {
		dir = filepath.Join(d, "console")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Only this run's pictures: stale ones (a failure long fixed) mislead.
	old, _ := filepath.Glob(filepath.Join(dir, "*.png"))
	for _, f := range old {
		_ = os.Remove(f)
	}
	abs, _ := filepath.Abs(dir)
	return abs
}

// browser drives one tab.
type browser struct {
	t   *testing.T
	ctx context.Context
	dir string

	mu       sync.Mutex
	problems []string // uncaught exceptions and CSP violations
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	path := chromiumPath()
	if path == "" {
		if os.Getenv("CONSOLE_E2E_REQUIRED") != "" {
			t.Fatal("CONSOLE_E2E_REQUIRED is set but no Chromium was found: run hack/install-chromium.sh (or set $CHROMIUM)")
		}
		t.Skip("no Chromium (/usr/bin/chromium): hack/install-chromium.sh installs it; CONSOLE_E2E_REQUIRED=1 makes this a failure")
	}
	var out bytes.Buffer
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // root in a container has no user namespaces for the sandbox
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.WindowSize(1280, 900),
		chromedp.CombinedOutput(&lockedWriter{w: &out}),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	b := &browser{t: t, ctx: ctx, dir: artifactsDir(t)}
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	start, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	// The first action starts the browser; bound it without binding the
	// browser's life to this timeout.
	done := make(chan error, 1)
	go func() { done <- chromedp.Do(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("start %s: %v\n%s", path, err, out.String())
		}
	case <-start.Done():
		t.Fatalf("%s did not start within 60s\n%s", path, out.String())
	}
	if err := chromedp.Listen(ctx, func(ev any) {
		var p string
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			p = "uncaught exception: " + ev.ExceptionDetails.Text
			if ev.ExceptionDetails.Exception != nil {
				p += " " + ev.ExceptionDetails.Exception.Description
			}
		case *log.EventEntryAdded:
			if ev.Entry != nil && ev.Entry.Level == log.EntryLevelError && ev.Entry.Source != log.EntrySourceNetwork {
				p = fmt.Sprintf("console %s error: %s (%s)", ev.Entry.Source, ev.Entry.Text, ev.Entry.URL)
			}
		}
		if p != "" {
			b.mu.Lock()
			b.problems = append(b.problems, p)
			b.mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	return b
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// do runs actions, failing the test (with a screenshot) past timeout.
func (b *browser) do(what string, timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.fail(what, err)
	}
}

// eval evaluates a JavaScript expression into v.
func (b *browser) eval(expr string, v any) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](expr))
	if err == nil {
		err = json.Unmarshal(raw, v)
	}
	if err != nil {
		b.fail("evaluate "+expr, err)
	}
}

// text reads an element's text.
func (b *browser) text(sel string) string {
	var s string
	b.eval(fmt.Sprintf(`(document.querySelector(%q) || {}).textContent || ""`, sel), &s)
	return strings.TrimSpace(s)
}

// waitJS waits until a JavaScript expression is true. (chromedp.Poll
// builds its predicate with new Function, which the console's CSP
// forbids; Runtime.evaluate is not subject to it.)
func (b *browser) waitJS(what, expr string, timeout time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("!!("+expr+")"))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("still false after %v: %s", timeout, expr)
			}
			b.fail(what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// shot saves a screenshot of the whole page.
func (b *browser) shot(name string) string {
	return b.capture(name, chromedp.FullScreenshot(100))
}

// screen saves a screenshot of what the window shows.
func (b *browser) screen(name string) string {
	return b.capture(name, chromedp.CaptureScreenshot())
}

func (b *browser) capture(name string, a chromedp.Action[[]byte]) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(b.dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot %s", path)
	return path
}

func (b *browser) fail(what string, err error) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	extra := ""
	if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
		path := filepath.Join(b.dir, "failure-"+strings.ReplaceAll(b.t.Name(), "/", "_")+".png")
		if os.WriteFile(path, png, 0o644) == nil {
			extra += "\nscreenshot: " + path
		}
	}
	if body, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`)); err == nil {
		extra += "\npage text:\n" + body
	}
	b.t.Fatalf("%s: %v%s\nbrowser problems: %q", what, err, extra, b.takeProblems())
}

func (b *browser) takeProblems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.problems
	b.problems = nil
	return p
}

// noProblems fails on any uncaught exception or CSP violation so far.
func (b *browser) noProblems() {
	b.t.Helper()
	if p := b.takeProblems(); len(p) > 0 {
		b.t.Errorf("the page reported problems:\n%s", strings.Join(p, "\n"))
	}
}

// fitsWidth checks that nothing makes the page scroll sideways.
func (b *browser) fitsWidth(where string) {
	b.t.Helper()
	var r struct{ Scroll, Inner float64 }
	b.eval(`({Scroll: document.documentElement.scrollWidth, Inner: window.innerWidth})`, &r)
	if r.Scroll > r.Inner {
		b.t.Errorf("%s: the page is %v px wide in a %v px window (it scrolls sideways)", where, r.Scroll, r.Inner)
	}
}

func visible(id string) string {
	return fmt.Sprintf(`(e => e && !e.closest('[hidden]') && e.getClientRects().length > 0)(document.getElementById(%q))`, id)
}

func TestConsoleInBrowser(t *testing.T) {
	n := nodetest.Start(t, nil)
	// After the node, so that the browser (and the event stream it holds
	// open) is gone before the node stops.
	b := newBrowser(t)
	base := "http://" + n.HTTPAddr().String()

	// A phone for user 10001, heartbeating over UDP and acking what it gets.
	const userID = "10001"
	uuid := httpapi.UserUUID(userID)
	ph, err := phone.Dial("udp", n.ClientAddr().String(), uuid)
	if err != nil {
		t.Fatal(err)
	}
	defer ph.Close()
	if err := ph.Heartbeat(); err != nil {
		t.Fatal(err)
	}
	nodetest.Eventually(t, 10*time.Second, func() error {
		c, err := n.API.Client(context.Background(), uuid.String())
		if err != nil {
			return err
		}
		if !c.Online {
			return fmt.Errorf("phone not online yet")
		}
		return nil
	})

	// The node's root sends a browser to the console.
	b.do("open the node's root", 30*time.Second,
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.ID("signin-form")))
	var loc string
	b.eval(`location.pathname`, &loc)
	if loc != "/console/" {
		t.Errorf("opening / landed on %q, want /console/", loc)
	}

	// A wrong token is refused, and nothing from the node is shown.
	b.do("sign in with a wrong token", 20*time.Second,
		chromedp.SendKeys(chromedp.ID("token"), "wrong-token\r"))
	b.waitJS("the refusal is shown", visible("signin-error"), 15*time.Second)
	if got := b.text("#signin-error"); !strings.Contains(got, "invalid bearer token") {
		t.Errorf("wrong token: error %q, want it to say the token is invalid", got)
	}
	var leaked struct {
		Stored     *string
		Dashboard  bool
		Nav        bool
		Records    string
		EventItems int
	}
	b.eval(`({Stored: sessionStorage.getItem('pushnode.token'),
		Dashboard: `+visible("dashboard-view")+`, Nav: `+visible("nav")+`,
		Records: document.getElementById('st-records').textContent,
		EventItems: document.querySelectorAll('#events li').length})`, &leaked)
	if leaked.Stored != nil || leaked.Dashboard || leaked.Nav || leaked.Records != "–" || leaked.EventItems != 0 {
		t.Errorf("after a wrong token the page shows or keeps data: %+v", leaked)
	}
	b.shot("01-wrong-token")

	// The right token, typed and submitted with the keyboard.
	var cleared string
	b.eval(`(e => (e.value = '', e.value))(document.getElementById('token'))`, &cleared)
	b.do("sign in", 20*time.Second,
		chromedp.SendKeys(chromedp.ID("token"), nodetest.Token+"\r"))
	b.waitJS("the dashboard shows the phone's record", visible("dashboard-view")+
		` && document.getElementById('st-records').textContent === '1' && document.getElementById('st-online').textContent === '1'`, 15*time.Second)
	b.waitJS("the event stream is live", `document.getElementById('stream-state').dataset.state === 'live'`, 15*time.Second)
	var stored string
	b.eval(`sessionStorage.getItem('pushnode.token')`, &stored)
	if stored != nodetest.Token {
		t.Errorf("sessionStorage holds %q, want the token", stored)
	}
	b.shot("02-dashboard")

	// Find the phone by its user id.
	b.do("look the phone up by user id", 20*time.Second,
		chromedp.Click(chromedp.CSS(`#nav a[data-view="client"]`)),
		chromedp.WaitVisible(chromedp.ID("lookup-q")),
		chromedp.SetValue(chromedp.ID("lookup-by"), "userId"),
		chromedp.SendKeys(chromedp.ID("lookup-q"), userID),
		chromedp.Click(chromedp.ID("lookup-submit")))
	b.waitJS("the client card", visible("client-card")+
		fmt.Sprintf(` && document.getElementById('c-uuid').textContent === %q`, uuid.String()), 15*time.Second)
	if got := b.text("#c-online"); got != "online" {
		t.Errorf("client status %q, want online", got)
	}
	if got := b.text("#c-transport"); got != "udp" {
		t.Errorf("transport %q, want udp", got)
	}
	if got := b.text("#c-address"); got != ph.LocalAddr().String() {
		t.Errorf("address %q, want the phone's %s", got, ph.LocalAddr())
	}
	if got := b.text("#c-heartbeat"); got == "" || got == "never" {
		t.Errorf("last heartbeat %q", got)
	}

	// Push a Custom message; the byte count follows the UTF-8 length.
	const text = "Héllo from the console ✓"
	b.do("write a custom message", 20*time.Second,
		chromedp.Click(chromedp.CSS(`#push-form input[name="kind"][value="custom"]`)),
		chromedp.WaitVisible(chromedp.ID("p-data")),
		chromedp.SendKeys(chromedp.ID("p-data"), text))
	var typed string
	b.eval(`document.getElementById('p-data').value`, &typed)
	if typed != text {
		t.Fatalf("the text area holds %q, want %q", typed, text)
	}
	wantCount := fmt.Sprintf("%d / 500 bytes", len(text))
	if got := b.text("#p-count"); got != wantCount {
		t.Errorf("byte count %q, want %q", got, wantCount)
	}
	b.do("push", 10*time.Second, chromedp.Click(chromedp.ID("push-submit")))

	// The phone prints exactly those bytes...
	deadline := time.Now().Add(15 * time.Second)
	for {
		m, err := ph.Next(time.Until(deadline))
		if err != nil {
			b.fail("the phone receiving the custom message", err)
		}
		if m.Cmd != wire.CmdCustom {
			continue
		}
		if !bytes.Equal(m.Body, []byte(text)) {
			t.Fatalf("the phone got %q, want %q", m.Body, text)
		}
		break
	}
	// ...and the console shows the push acknowledged, without a reload.
	b.waitJS("the push shows acknowledged", `(e => e && e.dataset.fate === 'acknowledged' && e.textContent === 'acknowledged')(document.getElementById('push-result-fate'))`, 15*time.Second)
	var pushID uint64
	b.eval(`Number(document.querySelector('#push-result [data-push]').dataset.push)`, &pushID)
	p, err := n.API.GetPush(context.Background(), pushID)
	if err != nil || p.Fate != "acknowledged" || p.Kind != "custom" || p.Size != len(text) {
		t.Errorf("push %d as the node has it: %+v, %v", pushID, p, err)
	}
	b.waitJS("nothing pending any more", visible("c-nopending"), 15*time.Second)
	b.shot("03-client-pushed")

	// The live event stream on the dashboard has the acknowledgement.
	b.do("back to the dashboard", 10*time.Second,
		chromedp.Click(chromedp.CSS(`#nav a[data-view="dashboard"]`)),
		chromedp.WaitVisible(chromedp.ID("dashboard-view")))
	b.waitJS("the acknowledged event in the live list",
		fmt.Sprintf(`document.querySelector('#events li[data-push="%d"][data-fate="acknowledged"]')`, pushID), 15*time.Second)

	// Bulk: two good uuids (the phone and a client never seen) and one
	// that is not a uuid.
	other := httpapi.UserUUID("20002")
	b.do("bulk push", 20*time.Second,
		chromedp.Click(chromedp.CSS(`#nav a[data-view="bulk"]`)),
		chromedp.WaitVisible(chromedp.ID("b-targets")),
		chromedp.SendKeys(chromedp.ID("b-targets"), uuid.String()+"\n"+other.String()+"\nnot-a-uuid"),
		chromedp.Click(chromedp.CSS(`#bulk-form input[name="kind"][value="classified"]`)),
		chromedp.Click(chromedp.CSS(`#bulk-form .bitgrid input[value="0"]`)),
		chromedp.Click(chromedp.CSS(`#bulk-form .bitgrid input[value="5"]`)))
	if got := b.text("#b-targets-count"); got != "3 targets" {
		t.Errorf("target count %q, want 3 targets", got)
	}
	var mask string
	b.eval(`document.getElementById('b-bits').value`, &mask)
	if mask != "0x21" {
		t.Errorf("mask %q after ticking bits 0 and 5, want 0x21", mask)
	}
	b.do("submit the bulk push", 10*time.Second, chromedp.Click(chromedp.ID("bulk-submit")))
	b.waitJS("the bulk result", visible("bulk-result"), 15*time.Second)
	if a, r := b.text("#b-accepted"), b.text("#b-rejected"); a != "2" || r != "1" {
		t.Errorf("bulk result: %s accepted, %s refused; want 2 and 1", a, r)
	}
	if why := b.text("#b-refused tbody"); !strings.Contains(why, "not-a-uuid") || !strings.Contains(why, "uuid") {
		t.Errorf("the refusal does not say why: %q", why)
	}
	b.waitJS("the phone's bulk push acknowledged", `document.querySelector('#b-accepted-list tbody tr .badge[data-fate="acknowledged"]')`, 15*time.Second)
	b.shot("04-bulk")

	// The never-seen client: its message waits, queued.
	b.do("look up the offline client by uuid", 20*time.Second,
		chromedp.Navigate(base+"/console/#client/uuid/"+other.String()))
	b.waitJS("the offline client's pending message", visible("c-pending")+
		` && document.querySelector('#c-pending tbody tr .badge[data-fate="queued"]')`, 15*time.Second)
	if got := b.text("#c-online"); got != "offline" {
		t.Errorf("the never-seen client shows %q, want offline", got)
	}
	if got := b.text("#c-pending tbody"); !strings.Contains(got, "0x21") {
		t.Errorf("pending row %q lacks the bits 0x21", got)
	}
	b.fitsWidth("desktop client view")
	b.shot("05-client-offline")
	dark := func(on bool) chromedp.Action[chromedp.Void] {
		return func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
			p := emulation.SetEmulatedMediaParams{}
			if on {
				p.Features = []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}
			}
			_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, p)
			return chromedp.Void{}, err
		}
	}
	b.do("dark colour scheme", 10*time.Second, dark(true))
	b.shot("05-client-offline-dark")
	b.do("light colour scheme", 10*time.Second, dark(false))

	// A phone-sized screen.
	b.do("phone-sized viewport", 10*time.Second,
		chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile))
	b.do("client view by user id on a phone", 20*time.Second,
		chromedp.Navigate(base+"/console/#client/userId/"+userID))
	b.waitJS("the client card on a phone", visible("client-card")+
		fmt.Sprintf(` && document.getElementById('c-uuid').textContent === %q`, uuid.String()), 15*time.Second)
	b.fitsWidth("phone client view")
	b.screen("06-phone-client")
	// (Only the hash changed: the page was not reloaded and still holds the
	// earlier text.)
	b.eval(`(e => (e.value = '', e.dispatchEvent(new Event('input')), e.value))(document.getElementById('p-data'))`, &cleared)
	// 498 bytes are set at once and the last character typed: typing
	// all 499 key by key took longer than the step's time on a busy
	// machine, and the counter reacts to the typed key the same way.
	b.do("choose custom on a phone", 30*time.Second,
		chromedp.Click(chromedp.CSS(`#push-form input[name="kind"][value="custom"]`)),
		chromedp.SetValue(chromedp.ID("p-data"), strings.Repeat("x", 498)),
		chromedp.SendKeys(chromedp.ID("p-data"), "✓"),
		chromedp.ScrollIntoView(chromedp.ID("push-submit")))
	if got := b.text("#p-count"); got != "501 / 500 bytes: 1 over this node's limit" {
		t.Errorf("byte count past the limit: %q", got)
	}
	b.do("push too much", 10*time.Second, chromedp.Click(chromedp.ID("push-submit")))
	b.waitJS("the console refuses to send it", `(e => !e.hidden && e.textContent.includes('at most 500'))(document.querySelector('#push-form .form-error'))`, 10*time.Second)
	b.fitsWidth("phone push form")
	b.screen("07-phone-push-over-limit")
	b.do("phone dashboard", 10*time.Second,
		chromedp.Click(chromedp.CSS(`#nav a[data-view="dashboard"]`)),
		chromedp.WaitVisible(chromedp.ID("dashboard-view")))
	b.fitsWidth("phone dashboard")
	b.screen("08-phone-dashboard")
	b.do("open the node's settings", 10*time.Second, chromedp.Click(chromedp.CSS(`#dashboard-view details > summary`)))
	if got := b.text("#node-facts"); !strings.Contains(got, "Heartbeat policy") || !strings.Contains(got, "500 bytes") || !strings.Contains(got, "Store incarnation") {
		t.Errorf("node settings: %q", got)
	}
	b.fitsWidth("phone dashboard with settings")
	b.shot("08-phone-dashboard-full")
	b.do("scroll to the settings", 10*time.Second, chromedp.ScrollIntoView(chromedp.ID("node-facts")))
	b.screen("08-phone-node-settings")
	b.do("phone bulk view", 10*time.Second,
		chromedp.Click(chromedp.CSS(`#nav a[data-view="bulk"]`)),
		chromedp.WaitVisible(chromedp.ID("bulk-form")),
		chromedp.ScrollIntoView(chromedp.ID("bulk-result")))
	b.fitsWidth("phone bulk view")
	b.screen("09-phone-bulk-result")

	// Sign out: the token and the data are gone.
	b.do("sign out", 10*time.Second,
		chromedp.Click(chromedp.ID("signout")),
		chromedp.WaitVisible(chromedp.ID("signin-form")))
	var after struct {
		Stored  *string
		Records string
		Events  int
	}
	b.eval(`({Stored: sessionStorage.getItem('pushnode.token'),
		Records: document.getElementById('st-records').textContent,
		Events: document.querySelectorAll('#events li').length})`, &after)
	if after.Stored != nil || after.Records != "–" || after.Events != 0 {
		t.Errorf("after signing out: %+v", after)
	}
	var focused string
	b.eval(`document.activeElement && document.activeElement.id`, &focused)
	if focused != "token" {
		t.Errorf("after signing out the focus is on %q, want the token field", focused)
	}
	b.fitsWidth("phone sign-in")
	b.screen("10-phone-signed-out")
	b.noProblems()
}

package console_test

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/ddpush/ddpush-operator/node/console"
	"github.com/ddpush/ddpush-operator/node/nodetest"
)

func TestFilesAreSelfContained(t *testing.T) {
	// Nothing may come from elsewhere: no CDN, no font service, no
	// protocol-relative URL. The one absolute URL allowed is the SVG
	// namespace, which is a name and never fetched.
	external := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}[/"'\s)]`)
	inline := regexp.MustCompile(`(?i)<script>|<style|\sstyle=|\son[a-z]+=`)
	var names []string
	err := fs.WalkDir(console.Files(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		names = append(names, path)
		b, err := fs.ReadFile(console.Files(), path)
		if err != nil {
			return err
		}
		text := strings.ReplaceAll(string(b), "http://www.w3.org/2000/svg", "")
		for _, m := range external.FindAllString(text, -1) {
			t.Errorf("%s refers to an external resource: %q", path, m)
		}
		if strings.HasSuffix(path, ".html") {
			// The Content-Security-Policy forbids inline scripts, styles
			// and handlers; the page must not need them.
			if m := inline.FindString(text); m != "" {
				t.Errorf("%s has inline code or style (%q), which the CSP blocks", path, m)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"index.html", "app.js", "app.css", "icon.svg"} {
		if !strings.Contains(strings.Join(names, " "), want) {
			t.Errorf("embedded files %v lack %s", names, want)
		}
	}
}

func TestHandler(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("GET /console/", console.Handler())
	mux.Handle("GET /console", console.Redirect())
	srv := httptest.NewServer(mux)
	defer srv.Close()
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	for _, tc := range []struct {
		path, ctype, contains string
	}{
		{"/console/", "text/html", `<script src="app.js" defer></script>`},
		{"/console/app.js", "javascript", "sessionStorage"},
		{"/console/app.css", "text/css", "prefers-color-scheme"},
		{"/console/icon.svg", "image/svg+xml", "<svg"},
	} {
		resp, err := noFollow.Get(srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d", tc.path, resp.StatusCode)
			continue
		}
		if ct := resp.Header.Get("Content-Type"); !strings.Contains(ct, tc.ctype) {
			t.Errorf("GET %s: Content-Type %q, want %s", tc.path, ct, tc.ctype)
		}
		if !strings.Contains(string(b), tc.contains) {
			t.Errorf("GET %s: body lacks %q", tc.path, tc.contains)
		}
		csp := resp.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q", tc.path, csp)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: no X-Content-Type-Options: nosniff", tc.path)
		}
	}

	resp, err := noFollow.Get(srv.URL + "/console")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/console/" {
		t.Errorf("GET /console: %d Location %q, want 301 to /console/", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, err = noFollow.Get(srv.URL + "/console/nope.js")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /console/nope.js: %d, want 404", resp.StatusCode)
	}
}

// The node serves the console on its HTTP port, without a token (the page
// holds no data; the API it calls needs the token), and sends browsers
// that open its root there.
func TestNodeServesConsole(t *testing.T) {
	n := nodetest.Start(t, nil)
	base := "http://" + n.HTTPAddr().String()
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	resp, err := noFollow.Get(base + "/console/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "pushnode console") {
		t.Fatalf("GET /console/: %d %.80q", resp.StatusCode, b)
	}

	req, _ := http.NewRequest(http.MethodGet, base+"/", nil)
	req.Header.Set("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")
	resp, err = noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/console/" {
		t.Errorf("browser GET /: %d Location %q, want 302 to /console/", resp.StatusCode, resp.Header.Get("Location"))
	}

	// Scripts (no Accept: text/html) still get the plain-text banner,
	// and the compat bridge still answers its queries.
	resp, err = noFollow.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "/v1/") {
		t.Errorf("plain GET /: %d %q", resp.StatusCode, b)
	}
	req, _ = http.NewRequest(http.MethodGet, base+"/?act=user&type=10&uuid=00000000000000000000000000000001&ticket=x", nil)
	req.Header.Set("Accept", "text/html")
	resp, err = noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != "0" {
		t.Errorf("compat GET with a query: %d %q, want 200 \"0\" (bridge disabled)", resp.StatusCode, b)
	}
}

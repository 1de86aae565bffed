// Package console is the node's web console: plain HTML, CSS and
// JavaScript embedded in the binary and served under /console/ by the
// node's HTTP port. It is what the original project's PHP admin site did
// (find a client, see what waits for it, push to it), rebuilt on the
// node's JSON API: the page signs in with the API token and calls /v1/
// from the browser, so it has no server-side state and no API of its
// own. It loads nothing from anywhere else.
package console

import (
	"embed"
	"io/fs"
	"net/http"
)

// Path is where the console is mounted.
const Path = "/console/"

//go:embed static
var static embed.FS

// Files is the console's static files (index.html at the root).
func Files() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded directory is there at build time
	}
	return sub
}

// securityHeaders keeps the page to its own origin: scripts, styles and
// API calls come from the node itself, nothing is inlined and nothing
// frames it.
var securityHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
		"connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
	"X-Content-Type-Options": "nosniff",
	"Referrer-Policy":        "no-referrer",
	"X-Frame-Options":        "DENY",
	// The files carry no validators (embedded files have no time), and a
	// new node version must not run against an old cached script.
	"Cache-Control": "no-cache",
}

// Handler serves the console under Path. Mount it for "GET /console/".
func Handler() http.Handler {
	files := http.StripPrefix(Path, http.FileServerFS(Files()))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		for k, v := range securityHeaders {
			h.Set(k, v)
		}
		files.ServeHTTP(w, r)
	})
}

// Redirect sends /console to /console/.
func Redirect() http.Handler {
	return http.RedirectHandler(Path, http.StatusMovedPermanently)
}

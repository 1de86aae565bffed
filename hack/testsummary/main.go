// Command testsummary runs `go test -json` with the arguments it is given
// and prints what a person needs from it: each package's result line, the
// full output of every test that failed, build errors, and at the end
// every test that was skipped, with the reason it gave. It exits with go
// test's status.
//
//	go run ./hack/testsummary -race -count=1 ./...
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
)

func main() {
	cmd := exec.Command("go", append([]string{"test", "-json"}, os.Args[1:]...)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		os.Exit(2)
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		os.Exit(2)
	}
	s := newSummary(os.Stdout)
	if err := s.read(out); err != nil {
		fmt.Fprintln(os.Stderr, "testsummary: reading go test's output:", err)
	}
	err = cmd.Wait()
	s.finish()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		code = 2
	case s.failed:
		code = 1
	}
	os.Exit(code)
}

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action     string
	Package    string
	Test       string
	Output     string
	ImportPath string // build-output and build-fail
}

type testKey struct{ pkg, test string }

// skip is a skipped test and the reason it logged.
type skip struct {
	pkg, test, reason string
}

type summary struct {
	w      io.Writer
	output map[testKey][]string // output of tests still running
	skips  []skip
	failed bool
}

func newSummary(w io.Writer) *summary {
	return &summary{w: w, output: map[testKey][]string{}}
}

func (s *summary) read(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			// Not an event (go test writes some errors as plain text).
			fmt.Fprintln(s.w, string(line))
			continue
		}
		s.handle(e)
	}
	return sc.Err()
}

func (s *summary) handle(e event) {
	switch e.Action {
	case "build-output":
		fmt.Fprint(s.w, e.Output)
		return
	case "build-fail":
		s.failed = true
		return
	}
	if e.Test == "" {
		s.packageEvent(e)
		return
	}
	k := testKey{e.Package, e.Test}
	switch e.Action {
	case "output":
		s.output[k] = append(s.output[k], e.Output)
	case "fail":
		s.failed = true
		fmt.Fprint(s.w, strings.Join(s.output[k], ""))
		delete(s.output, k)
	case "skip":
		s.skips = append(s.skips, skip{pkg: e.Package, test: e.Test, reason: reason(s.output[k])})
		delete(s.output, k)
	case "pass":
		delete(s.output, k)
	}
}

func (s *summary) packageEvent(e event) {
	switch e.Action {
	case "output":
		// The per-package "PASS" adds nothing to the "ok" line after it.
		if e.Output != "PASS\n" {
			fmt.Fprint(s.w, e.Output)
		}
	case "fail":
		s.failed = true
		// Tests that never ended (a panic, a timeout): their output is
		// where the cause is.
		for k, lines := range s.output {
			if k.pkg == e.Package {
				fmt.Fprint(s.w, strings.Join(lines, ""))
				delete(s.output, k)
			}
		}
	case "pass", "skip":
		for k := range s.output {
			if k.pkg == e.Package {
				delete(s.output, k)
			}
		}
	}
}

// reason extracts what a skipped test logged, without the framing lines.
func reason(lines []string) string {
	var parts []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- SKIP") {
			continue
		}
		parts = append(parts, t)
	}
	if len(parts) == 0 {
		return "(no reason given)"
	}
	return strings.Join(parts, " ")
}

func (s *summary) finish() {
	if len(s.skips) == 0 {
		fmt.Fprintln(s.w, "\nNo test was skipped.")
		return
	}
	sort.Slice(s.skips, func(i, j int) bool {
		if s.skips[i].pkg != s.skips[j].pkg {
			return s.skips[i].pkg < s.skips[j].pkg
		}
		return s.skips[i].test < s.skips[j].test
	})
	fmt.Fprintf(s.w, "\n%d skipped:\n", len(s.skips))
	for _, k := range s.skips {
		fmt.Fprintf(s.w, "  %s %s: %s\n", k.pkg, k.test, k.reason)
	}
}

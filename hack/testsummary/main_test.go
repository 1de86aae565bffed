package main

import (
	"bytes"
	"strings"
	"testing"
)

// A stream as `go test -json` writes it: one package passes with a
// skipped test, one fails, one times out with a test still running, one
// does not build.
const stream = `{"Action":"start","Package":"ex/a"}
{"Action":"run","Package":"ex/a","Test":"TestOK"}
{"Action":"output","Package":"ex/a","Test":"TestOK","Output":"=== RUN   TestOK\n"}
{"Action":"output","Package":"ex/a","Test":"TestOK","Output":"    a_test.go:9: noise from a passing test\n"}
{"Action":"output","Package":"ex/a","Test":"TestOK","Output":"--- PASS: TestOK (0.00s)\n"}
{"Action":"pass","Package":"ex/a","Test":"TestOK"}
{"Action":"run","Package":"ex/a","Test":"TestBrowser"}
{"Action":"output","Package":"ex/a","Test":"TestBrowser","Output":"=== RUN   TestBrowser\n"}
{"Action":"output","Package":"ex/a","Test":"TestBrowser","Output":"    a_test.go:20: no Chromium: hack/install-chromium.sh installs it\n"}
{"Action":"output","Package":"ex/a","Test":"TestBrowser","Output":"--- SKIP: TestBrowser (0.00s)\n"}
{"Action":"skip","Package":"ex/a","Test":"TestBrowser"}
{"Action":"output","Package":"ex/a","Output":"PASS\n"}
{"Action":"output","Package":"ex/a","Output":"ok  \tex/a\t0.01s\n"}
{"Action":"pass","Package":"ex/a"}
{"Action":"run","Package":"ex/b","Test":"TestBad"}
{"Action":"output","Package":"ex/b","Test":"TestBad","Output":"=== RUN   TestBad\n"}
{"Action":"output","Package":"ex/b","Test":"TestBad","Output":"    b_test.go:5: got 1, want 2\n"}
{"Action":"output","Package":"ex/b","Test":"TestBad","Output":"--- FAIL: TestBad (0.00s)\n"}
{"Action":"fail","Package":"ex/b","Test":"TestBad"}
{"Action":"output","Package":"ex/b","Output":"FAIL\n"}
{"Action":"output","Package":"ex/b","Output":"FAIL\tex/b\t0.01s\n"}
{"Action":"fail","Package":"ex/b"}
{"Action":"run","Package":"ex/c","Test":"TestHangs"}
{"Action":"output","Package":"ex/c","Test":"TestHangs","Output":"=== RUN   TestHangs\n"}
{"Action":"output","Package":"ex/c","Test":"TestHangs","Output":"    c_test.go:7: waiting for the listener\n"}
{"Action":"output","Package":"ex/c","Output":"panic: test timed out after 1s\n"}
{"Action":"output","Package":"ex/c","Output":"FAIL\tex/c\t1.01s\n"}
{"Action":"fail","Package":"ex/c"}
{"ImportPath":"ex/d","Action":"build-output","Output":"d/d.go:3:1: syntax error\n"}
{"ImportPath":"ex/d","Action":"build-fail"}
{"Action":"output","Package":"ex/d","Output":"FAIL\tex/d [build failed]\n"}
{"Action":"fail","Package":"ex/d"}
no Go files in /somewhere
`

func TestSummary(t *testing.T) {
	var out bytes.Buffer
	s := newSummary(&out)
	if err := s.read(strings.NewReader(stream)); err != nil {
		t.Fatal(err)
	}
	s.finish()
	got := out.String()
	for _, want := range []string{
		"ok  \tex/a\t0.01s\n",
		"b_test.go:5: got 1, want 2\n--- FAIL: TestBad",
		"FAIL\tex/b\t0.01s\n",
		"panic: test timed out after 1s\n",
		"c_test.go:7: waiting for the listener\n", // the test that never ended
		"d/d.go:3:1: syntax error\n",
		"FAIL\tex/d [build failed]\n",
		"no Go files in /somewhere\n",
		"1 skipped:\n  ex/a TestBrowser: a_test.go:20: no Chromium: hack/install-chromium.sh installs it\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
	for _, unwanted := range []string{"noise from a passing test", "PASS\n"} {
		if strings.Contains(got, unwanted) {
			t.Errorf("summary has %q:\n%s", unwanted, got)
		}
	}
	if !s.failed {
		t.Error("failures not noticed")
	}
	if !strings.HasSuffix(got, "installs it\n") {
		t.Errorf("the skipped tests are not the last thing printed:\n%s", got)
	}
}

func TestNothingSkipped(t *testing.T) {
	var out bytes.Buffer
	s := newSummary(&out)
	_ = s.read(strings.NewReader(`{"Action":"pass","Package":"ex/a","Test":"TestOK"}` + "\n"))
	s.finish()
	if !strings.Contains(out.String(), "No test was skipped.") || s.failed {
		t.Fatalf("%q failed=%v", out.String(), s.failed)
	}
}

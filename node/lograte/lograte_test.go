package lograte

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestOneLinePerKeyAndInterval(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, nil)), time.Minute)
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }

	if !l.Log(slog.LevelWarn, "accept", "cannot accept", "n", 1) {
		t.Fatal("first line not written")
	}
	for range 5 {
		if l.Log(slog.LevelWarn, "accept", "cannot accept") {
			t.Fatal("a repeat within the interval was written")
		}
	}
	// Another key has its own interval.
	if !l.Log(slog.LevelWarn, "http", "bad request") {
		t.Fatal("another key was held back")
	}
	now = now.Add(time.Minute)
	if !l.Log(slog.LevelWarn, "accept", "cannot accept") {
		t.Fatal("a line after the interval was not written")
	}
	out := buf.String()
	if got := strings.Count(out, "cannot accept"); got != 2 {
		t.Fatalf("%d accept lines, want 2:\n%s", got, out)
	}
	if !strings.Contains(out, "suppressed=5") {
		t.Fatalf("the count of left-out lines is missing:\n%s", out)
	}
	if strings.Count(out, "suppressed") != 1 {
		t.Fatalf("suppressed reported on a line that left nothing out:\n%s", out)
	}
}

func TestDisabledLevelIsNotCounted(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})), time.Minute)
	if l.Log(slog.LevelDebug, "k", "debug line") {
		t.Fatal("a line below the level was written")
	}
	if !l.Log(slog.LevelWarn, "k", "warn line") || strings.Contains(buf.String(), "suppressed") {
		t.Fatalf("output %q", buf.String())
	}
}

func TestWriterLogsEachWriteAsOneLine(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, nil)), time.Minute)
	w := Writer{L: l, Level: slog.LevelWarn, Key: "http", Msg: "http server"}
	n, err := w.Write([]byte("http: superfluous response.WriteHeader call\n"))
	if err != nil || n == 0 {
		t.Fatal(n, err)
	}
	_, _ = w.Write([]byte("again\n"))
	out := buf.String()
	if strings.Count(out, "http server") != 1 || !strings.Contains(out, `detail="http: superfluous response.WriteHeader call"`) {
		t.Fatalf("output %q", out)
	}
}

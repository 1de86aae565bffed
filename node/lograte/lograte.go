// Package lograte keeps a line that can repeat without end (an accept
// loop out of file descriptors, a peer sending garbage) from flooding the
// log: each kind of line is written at most once per interval, and the
// next one written says how many were left out in between.
package lograte

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Limiter writes at most one line per key and interval. Keys name a kind
// of line ("accept push"), never something a peer chooses, so the set of
// keys stays small.
type Limiter struct {
	log      *slog.Logger
	interval time.Duration
	now      func() time.Time

	mu   sync.Mutex
	keys map[string]*window
}

type window struct {
	last       time.Time
	suppressed int
}

// New returns a limiter writing to log at most once per interval per key.
func New(log *slog.Logger, interval time.Duration) *Limiter {
	if log == nil {
		log = slog.Default()
	}
	return &Limiter{log: log, interval: interval, now: time.Now, keys: map[string]*window{}}
}

// Log writes msg with args at level unless a line with the same key was
// written less than an interval ago, in which case it is only counted.
// A written line carries "suppressed": the lines of its key left out
// since the previous one. It reports whether the line was written.
func (l *Limiter) Log(level slog.Level, key, msg string, args ...any) bool {
	if !l.log.Enabled(context.Background(), level) {
		return false
	}
	now := l.now()
	l.mu.Lock()
	w := l.keys[key]
	if w == nil {
		w = &window{}
		l.keys[key] = w
	} else if now.Sub(w.last) < l.interval {
		w.suppressed++
		l.mu.Unlock()
		return false
	}
	suppressed := w.suppressed
	w.last, w.suppressed = now, 0
	l.mu.Unlock()
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	l.log.Log(context.Background(), level, msg, args...)
	return true
}

// Writer is an io.Writer that logs every write as one line under key,
// for loggers that only take an io.Writer (http.Server's ErrorLog).
type Writer struct {
	L     *Limiter
	Level slog.Level
	Key   string
	Msg   string
}

// Write logs p (one line of the standard library's log package).
func (w Writer) Write(p []byte) (int, error) {
	line := string(p)
	for len(line) > 0 && (line[len(line)-1] == '\n' || line[len(line)-1] == '\r') {
		line = line[:len(line)-1]
	}
	w.L.Log(w.Level, w.Key, w.Msg, "detail", line)
	return len(p), nil
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// A goal is one target of the benchmark issue, checked against a metric.
type goal struct {
	name     string
	workload string
	metric   string
	limit    float64
	atLeast  bool // true: metric >= limit; false: metric <= limit
	unit     string
	scale    float64 // shown value = metric * scale
}

var goals = []goal{
	{"heartbeat answers/s, share of the do-nothing ceiling", "heartbeat", "share_of_ceiling", 0.80, true, "%", 100},
	{"pushes/s over 9999 at 32 connections", "push", "max_pushes_per_s", 50_000, true, "/s", 1},
	{"push-to-phone latency p99 at half the max push rate", "push", "half_push_to_phone_p99_ms", 2, false, "ms", 1},
	{"resident memory per idle record at 1M records", "scale", "rss_per_record", 150, false, "B", 1},
	{"start to ready with 1M records", "scale", "start_to_ready_s", 3, false, "s", 1},
	{"answered pushes lost across SIGKILL", "durability", "lost", 0, false, "", 1},
}

// info rows: measured, no target.
var infos = []struct{ name, workload, metric, unit string }{
	{"heartbeat answers/s (server)", "heartbeat", "answers_per_s", "/s"},
	{"heartbeat answers/s (do-nothing ceiling, same run)", "heartbeat", "ceiling_answers_per_s", "/s"},
	{"heartbeat: share of the ceiling, lowest / highest round", "heartbeat", "share_of_ceiling_min|share_of_ceiling_max", "%"},
	{"heartbeat: server CPU", "heartbeat", "server_cpu_cores", "cores"},
	{"heartbeat: ceiling CPU", "heartbeat", "ceiling_cpu_cores", "cores"},
	{"heartbeat: generator CPU", "heartbeat", "generator_cpu_cores", "cores"},
	{"heartbeat, node and ceiling with GOMAXPROCS=4: share of the ceiling", "heartbeat-gomaxprocs4", "share_of_ceiling", "%"},
	{"heartbeat, node and ceiling with GOMAXPROCS=4: server / ceiling answers/s", "heartbeat-gomaxprocs4", "answers_per_s|ceiling_answers_per_s", "/s"},
	{"push: answer latency p99 at max", "push", "max_answer_p99_ms", "ms"},
	{"push: push-to-phone p50 / p99 / max at max", "push", "max_push_to_phone_p50_ms|max_push_to_phone_p99_ms|max_push_to_phone_max_ms", "ms"},
	{"push: rate of the half-rate phase", "push", "half_pushes_per_s", "/s"},
	{"push: push-to-phone p50 / p99 / max at half", "push", "half_push_to_phone_p50_ms|half_push_to_phone_p99_ms|half_push_to_phone_max_ms", "ms"},
	{"push: server CPU at max", "push", "max_server_cpu_cores", "cores"},
	{"push: delivered / accepted at max", "push", "max_delivered|max_accepted", ""},
	{"push: do-nothing push answerer, same run (pushes/s)", "push", "ceiling_max_pushes_per_s", "/s"},
	{"push: server as a share of the do-nothing push answerer", "push", "share_of_ceiling", "%"},
	{"push, node with GOMAXPROCS=4: pushes/s at max", "push-gomaxprocs4", "max_pushes_per_s", "/s"},
	{"push, node with GOMAXPROCS=4: share of the do-nothing push answerer", "push-gomaxprocs4", "share_of_ceiling", "%"},
	{"push, node with GOMAXPROCS=4: push-to-phone p50 / p99 / max at half", "push-gomaxprocs4", "half_push_to_phone_p50_ms|half_push_to_phone_p99_ms|half_push_to_phone_max_ms", "ms"},
	{"HTTP bulk: pushes/s", "push-http", "max_pushes_per_s", "/s"},
	{"HTTP bulk: push-to-phone p50 / p99", "push-http", "max_push_to_phone_p50_ms|max_push_to_phone_p99_ms", "ms"},
	{"backlog: deliveries/s until all acked", "backlog", "deliveries_per_s", "/s"},
	{"backlog: clients / seconds to drain", "backlog", "deliveries|drain_seconds", ""},
	{"backlog: fill pushes/s (offline clients)", "backlog", "fill_pushes_per_s", "/s"},
	{"backlog: missing / redelivered after ack", "backlog", "missing_messages|redelivered_after_ack", ""},
	{"scale: records", "scale", "records", ""},
	{"scale: VmRSS / RssAnon / RssFile", "scale", "rss_bytes|rss_anon_bytes|rss_file_bytes", "MB"},
	{"scale: RSS over an empty node, per record", "scale", "rss_over_empty_per_record", "B"},
	{"scale: store size", "scale", "store_bytes", "MB"},
	{"scale: store bytes per record", "scale", "store_bytes_per_record", "B"},
	{"scale: peak RSS while loading (VmHWM)", "scale", "rss_hwm_bytes", "MB"},
	{"scale: RSS after creating the records live, per record", "scale", "live_rss_per_record", "B"},
	{"scale: after creating them live, VmRSS / RssAnon / RssFile", "scale", "live_rss_bytes|live_rss_anon_bytes|live_rss_file_bytes", "MB"},
	{"scale: records written back, seconds after the fill", "scale", "writeback_drained_after_fill_s", "s"},
	{"scale: fill heartbeats/s (record creation)", "scale", "fill_heartbeats_per_s", "/s"},
	{"durability: answered before SIGKILL / found after", "durability", "accepted_before_kill|found_after_restart", ""},
	{"durability: pushes/s while killed", "durability", "pushes_per_s_before_kill", "/s"},
	{"durability: restart to ready after SIGKILL, slowest round", "durability", "restart_to_ready_max_s", "s"},
}

func runReport(_ context.Context, args []string, stdout io.Writer) error {
	fs := newFlags("report", stdout)
	dir := fs.String("dir", "bench-results", "directory of result JSON files (pushload WORKLOAD --out DIR/NAME.json)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: pushload report [--dir DIR]\n\nPrints a Markdown table of the results in DIR against the benchmark's targets.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	files, err := filepath.Glob(filepath.Join(*dir, "*.json"))
	if err != nil {
		return err
	}
	sort.Strings(files)
	results := map[string]*Result{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var r Result
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		// Keyed by file name: hack/bench.sh names each run's file.
		results[strings.TrimSuffix(filepath.Base(f), ".json")] = &r
	}
	if len(results) == 0 {
		return fmt.Errorf("no results in %s", *dir)
	}
	fmt.Fprintln(stdout, "| target | goal | measured | met? |")
	fmt.Fprintln(stdout, "|---|---|---|---|")
	for _, g := range goals {
		r := results[g.workload]
		v, ok := 0.0, false
		if r != nil {
			v, ok = r.Metrics[g.metric]
		}
		op := "≤"
		if g.atLeast {
			op = "≥"
		}
		goalS := fmt.Sprintf("%s %s%s", op, num(g.limit*g.scale), g.unit)
		if !ok {
			fmt.Fprintf(stdout, "| %s | %s | not measured | – |\n", g.name, goalS)
			continue
		}
		shown := v * g.scale
		met := (g.atLeast && v >= g.limit) || (!g.atLeast && v <= g.limit)
		verdict := "**met**"
		if !met {
			verdict = "missed: " + missedBy(g, v)
		}
		if g.name == "pushes/s over 9999 at 32 connections" {
			if c, ok := r.Params["conns"].(float64); ok && c != 32 {
				verdict += fmt.Sprintf(" (measured at %d connections)", int(c))
			}
		}
		if g.workload == "scale" {
			if n := r.Metrics["records"]; n != 1_000_000 {
				verdict += fmt.Sprintf(" (at %s records, not 1M)", num(n))
			}
		}
		fmt.Fprintf(stdout, "| %s | %s | %s%s | %s |\n", g.name, goalS, num(shown), g.unit, verdict)
	}
	fmt.Fprintln(stdout)
	fmt.Fprintln(stdout, "| measurement | value |")
	fmt.Fprintln(stdout, "|---|---|")
	for _, in := range infos {
		r := results[in.workload]
		if r == nil {
			continue
		}
		var parts []string
		for _, k := range strings.Split(in.metric, "|") {
			v, ok := r.Metrics[k]
			if !ok {
				parts = nil
				break
			}
			switch in.unit {
			case "MB":
				v /= 1 << 20
			case "%":
				v *= 100
			}
			parts = append(parts, num(v))
		}
		if parts == nil {
			continue
		}
		unit := in.unit
		fmt.Fprintf(stdout, "| %s | %s %s |\n", in.name, strings.Join(parts, " / "), unit)
	}
	return nil
}

func missedBy(g goal, v float64) string {
	switch {
	case g.limit == 0:
		return fmt.Sprintf("%s over", num(v))
	case g.atLeast:
		return fmt.Sprintf("%.0f%% short (%s%s of %s%s)", 100*(1-v/g.limit), num(v*g.scale), g.unit, num(g.limit*g.scale), g.unit)
	default:
		return fmt.Sprintf("%.0f%% over (%.2fx the goal)", 100*(v/g.limit-1), v/g.limit)
	}
}

// num formats for a table: thousands separated, few decimals.
func num(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1000:
		s := fmt.Sprintf("%.0f", v)
		neg := strings.HasPrefix(s, "-")
		s = strings.TrimPrefix(s, "-")
		var b strings.Builder
		for i, c := range s {
			if i > 0 && (len(s)-i)%3 == 0 {
				b.WriteByte(',')
			}
			b.WriteRune(c)
		}
		if neg {
			return "-" + b.String()
		}
		return b.String()
	case a >= 100 || v == math.Trunc(v):
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync/atomic"
	"time"

	"github.com/ddpush/ddpush-operator/node/wire"
)

func runScale(ctx context.Context, args []string, stdout io.Writer) error {
	var cm common
	fs := newFlags("scale", stdout)
	cm.register(fs)
	records := fs.Int("records", 1_000_000, "idle client records to create (one heartbeat each, from distinct uuids)")
	sockets := fs.Int("sockets", 64, "UDP sockets the phones share")
	batch := fs.Int("batch", 64, "datagrams per sendmmsg/recvmmsg")
	window := fs.Int("window", 64, "heartbeats in flight per socket (at most 127)")
	restarts := fs.Int("restarts", 3, "restarts timed from exec to the ready log line (the median is reported)")
	settle := fs.Duration("settle", 3*time.Second, "idle time before reading resident memory")
	keep := fs.String("keep-data", "", "create the store in this (new) directory and keep it, instead of a temporary one")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: pushload scale --node-binary BIN [flags]\n\nStarts pushnode on a fresh data directory, creates --records idle client records\nwith one heartbeat each, stops it, and restarts it: time from start to ready,\nresident memory (VmRSS of /proc/PID/status) per record, and the store's size.\nNeeds --node-binary: it restarts the server and reads its memory, so it does not\napply to a server pushload did not start.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if cm.nodeBinary == "" {
		return usageErr("scale restarts the server and reads its memory: give --node-binary (it does not apply to a foreign server)")
	}
	if err := cm.validate(); err != nil {
		return err
	}
	if *records < 1 || *restarts < 1 {
		return usageErr("--records and --restarts must be positive")
	}
	res := newResult("scale")
	for k, v := range map[string]any{"records": *records, "sockets": *sockets, "window": *window, "restarts": *restarts, "settle": settle.String()} {
		res.Params[k] = v
	}
	var data string
	if *keep != "" {
		if _, err := os.Stat(*keep); err == nil {
			return usageErr("--keep-data %s exists; give a new directory", *keep)
		}
		data = *keep
	} else {
		tmp, err := os.MkdirTemp("", "pushload-scale-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		data = filepath.Join(tmp, "data")
	}
	flags := append([]string{"--heartbeat-policy", "always", "--max-records", fmt.Sprint(*records + 1000)}, cm.nodeArgs...)
	res.Target = "pushnode started by pushload (" + filepath.Base(cm.nodeBinary) + ")"

	n, err := startNode(ctx, cm.nodeBinary, data, flags, cm.nodeEnv, 60*time.Second)
	if err != nil {
		return err
	}
	defer n.Kill()
	sleepCtx(ctx, *settle)
	empty, err := readProcMem(n.Pid())
	if err != nil {
		return err
	}
	res.Metrics["empty_rss_bytes"] = float64(empty.RSS)
	res.Metrics["first_start_to_ready_s"] = n.ReadyAfter.Seconds()

	// Fill: one heartbeat per uuid; its 0x00 answer proves the record.
	ids := uuids(cm.prefix, 0, *records)
	f, err := newFleet(n.Client, ids, *sockets, *batch, byte(cm.appID))
	if err != nil {
		return err
	}
	var answered atomic.Int64
	st, err := drain(ctx, f, allIndices(len(ids)), drainConfig{window: *window, retry: time.Second, tries: 10, timeout: 10 * time.Minute},
		func(_ int, _ *phoneSock, phone int, m *wire.ServerMessage) verdict {
			if m.Cmd == wire.CmdHeartbeat && phone >= 0 {
				answered.Add(1)
				return finished
			}
			return waitMore
		})
	f.close()
	if err != nil {
		return fmt.Errorf("fill: %w", err)
	}
	if st.Failed > 0 {
		return fmt.Errorf("fill: %d heartbeats never answered", st.Failed)
	}
	res.Metrics["fill_heartbeats_per_s"] = float64(st.Done) / st.Last.Seconds()
	fmt.Fprintf(stdout, "created %d records by heartbeat in %.1fs (%.0f/s)\n", st.Done, st.Last.Seconds(), float64(st.Done)/st.Last.Seconds())
	// Memory is read once the node has written the records back (a node
	// that does not say so gets the settle time only): what it holds
	// then is what it keeps for them, not the write-back in progress.
	drainStart := time.Now()
	for ctx.Err() == nil && time.Since(drainStart) < 10*time.Minute {
		v, found, err := readMetric(ctx, n.HTTP, n.Token, "pushnode_writeback_pending_records")
		if err != nil || !found {
			break
		}
		if v == 0 {
			res.Metrics["writeback_drained_after_fill_s"] = time.Since(drainStart).Seconds()
			fmt.Fprintf(stdout, "written back %.1fs after the fill\n", time.Since(drainStart).Seconds())
			break
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
	sleepCtx(ctx, *settle)
	if live, err := readProcMem(n.Pid()); err == nil {
		res.Metrics["live_rss_bytes"] = float64(live.RSS)
		res.Metrics["live_rss_anon_bytes"] = float64(live.RSSAnon)
		res.Metrics["live_rss_file_bytes"] = float64(live.RSSFile)
		res.Metrics["live_rss_per_record"] = float64(live.RSS) / float64(*records)
		fmt.Fprintf(stdout, "after creating them live: VmRSS %.1f MB (anon %.1f MB, file %.1f MB), %.0f B a record\n",
			mb(live.RSS), mb(live.RSSAnon), mb(live.RSSFile), float64(live.RSS)/float64(*records))
	}
	if cm.profileDir != "" {
		// The heap of the records made live, and (debug=1) the runtime's
		// MemStats: what of the resident set is live heap, and what is
		// heap the runtime holds but has not returned.
		for name, q := range map[string]string{"scale.live.heap.pprof": "", "scale.live.heap.txt": "?debug=1"} {
			if err := fetchToFile(ctx, "http://"+n.HTTP+"/debug/pprof/heap"+q, n.Token, filepath.Join(cm.profileDir, name), time.Minute); err != nil {
				res.note("live heap profile not saved: %v", err)
			}
		}
	}
	stopTook, err := n.Stop(60 * time.Second)
	if err != nil {
		return fmt.Errorf("stop after fill: %w\n%s", err, n.Logs())
	}
	res.Metrics["graceful_stop_s"] = stopTook.Seconds()
	if fi, err := os.Stat(filepath.Join(data, "pushnode.db")); err == nil {
		res.Metrics["store_bytes"] = float64(fi.Size())
		res.Metrics["store_bytes_per_record"] = float64(fi.Size()) / float64(*records)
	} else {
		res.note("store size unknown: %v", err)
	}

	// Restarts: start to ready, then memory once idle.
	var readies []float64
	var mem procMem
	for r := range *restarts {
		n, err := startNode(ctx, cm.nodeBinary, data, flags, cm.nodeEnv, 120*time.Second)
		if err != nil {
			return fmt.Errorf("restart %d: %w", r+1, err)
		}
		readies = append(readies, n.ReadyAfter.Seconds())
		if n.Records != int64(*records) {
			res.note("restart %d: ready with %d records, want %d", r+1, n.Records, *records)
		}
		sleepCtx(ctx, *settle)
		m, err := readProcMem(n.Pid())
		if err != nil {
			n.Kill()
			return err
		}
		mem = m
		if r == *restarts-1 && cm.profileDir != "" {
			for name, q := range map[string]string{"scale.heap.pprof": "", "scale.heap.txt": "?debug=1"} {
				if err := fetchToFile(ctx, "http://"+n.HTTP+"/debug/pprof/heap"+q, n.Token, filepath.Join(cm.profileDir, name), time.Minute); err != nil {
					res.note("heap profile not saved: %v", err)
				}
			}
		}
		fmt.Fprintf(stdout, "restart %d: ready after %.3fs with %d records; VmRSS %.1f MB (anon %.1f MB, file %.1f MB)\n",
			r+1, n.ReadyAfter.Seconds(), n.Records, mb(m.RSS), mb(m.RSSAnon), mb(m.RSSFile))
		if _, err := n.Stop(60 * time.Second); err != nil {
			return fmt.Errorf("stop after restart %d: %w", r+1, err)
		}
	}
	sort.Float64s(readies)
	res.Metrics["records"] = float64(*records)
	res.Metrics["start_to_ready_s"] = median(readies)
	res.Metrics["start_to_ready_max_s"] = readies[len(readies)-1]
	res.Metrics["rss_bytes"] = float64(mem.RSS)
	res.Metrics["rss_anon_bytes"] = float64(mem.RSSAnon)
	res.Metrics["rss_file_bytes"] = float64(mem.RSSFile)
	res.Metrics["rss_hwm_bytes"] = float64(mem.HWM)
	res.Metrics["rss_per_record"] = float64(mem.RSS) / float64(*records)
	res.Metrics["rss_over_empty_per_record"] = float64(mem.RSS-empty.RSS) / float64(*records)
	res.Metrics["rss_anon_per_record"] = float64(mem.RSSAnon) / float64(*records)
	return res.emit(stdout, cm.out)
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

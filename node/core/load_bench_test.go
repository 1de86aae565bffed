package core

import (
	"crypto/md5"
	"encoding/binary"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"testing"

	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/store"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// BenchmarkOpenLoad opens a store of LOADBENCH_RECORDS (default 1M)
// idle records, as a node starts: the store is read into the table.
// It reports ns per record.
func BenchmarkOpenLoad(b *testing.B) {
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("LOADBENCH_RECORDS")); err == nil && v > 0 {
		n = v
	}
	dir := b.TempDir()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	var rec state.Record
	rec.LastSeen = 1_700_000_000_000_000_000
	rec.SetAddr(netip.MustParseAddrPort("192.0.2.1:40000"))
	val := rec.AppendBinary(nil)
	const per = 65536
	for done := 0; done < n; {
		var batch store.Batch
		for i := done; i < min(n, done+per); i++ {
			var k [8]byte
			binary.LittleEndian.PutUint64(k[:], uint64(i))
			batch.RecordKeys = append(batch.RecordKeys, wire.UUID(md5.Sum(k[:])))
			batch.RecordValues = append(batch.RecordValues, val)
		}
		if err := st.Commit(&batch); err != nil {
			b.Fatal(err)
		}
		done += len(batch.RecordKeys)
	}
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b.ResetTimer()
	for b.Loop() {
		c, err := Open(dir, Options{Logger: log})
		if err != nil {
			b.Fatal(err)
		}
		if c.Records() != int64(n) {
			b.Fatalf("loaded %d records, want %d", c.Records(), n)
		}
		if err := c.store.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/record")
}

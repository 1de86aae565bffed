package clients

import (
	"crypto/md5"
	"encoding/binary"
	"testing"

	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// BenchmarkLookupLarge looks up a million md5 uuids in random order: the
// index and the records no longer fit in the caches, as on a busy node.
func BenchmarkLookupLarge(b *testing.B) {
	tbl, _ := newTable(Config{CreateByHeartbeat: true})
	const n = 1 << 20
	us := make([]wire.UUID, n)
	for i := range us {
		var k [8]byte
		binary.LittleEndian.PutUint64(k[:], uint64(i))
		us[i] = md5.Sum(k[:])
		tbl.Heartbeat(1, us[i], state.UDP, addr, nil, 0, 1, nil)
	}
	b.ReportAllocs()
	x := uint64(1)
	for b.Loop() {
		x = x*6364136223846793005 + 1442695040888963407
		tbl.Get(1, us[x>>44])
	}
}

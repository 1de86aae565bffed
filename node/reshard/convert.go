package reshard

import (
	"fmt"
	"strconv"

	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/slotmap"
)

// MapOf builds a slot map from its API form.
func MapOf(s api.SlotMap) (slotmap.Map, error) {
	ranges := make([]slotmap.Range, len(s.Ranges))
	for i, r := range s.Ranges {
		ranges[i] = slotmap.Range{From: r.From, To: r.To, Ordinal: r.Ordinal}
	}
	peers := make(map[int]string, len(s.Peers))
	for k, v := range s.Peers {
		o, err := strconv.Atoi(k)
		if err != nil {
			return slotmap.Map{}, fmt.Errorf("%w: peer %q is not an ordinal", slotmap.ErrInvalid, k)
		}
		peers[o] = v
	}
	return slotmap.New(s.Epoch, ranges, peers)
}

// APIMap is the API form of a slot map.
func APIMap(m slotmap.Map) api.SlotMap {
	sp := m.Spec()
	out := api.SlotMap{Epoch: sp.Epoch, Ranges: make([]api.SlotRange, len(sp.Ranges)), Peers: map[string]string{}}
	for i, r := range sp.Ranges {
		out.Ranges[i] = api.SlotRange{From: r.From, To: r.To, Ordinal: r.Ordinal}
	}
	for o, a := range sp.Peers {
		out.Peers[strconv.Itoa(o)] = a
	}
	return out
}

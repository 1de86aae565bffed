// Package slotmap says which pod of a PushNode is the home of a uuid.
//
// A uuid belongs to one of 1024 slots (Slot); a Map gives every slot an
// owner ordinal and every ordinal the peer address its pod listens on.
// The operator computes maps (EvenSplit, Rebalance), pods receive them
// over the HTTP API (JSON) and keep them in bbolt (MarshalBinary), and
// the per-packet question "is this uuid mine?" is one array read
// (Map.Owner, Map.OwnerOf) that never allocates.
//
// A Map is immutable and always valid: New, EvenSplit, Rebalance and the
// decoders check it first (Spec.Validate) and leave nothing behind when it
// is not. The zero Map means "no map", which the node treats as owning
// every slot; asking it for an owner panics, so callers check IsZero.
//
// The package also fixes how push ids are partitioned between pods
// (IDBase, OrdinalOfID) and how a pod learns its ordinal from its name
// (OrdinalFromPodName). It does no I/O.
package slotmap

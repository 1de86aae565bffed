package store

import (
	"testing"

	bolt "go.etcd.io/bbolt"
)

func TestIncarnationSurvivesReopenAndIsNewForANewStore(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	first := s.Incarnation()
	if len(first) != 32 {
		t.Fatalf("incarnation %q: want 32 hex characters", first)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir)
	if got := s.Incarnation(); got != first {
		t.Fatalf("reopened store has incarnation %q, was %q", got, first)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	other := openT(t, t.TempDir())
	defer other.Close()
	if other.Incarnation() == first {
		t.Fatalf("a new store got the incarnation %q of another", first)
	}
}

// A store written before stores had an incarnation gets one when it is
// opened, and keeps it from then on.
func TestStoreWithoutIncarnationGetsOneThatStays(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	old := s.Incarnation()
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(metaIncarnation) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir)
	given := s.Incarnation()
	if given == "" || given == old {
		t.Fatalf("store without an incarnation was given %q (it had %q before it was removed)", given, old)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir)
	defer s.Close()
	if got := s.Incarnation(); got != given {
		t.Fatalf("incarnation %q was not kept: reopened with %q", given, got)
	}
}

// An incarnation that could not be written at open is written by the next
// commit that succeeds.
func TestUnwrittenIncarnationGoesOutWithTheNextCommit(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(metaIncarnation) }); err != nil {
		t.Fatal(err)
	}
	s.incarnationUnwritten.Store(true)
	if err := s.Commit(&Batch{NextEventSeq: 1}); err != nil {
		t.Fatal(err)
	}
	want := s.Incarnation()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir)
	defer s.Close()
	if got := s.Incarnation(); got != want {
		t.Fatalf("after a commit the store has incarnation %q, want %q", got, want)
	}
}

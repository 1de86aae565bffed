package controllers

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
)

func TestCacheBehindOwnWrite(t *testing.T) {
	r := &PushMessageReconciler{}
	pm := func(uid, rv string) *ddpushv1.PushMessage {
		return &ddpushv1.PushMessage{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "m", UID: types.UID(uid), ResourceVersion: rv}}
	}
	if r.cacheBehind(pm("u1", "10")) {
		t.Fatal("behind with no write recorded")
	}
	key := types.NamespacedName{Namespace: "ns", Name: "m"}
	r.writtenFrom.Store(key, writtenFrom{uid: "u1", rv: "10"})
	for range 3 {
		if !r.cacheBehind(pm("u1", "10")) {
			t.Fatal("the copy our write replaced is not seen as behind")
		}
	}
	// Another message of the same name (deleted and made again).
	if r.cacheBehind(pm("u2", "10")) {
		t.Fatal("a new message of the same name is seen as behind")
	}
	if _, ok := r.writtenFrom.Load(key); ok {
		t.Fatal("the entry outlived a copy that moved on")
	}
	r.writtenFrom.Store(key, writtenFrom{uid: "u1", rv: "10"})
	if r.cacheBehind(pm("u1", "11")) {
		t.Fatal("a newer copy is seen as behind")
	}
	if _, ok := r.writtenFrom.Load(key); ok {
		t.Fatal("the entry outlived the newer copy")
	}
	if r.cacheBehind(pm("u1", "10")) {
		t.Fatal("once the cache moved on, nothing is behind")
	}
}

package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

func TestExpand(t *testing.T) {
	env := envList{{"A", "x"}, {"PORT", "8080"}}
	for in, want := range map[string]string{
		"plain":          "plain",
		"$(A)":           "x",
		":$(PORT)":       ":8080",
		"$(MISSING)":     "$(MISSING)",
		"$$(A)":          "$(A)",
		"a$b":            "a$b",
		"$(A)-$(A)$":     "x-x$",
		"$(unterminated": "$(unterminated",
	} {
		if got := expand(in, env); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMapper(t *testing.T) {
	c := corev1.Container{VolumeMounts: []corev1.VolumeMount{
		{Name: "data", MountPath: "/data"},
		{Name: "token", MountPath: "/etc/pushnode/api"},
		{Name: "conf", MountPath: "/etc/pushnode/api/conf", SubPath: "sub"},
	}}
	vols := map[string]string{"data": "/h/vol", "token": "/h/pod/token", "conf": "/h/pod/conf"}
	m, err := newMapper("127.77.0.9", c, vols, nil)
	if err != nil {
		t.Fatal(err)
	}
	env := envList{
		{"PUSHNODE_DATA_DIR", "/data"},
		{"PUSHNODE_API_TOKEN_FILE", "/etc/pushnode/api/token"},
		{"NESTED", "/etc/pushnode/api/conf/x.yaml"},
		{"PUSHNODE_CLIENT_ADDR", ":9966"},
		{"ANY", "0.0.0.0:1"},
		{"UNRELATED", "/database"},
		{"HOSTPORT", "10.0.0.1:80"},
	}
	want := []string{
		"PUSHNODE_DATA_DIR=/h/vol",
		"PUSHNODE_API_TOKEN_FILE=/h/pod/token/token",
		"NESTED=/h/pod/conf/sub/x.yaml",
		"PUSHNODE_CLIENT_ADDR=127.77.0.9:9966",
		"ANY=127.77.0.9:1",
		"UNRELATED=/database",
		"HOSTPORT=10.0.0.1:80",
	}
	if got := m.environ(env); !slices.Equal(got, want) {
		t.Errorf("environ:\n got %q\nwant %q", got, want)
	}
	args := m.args([]string{"--leader-elect", "--health-probe-bind-address=:8081", "--dir", "/data/x", "--port=$(P)"}, envList{{"P", ":1"}})
	wantArgs := []string{"--leader-elect", "--health-probe-bind-address=127.77.0.9:8081", "--dir", "/h/vol/x", "--port=127.77.0.9:1"}
	if !slices.Equal(args, wantArgs) {
		t.Errorf("args: got %q, want %q", args, wantArgs)
	}
	if _, err := newMapper("127.77.0.9", corev1.Container{VolumeMounts: []corev1.VolumeMount{{Name: "nope", MountPath: "/x"}}}, vols, nil); err == nil {
		t.Error("a mount of an unknown volume was accepted")
	}
}

func TestIPAM(t *testing.T) {
	a := newIPAM()
	sts0, _ := a.allocate("uid-1", "default/pushnode-0", "")
	mgr, _ := a.allocate("uid-2", "system/manager-abc", "")
	if sts0 == mgr {
		t.Fatalf("two pods share %s", sts0)
	}
	if again, _ := a.allocate("uid-1", "default/pushnode-0", ""); again != sts0 {
		t.Errorf("the same pod got %s, then %s", sts0, again)
	}
	// The StatefulSet's pod comes back under the same name: its old
	// address, once the old pod released it.
	a.release("uid-1", sts0)
	back, _ := a.allocate("uid-3", "default/pushnode-0", "")
	if back != sts0 {
		t.Errorf("the recreated pod got %s, want its old %s", back, sts0)
	}
	// While an address is held (a forced deletion: the old processes still
	// stop), a pod of the same name gets another one, and keeps that.
	forced, _ := a.allocate("uid-4", "default/pushnode-0", "")
	if forced == back {
		t.Errorf("an address still held was given to another pod")
	}
	a.release("uid-3", back)
	a.release("uid-4", forced)
	if again, _ := a.allocate("uid-5", "default/pushnode-0", ""); again != forced {
		t.Errorf("the pod got %s, want its name's last address %s", again, forced)
	}
	// A new name does not take an address another name had.
	a.release("uid-2", mgr)
	if other, _ := a.allocate("uid-6", "default/other", ""); other == mgr {
		t.Errorf("a new pod took the address %s that another pod name had", other)
	}
	a.release(types.UID("not-holder"), forced) // ignored
	if taken, _ := a.allocate("uid-7", "default/third", forced); taken == forced {
		t.Errorf("release by a non-holder freed %s", forced)
	}
}

func TestPidFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "self.pid")
	if err := writePid(p, os.Getpid()); err != nil {
		t.Fatal(err)
	}
	r, err := readPid(p)
	if err != nil || r.pid != os.Getpid() || !r.alive() {
		t.Fatalf("readPid = %+v, %v; alive %v", r, err, r.alive())
	}
	r.start++ // another process that got the same pid later
	if r.alive() {
		t.Error("a pid with another start time counts as ours")
	}
}

package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// layout is where the local cluster keeps its state. Everything is under
// one directory (.localcluster at the repository root by default):
//
//	kubeconfig               admin kubeconfig (system:masters)
//	cluster.json             ports chosen by up
//	pki/                     CA, apiserver serving cert, admin cert, service-account keys
//	etcd/                    etcd's data
//	pids/<name>.pid          processes started by up
//	pids/pods/<ns>_<pod>_<uid>_<container>.pid  processes started by the runner
//	logs/<name>.log          one log per component
//	logs/pods/<ns>_<pod>_<container>.log
//	pods/<ns>_<pod>_<uid>/   a pod's ConfigMap, Secret, downward API and emptyDir volumes
//	volumes/<ns>/<pvc>/      PersistentVolumeClaims (outlive pods and claims)
type layout struct{ dir string }

func newLayout(dir string) (layout, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return layout{}, err
	}
	return layout{dir: abs}, nil
}

func (l layout) path(elem ...string) string {
	return filepath.Join(append([]string{l.dir}, elem...)...)
}

func (l layout) kubeconfig() string         { return l.path("kubeconfig") }
func (l layout) clusterFile() string        { return l.path("cluster.json") }
func (l layout) pki(name string) string     { return l.path("pki", name) }
func (l layout) etcdData() string           { return l.path("etcd") }
func (l layout) pidFile(name string) string { return l.path("pids", name+".pid") }
func (l layout) podPidDir() string          { return l.path("pids", "pods") }
func (l layout) log(name string) string     { return l.path("logs", name+".log") }
func (l layout) podLog(ns, pod, c string) string {
	return l.path("logs", "pods", ns+"_"+pod+"_"+c+".log")
}
func (l layout) podDir(ns, pod, uid string) string {
	return l.path("pods", ns+"_"+pod+"_"+uid)
}
func (l layout) volume(ns, pvc string) string { return l.path("volumes", ns, pvc) }

// components in start order; down stops them in reverse.
var components = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "runner"}

// repoRoot is the nearest directory above the working directory holding
// this module's go.mod.
func repoRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return ".", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/ddpush/ddpush-operator\n") {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return ".", errors.New("not inside the ddpush-operator repository: pass --dir and --bin")
		}
		d = parent
	}
}

// k8sBinaries runs hack/k8s-binaries.sh (which builds them on first use)
// and returns the directory it prints.
func k8sBinaries(root string) (string, error) {
	cmd := exec.Command(filepath.Join(root, "hack", "k8s-binaries.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/k8s-binaries.sh: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

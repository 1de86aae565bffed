// Command etcd is the etcd server, built from source for the project's tests.
//
// envtest needs an etcd binary next to kube-apiserver, and no prebuilt release
// can be downloaded here; only Go modules can. etcd's own main package lives
// in the go.etcd.io/etcd/v3 root module, which drags in etcdctl/etcdutl and
// their dependencies, so this three-line main calls the same entry point from
// go.etcd.io/etcd/server/v3, at the version k8s.io/kubernetes itself pins.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}

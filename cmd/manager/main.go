// Command manager runs the ddpush operator: the PushNode and PushMessage
// controllers, with leader election, metrics and health probes.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/controllers"
	"github.com/ddpush/ddpush-operator/controllers/builders"
	"github.com/ddpush/ddpush-operator/node"
)

// DefaultImage is the image holding both programs; releases set the tag.
var DefaultImage = "ghcr.io/ddpush/ddpush-operator:" + defaultTag()

func defaultTag() string {
	if node.Version == "dev" || node.Version == "" {
		return "latest"
	}
	return node.Version
}

func main() {
	var metricsAddr, probeAddr, image, leaderNS, netpolAllowed string
	var leaderElect, secureMetrics, netpol bool
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8443", "address of the metrics endpoint (0 disables it)")
	flag.BoolVar(&secureMetrics, "metrics-secure", true,
		"serve metrics over HTTPS to callers the API server authenticates and authorizes for get /metrics; false serves plain HTTP to anyone")
	flag.BoolVar(&netpol, "network-policy", true, "give every PushNode a NetworkPolicy unless its spec.networkPolicy.enabled says otherwise")
	flag.StringVar(&netpolAllowed, "network-policy-allowed-namespaces", "",
		"comma-separated namespaces allowed to reach every node's push port and HTTP API, besides the node's own and the operator's")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	flag.BoolVar(&leaderElect, "leader-elect", false, "elect a leader so that only one manager acts at a time")
	flag.StringVar(&leaderNS, "leader-election-namespace", os.Getenv("POD_NAMESPACE"),
		"namespace of the leader lease (default $POD_NAMESPACE; needed when not running in a pod with a service account)")
	flag.StringVar(&image, "pushnode-image", DefaultImage, "image of push nodes whose PushNode names none")
	var watchNamespaces string
	flag.StringVar(&watchNamespaces, "watch-namespaces", "",
		"comma-separated namespaces whose PushNodes and PushMessages the operator manages (default: every namespace)")
	workers := flag.Int("pushmessage-workers", controllers.DefaultPushMessageWorkers,
		"PushMessages reconciled at once (each may wait on a node's commit)")
	deletedGrace := flag.Duration("pushnode-deleted-grace", controllers.DefaultPushNodeDeletedGrace,
		"how long a submitted PushMessage outlives its deleted PushNode before it fails (reason PushNodeDeleted); a PushNode recreated sooner picks it up again")
	peerAddresses := flag.String("peer-addresses", "dns",
		"how the pods of a sharded PushNode are named in its slot map: dns (<pod>.<headless service>.<namespace>.svc) or pod-ip (for clusters without cluster DNS)")
	version := flag.Bool("version", false, "print the version and exit")
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	if *version {
		fmt.Println(node.Version)
		return
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("setup")

	namespaces, err := controllers.ParseNamespaces(watchNamespaces)
	if err != nil {
		log.Error(err, "invalid --watch-namespaces")
		os.Exit(2)
	}

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(ddpushv1.AddToScheme(scheme))

	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsOptions(metricsAddr, secureMetrics),
		HealthProbeBindAddress:  probeAddr,
		LeaderElection:          leaderElect,
		LeaderElectionID:        "ddpush-operator.ddpush.dev",
		LeaderElectionNamespace: leaderNS,
		Cache:                   controllers.CacheOptions(namespaces),
	})
	if err != nil {
		log.Error(err, "cannot create the manager")
		os.Exit(1)
	}
	bopts := builders.Options{DefaultImage: image, NetworkPolicy: builders.NetworkPolicyOptions{
		Enabled: netpol, OperatorNamespace: leaderNS, AllowedNamespaces: splitList(netpolAllowed),
	}}
	if *workers < 1 {
		log.Error(fmt.Errorf("--pushmessage-workers=%d: want at least 1", *workers), "invalid flag")
		os.Exit(2)
	}
	if *peerAddresses != "dns" && *peerAddresses != "pod-ip" {
		log.Error(fmt.Errorf("--peer-addresses=%q: want dns or pod-ip", *peerAddresses), "invalid flag")
		os.Exit(2)
	}
	if *deletedGrace <= 0 {
		log.Error(fmt.Errorf("%v is not positive", *deletedGrace), "invalid --pushnode-deleted-grace")
		os.Exit(2)
	}
	if err := controllers.Setup(mgr, controllers.Options{Builders: bopts, PushMessageWorkers: *workers, PushNodeDeletedGrace: *deletedGrace,
		PeerByPodIP: *peerAddresses == "pod-ip"}); err != nil {
		log.Error(err, "cannot set up the controllers")
		os.Exit(1)
	}
	utilruntime.Must(mgr.AddHealthzCheck("healthz", healthz.Ping))
	utilruntime.Must(mgr.AddReadyzCheck("readyz", healthz.Ping))
	log.Info("starting", "version", node.Version, "pushnode-image", image, "watch-namespaces", namespaces)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		log.Error(err, "manager stopped")
		os.Exit(1)
	}
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

package builders

import (
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
)

// Where the node finds its data and token inside the pod.
const (
	DataDir       = "/data"
	TokenDir      = "/etc/pushnode/api"
	TokenFilePath = TokenDir + "/" + TokenKey
	// PeerTokenFilePath is where a sharded pod reads its peer secret.
	PeerTokenFilePath = TokenDir + "/" + PeerTokenKey
)

// ConfigMapBuilder builds the node settings, as the PUSHNODE_* variables
// the node reads.
type ConfigMapBuilder struct{ PN *ddpushv1.PushNode }

func (b *ConfigMapBuilder) Object() client.Object {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: ConfigMapName(b.PN), Namespace: b.PN.Namespace}}
}

func (b *ConfigMapBuilder) Update(obj client.Object) error {
	cm := obj.(*corev1.ConfigMap)
	setMeta(cm, b.PN)
	cm.Data = NodeEnv(b.PN)
	return nil
}

// NodeEnv is the node's configuration as environment variables.
func NodeEnv(pn *ddpushv1.PushNode) map[string]string {
	s := Defaulted(pn).Spec
	st := s.Settings
	return map[string]string{
		"PUSHNODE_DATA_DIR":            DataDir,
		"PUSHNODE_API_TOKEN_FILE":      TokenFilePath,
		"PUSHNODE_CLIENT_ADDR":         ":" + itoa(s.Ports.Client),
		"PUSHNODE_PUSH_ADDR":           ":" + itoa(s.Ports.Push),
		"PUSHNODE_HTTP_ADDR":           ":" + itoa(s.Ports.HTTP),
		"PUSHNODE_UDP":                 strconv.FormatBool(*s.ClientService.UDP),
		"PUSHNODE_TCP":                 strconv.FormatBool(*s.ClientService.TCP),
		"PUSHNODE_HEARTBEAT_POLICY":    string(st.HeartbeatPolicy),
		"PUSHNODE_MAX_CONTENT_LENGTH":  itoa(st.MaxContentLength),
		"PUSHNODE_ONLINE_WINDOW":       seconds(int64(*st.OnlineWindowSeconds)),
		"PUSHNODE_EXPIRY_AGE":          seconds(*st.ExpiryAgeSeconds),
		"PUSHNODE_CREATE_BY_HEARTBEAT": strconv.FormatBool(*st.CreateByHeartbeat),
		"PUSHNODE_MAX_RECORDS":         strconv.FormatInt(*st.MaxRecords, 10),
		"PUSHNODE_RATE_LIMIT":          itoa(*st.RateLimit),
		"PUSHNODE_LOG_FORMAT":          "json",
	}
}

// seconds is a count of seconds as the duration the node's flags read.
func seconds(n int64) string { return (time.Duration(n) * time.Second).String() }

package builders

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
)

// SecretBuilder builds the Secret holding the node's API token and, for a
// sharded PushNode, the pods' peer secret. Each is made once: an existing
// one is never replaced, so nothing rotates it by accident.
type SecretBuilder struct {
	PN       *ddpushv1.PushNode
	NewToken func() (string, error)
	// Token, when set, receives a hash of the token the Secret holds after
	// Update, for the pod template (see TokenHash).
	Token *TokenHash
}

// TokenHash carries a hash of the API token from the Secret builder to the
// StatefulSet builder of the same reconcile. The node reads its token file
// once, at start: with the hash in the pod template, a Secret that was
// deleted and made again with a new token rolls the pods, instead of
// leaving the node answering 401 to the operator for ever.
type TokenHash struct{ Value string }

// record hashes the token and, when there is one, the peer secret: the
// hash of a Secret without a peer secret is the hash of the token alone,
// as before there were peer secrets, so a one-pod PushNode's pod does not
// roll when the operator is upgraded.
func (h *TokenHash) record(token, peer []byte) {
	if h == nil {
		return
	}
	d := sha256.New()
	d.Write(token)
	if len(peer) > 0 {
		d.Write([]byte{0})
		d.Write(peer)
	}
	h.Value = hex.EncodeToString(d.Sum(nil))[:16]
}

func (b *SecretBuilder) Object() client.Object {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: SecretName(b.PN), Namespace: b.PN.Namespace}}
}

func (b *SecretBuilder) Update(obj client.Object) error {
	s := obj.(*corev1.Secret)
	setMeta(s, b.PN)
	s.Type = corev1.SecretTypeOpaque
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	gen := b.NewToken
	if gen == nil {
		gen = RandomToken
	}
	keys := []struct{ key, what string }{{TokenKey, "API token"}}
	if Sharded(b.PN) {
		keys = append(keys, struct{ key, what string }{PeerTokenKey, "peer secret"})
	}
	for _, k := range keys {
		if len(s.Data[k.key]) > 0 {
			continue
		}
		t, err := gen()
		if err != nil {
			return fmt.Errorf("generate %s: %w", k.what, err)
		}
		s.Data[k.key] = []byte(t)
	}
	b.Token.record(s.Data[TokenKey], s.Data[PeerTokenKey])
	return nil
}

// RandomToken is 32 random bytes in hex.
func RandomToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

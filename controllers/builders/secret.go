package builders

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
)

// SecretBuilder builds the Secret holding the node's API token. The token
// is made once: an existing one is never replaced, so nothing rotates it by
// accident.
type SecretBuilder struct {
	PN       *ddpushv1.PushNode
	NewToken func() (string, error)
}

func (b *SecretBuilder) Object() client.Object {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: SecretName(b.PN), Namespace: b.PN.Namespace}}
}

func (b *SecretBuilder) Update(obj client.Object) error {
	s := obj.(*corev1.Secret)
	setMeta(s, b.PN)
	s.Type = corev1.SecretTypeOpaque
	if len(s.Data[TokenKey]) > 0 {
		return nil
	}
	gen := b.NewToken
	if gen == nil {
		gen = RandomToken
	}
	t, err := gen()
	if err != nil {
		return fmt.Errorf("generate API token: %w", err)
	}
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	s.Data[TokenKey] = []byte(t)
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

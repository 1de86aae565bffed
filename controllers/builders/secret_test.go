package builders

import (
	"errors"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestSecretNewGetsRandomToken(t *testing.T) {
	b := &SecretBuilder{PN: newPN()} // NewToken nil: RandomToken
	s := b.Object().(*corev1.Secret)
	if err := b.Update(s); err != nil {
		t.Fatal(err)
	}
	tok := string(s.Data[TokenKey])
	if !hex64.MatchString(tok) {
		t.Errorf("token %q is not 64 lowercase hex characters", tok)
	}
	if s.Type != corev1.SecretTypeOpaque {
		t.Errorf("type = %q, want Opaque", s.Type)
	}
	if s.Labels[LabelInstance] != "edge" {
		t.Errorf("labels = %v", s.Labels)
	}
	// Another Secret gets another token.
	s2 := b.Object().(*corev1.Secret)
	if err := b.Update(s2); err != nil {
		t.Fatal(err)
	}
	if string(s2.Data[TokenKey]) == tok {
		t.Errorf("two new Secrets got the same token %q", tok)
	}
}

func TestRandomToken(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		tok, err := RandomToken()
		if err != nil {
			t.Fatal(err)
		}
		if !hex64.MatchString(tok) {
			t.Fatalf("RandomToken() = %q, want 64 hex characters", tok)
		}
		if seen[tok] {
			t.Fatalf("RandomToken repeated %q", tok)
		}
		seen[tok] = true
	}
}

func TestSecretInjectedToken(t *testing.T) {
	const injected = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	calls := 0
	b := &SecretBuilder{PN: newPN(), NewToken: func() (string, error) { calls++; return injected, nil }}
	s := b.Object().(*corev1.Secret)
	if err := b.Update(s); err != nil {
		t.Fatal(err)
	}
	if got := string(s.Data[TokenKey]); got != injected || calls != 1 {
		t.Errorf("token = %q after %d calls, want the injected token after 1", got, calls)
	}
	// Update runs on every reconcile; the token must never rotate.
	for range 50 {
		if err := b.Update(s); err != nil {
			t.Fatal(err)
		}
	}
	if got := string(s.Data[TokenKey]); got != injected || calls != 1 {
		t.Errorf("token rotated: %q after %d calls", got, calls)
	}
}

func TestSecretExistingTokenKept(t *testing.T) {
	const existing = "users-own-token\n" // exactly, not trimmed or re-encoded
	b := &SecretBuilder{PN: newPN(), NewToken: func() (string, error) {
		t.Errorf("NewToken called although the Secret has a token")
		return "new", nil
	}}
	s := b.Object().(*corev1.Secret)
	s.CreationTimestamp = metav1.Now()
	s.Data = map[string][]byte{TokenKey: []byte(existing), "other": []byte("x")}
	s.Labels = map[string]string{"foreign": "yes"}
	for range 20 {
		if err := b.Update(s); err != nil {
			t.Fatal(err)
		}
	}
	if got := string(s.Data[TokenKey]); got != existing {
		t.Errorf("token = %q, want %q kept exactly", got, existing)
	}
	if string(s.Data["other"]) != "x" {
		t.Errorf("other keys of the Secret were dropped: %v", s.Data)
	}
	if s.Labels["foreign"] != "yes" || s.Labels[LabelInstance] != "edge" {
		t.Errorf("labels = %v", s.Labels)
	}

	// The same with RandomToken as generator.
	b2 := &SecretBuilder{PN: newPN()}
	s2 := b2.Object().(*corev1.Secret)
	s2.Data = map[string][]byte{TokenKey: []byte(existing)}
	for range 20 {
		if err := b2.Update(s2); err != nil {
			t.Fatal(err)
		}
	}
	if got := string(s2.Data[TokenKey]); got != existing {
		t.Errorf("token = %q, want %q kept exactly", got, existing)
	}
}

func TestSecretEmptyTokenFilled(t *testing.T) {
	for name, data := range map[string]map[string][]byte{
		"nil data":    nil,
		"empty token": {TokenKey: {}},
		"no token":    {"other": []byte("x")},
	} {
		t.Run(name, func(t *testing.T) {
			b := &SecretBuilder{PN: newPN()}
			s := b.Object().(*corev1.Secret)
			s.CreationTimestamp = metav1.Now()
			s.Data = data
			if err := b.Update(s); err != nil {
				t.Fatal(err)
			}
			if tok := string(s.Data[TokenKey]); !hex64.MatchString(tok) {
				t.Errorf("token = %q, want a new 64-hex token", tok)
			}
		})
	}
}

func TestSecretNewTokenError(t *testing.T) {
	boom := errors.New("entropy exhausted")
	b := &SecretBuilder{PN: newPN(), NewToken: func() (string, error) { return "", boom }}
	s := b.Object().(*corev1.Secret)
	err := b.Update(s)
	if err == nil {
		t.Fatalf("Update succeeded although NewToken failed; token %q", s.Data[TokenKey])
	}
	if !errors.Is(err, boom) {
		t.Errorf("error %v does not wrap the NewToken error", err)
	}
	if len(s.Data[TokenKey]) != 0 {
		t.Errorf("a token was stored although NewToken failed: %q", s.Data[TokenKey])
	}
}

// ---------------------------------------------------------------- Services

// The pod template carries a hash of the token the Secret holds, new or
// kept, so a Secret made again with another token rolls the pods; the
// same token leaves the template as it was.
func TestPodTemplateFollowsTheToken(t *testing.T) {
	template := func(existing *corev1.Secret) (map[string]string, *corev1.Secret) {
		t.Helper()
		bs := For(newPN(), Options{DefaultImage: testImage})
		s := existing
		if s == nil {
			s = bs[1].Object().(*corev1.Secret)
		}
		if err := bs[1].Update(s); err != nil {
			t.Fatal(err)
		}
		sts := bs[len(bs)-1].Object()
		if err := bs[len(bs)-1].Update(sts); err != nil {
			t.Fatal(err)
		}
		return sts.(*appsv1.StatefulSet).Spec.Template.Annotations, s
	}
	first, secret := template(nil)
	h := first[AnnotationTokenHash]
	if len(h) != 16 || strings.Contains(h, string(secret.Data[TokenKey])) {
		t.Fatalf("token hash %q: want 16 hex characters that do not reveal the token", h)
	}
	again, _ := template(secret.DeepCopy())
	if again[AnnotationTokenHash] != h {
		t.Errorf("same token, hash %q then %q: the pods would roll for nothing", h, again[AnnotationTokenHash])
	}
	remade, _ := template(nil)
	if remade[AnnotationTokenHash] == h {
		t.Errorf("a new token kept hash %q: the node would keep its old token", h)
	}
	// A StatefulSet builder used on its own (no Secret builder before it)
	// adds no empty annotation.
	b := &StatefulSetBuilder{PN: newPN(), DefaultImage: testImage}
	sts := b.Object()
	if err := b.Update(sts); err != nil {
		t.Fatal(err)
	}
	if v, ok := sts.(*appsv1.StatefulSet).Spec.Template.Annotations[AnnotationTokenHash]; ok {
		t.Errorf("token hash %q without a Secret builder", v)
	}
}

// A sharded PushNode's pods authenticate each other with a secret of their
// own, made once beside the API token; a one-pod PushNode gets none, and
// its pod template's token hash is what it was before peer secrets
// existed, so upgrading the operator does not roll it.
func TestSecretPeerSecret(t *testing.T) {
	n := 0
	gen := func() (string, error) { n++; return strings.Repeat(string(rune('a'+n)), 8), nil }

	var one TokenHash
	b := &SecretBuilder{PN: newPN(), NewToken: gen, Token: &one}
	s := b.Object().(*corev1.Secret)
	if err := b.Update(s); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Data[PeerTokenKey]; ok {
		t.Errorf("a one-pod PushNode got a peer secret: %v", s.Data)
	}
	var tokenOnly TokenHash
	tokenOnly.record(s.Data[TokenKey], nil)
	if one.Value != tokenOnly.Value || one.Value == "" {
		t.Errorf("one-pod hash %q, want the hash of the token alone %q", one.Value, tokenOnly.Value)
	}

	var h TokenHash
	sb := &SecretBuilder{PN: shardedPN(3), NewToken: gen, Token: &h}
	ss := sb.Object().(*corev1.Secret)
	if err := sb.Update(ss); err != nil {
		t.Fatal(err)
	}
	tok, peer := string(ss.Data[TokenKey]), string(ss.Data[PeerTokenKey])
	if tok == "" || peer == "" || tok == peer {
		t.Fatalf("token %q, peer secret %q: want two different secrets", tok, peer)
	}
	first := h.Value
	for range 5 {
		if err := sb.Update(ss); err != nil {
			t.Fatal(err)
		}
	}
	if string(ss.Data[TokenKey]) != tok || string(ss.Data[PeerTokenKey]) != peer || h.Value != first {
		t.Errorf("secrets or hash changed on update: %v, hash %q then %q", ss.Data, first, h.Value)
	}

	// A Secret made before peer secrets existed gets one, keeps its
	// token, and the hash changes so that the pods pick the secret up.
	old := sb.Object().(*corev1.Secret)
	old.Data = map[string][]byte{TokenKey: []byte("users-own-token")}
	if err := sb.Update(old); err != nil {
		t.Fatal(err)
	}
	if string(old.Data[TokenKey]) != "users-own-token" || len(old.Data[PeerTokenKey]) == 0 {
		t.Errorf("after update: %v", old.Data)
	}
	tokenOnly.record([]byte("users-own-token"), nil)
	if h.Value == tokenOnly.Value {
		t.Errorf("the hash ignores the peer secret")
	}

	// A failing generator is reported and names what it was making.
	fail := &SecretBuilder{PN: shardedPN(3), NewToken: func() (string, error) { return "", errors.New("no entropy") }}
	fs := fail.Object().(*corev1.Secret)
	fs.Data = map[string][]byte{TokenKey: []byte("t")}
	if err := fail.Update(fs); err == nil || !strings.Contains(err.Error(), "peer secret") {
		t.Errorf("err %v, want one naming the peer secret", err)
	}
}

package main

import (
	"context"
	"fmt"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// envVar is one variable in the order the kubelet resolves them: envFrom
// first, then env (later wins).
type envVar struct{ name, value string }

type envList []envVar

func (e *envList) set(name, value string) {
	for i := range *e {
		if (*e)[i].name == name {
			(*e)[i].value = value
			return
		}
	}
	*e = append(*e, envVar{name, value})
}

func (e envList) lookup(name string) (string, bool) {
	for _, v := range e {
		if v.name == name {
			return v.value, true
		}
	}
	return "", false
}

// containerEnv resolves env and envFrom (ConfigMaps, Secrets, the
// downward API) as the kubelet would, before any rewriting.
func (w *podWorker) containerEnv(ctx context.Context, c corev1.Container) (envList, error) {
	var env envList
	ns := w.pod.Namespace
	for _, from := range c.EnvFrom {
		var data map[string]string
		switch {
		case from.ConfigMapRef != nil:
			cm, err := w.r.cs.CoreV1().ConfigMaps(ns).Get(ctx, from.ConfigMapRef.Name, metav1.GetOptions{})
			if err != nil {
				if apierrors.IsNotFound(err) && isTrue(from.ConfigMapRef.Optional) {
					continue
				}
				return nil, fmt.Errorf("envFrom configmap %q: %w", from.ConfigMapRef.Name, err)
			}
			data = cm.Data
		case from.SecretRef != nil:
			s, err := w.r.cs.CoreV1().Secrets(ns).Get(ctx, from.SecretRef.Name, metav1.GetOptions{})
			if err != nil {
				if apierrors.IsNotFound(err) && isTrue(from.SecretRef.Optional) {
					continue
				}
				return nil, fmt.Errorf("envFrom secret %q: %w", from.SecretRef.Name, err)
			}
			data = map[string]string{}
			for k, v := range s.Data {
				data[k] = string(v)
			}
		}
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if len(validation.IsEnvVarName(from.Prefix+k)) == 0 {
				env.set(from.Prefix+k, data[k])
			}
		}
	}
	for _, v := range c.Env {
		if v.ValueFrom == nil {
			env.set(v.Name, expand(v.Value, env))
			continue
		}
		val, skip, err := w.envValueFrom(ctx, v.ValueFrom)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", v.Name, err)
		}
		if !skip {
			env.set(v.Name, val)
		}
	}
	return env, nil
}

func (w *podWorker) envValueFrom(ctx context.Context, src *corev1.EnvVarSource) (val string, skip bool, err error) {
	ns := w.pod.Namespace
	switch {
	case src.ConfigMapKeyRef != nil:
		r := src.ConfigMapKeyRef
		cm, err := w.r.cs.CoreV1().ConfigMaps(ns).Get(ctx, r.Name, metav1.GetOptions{})
		if err != nil {
			return "", isTrue(r.Optional) && apierrors.IsNotFound(err), optionalErr(r.Optional, err)
		}
		v, ok := cm.Data[r.Key]
		if !ok {
			return "", isTrue(r.Optional), optionalErr(r.Optional, fmt.Errorf("configmap %q has no key %q", r.Name, r.Key))
		}
		return v, false, nil
	case src.SecretKeyRef != nil:
		r := src.SecretKeyRef
		s, err := w.r.cs.CoreV1().Secrets(ns).Get(ctx, r.Name, metav1.GetOptions{})
		if err != nil {
			return "", isTrue(r.Optional) && apierrors.IsNotFound(err), optionalErr(r.Optional, err)
		}
		v, ok := s.Data[r.Key]
		if !ok {
			return "", isTrue(r.Optional), optionalErr(r.Optional, fmt.Errorf("secret %q has no key %q", r.Name, r.Key))
		}
		return string(v), false, nil
	case src.FieldRef != nil:
		v, err := w.fieldValue(src.FieldRef.FieldPath)
		return v, false, err
	}
	return "", false, fmt.Errorf("resourceFieldRef and fileKeyRef are not supported by the local runner")
}

func optionalErr(optional *bool, err error) error {
	if isTrue(optional) {
		return nil
	}
	return err
}

func isTrue(b *bool) bool { return b != nil && *b }

var labelRef = regexp.MustCompile(`^metadata\.(labels|annotations)\['(.+)'\]$`)

// fieldValue is the downward API.
func (w *podWorker) fieldValue(fieldPath string) (string, error) {
	p := w.pod
	switch fieldPath {
	case "metadata.name":
		return p.Name, nil
	case "metadata.namespace":
		return p.Namespace, nil
	case "metadata.uid":
		return string(p.UID), nil
	case "metadata.labels":
		return formatMap(p.Labels), nil
	case "metadata.annotations":
		return formatMap(p.Annotations), nil
	case "spec.nodeName":
		return nodeName, nil
	case "spec.serviceAccountName":
		return p.Spec.ServiceAccountName, nil
	case "status.podIP", "status.podIPs":
		return w.ip, nil
	case "status.hostIP", "status.hostIPs":
		return hostIP, nil
	}
	if m := labelRef.FindStringSubmatch(fieldPath); m != nil {
		if m[1] == "labels" {
			return p.Labels[m[2]], nil
		}
		return p.Annotations[m[2]], nil
	}
	return "", fmt.Errorf("field %q is not supported by the local runner", fieldPath)
}

func formatMap(m map[string]string) string {
	var lines []string
	for k, v := range m {
		lines = append(lines, fmt.Sprintf("%s=%q", k, v))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// expand replaces $(VAR) with the variable's value if it is defined, and
// $$ with $, as the kubelet does in env values, command and args.
func expand(s string, env envList) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			if end := strings.IndexByte(s[i+2:], ')'); end >= 0 {
				name := s[i+2 : i+2+end]
				if v, ok := env.lookup(name); ok {
					b.WriteString(v)
				} else {
					b.WriteString(s[i : i+3+end])
				}
				i += 2 + end
				continue
			}
			b.WriteByte('$')
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// mapper turns what a container sees into what the local process sees:
// mount paths become host directories, and a listen address ":PORT"
// (or 0.0.0.0:PORT) becomes "<pod IP>:PORT", so that every pod can use
// the same ports on its own loopback address.
type mapper struct {
	ip     string
	mounts []mount // longest mount path first
}

type mount struct{ path, host string }

func newMapper(ip string, c corev1.Container, vols map[string]string, env envList) (*mapper, error) {
	m := &mapper{ip: ip}
	for _, vm := range c.VolumeMounts {
		host, ok := vols[vm.Name]
		if !ok {
			return nil, fmt.Errorf("volume mount %q names no volume of the pod", vm.Name)
		}
		sub := vm.SubPath
		if vm.SubPathExpr != "" {
			sub = expand(vm.SubPathExpr, env)
		}
		if sub != "" {
			if !filepath.IsLocal(sub) {
				return nil, fmt.Errorf("volume mount %q: subPath %q leaves the volume", vm.Name, sub)
			}
			host = filepath.Join(host, sub)
		}
		m.mounts = append(m.mounts, mount{path: path.Clean(vm.MountPath), host: host})
	}
	slices.SortFunc(m.mounts, func(a, b mount) int { return len(b.path) - len(a.path) })
	return m, nil
}

var listenAddr = regexp.MustCompile(`^(|0\.0\.0\.0|\[::\]):([0-9]+)$`)

// path maps a container path to the host, if it is under a mount.
func (m *mapper) path(p string) string {
	for _, mt := range m.mounts {
		if p == mt.path || strings.HasPrefix(p, mt.path+"/") || mt.path == "/" {
			return filepath.Join(mt.host, strings.TrimPrefix(p, mt.path))
		}
	}
	return p
}

// value rewrites one env value or flag value.
func (m *mapper) value(v string) string {
	if g := listenAddr.FindStringSubmatch(v); g != nil {
		return m.ip + ":" + g[2]
	}
	if strings.HasPrefix(v, "/") {
		return m.path(v)
	}
	return v
}

func (m *mapper) environ(env envList) []string {
	out := make([]string, 0, len(env)+4)
	for _, v := range env {
		out = append(out, v.name+"="+m.value(v.value))
	}
	return out
}

// args expands $(VAR) in command and args, then rewrites each argument,
// or the value of each --flag=value.
func (m *mapper) args(in []string, env envList) []string {
	out := make([]string, len(in))
	for i, a := range in {
		a = expand(a, env)
		if strings.HasPrefix(a, "-") {
			if flag, val, ok := strings.Cut(a, "="); ok {
				out[i] = flag + "=" + m.value(val)
				continue
			}
		}
		out[i] = m.value(a)
	}
	return out
}

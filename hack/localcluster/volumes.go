package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// unsupportedVolumes says which volumes of p the runner cannot provide.
func unsupportedVolumes(p *corev1.Pod) string {
	var bad []string
	for _, v := range p.Spec.Volumes {
		s := v.VolumeSource
		if s.PersistentVolumeClaim == nil && s.Secret == nil && s.ConfigMap == nil && s.Projected == nil &&
			s.DownwardAPI == nil && s.EmptyDir == nil {
			bad = append(bad, v.Name)
		}
	}
	if len(bad) == 0 {
		return ""
	}
	return fmt.Sprintf("volumes %s are not supported by the local runner (only persistentVolumeClaim, secret, configMap, projected, downwardAPI, emptyDir)", strings.Join(bad, ", "))
}

// prepareVolumes makes every volume of the pod a host directory and
// returns them by volume name. Claims map to their bound PersistentVolume's
// hostPath (.localcluster/volumes/<ns>/<claim>, provisioned by the runner),
// which outlives the pod. Secret, ConfigMap, projected and downward API
// volumes are written as files into the pod's directory afresh at every
// container start; emptyDirs live there too and go with the pod.
func (w *podWorker) prepareVolumes(ctx context.Context) (map[string]string, error) {
	out := map[string]string{}
	for _, v := range w.pod.Spec.Volumes {
		dir := filepath.Join(w.dir, "volumes", v.Name)
		var files map[string]file
		var err error
		switch s := v.VolumeSource; {
		case s.PersistentVolumeClaim != nil:
			if dir, err = w.claimDir(ctx, s.PersistentVolumeClaim.ClaimName); err != nil {
				return nil, err
			}
		case s.EmptyDir != nil:
			err = os.MkdirAll(dir, 0o777)
		case s.Secret != nil:
			files, err = w.secretFiles(ctx, s.Secret.SecretName, s.Secret.Items, s.Secret.DefaultMode, s.Secret.Optional)
		case s.ConfigMap != nil:
			files, err = w.configMapFiles(ctx, s.ConfigMap.Name, s.ConfigMap.Items, s.ConfigMap.DefaultMode, s.ConfigMap.Optional)
		case s.DownwardAPI != nil:
			files, err = w.downwardFiles(s.DownwardAPI.Items, s.DownwardAPI.DefaultMode)
		case s.Projected != nil:
			files, err = w.projectedFiles(ctx, s.Projected)
		}
		if err != nil {
			return nil, fmt.Errorf("volume %q: %w", v.Name, err)
		}
		if files != nil {
			if err := writeFiles(dir, files); err != nil {
				return nil, fmt.Errorf("volume %q: %w", v.Name, err)
			}
		}
		out[v.Name] = dir
	}
	return out, nil
}

// claimDir is the hostPath of the PersistentVolume bound to a claim.
func (w *podWorker) claimDir(ctx context.Context, claim string) (string, error) {
	pvc, err := w.r.cs.CoreV1().PersistentVolumeClaims(w.pod.Namespace).Get(ctx, claim, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("claim %q: %w", claim, err)
	}
	if pvc.Status.Phase != corev1.ClaimBound || pvc.Spec.VolumeName == "" {
		return "", fmt.Errorf("claim %q is %s, not Bound yet", claim, pvc.Status.Phase)
	}
	pv, err := w.r.cs.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("volume %q of claim %q: %w", pvc.Spec.VolumeName, claim, err)
	}
	if pv.Spec.HostPath == nil {
		return "", fmt.Errorf("volume %q of claim %q is not a hostPath volume; the local runner mounts only those", pv.Name, claim)
	}
	return pv.Spec.HostPath.Path, os.MkdirAll(pv.Spec.HostPath.Path, 0o777)
}

type file struct {
	data []byte
	mode os.FileMode
}

func fileMode(item *int32, def *int32) os.FileMode {
	switch {
	case item != nil:
		return os.FileMode(*item)
	case def != nil:
		return os.FileMode(*def)
	}
	return 0o644
}

// keyFiles lays out data as a secret or configMap volume does: every key,
// or only the listed items at their paths.
func keyFiles(data map[string][]byte, items []corev1.KeyToPath, defMode *int32, optional *bool, what string) (map[string]file, error) {
	out := map[string]file{}
	if len(items) == 0 {
		for k, v := range data {
			out[k] = file{v, fileMode(nil, defMode)}
		}
		return out, nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if isTrue(optional) {
				continue
			}
			return nil, fmt.Errorf("%s has no key %q", what, it.Key)
		}
		out[it.Path] = file{v, fileMode(it.Mode, defMode)}
	}
	return out, nil
}

func (w *podWorker) secretFiles(ctx context.Context, name string, items []corev1.KeyToPath, defMode *int32, optional *bool) (map[string]file, error) {
	s, err := w.r.cs.CoreV1().Secrets(w.pod.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && isTrue(optional) {
		return map[string]file{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("secret %q: %w", name, err)
	}
	return keyFiles(s.Data, items, defMode, optional, "secret "+name)
}

func (w *podWorker) configMapFiles(ctx context.Context, name string, items []corev1.KeyToPath, defMode *int32, optional *bool) (map[string]file, error) {
	cm, err := w.r.cs.CoreV1().ConfigMaps(w.pod.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && isTrue(optional) {
		return map[string]file{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("configmap %q: %w", name, err)
	}
	data := map[string][]byte{}
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return keyFiles(data, items, defMode, optional, "configmap "+name)
}

func (w *podWorker) downwardFiles(items []corev1.DownwardAPIVolumeFile, defMode *int32) (map[string]file, error) {
	out := map[string]file{}
	for _, it := range items {
		if it.FieldRef == nil {
			return nil, fmt.Errorf("downward API item %q: only fieldRef is supported locally", it.Path)
		}
		v, err := w.fieldValue(it.FieldRef.FieldPath)
		if err != nil {
			return nil, err
		}
		out[it.Path] = file{[]byte(v), fileMode(it.Mode, defMode)}
	}
	return out, nil
}

// projectedFiles: secrets, configMaps and the downward API. Service
// account tokens are not written: the local cluster mounts no credentials
// (a process could not find them at the in-cluster path anyway).
func (w *podWorker) projectedFiles(ctx context.Context, p *corev1.ProjectedVolumeSource) (map[string]file, error) {
	out := map[string]file{}
	for _, src := range p.Sources {
		var fs map[string]file
		var err error
		switch {
		case src.Secret != nil:
			fs, err = w.secretFiles(ctx, src.Secret.Name, src.Secret.Items, p.DefaultMode, src.Secret.Optional)
		case src.ConfigMap != nil:
			fs, err = w.configMapFiles(ctx, src.ConfigMap.Name, src.ConfigMap.Items, p.DefaultMode, src.ConfigMap.Optional)
		case src.DownwardAPI != nil:
			fs, err = w.downwardFiles(src.DownwardAPI.Items, p.DefaultMode)
		}
		if err != nil {
			return nil, err
		}
		for k, v := range fs {
			out[k] = v
		}
	}
	return out, nil
}

// writeFiles replaces dir with exactly files.
func writeFiles(dir string, files map[string]file) error {
	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	for name, f := range files {
		if !filepath.IsLocal(name) {
			return fmt.Errorf("path %q leaves the volume", name)
		}
		p := filepath.Join(tmp, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, f.data, f.mode.Perm()); err != nil {
			return err
		}
		if err := os.Chmod(p, f.mode.Perm()); err != nil { // WriteFile's mode is masked by umask
			return err
		}
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.Rename(tmp, dir)
}

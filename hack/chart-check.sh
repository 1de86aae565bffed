#!/usr/bin/env bash
# Checks the Helm chart (charts/ddpush-operator), as CI does:
#   1. its CRDs and the manager's ClusterRole match config/ (hack/chart-sync.sh
#      changes nothing, and no generated chart file differs from git);
#   2. `helm lint --strict`, with the default values and each ci/*-values.yaml;
#   3. `helm template` with the default values and with every optional
#      feature on (ci/all-features-values.yaml: ServiceMonitor, CRDs off,
#      NetworkPolicy namespaces, …) renders objects that parse and decode
#      strictly (hack/manifestcheck), and the right ones;
#   4. the schema refuses a wrong value, and kubeVersion a too old cluster;
#   5. the chart's default image is the one the manager names by default.
# Needs no cluster. helm is built from source by hack/tools.sh.
set -euo pipefail
export LC_ALL=C

cd "$(dirname "${BASH_SOURCE[0]}")/.."

chart=charts/ddpush-operator
generated=("${chart}/templates/crds" "${chart}/templates/rbac/manager-clusterrole.yaml")

fail() { printf 'chart-check: FAIL: %s\n' "$*" >&2; exit 1; }
step() { printf '== chart-check: %s\n' "$*"; }

HELM="$(hack/tools.sh helm)"
tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT
go build -o "${tmp}/manifestcheck" ./hack/manifestcheck

step "generated chart files are in sync with config/"
mkdir -p "${tmp}/before"
for p in "${generated[@]}"; do
  [[ -e ${p} ]] && cp -R "${p}" "${tmp}/before/"
done
hack/chart-sync.sh
mkdir -p "${tmp}/after"
for p in "${generated[@]}"; do
  [[ -e ${p} ]] && cp -R "${p}" "${tmp}/after/"
done
if ! diff -ru "${tmp}/before" "${tmp}/after"; then
  fail "the chart's CRDs or ClusterRole were stale: run make manifests chart-sync and commit"
fi
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git diff --exit-code -- "${generated[@]}" ||
    fail "generated chart files differ from git: run make manifests chart-sync and commit"
fi

step "helm lint --strict"
"${HELM}" lint --strict "${chart}"
for f in "${chart}"/ci/*-values.yaml; do
  "${HELM}" lint --strict "${chart}" -f "${f}"
done

# render NAME HELM-ARGS...: renders the chart into ${tmp}/NAME.yaml, checks
# the objects, and lists them (kind/namespace/name) in ${tmp}/NAME.objects.
render() {
  local name="$1"
  shift
  "${HELM}" template ddpush "${chart}" --namespace ddpush-system "$@" >"${tmp}/${name}.yaml"
  "${tmp}/manifestcheck" "${tmp}/${name}.yaml" >"${tmp}/${name}.objects" ||
    fail "helm template (${name}) rendered invalid objects"
  echo "rendered (${name}):"
  sed 's/^/  /' "${tmp}/${name}.objects"
}
# count NAME KIND: how many objects of KIND were rendered.
count() { grep -c "^$2/" "${tmp}/$1.objects" || true; }
expect_count() {
  local got
  got="$(count "$1" "$2")"
  [[ ${got} == "$3" ]] || fail "$1: want $3 $2, got ${got}"
}

app_version="$(awk '$1 == "appVersion:" { gsub(/"/, "", $2); print $2 }' "${chart}/Chart.yaml")"
repository="$(awk '/^image:/ { in_image = 1; next } /^[^ #]/ { in_image = 0 } in_image && $1 == "repository:" { print $2 }' "${chart}/values.yaml")"
[[ -n ${app_version} && -n ${repository} ]] || fail "cannot read appVersion or image.repository"
default_image="${repository}:${app_version}"

step "helm template, default values"
render default
crds=(config/crd/bases/*.yaml)
expect_count default CustomResourceDefinition "${#crds[@]}"
expect_count default Deployment 1
expect_count default Service 1
expect_count default ServiceAccount 1
expect_count default ClusterRole 4
expect_count default ClusterRoleBinding 1
expect_count default Role 1
expect_count default RoleBinding 1
expect_count default ServiceMonitor 0
# The operator makes one NetworkPolicy per PushNode; the chart none.
expect_count default NetworkPolicy 0
# The helm test pod.
expect_count default Pod 1
grep -qx "        image: ${default_image}" "${tmp}/default.yaml" ||
  fail "default: the manager's image is not ${default_image}"
grep -qx -- "        - --pushnode-image=${default_image}" "${tmp}/default.yaml" ||
  fail "default: --pushnode-image is not ${default_image}"
[[ $(grep -c '^    helm.sh/resource-policy: keep$' "${tmp}/default.yaml") == "${#crds[@]}" ]] ||
  fail "default: every CRD must have helm.sh/resource-policy: keep"
for arg in --metrics-bind-address=:8443 --metrics-secure=true --network-policy=true; do
  grep -qx -- "        - ${arg}" "${tmp}/default.yaml" || fail "default: the manager lacks ${arg}"
done
grep -qx -- "        - --network-policy-allowed-namespaces=.*" "${tmp}/default.yaml" &&
  fail "default: --network-policy-allowed-namespaces with no namespaces"
grep -qx 'ClusterRole/-/ddpush-ddpush-operator-metrics-reader' "${tmp}/default.objects" ||
  fail "default: no metrics-reader ClusterRole"
grep -qx -- "    - --server=pushnode-sample-internal.default.svc:9999" "${tmp}/default.yaml" ||
  fail "default: the helm test does not push to pushnode-sample's internal Service"
grep -qx "    helm.sh/hook: test" "${tmp}/default.yaml" || fail "default: the test pod is not a test hook"

step "helm template, every optional feature on"
render all-features -f "${chart}/ci/all-features-values.yaml"
expect_count all-features CustomResourceDefinition 0
expect_count all-features ServiceMonitor 1
expect_count all-features NetworkPolicy 0
grep -qx -- "        - --network-policy-allowed-namespaces=apps,monitoring" "${tmp}/all-features.yaml" ||
  fail "all-features: networkPolicy.allowedNamespaces is not passed to the manager"
grep -qx -- "    - --server=10.0.0.7:9999" "${tmp}/all-features.yaml" ||
  fail "all-features: tests.server is not what the test pushes to"
grep -qx -- "    scheme: https" "${tmp}/all-features.yaml" ||
  fail "all-features: the ServiceMonitor does not scrape the secure metrics over HTTPS"
expect_count all-features Deployment 1
grep -qx -- "        - --pushnode-image=registry.example.com/ddpush/pushnode:v0.1.0-rc.1" "${tmp}/all-features.yaml" ||
  fail "all-features: pushNode.image is not passed to the manager"
grep -qx -- '        - "--zap-log-level=debug"' "${tmp}/all-features.yaml" ||
  fail "all-features: extraArgs are not passed to the manager"

step "helm template, plain metrics and no network policies"
render plain --set metrics.secure=false --set networkPolicy.enabled=false --set serviceMonitor.enabled=true
expect_count plain ClusterRole 3
for arg in --metrics-secure=false --network-policy=false; do
  grep -qx -- "        - ${arg}" "${tmp}/plain.yaml" || fail "plain: the manager lacks ${arg}"
done
grep -qx -- "    scheme: http" "${tmp}/plain.yaml" || fail "plain: the ServiceMonitor does not scrape over HTTP"

step "kubeVersion: 1.27 or later"
"${HELM}" template ddpush "${chart}" --kube-version 1.27.0 >/dev/null || fail "refused Kubernetes 1.27"
if "${HELM}" template ddpush "${chart}" --kube-version 1.26.9 >/dev/null 2>&1; then
  fail "accepted Kubernetes 1.26"
fi

step "helm template, namespace-scoped install"
render scoped --set 'watchNamespaces={push,push-staging}'
# The editor, viewer and metrics-reader ClusterRoles stay; the manager's
# rules become a Role and RoleBinding in each watched namespace, except the
# cluster-scoped reviews secure metrics makes, which keep a ClusterRole.
expect_count scoped ClusterRole 4
expect_count scoped ClusterRoleBinding 1
grep -qx "ClusterRole/-/ddpush-ddpush-operator-metrics-auth" "${tmp}/scoped.objects" ||
  fail "scoped: no metrics-auth ClusterRole for secure metrics"
expect_count scoped Role 3
expect_count scoped RoleBinding 3
for ns in push push-staging; do
  grep -qx "Role/${ns}/ddpush-ddpush-operator-manager" "${tmp}/scoped.objects" ||
    fail "scoped: no manager Role in ${ns}"
  grep -qx "RoleBinding/${ns}/ddpush-ddpush-operator-manager" "${tmp}/scoped.objects" ||
    fail "scoped: no manager RoleBinding in ${ns}"
done
grep -qx -- "        - --watch-namespaces=push,push-staging" "${tmp}/scoped.yaml" ||
  fail "scoped: --watch-namespaces is not passed to the manager"
if grep -q -- "--watch-namespaces" "${tmp}/default.yaml"; then
  fail "default: --watch-namespaces set although watchNamespaces is empty"
fi

step "the values schema refuses wrong values"
for bad in networkPolicy.enabled=yes replicaCount=two noSuchValue=1 image.pullPolicy=Sometimes \
  networkPolicy.pushNodeNamespaces[0]=push metrics.secure=maybe tests.server=no-port tests.userId= \
  networkPolicy.allowedNamespaces[0]=Not_A_Namespace 'watchNamespaces={Not_A_Namespace}'; do
  if "${HELM}" template ddpush "${chart}" --set "${bad}" >/dev/null 2>&1; then
    fail "the schema accepted --set ${bad}"
  fi
done

step "the chart's default image is the manager's default image"
# cmd/manager names ghcr.io/ddpush/ddpush-operator:<version>; the chart names
# <image.repository>:<appVersion>: same repository.
grep -q "DefaultImage = \"${repository}:\"" cmd/manager/main.go ||
  fail "cmd/manager/main.go's DefaultImage does not use ${repository}"

echo "chart-check: OK"

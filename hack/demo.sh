#!/usr/bin/env bash
# make demo: the whole product on this machine, against real Kubernetes
# components (see docs/local-cluster.md):
#   build -> local cluster up -> operator installed -> sample PushNode Available
#   -> a simulated phone online -> sample PushMessage Delivered -> what to try next.
# `make demo-down` stops everything it started. Every wait is bounded and
# says which log to read when it fails.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo}"
state="${repo}/.localcluster"
export KUBECONFIG="${state}/kubeconfig"
LC="${repo}/bin/localcluster"
ns_op=ddpush-system
pn=pushnode-sample
pm=pushmessage-sample
user=10001

t0=${SECONDS}
# shellcheck source=hack/lib/progress.sh
source "${repo}/hack/lib/progress.sh"
step() { printf '\n==> [%3ds] %s\n' "$((SECONDS - t0))" "$*"; }
note() { printf '    %s\n' "$*"; }
fail() {
  printf '\ndemo: FAILED: %s\n' "$1" >&2
  shift
  for f in "$@"; do
    if [[ -f "${f}" ]]; then
      printf -- '--- last lines of %s\n' "${f}" >&2
      tail -n 15 "${f}" >&2
    fi
  done
  printf '\nWhatever runs is left running for inspection (export KUBECONFIG=%s); `make demo-down` stops it.\n' "${KUBECONFIG}" >&2
  exit 1
}
pod_log() { ls -t "${state}"/logs/pods/"$1"_"$2"*.log 2>/dev/null | head -n 1; }

# 1. Build. The Kubernetes binaries (and helm) are built from source once per
# machine and cached outside the repository.
install="${INSTALL:-helm}" # or kustomize
[[ -d charts/ddpush-operator ]] || install=kustomize
step "building"
cache_root="${DDPUSH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ddpush-operator}"
k8s_version="$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' hack/k8s/go.mod)"
if [[ ! -x "${cache_root}/k8s/${k8s_version}/kube-apiserver" ]]; then
  note "first run: building etcd and Kubernetes ${k8s_version} (apiserver, controller-manager, scheduler)"
  note "from source into ${cache_root}/k8s, once per machine: about 10 minutes on 2 idle cores, longer on a"
  note "busy machine; with helm and this repository's programs, a cold first run took 18 minutes. Progress every 30s."
fi
k8s_bin="$(hack/k8s-binaries.sh)"
if [[ "${install}" == helm ]]; then
  helm_version="$(sed -n 's/.*\[helm\]="[^ ]* \(v[^"]*\)".*/\1/p' hack/tools.sh)"
  if [[ ! -x "${cache_root}/tools/helm-${helm_version}/helm" ]]; then
    note "first run: building helm ${helm_version} from source (about 2½ minutes after Kubernetes, once per machine)"
  fi
  helm="$(hack/tools.sh helm)"
  # Where a user finds it for the commands printed at the end.
  mkdir -p bin
  ln -sfn "${helm}" bin/helm
fi
# With a cold Go build cache this compiles some 1000 packages (the manager
# uses controller-runtime and parts of the API server): minutes, not seconds.
build_log="$(mktemp)"
build_total="$(go list -deps ./cmd/manager ./cmd/pushnode ./cmd/pushctl ./hack/localcluster 2>/dev/null | wc -l || true)"
[[ ${build_total} =~ ^[1-9][0-9]*$ ]] || build_total=""
GOFLAGS="${GOFLAGS:+${GOFLAGS} }-v" go_build_progress "    building bin/manager bin/pushnode bin/pushctl bin/localcluster" \
  "${build_log}" "${build_total}" \
  bash -c 'make --no-print-directory build && go build -o bin/localcluster ./hack/localcluster' ||
  fail "the build failed (see above)"
rm -f "${build_log}"
note "bin/manager bin/pushnode bin/pushctl bin/localcluster${helm:+ bin/helm}; Kubernetes binaries in ${k8s_bin}"

# 2. A fresh local cluster.
step "starting the local cluster (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, pod runner)"
if [[ "$("${LC}" status 2>/dev/null)" =~ running\ +pid ]]; then
  note "a local cluster is running: stopping it to start the demo afresh"
  "${LC}" down >/dev/null
fi
"${LC}" up --k8s-bin "${k8s_bin}" | sed 's/^/    /' || fail "the local cluster did not come up (see above)"

# 3. The operator: with the Helm chart (INSTALL=kustomize: kubectl apply -k
# config/default). The runner runs its Deployment's pod as bin/manager.
if [[ "${install}" == helm ]]; then
  step "installing the operator (helm install ddpush charts/ddpush-operator -n ${ns_op})"
  helm_args=(install ddpush charts/ddpush-operator -n "${ns_op}" --create-namespace --wait --timeout 90s)
  if ! "${helm}" "${helm_args[@]}" >"${state}/logs/install.log" 2>&1; then
    kubectl -n "${ns_op}" get pods -o wide >&2 || true
    fail "helm install did not finish (manager not Ready within 90s?)" "${state}/logs/install.log" "$(pod_log "${ns_op}" ddpush)" "${state}/logs/runner.log"
  fi
  note "CRDs, RBAC and the manager Deployment in ${ns_op} (helm's notes: ${state}/logs/install.log)"
else
  step "installing the operator (kubectl apply -k config/default)"
  install_dir=config/default
  kubectl apply -k "${install_dir}" >"${state}/logs/install.log" 2>&1 || fail "kubectl apply failed" "${state}/logs/install.log"
  if ! kubectl -n "${ns_op}" rollout status deployment/ddpush-controller-manager --timeout=60s >/dev/null 2>&1; then
    kubectl -n "${ns_op}" get pods -o wide >&2 || true
    fail "the manager did not become Ready within 60s" "$(pod_log "${ns_op}" ddpush)" "${state}/logs/runner.log"
  fi
  note "CRDs, RBAC and the manager Deployment in ${ns_op}"
fi
note "manager Ready: $(kubectl -n "${ns_op}" get pods -o jsonpath='{range .items[*]}{.metadata.name} at pod IP {.status.podIP}{end}')"

# 4. A PushNode.
step "applying the sample PushNode and waiting for it to be Available"
kubectl apply -f config/samples/ddpush_v1alpha1_pushnode.yaml | sed 's/^/    /'
if ! kubectl wait --for=condition=Available "pushnode/${pn}" --timeout=90s >/dev/null; then
  kubectl get pushnode,statefulset,pods,pvc -o wide >&2 || true
  fail "PushNode ${pn} did not become Available within 90s" "$(pod_log default "${pn}-0")" "$(pod_log "${ns_op}" ddpush-controller-manager)" "${state}/logs/runner.log"
fi
kubectl get pushnode "${pn}" | sed 's/^/    /'
ip="$(kubectl get pod "${pn}-0" -o jsonpath='{.status.podIP}')"
[[ -n "${ip}" ]] || fail "pod ${pn}-0 has no IP" "${state}/logs/runner.log"
note "its pod ${pn}-0 runs bin/pushnode at pod IP ${ip} (9966 phones, 9999 pushes, 8080 HTTP)"

# 5. A phone.
step "starting a simulated phone for user ${user}: bin/pushctl phone --server ${ip}:9966 --user ${user}"
phone_log="${state}/logs/phone.log"
: >"${phone_log}"
setsid bin/pushctl phone --server "${ip}:9966" --user "${user}" >"${phone_log}" 2>&1 </dev/null &
phone_pid=$!
# Recorded like the cluster's processes ("PID STARTTIME"), so that
# `make demo-down` stops exactly this process.
echo "${phone_pid} $(awk '{print $22}' "/proc/${phone_pid}/stat")" >"${state}/pids/phone.pid"
for _ in $(seq 50); do
  grep -q online "${phone_log}" && break
  kill -0 "${phone_pid}" 2>/dev/null || fail "the phone exited" "${phone_log}"
  sleep 0.2
done
grep -q online "${phone_log}" || fail "the phone did not come online within 10s" "${phone_log}"
sed 's/^/    phone: /' "${phone_log}"

# 6. A PushMessage, followed to its end with a watch started before it exists.
step "creating the sample PushMessage, watching it: kubectl get pm -w"
watch_log="${state}/logs/pm-watch.log"
kubectl get pm -w --field-selector "metadata.name=${pm}" >"${watch_log}" 2>&1 &
watch_pid=$!
trap 'kill "${watch_pid}" 2>/dev/null || true' EXIT
sleep 0.5
kubectl create -f config/samples/ddpush_v1alpha1_pushmessage.yaml | sed 's/^/    /'
phase=""
deadline=$((SECONDS + 30))
while ((SECONDS < deadline)); do
  phase="$(kubectl get pm "${pm}" -o jsonpath='{.status.phase}' 2>/dev/null || true)"
  case "${phase}" in Delivered | Superseded | Expired | Failed) break ;; esac
  sleep 0.3
done
sleep 0.5
kill "${watch_pid}" 2>/dev/null || true
wait "${watch_pid}" 2>/dev/null || true
uniq "${watch_log}" | sed 's/^/    /'
if [[ "${phase}" != Delivered ]]; then
  kubectl describe pm "${pm}" >&2 || true
  fail "PushMessage ${pm} is '${phase}', not Delivered, after 30s" "${phone_log}" "$(pod_log default "${pn}-0")" "$(pod_log "${ns_op}" ddpush)"
fi
step "what the phone printed"
sed 's/^/    phone: /' "${phone_log}"

helm_hint=""
if [[ "${install}" == helm ]]; then
  helm_hint="# The operator installed with helm (bin/helm, built from source); helm test
# pushes through the node's push port from a pod running pushctl. There is
# no cluster DNS here, so point the test at the pod IP:
bin/helm upgrade ddpush charts/ddpush-operator -n ${ns_op} --reuse-values --set tests.server=${ip}:9999
bin/helm test ddpush -n ${ns_op}

"
fi
step "done in $((SECONDS - t0))s. Try next:"
cat <<EOF

export KUBECONFIG=${KUBECONFIG}
kubectl get pushnodes,pushmessages -o wide     # pn / pm for short
kubectl describe pn ${pn}
kubectl get events --sort-by=.lastTimestamp
tail -f ${phone_log}     # the phone (pid ${phone_pid})

# Push straight to the node by pod IP (there is no kube-proxy here),
# with the API token from the PushNode's Secret:
TOKEN=\$(kubectl get secret ${pn}-api-token -o jsonpath='{.data.token}' | base64 -d)
bin/pushctl push   --http http://${ip}:8080 --token "\$TOKEN" --user ${user} --kind custom --data "hello again"
bin/pushctl push   --via port --server ${ip}:9999 --user ${user} --kind classified --bits 0x5
bin/pushctl lookup --http http://${ip}:8080 --token "\$TOKEN" --user ${user}
bin/pushctl events --http http://${ip}:8080 --token "\$TOKEN"
# the web console (sign in with the token): http://${ip}:8080/console/

${helm_hint}# The Kubernetes way:
kubectl create -f - <<'YAML'
apiVersion: ddpush.dev/v1alpha1
kind: PushMessage
metadata: {generateName: hello-}
spec: {pushNodeName: ${pn}, userId: "${user}", kind: Custom, data: "hi from kubectl"}
YAML
kubectl get pm -w

# Lifecycle: the StatefulSet recreates the pod; the runner starts bin/pushnode
# again on the same volume directory and, if free, the same pod IP:
kubectl delete pod ${pn}-0; kubectl get pods -o wide -w

# Logs: kubectl logs does not work here (no kubelet API); read the files:
ls ${state}/logs ${state}/logs/pods

make demo-down     # stop everything the demo started
EOF

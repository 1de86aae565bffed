#!/usr/bin/env bash
# Builds, from source, the Kubernetes control-plane binaries that envtest needs
# (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) and prints the
# directory holding them, and nothing else, on stdout:
#
#   KUBEBUILDER_ASSETS="$(hack/k8s-binaries.sh)" go test ./...
#
# Nothing but Go modules can be downloaded where this project is built (no
# setup-envtest, no release tarballs), so the binaries come from the separate
# module in hack/k8s, built against its committed go.sum.
#
# The result is cached outside the repository, so every clone on a machine
# shares it:
#   ${DDPUSH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ddpush-operator}/k8s/<version>/
# A stamp file there records the inputs (hack/k8s/go.mod, go.sum, etcd/main.go,
# the build flags and the Go toolchain); when all four binaries exist and the
# stamp matches, the script returns at once. Otherwise it rebuilds into a
# temporary directory and renames it into place, so an interrupted build never
# leaves a partial cache behind.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mod_dir="${repo_root}/hack/k8s"

log() { printf 'k8s-binaries: %s\n' "$*" >&2; }
# shellcheck source=hack/lib/progress.sh
source "${repo_root}/hack/lib/progress.sh"

# The Kubernetes version is whatever hack/k8s/go.mod pins.
k8s_version="$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "${mod_dir}/go.mod")"
if [[ ! "${k8s_version}" =~ ^v([0-9]+)\.([0-9]+)\.[0-9]+$ ]]; then
  log "cannot read the k8s.io/kubernetes version from ${mod_dir}/go.mod (got '${k8s_version}')"
  exit 1
fi
k8s_major="${BASH_REMATCH[1]}"
k8s_minor="${BASH_REMATCH[2]}"

cache_root="${DDPUSH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ddpush-operator}"
out_dir="${cache_root}/k8s/${k8s_version}"
stamp_file="${out_dir}/.stamp"
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler)
packages=(
  ./etcd
  k8s.io/kubernetes/cmd/kube-apiserver
  k8s.io/kubernetes/cmd/kube-controller-manager
  k8s.io/kubernetes/cmd/kube-scheduler
)

# The same flags Kubernetes' own release build uses for these static binaries
# (hack/lib/golang.sh): CGO off, -trimpath, tags selinux,notest,grpcnotrace,
# -s -w, and the version variables in both component-base and client-go (the
# latter is what client-go sends as its User-Agent and reports as its own
# version). Without them the binaries say v0.0.0-master, which kubectl and
# helm refuse to parse. buildDate is the release tag's time, so that the
# build does not depend on when it ran.
build_date="2026-07-22T18:07:38Z"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X ${pkg}.gitVersion=${k8s_version}"
  ldflags+=" -X ${pkg}.gitMajor=${k8s_major}"
  ldflags+=" -X ${pkg}.gitMinor=${k8s_minor}"
  ldflags+=" -X ${pkg}.gitTreeState=clean"
  ldflags+=" -X ${pkg}.buildDate=${build_date}"
done
build_flags=(
  -mod=readonly   # never edit go.mod/go.sum, whatever GOFLAGS says
  -trimpath
  -buildvcs=false # the binaries must not depend on the clone's git state
  -tags=selinux,notest,grpcnotrace
  "-ldflags=${ldflags}"
)

# A reproducible environment for the go command: no go.work from a parent
# directory, no GOFLAGS (e.g. -mod=mod or -mod=vendor) from the caller, host
# platform, static binaries.
export GOWORK=off GOFLAGS= CGO_ENABLED=0
unset GOOS GOARCH

cd "${mod_dir}"

stamp() {
  {
    echo "k8s ${k8s_version}"
    sha256sum go.mod go.sum etcd/main.go
    printf '%s\n' "${packages[@]}" "${build_flags[@]}"
    go version
    go env GOOS GOARCH GOAMD64 GOEXPERIMENT CGO_ENABLED
  } | sha256sum | cut -d' ' -f1
}

up_to_date() {
  local b
  for b in "${binaries[@]}"; do
    [[ -x "${out_dir}/${b}" ]] || return 1
  done
  [[ -f "${stamp_file}" && "$(cat "${stamp_file}")" == "${want_stamp}" ]]
}

want_stamp="$(stamp)"
if up_to_date; then
  echo "${out_dir}"
  exit 0
fi

# Serialise builds from several clones (or parallel make jobs) on one machine.
mkdir -p "${cache_root}/k8s"
exec 9>"${cache_root}/k8s/.lock"
if command -v flock >/dev/null 2>&1; then
  wait_lock_progress "k8s-binaries" 9
  if up_to_date; then # another process built it while we waited
    echo "${out_dir}"
    exit 0
  fi
  # Holding the lock, no other build is running: sweep what killed ones left.
  rm -rf "${cache_root}/k8s/.${k8s_version}".{tmp,old}.*
fi

log "building ${binaries[*]} ${k8s_version} from source into ${out_dir}"
log "a cold build takes about 10 minutes on 2 idle cores, much longer on a busy machine (once per machine and version); with a warm Go build cache, under a minute. Progress every ${PROGRESS_INTERVAL:-30}s."

tmp_dir="$(mktemp -d "${cache_root}/k8s/.${k8s_version}.tmp.XXXXXX")"
chmod 755 "${tmp_dir}"
old_dir=""
cleanup() {
  rm -rf "${tmp_dir}"
  if [[ -n "${old_dir}" ]]; then rm -rf "${old_dir}"; fi
}
trap cleanup EXIT

start=${SECONDS}
# The packages the build may compile, for the progress lines. Listing them
# downloads the modules they are in (its "go: downloading" lines show).
log "listing the packages to build (and downloading their modules)"
total="$(go list -mod=readonly -deps -tags=selinux,notest,grpcnotrace "${packages[@]}" | wc -l || true)"
[[ ${total} =~ ^[1-9][0-9]*$ ]] || total=""
go_build_progress "k8s-binaries: building Kubernetes ${k8s_version}" "${tmp_dir}/build.log" "${total}" \
  go build -v "${build_flags[@]}" -o "${tmp_dir}/" "${packages[@]}"
rm -f "${tmp_dir}/build.log"

for b in "${binaries[@]}"; do
  if [[ ! -x "${tmp_dir}/${b}" ]]; then
    log "go build did not produce ${b}"
    exit 1
  fi
done
got_version="$("${tmp_dir}/kube-apiserver" --version 2>&1)"
if [[ "${got_version}" != "Kubernetes ${k8s_version}" ]]; then
  log "kube-apiserver --version says '${got_version}', want 'Kubernetes ${k8s_version}'"
  exit 1
fi
echo "${want_stamp}" >"${tmp_dir}/.stamp"

# Swap the finished directory in with renames: at every moment the cache path
# holds either a complete set of binaries or nothing.
if [[ -e "${out_dir}" ]]; then
  old_dir="$(mktemp -d "${cache_root}/k8s/.${k8s_version}.old.XXXXXX")"
  mv -T "${out_dir}" "${old_dir}/dir"
fi
mv -T "${tmp_dir}" "${out_dir}"

log "built in $((SECONDS - start))s"
echo "${out_dir}"

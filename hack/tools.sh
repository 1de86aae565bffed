#!/usr/bin/env bash
# Installs the project's Go tools at pinned versions and prints the path of
# each binary asked for, one a line, and nothing else on stdout:
#
#   CONTROLLER_GEN="$(hack/tools.sh controller-gen)"
#   HELM="$(hack/tools.sh helm)"
#
# Each tool is built from source with `go install pkg@version` (the Go module
# proxy is the only thing that can be downloaded here) into a cache outside
# the repository, shared by every clone on the machine:
#   ${DDPUSH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ddpush-operator}/tools/<name>-<version>/<name>
# A stamp file next to the binary records the inputs (package, version, build
# flags, Go toolchain); when it matches, the script returns at once. Otherwise
# it installs into a temporary directory and renames it into place, so an
# interrupted build never leaves a partial cache behind.
set -euo pipefail

log() { printf 'tools: %s\n' "$*" >&2; }
# shellcheck source=hack/lib/progress.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/progress.sh"

# name -> "package version"
declare -A tools=(
  [controller-gen]="sigs.k8s.io/controller-tools/cmd/controller-gen v0.23.0"
  [helm]="helm.sh/helm/v3/cmd/helm v3.22.0"
)

usage() {
  echo "usage: $0 TOOL... (one of: ${!tools[*]})" >&2
  exit 2
}

cache_root="${DDPUSH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ddpush-operator}"

# A reproducible environment for the go command: no go.work, no GOFLAGS
# (e.g. -mod=mod or -mod=vendor) from the caller, host platform, static
# binaries as the tools' own release builds make them.
export GOWORK=off GOFLAGS= CGO_ENABLED=0
unset GOOS GOARCH

# Extra ldflags for a tool; run only when it is being built. Their values
# follow from the tool's version alone, so they need not be in the stamp.
tool_ldflags() {
  local name="$1" pkg="$2" version="$3"
  case "${name}" in
    helm)
      # Without these, `helm version` says v3.22 (the source default) and
      # `helm template` assumes Kubernetes v1.20 for .Capabilities.KubeVersion
      # and kubeVersion checks. helm's Makefile sets the Kubernetes version
      # from the client-go it is built with: major+1 and the same minor.
      local gomod cg
      gomod="$(go mod download -json "helm.sh/helm/v3@${version}" |
        sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')"
      cg="$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "${gomod}")"
      if [[ ! "${cg}" =~ ^v0\.([0-9]+)\. ]]; then
        log "cannot read k8s.io/client-go's version from ${gomod} (got '${cg}')"
        return 1
      fi
      local k8s_minor="${BASH_REMATCH[1]}"
      local f="-X helm.sh/helm/v3/internal/version.version=${version}"
      f+=" -X helm.sh/helm/v3/internal/version.metadata="
      f+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
      local p
      for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
        f+=" -X ${p}.k8sVersionMajor=1 -X ${p}.k8sVersionMinor=${k8s_minor}"
      done
      echo "${f}"
      ;;
    *) echo "" ;;
  esac
}

# Prints the path of tool $1, installing it first if needed.
ensure_tool() {
  local name="$1"
  local spec="${tools[${name}]:-}"
  [[ -n "${spec}" ]] || usage
  local pkg="${spec% *}" version="${spec#* }"
  local dir="${cache_root}/tools/${name}-${version}"
  local bin="${dir}/${name}"
  # Static flags; whatever tool_ldflags adds is a function of the version.
  local flags=(-trimpath -buildvcs=false)

  local want
  want="$(
    {
      echo "${pkg}@${version}"
      printf '%s\n' "${flags[@]}"
      go version
      go env GOOS GOARCH GOAMD64 GOEXPERIMENT CGO_ENABLED
    } | sha256sum | cut -d' ' -f1
  )"
  if [[ -x "${bin}" && -f "${dir}/.stamp" && "$(cat "${dir}/.stamp")" == "${want}" ]]; then
    echo "${bin}"
    return 0
  fi

  mkdir -p "${cache_root}/tools"
  (
    # Serialise installs of the same tool from several clones or make jobs.
    exec 9>"${cache_root}/tools/.${name}.lock"
    if command -v flock >/dev/null 2>&1; then
      wait_lock_progress "tools: ${name}" 9
      if [[ -x "${bin}" && -f "${dir}/.stamp" && "$(cat "${dir}/.stamp")" == "${want}" ]]; then
        exit 0
      fi
      # Holding the lock, no other install of it is running: sweep what
      # killed ones left.
      rm -rf "${cache_root}/tools/.${name}-${version}".{tmp,old}.*
    fi

    log "installing ${pkg}@${version} into ${dir}"
    local tmp old=""
    tmp="$(mktemp -d "${cache_root}/tools/.${name}-${version}.tmp.XXXXXX")"
    chmod 755 "${tmp}"
    trap 'rm -rf "${tmp}" ${old:+"${old}"}' EXIT

    local ldflags
    ldflags="$(tool_ldflags "${name}" "${pkg}" "${version}")"
    # From a neutral directory, so no go.mod of the caller's is consulted.
    (cd "${tmp}" && GOBIN="${tmp}" go_build_progress "tools: building ${name} ${version}" "${tmp}/.build.log" "" \
      go install -v "${flags[@]}" "-ldflags=-s -w ${ldflags}" "${pkg}@${version}")
    rm -f "${tmp}/.build.log"
    if [[ ! -x "${tmp}/${name}" ]]; then
      log "go install did not produce ${tmp}/${name}"
      exit 1
    fi
    echo "${want}" >"${tmp}/.stamp"

    if [[ -e "${dir}" ]]; then
      old="$(mktemp -d "${cache_root}/tools/.${name}-${version}.old.XXXXXX")"
      mv -T "${dir}" "${old}/dir"
    fi
    mv -T "${tmp}" "${dir}"
  )
  echo "${bin}"
}

[[ $# -gt 0 ]] || usage
for name in "$@"; do
  ensure_tool "${name}"
done

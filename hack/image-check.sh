#!/usr/bin/env bash
# Loads the image archive that `make image` wrote into real container
# tooling, and runs it:
#
#   1. skopeo reads it both ways: as a Docker archive (manifest.json, what
#      `docker load` reads) and as an OCI archive (index.json);
#   2. a private containerd imports it exactly as `kind load image-archive`
#      does (ctr -n k8s.io images import --all-platforms --digests
#      --snapshotter=...), and lists it under its tag;
#   3. runc runs it: /pushnode --version, and the push node itself for a
#      few seconds as the image's user (65532) in its working directory.
#
#   hack/image-check.sh [ARCHIVE] [TAG]     (default: what make image wrote)
#
# Needs root (containerd and runc), and installs containerd, runc and skopeo
# with apt-get when they are missing. The containerd it starts has its own
# socket and state in a temporary directory and is stopped at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

archive="${1:-bin/ddpush-operator-image.tar}"
tag="${2:-}"
log() { printf 'image-check: %s\n' "$*"; }
fail() { printf 'image-check: FAIL: %s\n' "$*" >&2; exit 1; }

[[ -f ${archive} ]] || fail "${archive} not found: run make image first"
if [[ -z ${tag} ]]; then
  tag="$(tar -xOf "${archive}" manifest.json | sed -n 's/.*"RepoTags":\["\([^"]*\)".*/\1/p')"
fi
[[ -n ${tag} ]] || fail "cannot read the image's tag from ${archive}'s manifest.json"
[[ $(id -u) -eq 0 ]] || fail "containerd and runc need root"

missing=()
for p in containerd:containerd ctr:containerd runc:runc skopeo:skopeo; do
  command -v "${p%%:*}" >/dev/null 2>&1 || missing+=("${p##*:}")
done
if ((${#missing[@]} > 0)); then
  log "installing $(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')with apt-get"
  apt-get install -y --no-install-recommends $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null ||
    { apt-get update >/dev/null && apt-get install -y --no-install-recommends $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null; } ||
    fail "cannot install ${missing[*]}"
fi

log "skopeo: Docker archive view"
cfg="$(skopeo inspect --config "docker-archive:${archive}")" || fail "skopeo cannot read ${archive} as a Docker archive"
for want in '"User": "65532:65532"' '"/manager"' '"WorkingDir": "/home/nonroot"'; do
  grep -qF "${want}" <<<"${cfg}" || fail "the image config lacks ${want}:
${cfg}"
done
log "skopeo: OCI archive view"
skopeo inspect "oci-archive:${archive}" >/dev/null || fail "skopeo cannot read ${archive} as an OCI archive"

tmp="$(mktemp -d)"
ctrd_pid=""
cleanup() {
  if [[ -n ${ctrd_pid} ]]; then
    kill "${ctrd_pid}" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "${ctrd_pid}" 2>/dev/null || break; sleep 0.1; done
    kill -9 "${ctrd_pid}" 2>/dev/null || true
  fi
  # The native snapshotter's files belong to 65532 and root; rm as root.
  rm -rf "${tmp}"
}
trap cleanup EXIT
cat >"${tmp}/config.toml" <<EOF
version = 2
root = "${tmp}/root"
state = "${tmp}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "${tmp}/containerd.sock"
EOF
containerd --config "${tmp}/config.toml" >"${tmp}/containerd.log" 2>&1 &
ctrd_pid=$!
ctr=(ctr --address "${tmp}/containerd.sock" --namespace k8s.io)
for _ in $(seq 100); do
  "${ctr[@]}" version >/dev/null 2>&1 && break
  kill -0 "${ctrd_pid}" 2>/dev/null || { tail -20 "${tmp}/containerd.log" >&2; fail "containerd exited"; }
  sleep 0.1
done
"${ctr[@]}" version >/dev/null 2>&1 || { tail -20 "${tmp}/containerd.log" >&2; fail "containerd did not answer within 10s"; }

log "containerd: import as kind load image-archive does"
"${ctr[@]}" images import --all-platforms --digests --snapshotter=native - <"${archive}" >/dev/null ||
  fail "ctr images import refused ${archive}"
images="$("${ctr[@]}" images ls -q)"
grep -qx "${tag}" <<<"${images}" || fail "containerd does not list ${tag}: ${images}"

log "runc: /pushnode --version"
out="$(timeout 60 "${ctr[@]}" run --rm --snapshotter native "${tag}" check-version /pushnode --version 2>&1)" ||
  fail "/pushnode --version in the image: ${out}"
log "  ${out}"

log "runc: the image's user is not root: it cannot write /etc"
set +e
out="$(timeout 30 "${ctr[@]}" run --rm --snapshotter native "${tag}" check-user /pushnode --data-dir /etc/data 2>&1)"
rc=$?
set -e
[[ ${rc} -ne 0 && ${out} == *"permission denied"* ]] || fail "the node could write /etc: it runs as root? (${rc})
${out}"

log "runc: the push node runs, with its data in /home/nonroot (the working directory)"
set +e
out="$(timeout 5 "${ctr[@]}" run --rm --snapshotter native "${tag}" check-node /pushnode 2>&1)"
rc=$?
set -e
# timeout ends ctr after 5s; a node that could not start exits earlier.
[[ ${rc} -eq 124 ]] || fail "the push node exited (${rc}) instead of running:
${out}"
grep -q "push node ready" <<<"${out}" || fail "the push node did not get ready:
${out}"
log "  $(grep -m1 "push node ready" <<<"${out}")"
"${ctr[@]}" tasks kill -s KILL check-node >/dev/null 2>&1 || true
"${ctr[@]}" containers rm check-node >/dev/null 2>&1 || true
log "OK: ${tag} loads as a Docker and an OCI archive, imports into containerd, and runs"

# Progress for long Go builds, sourced by hack/k8s-binaries.sh and
# hack/tools.sh. A cold build of Kubernetes prints nothing for many minutes;
# these say what is being built and for how long, every PROGRESS_INTERVAL
# seconds (default 30).

# go_build_progress LABEL LOG TOTAL CMD...: runs CMD (a `go build -v` or
# `go install -v`) with its output in LOG and, until it ends, prints to
# stderr every PROGRESS_INTERVAL seconds:
#   LABEL: 2m30s, 812 of ~2900 packages compiled (last: k8s.io/apiserver/pkg/server)
# TOTAL is the number of packages the build may compile (empty when
# unknown): an upper bound, as packages already in the Go build cache are
# not compiled again. Returns CMD's exit status; when CMD fails, the end of
# LOG is printed.
go_build_progress() {
  local label="$1" log="$2" total="$3"
  shift 3
  local interval="${PROGRESS_INTERVAL:-30}"
  local start=${SECONDS} next=$((SECONDS + interval))
  "$@" >"${log}" 2>&1 &
  local pid=$!
  while kill -0 "${pid}" 2>/dev/null; do
    sleep 1
    if ((SECONDS >= next)); then
      next=$((next + interval))
      # go build -v prints each package as it compiles it; the rest of the
      # output ("go: downloading ...", errors) has spaces in it.
      local done last of=""
      done="$(grep -c -v ' ' "${log}" || true)"
      last="$(grep -v ' ' "${log}" | tail -n 1 || true)"
      [[ -n ${total} ]] && of=" of ~${total}"
      if ((done == 0)); then
        printf '%s: %s, downloading modules or linking (nothing compiled yet)\n' "${label}" "$(elapsed $((SECONDS - start)))" >&2
      else
        printf '%s: %s, %s%s packages compiled (last: %s)\n' "${label}" "$(elapsed $((SECONDS - start)))" \
          "${done}" "${of}" "${last}" >&2
      fi
    fi
  done
  local status=0
  wait "${pid}" || status=$?
  if ((status != 0)); then
    printf '%s: failed (exit %d); the end of %s:\n' "${label}" "${status}" "${log}" >&2
    tail -n 30 "${log}" >&2
  fi
  return "${status}"
}

# wait_lock_progress LABEL FD: takes the flock on FD, saying every
# PROGRESS_INTERVAL seconds that it is waiting for another build.
wait_lock_progress() {
  local label="$1" fd="$2"
  local interval="${PROGRESS_INTERVAL:-30}" start=${SECONDS}
  flock -n "${fd}" && return 0
  printf '%s: another build holds the lock; waiting for it\n' "${label}" >&2
  until flock -w "${interval}" "${fd}"; do
    printf '%s: still waiting for the other build, %s\n' "${label}" "$(elapsed $((SECONDS - start)))" >&2
  done
}

# elapsed SECONDS: "4m05s".
elapsed() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

#!/usr/bin/env bash
# Runs the end-to-end suite (test/e2e, build tag e2e) on a fresh local
# cluster, and always stops the cluster afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

make cluster-up
trap 'make cluster-down >/dev/null 2>&1 || true' EXIT
status=0
go test -tags e2e -count=1 -timeout 30m -v ./test/e2e/ >.localcluster/e2e.log 2>&1 || status=$?
grep -E '^\s*(=== RUN|--- |\S+_test\.go:[0-9]+:)' .localcluster/e2e.log || true
make cluster-down >/dev/null 2>&1 || true
trap - EXIT
if [[ ${status} -ne 0 ]]; then
  echo "e2e: failed; the full log is .localcluster/e2e.log, the cluster's logs .localcluster/logs/" >&2
  tail -40 .localcluster/e2e.log >&2
  exit "${status}"
fi
# go test's own closing line, last.
tail -2 .localcluster/e2e.log

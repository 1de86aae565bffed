#!/usr/bin/env bash
# Runs the end-to-end suite (test/e2e, build tag e2e) on a fresh local
# cluster, and always stops the cluster afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

make cluster-up
trap 'make cluster-down' EXIT
go test -tags e2e -count=1 -timeout 30m -v ./test/e2e/ 2>&1 | tee .localcluster/e2e.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|\s+\S+_test\.go:)' || true
# The exit status is go test's, read back from its log.
grep -qE '^ok ' .localcluster/e2e.log

#!/usr/bin/env bash
# Runs the node's packages under the race detector STRESS_COUNT times each
# while STRESS_LOAD busy loops compete for the CPUs, so that races and
# shutdown hangs that need an unlucky schedule show up here rather than in
# production. The busy loops are stopped on exit, whatever happens.
#
#   make stress                                   # defaults below
#   make stress STRESS_COUNT=20 STRESS_LOAD=4     # a longer run
set -euo pipefail
cd "$(dirname "$0")/.."

count="${STRESS_COUNT:-5}"
load="${STRESS_LOAD:-2}"
timeout="${STRESS_TIMEOUT:-30m}"
go="${GO:-go}"
# The browser test is left out: it drives Chromium, not the node's
# concurrency, and would only add minutes per count.
mapfile -t pkgs < <("$go" list ./node/... | grep -v '/node/console$')

busy=()
stop_busy() {
  for pid in "${busy[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${busy[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}
trap stop_busy EXIT
for _ in $(seq "$load"); do
  ( while :; do :; done ) &
  busy+=("$!")
done

echo "stress: ${#pkgs[@]} packages, -race -count=$count, $load busy loops beside them"
"$go" build -o bin/testsummary ./hack/testsummary
start=$(date +%s)
status=0
bin/testsummary -race -count="$count" -timeout "$timeout" "${pkgs[@]}" || status=$?
echo "stress: $(( $(date +%s) - start )) s, exit status $status"
exit "$status"

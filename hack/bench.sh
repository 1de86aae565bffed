#!/usr/bin/env bash
# The benchmark (`make bench`): builds bin/pushnode and bin/pushload, runs
# every pushload workload against nodes it starts on loopback ports, runs
# the Go benchmarks of the hot paths, and prints the results table with
# the targets. Everything it measured goes to $BENCH_OUT:
#
#   machine.txt        the machine: CPUs, memory, kernel, Go, load before the run
#   commands.txt       every command, as run
#   <workload>.json    each workload's result (pushload --out)
#   <workload>.log     its output
#   profiles/          CPU profiles of the node during each measurement, a
#                      heap profile at 1M records, and `go tool pprof -top` of each
#   go-bench.txt       go test -bench of the hot paths
#   report.md          the table (pushload report)
#
# Settings (environment):
#   BENCH_QUICK=1      a smoke run of a minute or so with small sizes
#   BENCH_RECORDS=N    records of the scale workload (default 1000000)
#   BENCH_SCALE=10M    the scale workload at 10,000,000 records, one restart
#                      (about 4 GB of disk and several minutes more)
#   BENCH_ROUNDS=N     alternating ceiling/node rounds of the heartbeat workload
#   BENCH_OUT=DIR      where results go (default bench-results)
#   BENCH_GO=0         skip the Go benchmarks
#
# The full run takes about six minutes on a 2-core machine. Other load on
# the machine skews every number: run it on a quiet machine (each result
# records how busy the machine was while it measured).
set -uo pipefail
cd "$(dirname "$0")/.."

GO="${GO:-go}"
OUT="${BENCH_OUT:-bench-results}"
QUICK="${BENCH_QUICK:-0}"

if [[ "${QUICK}" == "1" ]]; then
  RECORDS="${BENCH_RECORDS:-50000}"
  ROUNDS="${BENCH_ROUNDS:-1}"
  HB=(--uuids 10000 --warmup 500ms --duration 1s)
  PUSH=(--phones 1000 --warmup 500ms --duration 2s --settle 2s)
  BACKLOG=(--clients 10000)
  SCALE=(--restarts 1 --settle 1s)
  DUR=(--rounds 1 --kill-after 1s)
  GOBENCH=(-benchtime 100ms)
else
  RECORDS="${BENCH_RECORDS:-1000000}"
  ROUNDS="${BENCH_ROUNDS:-6}"
  HB=(--uuids 100000 --warmup 1s --duration 3s)
  PUSH=(--phones 10000 --warmup 2s --duration 10s)
  BACKLOG=(--clients 100000)
  SCALE=(--restarts 3)
  if [[ "${BENCH_SCALE:-}" == "10M" ]]; then
    RECORDS=10000000
    SCALE=(--restarts 1)
  fi
  DUR=(--rounds 3 --kill-after 3s)
  GOBENCH=()
fi

rm -rf "${OUT}"
mkdir -p "${OUT}/profiles"

echo "== build"
VERSION="$(git describe --tags --always --dirty 2>/dev/null || echo dev)"
CGO_ENABLED=0 "${GO}" build -trimpath -ldflags "-s -w -X github.com/ddpush/ddpush-operator/node.Version=${VERSION}" \
  -o bin/ ./cmd/pushnode ./cmd/pushload || exit 1

{
  echo "date:      $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "version:   ${VERSION}"
  echo "nproc:     $(nproc)"
  echo "cpu:       $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(grep -m1 'cpu MHz' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') MHz, family $(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), L3 $(lscpu 2>/dev/null | awk -F: '/L3/ {gsub(/^ +/, "", $2); print $2}')"
  echo "virtual:   $(lscpu 2>/dev/null | awk -F: '/Hypervisor vendor/ {gsub(/^ +/, "", $2); print $2}') ($(lscpu 2>/dev/null | awk -F: '/Virtualization type/ {gsub(/^ +/, "", $2); print $2}'))"
  echo "memory:    $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "kernel:    $(uname -srm)"
  echo "go:        $("${GO}" version)"
  echo "disk:      $(df -hT . | awk 'NR==2 {print $1, $2}')"
  echo "rmem_max:  $(cat /proc/sys/net/core/rmem_max 2>/dev/null)"
  echo "loadavg:   $(cat /proc/loadavg)  (before the run)"
} | tee "${OUT}/machine.txt"
# How busy is the machine without us? Three seconds of /proc/stat.
busy() { awk '/^cpu / {print $2+$3+$4+$7+$8+$9}' /proc/stat; }
b0="$(busy)"
sleep 3
b1="$(busy)"
others="$(awk -v a="${b0}" -v b="${b1}" 'BEGIN {printf "%.2f", (b-a)/100/3}')"
echo "idle check: ${others} cores busy before the run" | tee -a "${OUT}/machine.txt"
if awk -v o="${others}" 'BEGIN {exit !(o > 0.2)}'; then
  echo "WARNING: the machine is not idle; other work skews every number below." | tee -a "${OUT}/machine.txt"
fi

failed=()
# run NAME ARGS...: one workload, its output kept, its result saved.
run() {
  local name="$1"
  shift
  echo
  echo "== ${name}: bin/pushload $*"
  echo "bin/pushload $* --out ${OUT}/${name}.json" >>"${OUT}/commands.txt"
  if ! bin/pushload "$@" --out "${OUT}/${name}.json" 2>&1 | tee "${OUT}/${name}.log"; then
    failed+=("${name}")
  fi
  echo "   (loadavg after: $(cut -d' ' -f1-3 /proc/loadavg))"
}

NODE=(--node-binary bin/pushnode --profile-dir "${OUT}/profiles")

run heartbeat heartbeat "${NODE[@]}" --compare-ceiling --rounds "${ROUNDS}" "${HB[@]}"
# The same with GOMAXPROCS=4 in the node and in the ceiling answerer alike.
run heartbeat-gomaxprocs4 heartbeat --node-binary bin/pushnode --profile-dir "${OUT}/profiles/gomaxprocs4" \
  --node-env GOMAXPROCS=4 --compare-ceiling --rounds "${ROUNDS}" "${HB[@]}"
run push push "${NODE[@]}" --conns 32 --rates max,half --compare-ceiling "${PUSH[@]}"
# The same with GOMAXPROCS=4 in the node: a P blocked in fdatasync then
# does not hold up the network goroutines (see BENCHMARKS.md).
run push-gomaxprocs4 push --node-binary bin/pushnode --profile-dir "${OUT}/profiles/gomaxprocs4" \
  --node-env GOMAXPROCS=4 --conns 32 --rates max,half --compare-ceiling "${PUSH[@]}"
run push-http push "${NODE[@]}" --via http --bulk 500 --http-conns 4 --rates max "${PUSH[@]}"
run backlog backlog "${NODE[@]}" "${BACKLOG[@]}"
run scale scale "${NODE[@]}" --records "${RECORDS}" "${SCALE[@]}"
run durability durability --node-binary bin/pushnode "${DUR[@]}"

if [[ "${BENCH_GO:-1}" != "0" ]]; then
  echo
  echo "== go benchmarks: ${GO} test -run '^\$' -bench . -benchmem ${GOBENCH[*]} ./node/..."
  echo "${GO} test -run '^\$' -bench . -benchmem ${GOBENCH[*]} ./node/..." >>"${OUT}/commands.txt"
  if ! "${GO}" test -run '^$' -bench . -benchmem "${GOBENCH[@]}" ./node/... 2>&1 | tee "${OUT}/go-bench.txt" | grep -E '^(Benchmark|ok|FAIL|---)'; then
    failed+=("go-bench")
  fi
fi

find "${OUT}/profiles" -name '*.pprof' | while read -r p; do
  "${GO}" tool pprof -top -nodecount=40 "${p}" >"${p%.pprof}.top.txt" 2>/dev/null || true
done

echo
echo "== results (${OUT}/report.md)"
bin/pushload report --dir "${OUT}" | tee "${OUT}/report.md"
if ((${#failed[@]} > 0)); then
  echo
  echo "FAILED: ${failed[*]} (see ${OUT}/*.log)"
  exit 1
fi

#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# stats_bench.sh: `aigate stats` over a day of usage logs. Writes N synthetic entries
# (default 8,640,000: a day at 100 req/s) through the real usage-log writer
# (bench/stats_gen.c) into a temporary data folder, then times `aigate stats` over them
# (wall time and peak RSS from /usr/bin/time -v), warm (the logs in the page cache,
# as just written) and, when this user may drop the page cache, cold. Deletes the data
# at the end. Not part of `make test`.
#
#   make release && bench/stats_bench.sh [--entries N] [--build-dir build/release]
#                                        [--runs 3] [--keep DIR]
set -euo pipefail

BUILD=build/release
ENTRIES=8640000
RUNS=3
KEEP=
while [ $# -gt 0 ]; do
    case "$1" in
    --entries) ENTRIES=$2; shift 2 ;;
    --build-dir) BUILD=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --keep) KEEP=$2; shift 2 ;;
    *) echo "usage: $0 [--entries N] [--build-dir DIR] [--runs N] [--keep DIR]" >&2; exit 2 ;;
    esac
done
AIGATE=$BUILD/aigate
GEN=$BUILD/stats_gen
for b in "$AIGATE" "$GEN"; do
    [ -x "$b" ] || { echo "$b is not built: run make release" >&2; exit 1; }
done

if [ -n "$KEEP" ]; then
    DATA=$KEEP
    mkdir -p "$DATA"
else
    DATA=$(mktemp -d "${TMPDIR:-/tmp}/aigate-stats-bench-XXXXXX")
    trap 'rm -rf "$DATA"' EXIT
fi

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
     "$(free -g | awk '/Mem:/ {print $2}') GiB RAM, $(. /etc/os-release && echo "$PRETTY_NAME")"
if [ ! -d "$DATA/r2/usage-logs" ]; then
    echo "== generating $ENTRIES entries into $DATA"
    /usr/bin/time -f "generation: %e s wall, %U s user, %S s sys, peak RSS %M KiB" \
        "$GEN" --data-dir "$DATA" --entries "$ENTRIES"
fi
echo "disk: $(du -sh "$DATA/r2/usage-logs" | cut -f1)," \
     "$(find "$DATA/r2/usage-logs" -type f | wc -l) objects"

# One timed run: prints "wall m:ss, user+sys CPU s, peak RSS KiB" and keeps the output in
# $DATA/out. On a shared machine the CPU time is the steadier figure.
timed() {
    /usr/bin/time -v -o "$DATA/time.txt" "$AIGATE" stats --data-dir "$DATA" "$@" >"$DATA/out"
    awk -F': ' '/Elapsed \(wall clock\)/ {w=$2} /User time/ {u=$2} /System time/ {s=$2}
                /Maximum resident set size/ {r=$2}
                END {printf "[%s wall, %.2f+%.2f s cpu, %d KiB]", w, u, s, r}' "$DATA/time.txt"
}

cases=("--since 1d --json" "--since 1d --by model --json" "--since 1d --by client --json"
       "--since 1d --by hour" "--since 1h --json")
echo "== warm page cache, $RUNS runs each [wall m:ss, user+sys CPU, peak RSS]"
for c in "${cases[@]}"; do
    # shellcheck disable=SC2086
    line="aigate stats $c:"
    for _ in $(seq "$RUNS"); do
        # shellcheck disable=SC2086
        line="$line  $(timed $c)"
    done
    echo "$line"
    case "$c" in
    *--json*) head -c 400 "$DATA/out"; echo " ..." ;;
    *) head -5 "$DATA/out" ;;
    esac
done

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -w /proc/sys/vm/drop_caches ] && sync && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
    echo "== cold page cache (dropped before each run)"
    for c in "--since 1d --json" "--since 1d --by model --json"; do
        sync
        echo 3 >/proc/sys/vm/drop_caches
        # shellcheck disable=SC2086
        echo "aigate stats $c:  $(timed $c)"
    done
else
    echo "== cold page cache: skipped (cannot write /proc/sys/vm/drop_caches)"
fi

#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# fuzz/run.sh: runs every libFuzzer target of build/fuzz for SECONDS each,
# JOBS at a time, on top of its committed corpus (fuzz/corpus/<name>/, only
# read) and the inputs earlier runs found (build/fuzz/corpus/<name>/). A crash,
# leak, timeout or out-of-memory input is copied into fuzz/corpus/<name>/, so
# that it becomes a regression test of `make test` (the *_corpus ctest
# replays), and the run fails with the command that reproduces it.
#
#   fuzz/run.sh [SECONDS] [JOBS]      defaults: 60, 2
set -u
secs=${1:-60}
jobs=${2:-2}
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build/fuzz
targets=()
for f in "$build"/fuzz_*; do
    [ -f "$f" ] && [ -x "$f" ] && targets+=("$f")
done
if [ ${#targets[@]} -eq 0 ]; then
    echo "fuzz/run.sh: no fuzz targets in $build (make fuzz-build)" >&2
    exit 1
fi

run_one() {
    local bin=$1 name
    name=$(basename "$bin")
    local art=$build/artifacts/$name/ log=$build/logs/$name.log
    mkdir -p "$build/corpus/$name" "$art" "$build/logs"
    local dict=() short=${name#fuzz_}
    [ -f "$root/fuzz/$short.dict" ] && dict=(-dict="$root/fuzz/$short.dict")
    # -max_total_time bounds the run; timeout(1) bounds a wedged one too.
    timeout --kill-after=10 $((secs + 60)) "$bin" -max_total_time="$secs" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$art" "${dict[@]}" \
        "$build/corpus/$name" "$root/fuzz/corpus/$name" >"$log" 2>&1
    local rc=$?
    local found=0
    for f in "$art"*; do
        [ -f "$f" ] || continue
        found=1
        cp "$f" "$root/fuzz/corpus/$name/$(basename "$f")"
        echo "== $name: $(basename "$f") is now fuzz/corpus/$name/$(basename "$f");" \
             "reproduce: $bin $root/fuzz/corpus/$name/$(basename "$f")"
        rm -f "$f"
    done
    local execs
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    if [ $rc -ne 0 ] || [ $found -ne 0 ]; then
        echo "== $name: FAILED (exit $rc); the end of $log:"
        tail -n 30 "$log"
        return 1
    fi
    echo "== $name: ok, ${execs:-?} inputs in ${secs}s"
}

fail=0
pids=()
for bin in "${targets[@]}"; do
    run_one "$bin" &
    pids+=($!)
    if [ ${#pids[@]} -ge "$jobs" ]; then
        wait "${pids[0]}" || fail=1
        pids=("${pids[@]:1}")
    fi
done
for p in "${pids[@]}"; do
    wait "$p" || fail=1
done
exit $fail

#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# bench/run.sh: the aigate benchmark harness behind `make bench`. Starts a fast upstream (nginx
# answering /v1/messages with a canned Messages API body), aigate and a reference nginx on
# 127.0.0.1 ephemeral ports (and, for S4, a streaming upstream with its own aigate and nginx),
# runs scenarios S1-S7, S9 and S10 against aigate and nginx alternately (S5 over plain HTTP and
# over TLS), S8 (the cost of the admin listener's metrics and live tail) against two aigate
# instances alternately, S11 (the cost of the limiter and the cache on Redis) against two aigate
# instances and a redis-server, and S12 (a reload every second under load) against one aigate
# with an admin listener, with and without reloads, prints
# the tables and writes the raw figures to bench/results/<UTC timestamp>.json. It stops every
# process it started, by PID, on exit, on failure and on INT/TERM. See bench/README.md.
# shellcheck disable=SC2317 # functions run through measure "$@" look unreachable to it
set -u -o pipefail
shopt -u patsub_replacement 2>/dev/null || true # "&" in a replacement stays a plain "&"

# ---- things other work may need to adjust ------------------------------------------------------
# The config aigate is started with (written to $AIGATE_CONFIG_NAME in the instance's directory).
# The rate limit must not get in the way of a load test; the access log is off as it is in the
# reference nginx; S6 needs room for its idle connections and S4 for its streams.
AIGATE_CONFIG_NAME=aigate.toml
AIGATE_CONFIG_TOML='[aigate]
rate_limit = 60000000
rate_period = 60
access_log = false
max_connections = 100000
admin_listen = ""
'
AIGATE_API_KEY=sk-bench
AIGATE_ROUTE=/api/generate

# S8 scrapes the admin listener on loopback without a token: an admin token in the caller's
# environment would make every admin request a 401.
unset AIGATE_ADMIN_TOKEN

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench

usage() {
    cat <<'EOF'
usage: bench/run.sh [options]
  --duration S         seconds per scenario run (default 10)
  --scenarios LIST     comma-separated subset of S1,S2,S3,S4,S5,S6,S7,S8,S9,S10,S11,S12
                       (default: all; S11 is skipped with a note when redis-server is not
                       installed, S5's TLS variant when openssl or curl is not)
  --threads LIST       aigate threads / nginx worker_processes for S7 (default 1,2); the first
                       value is also used for S1-S6
  --rates LIST         S3 request rates in req/s (default 1000,5000,10000)
  --rounds N           alternate aigate and nginx N times per measurement; the table shows the
                       median (default 1; S8 and S11 alternate their two instances N times,
                       S12 its runs with and without reloads, default 3)
  --server-cpus LIST   taskset CPU list for aigate and the reference nginx
  --load-cpus LIST     taskset CPU list for wrk and ag_loadgen
  --upstream-cpus LIST taskset CPU list for the upstream nginx (default: --server-cpus)
  --upstream-workers N worker_processes of the upstream nginx (default 1)
  --wrk-threads N      wrk -t (default 1)       --wrk-conns N   wrk -c (default 64)
  --conns N            ag_loadgen -c for S3 (default 64)
  --cold-runs N        S5 runs per server, plain and TLS each (default 20)
  --hold N             S6 idle keep-alive connections (default 10000)
  --streams N          S4 concurrent streams (default 1000)
  --stream-words N     S4 text deltas per concurrent stream (default 200)
  --stream-delay-ms MS S4 delay between deltas (default 20: 200 deltas last about 4 s)
  --ttfb-requests N    S4 sequential streams per time-to-first-byte run (default 500)
  --s8-split           S8 also measures the admin listener scraped with no tail subscriber (m)
  --smoke              1 s per scenario, minimal counts: checks the harness, not the figures
  --build-dir DIR      where aigate and ag_loadgen are (default build/release)
  --aigate PATH        the aigate binary (default BUILD_DIR/aigate)
  --loadgen PATH       the ag_loadgen binary (default BUILD_DIR/ag_loadgen)
  --sse-upstream PATH  the S4 streaming upstream (default BUILD_DIR/ag_sse_upstream)
  --out FILE           results file (default bench/results/<UTC timestamp>.json)
  --keep-tmp           keep the temp directory (configs, logs) for inspection
EOF
}

DURATION=10
SCENARIOS=S1,S2,S3,S4,S5,S6,S7,S8,S9,S10,S11,S12
THREADS=1,2
RATES=1000,5000,10000
ROUNDS=1
ROUNDS_SET=0
S8_ROUNDS_DEFAULT=3
SERVER_CPUS=
LOAD_CPUS=
UPSTREAM_CPUS=
UPSTREAM_WORKERS=1
WRK_THREADS=1
WRK_CONNS=64
LG_CONNS=64
LG_TIMEOUT=5
COLD_RUNS=20
HOLD_CONNS=10000
STREAMS=1000
STREAM_WORDS=200
STREAM_DELAY_MS=20
TTFB_REQS=500
SMOKE=0
S8_SPLIT=0
BUILD_DIR=$ROOT/build/release
AIGATE=
LOADGEN=
SSE_UPSTREAM=
OUT=
KEEP_TMP=0

die() {
    echo "bench: $*" >&2
    exit 1
}

need_value() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value"; }

while [ $# -gt 0 ]; do
    case $1 in
    --duration) need_value "$@"; DURATION=$2; shift ;;
    --scenarios) need_value "$@"; SCENARIOS=$2; shift ;;
    --threads) need_value "$@"; THREADS=$2; shift ;;
    --rates) need_value "$@"; RATES=$2; shift ;;
    --rounds) need_value "$@"; ROUNDS=$2; ROUNDS_SET=1; shift ;;
    --server-cpus) need_value "$@"; SERVER_CPUS=$2; shift ;;
    --load-cpus) need_value "$@"; LOAD_CPUS=$2; shift ;;
    --upstream-cpus) need_value "$@"; UPSTREAM_CPUS=$2; shift ;;
    --upstream-workers) need_value "$@"; UPSTREAM_WORKERS=$2; shift ;;
    --wrk-threads) need_value "$@"; WRK_THREADS=$2; shift ;;
    --wrk-conns) need_value "$@"; WRK_CONNS=$2; shift ;;
    --conns) need_value "$@"; LG_CONNS=$2; shift ;;
    --cold-runs) need_value "$@"; COLD_RUNS=$2; shift ;;
    --hold) need_value "$@"; HOLD_CONNS=$2; shift ;;
    --streams) need_value "$@"; STREAMS=$2; shift ;;
    --stream-words) need_value "$@"; STREAM_WORDS=$2; shift ;;
    --stream-delay-ms) need_value "$@"; STREAM_DELAY_MS=$2; shift ;;
    --ttfb-requests) need_value "$@"; TTFB_REQS=$2; shift ;;
    --smoke) SMOKE=1 ;;
    --s8-split) S8_SPLIT=1 ;;
    --build-dir) need_value "$@"; BUILD_DIR=$2; shift ;;
    --aigate) need_value "$@"; AIGATE=$2; shift ;;
    --loadgen) need_value "$@"; LOADGEN=$2; shift ;;
    --sse-upstream) need_value "$@"; SSE_UPSTREAM=$2; shift ;;
    --out) need_value "$@"; OUT=$2; shift ;;
    --keep-tmp) KEEP_TMP=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
    esac
    shift
done

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
is_list() { [[ $1 =~ ^[0-9]+(,[0-9]+)*$ ]]; }
is_cpus() { [ -z "$1" ] || [[ $1 =~ ^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$ ]]; }
for v in DURATION ROUNDS UPSTREAM_WORKERS WRK_THREADS WRK_CONNS LG_CONNS COLD_RUNS HOLD_CONNS \
    STREAMS STREAM_WORDS TTFB_REQS; do
    is_uint "${!v}" && [ "${!v}" -ge 1 ] || die "--${v,,} must be a positive integer"
done
is_uint "$STREAM_DELAY_MS" || die "--stream-delay-ms must be a whole number of milliseconds"
is_list "$THREADS" || die "--threads must look like 1,2"
is_list "$RATES" || die "--rates must look like 1000,5000"
for v in SERVER_CPUS LOAD_CPUS UPSTREAM_CPUS; do is_cpus "${!v}" || die "bad CPU list: ${!v}"; done
[ -n "$UPSTREAM_CPUS" ] || UPSTREAM_CPUS=$SERVER_CPUS
[[ $SCENARIOS =~ ^S(1[0-2]|[1-9])(,S(1[0-2]|[1-9]))*$ ]] || die "--scenarios must look like S1,S3"

if [ "$SMOKE" = 1 ]; then
    DURATION=1
    ROUNDS=1
    RATES=${RATES%%,*}
    THREADS=${THREADS%%,*}
    COLD_RUNS=3
    HOLD_CONNS=200
    STREAMS=50
    STREAM_WORDS=50
    TTFB_REQS=50
fi
S8_ROUNDS=$ROUNDS
[ "$ROUNDS_SET" = 1 ] || [ "$SMOKE" = 1 ] || S8_ROUNDS=$S8_ROUNDS_DEFAULT
S11_ROUNDS=$S8_ROUNDS # S11 alternates its two instances as S8 does
S12_ROUNDS=$S8_ROUNDS # and S12 its runs with and without reloads
IFS=, read -r -a THREAD_LIST <<<"$THREADS"
IFS=, read -r -a RATE_LIST <<<"$RATES"
BASE_T=${THREAD_LIST[0]}
want() { [[ ,$SCENARIOS, == *,$1,* ]]; }

# Servers run from their own directories: every path given on the command line becomes absolute.
abspath() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
BUILD_DIR=$(abspath "$BUILD_DIR")
[ -n "$AIGATE" ] || AIGATE=$BUILD_DIR/aigate
[ -n "$LOADGEN" ] || LOADGEN=$BUILD_DIR/ag_loadgen
[ -n "$SSE_UPSTREAM" ] || SSE_UPSTREAM=$BUILD_DIR/ag_sse_upstream
AIGATE=$(abspath "$AIGATE")
LOADGEN=$(abspath "$LOADGEN")
SSE_UPSTREAM=$(abspath "$SSE_UPSTREAM")
[ -z "$OUT" ] || OUT=$(abspath "$OUT")

# Missing load tools are "skipped" (77, as ctest expects), not "failed".
missing=""
for t in wrk nginx timeout taskset awk sed sort; do command -v "$t" >/dev/null || missing+=" $t"; done
if [ -n "$missing" ]; then
    echo "bench: missing tools:$missing (make deps-bench installs wrk and nginx-light)" >&2
    exit 77
fi
[ -x "$LOADGEN" ] || die "no load generator at $LOADGEN (cmake --build <dir> --target ag_loadgen)"

AIGATE_OK=1
AIGATE_SKIP=
if [ ! -x "$AIGATE" ]; then
    AIGATE_OK=0
    AIGATE_SKIP="aigate binary not built ($AIGATE)"
fi

# ---- processes: everything we start is registered, and stopped by PID ----------------------

TMP=$(mktemp -d "${TMPDIR:-/tmp}/aigate-bench.XXXXXX") || die "mktemp failed"
PIDS=()

# Direct children of $1, read from /proc (no procps needed).
children_of() {
    local f pid=$1
    if [ -r "/proc/$pid/task/$pid/children" ]; then
        cat /proc/"$pid"/task/*/children 2>/dev/null
        return
    fi
    for f in /proc/[0-9]*/stat; do
        awk -v p="$pid" '{ sub(/.*\) /, ""); if ($2 == p) { split(FILENAME, a, "/"); print a[3] } }' \
            "$f" 2>/dev/null
    done
}

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# Stops $1 and its children (nginx workers): TERM first, KILL what is left after 5 s.
stop_pid() {
    local pid=$1 kids k i
    alive "$pid" || { wait "$pid" 2>/dev/null; return 0; }
    kids=$(children_of "$pid" | tr ' ' '\n')
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do
        alive "$pid" || break
        sleep 0.05
    done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null
    for k in $kids; do alive "$k" && kill -KILL "$k" 2>/dev/null; done
    wait "$pid" 2>/dev/null
    return 0
}

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if [ "$KEEP_TMP" = 1 ]; then
        echo "bench: temp directory kept: $TMP" >&2
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "bench: interrupted" >&2; exit 130' INT
trap 'echo "bench: terminated" >&2; exit 143' TERM

# Runs "$@" in the background with stdout+stderr in $LOG, pinned to $CPUS when set, and sets
# STARTED to its PID. exec keeps the PID: the one we record is the server itself.
LOG=/dev/null
CPUS=
STARTED=
spawn() {
    if [ -n "$CPUS" ]; then
        (exec taskset -c "$CPUS" "$@") >"$LOG" 2>&1 &
    else
        (exec "$@") >"$LOG" 2>&1 &
    fi
    STARTED=$!
    PIDS+=("$STARTED")
}

forget_pid() {
    local p out=()
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || out+=("$p"); done
    PIDS=("${out[@]}")
}

LOAD_PREFIX=()
[ -z "$LOAD_CPUS" ] || LOAD_PREFIX=(taskset -c "$LOAD_CPUS")

# ---- small helpers -------------------------------------------------------------------------

# jnum JSON KEY: the number stored under "KEY" in a flat JSON object, or nothing.
jnum() { sed -n "s/.*\"$2\":\(-\{0,1\}[0-9][0-9.eE+-]*\).*/\1/p" <<<"$1" | head -n1; }

json_escape() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\n'/\\n}
    s=${s//$'\r'/\\r}
    s=${s//$'\t'/\\t}
    printf '%s' "$s"
}

median() { printf '%s\n' "$@" | grep -E '^-?[0-9.]+$' | sort -g | awk '{a[NR]=$1} END {
    if (NR == 0) exit; if (NR % 2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2 }'; }

calc() { awk "BEGIN { printf \"%.1f\", $1 }"; }

free_ports() {
    "$LOADGEN" --free-port "$1" || echo "bench: cannot find free ports" >&2
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }

# RSS of a process plus its children (nginx master + workers), in KiB.
rss_tree() {
    local pid=$1 total k r
    total=$(rss_kib "$pid")
    [ -n "$total" ] || return 0
    for k in $(children_of "$pid"); do
        r=$(rss_kib "$k")
        total=$((total + ${r:-0}))
    done
    echo "$total"
}

# Renders template $1 into $2, replacing @KEY@ by VALUE for each KEY=VALUE argument.
render() {
    local tpl dst=$2 kv
    tpl=$(<"$1")
    shift 2
    for kv in "$@"; do
        tpl=${tpl//@${kv%%=*}@/${kv#*=}}
    done
    if [[ $tpl =~ @[A-Z_]+@ ]]; then
        die "unfilled placeholder ${BASH_REMATCH[0]} in $dst"
    fi
    printf '%s\n' "$tpl" >"$dst"
}

NOTES=()
note() {
    local n
    for n in "${NOTES[@]}"; do [ "$n" != "$*" ] || return 0; done # once is enough
    NOTES+=("$*")
    echo "bench: note: $*" >&2
}
HARNESS_ERRORS=0
harness_error() {
    HARNESS_ERRORS=$((HARNESS_ERRORS + 1))
    note "$*"
}

RUN_KEYS=()
declare -A RUN
# record KEY JSON: keeps one raw result; KEY is "scenario|target|threads|round[|extra]".
record() {
    RUN_KEYS+=("$1")
    RUN[$1]=$2
}

# ---- canned bodies ---------------------------------------------------------------------------

CANNED_FILE=$BENCH/canned/messages.json
CANNED=$(<"$CANNED_FILE")
CANNED=${CANNED//$'\n'/}
# nginx's return text is single-quoted and interpolates $variables: keep the body plain.
case $CANNED in *\'* | *\$* | *\\*) die "$CANNED_FILE must not contain ', \$ or \\" ;; esac
CANNED_TEXT=$(sed -n 's/.*"text":"\([^"]*\)".*/\1/p' <<<"$CANNED")
[ -n "$CANNED_TEXT" ] || die "no text block in $CANNED_FILE"
# What aigate answers on a cache hit; the reference nginx returns the same bytes in S1.
CACHED_BODY="{\"output\":\"$CANNED_TEXT\",\"cached\":true}"
NONCE=$(date +%s%N)
S1_BODY="{\"prompt\":\"bench fixed prompt $NONCE\"}"
S2_BODY="{\"prompt\":\"bench unique prompt $NONCE {{n}}\"}"
# Each run of unique prompts gets prompts of its own: wrk and ag_loadgen number them from the start
# in every run, and a prompt an earlier run sent would be a cache hit on aigate (S2's second
# round, S3's second rate). next_s2_body sets S2_RUN_BODY (no subshell: the count must last).
S2_SEQ=0
S2_RUN_BODY=
next_s2_body() {
    local hole='{{n}}'
    S2_SEQ=$((S2_SEQ + 1))
    S2_RUN_BODY=${S2_BODY/"$hole"/r$S2_SEQ-$hole}
}
UPSTREAM_BODY='{"model":"claude-haiku-4-5","max_tokens":1024,"messages":[{"role":"user","content":"bench direct {{n}}"}]}'

# ---- fd limits -----------------------------------------------------------------------------

hard=$(ulimit -Hn)
[ "$hard" = unlimited ] && hard=1048576
# A proxy holds two descriptors per stream: the client's and the upstream's.
want_fds=$((HOLD_CONNS + 1024))
[ $((2 * STREAMS + 1024)) -le "$want_fds" ] || want_fds=$((2 * STREAMS + 1024))
if [ "$hard" -lt "$want_fds" ]; then
    if [ "$hard" -lt $((HOLD_CONNS + 1024)) ]; then
        HOLD_CONNS=$((hard - 1024))
        [ "$HOLD_CONNS" -ge 100 ] || HOLD_CONNS=100
        note "S6 uses $HOLD_CONNS connections: the hard fd limit is $hard (raise it for more)"
    fi
    if [ "$hard" -lt $((2 * STREAMS + 1024)) ]; then
        STREAMS=$(((hard - 1024) / 2))
        [ "$STREAMS" -ge 10 ] || STREAMS=10
        note "S4 uses $STREAMS concurrent streams: the hard fd limit is $hard (raise it for more)"
    fi
    want_fds=$hard
fi
soft=$(ulimit -n)
if [ "$soft" != unlimited ] && [ "$soft" -lt "$want_fds" ]; then
    ulimit -n "$want_fds" 2>/dev/null || note "could not raise ulimit -n to $want_fds"
fi
NOFILE=$(ulimit -n)
WORKER_CONNECTIONS=$((HOLD_CONNS + 1000))

USER_DIRECTIVE=
[ "$(id -u)" = 0 ] && USER_DIRECTIVE="user $(id -un) $(id -gn);" # workers stay this user

# ---- servers -------------------------------------------------------------------------------

# nginx_start NAME TEMPLATE WORKERS CPUS PROBE_URL KEY=VALUE...: a fresh instance directory,
# nginx in the foreground (master + workers), ready once PROBE_URL answers 2xx. Sets NGINX_PID.
NGINX_PID=
NGINX_DIR=
nginx_prepare() {
    local name=$1 tpl=$2 workers=$3
    shift 3
    NGINX_DIR=$TMP/$name
    mkdir -p "$NGINX_DIR/tmp"
    render "$BENCH/nginx/common.conf" "$NGINX_DIR/common.conf" DIR="$NGINX_DIR" \
        USER_DIRECTIVE="$USER_DIRECTIVE" WORKERS="$workers" NOFILE="$NOFILE" \
        WORKER_CONNECTIONS="${NGINX_WC:-$WORKER_CONNECTIONS}"
    render "$BENCH/nginx/$tpl" "$NGINX_DIR/nginx.conf" DIR="$NGINX_DIR" "$@"
}
nginx_argv() { NGINX_ARGV=(nginx -p "$NGINX_DIR/" -e "$NGINX_DIR/error.log" -c "$NGINX_DIR/nginx.conf" -g 'daemon off;'); }

nginx_start() {
    local name=$1 tpl=$2 workers=$3 cpus=$4 probe=$5 out
    shift 5
    nginx_prepare "$name" "$tpl" "$workers" "$@"
    nginx_argv
    LOG=$NGINX_DIR/stdout.log CPUS=$cpus spawn "${NGINX_ARGV[@]}"
    NGINX_PID=$STARTED
    out=$("$LOADGEN" --first-ok -u "$probe" -m GET -t 10)
    if [[ $out != *'"ok":true'* ]]; then
        cat "$NGINX_DIR/error.log" "$NGINX_DIR/stdout.log" >&2 2>/dev/null
        die "nginx $name did not come up ($out)"
    fi
}

# bench_config KEY=VALUE...: the bench config with KEY = VALUE (VALUE as TOML spells it, quotes
# and all) in [aigate] for each argument: the line that sets KEY replaced, else one added after
# [aigate]. S5's TLS instances, S8's and S12's with an admin listener.
bench_config() {
    local toml=$AIGATE_CONFIG_TOML kv k line
    for kv in "$@"; do
        k=${kv%%=*}
        line="$k = ${kv#*=}"
        if grep -q "^${k}[[:space:]]*=" <<<"$toml"; then
            # shellcheck disable=SC2001 # a whole line, whatever its value
            toml=$(sed "s|^${k}[[:space:]]*=.*|$line|" <<<"$toml")
        else
            toml=$(sed "/^\[aigate\]/a $line" <<<"$toml")
        fi
    done
    printf '%s\n' "$toml"
}
# The bench config with admin_listen = "127.0.0.1:$1" in [aigate].
s8_config_obs() { bench_config admin_listen="\"127.0.0.1:$1\""; }

# aigate_start THREADS: a fresh instance (own directory, config and port). Sets AIGATE_PID,
# AIGATE_PORT; returns 1 (with AIGATE_SKIP set) when it does not come up. AIGATE_PORT_WANT, when
# set, is the port (S8 takes its ports in one go, so that they differ).
AIGATE_PID=
AIGATE_PORT=
AIGATE_N=0
aigate_prepare() {
    AIGATE_N=$((AIGATE_N + 1))
    AIGATE_DIR=$TMP/aigate-$AIGATE_N
    mkdir -p "$AIGATE_DIR"
    # AIGATE_TOML, when set, replaces the bench config (S8's instance with an admin listener).
    printf '%s' "${AIGATE_TOML:-$AIGATE_CONFIG_TOML}" >"$AIGATE_DIR/$AIGATE_CONFIG_NAME"
}
# PORT THREADS: the command line, in AIGATE_ARGV. AIGATE_UPSTREAM_URL, when set, replaces the
# fast upstream (S4 points aigate at the streaming one).
aigate_argv() {
    AIGATE_ARGV=("$AIGATE" serve --host 127.0.0.1 --port "$1" --threads "$2"
        --upstream "${AIGATE_UPSTREAM_URL:-http://127.0.0.1:$UPSTREAM_PORT}"
        --config "$AIGATE_DIR/$AIGATE_CONFIG_NAME")
}

aigate_start() {
    local threads=$1 i
    aigate_prepare
    AIGATE_PORT=${AIGATE_PORT_WANT:-$(free_ports 1)}
    [ -n "$AIGATE_PORT" ] || die "no free port"
    # Its data directory defaults to ./.aigate: run it from its own instance directory.
    pushd "$AIGATE_DIR" >/dev/null || die "cd $AIGATE_DIR"
    aigate_argv "$AIGATE_PORT" "$threads"
    LOG=$AIGATE_DIR/aigate.log CPUS=$SERVER_CPUS spawn env ANTHROPIC_API_KEY="$AIGATE_API_KEY" \
        "${AIGATE_ARGV[@]}"
    popd >/dev/null || die "popd"
    AIGATE_PID=$STARTED
    for ((i = 0; i < 200; i++)); do
        if grep -q "listening on 127.0.0.1:$AIGATE_PORT" "$AIGATE_DIR/aigate.log" 2>/dev/null; then
            # Say so when aigate ignored part of the bench config (a renamed key, say).
            if [ "$AIGATE_N" = 1 ] && grep -qi 'warn' "$AIGATE_DIR/aigate.log"; then
                note "aigate warned at startup: $(grep -i 'warn' "$AIGATE_DIR/aigate.log" |
                    sed 's/^.*\(warn\)/\1/I' | head -n 3 | tr '\n' ';')"
            fi
            return 0
        fi
        alive "$AIGATE_PID" || break
        sleep 0.05
    done
    AIGATE_SKIP="aigate did not start: $(tail -n 3 "$AIGATE_DIR/aigate.log" 2>/dev/null | tr '\n' ' ')"
    note "$AIGATE_SKIP"
    stop_pid "$AIGATE_PID"
    forget_pid "$AIGATE_PID"
    AIGATE_PID=
    AIGATE_OK=0
    return 1
}

aigate_stop() {
    [ -n "$AIGATE_PID" ] || return 0
    if ! alive "$AIGATE_PID"; then
        note "aigate (pid $AIGATE_PID) had exited before it was stopped: $(tail -n 3 \
            "$AIGATE_DIR/aigate.log" 2>/dev/null | tr '\n' ' ')"
    fi
    stop_pid "$AIGATE_PID"
    forget_pid "$AIGATE_PID"
    AIGATE_PID=
}

ref_stop() {
    [ -n "$REF_PID" ] || return 0
    stop_pid "$REF_PID"
    forget_pid "$REF_PID"
    REF_PID=
}

# The reference nginx with THREADS workers (S1 on REF_CACHED_PORT, S2/S3 on REF_PROXY_PORT).
REF_PID=
ref_start() {
    local workers=$1 ports
    ports=$(free_ports 2)
    REF_CACHED_PORT=${ports%% *}
    REF_PROXY_PORT=${ports##* }
    [ -n "$REF_PROXY_PORT" ] || die "no free port"
    nginx_start "reference-w$workers" reference.conf "$workers" "$SERVER_CPUS" \
        "http://127.0.0.1:$REF_CACHED_PORT$AIGATE_ROUTE" UPSTREAM_PORT="$UPSTREAM_PORT" \
        CACHED_PORT="$REF_CACHED_PORT" PROXY_PORT="$REF_PROXY_PORT" CACHED_BODY="$CACHED_BODY"
    REF_PID=$NGINX_PID
}

# Both aigate (when available) and the reference nginx with THREADS each.
INSTANCE_T=
instances_start() {
    local t=$1
    INSTANCE_T=$t
    ref_start "$t"
    if [ "$AIGATE_OK" = 1 ]; then
        aigate_start "$t" || true
    fi
    CACHE_STATE=unknown
}

instances_stop() {
    aigate_stop
    ref_stop
}

aigate_up() {
    [ "$AIGATE_OK" = 1 ] && [ -n "$AIGATE_PID" ] || return 1
    if ! alive "$AIGATE_PID"; then
        AIGATE_SKIP="aigate exited during the run: $(tail -n 3 "$AIGATE_DIR/aigate.log" \
            2>/dev/null | tr '\n' ' ')"
        note "$AIGATE_SKIP"
        AIGATE_OK=0
        AIGATE_PID=
        return 1
    fi
}

# ---- measurements ----------------------------------------------------------------------------

LUA=$TMP/bench.lua
cat >"$LUA" <<'EOF'
-- Generated by bench/run.sh. POSTs BENCH_BODY; with BENCH_UNIQUE=1 each request replaces
-- {{n}} by "<thread>-<counter>" so that no two requests are the same. done() prints one JSON
-- line (latencies in microseconds) that the harness reads.
local body = os.getenv("BENCH_BODY") or ""
local unique = os.getenv("BENCH_UNIQUE") == "1"
wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
local nthreads = 0
local counter = 0

function setup(thread)
    nthreads = nthreads + 1
    thread:set("tid", nthreads)
end

if unique then
    request = function()
        counter = counter + 1
        local b = string.gsub(body, "{{n}}", tostring(tid or 0) .. "-" .. tostring(counter))
        return wrk.format(nil, nil, nil, b)
    end
end

function done(summary, latency, requests)
    local e = summary.errors
    local secs = summary.duration / 1e6
    io.write(string.format('{"tool":"wrk","requests":%d,"duration_s":%.3f,"bytes":%d,' ..
        '"rps":%.1f,"p50_us":%.1f,"p90_us":%.1f,"p99_us":%.1f,"p999_us":%.1f,' ..
        '"max_us":%.1f,"mean_us":%.1f,"err_connect":%d,"err_read":%d,"err_write":%d,' ..
        '"err_status":%d,"err_timeout":%d,"errors":%d}\n',
        summary.requests, secs, summary.bytes, summary.requests / secs,
        latency:percentile(50), latency:percentile(90), latency:percentile(99),
        latency:percentile(99.9), latency.max, latency.mean, e.connect, e.read, e.write,
        e.status, e.timeout, e.connect + e.read + e.write + e.status + e.timeout))
end
EOF

# wrk_run URL BODY UNIQUE: closed-loop run; prints wrk's JSON line, or an error object.
wrk_run() {
    local url=$1 body=$2 unique=$3 out line
    out=$(BENCH_BODY=$body BENCH_UNIQUE=$unique timeout -k 5 $((DURATION + 30)) "${LOAD_PREFIX[@]}" \
        wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"${DURATION}s" --timeout 5s -s "$LUA" "$url" 2>&1)
    line=$(grep -m1 '^{"tool":"wrk"' <<<"$out")
    if [ -z "$line" ]; then
        line="{\"tool\":\"wrk\",\"error\":\"$(json_escape "$(tail -n 3 <<<"$out")")\"}"
    fi
    echo "$line"
}

# lg_rate URL BODY RATE: open-loop run at RATE req/s with unique bodies.
lg_rate() {
    local url=$1 body=$2 rate=$3 line
    line=$(timeout -k 5 $((DURATION + LG_TIMEOUT + 30)) "${LOAD_PREFIX[@]}" "$LOADGEN" -u "$url" \
        -b "$body" --unique-prompt -R "$rate" -d "$DURATION" -c "$LG_CONNS" -t "$LG_TIMEOUT" 2>&1 |
        grep -m1 '^{"tool":"ag_loadgen"')
    [ -n "$line" ] || line='{"tool":"ag_loadgen","error":"no output"}'
    echo "$line"
}

# measure KEY CMD...: runs a measurement, records it, and flags errors in the notes.
measure() {
    local key=$1 out errs lag queue
    shift
    out=$("$@")
    record "$key" "$out"
    if [[ $out == *'"error":'* ]]; then
        case $key in
        *"|aigate|"*) note "$key failed: $out" ;;
        *) harness_error "$key failed: $out" ;;
        esac
        return
    fi
    errs=$(jnum "$out" errors)
    if [ -n "$errs" ] && [ "$errs" != 0 ]; then
        note "$key: $errs errors (non-2xx, connection errors or timeouts): figures are suspect"
    fi
    # The open-loop generator reports how late it woke for its own schedule; late means the
    # machine was too busy for the tail latencies to mean much.
    lag=$(jnum "$out" send_lag_p99_us)
    if [ -n "$lag" ] && awk -v l="$lag" 'BEGIN { exit !(l > 1000) }'; then
        note "$key: the load generator itself ran late (p99 ${lag} us behind schedule): a busy machine, tails unreliable"
    fi
    queue=$(jnum "$out" max_queue)
    if [ -n "$queue" ] && [ "$queue" -gt 0 ]; then
        note "$key: up to $queue requests waited for one of the $LG_CONNS connections (counted in their latency)"
    fi
}

# The first request fills aigate's cache; the second tells whether the cache answered.
CACHE_STATE=unknown
aigate_warm_cache() {
    local out i
    for i in 1 2; do
        out=$("$LOADGEN" --first-ok -u "http://127.0.0.1:$AIGATE_PORT$AIGATE_ROUTE" -b "$S1_BODY" \
            -t 10 --body-out "$TMP/s1-body-$i.json")
        if [[ $out != *'"ok":true'* ]]; then
            note "aigate warm-up request $i got no 2xx: $out"
            CACHE_STATE=error
            return
        fi
    done
    if grep -q '"cached":true' "$TMP/s1-body-2.json"; then
        CACHE_STATE=hit
    else
        CACHE_STATE=miss
        note "aigate answered a repeated prompt with \"cached\":false: S1 measures its proxied path"
    fi
}

s1_run() { # ROUND THREADS
    local r=$1 t=$2
    if aigate_up; then
        [ "$CACHE_STATE" != unknown ] || aigate_warm_cache
        measure "S1|aigate|$t|$r" wrk_run "http://127.0.0.1:$AIGATE_PORT$AIGATE_ROUTE" "$S1_BODY" 0
    fi
    measure "S1|nginx|$t|$r" wrk_run "http://127.0.0.1:$REF_CACHED_PORT$AIGATE_ROUTE" "$S1_BODY" 0
}

s2_run() { # ROUND THREADS
    local r=$1 t=$2
    next_s2_body
    if aigate_up; then
        measure "S2|aigate|$t|$r" wrk_run "http://127.0.0.1:$AIGATE_PORT$AIGATE_ROUTE" "$S2_RUN_BODY" 1
    fi
    measure "S2|nginx|$t|$r" wrk_run "http://127.0.0.1:$REF_PROXY_PORT$AIGATE_ROUTE" "$S2_RUN_BODY" 1
}

rss_sample() { # LABEL
    if aigate_up; then RSS[aigate|$1]=$(rss_tree "$AIGATE_PID"); fi
    RSS[nginx|$1]=$(rss_tree "$REF_PID")
}

# hold_run TARGET PID URL: S6 for one server.
hold_run() {
    local target=$1 pid=$2 url=$3 body=$4 before with out lpid i ready open per
    before=$(rss_tree "$pid")
    local outf=$TMP/hold-$target.out
    LOG=$outf CPUS=$LOAD_CPUS spawn "$LOADGEN" --hold "$HOLD_CONNS" -u "$url" -b "$body" -d 120 \
        -t 90 --open-batch 256
    lpid=$STARTED
    for ((i = 0; i < 2000; i++)); do
        grep -q '"mode":"hold"' "$outf" 2>/dev/null && break
        alive "$lpid" || break
        sleep 0.05
    done
    ready=$(grep -m1 '"mode":"hold"' "$outf")
    # Let deferred work (accept queues, lazy allocations) settle before sampling.
    sleep 0.5
    with=$(rss_tree "$pid")
    stop_pid "$lpid"
    forget_pid "$lpid"
    local end
    end=$(grep -m1 '"mode":"hold_end"' "$outf")
    if [ -z "$ready" ]; then
        out="{\"tool\":\"rss\",\"error\":\"$(json_escape "$(tail -n 3 "$outf")")\"}"
    else
        open=$(jnum "$ready" open)
        per=null
        if [ "${open:-0}" -gt 0 ] && [ -n "$before" ] && [ -n "$with" ]; then
            per=$(((with - before) * 1024 / open))
        fi
        out="{\"tool\":\"rss\",\"before_kib\":${before:-null},\"with_kib\":${with:-null},"
        out+="\"open\":$open,\"bytes_per_conn\":$per,\"hold\":$ready,\"hold_end\":${end:-null}}"
        [ "$(jnum "$ready" errors)" = 0 ] ||
            note "S6 $target: $(jnum "$ready" errors) of $HOLD_CONNS connections failed to set up"
    fi
    record "S6|$target|$INSTANCE_T|1" "$out"
}

# ---- S4: streaming ---------------------------------------------------------------------------
# A streaming upstream (ag_sse_upstream, paced by a timer) with its own aigate and its own nginx
# (stream.conf: proxy_buffering off), so that each one's memory is measured from its own idle
# baseline. The gateway's route takes a prompt; the direct runs, the nginx runs and aigate's
# /v1/messages pass-through send the upstream's own body. The tags [[words:N]] and [[delay:MS]]
# are read by the upstream (the same tags as tests/fake-upstream).

S4_TTFB_TAGS="[[words:8]] [[delay:0]]"
S4_LONG_TAGS="[[words:$STREAM_WORDS]] [[delay:$STREAM_DELAY_MS]]"
S4_TTFB_BOUND=300 # seconds for a whole time-to-first-byte run; each request gets 10
S4_LONG_BOUND=$((STREAM_WORDS * STREAM_DELAY_MS / 1000 + 60))
s4_generate_body() { echo "{\"prompt\":\"$1 bench stream $NONCE {{n}}\",\"stream\":true}"; }
s4_messages_body() {
    echo "{\"model\":\"claude-haiku-4-5\",\"max_tokens\":1024,\"messages\":[{\"role\":\"user\",\"content\":\"$1 bench stream $NONCE {{n}}\"}],\"stream\":true}"
}
# no-store: aigate caches a complete stream and replays it; S4 measures the relay.
S4_GEN_HEADERS=(-H "Cache-Control: no-store")
S4_MSG_HEADERS=(-H "Cache-Control: no-store" -H "x-api-key: $AIGATE_API_KEY"
    -H "anthropic-version: 2023-06-01")
SSE_PID=
SSE_PORT=
S4_NGINX_PID=
S4_NGINX_PORT=

# The streaming upstream's count of streams started, to check that every request reached it.
sse_streams() {
    local out
    out=$("$LOADGEN" --first-ok -m GET -u "http://127.0.0.1:$SSE_PORT/stats" -t 5 \
        --body-out "$TMP/sse-stats.json")
    [[ $out == *'"ok":true'* ]] && jnum "$(<"$TMP/sse-stats.json")" streams
}

# lg_stream URL BODY N CONNS BOUND TIMEOUT HEADER_ARGS...: N streams over CONNS connections.
lg_stream() {
    local url=$1 body=$2 n=$3 conns=$4 bound=$5 tmo=$6 line
    shift 6
    line=$(timeout -k 5 $((bound + 30)) "${LOAD_PREFIX[@]}" "$LOADGEN" --stream "$n" -c "$conns" \
        -u "$url" -b "$body" --unique-prompt "$@" -d "$bound" -t "$tmo" 2>&1 |
        grep -m1 '"mode":"stream"')
    [ -n "$line" ] || line='{"tool":"ag_loadgen","error":"no output"}'
    echo "$line"
}

# s4_upstream_check KEY BEFORE AFTER N: notes when the upstream did not see N new streams (a
# cache or coalescing in the way), and keeps the count in the record.
s4_upstream_check() {
    local key=$1 before=$2 after=$3 n=$4 d=null
    if [ -n "$before" ] && [ -n "$after" ]; then
        d=$((after - before))
        [ "$d" = "$n" ] || note "$key: the upstream saw $d new streams for $n requests"
    fi
    RUN[$key]="${RUN[$key]%\}},\"upstream_streams\":$d}"
}

# s4_ttfb KEY URL BODY HEADER_ARGS...: TTFB_REQS streams one after the other, after a few
# unrecorded ones that open the proxies' upstream connections.
s4_ttfb() {
    local key=$1 url=$2 body=$3 before after
    shift 3
    lg_stream "$url" "${body/bench stream/bench warm-up}" 20 1 60 10 "$@" >/dev/null
    before=$(sse_streams)
    measure "$key" lg_stream "$url" "$body" "$TTFB_REQS" 1 "$S4_TTFB_BOUND" 10 "$@"
    after=$(sse_streams)
    s4_upstream_check "$key" "$before" "$after" "$TTFB_REQS"
}

# s4_concurrent ROUND TARGET PID URL BODY HEADER_ARGS...: STREAMS streams at once. Samples the
# RSS of PID (and its children) every 0.1 s from the moment every stream has had its first
# byte until the first one ends, and keeps the largest sample.
s4_concurrent() {
    local r=$1 target=$2 pid=$3 url=$4 body=$5
    shift 5
    local key="S4|$target|$BASE_T|$r|streams" outf=$TMP/s4-streams-$target-$r.out
    local before after rss lpid i open_line="" line max="" per=null s0 s1 samples=() out done_n
    s0=$(sse_streams)
    before=$(rss_tree "$pid")
    LOG=$outf CPUS=$LOAD_CPUS spawn "$LOADGEN" --stream "$STREAMS" -c "$STREAMS" -u "$url" \
        -b "$body" --unique-prompt "$@" -d "$S4_LONG_BOUND" -t "$S4_LONG_BOUND" --open-batch 256
    lpid=$STARTED
    for ((i = 0; i < S4_LONG_BOUND * 10; i++)); do
        [ -n "$open_line" ] || open_line=$(grep -m1 '"mode":"streams_open"' "$outf" 2>/dev/null)
        grep -q '"mode":"streams_closing"\|"mode":"stream"' "$outf" 2>/dev/null && break
        if [ -n "$open_line" ]; then
            rss=$(rss_tree "$pid")
            [ -z "$rss" ] || samples+=("$rss")
        fi
        alive "$lpid" || break
        sleep 0.1
    done
    for ((i = 0; i < (S4_LONG_BOUND + 10) * 10; i++)); do
        grep -q '"mode":"stream"' "$outf" 2>/dev/null && break
        alive "$lpid" || break
        sleep 0.1
    done
    stop_pid "$lpid"
    forget_pid "$lpid"
    after=$(rss_tree "$pid")
    s1=$(sse_streams)
    line=$(grep -m1 '"mode":"stream"' "$outf")
    if [ -z "$line" ]; then
        out="{\"tool\":\"s4_streams\",\"error\":\"$(json_escape "$(tail -n 3 "$outf")")\"}"
        if [ "$target" = aigate ]; then note "$key failed: $out"; else harness_error "$key failed: $out"; fi
        record "$key" "$out"
        return
    fi
    [ ${#samples[@]} -eq 0 ] || max=$(printf '%s\n' "${samples[@]}" | sort -n | tail -n1)
    if [ -n "$max" ] && [ -n "$before" ]; then per=$(((max - before) * 1024 / STREAMS)); fi
    out="{\"tool\":\"s4_streams\",\"streams\":$STREAMS,\"words\":$STREAM_WORDS,"
    out+="\"delay_ms\":$STREAM_DELAY_MS,\"rss_before_kib\":${before:-null},\"rss_max_kib\":${max:-null},"
    out+="\"rss_after_kib\":${after:-null},\"bytes_per_stream\":$per,"
    out+="\"rss_samples_kib\":[$(IFS=,; echo "${samples[*]}")],\"open\":${open_line:-null},"
    out+="\"loadgen\":$line}"
    record "$key" "$out"
    [ -n "$open_line" ] || note "$key: the $STREAMS streams were never all open at once: no RSS sample"
    done_n=$(jnum "$line" streams_complete)
    if [ "${done_n:-0}" != "$STREAMS" ]; then
        note "$key: $done_n of $STREAMS streams complete (errors $(jnum "$line" errors), first problem: $(sed -n 's/.*"first_incomplete":\("[^"]*"\|null\).*/\1/p' <<<"$line"))"
    fi
    s4_upstream_check "$key" "$s0" "$s1" "$STREAMS"
}

s4_run() {
    local r out gen_ttfb msg_ttfb gen_long msg_long
    if [ ! -x "$SSE_UPSTREAM" ]; then
        note "S4 skipped: no streaming upstream at $SSE_UPSTREAM (cmake --build DIR --target ag_sse_upstream)"
        return
    fi
    SSE_PORT=$(free_ports 1)
    [ -n "$SSE_PORT" ] || die "no free port"
    LOG=$TMP/sse-upstream.log CPUS=$UPSTREAM_CPUS spawn "$SSE_UPSTREAM" --port "$SSE_PORT" \
        --token-delay-ms "$STREAM_DELAY_MS" --words 8
    SSE_PID=$STARTED
    out=$("$LOADGEN" --first-ok -m GET -u "http://127.0.0.1:$SSE_PORT/_health" -t 10)
    [[ $out == *'"ok":true'* ]] ||
        die "the streaming upstream did not come up ($out; $(tail -n 3 "$TMP/sse-upstream.log"))"
    S4_NGINX_PORT=$(free_ports 1)
    [ -n "$S4_NGINX_PORT" ] || die "no free port"
    NGINX_WC=$((2 * STREAMS + 1024)) nginx_start "stream-w$BASE_T" stream.conf "$BASE_T" \
        "$SERVER_CPUS" "http://127.0.0.1:$S4_NGINX_PORT/_health" PORT="$S4_NGINX_PORT" \
        SSE_PORT="$SSE_PORT"
    S4_NGINX_PID=$NGINX_PID
    if [ "$AIGATE_OK" = 1 ]; then
        AIGATE_UPSTREAM_URL=http://127.0.0.1:$SSE_PORT aigate_start "$BASE_T" || true
    fi
    gen_ttfb=$(s4_generate_body "$S4_TTFB_TAGS")
    msg_ttfb=$(s4_messages_body "$S4_TTFB_TAGS")
    gen_long=$(s4_generate_body "$S4_LONG_TAGS")
    msg_long=$(s4_messages_body "$S4_LONG_TAGS")
    local direct=http://127.0.0.1:$SSE_PORT/v1/messages via_nginx=http://127.0.0.1:$S4_NGINX_PORT/v1/messages
    echo "bench: S4 time to first byte, $TTFB_REQS streams one after the other per server"
    for ((r = 1; r <= ROUNDS; r++)); do
        s4_ttfb "S4|upstream|$BASE_T|$r|ttfb" "$direct" "$msg_ttfb" "${S4_MSG_HEADERS[@]}"
        if aigate_up; then
            s4_ttfb "S4|aigate|$BASE_T|$r|ttfb" "http://127.0.0.1:$AIGATE_PORT$AIGATE_ROUTE" \
                "$gen_ttfb" "${S4_GEN_HEADERS[@]}"
            s4_ttfb "S4|aigate_messages|$BASE_T|$r|ttfb" "http://127.0.0.1:$AIGATE_PORT/v1/messages" \
                "$msg_ttfb" "${S4_MSG_HEADERS[@]}"
        fi
        s4_ttfb "S4|nginx|$BASE_T|$r|ttfb" "$via_nginx" "$msg_ttfb" "${S4_MSG_HEADERS[@]}"
    done
    echo "bench: S4 $STREAMS concurrent streams of $STREAM_WORDS deltas, ${STREAM_DELAY_MS} ms apart"
    for ((r = 1; r <= ROUNDS; r++)); do
        s4_concurrent "$r" upstream "$SSE_PID" "$direct" "$msg_long" "${S4_MSG_HEADERS[@]}"
        if aigate_up; then
            s4_concurrent "$r" aigate "$AIGATE_PID" "http://127.0.0.1:$AIGATE_PORT$AIGATE_ROUTE" \
                "$gen_long" "${S4_GEN_HEADERS[@]}"
        fi
        s4_concurrent "$r" nginx "$S4_NGINX_PID" "$via_nginx" "$msg_long" "${S4_MSG_HEADERS[@]}"
    done
    aigate_stop
    stop_pid "$S4_NGINX_PID"
    forget_pid "$S4_NGINX_PID"
    S4_NGINX_PID=
    stop_pid "$SSE_PID"
    forget_pid "$SSE_PID"
    SSE_PID=
}

# cold_one TARGET [tls]: one S5 run, exec to first 2xx, in a fresh instance directory; sets
# COLD_OUT. The first answer is a proxied one for both servers (aigate's cache is empty). With
# tls, both serve HTTPS with the run's certificate (s5_tls_setup) and cold_tls times them.
COLD_OUT=
cold_one() {
    local target=$1 tls=${2:-} port ports url
    ports=$(free_ports 2)
    port=${ports%% *}
    [ -n "$port" ] || die "no free port"
    url=http://127.0.0.1:$port$AIGATE_ROUTE
    if [ "$target" = aigate ]; then
        if [ -n "$tls" ]; then
            AIGATE_TOML=$(bench_config tls_cert="\"$TLS_CERT\"" tls_key="\"$TLS_KEY\"")$'\n' \
                aigate_prepare
        else
            aigate_prepare
        fi
        aigate_argv "$port" "$BASE_T"
        if [ -n "$tls" ]; then
            pushd "$AIGATE_DIR" >/dev/null || die "cd $AIGATE_DIR"
            ANTHROPIC_API_KEY=$AIGATE_API_KEY cold_tls "https${url#http}" "$AIGATE_DIR/aigate.log" \
                "${AIGATE_ARGV[@]}"
            popd >/dev/null || die "popd"
            return
        fi
        COLD_OUT=$(cd "$AIGATE_DIR" && ANTHROPIC_API_KEY=$AIGATE_API_KEY timeout -k 5 60 \
            "${LOAD_PREFIX[@]}" "$LOADGEN" --first-ok -u "$url" \
            -b "$S1_BODY" -t 20 ${SERVER_CPUS:+--spawn-cpus "$SERVER_CPUS"} \
            --spawn-log "$AIGATE_DIR/aigate.log" --spawn -- "${AIGATE_ARGV[@]}")
    else
        # A stock-sized nginx: room for 10,000 connections costs it time at startup.
        if [ -n "$tls" ]; then
            NGINX_WC=1024 nginx_prepare "cold-nginx-tls-$RANDOM$RANDOM" reference_tls.conf \
                "$BASE_T" UPSTREAM_PORT="$UPSTREAM_PORT" CACHED_PORT="${ports##* }" \
                PROXY_PORT="$port" CACHED_BODY="$CACHED_BODY" CERT="$TLS_CERT" KEY="$TLS_KEY"
            nginx_argv
            cold_tls "https${url#http}" "$NGINX_DIR/stdout.log" "${NGINX_ARGV[@]}"
            return
        fi
        NGINX_WC=1024 nginx_prepare "cold-nginx-$RANDOM$RANDOM" reference.conf "$BASE_T" \
            UPSTREAM_PORT="$UPSTREAM_PORT" CACHED_PORT="${ports##* }" PROXY_PORT="$port" \
            CACHED_BODY="$CACHED_BODY"
        nginx_argv
        COLD_OUT=$(timeout -k 5 60 "${LOAD_PREFIX[@]}" "$LOADGEN" --first-ok \
            -u "$url" -b "$S1_BODY" -t 20 \
            ${SERVER_CPUS:+--spawn-cpus "$SERVER_CPUS"} --spawn-log "$NGINX_DIR/stdout.log" \
            --spawn -- "${NGINX_ARGV[@]}")
    fi
}

# S5 over TLS: one self-signed P-256 certificate for the whole run, for aigate (tls_cert,
# tls_key) and nginx (reference_tls.conf). Returns 1 (with a note) when it cannot be made.
TLS_CERT=
TLS_KEY=
s5_tls_setup() {
    local out
    if ! command -v openssl >/dev/null || ! command -v curl >/dev/null; then
        note "S5 over TLS skipped: it needs openssl (the certificate) and curl (the probe)"
        return 1
    fi
    if ! nginx -V 2>&1 | grep -q -- --with-http_ssl_module; then
        note "S5 over TLS skipped: this nginx has no http_ssl_module"
        return 1
    fi
    TLS_CERT=$TMP/tls/cert.pem
    TLS_KEY=$TMP/tls/key.pem
    mkdir -p "$TMP/tls"
    if ! out=$(openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
        -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout "$TLS_KEY" \
        -out "$TLS_CERT" 2>&1); then
        note "S5 over TLS skipped: openssl req failed: $(tail -n 2 <<<"$out" | tr '\n' ' ')"
        return 1
    fi
}

# µs since the epoch, from bash's own clock (no fork).
now_us() {
    local t=${EPOCHREALTIME/[.,]/}
    echo "$((10#$t))"
}

# cold_tls URL LOG CMD...: starts CMD (from the current directory, with the caller's environment)
# and sends S1's request to URL with curl -sk, again at once after each failure, until the first
# 2xx; sets COLD_OUT to a JSON line like ag_loadgen --first-ok's. The time runs from just before
# the fork of the server to the end of the curl that got the 2xx: each attempt costs a fork and
# exec of curl, the same for both servers (ag_loadgen speaks plain HTTP only).
cold_tls() {
    local url=$1 log=$2 t0 t1='' code='' attempts=0 ok=false pid died=false deadline
    shift 2
    t0=$(now_us)
    deadline=$((t0 + 20000000))
    LOG=$log CPUS=$SERVER_CPUS spawn "$@"
    pid=$STARTED
    while :; do
        attempts=$((attempts + 1))
        code=$("${LOAD_PREFIX[@]}" curl -sk -o /dev/null -w '%{http_code}' --max-time 5 \
            -H 'Content-Type: application/json' --data-binary "$S1_BODY" "$url" 2>/dev/null)
        if [[ $code == 2[0-9][0-9] ]]; then
            t1=$(now_us)
            ok=true
            break
        fi
        alive "$pid" || { died=true; break; }
        [ "$(now_us)" -lt "$deadline" ] || break
    done
    stop_pid "$pid"
    forget_pid "$pid"
    COLD_OUT="{\"tool\":\"curl\",\"mode\":\"first_ok_tls\",\"url\":\"$url\",\"ok\":$ok,"
    COLD_OUT+="\"elapsed_us\":$([ -n "$t1" ] && echo $((t1 - t0)) || echo null),"
    [[ $code =~ ^[0-9]+$ ]] || code=0
    COLD_OUT+="\"attempts\":$attempts,\"status\":$((10#$code)),\"child_died\":$died}"
}

# ---- S8: the cost of observability -------------------------------------------------------------
# S1 and S2 against two aigate instances of the same build, both up for the whole of S8: "off"
# with the bench config (admin_listen = ""), "obs" with an admin listener on a free loopback
# port, so that every request is also counted into the metrics and the per-minute series and
# published to tail subscribers. During each run against "obs", GET /metrics is scraped once a
# second (as Prometheus would) and one live-tail subscriber (curl on GET /tail?format=json) is
# attached from before the load until after it. Rounds alternate which instance goes first.
# Each S2 run has prompts of its own: a prompt another run sent would be a cache hit.

# Instances that stay up for a whole scenario (S8, S11), by target name: inst_keep TARGET records
# the aigate just started, inst_use TARGET makes it the current one (for aigate_up,
# aigate_stop...), inst_stop TARGET... stops them.
declare -A INST_PID INST_PORT INST_DIR INST_CACHE
inst_keep() {
    INST_PID[$1]=$AIGATE_PID INST_PORT[$1]=$AIGATE_PORT INST_DIR[$1]=$AIGATE_DIR
    INST_CACHE[$1]=unknown
}
inst_use() {
    AIGATE_PID=${INST_PID[$1]}
    AIGATE_PORT=${INST_PORT[$1]}
    AIGATE_DIR=${INST_DIR[$1]}
    CACHE_STATE=${INST_CACHE[$1]:-unknown}
}
inst_warm() { # TARGET...: the usual two warm-up requests against each
    local tg
    for tg in "$@"; do
        inst_use "$tg"
        aigate_warm_cache
        INST_CACHE[$tg]=$CACHE_STATE
    done
}
inst_stop() {
    local tg
    for tg in "$@"; do
        [ -n "${INST_PID[$tg]:-}" ] || continue
        inst_use "$tg"
        aigate_stop
        INST_PID[$tg]=
    done
}

S8_ADMIN_PORT=
S8_TAIL_PID=
S8_READER_PID=
S8_SCRAPER_PID=
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)

# CPU time (user + system, all threads) of process $1 in clock ticks, or nothing.
cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null; }

# cpu_add KEY C0 C1 SECONDS_FIELD PER_REQUEST_FIELD: adds a process's CPU time over a wrk run
# (clock ticks C0 before, C1 after) and that time per wrk request (µs) to KEY's record.
cpu_add() {
    local key=$1 c0=$2 c1=$3 n
    n=$(jnum "${RUN[$key]}" requests)
    if [ -n "$c0" ] && [ -n "$c1" ] && [[ ${n:-0} =~ ^[0-9]+$ ]] && [ "${n:-0}" -gt 0 ]; then
        RUN[$key]="${RUN[$key]%\}},\"$4\":$(calc "($c1 - $c0) / $CLK_TCK"),\"$5\":$(calc "($c1 - $c0) * 1000000 / $CLK_TCK / $n")}"
    fi
}


# s8_use TARGET: makes the instance TARGET the current aigate (for aigate_up, aigate_stop...).
# aigate_metrics (--s8-split) is the obs instance without the subscriber.
s8_use() { inst_use "${1/#aigate_metrics/aigate_obs}"; }

# Sum of the samples of metric family $1 in the scrape file $2 (0 when absent).
prom_sum() {
    awk -v f="$1" '$1 == f || index($1, f "{") == 1 { s += $NF } END { printf "%.0f", s }' \
        "$2" 2>/dev/null
}

s8_scrape() { # FILE: one GET /metrics of the obs instance into FILE
    curl -s --max-time 5 -o "$1" "http://127.0.0.1:$S8_ADMIN_PORT/metrics" 2>/dev/null || : >"$1"
}

# s8_start: both instances; returns 1 when either does not come up.
s8_start() {
    local ports toml
    ports=$(free_ports 3)
    read -r -a ports <<<"$ports"
    [ ${#ports[@]} -eq 3 ] || die "no free ports"
    S8_ADMIN_PORT=${ports[2]}
    toml=$(s8_config_obs "$S8_ADMIN_PORT")$'\n'
    AIGATE_PORT_WANT=${ports[0]} aigate_start "$BASE_T" || return 1
    inst_keep aigate_off
    AIGATE_PORT_WANT=${ports[1]} AIGATE_TOML=$toml aigate_start "$BASE_T" || return 1
    inst_keep aigate_obs
    if ! grep -q "admin listening on 127.0.0.1:$S8_ADMIN_PORT" "$AIGATE_DIR/aigate.log"; then
        note "S8 skipped: aigate with $(head -n1 <<<"${toml#*admin_listen}") logged no admin listener: $(tail -n 3 "$AIGATE_DIR/aigate.log" | tr '\n' ' ')"
        return 1
    fi
    if grep -qi 'warn' "$AIGATE_DIR/aigate.log"; then
        note "S8 aigate with the admin listener warned at startup: $(grep -i 'warn' \
            "$AIGATE_DIR/aigate.log" | sed 's/^.*\(warn\)/\1/I' | head -n 3 | tr '\n' ';')"
    fi
    if [[ $("$LOADGEN" --first-ok -m GET -u "http://127.0.0.1:$S8_ADMIN_PORT/metrics" -t 10) != \
        *'"ok":true'* ]]; then
        note "S8 skipped: GET /metrics on the admin listener got no 2xx"
        return 1
    fi
    inst_warm aigate_off aigate_obs
}

s8_stop() { inst_stop aigate_off aigate_obs; }

# s8_observe_start TAG TAIL: with TAIL 1, one tail subscriber (connected: its first bytes are the
# ": tail started" comment); then the scraper; both on --load-cpus. Sets S8_TAIL_OK.
S8_TAIL_OK=false
s8_observe_start() {
    local tag=$1 i fifo=$TMP/s8-$1.fifo head=$TMP/s8-$1.tail-head
    S8_TAIL_OK=false
    S8_TAIL_PID='' S8_READER_PID=''
    s8_scrape "$TMP/s8-$tag.metrics-before"
    [ "$2" = 1 ] && s8_tail_start "$tag" "$fifo" "$head"
    # One scrape a second while the load runs, each bounded, the loop by the run's duration.
    # shellcheck disable=SC2016 # the inner shell expands them
    LOG=$TMP/s8-$tag.scrapes CPUS=$LOAD_CPUS spawn bash -c '
        end=$((SECONDS + $2))
        while [ "$SECONDS" -lt "$end" ]; do
            curl -s -o /dev/null -w "%{http_code}\n" --max-time 2 "$1"
            sleep 1
        done' s8-scraper "http://127.0.0.1:$S8_ADMIN_PORT/metrics" $((DURATION + 5))
    S8_SCRAPER_PID=$STARTED
}

s8_tail_start() { # TAG FIFO HEAD
    local tag=$1 fifo=$2 head=$3 i
    rm -f "$fifo" "$head"
    mkfifo "$fifo" || die "mkfifo $fifo"
    # The subscriber's stream goes through a pipe: its first 16 bytes are kept, its events
    # counted. curl is bounded even if the harness never gets to stop it.
    # shellcheck disable=SC2016 # the inner shell expands them
    LOG=$TMP/s8-$tag.tail-events CPUS=$LOAD_CPUS spawn bash -c \
        'exec <"$1"; head -c 16 >"$2"; exec grep -c "^data: "' s8-tail-reader "$fifo" "$head"
    S8_READER_PID=$STARTED
    LOG=$fifo CPUS=$LOAD_CPUS spawn curl -sN --max-time $((DURATION + 120)) \
        "http://127.0.0.1:$S8_ADMIN_PORT/tail?format=json"
    S8_TAIL_PID=$STARTED
    for ((i = 0; i < 200; i++)); do
        if [ "$(head -c 14 "$head" 2>/dev/null)" = ": tail started" ]; then
            S8_TAIL_OK=true
            break
        fi
        alive "$S8_TAIL_PID" || break
        sleep 0.05
    done
    [ "$S8_TAIL_OK" = true ] ||
        note "S8 $tag: the tail subscriber did not connect (curl $(alive "$S8_TAIL_PID" && echo alive || echo exited), got: $(head -c 200 "$head" 2>/dev/null | tr '\n' ' '))"
    return 0
}

# s8_observe_stop KEY TAG: stops the scraper and the subscriber and adds what they saw to the record:
# scrapes (and how many answered 200), whether the subscriber was connected and still there at
# the end of the load, the events it received, the events dropped for it and the requests the
# metrics counted during the run (both from scrapes before and after), and its CPU time.
s8_observe_stop() {
    local key=$1 tag=$2 i alive_end=false events=null scrapes ok req0 req1 drop0 drop1 tail_cpu=null
    local before=$TMP/s8-$tag.metrics-before after=$TMP/s8-$tag.metrics-after t
    [ -z "$S8_TAIL_PID" ] && alive_end=null
    alive "$S8_TAIL_PID" && alive_end=true
    stop_pid "$S8_SCRAPER_PID"
    forget_pid "$S8_SCRAPER_PID"
    s8_scrape "$after"
    if [ -n "$S8_TAIL_PID" ]; then
        t=$(($(cpu_ticks "$S8_TAIL_PID" || echo 0) + $(cpu_ticks "$S8_READER_PID" || echo 0)))
        tail_cpu=$(calc "$t / $CLK_TCK")
        stop_pid "$S8_TAIL_PID" # the reader sees the end of its pipe and prints its count
        forget_pid "$S8_TAIL_PID"
        for ((i = 0; i < 100; i++)); do
            alive "$S8_READER_PID" || break
            sleep 0.05
        done
        stop_pid "$S8_READER_PID"
        forget_pid "$S8_READER_PID"
        rm -f "$TMP/s8-$tag.fifo"
        events=$(head -n1 "$TMP/s8-$tag.tail-events" 2>/dev/null)
        [[ $events =~ ^[0-9]+$ ]] || events=null
        [ "$alive_end" = true ] || note "$key: the tail subscriber was gone before the end of the load"
    else
        S8_TAIL_OK=null
    fi
    scrapes=$(grep -c . "$TMP/s8-$tag.scrapes" 2>/dev/null)
    ok=$(grep -c '^200$' "$TMP/s8-$tag.scrapes" 2>/dev/null)
    req0=$(prom_sum aigate_http_requests_total "$before")
    req1=$(prom_sum aigate_http_requests_total "$after")
    drop0=$(prom_sum aigate_tail_dropped_total "$before")
    drop1=$(prom_sum aigate_tail_dropped_total "$after")
    RUN[$key]="${RUN[$key]%\}},\"scrapes\":${scrapes:-0},\"scrapes_ok\":${ok:-0},\"tail_connected\":$S8_TAIL_OK,\"tail_alive_at_end\":$alive_end,\"tail_events\":$events,\"tail_dropped\":$((drop1 - drop0)),\"tail_client_cpu_s\":$tail_cpu,\"metrics_requests\":$((req1 - req0))}"
    [ "${ok:-0}" -gt 0 ] || note "$key: no scrape of /metrics answered 200"
    local n
    n=$(jnum "${RUN[$key]}" requests)
    if [[ $n =~ ^[0-9]+$ ]] && [ $((req1 - req0)) -lt "$n" ]; then
        note "$key: the metrics counted $((req1 - req0)) requests, wrk $n"
    fi
}

# s8_measure ROUND TARGET SCENARIO: one wrk run; for aigate_obs with the scraper and subscriber,
# for aigate_metrics with the scraper only.
s8_measure() {
    local r=$1 tg=$2 sc=$3 key="S8|$2|$BASE_T|$1|$3" body unique c0 c1
    s8_use "$tg"
    aigate_up || return 0
    if [ "$sc" = S1 ]; then
        body=$S1_BODY unique=0
    else
        next_s2_body
        body=$S2_RUN_BODY unique=1
    fi
    case $tg in
    aigate_obs) s8_observe_start "$sc-$r" 1 ;;
    aigate_metrics) s8_observe_start "$sc-$r-m" 0 ;;
    esac
    c0=$(cpu_ticks "$AIGATE_PID")
    measure "$key" wrk_run "http://127.0.0.1:$AIGATE_PORT$AIGATE_ROUTE" "$body" "$unique"
    c1=$(cpu_ticks "$AIGATE_PID")
    # aigate's own CPU time (every thread) over the run, and per request.
    cpu_add "$key" "$c0" "$c1" aigate_cpu_s cpu_us_per_req
    case $tg in
    aigate_obs) s8_observe_stop "$key" "$sc-$r" ;;
    aigate_metrics) s8_observe_stop "$key" "$sc-$r-m" ;;
    esac
    return 0
}

s8_run() {
    local r sc
    if [ "$AIGATE_OK" != 1 ]; then
        note "S8 skipped: $AIGATE_SKIP"
        return
    fi
    if ! command -v curl >/dev/null || ! command -v mkfifo >/dev/null; then
        note "S8 skipped: it needs curl and mkfifo (the scraper and the tail subscriber)"
        return
    fi
    echo "bench: S8 observability cost, S1 and S2 with admin_listen = \"\" and with the admin" \
        "listener scraped every second and one tail subscriber (wrk -t$WRK_THREADS -c$WRK_CONNS," \
        "${DURATION}s, $S8_ROUNDS rounds)"
    local order=(aigate_off aigate_obs) i
    [ "$S8_SPLIT" = 1 ] && order=(aigate_off aigate_metrics aigate_obs)
    if s8_start; then
        for ((r = 1; r <= S8_ROUNDS; r++)); do
            for sc in S1 S2; do
                if ((r % 2)); then
                    for ((i = 0; i < ${#order[@]}; i++)); do s8_measure "$r" "${order[$i]}" "$sc"; done
                else
                    for ((i = ${#order[@]} - 1; i >= 0; i--)); do s8_measure "$r" "${order[$i]}" "$sc"; done
                fi
            done
        done
    fi
    s8_stop
}

# ---- S11: the cost of shared state on Redis ----------------------------------------------------
# S1 and S2 against two aigate instances of the same build, both up for the whole of S11:
# "local" with the bench config (the limiter and the response cache in the process) and "redis"
# with the same config plus [aigate.redis] url on a redis-server of its own (--save ""
# --appendonly no), so that every request's rate-limit check is one EVALSHA (the GCRA script)
# and the cache lives on Redis (GET on lookup, SET ... EX on fill). Rounds alternate which
# instance goes first, as in S8. Redis's INFO commandstats before and after each run gives the
# commands the run cost it, /proc its CPU time; redis-benchmark on the same server, after the
# runs, gives Redis's own ops/s on this machine: the floor.

S11_REDIS_PID=
S11_REDIS_PORT=
S11_REDIS_VERSION=
S11_BENCH_N=$((20000 * DURATION))
S11_BENCH_CONNS=64
S11_BENCH_JSON=()
S11_REDIS_KEYS=
S11_REDIS_MEM=
# The bench's rate limit as the limiter's script gets it: the limit, and the period in µs.
S11_GCRA_ARGS=(60000000 60000000000)

redis_cli() { timeout -k 2 10 redis-cli -h 127.0.0.1 -p "$S11_REDIS_PORT" "$@" 2>&1; }

# s11_redis_start: redis-server on a free loopback port, in its own directory, pinned as the
# upstream is; returns 1 when it does not answer PING.
s11_redis_start() {
    local dir=$TMP/redis i
    mkdir -p "$dir"
    S11_REDIS_PORT=$(free_ports 1)
    [ -n "$S11_REDIS_PORT" ] || die "no free port"
    # Bounded like the docs say a cache's Redis should be; no run comes near it.
    LOG=$dir/redis.log CPUS=$UPSTREAM_CPUS spawn redis-server --port "$S11_REDIS_PORT" \
        --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" --daemonize no \
        --maxmemory 2gb --maxmemory-policy volatile-ttl
    S11_REDIS_PID=$STARTED
    for ((i = 0; i < 200; i++)); do
        if [ "$(redis_cli ping)" = PONG ]; then
            S11_REDIS_VERSION=$(redis_cli info server | tr -d '\r' | sed -n 's/^redis_version://p')
            return 0
        fi
        alive "$S11_REDIS_PID" || break
        sleep 0.05
    done
    note "S11 skipped: redis-server did not answer on 127.0.0.1:$S11_REDIS_PORT: $(tail -n 3 \
        "$dir/redis.log" 2>/dev/null | tr '\n' ' ')"
    return 1
}

s11_redis_stop() {
    [ -n "$S11_REDIS_PID" ] || return 0
    alive "$S11_REDIS_PID" || note "S11: redis-server had exited before it was stopped: $(tail \
        -n 3 "$TMP/redis/redis.log" 2>/dev/null | tr '\n' ' ')"
    stop_pid "$S11_REDIS_PID"
    forget_pid "$S11_REDIS_PID"
    S11_REDIS_PID=
}

# redis_cmdstats FILE: "COMMAND CALLS USEC" for each command Redis has run (INFO commandstats).
redis_cmdstats() {
    redis_cli info commandstats | tr -d '\r' |
        sed -n 's/^cmdstat_\([^:]*\):calls=\([0-9]*\),usec=\([0-9]*\).*/\1 \2 \3/p' >"$1"
}

# redis_delta BEFORE AFTER REQUESTS: the commands run between two snapshots (INFO itself left
# out), as JSON members: "redis_calls":{"evalsha":N,...} (commandstats counts the commands a
# script runs too: the limiter's runs TIME, GET and SET), their total and Redis's own time in
# them (usec, as commandstats counts it); per request: the total, the time, and the EVALSHAs,
# GETs and SETs the client sent. Each script runs one GET: the limiter's (which also SETs: the
# bench's limit never refuses), the cache's claim (which SETs the claim on a miss) and the
# claim's release (which DELs it instead of setting); so the client's GETs are the GETs less
# the EVALSHAs, and its SETs are the SETs less the EVALSHAs that were not releases.
redis_delta() {
    awk -v n="$3" 'FILENAME == ARGV[1] { c[$1] = $2; u[$1] = $3; next }
        $1 != "info" && $2 > c[$1] {
            d = $2 - c[$1]; t += d; us += $3 - u[$1]; s = s sep "\"" $1 "\":" d; sep = ","
            k[$1] = d
        }
        END {
            printf "\"redis_calls\":{%s},\"redis_calls_total\":%d,\"redis_usec\":%d,", s, t, us
            e = k["evalsha"] + k["eval"]; g = k["get"] - e; w = k["set"] - (e - k["del"])
            if (g < 0) g = 0
            if (w < 0) w = 0
            printf "\"redis_cache_get\":%d,\"redis_cache_set\":%d,", g, w
            if (n > 0) printf "\"redis_calls_per_req\":%.2f,\"redis_cmd_us_per_req\":%.2f," \
                "\"redis_evalsha_per_req\":%.2f,\"redis_get_per_req\":%.2f,\"redis_set_per_req\":%.2f",
                t / n, us / n, e / n, g / n, w / n
            else printf "\"redis_calls_per_req\":null,\"redis_cmd_us_per_req\":null," \
                "\"redis_evalsha_per_req\":null,\"redis_get_per_req\":null,\"redis_set_per_req\":null"
        }' "$1" "$2"
}

# s11_measure ROUND TARGET SCENARIO: one wrk run, with aigate's and Redis's CPU time and the
# commands Redis ran; notes when the redis instance did not use Redis for every request or the
# local one used it at all.
s11_measure() {
    local r=$1 tg=$2 sc=$3 key="S11|$2|$BASE_T|$1|$3" body unique c0 c1 rc0 rc1 n v
    local before=$TMP/s11-$3-$1-$2.before after=$TMP/s11-$3-$1-$2.after
    inst_use "$tg"
    aigate_up || return 0
    if [ "$sc" = S1 ]; then
        body=$S1_BODY unique=0
    else
        next_s2_body
        body=$S2_RUN_BODY unique=1
    fi
    redis_cmdstats "$before"
    c0=$(cpu_ticks "$AIGATE_PID")
    rc0=$(cpu_ticks "$S11_REDIS_PID")
    measure "$key" wrk_run "http://127.0.0.1:$AIGATE_PORT$AIGATE_ROUTE" "$body" "$unique"
    c1=$(cpu_ticks "$AIGATE_PID")
    rc1=$(cpu_ticks "$S11_REDIS_PID")
    redis_cmdstats "$after"
    [[ ${RUN[$key]} != *'"error":'* ]] || return 0
    cpu_add "$key" "$c0" "$c1" aigate_cpu_s cpu_us_per_req
    cpu_add "$key" "$rc0" "$rc1" redis_cpu_s redis_cpu_us_per_req
    n=$(jnum "${RUN[$key]}" requests)
    RUN[$key]="${RUN[$key]%\}},$(redis_delta "$before" "$after" "${n:-0}")}"
    [[ ${n:-0} =~ ^[0-9]+$ && ${n:-0} -gt 0 ]] || return 0
    # The commands aigate sent Redis per second of the run, to set next to redis-benchmark's.
    v=$(awk -v e="$(jnum "${RUN[$key]}" evalsha)" -v g="$(jnum "${RUN[$key]}" redis_cache_get)" \
        -v w="$(jnum "${RUN[$key]}" redis_cache_set)" -v d="$(jnum "${RUN[$key]}" duration_s)" \
        'BEGIN { if (d > 0) printf "%.1f", (e + g + w) / d }')
    RUN[$key]="${RUN[$key]%\}},\"redis_ops_per_s\":${v:-null}}"
    if [ "$tg" = aigate_local ]; then
        # The redis instance, idle meanwhile, asks for the client keys' version once a second.
        v=$(awk -v t="$(jnum "${RUN[$key]}" redis_calls_total)" \
            -v d="$(jnum "${RUN[$key]}" duration_s)" 'BEGIN { v = t - int(d) - 2; print v > 0 ? v : 0 }')
        [ "${v:-0}" = 0 ] || note "$key: Redis ran $v commands while the local instance was measured"
        return 0
    fi
    # Every request is one limiter check and one cache lookup; a proxied one is also a fill.
    v=$(jnum "${RUN[$key]}" evalsha)
    [ "${v:-0}" -ge "$n" ] ||
        note "$key: Redis ran ${v:-0} EVALSHA for $n requests: not every limiter check was on Redis"
    v=$(jnum "${RUN[$key]}" redis_cache_get)
    [ "${v:-0}" -ge "$n" ] ||
        note "$key: Redis ran ${v:-0} GET for $n requests: not every cache lookup was on Redis"
    if [ "$sc" = S2 ]; then
        v=$(jnum "${RUN[$key]}" redis_cache_set)
        [ "${v:-0}" -ge "$n" ] ||
            note "$key: Redis ran ${v:-0} SET for $n proxied requests: not every fill reached Redis"
    fi
    return 0
}

# s11_gcra_sha: the SHA1 of the limiter's script, copied from src/store/redis_gcra.c, when
# Redis has that script already (aigate loaded it: the copy is exact); nothing otherwise.
s11_gcra_sha() {
    local src=$ROOT/src/store/redis_gcra.c s sha
    [ -r "$src" ] && command -v sha1sum >/dev/null || return 0
    s=$(sed -n '/gcra_lua\[\] =/,/;$/p' "$src" | sed -n 's/^[^"]*"\(.*\)";\{0,1\}$/\1/p' | tr -d '\n')
    [ -n "$s" ] || return 0
    printf '%b' "$s" >"$TMP/gcra.lua"
    sha=$(sha1sum "$TMP/gcra.lua" | cut -c1-40)
    if [ "$(redis_cli script exists "$sha")" = 1 ]; then
        echo "$sha"
    else
        note "S11: the limiter's script read from $src is not the one aigate loaded: no EVALSHA floor"
    fi
}

# s11_redis_bench: redis-benchmark against S11's redis-server, from --load-cpus: SET and GET, the
# limiter's own script by EVALSHA on one key with the bench's limit (as aigate runs it for one
# client), and EVAL of a script that returns at once; one JSON record per test in
# S11_BENCH_JSON and in the runs.
s11_redis_bench() {
    local out line name rps p50 p99 t key sha
    if ! command -v redis-benchmark >/dev/null; then
        note "S11: no redis-benchmark (Debian: redis-tools): no floor"
        return 0
    fi
    sha=$(s11_gcra_sha)
    for t in getset gcra eval; do
        case $t in
        getset) set -- -t set,get ;;
        gcra)
            [ -n "$sha" ] || continue
            set -- EVALSHA "$sha" 1 aigate:bench:gcra "${S11_GCRA_ARGS[@]}"
            ;;
        eval) set -- EVAL "return 1" 0 ;;
        esac
        out=$(timeout -k 5 $((DURATION * 10 + 60)) "${LOAD_PREFIX[@]}" redis-benchmark -h 127.0.0.1 \
            -p "$S11_REDIS_PORT" -q -n "$S11_BENCH_N" -c "$S11_BENCH_CONNS" -P 1 --csv "$@" 2>&1)
        # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms",...
        while IFS= read -r line; do
            [[ $line =~ ^\"([^\"]+)\",\"([0-9.]+)\",\"[0-9.]+\",\"[0-9.]+\",\"([0-9.]+)\",\"[0-9.]+\",\"([0-9.]+)\" ]] || continue
            name=${BASH_REMATCH[1]} rps=${BASH_REMATCH[2]} p50=${BASH_REMATCH[3]} p99=${BASH_REMATCH[4]}
            name=${name%% *} # "EVAL return 1 0": EVAL
            key="S11|redis_benchmark|$BASE_T|1|${name,,}"
            record "$key" "{\"tool\":\"redis-benchmark\",\"test\":\"$(json_escape "${BASH_REMATCH[1]}")\",\"requests\":$S11_BENCH_N,\"conns\":$S11_BENCH_CONNS,\"pipeline\":1,\"rps\":$rps,\"p50_ms\":$p50,\"p99_ms\":$p99}"
            S11_BENCH_JSON+=("${RUN[$key]}")
        done <<<"$out"
        [[ $out == *'"rps"'* ]] ||
            note "S11: redis-benchmark $* gave no figure: $(tail -n 2 <<<"$out" | tr '\n' ' ')"
    done
}

s11_run() {
    local r sc ports toml tg order=(aigate_local aigate_redis)
    if [ "$AIGATE_OK" != 1 ]; then
        note "S11 skipped: $AIGATE_SKIP"
        return
    fi
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        note "S11 skipped: it needs redis-server and redis-cli (Debian: redis-server)"
        return
    fi
    s11_redis_start || return
    echo "bench: S11 shared state, S1 and S2 with the limiter and cache local and on Redis" \
        "$S11_REDIS_VERSION at 127.0.0.1:$S11_REDIS_PORT (wrk -t$WRK_THREADS -c$WRK_CONNS," \
        "${DURATION}s, $S11_ROUNDS rounds)"
    ports=$(free_ports 2)
    read -r -a ports <<<"$ports"
    [ ${#ports[@]} -eq 2 ] || die "no free ports"
    toml="$AIGATE_CONFIG_TOML"$'\n'"[aigate.redis]"$'\n'"url = \"redis://127.0.0.1:$S11_REDIS_PORT/0\""$'\n'
    if AIGATE_PORT_WANT=${ports[0]} aigate_start "$BASE_T"; then
        inst_keep aigate_local
        if AIGATE_PORT_WANT=${ports[1]} AIGATE_TOML=$toml aigate_start "$BASE_T"; then
            inst_keep aigate_redis
            if grep -qi 'warn\|error' "$AIGATE_DIR/aigate.log"; then
                note "S11 aigate on Redis logged at startup: $(grep -i 'warn\|error' \
                    "$AIGATE_DIR/aigate.log" | head -n 3 | tr '\n' ';')"
            fi
            inst_warm "${order[@]}"
            for ((r = 1; r <= S11_ROUNDS; r++)); do
                for sc in S1 S2; do
                    if ((r % 2)); then
                        for tg in aigate_local aigate_redis; do s11_measure "$r" "$tg" "$sc"; done
                    else
                        for tg in aigate_redis aigate_local; do s11_measure "$r" "$tg" "$sc"; done
                    fi
                done
            done
            # What the instance on Redis said while it ran (a reconnection, a timeout...).
            inst_use aigate_redis
            if [ "$(grep -ci 'warn\|error' "$AIGATE_DIR/aigate.log")" != 0 ]; then
                note "S11 aigate on Redis logged $(grep -ci 'warn\|error' "$AIGATE_DIR/aigate.log")" \
                    "warning/error line(s), first: $(grep -i -m1 'warn\|error' "$AIGATE_DIR/aigate.log")"
            fi
        fi
    fi
    inst_stop "${order[@]}"
    S11_REDIS_KEYS=$(redis_cli dbsize)
    S11_REDIS_MEM=$(redis_cli info memory | tr -d '\r' | sed -n 's/^used_memory://p')
    [[ $S11_REDIS_KEYS =~ ^[0-9]+$ ]] || S11_REDIS_KEYS=
    [[ $S11_REDIS_MEM =~ ^[0-9]+$ ]] || S11_REDIS_MEM=
    s11_redis_bench
    s11_redis_stop
}

# ---- S12: reloads under load ------------------------------------------------------------------
# S1 and S2 against one aigate instance with an admin listener on a free loopback port, up for the
# whole of S12: each run once as it is ("steady") and once while a loop POSTs /reload to the
# admin listener every second ("reload"), rounds alternating which goes first. Before each reload
# the loop rewrites the instance's config file (write, then rename) with the other of two values
# of rate_limit (both far above the load), so that every reload applies a real change, as the
# lifecycle test does. aigate_config_reloads_total from /metrics before and after each run gives
# the reloads done, the instance's log the ones that changed rate_limit; a reload must cost no
# request: wrk's non-2xx answers and socket errors are kept with each run.

# pair_vals SCENARIO TARGET PARAM FIELD: FIELD of each round's run of S8, S11 or S12 (PARAM: S1 or
# S2), one per line (rounds in order); pair_agg: their median.
pair_vals() {
    local r key n=$S8_ROUNDS
    [ "$1" != S11 ] || n=$S11_ROUNDS
    [ "$1" != S12 ] || n=$S12_ROUNDS
    for ((r = 1; r <= n; r++)); do
        key="$1|$2|$BASE_T|$r|$3"
        [ -n "${RUN[$key]+x}" ] && jnum "${RUN[$key]}" "$4"
    done
    return 0
}
pair_agg() {
    local v
    mapfile -t v < <(pair_vals "$@")
    [ ${#v[@]} -gt 0 ] && median "${v[@]}"
}

S12_ADMIN_PORT=
S12_CFG_A=
S12_CFG_B=
S12_RATE_B=59999999 # the other rate_limit: the bench's is 60000000
S12_LOG=

s12_scrape() { # FILE: one GET /metrics of the instance into FILE
    curl -s --max-time 5 -o "$1" "http://127.0.0.1:$S12_ADMIN_PORT/metrics" 2>/dev/null || : >"$1"
}
# s12_reloads RESULT FILE: aigate_config_reloads_total{result="RESULT"} in a scrape (0 if absent).
s12_reloads() {
    awk -v k="aigate_config_reloads_total{result=\"$1\"}" '$1 == k { v = $2 } END { printf "%.0f", v }' \
        "$2" 2>/dev/null
}
s12_log_count() { grep -c -- "$1" "$AIGATE_DIR/aigate.log" 2>/dev/null; } # PATTERN

# s12_start: the instance; returns 1 (with a note) when it or its admin listener does not come up.
s12_start() {
    local ports
    ports=$(free_ports 2)
    read -r -a ports <<<"$ports"
    [ ${#ports[@]} -eq 2 ] || die "no free ports"
    S12_ADMIN_PORT=${ports[1]}
    S12_CFG_A=$(s8_config_obs "$S12_ADMIN_PORT")$'\n'
    S12_CFG_B=$(AIGATE_CONFIG_TOML=$S12_CFG_A bench_config rate_limit="$S12_RATE_B")$'\n'
    [ "$S12_CFG_A" != "$S12_CFG_B" ] || die "S12: the two configs do not differ"
    AIGATE_PORT_WANT=${ports[0]} AIGATE_TOML=$S12_CFG_A aigate_start "$BASE_T" || return 1
    if ! grep -q "admin listening on 127.0.0.1:$S12_ADMIN_PORT" "$AIGATE_DIR/aigate.log"; then
        note "S12 skipped: aigate logged no admin listener on 127.0.0.1:$S12_ADMIN_PORT: $(tail -n 3 \
            "$AIGATE_DIR/aigate.log" | tr '\n' ' ')"
        return 1
    fi
    if [[ $("$LOADGEN" --first-ok -m GET -u "http://127.0.0.1:$S12_ADMIN_PORT/metrics" -t 10) != \
        *'"ok":true'* ]]; then
        note "S12 skipped: GET /metrics on the admin listener got no 2xx"
        return 1
    fi
    aigate_warm_cache
}

# s12_reloader_start TAG: the loop, on --load-cpus: DURATION reloads, due 0.5 s into the run and
# then every second on the clock (a slow reload does not push the next ones back); each swaps the config file for the other one and POSTs /reload (bounded by
# curl's --max-time), its status and answer appended to TMP/s12-TAG.reloads. Sets STARTED.
s12_reloader_start() {
    printf '%s' "$S12_CFG_A" >"$TMP/s12-a.toml"
    printf '%s' "$S12_CFG_B" >"$TMP/s12-b.toml"
    # shellcheck disable=SC2016 # the inner shell expands them
    LOG=$TMP/s12-$1.reloads CPUS=$LOAD_CPUS spawn bash -c '
        cfg=$1 a=$2 b=$3 url=$4 n=$5
        t0=${EPOCHREALTIME/[.,]/}
        for ((i = 0; i < n; i++)); do
            due=$((t0 + 500000 + i * 1000000))
            now=${EPOCHREALTIME/[.,]/}
            [ "$due" -le "$now" ] ||
                sleep "$(printf "%d.%06d" $(((due - now) / 1000000)) $(((due - now) % 1000000)))"
            if cmp -s "$cfg" "$a"; then next=$b; else next=$a; fi
            cp "$next" "$cfg.next" && mv -f "$cfg.next" "$cfg"
            curl -s -X POST -w "\nstatus %{http_code}\n" --max-time 5 "$url"
        done' s12-reloader "$AIGATE_DIR/$AIGATE_CONFIG_NAME" "$TMP/s12-a.toml" "$TMP/s12-b.toml" \
        "http://127.0.0.1:$S12_ADMIN_PORT/reload" "$DURATION"
}

# s12_measure ROUND TARGET SCENARIO: one wrk run (TARGET aigate_steady or aigate_reload), with
# aigate's CPU time, the reloads done, and wrk's failures split into non-2xx and socket errors.
s12_measure() {
    local r=$1 tg=$2 sc=$3 key="S12|$2|$BASE_T|$1|$3" body unique c0 c1 rpid='' i tag="$3-$1"
    local before=$TMP/s12-$tag-$tg.metrics-before after=$TMP/s12-$tag-$tg.metrics-after
    local ok0 ok1 fail0 fail1 chg0 chg1 warn0 warn1 posts=0 posts_ok=0 ms_max=null rec rss0 rss1
    aigate_up || return 0
    if [ "$sc" = S1 ]; then
        body=$S1_BODY unique=0
    else
        next_s2_body
        body=$S2_RUN_BODY unique=1
    fi
    s12_scrape "$before"
    chg0=$(s12_log_count 'reload: generation .* applied .*changed: rate_limit')
    warn0=$(grep -ci 'warn\|error' "$AIGATE_DIR/aigate.log")
    rss0=$(rss_kib "$AIGATE_PID")
    if [ "$tg" = aigate_reload ]; then
        s12_reloader_start "$tag"
        rpid=$STARTED
    fi
    c0=$(cpu_ticks "$AIGATE_PID")
    measure "$key" wrk_run "http://127.0.0.1:$AIGATE_PORT$AIGATE_ROUTE" "$body" "$unique"
    c1=$(cpu_ticks "$AIGATE_PID")
    if [ -n "$rpid" ]; then
        # Its last reload may end just after the load: let it finish (it is bounded).
        for ((i = 0; i < 200; i++)); do
            alive "$rpid" || break
            sleep 0.05
        done
        stop_pid "$rpid"
        forget_pid "$rpid"
        posts=$(grep -c '^status ' "$TMP/s12-$tag.reloads")
        posts_ok=$(grep -c '^status 200$' "$TMP/s12-$tag.reloads")
        # The slowest reload as aigate timed it (validate + apply), in ms.
        ms_max=$(sed -n 's/.*"validate_ms":\([0-9.]*\),"apply_ms":\([0-9.]*\).*/\1 \2/p' \
            "$TMP/s12-$tag.reloads" | awk '{ t = $1 + $2; if (t > m) m = t } END { if (NR) printf "%.3f", m; else print "null" }')
    fi
    s12_scrape "$after"
    rss1=$(rss_kib "$AIGATE_PID")
    [[ ${RUN[$key]} != *'"error":'* ]] || return 0
    cpu_add "$key" "$c0" "$c1" aigate_cpu_s cpu_us_per_req
    ok0=$(s12_reloads success "$before") ok1=$(s12_reloads success "$after")
    fail0=$(s12_reloads failure "$before") fail1=$(s12_reloads failure "$after")
    chg1=$(s12_log_count 'reload: generation .* applied .*changed: rate_limit')
    warn1=$(grep -ci 'warn\|error' "$AIGATE_DIR/aigate.log")
    rec=${RUN[$key]}
    RUN[$key]="${rec%\}},\"non2xx\":$(jnum "$rec" err_status),\"socket_errors\":$(($(jnum "$rec" err_connect) + $(jnum "$rec" err_read) + $(jnum "$rec" err_write) + $(jnum "$rec" err_timeout))),\"reloads\":$((ok1 - ok0)),\"reload_failures\":$((fail1 - fail0)),\"reloads_changing_rate_limit\":$((chg1 - chg0)),\"reload_posts\":${posts:-0},\"reload_posts_200\":${posts_ok:-0},\"reload_ms_max\":$ms_max,\"log_warnings\":$((warn1 - warn0)),\"rss_kib_before\":${rss0:-null},\"rss_kib_after\":${rss1:-null}}"
    rec=${RUN[$key]}
    if [ "$tg" = aigate_reload ]; then
        if [ "$((fail1 - fail0))" != 0 ] || [ "${posts_ok:-0}" != "${posts:-0}" ]; then
            note "$key: $((fail1 - fail0)) reload(s) failed, $posts_ok of $posts POST /reload answered 200: $(grep -v '^status' "$TMP/s12-$tag.reloads" | grep -v '"generation"' | head -n 2 | tr '\n' ' ')"
        fi
        [ "$((chg1 - chg0))" = "$((ok1 - ok0))" ] ||
            note "$key: $((chg1 - chg0)) of $((ok1 - ok0)) reloads logged a change of rate_limit"
        if [ "$(jnum "$rec" errors)" != 0 ]; then
            note "$key: during the reloads wrk saw $(jnum "$rec" non2xx) non-2xx and $(jnum "$rec" socket_errors) socket errors (see $AIGATE_DIR/aigate.log)"
        fi
    elif [ "$((ok1 - ok0))" != 0 ]; then
        note "$key: $((ok1 - ok0)) reloads during a run without reloads"
    fi
    [ "$((warn1 - warn0))" = 0 ] ||
        note "$key: aigate logged $((warn1 - warn0)) warning/error line(s), last: $(grep -i 'warn\|error' "$AIGATE_DIR/aigate.log" | tail -n 1)"
    return 0
}

s12_run() {
    local r sc tg
    if [ "$AIGATE_OK" != 1 ]; then
        note "S12 skipped: $AIGATE_SKIP"
        return
    fi
    if ! command -v curl >/dev/null; then
        note "S12 skipped: it needs curl (the reloads and the scrapes)"
        return
    fi
    echo "bench: S12 reloads under load, S1 and S2 with no reload and with a reload every second" \
        "(wrk -t$WRK_THREADS -c$WRK_CONNS, ${DURATION}s, $S12_ROUNDS rounds)"
    if s12_start; then
        for ((r = 1; r <= S12_ROUNDS; r++)); do
            for sc in S1 S2; do
                if ((r % 2)); then
                    for tg in aigate_steady aigate_reload; do s12_measure "$r" "$tg" "$sc"; done
                else
                    for tg in aigate_reload aigate_steady; do s12_measure "$r" "$tg" "$sc"; done
                fi
            done
        done
        S12_LOG=$AIGATE_DIR/aigate.log
    fi
    aigate_stop
}

# ---- machine info ------------------------------------------------------------------------------

START_UTC=$(date -u +%Y-%m-%dT%H:%M:%SZ)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
[ -n "$OUT" ] || OUT=$BENCH/results/$STAMP.json
mkdir -p "$(dirname "$OUT")" || die "cannot create $(dirname "$OUT")"
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null)
GIT_REV=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
GIT_DIRTY=false
[ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null | head -n1)" ] && GIT_DIRTY=true
NGINX_VERSION=$(nginx -v 2>&1 | sed 's/.*nginx\///')
WRK_VERSION=$(wrk -v 2>&1 | awk 'NR==1 { print $2 }')
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
AIGATE_VERSION=
if [ "$AIGATE_OK" = 1 ]; then
    AIGATE_VERSION=$(timeout 2 "$AIGATE" --version 2>&1 | head -n1)
fi

echo "bench: aigate $([ "$AIGATE_OK" = 1 ] && echo "$AIGATE" || echo "skipped: $AIGATE_SKIP")"
echo "bench: duration ${DURATION}s per run, scenarios $SCENARIOS, threads $THREADS, rounds $ROUNDS" \
    "$([ "$SMOKE" = 1 ] && echo '(smoke)')"
echo "bench: $(nproc) CPUs ($CPU_MODEL), load average $LOADAVG_START"

# ---- the run -----------------------------------------------------------------------------------

declare -A RSS
UPSTREAM_PORT=$(free_ports 1)
[ -n "$UPSTREAM_PORT" ] || die "no free port"
nginx_start upstream upstream.conf "$UPSTREAM_WORKERS" "$UPSTREAM_CPUS" \
    "http://127.0.0.1:$UPSTREAM_PORT/v1/messages" PORT="$UPSTREAM_PORT" CANNED="$CANNED"
UPSTREAM_PID=$NGINX_PID
probe=$("$LOADGEN" --first-ok -u "http://127.0.0.1:$UPSTREAM_PORT/v1/messages" -b "$UPSTREAM_BODY" \
    -t 5 --body-out "$TMP/upstream-body.json")
[ "$(<"$TMP/upstream-body.json")" = "$CANNED" ] || die "the upstream does not answer the canned body"
UPSTREAM_DESC="nginx $NGINX_VERSION, return 200 of bench/canned/messages.json (${#CANNED} bytes)"
UPSTREAM_DESC+=", worker_processes $UPSTREAM_WORKERS, keep-alive"
echo "bench: upstream: $UPSTREAM_DESC on 127.0.0.1:$UPSTREAM_PORT"
: "$probe"

instances_start "$BASE_T"
rss_sample idle

if want S1; then
    echo "bench: S1 cache hit (wrk -t$WRK_THREADS -c$WRK_CONNS, ${DURATION}s)"
    for ((r = 1; r <= ROUNDS; r++)); do s1_run "$r" "$BASE_T"; done
    rss_sample after_s1
fi

if want S2; then
    echo "bench: S2 proxied, unique prompts (wrk -t$WRK_THREADS -c$WRK_CONNS, ${DURATION}s)"
    for ((r = 1; r <= ROUNDS; r++)); do
        s2_run "$r" "$BASE_T"
        measure "S2|upstream|$BASE_T|$r" wrk_run "http://127.0.0.1:$UPSTREAM_PORT/v1/messages" \
            "$UPSTREAM_BODY" 1
    done
    rss_sample after_s2
fi

if want S3; then
    for rate in "${RATE_LIST[@]}"; do
        echo "bench: S3 open loop at $rate req/s (ag_loadgen -c $LG_CONNS, ${DURATION}s)"
        for ((r = 1; r <= ROUNDS; r++)); do
            measure "S3|upstream|$BASE_T|$r|$rate" lg_rate \
                "http://127.0.0.1:$UPSTREAM_PORT/v1/messages" "$UPSTREAM_BODY" "$rate"
            next_s2_body
            if aigate_up; then
                measure "S3|aigate|$BASE_T|$r|$rate" lg_rate \
                    "http://127.0.0.1:$AIGATE_PORT$AIGATE_ROUTE" "$S2_RUN_BODY" "$rate"
            fi
            measure "S3|nginx|$BASE_T|$r|$rate" lg_rate \
                "http://127.0.0.1:$REF_PROXY_PORT$AIGATE_ROUTE" "$S2_RUN_BODY" "$rate"
        done
    done
fi

# S10: the OpenAI route's translation cost: S2 (closed loop) and S3 (open loop) on
# /v1/chat/completions next to /v1/messages, the same prompt shape, unique prompts.
S10_MSG_BODY='{"model":"claude-haiku-4-5","max_tokens":1024,"messages":[{"role":"user","content":"bench msg {{n}}"}]}'
S10_CHAT_BODY='{"model":"claude-haiku-4-5","max_tokens":1024,"messages":[{"role":"user","content":"bench chat {{n}}"}]}'
if want S10 && aigate_up; then
    echo "bench: S10 /v1/messages and /v1/chat/completions, proxied, unique prompts"
    for ((r = 1; r <= ROUNDS; r++)); do
        measure "S10|messages|$BASE_T|$r|closed" wrk_run \
            "http://127.0.0.1:$AIGATE_PORT/v1/messages" "$S10_MSG_BODY" 1
        measure "S10|chat|$BASE_T|$r|closed" wrk_run \
            "http://127.0.0.1:$AIGATE_PORT/v1/chat/completions" "$S10_CHAT_BODY" 1
        for rate in "${RATE_LIST[@]}"; do
            measure "S10|messages|$BASE_T|$r|$rate" lg_rate \
                "http://127.0.0.1:$AIGATE_PORT/v1/messages" "$S10_MSG_BODY" "$rate"
            measure "S10|chat|$BASE_T|$r|$rate" lg_rate \
                "http://127.0.0.1:$AIGATE_PORT/v1/chat/completions" "$S10_CHAT_BODY" "$rate"
        done
    done
fi

if want S6; then
    echo "bench: S6 memory with $HOLD_CONNS idle keep-alive connections"
    if aigate_up; then
        [ "$CACHE_STATE" != unknown ] || aigate_warm_cache
        hold_run aigate "$AIGATE_PID" "http://127.0.0.1:$AIGATE_PORT$AIGATE_ROUTE" "$S1_BODY"
    fi
    hold_run nginx "$REF_PID" "http://127.0.0.1:$REF_CACHED_PORT$AIGATE_ROUTE" "$S1_BODY"
fi
instances_stop

want S4 && s4_run

# S9: S3's open loop against an upstream that answers 1% of requests with 529 (nginx,
# split_clients on the request id); aigate retries them with its defaults. The upstream's
# own figures (failures included) are the floor; nginx does not retry, so it has no column.
if want S9 && [ "$AIGATE_OK" = 1 ]; then
    S9_PORT=$(free_ports 1)
    [ -n "$S9_PORT" ] || die "no free port"
    nginx_start upstream529 upstream_529.conf "$UPSTREAM_WORKERS" "$UPSTREAM_CPUS" \
        "http://127.0.0.1:$S9_PORT/_health" PORT="$S9_PORT" CANNED="$CANNED"
    S9_NGINX_PID=$NGINX_PID
    AIGATE_UPSTREAM_URL=http://127.0.0.1:$S9_PORT aigate_start "$BASE_T" || true
    for rate in "${RATE_LIST[@]}"; do
        echo "bench: S9 open loop at $rate req/s, 1% of upstream answers 529"
        for ((r = 1; r <= ROUNDS; r++)); do
            measure "S9|upstream|$BASE_T|$r|$rate" lg_rate \
                "http://127.0.0.1:$S9_PORT/v1/messages" "$UPSTREAM_BODY" "$rate"
            next_s2_body
            if aigate_up; then
                measure "S9|aigate|$BASE_T|$r|$rate" lg_rate \
                    "http://127.0.0.1:$AIGATE_PORT$AIGATE_ROUTE" "$S2_RUN_BODY" "$rate"
            fi
        done
    done
    aigate_stop
    stop_pid "$S9_NGINX_PID"
    forget_pid "$S9_NGINX_PID"
fi

if want S5; then
    echo "bench: S5 cold start, exec to first 2xx, $COLD_RUNS runs each"
    declare -a COLD_A=() COLD_N=()
    cold_fail_a=0
    cold_fail_n=0
    for ((i = 1; i <= COLD_RUNS; i++)); do
        if [ "$AIGATE_OK" = 1 ]; then
            cold_one aigate
            out=$COLD_OUT
            us=$(jnum "$out" elapsed_us)
            if [[ $out == *'"ok":true'* ]]; then COLD_A+=("$us"); else
                cold_fail_a=$((cold_fail_a + 1))
                [ "$cold_fail_a" = 1 ] && note "S5 aigate run failed: $out"
            fi
        fi
        cold_one nginx
        out=$COLD_OUT
        us=$(jnum "$out" elapsed_us)
        if [[ $out == *'"ok":true'* ]]; then COLD_N+=("$us"); else
            cold_fail_n=$((cold_fail_n + 1))
            [ "$cold_fail_n" = 1 ] && harness_error "S5 nginx run failed: $out"
        fi
    done
    cold_json() { # FAILS VALUES...
        local fails=$1
        shift
        local list
        list=$(IFS=,; echo "$*")
        echo "{\"tool\":\"cold_start\",\"runs\":$COLD_RUNS,\"failures\":$fails,\"runs_us\":[$list]," \
            "\"median_us\":$(median "$@" | grep . || echo null)," \
            "\"min_us\":$(printf '%s\n' "$@" | sort -g | head -n1 | grep . || echo null)," \
            "\"max_us\":$(printf '%s\n' "$@" | sort -g | tail -n1 | grep . || echo null)}"
    }
    [ "$AIGATE_OK" = 1 ] && record "S5|aigate|$BASE_T|1" "$(cold_json "$cold_fail_a" "${COLD_A[@]}")"
    record "S5|nginx|$BASE_T|1" "$(cold_json "$cold_fail_n" "${COLD_N[@]}")"
    if s5_tls_setup; then
        echo "bench: S5 cold start over TLS, exec to first 2xx (curl -sk polling), $COLD_RUNS runs each"
        COLD_A=() COLD_N=()
        cold_fail_a=0
        cold_fail_n=0
        for ((i = 1; i <= COLD_RUNS; i++)); do
            if [ "$AIGATE_OK" = 1 ]; then
                cold_one aigate tls
                out=$COLD_OUT
                if [[ $out == *'"ok":true'* ]]; then COLD_A+=("$(jnum "$out" elapsed_us)"); else
                    cold_fail_a=$((cold_fail_a + 1))
                    [ "$cold_fail_a" = 1 ] && note "S5 TLS aigate run failed: $out; log: $(tail -n 3 \
                        "$AIGATE_DIR/aigate.log" 2>/dev/null | tr '\n' ' ')"
                fi
            fi
            cold_one nginx tls
            out=$COLD_OUT
            if [[ $out == *'"ok":true'* ]]; then COLD_N+=("$(jnum "$out" elapsed_us)"); else
                cold_fail_n=$((cold_fail_n + 1))
                [ "$cold_fail_n" = 1 ] && harness_error "S5 TLS nginx run failed: $out; log: $(tail \
                    -n 3 "$NGINX_DIR/error.log" 2>/dev/null | tr '\n' ' ')"
            fi
        done
        [ "$AIGATE_OK" = 1 ] &&
            record "S5|aigate|$BASE_T|1|tls" "$(cold_json "$cold_fail_a" "${COLD_A[@]}")"
        record "S5|nginx|$BASE_T|1|tls" "$(cold_json "$cold_fail_n" "${COLD_N[@]}")"
    fi
fi

if want S7; then
    for t in "${THREAD_LIST[@]}"; do
        if [ "$t" = "$BASE_T" ] && want S1 && want S2; then
            continue # measured above with the same thread count
        fi
        echo "bench: S7 with $t threads / worker_processes"
        instances_start "$t"
        for ((r = 1; r <= ROUNDS; r++)); do
            s1_run "$r" "$t"
            s2_run "$r" "$t"
        done
        instances_stop
    done
fi

want S8 && s8_run
want S11 && s11_run
want S12 && s12_run

ref_stop
stop_pid "$UPSTREAM_PID"
forget_pid "$UPSTREAM_PID"
FINISH_UTC=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LOADAVG_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- the table ---------------------------------------------------------------------------------

ROWS=()
# row SCENARIO METRIC AIGATE NGINX FLOOR: values are numbers or "" (shown as -).
SEP=$'\x1f' # not whitespace: read must keep empty fields
row() { ROWS+=("$1$SEP$2$SEP$3$SEP$4$SEP$5"); }

# agg SCENARIO TARGET THREADS FIELD [EXTRA]: the median over rounds of FIELD.
agg() {
    local s=$1 tg=$2 t=$3 f=$4 extra=${5:-} r key vals=()
    for ((r = 1; r <= ROUNDS; r++)); do
        key="$s|$tg|$t|$r${extra:+|$extra}"
        [ -n "${RUN[$key]+x}" ] || continue
        vals+=("$(jnum "${RUN[$key]}" "$f")")
    done
    [ ${#vals[@]} -gt 0 ] && median "${vals[@]}"
}

one() { [ -n "${RUN[$1]+x}" ] && jnum "${RUN[$1]}" "$2"; }

sub() { [ -n "$1" ] && [ -n "$2" ] && calc "$1 - $2"; }

ms() { [ -n "$1" ] && calc "$1 / 1000"; }

if want S1; then
    for f in rps p50_us p99_us; do
        row "S1 cache hit" "$f" "$(agg S1 aigate "$BASE_T" $f)" "$(agg S1 nginx "$BASE_T" $f)" ""
    done
fi
if want S2; then
    for f in rps p50_us p99_us; do
        row "S2 proxied" "$f" "$(agg S2 aigate "$BASE_T" $f)" "$(agg S2 nginx "$BASE_T" $f)" \
            "$(agg S2 upstream "$BASE_T" $f)"
    done
fi
if want S3; then
    for rate in "${RATE_LIST[@]}"; do
        for f in p50_us p99_us p999_us; do
            d=$(agg S3 upstream "$BASE_T" $f "$rate")
            row "S3 @${rate}/s" "+$f" "$(sub "$(agg S3 aigate "$BASE_T" $f "$rate")" "$d")" \
                "$(sub "$(agg S3 nginx "$BASE_T" $f "$rate")" "$d")" "$d"
        done
        row "S3 @${rate}/s" "achieved_rps" "$(agg S3 aigate "$BASE_T" achieved_rps "$rate")" \
            "$(agg S3 nginx "$BASE_T" achieved_rps "$rate")" "$(agg S3 upstream "$BASE_T" achieved_rps "$rate")"
    done
fi
if want S10; then
    # The "nginx" column holds /v1/messages: the ratio is chat's cost over messages'.
    for f in rps p50_us p99_us; do
        row "S10 chat vs messages" "$f" "$(agg S10 chat "$BASE_T" $f closed)" \
            "$(agg S10 messages "$BASE_T" $f closed)" ""
    done
    for rate in "${RATE_LIST[@]}"; do
        for f in p50_us p99_us; do
            row "S10 @${rate}/s chat vs msg" "$f" "$(agg S10 chat "$BASE_T" $f "$rate")" \
                "$(agg S10 messages "$BASE_T" $f "$rate")" ""
        done
    done
fi
if want S9; then
    for rate in "${RATE_LIST[@]}"; do
        for f in p50_us p99_us p999_us; do
            row "S9 @${rate}/s 1% 529" "$f" "$(agg S9 aigate "$BASE_T" $f "$rate")" "" \
                "$(agg S9 upstream "$BASE_T" $f "$rate")"
        done
        for f in ok non2xx achieved_rps; do
            row "S9 @${rate}/s 1% 529" "$f" "$(agg S9 aigate "$BASE_T" $f "$rate")" "" \
                "$(agg S9 upstream "$BASE_T" $f "$rate")"
        done
    done
fi
if want S4; then
    # The nginx column of both TTFB rows is the same run: nginx proxies the upstream's own
    # request, which aigate takes on /v1/messages and builds from a prompt on its own route.
    for tg in aigate:generate aigate_messages:messages; do
        for f in ttfb_p50_us ttfb_p99_us; do
            d=$(agg S4 upstream "$BASE_T" $f ttfb)
            row "S4 TTFB ${tg#*:}" "+$f" "$(sub "$(agg S4 "${tg%%:*}" "$BASE_T" $f ttfb)" "$d")" \
                "$(sub "$(agg S4 nginx "$BASE_T" $f ttfb)" "$d")" "$d"
        done
    done
    sc="S4 $STREAMS streams"
    row "$sc" "streams_complete" "$(agg S4 aigate "$BASE_T" streams_complete streams)" \
        "$(agg S4 nginx "$BASE_T" streams_complete streams)" \
        "$(agg S4 upstream "$BASE_T" streams_complete streams)"
    row "$sc" "ttfb_p99_us" "$(agg S4 aigate "$BASE_T" ttfb_p99_us streams)" \
        "$(agg S4 nginx "$BASE_T" ttfb_p99_us streams)" "$(agg S4 upstream "$BASE_T" ttfb_p99_us streams)"
    row "$sc" "total_p99_ms" "$(ms "$(agg S4 aigate "$BASE_T" total_p99_us streams)")" \
        "$(ms "$(agg S4 nginx "$BASE_T" total_p99_us streams)")" \
        "$(ms "$(agg S4 upstream "$BASE_T" total_p99_us streams)")"
    row "$sc" "rss_max_kib" "$(agg S4 aigate "$BASE_T" rss_max_kib streams)" \
        "$(agg S4 nginx "$BASE_T" rss_max_kib streams)" ""
    row "$sc" "bytes_per_stream" "$(agg S4 aigate "$BASE_T" bytes_per_stream streams)" \
        "$(agg S4 nginx "$BASE_T" bytes_per_stream streams)" ""
fi
if want S5; then
    row "S5 cold start" "median_us" "$(one "S5|aigate|$BASE_T|1" median_us)" \
        "$(one "S5|nginx|$BASE_T|1" median_us)" ""
    if [ -n "${RUN[S5|nginx|$BASE_T|1|tls]+x}" ]; then
        row "S5 cold start (TLS)" "median_us" "$(one "S5|aigate|$BASE_T|1|tls" median_us)" \
            "$(one "S5|nginx|$BASE_T|1|tls" median_us)" ""
    fi
fi
if want S6; then
    row "S6 memory" "rss_idle_kib" "${RSS[aigate|idle]:-}" "${RSS[nginx|idle]:-}" ""
    want S1 && row "S6 memory" "rss_after_s1_kib" "${RSS[aigate|after_s1]:-}" "${RSS[nginx|after_s1]:-}" ""
    want S2 && row "S6 memory" "rss_after_s2_kib" "${RSS[aigate|after_s2]:-}" "${RSS[nginx|after_s2]:-}" ""
    row "S6 memory" "rss_${HOLD_CONNS}_conns_kib" "$(one "S6|aigate|$BASE_T|1" with_kib)" \
        "$(one "S6|nginx|$BASE_T|1" with_kib)" ""
    row "S6 memory" "bytes_per_conn" "$(one "S6|aigate|$BASE_T|1" bytes_per_conn)" \
        "$(one "S6|nginx|$BASE_T|1" bytes_per_conn)" ""
fi
if want S7; then
    for t in "${THREAD_LIST[@]}"; do
        row "S7 threads=$t" "S1_rps" "$(agg S1 aigate "$t" rps)" "$(agg S1 nginx "$t" rps)" ""
        row "S7 threads=$t" "S2_rps" "$(agg S2 aigate "$t" rps)" "$(agg S2 nginx "$t" rps)" ""
    done
fi

if want S12; then
    # The "aigate" column holds the runs with a reload every second, the "nginx" one the same
    # instance's runs without: the ratio is the reloads' cost.
    for sc in S1 S2; do
        for f in rps p99_us non2xx socket_errors reloads rss_kib_after; do
            row "S12 reloads/s=1 vs none" "${sc}_$f" "$(pair_agg S12 aigate_reload "$sc" $f)" \
                "$(pair_agg S12 aigate_steady "$sc" $f)" ""
        done
    done
fi

ratio() { # A N: A/N with two decimals, when both are positive numbers (an added latency at or
    # below zero is noise, and a ratio of noise means nothing)
    [[ $1 =~ ^[0-9.]+$ && $2 =~ ^[0-9.]+$ ]] || return 0
    awk -v a="$1" -v n="$2" 'BEGIN { if (a > 0 && n > 0) printf "%.2f", a / n }'
}

fmt() { [ -n "$1" ] && echo "$1" || echo "-"; }

echo
echo "aigate benchmark  $START_UTC  ($(nproc) CPUs, $CPU_MODEL, load avg $LOADAVG_START)"
echo "upstream: $UPSTREAM_DESC"
echo "aigate: $([ -n "$AIGATE_SKIP" ] && echo "skipped: $AIGATE_SKIP" || echo "$AIGATE")" \
    "($AIGATE_CONFIG_NAME: $(tr '\n' ' ' <<<"$AIGATE_CONFIG_TOML"))"
echo "S1/S2/S7: wrk -t$WRK_THREADS -c$WRK_CONNS -d${DURATION}s (closed loop); S3: ag_loadgen" \
    "-c $LG_CONNS open loop, latency from the scheduled time; threads $BASE_T unless stated;" \
    "median of $ROUNDS round(s); µs, KiB; ratio = aigate/nginx; floor = direct to the upstream"
if want S4; then
    echo "S4: ag_sse_upstream; TTFB = send to first body byte over $TTFB_REQS sequential streams" \
        "(+ = minus direct; generate = POST $AIGATE_ROUTE, messages = POST /v1/messages, both" \
        "Cache-Control: no-store); $STREAMS concurrent streams of $STREAM_WORDS deltas" \
        "${STREAM_DELAY_MS} ms apart, RSS = max while all are open; nginx: proxy_buffering off"
fi
if want S5 && [ -n "${RUN[S5|nginx|$BASE_T|1|tls]+x}" ]; then
    echo "S5 (TLS): both on HTTPS with one self-signed P-256 certificate; exec to the first 2xx of" \
        "curl -sk polling without pause (each attempt forks curl, for both servers alike)"
fi
if want S12; then
    echo "S12: one aigate with an admin listener; column aigate = a POST /reload every second" \
        "(rate_limit alternated), column nginx = the same instance, no reload; ratio = reloads/none;" \
        "non2xx = answers >= 400, socket_errors = connect/read/write/timeout errors (wrk);" \
        "median of $S12_ROUNDS round(s)"
fi
# The scenario column: 16 wide, or as wide as its longest name.
SW=16
for line in "${ROWS[@]}"; do
    s=${line%%"$SEP"*}
    [ ${#s} -le "$SW" ] || SW=${#s}
done
[ ${#ROWS[@]} -eq 0 ] ||
    printf '%-*s %-22s %12s %12s %8s %12s\n' "$SW" scenario metric aigate nginx ratio floor
TABLE_JSON=()
for line in "${ROWS[@]}"; do
    IFS=$SEP read -r s m a n f <<<"$line"
    rt=$(ratio "$a" "$n")
    printf '%-*s %-22s %12s %12s %8s %12s\n' "$SW" "$s" "$m" "$(fmt "$a")" "$(fmt "$n")" "$(fmt "$rt")" \
        "$(fmt "$f")"
    TABLE_JSON+=("{\"scenario\":\"$s\",\"metric\":\"$m\",\"aigate\":${a:-null},\"nginx\":${n:-null},\"ratio\":${rt:-null},\"floor\":${f:-null}}")
done
if want S12 && [ -n "$S12_LOG" ]; then
    echo "  S12 per reload run: $(pair_agg S12 aigate_reload S1 reloads) (S1) and" \
        "$(pair_agg S12 aigate_reload S2 reloads) (S2) reloads applied (aigate_config_reloads_total)," \
        "$(pair_agg S12 aigate_reload S1 reloads_changing_rate_limit) and" \
        "$(pair_agg S12 aigate_reload S2 reloads_changing_rate_limit) logged changing rate_limit," \
        "slowest $(pair_agg S12 aigate_reload S1 reload_ms_max) and" \
        "$(pair_agg S12 aigate_reload S2 reload_ms_max) ms (validate + apply); log: $S12_LOG"
fi
# ---- S8: off against obs -----------------------------------------------------------------------

s8_vals() { pair_vals S8 "$@"; } # TARGET SCENARIO FIELD
# s8_count SCENARIO TEXT: how many of aigate_obs's runs of SCENARIO have TEXT in their record.
s8_count() {
    local r key n=0
    for ((r = 1; r <= S8_ROUNDS; r++)); do
        key="S8|aigate_obs|$BASE_T|$r|$1"
        [[ ${RUN[$key]:-} == *"$2"* ]] && n=$((n + 1))
    done
    echo "$n"
}
s8_agg() { pair_agg S8 "$@"; } # TARGET SCENARIO FIELD: the median over rounds
# cost A B: 1 - B/A in percent, one decimal, when both are positive numbers.
s8_cost() {
    [[ $1 =~ ^[0-9.]+$ && $2 =~ ^[0-9.]+$ ]] || return 0
    awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.1f", (1 - b / a) * 100 }'
}
S8_TARGET_PCT=3
S8_JSON=()
if want S8; then
    echo
    echo "S8 observability cost: (a) admin_listen = \"\"; (b) admin listener on, GET /metrics every" \
        "1 s and one GET /tail?format=json subscriber for the whole run; wrk -t$WRK_THREADS" \
        "-c$WRK_CONNS -d${DURATION}s, threads $BASE_T, median of $S8_ROUNDS round(s), a and b" \
        "alternated; cost = 1 - rps(b)/rps(a), target < ${S8_TARGET_PCT}%;" \
        "cpu_us_per_req = aigate's CPU time (all threads) / requests$([ "$S8_SPLIT" = 1 ] &&
            echo "; (m) = (b)'s instance scraped, no tail subscriber")"
    # The (m) column only with --s8-split.
    s8_cols() { # SCENARIO METRIC A M B RATIO COST VERDICT
        if [ "$S8_SPLIT" = 1 ]; then
            printf '%-16s %-16s %12s %12s %12s %8s %8s  %s\n' "$@"
        else
            printf '%-16s %-16s %12s %12s %8s %8s  %s\n' "$1" "$2" "$3" "$5" "$6" "$7" "$8"
        fi | sed 's/ *$//'
    }
    s8_cols scenario metric "(a) off" "(m) metrics" "(b) obs" "b/a" cost ""
    for sc in S1:"S8 S1 cache hit" S2:"S8 S2 proxied"; do
        name=${sc#*:}
        sc=${sc%%:*}
        for f in rps p50_us p99_us cpu_us_per_req; do
            a=$(s8_agg aigate_off "$sc" $f)
            b=$(s8_agg aigate_obs "$sc" $f)
            m=$(s8_agg aigate_metrics "$sc" $f)
            rt=$(ratio "$b" "$a")
            cost='' mcost='' verdict='' per=()
            if [ "$f" = rps ]; then
                cost=$(s8_cost "$a" "$b")
                mcost=$(s8_cost "$a" "$m")
                mapfile -t va < <(s8_vals aigate_off "$sc" rps)
                mapfile -t vb < <(s8_vals aigate_obs "$sc" rps)
                for ((i = 0; i < ${#va[@]} && i < ${#vb[@]}; i++)); do
                    c=$(s8_cost "${va[$i]}" "${vb[$i]}")
                    [ -z "$c" ] || per+=("$c")
                done
                if [ -n "$cost" ]; then
                    verdict="target < ${S8_TARGET_PCT}%: $(awk -v c="$cost" -v t="$S8_TARGET_PCT" \
                        'BEGIN { print (c < t) ? "met" : "NOT met" }')"
                    [ ${#per[@]} -lt 2 ] || verdict+="; per round: $(printf '%s%%, ' "${per[@]}")"
                    verdict=${verdict%, }
                    [ -z "$mcost" ] || verdict+="; (m) metrics only: $mcost%"
                fi
            fi
            s8_cols "$name" "$f" "$(fmt "$a")" "$(fmt "$m")" "$(fmt "$b")" "$(fmt "$rt")" \
                "$([ -n "$cost" ] && echo "$cost%" || echo -)" "$verdict"
            j="{\"scenario\":\"$sc\",\"metric\":\"$f\",\"off\":${a:-null},\"obs\":${b:-null},\"ratio\":${rt:-null},\"cost_pct\":${cost:-null}"
            [ "$f" != rps ] || j+=",\"rounds_cost_pct\":[$(IFS=,; echo "${per[*]}")],\"target_pct\":$S8_TARGET_PCT"
            [ "$S8_SPLIT" != 1 ] || j+=",\"metrics_only\":${m:-null}$([ "$f" = rps ] && echo ",\"metrics_only_cost_pct\":${mcost:-null}")"
            S8_JSON+=("$j}")
        done
        # What the obs side did, median per run: a figure for (b) only means something if the
        # scrapes were answered, the subscriber was connected and the metrics counted the load.
        if [ -n "$(s8_agg aigate_obs "$sc" requests)" ]; then
            echo "  (b) $sc per run: $(s8_agg aigate_obs "$sc" scrapes_ok) of" \
                "$(s8_agg aigate_obs "$sc" scrapes) scrapes answered 200; tail subscriber" \
                "connected in $(s8_count "$sc" '"tail_connected":true') and alive at the end in" \
                "$(s8_count "$sc" '"tail_alive_at_end":true') of $(s8_count "$sc" '"tail_connected":')" \
                "runs, $(fmt "$(s8_agg aigate_obs "$sc" tail_events)") events received," \
                "$(fmt "$(s8_agg aigate_obs "$sc" tail_dropped)") dropped, its CPU" \
                "$(fmt "$(s8_agg aigate_obs "$sc" tail_client_cpu_s)") s; metrics counted" \
                "$(fmt "$(s8_agg aigate_obs "$sc" metrics_requests)") requests (wrk" \
                "$(s8_agg aigate_obs "$sc" requests))"
        fi
    done
fi
# ---- S11: local against redis ------------------------------------------------------------------

# s11_floor_us SCENARIO: for each round's run on Redis, the µs Redis itself needs for the
# commands that run sent per request, at redis-benchmark's rates: EVALSHA at the limiter's
# script's (EVAL "return 1"'s without it), the cache's GET at GET's, its SET at SET's.
s11_floor_us() {
    local r key rec n fe fg fs
    fe=$(one "S11|redis_benchmark|$BASE_T|1|evalsha" rps)
    [ -n "$fe" ] || fe=$(one "S11|redis_benchmark|$BASE_T|1|eval" rps)
    fg=$(one "S11|redis_benchmark|$BASE_T|1|get" rps)
    fs=$(one "S11|redis_benchmark|$BASE_T|1|set" rps)
    [ -n "$fe" ] && [ -n "$fg" ] && [ -n "$fs" ] || return 0
    for ((r = 1; r <= S11_ROUNDS; r++)); do
        key="S11|aigate_redis|$BASE_T|$r|$1"
        [ -n "${RUN[$key]+x}" ] || continue
        rec=${RUN[$key]}
        n=$(jnum "$rec" requests)
        [[ ${n:-0} =~ ^[0-9]+$ && ${n:-0} -gt 0 ]] || continue
        awk -v n="$n" -v e="$(jnum "$rec" evalsha)" -v g="$(jnum "$rec" redis_cache_get)" \
            -v s="$(jnum "$rec" redis_cache_set)" -v fe="$fe" -v fg="$fg" -v fs="$fs" \
            'BEGIN { printf "%.1f\n", (e / fe + g / fg + s / fs) * 1000000 / n }'
    done
}
# us_per A: 1e6/A, one decimal, when A is a positive number (the µs of one request at rate A).
us_per() {
    [[ $1 =~ ^[0-9.]+$ ]] || return 0
    awk -v a="$1" 'BEGIN { if (a > 0) printf "%.1f", 1000000 / a }'
}
S11_JSON=()
if want S11 && [ -z "$S11_REDIS_VERSION" ]; then
    echo
    echo "S11 shared state: skipped (the notes say why)"
elif want S11; then
    echo
    echo "S11 shared state: local = the bench config (limiter and cache in the process); redis =" \
        "the same + [aigate.redis] url, redis-server ${S11_REDIS_VERSION:-?} --save \"\" --appendonly no" \
        "(one EVALSHA per request, the cache's GET and SET on Redis); wrk -t$WRK_THREADS" \
        "-c$WRK_CONNS -d${DURATION}s, threads $BASE_T, median of $S11_ROUNDS round(s), alternated;" \
        "cost = 1 - rps(redis)/rps(local), or redis - local; us_per_req = 1e6/rps;" \
        "cpu_us_per_req = aigate's CPU / requests, redis_cpu_us_per_req = redis-server's;" \
        "redis_{evalsha,get,set}_per_req = commands aigate sent Redis / requests (the script's own" \
        "GET and SET left out), redis_ops_per_s = those commands per second, redis_cmd_us = Redis's" \
        "time in them (commandstats); floor =" \
        "redis-benchmark -q -n $S11_BENCH_N -c $S11_BENCH_CONNS -P 1 on that server: its ops/s, and" \
        "redis_floor_us_per_req = the µs Redis needs at those rates for each request's commands"
    s11_cols() { printf '%-18s %-24s %12s %12s %8s %10s  %s\n' "$@" | sed 's/ *$//'; }
    s11_cols scenario metric local redis r/l cost ""
    for sc in S1:"S11 S1 cache hit" S2:"S11 S2 proxied"; do
        name=${sc#*:}
        sc=${sc%%:*}
        for f in rps us_per_req p50_us p99_us cpu_us_per_req redis_evalsha_per_req \
            redis_get_per_req redis_set_per_req redis_ops_per_s redis_cmd_us_per_req \
            redis_cpu_us_per_req redis_floor_us_per_req; do
            extra='' per=()
            case $f in
            us_per_req)
                a=$(us_per "$(pair_agg S11 aigate_local "$sc" rps)")
                b=$(us_per "$(pair_agg S11 aigate_redis "$sc" rps)")
                ;;
            redis_floor_us_per_req)
                a=''
                mapfile -t v < <(s11_floor_us "$sc")
                b=$([ ${#v[@]} -eq 0 ] || median "${v[@]}")
                ;;
            *)
                a=$(pair_agg S11 aigate_local "$sc" "$f")
                b=$(pair_agg S11 aigate_redis "$sc" "$f")
                ;;
            esac
            rt=$(ratio "$b" "$a")
            # Redis's figures while the local instance ran are its idle baseline: no ratio.
            [[ $f != redis_* ]] || rt=''
            cost=''
            case $f in
            rps)
                c=$(s8_cost "$a" "$b")
                [ -z "$c" ] || cost="$c%"
                mapfile -t va < <(pair_vals S11 aigate_local "$sc" rps)
                mapfile -t vb < <(pair_vals S11 aigate_redis "$sc" rps)
                for ((i = 0; i < ${#va[@]} && i < ${#vb[@]}; i++)); do
                    c=$(s8_cost "${va[$i]}" "${vb[$i]}")
                    [ -z "$c" ] || per+=("$c")
                done
                [ ${#per[@]} -lt 2 ] || extra="per round: $(printf '%s%%, ' "${per[@]}")"
                extra=${extra%, }
                ;;
            us_per_req | p50_us | p99_us | cpu_us_per_req | redis_cpu_us_per_req)
                c=$(sub "$b" "$a")
                [ -z "$c" ] || cost=$(awk -v c="$c" 'BEGIN { printf "%+.1f", c }')
                ;;
            esac
            s11_cols "$name" "$f" "$(fmt "$a")" "$(fmt "$b")" "$(fmt "$rt")" "$(fmt "$cost")" "$extra"
            cj=${cost%\%}
            S11_JSON+=("{\"scenario\":\"$sc\",\"metric\":\"$f\",\"local\":${a:-null},\"redis\":${b:-null},\"ratio\":${rt:-null},\"cost\":${cj:-null}$([ "$f" = rps ] && echo ",\"cost_unit\":\"pct\",\"rounds_cost_pct\":[$(IFS=,; echo "${per[*]}")]")}")
        done
    done
    for t in set get evalsha eval; do
        for f in rps p50_ms p99_ms; do
            b=$(one "S11|redis_benchmark|$BASE_T|1|$t" "$f")
            s11_cols "S11 floor" "${t^^} $f" "" "$(fmt "$b")" "" "" \
                "$([ "$t$f" = evalsharps ] && echo "the limiter's script, one key")$([ "$t$f" = evalrps ] && echo 'EVAL "return 1" 0')"
            S11_JSON+=("{\"scenario\":\"redis-benchmark\",\"metric\":\"${t}_$f\",\"local\":null,\"redis\":${b:-null},\"ratio\":null,\"cost\":null}")
        done
    done
fi
if [ ${#NOTES[@]} -gt 0 ]; then
    echo "notes:"
    for n in "${NOTES[@]}"; do echo "  - $n"; done
fi

# ---- the JSON ----------------------------------------------------------------------------------

join() { local IFS=,; echo "$*"; }
{
    echo "{"
    echo "\"schema\":\"aigate-bench/1\","
    echo "\"started_utc\":\"$START_UTC\",\"finished_utc\":\"$FINISH_UTC\","
    echo "\"machine\":{\"nproc\":$(nproc),\"cpu_model\":\"$(json_escape "$CPU_MODEL")\"," \
        "\"kernel\":\"$(json_escape "$(uname -r)")\",\"date\":\"$START_UTC\"," \
        "\"git_rev\":\"$GIT_REV\",\"git_dirty\":$GIT_DIRTY,\"loadavg_start\":\"$LOADAVG_START\"," \
        "\"loadavg_end\":\"$LOADAVG_END\",\"nginx\":\"$(json_escape "$NGINX_VERSION")\"," \
        "\"wrk\":\"$(json_escape "$WRK_VERSION")\"},"
    echo "\"params\":{\"duration_s\":$DURATION,\"scenarios\":\"$SCENARIOS\",\"threads\":[$THREADS]," \
        "\"base_threads\":$BASE_T,\"rates\":[$RATES],\"rounds\":$ROUNDS,\"s8_rounds\":$S8_ROUNDS,\"s11_rounds\":$S11_ROUNDS,\"s12_rounds\":$S12_ROUNDS,\"s11_redis_bench_requests\":$S11_BENCH_N,\"smoke\":$([ "$SMOKE" = 1 ] && echo true || echo false)," \
        "\"server_cpus\":\"$SERVER_CPUS\",\"load_cpus\":\"$LOAD_CPUS\",\"upstream_cpus\":\"$UPSTREAM_CPUS\"," \
        "\"wrk\":\"-t$WRK_THREADS -c$WRK_CONNS --timeout 5s\",\"loadgen_conns\":$LG_CONNS," \
        "\"loadgen_timeout_s\":$LG_TIMEOUT,\"cold_runs\":$COLD_RUNS,\"hold_conns\":$HOLD_CONNS,\"nofile\":$NOFILE," \
        "\"streams\":$STREAMS,\"stream_words\":$STREAM_WORDS,\"stream_delay_ms\":$STREAM_DELAY_MS," \
        "\"ttfb_requests\":$TTFB_REQS},"
    echo "\"upstream\":{\"kind\":\"nginx\",\"description\":\"$(json_escape "$UPSTREAM_DESC")\"," \
        "\"canned_file\":\"bench/canned/messages.json\",\"canned_bytes\":${#CANNED},\"workers\":$UPSTREAM_WORKERS},"
    echo "\"stream_upstream\":{\"kind\":\"ag_sse_upstream\",\"binary\":\"$(json_escape "$SSE_UPSTREAM")\"," \
        "\"ttfb_tags\":\"$S4_TTFB_TAGS\",\"long_tags\":\"$S4_LONG_TAGS\"},"
    echo "\"aigate\":{\"binary\":\"$(json_escape "$AIGATE")\",\"measured\":$([ -z "$AIGATE_SKIP" ] && echo true || echo false)," \
        "\"skip_reason\":$([ -n "$AIGATE_SKIP" ] && echo "\"$(json_escape "$AIGATE_SKIP")\"" || echo null)," \
        "\"version\":\"$(json_escape "$AIGATE_VERSION")\",\"cache_state\":\"$CACHE_STATE\"," \
        "\"config\":\"$(json_escape "$AIGATE_CONFIG_TOML")\"},"
    rss=()
    for k in "${!RSS[@]}"; do rss+=("\"$k\":${RSS[$k]:-null}"); done
    echo "\"rss_kib\":{$(join "${rss[@]}")},"
    echo "\"runs\":["
    first=1
    for k in "${RUN_KEYS[@]}"; do
        IFS='|' read -r s tg t r extra <<<"$k"
        [ $first = 1 ] || echo ","
        first=0
        param=${extra:-null}
        [[ $param =~ ^(null|[0-9.]+)$ ]] || param="\"$param\"" # S4's ttfb or streams
        printf '{"key":"%s","scenario":"%s","target":"%s","threads":%s,"round":%s,"param":%s,"result":%s}' \
            "$k" "$s" "$tg" "$t" "$r" "$param" "${RUN[$k]}"
    done
    echo "],"
    echo "\"table\":[$(join "${TABLE_JSON[@]}")],"
    echo "\"observability\":[$(join "${S8_JSON[@]}")],"
    echo "\"redis\":{\"version\":$([ -n "$S11_REDIS_VERSION" ] && echo "\"$(json_escape "$S11_REDIS_VERSION")\"" || echo null)," \
        "\"options\":\"--save '' --appendonly no --maxmemory 2gb --maxmemory-policy volatile-ttl\"," \
        "\"keys_after_runs\":${S11_REDIS_KEYS:-null},\"used_memory_after_runs\":${S11_REDIS_MEM:-null}," \
        "\"benchmark\":[$(join "${S11_BENCH_JSON[@]}")]},"
    echo "\"shared_state\":[$(join "${S11_JSON[@]}")],"
    notes=()
    for n in "${NOTES[@]}"; do notes+=("\"$(json_escape "$n")\""); done
    echo "\"notes\":[$(join "${notes[@]}")]"
    echo "}"
} >"$OUT"

if command -v jq >/dev/null; then
    jq empty "$OUT" || die "the results file is not valid JSON: $OUT"
elif command -v python3 >/dev/null; then
    python3 -m json.tool "$OUT" >/dev/null || die "the results file is not valid JSON: $OUT"
fi
echo "results: $OUT"
[ "$HARNESS_ERRORS" = 0 ] || die "$HARNESS_ERRORS measurement(s) of nginx or the upstream failed"
exit 0

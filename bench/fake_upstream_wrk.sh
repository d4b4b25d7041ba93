#!/usr/bin/env bash
# fake_upstream_wrk.sh: the first figure of BENCHMARKS.md: POST /api/generate
# through aigate to the Node fake Anthropic server, next to nginx proxying the
# same fake, in the same run, with wrk. Unique prompts, Cache-Control: no-store
# (so every request goes upstream). Usage: bench/fake_upstream_wrk.sh [seconds] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-8}
rounds=${2:-2}
dir=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$dir/nginx.pid" ] && kill "$(cat "$dir/nginx.pid")" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM
free_port() { build/release/ag_loadgen --free-port 1; }
fake_port=$(free_port); gw_port=$(free_port); ngx_port=$(free_port)
node tests/fake-upstream/fake-anthropic.js --port "$fake_port" --api-key k >"$dir/fake.log" 2>&1 &
pids+=($!)
cat >"$dir/nginx.conf" <<NGX
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir; proxy_temp_path $dir;
  upstream fake { server 127.0.0.1:$fake_port; keepalive 64; }
  server {
    listen 127.0.0.1:$ngx_port;
    location = /v1/messages {
      proxy_pass http://fake; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header x-api-key k; proxy_set_header anthropic-version 2023-06-01;
    }
  }
}
NGX
nginx -p "$dir" -c "$dir/nginx.conf"
printf '[aigate]\nrate_limit = 60000000\naccess_log = false\ndata_dir = "%s/data"\n' "$dir" >"$dir/aigate.toml"
ANTHROPIC_API_KEY=k build/release/aigate serve --port "$gw_port" --threads 1 \
    --upstream "http://127.0.0.1:$fake_port" --config "$dir/aigate.toml" 2>"$dir/aigate.log" &
pids+=($!)
for _ in $(seq 100); do
    grep -q "listening on" "$dir/aigate.log" && grep -q "listening on" "$dir/fake.log" && break
    sleep 0.05
done
report='done = function(s, lat, r)
  io.write(string.format("%.0f %d %d %d\n", s.requests / (s.duration / 1e6), lat:percentile(50),
    lat:percentile(99), s.errors.status + s.errors.connect + s.errors.read + s.errors.timeout))
end'
cat >"$dir/direct.lua" <<LUA
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("POST", "/v1/messages", {["Content-Type"]="application/json",
    ["x-api-key"]="k", ["anthropic-version"]="2023-06-01"},
    '{"model":"claude-haiku-4-5","max_tokens":1024,"messages":[{"role":"user","content":"unique prompt ' .. counter .. '"}]}')
end
$report
LUA
cat >"$dir/aigate.lua" <<LUA
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("POST", "/api/generate", {["Content-Type"]="application/json",
    ["Cache-Control"]="no-store"}, '{"prompt":"unique prompt ' .. counter .. '"}')
end
$report
LUA
printf '%-8s %10s %8s %8s %6s\n' target req/s p50_us p99_us errors
for _ in $(seq "$rounds"); do
    for t in direct aigate nginx; do
        case $t in
        direct) url=http://127.0.0.1:$fake_port lua=direct ;;
        aigate) url=http://127.0.0.1:$gw_port lua=aigate ;;
        nginx) url=http://127.0.0.1:$ngx_port lua=direct ;;
        esac
        read -r rps p50 p99 err < <(wrk -t1 -c32 -d"${secs}s" -s "$dir/$lua.lua" "$url" | tail -n 1)
        printf '%-8s %10s %8s %8s %6s\n' "$t" "$rps" "$p50" "$p99" "$err"
    done
done

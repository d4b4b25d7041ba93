// SPDX-License-Identifier: MIT
//
// l_admin.test.js: the admin listener: Prometheus metrics after a known mix of
// requests (checked with promtool), the live tail (fields, filters, redaction,
// a slow subscriber), readiness, and the token that guards it off loopback.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const net = require('node:net');
const { spawnSync } = require('node:child_process');

const fs = require('node:fs');
const { BIN, startGateway, startFake, request, generate, until, TEST_KEY } = require('./lib.js');

// ASan holds freed blocks in a 256 MiB quarantine; a memory bound needs a small one.
const ASAN = fs.readFileSync(BIN).includes('__asan_init');
// ThreadSanitizer's shadow memory makes every allocation cost several times its size.
const TSAN = fs.readFileSync(BIN).includes('__tsan_init');

let up;
before(async () => {
    up = await startFake();
});
after(async () => {
    await up.close();
});

// Parses the text format into {"name{labels}": value}.
function parseMetrics(text) {
    const out = {};
    for (const line of text.split('\n')) {
        if (!line || line.startsWith('#')) continue;
        const i = line.lastIndexOf(' ');
        out[line.slice(0, i)] = Number(line.slice(i + 1));
    }
    return out;
}

async function scrape(gw, headers = {}) {
    const r = await request(`${gw.adminUrl}/metrics`, { headers });
    assert.equal(r.status, 200, r.body);
    return r;
}

const messages = (gw, content) =>
    request(`${gw.url}/v1/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
        body: { model: 'claude-haiku-4-5', max_tokens: 20, messages: [{ role: 'user', content }] },
    });

// A tail subscriber: collects parsed events; `pause()` stops reading the socket.
function subscribe(gw, query = '', headers = {}) {
    return new Promise((resolve, reject) => {
        const events = [];
        const req = http.get(`${gw.adminUrl}/tail?format=json${query}`, { headers, agent: false }, (res) => {
            let buf = '';
            const sub = { res, events, status: res.statusCode, raw: () => buf, close: () => req.destroy() };
            res.setEncoding('utf8');
            res.on('data', (d) => {
                buf += d;
                let i;
                while ((i = buf.indexOf('\n\n')) >= 0) {
                    const chunk = buf.slice(0, i);
                    buf = buf.slice(i + 2);
                    for (const line of chunk.split('\n')) if (line.startsWith('data: ')) events.push(JSON.parse(line.slice(6)));
                }
            });
            res.on('error', () => {});
            resolve(sub);
        });
        req.on('error', reject);
    });
}

test('metrics count a known mix exactly, in the text format promtool accepts', async () => {
    const gw = await startGateway({
        upstream: `http://127.0.0.1:${up.port}`,
        liftRateLimit: false,
        config: '[aigate]\nrate_limit = 1000\n[aigate.routes."/v1/messages"]\nrate_limit = 1\n',
    });
    try {
        // Every family is there before the first request.
        const empty = await scrape(gw);
        assert.equal(empty.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
        for (const fam of ['aigate_http_requests_total', 'aigate_http_request_duration_seconds', 'aigate_request_cpu_seconds',
            'aigate_upstream_requests_total', 'aigate_upstream_duration_seconds', 'aigate_upstream_retries_total',
            'aigate_tokens_total', 'aigate_cost_usd_total', 'aigate_cache_requests_total', 'aigate_ratelimit_rejections_total',
            'aigate_queue_depth', 'aigate_queue_wait_seconds', 'aigate_streams_active', 'aigate_connections_active',
            'aigate_usage_log_entries_total', 'aigate_usage_log_dropped_total', 'aigate_tail_dropped_total',
            'aigate_task_runs_total', 'aigate_config_reloads_total', 'process_resident_memory_bytes',
            'process_cpu_seconds_total', 'process_start_time_seconds', 'process_open_fds', 'aigate_cache_saved_usd_total']) {
            assert.match(empty.body, new RegExp(`^# HELP ${fam} .+\\n# TYPE ${fam} (counter|gauge|histogram)$`, 'm'), fam);
        }
        // Every answer is tallied as it comes, so the expected counts are exact.
        const tally = { gen200: 0, upstream200: 0, hits: 0, misses: 0, tokensIn: 0, tokensOut: 0 };
        const gen = async (body) => {
            const r = await generate(gw, body);
            if (r.status === 200) tally.gen200++;
            if (r.status === 200 && !body.stream) {
                if (r.json.cached) tally.hits++;
                else {
                    tally.misses++;
                    tally.upstream200++;
                    tally.tokensIn += r.json.usage.input_tokens;
                    tally.tokensOut += r.json.usage.output_tokens;
                }
            }
            return r;
        };
        for (const p of ['one', 'two', 'three']) assert.equal((await gen({ prompt: `metrics ${p}` })).status, 200);
        for (let i = 0; i < 200 && tally.hits === 0; i++) await gen({ prompt: 'metrics one' }); // the fill lands off the loop
        assert.equal(tally.hits, 1);
        assert.equal((await generate(gw, 'not json')).status, 400);
        assert.equal((await generate(gw, { prompt: '[[status:500]] upstream fails' })).status, 502);
        assert.equal((await gen({ prompt: 'metrics stream', stream: true })).status, 200);
        assert.equal((await messages(gw, 'first')).status, 200);
        assert.equal((await messages(gw, 'second')).status, 429);
        assert.equal((await messages(gw, 'third')).status, 429);
        assert.equal((await request(`${gw.url}/nope`)).status, 404);
        // Admin requests are not counted: scrape twice, nothing moves.
        await scrape(gw);
        const r = await scrape(gw);
        const m = parseMetrics(r.body);
        assert.equal(m['aigate_http_requests_total{route="/api/generate",status="200"}'], tally.gen200);
        assert.equal(m['aigate_http_requests_total{route="/api/generate",status="400"}'], 1);
        assert.equal(m['aigate_http_requests_total{route="/api/generate",status="502"}'], 1);
        assert.equal(m['aigate_http_requests_total{route="/v1/messages",status="200"}'], 1);
        assert.equal(m['aigate_http_requests_total{route="/v1/messages",status="429"}'], 2);
        assert.equal(m['aigate_http_requests_total{route="none",status="404"}'], 1);
        assert.equal(m['aigate_http_request_duration_seconds_count{route="/api/generate"}'], tally.gen200 + 2);
        assert.equal(m['aigate_request_cpu_seconds_count{route="/v1/messages"}'], 3);
        assert.ok(m['aigate_request_cpu_seconds_sum{route="/api/generate"}'] > 0);
        assert.equal(m['aigate_ratelimit_rejections_total{route="/v1/messages"}'], 2);
        assert.equal(m['aigate_ratelimit_rejections_total{route="/api/generate"}'], 0);
        assert.equal(m['aigate_cache_requests_total{result="hit"}'], 1);
        // Misses: the plain ones, the 502 and the stream; the messages all came after limits.
        assert.equal(m['aigate_cache_requests_total{result="miss"}'], tally.misses + 2 + 1);
        // Upstream calls with a 200: the plain misses, the stream, the one message.
        assert.equal(m['aigate_upstream_requests_total{model="claude-haiku-4-5",status="200"}'], tally.upstream200 + 2);
        assert.equal(m['aigate_upstream_requests_total{model="claude-haiku-4-5",status="500"}'], 1);
        assert.equal(m['aigate_upstream_duration_seconds_count{model="claude-haiku-4-5"}'], tally.upstream200 + 3);
        assert.ok(m['aigate_tokens_total{model="claude-haiku-4-5",type="input"}'] > tally.tokensIn, 'plus the stream and the message');
        assert.ok(m['aigate_tokens_total{model="claude-haiku-4-5",type="output"}'] > tally.tokensOut);
        assert.ok(m['aigate_cost_usd_total{model="claude-haiku-4-5"}'] > 0);
        assert.ok(m['aigate_cache_saved_usd_total'] > 0, 'the hit saved its cost');
        assert.equal(m['aigate_streams_active'], 0);
        assert.ok(m['aigate_connections_active'] >= 0);
        assert.ok(m['process_resident_memory_bytes'] > 1e6);
        assert.ok(m['process_open_fds'] > 3);
        const gen200 = tally.gen200;
        // Buckets are cumulative and end in +Inf = _count.
        const buckets = Object.keys(m).filter((k) => k.startsWith('aigate_http_request_duration_seconds_bucket{route="/api/generate"'));
        const values = buckets.map((k) => m[k]);
        for (let i = 1; i < values.length; i++) assert.ok(values[i] >= values[i - 1]);
        assert.equal(m['aigate_http_request_duration_seconds_bucket{route="/api/generate",le="+Inf"}'], gen200 + 2);
        const check = spawnSync('promtool', ['check', 'metrics'], { input: r.body, encoding: 'utf8' });
        assert.equal(check.status, 0, `promtool: ${check.stdout}${check.stderr}`);
    } finally {
        await gw.stop();
    }
});

test('an upstream key that a reload brings in is redacted in tail events too', async () => {
    const NEW_KEY = 'sk-ant-rotated-by-deploy-SECRET-42';
    const gw = await startGateway({ upstream: `http://127.0.0.1:${up.port}`, config: '[aigate]\n', env: { ROTATED_UPSTREAM_KEY: NEW_KEY } });
    try {
        fs.writeFileSync(require('node:path').join(gw.cwd, 'aigate.toml'), '[aigate]\nrate_limit = 1000000\napi_key_secret = "ROTATED_UPSTREAM_KEY"\n');
        const rl = await request(`${gw.adminUrl}/reload`, { method: 'POST' });
        assert.equal(rl.status, 200, rl.body);
        const sub = await subscribe(gw);
        const r = await generate(gw, { prompt: 'after the new key' }, { 'x-trace': NEW_KEY, 'x-old': TEST_KEY });
        await until(() => sub.events.some((e) => e.aigate.requestId === r.headers['x-request-id']), 5000, 'the event');
        const e = sub.events.find((x) => x.aigate.requestId === r.headers['x-request-id']);
        assert.equal(e.event.request.headers['x-trace'], 'REDACTED', 'the key the reload brought in');
        assert.equal(e.event.request.headers['x-old'], 'REDACTED', 'the key it started with');
        sub.close();
        assert.ok(!gw.stderr.includes(NEW_KEY));
    } finally {
        await gw.stop();
    }
});

test('a tail subscriber sees each request as a wrangler event, secrets redacted', async () => {
    const gw = await startGateway({ upstream: `http://127.0.0.1:${up.port}`, config: 'name = "tail-test"\n[aigate]\n' });
    try {
        const sub = await subscribe(gw);
        assert.equal(sub.status, 200);
        assert.match(sub.res.headers['content-type'], /^text\/event-stream/);
        const r = await generate(gw, { prompt: 'tail me' }, { authorization: 'Bearer sk-client-secret-1', 'x-api-key': 'sk-other-2', 'x-trace': TEST_KEY, 'x-plain': 'visible' });
        assert.equal(r.status, 200);
        await until(() => sub.events.some((e) => e.aigate.requestId === r.headers['x-request-id']), 5000, 'the event');
        const e = sub.events.find((x) => x.aigate.requestId === r.headers['x-request-id']);
        assert.equal(e.outcome, 'ok');
        assert.equal(e.scriptName, 'tail-test');
        assert.ok(Math.abs(e.eventTimestamp - Date.now()) < 60000);
        assert.equal(e.event.request.method, 'POST');
        assert.match(e.event.request.url, /^http:\/\/127\.0\.0\.1:\d+\/api\/generate$/);
        assert.equal(e.event.response.status, 200);
        assert.equal(e.event.request.headers.authorization, 'REDACTED');
        assert.equal(e.event.request.headers['x-api-key'], 'REDACTED');
        assert.equal(e.event.request.headers['x-trace'], 'REDACTED', 'a value equal to the upstream key');
        assert.equal(e.event.request.headers['x-plain'], 'visible');
        assert.deepEqual(e.logs, []);
        assert.deepEqual(e.exceptions, []);
        assert.equal(typeof e.wallTime, 'number');
        assert.equal(typeof e.cpuTime, 'number');
        const a = e.aigate;
        assert.equal(a.route, '/api/generate');
        assert.equal(a.client, '127.0.0.1');
        assert.equal(a.model, 'claude-haiku-4-5');
        assert.equal(a.inputTokens, r.json.usage.input_tokens);
        assert.equal(a.outputTokens, r.json.usage.output_tokens);
        assert.ok(a.costUsd > 0);
        assert.equal(a.cached, false);
        assert.equal(a.retries, 0);
        assert.equal(a.stream, false);
        assert.ok(a.upstreamMs >= 0);
        assert.ok(!sub.raw().includes('tail me') && !JSON.stringify(sub.events).includes('tail me'), 'no prompt in tail');
        assert.ok(!JSON.stringify(sub.events).includes(TEST_KEY), 'the upstream key never appears');
        assert.ok(!JSON.stringify(sub.events).includes('sk-client-secret-1'));
        sub.close();
    } finally {
        await gw.stop();
    }
});

test('tail filters run in the server', async () => {
    const gw = await startGateway({ upstream: `http://127.0.0.1:${up.port}` });
    try {
        const errors = await subscribe(gw, '&status=error');
        const gets = await subscribe(gw, '&method=GET');
        const search = await subscribe(gw, '&search=healthz');
        const ip = await subscribe(gw, '&ip=self');
        const other = await subscribe(gw, '&ip=192.0.2.1');
        const header = await subscribe(gw, '&header=x-team%3Ablue');
        const none = await subscribe(gw, '&sampling_rate=0.000001');
        const all = await subscribe(gw);
        const ok = await generate(gw, { prompt: 'filters ok' }, { 'x-team': 'blue' });
        const bad = await generate(gw, { prompt: '[[status:503]] filters fail' });
        const health = await request(`${gw.url}/healthz`);
        assert.deepEqual([ok.status, bad.status, health.status], [200, 502, 200]);
        // Each subscriber has its own queue and wake-up: wait for every one that gets events.
        await until(() => all.events.length >= 3 && ip.events.length >= 3 && errors.events.length >= 1 &&
            gets.events.length >= 1 && search.events.length >= 1 && header.events.length >= 1, 10000, 'every subscriber\'s events');
        const ids = (s) => s.events.map((e) => e.aigate.requestId);
        assert.deepEqual(ids(errors), [bad.headers['x-request-id']]);
        assert.equal(errors.events[0].outcome, 'exception');
        assert.equal(errors.events[0].exceptions.length, 1);
        assert.deepEqual(ids(gets), [health.headers['x-request-id']]);
        assert.deepEqual(ids(search), [health.headers['x-request-id']]);
        assert.equal(ip.events.length, 3, '--ip self is the subscriber\'s own address');
        assert.equal(other.events.length, 0);
        assert.deepEqual(ids(header), [ok.headers['x-request-id']]);
        assert.equal(none.events.length, 0);
        const badFilter = await request(`${gw.adminUrl}/tail?status=sometimes`);
        assert.equal(badFilter.status, 400);
        for (const s of [errors, gets, search, ip, other, header, none, all]) s.close();
    } finally {
        await gw.stop();
    }
});

test('a subscriber that stops reading loses events, counted, and never slows requests', async () => {
    const env = ASAN ? { ASAN_OPTIONS: `${process.env.ASAN_OPTIONS || 'detect_leaks=1'}:quarantine_size_mb=1` } : {};
    const gw = await startGateway({ upstream: `http://127.0.0.1:${up.port}`, threads: 2, env });
    try {
        // A raw socket that never reads: the server's writes fill it, then its queue.
        const sock = net.connect(gw.adminPort, '127.0.0.1');
        await new Promise((r) => sock.once('connect', r));
        sock.write('GET /tail?format=json HTTP/1.1\r\nHost: x\r\n\r\n');
        sock.pause();
        await until(async () => (await request(`${gw.adminUrl}/metrics`)).body.includes('aigate_tail_dropped_total'), 2000, 'admin');
        const rssBefore = parseMetrics((await scrape(gw)).body)['process_resident_memory_bytes'];
        // 3000 events of about 12 KB (36 MB): more than the socket buffers and the queue hold.
        const pad = { 'x-pad': 'p'.repeat(12000) };
        const N = 3000;
        for (let i = 0; i < N; i += 50) {
            const batch = await Promise.all(Array.from({ length: 50 }, () => request(`${gw.url}/healthz`, { headers: pad })));
            for (const r of batch) assert.equal(r.status, 200);
        }
        const m = parseMetrics((await scrape(gw)).body);
        assert.ok(m['aigate_tail_dropped_total'] > 0, 'events were dropped for the slow subscriber');
        const bound = (TSAN ? 512 : 64) << 20;
        assert.ok(m['process_resident_memory_bytes'] - rssBefore < bound, `memory stays bounded: ${m['process_resident_memory_bytes'] - rssBefore} bytes`);
        // Reading again: the first event after the loss says how many were lost.
        // (Tens of MB arrive: look at each chunk, with an overlap for a split match.)
        const chunks = [];
        sock.on('data', (d) => chunks.push(d.toString('latin1')));
        sock.resume();
        // The backlog drains first; a request made meanwhile may itself be dropped,
        // so ask until one gets through (each try bounded).
        let scanned = 0, carry = '', dropped = null, through = false;
        const scan = (id) => {
            let seen = false;
            for (; scanned < chunks.length; scanned++) {
                const s = carry + chunks[scanned];
                const m = /"dropped":(\d+)/.exec(s);
                if (m && dropped === null) dropped = Number(m[1]);
                seen = seen || s.includes(id);
                carry = s.slice(-200);
            }
            return seen;
        };
        for (let i = 0; i < 50 && !through; i++) {
            const id = (await request(`${gw.url}/healthz`)).headers['x-request-id'];
            through = await until(() => scan(id), 1000, 'an event').then(() => true, () => false);
        }
        assert.ok(through, 'events flow again once the subscriber reads');
        assert.ok(dropped > 0, 'a dropped count reaches the subscriber');
        // The one subscriber lost all the counted ones (and maybe some of the tries since).
        assert.ok(dropped >= m['aigate_tail_dropped_total'], `${dropped} >= ${m['aigate_tail_dropped_total']}`);
        sock.destroy();
    } finally {
        await gw.stop();
    }
});

test('readiness, health, and admin requests that are not counted', async () => {
    const gw = await startGateway({ upstream: `http://127.0.0.1:${up.port}` });
    try {
        const ready = await request(`${gw.adminUrl}/readyz`);
        assert.equal(ready.status, 200);
        assert.deepEqual(ready.json, { status: 'ready' });
        assert.equal((await request(`${gw.adminUrl}/healthz`)).status, 200);
        assert.equal((await request(`${gw.adminUrl}/nothing`)).status, 404);
        assert.equal((await request(`${gw.adminUrl}/metrics`, { method: 'POST' })).status, 405);
        const m = parseMetrics((await scrape(gw)).body);
        assert.equal(Object.keys(m).filter((k) => k.startsWith('aigate_http_requests_total')).length, 0);
    } finally {
        await gw.stop();
    }
});

test('off loopback the admin listener needs a token; with one, every request does', async () => {
    await assert.rejects(
        startGateway({ upstream: `http://127.0.0.1:${up.port}`, admin: '0.0.0.0:0' }),
        /AIGATE_ADMIN_TOKEN/
    );
    const gw = await startGateway({ upstream: `http://127.0.0.1:${up.port}`, env: { AIGATE_ADMIN_TOKEN: 'adm-token-123' } });
    try {
        const denied = await request(`${gw.adminUrl}/metrics`);
        assert.equal(denied.status, 401);
        assert.match(denied.headers['www-authenticate'], /(^|, )Bearer realm=/);
        assert.equal((await request(`${gw.adminUrl}/metrics`, { headers: { authorization: 'Bearer wrong' } })).status, 401);
        const ok = await scrape(gw, { authorization: 'Bearer adm-token-123' });
        assert.ok(!ok.body.includes('adm-token-123'));
        assert.equal((await request(`${gw.adminUrl}/healthz`)).status, 401, 'on loopback too');
    } finally {
        await gw.stop();
    }
    const wide = await startGateway({ upstream: `http://127.0.0.1:${up.port}`, admin: '0.0.0.0:0', env: { AIGATE_ADMIN_TOKEN: 'adm-2' } });
    await wide.stop();
});

test('an admin address that is taken stops startup, naming admin_listen', async () => {
    const blocker = net.createServer();
    await new Promise((r) => blocker.listen(0, '127.0.0.1', r));
    try {
        await assert.rejects(
            startGateway({ upstream: `http://127.0.0.1:${up.port}`, admin: `127.0.0.1:${blocker.address().port}` }),
            /admin_listen/
        );
    } finally {
        blocker.close();
    }
});

test('aigate tail against the real server: JSON and the seed\'s pretty lines', async () => {
    const { spawn } = require('node:child_process');
    const gw = await startGateway({ upstream: `http://127.0.0.1:${up.port}` });
    const run = (format) => {
        const p = spawn(BIN, ['tail', '--admin', gw.adminUrl, '--format', format, '--route', '/api/generate'], { cwd: gw.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
        const out = { text: '', err: '', exit: new Promise((r) => p.on('exit', (code, sig) => r({ code, sig }))) };
        p.stdout.on('data', (d) => (out.text += d));
        p.stderr.on('data', (d) => (out.err += d));
        out.proc = p;
        return out;
    };
    try {
        const json = run('json');
        const pretty = run('pretty');
        // Subscribed once each has a tail open on the server (the server counts them in no metric: poll by trying).
        let r;
        for (let i = 0; i < 100; i++) {
            r = await generate(gw, { prompt: `tail cli ${i}` });
            const id = r.headers['x-request-id'];
            try {
                await until(() => json.text.includes(id) && pretty.text.includes('POST /api/generate - 200 OK'), 300, 'both');
                break;
            } catch { /* not subscribed yet: try again */ }
        }
        const id = r.headers['x-request-id'];
        const line = json.text.split('\n').find((l) => l.includes(id));
        const e = JSON.parse(line);
        assert.equal(e.aigate.requestId, id);
        assert.equal(e.event.response.status, 200);
        assert.match(pretty.text, /^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\] POST \/api\/generate - 200 OK \(\d+ms\)\n  model=claude-haiku-4-5 tokens=\d+\+\d+ cost=\$\d+\.\d{4}$/m);
        // The route filter ran in the server: /healthz never reaches these tails.
        const h = await request(`${gw.url}/healthz`);
        const after = await generate(gw, { prompt: 'tail cli last' });
        await until(() => json.text.includes(after.headers['x-request-id']), 5000, 'the last event');
        assert.ok(!json.text.includes(h.headers['x-request-id']));
        json.proc.kill('SIGINT');
        pretty.proc.kill('SIGINT');
        assert.deepEqual(await json.exit, { code: 0, sig: null });
        assert.deepEqual(await pretty.exit, { code: 0, sig: null });
    } finally {
        await gw.stop();
    }
});

test('GET /stats answers from the usage log, by any grouping', async () => {
    const gw = await startGateway({ upstream: `http://127.0.0.1:${up.port}`, config: '[aigate]\nusage_log_flush = 0.1\n' });
    try {
        const sent = [];
        for (const p of ['s one', 's two', 's three']) sent.push(await generate(gw, { prompt: p }));
        sent.push(await generate(gw, { prompt: '[[status:500]] s fails' }));
        const msg = await messages(gw, 's message');
        let st;
        await until(async () => {
            st = (await request(`${gw.adminUrl}/stats?since=1h`)).json;
            return st && st.requests === 5;
        }, 10000, 'five logged requests');
        assert.equal(st.errors, 1);
        assert.equal(st.errorRate, 0.2);
        assert.equal(st.upstreamRequests, 7); // the 500 was tried 1 + upstream_retries (2) times
        const sum = (f) => sent.slice(0, 3).reduce((n, r) => n + r.json.usage[f], 0) + msg.json.usage[f];
        assert.equal(st.tokens.input, sum('input_tokens'));
        assert.equal(st.tokens.output, sum('output_tokens'));
        assert.ok(st.costUsd > 0);
        assert.ok(st.latencyMs.p99 >= st.latencyMs.p50);
        assert.ok(st.cpuMs.p50 > 0, 'CPU time reaches the log');
        const byRoute = (await request(`${gw.adminUrl}/stats?since=1h&by=route`)).json;
        const routes = Object.fromEntries(byRoute.groups.map((g) => [g.key, g.requests]));
        assert.deepEqual(routes, { '/api/generate': 4, '/v1/messages': 1 });
        const byStatus = (await request(`${gw.adminUrl}/stats?since=1h&by=status`)).json;
        assert.deepEqual(Object.fromEntries(byStatus.groups.map((g) => [g.key, g.requests])), { 200: 4, 502: 1 });
        assert.equal((await request(`${gw.adminUrl}/stats?since=forever`)).status, 400);
        assert.equal((await request(`${gw.adminUrl}/stats?by=weather`)).status, 400);
    } finally {
        await gw.stop();
    }
});

// SPDX-License-Identifier: MIT
//
// y_redis.test.js: several instances on one real redis-server (platform.md
// section 7): the per-client rate limit is exact across two instances, Redis
// killed or frozen under load answers per redis_fail (closed: 503 with
// Retry-After; open: served) without a hang or a crash, /readyz says so, and
// Redis back is used again within seconds, without a restart; an answer cached
// by one instance is a hit on the other; a KV binding on Redis is one namespace
// for every instance; a scheduled time runs on one instance.
'use strict';

const { test, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const { spawn, spawnSync } = require('node:child_process');
const path = require('node:path');
const net = require('node:net');
const os = require('node:os');

const { BIN, startGateway, startFake, request, generate, until, tmpdir, freePort } = require('./lib.js');

let up;
let redis; // { proc, port, exited }
// The run-lock pair: its own Redis (never flushed or killed) and upstream, started
// first so that a minute tick comes while the other tests run.
let lock = {};


// One RESP exchange on a fresh connection: resolves the first reply line, or
// null when Redis cannot be reached within the timeout.
function redisCommand(port, line, timeoutMs = 500) {
    return new Promise((resolve) => {
        const sock = net.connect(port, '127.0.0.1');
        let got = '';
        const done = (v) => {
            clearTimeout(timer);
            sock.destroy();
            resolve(v);
        };
        const timer = setTimeout(() => done(null), timeoutMs);
        sock.on('connect', () => sock.write(line + '\r\n'));
        sock.on('data', (d) => {
            got += d.toString('latin1');
            if (got.includes('\r\n')) done(got.slice(0, got.indexOf('\r\n')));
        });
        sock.on('error', () => done(null));
    });
}

// GET key: resolves its value (a bulk string), or null for none.
function redisGet(port, key, timeoutMs = 1000) {
    return new Promise((resolve, reject) => {
        const sock = net.connect(port, '127.0.0.1');
        let got = Buffer.alloc(0);
        const timer = setTimeout(() => {
            sock.destroy();
            reject(new Error('redis GET timed out'));
        }, timeoutMs);
        sock.on('connect', () => sock.write(`GET ${key}\r\n`));
        sock.on('data', (d) => {
            got = Buffer.concat([got, d]);
            const text = got.toString('utf8');
            const m = /^\$(-?\d+)\r\n/.exec(text);
            if (!m) return;
            if (m[1] === '-1' || got.length >= m[0].length + Number(m[1]) + 2) {
                clearTimeout(timer);
                sock.destroy();
                resolve(m[1] === '-1' ? null : got.subarray(m[0].length, m[0].length + Number(m[1])).toString('utf8'));
            }
        });
        sock.on('error', reject);
    });
}

async function startRedis(port) {
    const dir = tmpdir();
    const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], {
        stdio: 'ignore',
    });
    const r = { proc, port, exited: false };
    proc.on('exit', () => (r.exited = true));
    await until(async () => (await redisCommand(port, 'PING')) === '+PONG', 10000, 'redis-server to answer PING');
    return r;
}

async function stopRedis(r) {
    if (r.exited) return;
    const gone = new Promise((resolve) => r.proc.on('exit', resolve));
    r.proc.kill('SIGKILL');
    await gone;
}

function config(port, extra = '', limit = 10) {
    return `
[aigate]
rate_limit = ${limit}
rate_period = 3600
redis_timeout = 0.3
${extra}

[aigate.redis]
url = "redis://127.0.0.1:${port}/0"
`;
}

const prompt = (i) => ({ prompt: `redis test ${i} ${Math.random()}` });

before(async () => {
    up = await startFake();
    redis = await startRedis(await freePort());
    lock.up = await startFake();
    lock.redis = await startRedis(await freePort());
    const cfg = `[triggers]
crons = ["* * * * *"]
[aigate.redis]
url = "redis://127.0.0.1:${lock.redis.port}/0"
[[aigate.tasks]]
name = "minutely"
cron = "* * * * *"
prompt = "a scheduled run"
`;
    lock.a = await startGateway({ upstream: lock.up.url, config: cfg });
    lock.b = await startGateway({ upstream: lock.up.url, config: cfg });
});

// Each test starts on an empty Redis (the limit's counts are per client: 127.0.0.1).
beforeEach(async () => {
    assert.equal(await redisCommand(redis.port, 'FLUSHALL'), '+OK');
});

after(async () => {
    for (const g of [lock.a, lock.b]) if (g && !g.exited) g.proc.kill('SIGKILL');
    for (const r of [redis, lock.redis]) if (r) await stopRedis(r);
    for (const u of [up, lock.up]) if (u) await u.close();
});

test('a KV binding with backend = "redis" is one namespace for every instance: aigate kv, task prompts and outputs', async () => {
    const top = `[triggers]
crons = ["0 3 * * *"]
[[kv_namespaces]]
binding = "SHARED"
id = "shared"
backend = "redis"
[[kv_namespaces]]
binding = "MINE"
id = "mine"
`;
    const task = `
[[aigate.tasks]]
name = "notes-digest"
cron = "0 3 * * *"
prompt = "Digest these notes: {{kv:SHARED:notes}}"
output.kv = "SHARED:digest:latest"
`;
    const cfg = top + config(redis.port) + task;
    const a = await startGateway({ upstream: up.url, config: cfg, threads: 1 });
    const b = await startGateway({ upstream: up.url, config: cfg, threads: 1 });
    const kv = (g, ...args) => spawnSync(BIN, ['kv', ...args, '--config', path.join(g.cwd, 'aigate.toml')], { cwd: g.cwd, encoding: 'utf8' });
    try {
        assert.notEqual(a.cwd, b.cwd, 'two data folders');
        // Written through b's configuration, read through a's, with metadata and expiry.
        const note = `the launch went well ${Math.random()}`;
        let r = kv(b, 'key', 'put', 'notes', note, '--binding', 'SHARED', '--metadata', '{"by":"b"}', '--ttl', '600');
        assert.equal(r.status, 0, r.stderr);
        r = kv(a, 'key', 'get', 'notes', '--binding', 'SHARED', '--json');
        assert.equal(r.status, 0, r.stderr);
        const got = JSON.parse(r.stdout);
        assert.equal(got.value, note);
        assert.deepEqual(got.metadata, { by: 'b' });
        assert.ok(got.expiration > Date.now() / 1000 + 500 && got.expiration <= Date.now() / 1000 + 601, r.stdout);
        assert.equal(await redisGet(redis.port, 'aigate:kv:SHARED:notes'), note);
        // A binding left on LMDB stays each instance's own.
        assert.equal(kv(a, 'namespace', 'create', 'MINE').status, 0);
        assert.equal(kv(a, 'key', 'put', 'local', 'only-a', '--binding', 'MINE').status, 0);
        assert.equal(kv(b, 'namespace', 'create', 'MINE').status, 0);
        assert.equal(kv(b, 'key', 'get', 'local', '--binding', 'MINE').status, 1);
        // Nothing to create on Redis; the namespace list names both kinds.
        r = kv(a, 'namespace', 'create', 'SHARED');
        assert.equal(r.status, 0, r.stderr);
        assert.match(r.stdout, /is on Redis/);
        r = kv(b, 'namespace', 'list', '--json');
        assert.equal(r.status, 0, r.stderr);
        assert.deepEqual(JSON.parse(r.stdout).map((n) => n.binding), ['CACHE', 'MINE', 'SHARED']);
        // The task runs on a: its prompt reads the note b wrote, its output lands where b reads it.
        const before = up.stats().requests;
        const run = await request(`${a.adminUrl}/__scheduled?cron=0+3+*+*+*`, { method: 'POST' });
        assert.equal(run.status, 200, run.body);
        let out;
        await until(() => {
            out = kv(b, 'key', 'get', 'digest:latest', '--binding', 'SHARED');
            return out.status === 0;
        }, 15000, 'the task output on Redis');
        assert.ok(out.stdout.length > 0);
        assert.equal(up.stats().requests - before, 1);
        const sent = up.stats().bodies.map((x) => JSON.stringify(x)).filter((x) => x.includes(note));
        assert.equal(sent.length, 1, 'the prompt held the note from Redis');
        r = kv(a, 'key', 'list', '--binding', 'SHARED', '--json');
        assert.deepEqual(JSON.parse(r.stdout).keys.map((k) => k.name), ['digest:latest', 'notes']);
        assert.equal(kv(a, 'key', 'delete', 'notes', '--binding', 'SHARED').status, 0);
        assert.equal(kv(b, 'key', 'get', 'notes', '--binding', 'SHARED').status, 1);
        assert.equal(await redisGet(redis.port, 'aigate:kv:SHARED:notes'), null);
    } finally {
        await a.stop();
        await b.stop();
    }
    // Redis down: the command says so, at once, and exits 1.
    const dead = tmpdir();
    fs.writeFileSync(path.join(dead, 'aigate.toml'), top + config(await freePort()));
    const t0 = Date.now();
    const r = spawnSync(BIN, ['kv', 'key', 'get', 'notes', '--binding', 'SHARED', '--config', path.join(dead, 'aigate.toml')], { cwd: dead, encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /Redis is unreachable|Redis did not answer/);
    assert.ok(Date.now() - t0 < 5000);
});

test('the per-client limit is exact across two instances on one Redis', async () => {
    const a = await startGateway({ upstream: up.url, config: config(redis.port), threads: 2 });
    const b = await startGateway({ upstream: up.url, config: config(redis.port), threads: 2 });
    try {
        await until(async () => (await request(`${a.adminUrl}/readyz`)).status === 200, 5000, 'a ready');
        const ready = await request(`${b.adminUrl}/readyz`);
        assert.equal(ready.status, 200);
        assert.deepEqual(ready.json, { status: 'ready', redis: 'up' });
        // 30 at once, split between the two: exactly the limit (10) passes.
        const all = await Promise.all(Array.from({ length: 30 }, (_, i) => generate(i % 2 ? a : b, prompt(i))));
        const ok = all.filter((r) => r.status === 200);
        const limited = all.filter((r) => r.status === 429);
        assert.equal(ok.length, 10, JSON.stringify(all.map((r) => r.status)));
        assert.equal(limited.length, 20);
        for (const r of limited) {
            assert.match(r.json.error, /Rate limit exceeded\. Max 10 requests\/hour\./);
            assert.ok(Number(r.headers['retry-after']) >= 1);
            assert.equal(r.headers['ratelimit-remaining'], '0');
        }
        // The next request on either is refused too.
        assert.equal((await generate(a, prompt('a'))).status, 429);
        assert.equal((await generate(b, prompt('b'))).status, 429);
        // The state is in Redis, under the limiter's name and numbers.
        const keys = await redisCommand(redis.port, 'KEYS aigate:rl:*');
        assert.match(keys, /^\*[1-9]/, keys);
    } finally {
        await a.stop();
        await b.stop();
    }
});

test('a response cached by one instance is a hit on the other, with a Redis TTL', async () => {
    const a = await startGateway({ upstream: up.url, config: config(redis.port, 'cache_ttl = 120'), threads: 2 });
    const b = await startGateway({ upstream: up.url, config: config(redis.port, 'cache_ttl = 120'), threads: 2 });
    try {
        const body = { prompt: `shared cache ${Date.now()} ${Math.random()}` };
        const before = up.stats().requests;
        const first = await generate(a, body);
        assert.equal(first.status, 200, first.body);
        assert.equal(first.json.cached, false);
        // The fill is pipelined after the answer: poll the other instance until it hits.
        let hit;
        await until(async () => {
            hit = await generate(b, body);
            return hit.status === 200 && hit.json.cached === true;
        }, 5000, 'a hit on the other instance');
        assert.equal(hit.json.output, first.json.output);
        assert.equal(up.stats().requests - before, 1, 'one upstream call for both instances');
        // Streamed from the same entry too, on the first instance.
        const s = await generate(a, { ...body, stream: true });
        assert.equal(s.status, 200);
        assert.match(s.body, /event: message_stop/);
        assert.equal(up.stats().requests - before, 1);
        // The entry is in Redis under the cache binding, expiring as cache_ttl says.
        const keys = await redisCommand(redis.port, 'KEYS aigate:kv:CACHE:gen:v1:*');
        assert.match(keys, /^\*[1-9]/, keys);
        const all = await new Promise((resolve) => {
            const sock = net.connect(redis.port, '127.0.0.1');
            let got = '';
            sock.on('connect', () => sock.write('KEYS aigate:kv:CACHE:gen:v1:*\r\n'));
            sock.on('data', (d) => {
                got += d.toString('latin1');
                const m = /^\*(\d+)\r\n/.exec(got);
                if (m && got.split('\r\n').length >= 2 + 2 * Number(m[1])) {
                    sock.destroy();
                    resolve(got.split('\r\n').filter((l, i) => i > 0 && i % 2 === 0));
                }
            });
        });
        let ttls = [];
        for (const k of all) ttls.push(Number((await redisCommand(redis.port, `TTL ${k}`)).slice(1)));
        assert.ok(ttls.length > 0 && ttls.every((t) => t > 0 && t <= 120), JSON.stringify(ttls));
        // It is the KV namespace CACHE on Redis: `aigate kv` lists it from the other instance.
        const listed = spawnSync(BIN, ['kv', 'key', 'list', '--binding', 'CACHE', '--json', '--config', path.join(b.cwd, 'aigate.toml')], { cwd: b.cwd, encoding: 'utf8' });
        assert.equal(listed.status, 0, listed.stderr);
        const names = JSON.parse(listed.stdout).keys.map((k) => k.name);
        assert.deepEqual(names, all.map((k) => k.slice('aigate:kv:CACHE:'.length)).sort());
        assert.ok(JSON.parse(listed.stdout).keys.every((k) => k.expiration > Date.now() / 1000), listed.stdout);
        // cache_backend = "local" keeps it on the instance: a third instance misses.
        const c = await startGateway({ upstream: up.url, config: config(redis.port, 'cache_backend = "local"'), threads: 1 });
        try {
            const r = await generate(c, body);
            assert.equal(r.status, 200);
            assert.equal(r.json.cached, false);
        } finally {
            await c.stop();
        }
    } finally {
        await a.stop();
        await b.stop();
    }
});

test('identical requests in flight on two instances make one upstream call; a failed one lets the next claim it', async () => {
    const extra = 'cache_ttl = 120\nupstream_retries = 0';
    const a = await startGateway({ upstream: up.url, config: config(redis.port, extra, 100000), threads: 2 });
    const b = await startGateway({ upstream: up.url, config: config(redis.port, extra, 100000), threads: 2 });
    try {
        // Slow answers: every request is in flight before the first is answered.
        up.setKnobs({ latencyMs: 500 });
        const before = up.stats().requests;
        let rs;
        try {
            const body = { prompt: `coalesced across instances ${Math.random()}` };
            rs = await Promise.all(Array.from({ length: 10 }, (_, i) => generate(i % 2 ? a : b, body)));
        } finally {
            up.resetKnobs();
        }
        assert.deepEqual(rs.map((r) => r.status), Array(10).fill(200));
        assert.equal(new Set(rs.map((r) => r.json.output)).size, 1);
        assert.equal(up.stats().requests - before, 1, 'one upstream call for the ten, across both instances');
        // The claim is gone once the answer is stored.
        assert.equal(await redisCommand(redis.port, 'KEYS aigate:flight:*'), '*0');

        // The claimant's call fails (a 500, not cached): the waiters on the other
        // instance then claim it in turn, and one call answers them all.
        up.setKnobs({ latencyMs: 400, script: [500, 200, 200, 200] });
        const body = { prompt: `a failing claimant ${Math.random()}` };
        const calls = up.stats().requests;
        const first = generate(a, body);
        await until(() => up.stats().requests > calls, 5000, 'the claimant at the upstream');
        const others = await Promise.all([1, 2, 3].map(() => generate(b, body)));
        assert.equal((await first).status, 502);
        assert.deepEqual(others.map((r) => r.status), [200, 200, 200]);
        assert.equal(up.stats().requests - calls, 2, 'the failed call and one more');
    } finally {
        up.resetKnobs();
        await a.stop();
        await b.stop();
    }
});

test('a claimant instance that dies holds the others for seconds, not the upstream deadline', async () => {
    const extra = 'cache_ttl = 120\nupstream_retries = 0';
    const a = await startGateway({ upstream: up.url, config: config(redis.port, extra, 100000), threads: 1 });
    const b = await startGateway({ upstream: up.url, config: config(redis.port, extra, 100000), threads: 1 });
    try {
        up.setKnobs({ latencyMs: 30000 });
        const body = { prompt: `a claimant that dies ${Math.random()}` };
        const calls = up.stats().requests;
        generate(a, body).catch(() => {}); // its answer never comes: a is killed
        await until(() => up.stats().requests > calls, 5000, 'the claimant at the upstream');
        const t0 = Date.now();
        const waiting = generate(b, body);
        // Whether b asked before or after a dies, it finds a's claim and waits.
        assert.match(await redisCommand(redis.port, 'KEYS aigate:flight:*'), /^\*1/, 'a holds the claim');
        a.proc.kill('SIGKILL');
        up.setKnobs({ latencyMs: 0 });
        const r = await waiting;
        assert.equal(r.status, 200, r.body);
        const took = Date.now() - t0;
        assert.ok(took < 12000, `b answered ${took} ms after it asked (claims live 5 s, renewed every 2 s)`);
        assert.equal(up.stats().requests - calls, 2, 'the dead claimant\'s call and b\'s own');
    } finally {
        up.resetKnobs();
        if (!a.exited) a.proc.kill('SIGKILL');
        await b.stop();
    }
});

test("an upstream window spent on one instance holds the other's requests for its reset too", async () => {
    const a = await startGateway({ upstream: up.url, config: config(redis.port, '', 100000), threads: 2 });
    const b = await startGateway({ upstream: up.url, config: config(redis.port, '', 100000), threads: 2 });
    try {
        // The fake's window: 5 requests per 1.5 s, counted down in anthropic-ratelimit-*.
        up.setKnobs({ rateWindow: { limit: 5, windowMs: 1500 } });
        up.resetStats();
        for (let i = 0; i < 5; i++) assert.equal((await generate(a, prompt(`spend ${i}`))).status, 200);
        // a's fifth answer said "0 remaining": the reset is on Redis now.
        await until(async () => /^\$\d+/.test(await redisCommand(redis.port, 'GET aigate:upstream:spent:claude-haiku-4-5')), 2000, 'the spent window on Redis');
        // b never saw those headers; its requests wait for the reset all the same.
        const res = await Promise.all(Array.from({ length: 8 }, (_, i) => generate(b, prompt(`after ${i}`))));
        for (const r of res) assert.equal(r.status, 200, r.body);
        assert.equal(up.stats().spentHits, 0, 'no request of b reached the spent window');
    } finally {
        up.resetKnobs();
        await a.stop();
        await b.stop();
    }
});

test('a daily budget shared by two instances on Redis never overshoots, and settles to the real cost', async () => {
    const MODEL = 'claude-haiku-4-5';
    const N = 4;
    const maxTokens = 10;
    const bodyOf = (i) => JSON.stringify({ model: MODEL, max_tokens: maxTokens, messages: [{ role: 'user', content: `shared budget ${String(i).padStart(3, '0')}` }] });
    const worst = (Buffer.byteLength(bodyOf(0)) * 1 + maxTokens * 100) / 1e6;
    const budget = (N + 0.5) * worst; // N fit at their worst case, N + 1 do not
    const extra = `cache = false\nbudget_daily_usd = ${budget.toFixed(9)}\n[aigate.prices]\n"${MODEL}" = { input = 1, output = 100 }`;
    const a = await startGateway({ upstream: up.url, config: config(redis.port, extra, 100000), threads: 2 });
    const b = await startGateway({ upstream: up.url, config: config(redis.port, extra, 100000), threads: 2 });
    try {
        const send = (g, i) => request(`${g.url}/v1/messages`, {
            method: 'POST', body: bodyOf(i),
            headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
        });
        // Slow answers: nothing settles before every request has tried.
        up.setKnobs({ latencyMs: 600 });
        const before = up.stats().requests;
        let rs;
        try {
            rs = await Promise.all(Array.from({ length: 3 * N }, (_, i) => send(i % 2 ? a : b, i)));
        } finally {
            up.resetKnobs();
        }
        const ok = rs.filter((r) => r.status === 200);
        assert.equal(ok.length, N, rs.map((r) => r.status).join(','));
        assert.equal(up.stats().requests - before, N, 'exactly N reached the upstream across both');
        for (const r of rs.filter((x) => x.status !== 200)) {
            assert.equal(r.status, 429);
            assert.equal(r.json.error.message, 'Budget exceeded');
            assert.ok(Number(r.headers['retry-after']) >= 1);
        }
        // Settled to the real cost: the day's spend in Redis is what the N answers cost.
        const dayKey = await new Promise((resolve) => {
            const sock = net.connect(redis.port, '127.0.0.1');
            let got = '';
            sock.on('connect', () => sock.write('KEYS aigate:budget:global:day:*\r\n'));
            sock.on('data', (d) => {
                got += d.toString('latin1');
                const m = /^\*1\r\n\$\d+\r\n([^\r]+)\r\n/.exec(got);
                if (m) {
                    sock.destroy();
                    resolve(m[1]);
                }
            });
        });
        let spent = 0;
        await until(async () => {
            spent = Number(await redisGet(redis.port, dayKey)) / 1e9;
            return spent < N * worst - 1e-9;
        }, 5000, 'the settles');
        assert.ok(spent > 0 && spent <= budget, `spent ${spent} of ${budget}`);
        // What the settles gave back admits more, on either instance.
        const more = await send(a, 100);
        assert.equal(more.status, 200, more.body);
    } finally {
        await a.stop();
        await b.stop();
    }
});

// libfaketime (Debian's libfaketime) shifts one instance's wall clock by a day
// (its monotonic clock stays true). The limiter and the budgets read the time
// from Redis (TIME in their scripts), so the two still count one window: with
// their own clocks, the shifted one would see a refilled limit and another
// day's budget, and let both through again.
// Not under ThreadSanitizer: libfaketime wraps pthread_cond_timedwait and calls
// the real one past TSan's interceptor, which then sees the wait's mutex locked
// twice (a report about the two tools, not about aigate).
const FAKETIME_LIB = ['/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1'].find((f) => fs.existsSync(f));
const FAKETIME_SKIP = !FAKETIME_LIB ? 'no libfaketime' : process.env.TSAN_OPTIONS ? 'libfaketime hides waits from TSan' : false;
test('two instances whose clocks differ by a day count one limit and one budget', { skip: FAKETIME_SKIP }, async () => {
    const MODEL = 'claude-haiku-4-5';
    const maxTokens = 10;
    const bodyOf = (i) => JSON.stringify({ model: MODEL, max_tokens: maxTokens, messages: [{ role: 'user', content: `clock skew ${String(i).padStart(3, '0')}` }] });
    const worst = (Buffer.byteLength(bodyOf(0)) * 1 + maxTokens * 100) / 1e6;
    const budget = 3.5 * worst; // three fit at their worst case, a fourth does not
    const extra = `cache = false\nbudget_daily_usd = ${budget.toFixed(9)}\n[aigate.prices]\n"${MODEL}" = { input = 1, output = 100 }`;
    const skewed = {
        LD_PRELOAD: FAKETIME_LIB, FAKETIME: '+1d', FAKETIME_DONT_FAKE_MONOTONIC: '1',
        // ASan checks that its runtime is the first library: libfaketime comes first here.
        ASAN_OPTIONS: `${process.env.ASAN_OPTIONS || 'detect_leaks=1'}:verify_asan_link_order=0`,
    };
    const a = await startGateway({ upstream: up.url, config: config(redis.port, '', 4).replace('rate_period = 3600', 'rate_period = 60'), threads: 1 });
    const b = await startGateway({ upstream: up.url, config: config(redis.port, '', 4).replace('rate_period = 3600', 'rate_period = 60'), threads: 1, env: skewed });
    try {
        // The limit (4 a minute): two on each, then neither passes.
        for (const g of [a, a, b, b]) assert.equal((await generate(g, prompt('skew'))).status, 200);
        const [ta, tb] = [a.accessLog()[0].time, b.accessLog()[0].time];
        assert.ok(Date.parse(tb) - Date.parse(ta) > 23 * 3600e3, `b's clock is a day ahead (${ta} / ${tb})`);
        assert.equal((await generate(b, prompt('skew b'))).status, 429, 'b sees a\'s two');
        assert.equal((await generate(a, prompt('skew a'))).status, 429, 'a sees b\'s two');
    } finally {
        await a.stop();
        await b.stop();
    }
    assert.equal(await redisCommand(redis.port, 'FLUSHALL'), '+OK');
    const c = await startGateway({ upstream: up.url, config: config(redis.port, extra, 100000), threads: 1 });
    const d = await startGateway({ upstream: up.url, config: config(redis.port, extra, 100000), threads: 1, env: skewed });
    try {
        const send = (g, i) => request(`${g.url}/v1/messages`, {
            method: 'POST', body: bodyOf(i),
            headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
        });
        // One day's budget: three answers in all, whichever instance (and day) asks.
        // Slow answers: nothing settles before every request has tried.
        up.setKnobs({ latencyMs: 600 });
        let rs;
        try {
            rs = await Promise.all(Array.from({ length: 9 }, (_, i) => send(i % 2 ? c : d, i)));
        } finally {
            up.resetKnobs();
        }
        assert.equal(rs.filter((r) => r.status === 200).length, 3, rs.map((r) => r.status).join(','));
        assert.equal(rs.filter((r) => r.status === 429).length, 6);
    } finally {
        await c.stop();
        await d.stop();
    }
});

test("a key's rpm is exact across two instances: its name is the count", async () => {
    const extra = 'cache = false\nauth = "required"';
    const a = await startGateway({ upstream: up.url, config: config(redis.port, extra, 100000), threads: 2 });
    const b = await startGateway({ upstream: up.url, config: config(redis.port, extra, 100000), threads: 2 });
    try {
        // One key, made through a, reaches b through Redis; its name is one count there.
        const r = spawnSync(BIN, ['keys', 'create', 'shared', '--rpm', '3', '--json', '--config', path.join(a.cwd, 'aigate.toml')], { cwd: a.cwd, encoding: 'utf8' });
        assert.equal(r.status, 0, r.stderr);
        const key = JSON.parse(r.stdout).key;
        await until(() => /keys on Redis: 1 record imported/.test(b.stderr), 5000, 'b to import the key');
        const rs = await Promise.all(Array.from({ length: 10 }, (_, i) => generate(i % 2 ? a : b, prompt(`rpm ${i}`), { authorization: `Bearer ${key}` })));
        const ok = rs.filter((r) => r.status === 200);
        assert.equal(ok.length, 3, rs.map((r) => r.status).join(','));
        for (const r of rs.filter((x) => x.status !== 200)) {
            assert.equal(r.status, 429);
            assert.match(r.json.error, /Max 3 requests\/minute for this key/);
        }
    } finally {
        await a.stop();
        await b.stop();
    }
});

test('a key made or rotated through one instance works on the other within seconds; the key never reaches Redis', async () => {
    const extra = 'cache = false\nauth = "required"';
    const a = await startGateway({ upstream: up.url, config: config(redis.port, extra, 100000), threads: 2 });
    const b = await startGateway({ upstream: up.url, config: config(redis.port, extra, 100000), threads: 2 });
    const cli = (g, args) => spawnSync(BIN, ['keys', ...args, '--config', path.join(g.cwd, 'aigate.toml')], { cwd: g.cwd, encoding: 'utf8' });
    const status = async (g, key) => (await generate(g, prompt(`k ${Date.now()}`), { authorization: `Bearer ${key}` })).status;
    try {
        const made = cli(a, ['create', 'roamer', '--json']);
        assert.equal(made.status, 0, made.stderr);
        const key = JSON.parse(made.stdout).key;
        assert.equal(await status(a, key), 200);
        await until(async () => (await status(b, key)) === 200, 5000, 'b to take the key made through a');
        // b's own store has it now: its CLI lists it.
        assert.match(cli(b, ['list']).stdout, /roamer/);
        // Rotated through b: the new key works on a, the old one fails there.
        const rot = cli(b, ['rotate', 'roamer', '--json']);
        assert.equal(rot.status, 0, rot.stderr);
        const key2 = JSON.parse(rot.stdout).key;
        await until(async () => (await status(a, key2)) === 200, 5000, 'a to take the rotated key');
        assert.equal(await status(a, key), 401);
        assert.equal(await status(b, key), 401);
        // What Redis holds: hashes and limits, never a key.
        const dump = await redisCommand(redis.port, 'HGETALL aigate:keys:records', 2000);
        for (const k of [key, key2]) {
            assert.ok(!dump.includes(k) && !dump.includes(Buffer.from(k).toString('hex')), 'a key on Redis');
        }
    } finally {
        await a.stop();
        await b.stop();
    }
});

test('keys made before Redis was set reach the other instances with `aigate keys publish`', async () => {
    const extra = 'cache = false\nauth = "required"';
    const a = await startGateway({ upstream: up.url, config: config(redis.port, extra, 100000), threads: 1 });
    const b = await startGateway({ upstream: up.url, config: config(redis.port, extra, 100000), threads: 1 });
    // Made with a configuration that has no Redis: the key stays in a's data folder.
    const local = (g, args) => spawnSync(BIN, ['keys', ...args, '--data-dir', path.join(g.cwd, '.aigate'), '--config', path.join(g.cwd, 'none.toml')], { cwd: g.cwd, encoding: 'utf8' });
    const cli = (g, args) => spawnSync(BIN, ['keys', ...args, '--config', path.join(g.cwd, 'aigate.toml')], { cwd: g.cwd, encoding: 'utf8' });
    const status = async (g, key) => (await generate(g, prompt(`p ${Date.now()}`), { authorization: `Bearer ${key}` })).status;
    try {
        for (const g of [a, b]) fs.writeFileSync(path.join(g.cwd, 'none.toml'), '[aigate]\nauth = "required"\n');
        const made = local(a, ['create', 'early', '--json']);
        assert.equal(made.status, 0, made.stderr);
        const key = JSON.parse(made.stdout).key;
        const clash = local(b, ['create', 'twin', '--json']);
        assert.equal(clash.status, 0, clash.stderr);
        const twinA = local(a, ['create', 'twin']); // the same name, another key
        assert.equal(twinA.status, 0, twinA.stderr);
        assert.equal(await status(a, key), 200);
        assert.equal(await status(b, key), 401);
        assert.equal(await redisCommand(redis.port, 'HLEN aigate:keys:records'), ':0');
        let r = cli(a, ['publish', '--json']);
        assert.equal(r.status, 0, r.stderr);
        assert.deepEqual(JSON.parse(r.stdout), { published: 2, unchanged: 0, differ: 0 });
        await until(async () => (await status(b, key)) === 200, 5000, 'b to take the published key');
        // One name is one key everywhere: Redis's "twin" (a's) replaced b's own, as a
        // rotation elsewhere would.
        await until(async () => (await status(b, twinA.stdout.trim())) === 200, 5000, 'b to take a\'s twin');
        assert.equal(await status(b, JSON.parse(clash.stdout).key), 401);
        r = cli(a, ['publish']);
        assert.equal(r.status, 0, r.stderr);
        assert.match(r.stdout, /Published 0 keys to Redis; 2 already there; 0 held otherwise/);
        // A record Redis holds otherwise (here: a's "early" rotated on a with Redis
        // out of reach, so only locally) is left as it is and named.
        const rot = local(a, ['rotate', 'early']);
        assert.equal(rot.status, 0, rot.stderr);
        r = cli(a, ['publish', '--json']);
        assert.equal(r.status, 1);
        assert.match(r.stderr, /key early: Redis holds another record of that name/);
        assert.deepEqual(JSON.parse(r.stdout), { published: 0, unchanged: 1, differ: 1 });
        assert.equal(await redisCommand(redis.port, 'HLEN aigate:keys:records'), ':2');
        // Without Redis in the configuration there is nowhere to publish.
        r = local(a, ['publish']);
        assert.equal(r.status, 1);
        assert.match(r.stderr, /no \[aigate.redis\] url/);
    } finally {
        await a.stop();
        await b.stop();
    }
});

test('a key revoked through one instance fails on the other within a second', async () => {
    const extra = 'cache = false\nauth = "required"';
    const a = await startGateway({ upstream: up.url, config: config(redis.port, extra, 100000), threads: 2 });
    const b = await startGateway({ upstream: up.url, config: config(redis.port, extra, 100000), threads: 2 });
    const cli = (g, args) => spawnSync(BIN, ['keys', ...args, '--config', path.join(g.cwd, 'aigate.toml')], { cwd: g.cwd, encoding: 'utf8' });
    try {
        const ka = JSON.parse(cli(a, ['create', 'leaver', '--json']).stdout).key;
        const kb = ka; // one key: b imports it from Redis
        await until(() => /keys on Redis: 1 record imported/.test(b.stderr), 5000, 'b to import the key');
        assert.equal((await generate(a, prompt('a'), { authorization: `Bearer ${ka}` })).status, 200);
        assert.equal((await generate(b, prompt('b'), { authorization: `Bearer ${kb}` })).status, 200);
        const r = cli(a, ['revoke', 'leaver']);
        assert.equal(r.status, 0, r.stderr);
        assert.match(r.stdout, /on every instance of this Redis/);
        const t0 = Date.now();
        let res;
        await until(async () => {
            res = await generate(b, prompt(`b after ${Date.now()}`), { authorization: `Bearer ${kb}` });
            return res.status === 401;
        }, 1000, 'the other instance to refuse the key');
        assert.ok(Date.now() - t0 <= 1000);
        assert.deepEqual(res.json, { error: 'Invalid API key' });
        assert.equal((await generate(a, prompt('a after'), { authorization: `Bearer ${ka}` })).status, 401);
        assert.match(b.stderr, /key leaver is revoked \(on Redis\)/);
        // The key itself is never written: not in either log, not in Redis.
        for (const k of [ka, kb]) {
            assert.ok(!a.stderr.includes(k) && !b.stderr.includes(k), 'a key in a log');
        }
        assert.equal(await redisGet(redis.port, 'aigate:keys:revoked:leaver') !== null, true);
        // Redis unreachable: the command says the revocation is local only, and exits 1.
        const badCfg = path.join(a.cwd, 'bad.toml');
        require('node:fs').writeFileSync(badCfg, '[aigate.redis]\nurl = "redis://127.0.0.1:1/0"\n');
        cli(a, ['create', 'second', '--json']);
        const bad = spawnSync(BIN, ['keys', 'revoke', 'second', '--config', badCfg, '--data-dir', path.join(a.cwd, '.aigate')], { cwd: a.cwd, encoding: 'utf8' });
        assert.equal(bad.status, 1, bad.stdout);
        assert.match(bad.stderr, /key second is revoked here, but not on Redis/);
    } finally {
        await a.stop();
        await b.stop();
    }
});

test('Redis down: closed answers 503 with Retry-After, open serves; both recover without a restart', async () => {
    const closed = await startGateway({ upstream: up.url, config: config(redis.port), threads: 2 });
    const open = await startGateway({ upstream: up.url, config: config(redis.port, 'redis_fail = "open"'), threads: 2 });
    try {
        await until(async () => (await request(`${closed.adminUrl}/readyz`)).status === 200, 5000, 'ready');
        assert.equal((await generate(closed, prompt('before'))).status, 200);

        await stopRedis(redis);
        // Under load while it is gone: every answer comes, none hangs.
        const t0 = Date.now();
        const during = await Promise.all(Array.from({ length: 12 }, (_, i) => generate(i % 2 ? open : closed, prompt(`down ${i}`))));
        assert.ok(Date.now() - t0 < 8000, 'answers came without waiting on a dead Redis');
        during.forEach((r, i) => {
            if (i % 2) {
                assert.equal(r.status, 200, `open: ${r.body}`);
            } else {
                assert.equal(r.status, 503, `closed: ${r.body}`);
                assert.equal(r.headers['retry-after'], '1');
                assert.deepEqual(r.json, { error: 'Rate limiter unavailable' });
            }
        });
        // /v1/messages answers in Anthropic's error shape.
        const m = await request(`${closed.url}/v1/messages`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
            body: { model: 'claude-haiku-4-5', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] },
        });
        assert.equal(m.status, 503);
        assert.equal(m.json.type, 'error');
        assert.equal(m.json.error.message, 'Rate limiter unavailable');
        // Readiness: closed needs Redis (503), open does not (200, says it is down).
        await until(async () => (await request(`${closed.adminUrl}/readyz`)).status === 503, 5000, 'closed not ready');
        assert.deepEqual((await request(`${closed.adminUrl}/readyz`)).json, { status: 'redis_down', redis: 'down' });
        const or = await request(`${open.adminUrl}/readyz`);
        assert.equal(or.status, 200);
        assert.deepEqual(or.json, { status: 'ready', redis: 'down' });
        assert.match(closed.stderr, /Redis cannot check rate limits/);

        // Back on the same port: both use it again within seconds (reconnect with backoff).
        redis = await startRedis(redis.port);
        await until(async () => (await generate(closed, prompt(`back ${Date.now()}`))).status === 200, 10000, 'closed to serve again');
        await until(async () => (await request(`${closed.adminUrl}/readyz`)).status === 200, 10000, 'closed ready again');
        // And the count is shared again: the open instance's requests land in Redis.
        assert.equal((await generate(open, prompt('open back'))).status, 200);
        await until(async () => /^\*[1-9]/.test((await redisCommand(redis.port, 'KEYS aigate:rl:*')) || ''), 5000, 'the limit kept in Redis');
    } finally {
        await closed.stop();
        await open.stop();
    }
});

test('Redis frozen (SIGSTOP): checks time out to 503 instead of hanging, and it thaws', async () => {
    const gw = await startGateway({ upstream: up.url, config: config(redis.port), threads: 1 });
    try {
        await until(async () => (await generate(gw, prompt(`warm ${Date.now()}`))).status === 200, 5000, 'served');
        redis.proc.kill('SIGSTOP');
        try {
            const t0 = Date.now();
            const r = await generate(gw, prompt('frozen'));
            assert.equal(r.status, 503, r.body);
            assert.equal(r.headers['retry-after'], '1');
            // redis_timeout is 0.3 s: well under the client's patience.
            assert.ok(Date.now() - t0 < 5000);
        } finally {
            redis.proc.kill('SIGCONT');
        }
        await until(async () => (await generate(gw, prompt(`thawed ${Date.now()}`))).status === 200, 10000, 'served after the thaw');
    } finally {
        await gw.stop();
    }
});

test('a bad Redis URL is refused at start and by `aigate deploy`-style validation', async () => {
    await assert.rejects(
        startGateway({ upstream: up.url, config: '[aigate.redis]\nurl = "http://127.0.0.1:6379"\n' }),
        /aigate\.redis\.url must be redis:\/\//
    );
    await assert.rejects(startGateway({ upstream: up.url, config: '[aigate.redis]\nurl = "redis://127.0.0.1:notaport"\n' }), /aigate\.redis\.url/);
});

test('with two instances on one Redis, each scheduled time runs once', async () => {
    const elsewhere = /task minutely at (\S+): another instance runs it/;
    // No trigger: both schedulers' timers fire at the minute (a real wait, bounded).
    await until(() => elsewhere.test(lock.a.stderr) || elsewhere.test(lock.b.stderr), 75000, 'a minute tick');
    const loser = elsewhere.test(lock.a.stderr) ? lock.a : lock.b;
    const winner = loser === lock.a ? lock.b : lock.a;
    const when = elsewhere.exec(loser.stderr)[1];
    let last;
    await until(async () => {
        const list = (await request(`${winner.adminUrl}/tasks`)).json;
        last = list && list[0].last;
        return last && last.outcome === 'ok';
    }, 15000, "the winner's run");
    assert.equal(new Date(last.scheduledTime).toISOString().replace('.000Z', 'Z'), when);
    await lock.a.stop();
    await lock.b.stop();
    // Every tick that came ran exactly once: one upstream call per lock taken,
    // each lock held by the instance that ran it, the other logging so.
    const count = Number((await redisCommand(lock.redis.port, 'EVAL "return #redis.call(\'KEYS\', \'aigate:run:minutely:*\')" 0')).slice(1));
    assert.ok(count >= 1, `locks: ${count}`);
    assert.equal(lock.up.stats().requests, count);
    const losses = (loser.stderr.match(/another instance runs it/g) || []).length + (winner.stderr.match(/another instance runs it/g) || []).length;
    assert.equal(losses, count);
    // The lock of that time names the instance that ran it.
    assert.equal(await redisGet(lock.redis.port, `aigate:run:minutely:${Date.parse(when)}`), `${os.hostname()} ${winner.proc.pid}`);
});

// SPDX-License-Identifier: MIT
//
// d_edge.test.js: the response cache (hits, keys, coalescing, Cache-Control,
// persistence) and the rate limiter (exact bursts across threads, headers,
// trusted proxies, ratelimit bindings), through the real binary.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const path = require('node:path');
const { BIN, startGateway, startFake, generate, request, tmpdir, until } = require('./lib.js');

let up;

before(async () => {
    up = await startFake();
});

after(async () => {
    await up.close();
});

test('a cache hit answers without an upstream call, with usage, cached: true and CORS', async () => {
    const gw = await startGateway({ upstream: `http://127.0.0.1:${up.port}`, config: '[aigate]\nthreads = 2\n' });
    try {
        up.resetStats();
        const a = await generate(gw, { prompt: 'cache me please' });
        assert.equal(a.status, 200);
        assert.equal(a.json.cached, false);
        await until(async () => (await generate(gw, { prompt: 'cache me please' })).json.cached === true, 5000, 'the fill');
        const before = up.stats().requests;
        const b = await generate(gw, { prompt: 'cache me please' });
        assert.equal(b.status, 200);
        assert.deepEqual(b.json, { output: a.json.output, usage: a.json.usage, cached: true });
        assert.equal(b.headers['x-aigate-cache'], 'hit');
        assert.equal(b.headers['access-control-allow-origin'], '*');
        assert.equal(up.stats().requests, before, 'a hit makes no upstream call');
    } finally {
        await gw.stop();
    }
});

test('prompts sharing their first 24 characters, other models and Unicode prompts get their own entries', async () => {
    const gw = await startGateway({
        upstream: `http://127.0.0.1:${up.port}`,
        config: '[aigate]\nmodels = ["claude-sonnet-4-6"]\n',
    });
    try {
        const stem = 'The same first 24 chars!';
        const p1 = await generate(gw, { prompt: stem + ' then one ending' });
        const p2 = await generate(gw, { prompt: stem + ' then another ending' });
        assert.notEqual(p1.json.output, p2.json.output);
        assert.match(p2.json.output, /another ending/);
        const uni = '日本語のプロンプト 🎌🍣 with émoji';
        const u1 = await generate(gw, { prompt: uni });
        assert.equal(u1.status, 200);
        await until(async () => (await generate(gw, { prompt: uni })).json.cached === true, 5000, 'unicode fill');
        const u2 = await generate(gw, { prompt: uni });
        assert.equal(u2.json.output, u1.json.output);
        assert.ok(u2.json.output.includes('🎌🍣'));
        const before = up.stats().requests;
        const m = await generate(gw, { prompt: uni, model: 'claude-sonnet-4-6' });
        assert.equal(m.json.cached, false, 'a different model misses');
        assert.equal(up.stats().requests, before + 1);
    } finally {
        await gw.stop();
    }
});

test('50 identical concurrent requests cause exactly one upstream call', async () => {
    const slow = await startFake({ latencyMs: 400 });
    const gw = await startGateway({ upstream: `http://127.0.0.1:${slow.port}`, threads: 2 });
    try {
        const all = await Promise.all(Array.from({ length: 50 }, () => generate(gw, { prompt: 'the herd arrives' })));
        for (const r of all) {
            assert.equal(r.status, 200, r.body);
            assert.equal(r.json.output, all[0].json.output);
        }
        assert.equal(slow.stats().requests, 1);
    } finally {
        await gw.stop();
        await slow.close();
    }
});

// The values of gw's response cache, read with the storage CLI while gw runs.
function cacheValues(gw) {
    const run = (args) => {
        const env = { ...process.env, ASAN_OPTIONS: process.env.ASAN_OPTIONS || 'detect_leaks=1' };
        const r = spawnSync(BIN, [...args, '--binding', 'CACHE', '--config', path.join(gw.cwd, 'aigate.toml')], { cwd: gw.cwd, env, timeout: 30000 });
        assert.equal(r.error, undefined, String(r.error));
        assert.doesNotMatch(r.stderr.toString(), /AddressSanitizer|LeakSanitizer|runtime error:/);
        return r;
    };
    const list = run(['kv', 'key', 'list', '--json']);
    if (list.status !== 0) return []; // no CACHE namespace yet
    return JSON.parse(list.stdout).keys.map(({ name }) => {
        const r = run(['kv', 'key', 'get', name]);
        assert.equal(r.status, 0, r.stderr.toString());
        return r.stdout.toString('utf8');
    });
}

test('Cache-Control: no-cache skips the lookup, no-store skips lookup and fill', async () => {
    const cwd = tmpdir();
    const gw = await startGateway({ cwd, upstream: `http://127.0.0.1:${up.port}`, config: `[aigate]\ndata_dir = "${cwd}/data"\n` });
    try {
        const prompt = 'cache-control semantics';
        await generate(gw, { prompt });
        await until(async () => (await generate(gw, { prompt })).json.cached === true, 5000, 'fill');
        let n = up.stats().requests;
        const nc = await generate(gw, { prompt }, { 'cache-control': 'no-cache' });
        assert.equal(nc.json.cached, false);
        assert.equal(up.stats().requests, n + 1, 'no-cache went upstream');

        const fresh = 'never stored anywhere';
        n = up.stats().requests;
        const ns = await generate(gw, { prompt: fresh }, { 'cache-control': 'no-store' });
        assert.equal(ns.json.cached, false);
        assert.equal(up.stats().requests, n + 1, 'no-store went upstream');
        // Fills land off the loop, after the answer. Wait until the store holds
        // the fill of a request sent after the no-store answer came back: a
        // (wrong) fill of the no-store answer was queued before that one.
        const later = await generate(gw, { prompt: 'a later request that fills' });
        assert.equal(later.json.cached, false);
        await until(() => cacheValues(gw).some((v) => v.includes(later.json.output)), 10000, "the later request's fill");
        assert.ok(!cacheValues(gw).some((v) => v.includes(ns.json.output)), 'no-store must not fill: its answer is in the store');
        const again = await generate(gw, { prompt: fresh });
        assert.equal(again.json.cached, false, 'no-store must not fill');
        assert.equal(up.stats().requests, n + 3);
    } finally {
        await gw.stop();
    }
});

test('the cache persists across restarts (LMDB under data_dir)', async () => {
    const dir = tmpdir();
    const config = `[aigate]\ndata_dir = "${dir}/data"\n`;
    let gw = await startGateway({ upstream: `http://127.0.0.1:${up.port}`, config });
    const prompt = 'remember me after a restart';
    await generate(gw, { prompt });
    await until(async () => (await generate(gw, { prompt })).json.cached === true, 5000, 'fill');
    await gw.stop();
    gw = await startGateway({ upstream: `http://127.0.0.1:${up.port}`, config });
    try {
        const r = await generate(gw, { prompt });
        assert.equal(r.json.cached, true);
    } finally {
        await gw.stop();
    }
});

test('exactly `limit` requests of a concurrent burst over all threads pass; then 429 with Retry-After', async () => {
    const gw = await startGateway({
        upstream: `http://127.0.0.1:${up.port}`,
        threads: 2,
        config: '[aigate]\nrate_limit = 10\nrate_period = 60\n',
    });
    try {
        const all = await Promise.all(Array.from({ length: 30 }, () => generate(gw, { prompt: 'burst' })));
        const ok = all.filter((r) => r.status === 200);
        const limited = all.filter((r) => r.status === 429);
        assert.equal(ok.length, 10);
        assert.equal(limited.length, 20);
        for (const r of limited) {
            assert.deepEqual(r.json, { error: 'Rate limit exceeded. Max 10 requests/minute.' });
            assert.equal(r.headers['retry-after'], '6', '60 s / 10 = one request every 6 s');
            assert.equal(r.headers['ratelimit-limit'], '10');
            assert.equal(r.headers['ratelimit-remaining'], '0');
            assert.equal(r.headers['access-control-allow-origin'], '*');
        }
        const remaining = ok.map((r) => Number(r.headers['ratelimit-remaining'])).sort((a, b) => a - b);
        assert.deepEqual(remaining, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        // Validation comes before the limit: a bad request is still a 400.
        assert.equal((await generate(gw, 'not json')).status, 400);
        // A spoofed forwarding header from an untrusted peer changes nothing.
        const spoof = await generate(gw, { prompt: 'burst' }, { 'x-forwarded-for': '203.0.113.9', 'cf-connecting-ip': '203.0.113.10' });
        assert.equal(spoof.status, 429);
    } finally {
        await gw.stop();
    }
});

test('behind a trusted proxy, X-Forwarded-For names the client; behind Cloudflare, CF-Connecting-IP', async () => {
    // CF-Connecting-IP is believed only from trusted_proxies_cf (p_hardening_net tests the rest).
    const gw = await startGateway({
        upstream: `http://127.0.0.1:${up.port}`,
        config: '[aigate]\nrate_limit = 2\nrate_period = 60\ntrusted_proxies = ["127.0.0.0/8", "::1"]\ntrusted_proxies_cf = ["127.0.0.1"]\n',
    });
    try {
        const as = (h) => generate(gw, { prompt: 'proxied' }, h);
        assert.equal((await as({ 'x-forwarded-for': '198.51.100.1' })).status, 200);
        assert.equal((await as({ 'x-forwarded-for': '198.51.100.1' })).status, 200);
        assert.equal((await as({ 'x-forwarded-for': '198.51.100.1' })).status, 429);
        // Another client behind the same proxy has its own budget; the rightmost
        // untrusted hop counts, whatever the client wrote to the left of it.
        assert.equal((await as({ 'x-forwarded-for': '198.51.100.1, 198.51.100.2' })).status, 200);
        assert.equal((await as({ 'cf-connecting-ip': '192.0.2.7' })).status, 200);
        await until(() => gw.accessLog().some((l) => l.client === '192.0.2.7'), 3000, 'access log');
    } finally {
        await gw.stop();
    }
});

test("naming the seed's RATE_LIMITER binding uses its numbers", async () => {
    const config = `[[unsafe.bindings]]
type = "ratelimit"
name = "RATE_LIMITER"
namespace_id = "1001"
simple = { limit = 3, period = 3600 }
[aigate]
rate_limit_binding = "RATE_LIMITER"
`;
    const gw = await startGateway({ upstream: `http://127.0.0.1:${up.port}`, config, liftRateLimit: false });
    try {
        const codes = [];
        for (let i = 0; i < 4; i++) codes.push((await generate(gw, { prompt: `bound ${i}` })).status);
        assert.deepEqual(codes, [200, 200, 200, 429]);
        const r = await generate(gw, { prompt: 'bound again' });
        assert.deepEqual(r.json, { error: 'Rate limit exceeded. Max 3 requests/hour.' });
        assert.equal(r.headers['retry-after'], '1200');
    } finally {
        await gw.stop();
    }
});

test('an unknown rate_limit_binding is a config error', async () => {
    await assert.rejects(
        startGateway({ upstream: `http://127.0.0.1:${up.port}`, config: '[aigate]\nrate_limit_binding = "NOPE"\n' }),
        /no ratelimit binding named 'NOPE'/
    );
});

test('routes naming bindings with one namespace_id share counters; /v1/messages has its own keys', async () => {
    const post = (g, body) => request(`${g.url}/v1/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
        body: { model: 'claude-haiku-4-5', max_tokens: 10, messages: [{ role: 'user', content: body }] },
    });
    const shared = `[[unsafe.bindings]]
type = "ratelimit"
name = "RATE_LIMITER"
namespace_id = "1001"
simple = { limit = 3, period = 60 }
[[unsafe.bindings]]
type = "ratelimit"
name = "SAME_NAMESPACE"
namespace_id = "1001"
simple = { limit = 3, period = 60 }
[aigate]
rate_limit_binding = "RATE_LIMITER"
messages_rate_limit_binding = "SAME_NAMESPACE"
`;
    let gw = await startGateway({ upstream: `http://127.0.0.1:${up.port}`, config: shared, liftRateLimit: false });
    try {
        assert.equal((await generate(gw, { prompt: 'one' })).status, 200);
        assert.equal((await generate(gw, { prompt: 'two' })).status, 200);
        assert.equal((await post(gw, 'three')).status, 200);
        const r = await post(gw, 'four');
        assert.equal(r.status, 429);
        assert.equal(r.json.type, 'error');
        assert.equal(r.json.error.type, 'rate_limit_error');
        assert.ok(Number(r.headers['retry-after']) >= 1);
        assert.equal((await generate(gw, { prompt: 'five' })).status, 429);
    } finally {
        await gw.stop();
    }
    gw = await startGateway({
        upstream: `http://127.0.0.1:${up.port}`,
        config: '[aigate]\nrate_limit = 100\nmessages_rate_limit = 1\nmessages_rate_period = 60\n',
    });
    try {
        assert.equal((await post(gw, 'first')).status, 200);
        assert.equal((await post(gw, 'second')).status, 429);
        assert.equal((await generate(gw, { prompt: 'generate is separate' })).status, 200);
    } finally {
        await gw.stop();
    }
});

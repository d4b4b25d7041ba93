// SPDX-License-Identifier: MIT
//
// t_access.test.js: client access end to end (platform.md section 6): keys made
// by `aigate keys` on every route (401 in each route's shape, the official
// Anthropic and OpenAI SDKs, revocation and expiry while the server runs, the
// key never written anywhere), budgets that never overshoot under concurrency
// and survive a restart, per-key rpm, CORS per route and origin, and the
// OpenAI API (SDK plain and streamed, tool calls, usage, error classes, and
// request translations checked against the body the upstream received).
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');

const Anthropic = require('@anthropic-ai/sdk').default || require('@anthropic-ai/sdk');
const OpenAIMod = require('openai');
const OpenAI = OpenAIMod.default || OpenAIMod.OpenAI || OpenAIMod;

const { BIN, TEST_KEY, startGateway, startFake, request, generate, until, tmpdir, readUsageLog, filesUnder } = require('./lib.js');

const MODEL = 'claude-haiku-4-5'; // DEFAULT_MODEL
const KEY_RE = /ag_[0-9A-Za-z]{43}/;

let up;
const made = [];
const keysSeen = []; // every key printed: none may appear in any output

function mkdir() {
    const d = tmpdir();
    made.push(d);
    return d;
}

before(async () => {
    up = await startFake();
});

after(async () => {
    await up.close();
    for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});

// A gateway whose data folder is `dataDir` (so the CLI and a restart see the same stores).
async function gateway(dataDir, extra = '', opts = {}) {
    const cwd = opts.cwd || mkdir();
    const gw = await startGateway({
        cwd,
        upstream: `http://127.0.0.1:${up.port}`,
        config: `[aigate]\ndata_dir = "${dataDir}"\nusage_log_flush = 0.1\n${extra}\n`,
        ...opts,
    });
    gw.configPath = path.join(cwd, 'aigate.toml');
    return gw;
}

// `aigate keys ...` as an operator runs it (needs no upstream: spawnSync is fine).
function keys(gw, args) {
    const env = { ...process.env, ASAN_OPTIONS: process.env.ASAN_OPTIONS || 'detect_leaks=1' };
    delete env.ANTHROPIC_API_KEY;
    const r = spawnSync(BIN, ['keys', ...args, '--config', gw.configPath], { cwd: gw.cwd, env, timeout: 30000 });
    assert.equal(r.error, undefined, String(r.error));
    const out = r.stdout.toString('utf8');
    const err = r.stderr.toString('utf8');
    assert.equal(r.status, 0, `keys ${args.join(' ')}: ${err}`);
    return { out, err };
}

function createKey(gw, name, flags = []) {
    const j = JSON.parse(keys(gw, ['create', name, '--json', ...flags]).out);
    assert.match(j.key, KEY_RE);
    keysSeen.push(j.key);
    return j.key;
}

const post = (gw, p, body, headers = {}) =>
    request(gw.url + p, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
const messages = (gw, content, headers = {}, extra = {}) =>
    post(gw, '/v1/messages', { model: MODEL, max_tokens: 50, messages: [{ role: 'user', content }], ...extra },
        { 'anthropic-version': '2023-06-01', ...headers });
const chat = (gw, body, headers = {}) => post(gw, '/v1/chat/completions', { model: MODEL, ...body }, headers);

// The usage entries in the gateway's usage-log bucket, read with the CLI as a
// user would: a raw walk of the folder would also meet objects being written.
const usageEntries = (gw) => readUsageLog(gw.cwd, gw.configPath).entries;


// A live-tail subscriber on the admin listener: collects events.
function subscribe(gw) {
    return new Promise((resolve, reject) => {
        const events = [];
        let buf = '';
        const req = http.get(`${gw.adminUrl}/tail?format=json`, { agent: false }, (res) => {
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
            resolve({ events, raw: () => buf, all: [], close: () => req.destroy() });
        });
        req.on('error', reject);
    });
}

function assertOpenAIError(r, status) {
    assert.equal(r.status, status, r.body);
    assert.equal(typeof r.json.error.message, 'string', r.body);
    assert.equal(typeof r.json.error.type, 'string', r.body);
    assert.ok('param' in r.json.error && 'code' in r.json.error, r.body);
}

function assertAnthropicError(r, status, type) {
    assert.equal(r.status, status, r.body);
    assert.equal(r.json.type, 'error', r.body);
    assert.equal(r.json.error.type, type, r.body);
}

// ---- keys ----------------------------------------------------------------------------------

test('auth = "required": no key and a wrong key get 401 on every route, in its shape, before the upstream', async () => {
    const dataDir = mkdir();
    const gw = await gateway(dataDir, 'auth = "required"');
    try {
        const before = up.stats();
        const wrong = [
            {},
            { authorization: 'Bearer ag_' + 'x'.repeat(43) },
            { 'x-api-key': 'ag_' + 'A'.repeat(43) },
            { authorization: 'Bearer not-a-key' },
            { authorization: `Bearer ${TEST_KEY}` }, // the upstream's key is no client key
        ];
        for (const h of wrong) {
            const what = JSON.stringify(h);
            const g = await generate(gw, { prompt: 'hi' }, h);
            assert.equal(g.status, 401, what);
            assert.deepEqual(g.json, { error: 'Invalid API key' });
            assertAnthropicError(await messages(gw, 'hi', h), 401, 'authentication_error');
            assertAnthropicError(await post(gw, '/v1/messages/count_tokens', { model: MODEL, messages: [{ role: 'user', content: 'hi' }] },
                { 'anthropic-version': '2023-06-01', ...h }), 401, 'authentication_error');
            const c = await chat(gw, { messages: [{ role: 'user', content: 'hi' }] }, h);
            assertOpenAIError(c, 401);
            assert.equal(c.json.error.code, 'invalid_api_key');
            assertOpenAIError(await request(`${gw.url}/v1/models`, { headers: h }), 401);
            assertAnthropicError(await request(`${gw.url}/v1/models`, { headers: { 'anthropic-version': '2023-06-01', ...h } }),
                401, 'authentication_error');
        }
        // A body the route would refuse is refused for the key first: nothing is said about it.
        assert.equal((await generate(gw, 'not json')).status, 401);
        const after = up.stats();
        assert.equal(after.requests, before.requests, 'no request reached the upstream');
        assert.equal(after.countTokens, before.countTokens);
        assert.equal((await request(`${gw.url}/healthz`)).status, 200, 'health checks need no key');
    } finally {
        await gw.stop();
    }
});

test('a key from `aigate keys create` works with the official Anthropic and OpenAI SDKs; it is never forwarded', async () => {
    const dataDir = mkdir();
    const gw = await gateway(dataDir, 'auth = "required"');
    try {
        const key = createKey(gw, 'sdk-user');
        const anthropic = new Anthropic({ apiKey: key, baseURL: gw.url, maxRetries: 0 });
        const msg = await anthropic.messages.create({ model: MODEL, max_tokens: 50, messages: [{ role: 'user', content: 'anthropic sdk with a key' }] });
        assert.equal(msg.content[0].text, 'Echo: anthropic sdk with a key');
        const seen = up.stats().lastRequest.headers;
        assert.equal(seen['x-api-key'], TEST_KEY.length, "aigate's upstream key, never the client's");
        assert.equal(seen.authorization, undefined);
        const n = await anthropic.messages.countTokens({ model: MODEL, messages: [{ role: 'user', content: 'count these four' }] });
        assert.equal(n.input_tokens, 3);
        assert.equal(up.stats().lastRequest.path, '/v1/messages/count_tokens');
        assert.equal(up.stats().lastRequest.headers['x-api-key'], TEST_KEY.length);
        const models = [];
        for await (const m of anthropic.models.list()) models.push(m.id);
        assert.ok(models.includes(MODEL), JSON.stringify(models));

        // Bearer works for every SDK that sends one (the openai SDK does).
        const openai = new OpenAI({ apiKey: key, baseURL: `${gw.url}/v1`, maxRetries: 0 });
        const c = await openai.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'openai sdk with a key' }] });
        assert.equal(c.choices[0].message.content, 'Echo: openai sdk with a key');
        assert.equal(c.choices[0].finish_reason, 'stop');
        assert.equal(up.stats().lastRequest.headers['x-api-key'], TEST_KEY.length);
        assert.equal(up.stats().lastRequest.headers.authorization, undefined);
        const list = await openai.models.list();
        assert.ok(list.data.some((m) => m.id === MODEL && m.object === 'model'), JSON.stringify(list.data));
    } finally {
        await gw.stop();
    }
});

test('revoked and expired keys fail at once while the server runs; the key reaches no log, tail or usage entry', async () => {
    const dataDir = mkdir();
    const gw = await gateway(dataDir, 'auth = "required"');
    let sub;
    try {
        sub = await subscribe(gw);
        const key = createKey(gw, 'soon-revoked');
        const h = { authorization: `Bearer ${key}` };
        const ok = await generate(gw, { prompt: 'before revocation' }, h);
        assert.equal(ok.status, 200, ok.body);
        assert.equal((await messages(gw, 'x-api-key works too', { 'x-api-key': key })).status, 200);
        keys(gw, ['revoke', 'soon-revoked']);
        const r = await generate(gw, { prompt: 'after revocation' }, h);
        assert.equal(r.status, 401, 'the next request after revoke fails');
        assert.equal((await messages(gw, 'after revocation', { 'x-api-key': key })).status, 401);

        // Rotation: the old key fails at once, the new one works.
        const old = createKey(gw, 'rotated');
        assert.equal((await generate(gw, { prompt: 'rotate me' }, { 'x-api-key': old })).status, 200);
        const j = JSON.parse(keys(gw, ['rotate', 'rotated', '--json']).out);
        keysSeen.push(j.key);
        assert.equal((await generate(gw, { prompt: 'rotate me 2' }, { 'x-api-key': old })).status, 401);
        assert.equal((await generate(gw, { prompt: 'rotate me 3' }, { 'x-api-key': j.key })).status, 200);

        const brief = createKey(gw, 'brief', ['--expires', '4s']);
        const first = await generate(gw, { prompt: 'before expiry' }, { 'x-api-key': brief });
        assert.equal(first.status, 200, first.body);
        let last;
        await until(async () => {
            last = await generate(gw, { prompt: `after expiry ${Date.now()}` }, { 'x-api-key': brief });
            return last.status !== 200;
        }, 15000, 'the key to expire');
        assert.equal(last.status, 401);

        // The name is in the access log, the tail and the usage log; the key nowhere.
        await until(() => sub.events.some((e) => e.aigate.requestId === ok.headers['x-request-id']), 5000, 'the tail event');
        const ev = sub.events.find((e) => e.aigate.requestId === ok.headers['x-request-id']);
        assert.equal(ev.aigate.key, 'soon-revoked');
        assert.equal(ev.event.request.headers.authorization, 'REDACTED');
        const line = gw.accessLog().find((l) => l.id === ok.headers['x-request-id']);
        assert.equal(line.key, 'soon-revoked');
        await until(() => usageEntries(gw).some((e) => e.requestId === ok.headers['x-request-id']), 5000, 'the usage entry');
        const entry = usageEntries(gw).find((e) => e.requestId === ok.headers['x-request-id']);
        assert.equal(entry.key, 'soon-revoked');
        assert.equal(entry.client, '127.0.0.1');
        // The metrics count by the key's name (bounded), never the key.
        const metrics = (await request(`${gw.adminUrl}/metrics`)).body;
        assert.match(metrics, /^aigate_key_requests_total\{key="soon-revoked"\} 2$/m);
        assert.match(metrics, /^aigate_key_cost_usd_total\{key="soon-revoked"\} [0-9.e-]+$/m);
        assert.match(metrics, /^aigate_key_requests_total\{key="rotated"\} 2$/m);
        sub.close();
        await gw.stop();
        const everything = [gw.stderr, gw.stdout, JSON.stringify(sub.events), sub.raw(), metrics,
            ...filesUnder(dataDir).map((f) => fs.readFileSync(f).toString('latin1'))].join('\n');
        for (const k of keysSeen) {
            assert.ok(!everything.includes(k), 'a client key was written out');
            assert.ok(!everything.includes(k.slice(3)), 'a client key was written out');
        }
    } finally {
        if (sub) sub.close();
        if (!gw.exited) await gw.stop();
    }
});

// ---- budgets and per-key limits ------------------------------------------------------------

test('budgets never overshoot: 3N concurrent requests over 2 threads, exactly N reach the upstream; freed budget admits more; a restart keeps the spend', async () => {
    const dataDir = mkdir();
    const cwd = mkdir();
    // Input and output are both priced, so the worst case counts body bytes and max_tokens.
    const prices = `[aigate.prices]\n"${MODEL}" = { input = 1, output = 100 }\n`;
    const N = 4;
    const maxTokens = 10;
    const bodyOf = (i) => JSON.stringify({ model: MODEL, max_tokens: maxTokens, messages: [{ role: 'user', content: `budget request ${String(i).padStart(3, '0')}` }] });
    const bytes = Buffer.byteLength(bodyOf(0));
    const worst = (bytes * 1 + maxTokens * 100) / 1e6;
    const budget = (N + 0.5) * worst; // N fit, N + 1 do not
    const config = `auth = "required"\ncache = false\n${prices}`;
    let gw = await gateway(dataDir, config, { cwd, threads: 2 });
    try {
        createKey(gw, 'budgeted', ['--daily-usd', budget.toFixed(9)]);
        const key = keysSeen[keysSeen.length - 1];
        const send = (i) => request(`${gw.url}/v1/messages`, {
            method: 'POST', body: bodyOf(i),
            headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', 'x-api-key': key },
        });
        // Slow answers: no reservation is settled before every request has tried.
        up.setKnobs({ latencyMs: 600 });
        const before = up.stats().requests;
        const rs = await Promise.all(Array.from({ length: 3 * N }, (_, i) => send(i)));
        up.resetKnobs();
        const ok = rs.filter((r) => r.status === 200);
        const refused = rs.filter((r) => r.status === 429);
        assert.equal(ok.length, N, rs.map((r) => r.status).join(','));
        assert.equal(refused.length, 2 * N);
        assert.equal(up.stats().requests - before, N, 'exactly N reached the upstream');
        for (const r of refused) {
            assertAnthropicError(r, 429, 'rate_limit_error');
            assert.equal(r.json.error.message, 'Budget exceeded');
            const ra = Number(r.headers['retry-after']);
            assert.ok(ra >= 1 && ra <= 86400, `Retry-After ${r.headers['retry-after']}`);
        }
        // Every answer settled below its worst case: the difference admits new requests.
        let more = 0;
        for (let i = 100; i < 160; i++) {
            const r = await send(i);
            if (r.status !== 200) {
                assert.equal(r.status, 429);
                break;
            }
            more++;
        }
        assert.ok(more >= 1 && more < 60, `${more} requests fit in the freed budget`);
        const upstreamBefore = up.stats().requests;
        await gw.stop();

        // The spend survives a restart: still refused, before any upstream call.
        gw = await gateway(dataDir, config, { cwd, threads: 2 });
        const again = await send(999);
        assertAnthropicError(again, 429, 'rate_limit_error');
        assert.equal(again.json.error.message, 'Budget exceeded');
        assert.equal(up.stats().requests, upstreamBefore);
        await gw.stop();
        const spent = usageEntries(gw).filter((e) => e.key === 'budgeted' && e.status === 200);
        assert.equal(spent.length, N + more);
        const total = spent.reduce((s, e) => s + e.costUsd, 0);
        assert.ok(total <= budget + 1e-9, `settled ${total} <= budget ${budget}`);
    } finally {
        up.resetKnobs();
        if (!gw.exited) await gw.stop();
    }
});

test('per-key rpm is exact and tpm holds the in-flight worst case, on top of the per-client limit; other keys are untouched; model lists', async () => {
    const dataDir = mkdir();
    const gw = await gateway(dataDir, 'auth = "optional"');
    try {
        const limited = createKey(gw, 'three-a-minute', ['--rpm', '3']);
        const other = createKey(gw, 'free');
        for (let i = 0; i < 3; i++) {
            const r = await generate(gw, { prompt: `rpm ${i}` }, { 'x-api-key': limited });
            assert.equal(r.status, 200, `request ${i}: ${r.body}`);
        }
        const n = up.stats().requests;
        const r = await generate(gw, { prompt: 'rpm 3' }, { 'x-api-key': limited });
        assert.equal(r.status, 429);
        assert.match(r.json.error, /3 requests\/minute/);
        const ra = Number(r.headers['retry-after']);
        assert.ok(ra >= 1 && ra <= 20, `Retry-After ${r.headers['retry-after']}: one request every 20 s`);
        assert.equal(up.stats().requests, n, 'refused before the upstream');
        // tpm holds each request's worst case (body bytes + max_tokens, ~1120 here) while it
        // runs: 3 at once do not fit in 3000, 2 do; settled, they free what they did not use.
        const tpm = createKey(gw, 'tpm-3000', ['--tpm', '3000']);
        up.setKnobs({ latencyMs: 400 });
        const burst = await Promise.all([0, 1, 2].map((i) => generate(gw, { prompt: `tpm ${i}` }, { 'x-api-key': tpm })));
        up.resetKnobs();
        assert.deepEqual(burst.map((b) => b.status).sort(), [200, 200, 429]);
        assert.match(burst.find((b) => b.status === 429).json.error, /3000 tokens\/minute/);
        assert.equal((await generate(gw, { prompt: 'tpm after' }, { 'x-api-key': tpm })).status, 200, 'real tokens are few');
        // OpenAI's shape on its route; a key without limits and no key at all (optional) go on.
        const c = await chat(gw, { messages: [{ role: 'user', content: 'rpm via openai' }] }, { authorization: `Bearer ${limited}` });
        assertOpenAIError(c, 429);
        assert.equal(c.json.error.type, 'rate_limit_error');
        assert.equal((await generate(gw, { prompt: 'rpm other' }, { 'x-api-key': other })).status, 200);
        assert.equal((await generate(gw, { prompt: 'rpm nobody' })).status, 200);
        // "optional": a key that is presented must still be valid.
        assert.equal((await generate(gw, { prompt: 'rpm bad' }, { 'x-api-key': 'ag_nope' })).status, 401);
        // A key's model list: other models are refused on every route.
        const haiku = createKey(gw, 'sonnet-only', ['--models', 'claude-sonnet-4-6']);
        assert.equal((await generate(gw, { prompt: 'model list' }, { 'x-api-key': haiku })).status, 400);
        assertAnthropicError(await messages(gw, 'model list', { 'x-api-key': haiku }), 403, 'permission_error');
        assertOpenAIError(await chat(gw, { messages: [{ role: 'user', content: 'model list' }] }, { 'x-api-key': haiku }), 403);
        const models = await request(`${gw.url}/v1/models`, { headers: { 'x-api-key': haiku } });
        const ids = models.json.data.map((m) => m.id);
        assert.ok(!ids.includes(MODEL) && ids.every((m) => m === 'claude-sonnet-4-6'), `the key sees only models it may use: ${ids}`);
    } finally {
        await gw.stop();
    }
});

// ---- CORS ----------------------------------------------------------------------------------

test('CORS: a listed origin is echoed with Vary: Origin, another gets no CORS headers, preflights likewise', async () => {
    const allowed = 'https://app.example.com';
    const dataDir = mkdir();
    const gw = await gateway(dataDir, `cors_origins = ["${allowed}"]`);
    const dflt = await gateway(mkdir());
    try {
        for (const p of ['/v1/messages', '/v1/chat/completions', '/api/generate']) {
            const body = p === '/api/generate' ? { prompt: 'cors' } : p === '/v1/messages'
                ? { model: MODEL, max_tokens: 20, messages: [{ role: 'user', content: 'cors' }] }
                : { model: MODEL, messages: [{ role: 'user', content: 'cors' }] };
            const h = { 'anthropic-version': '2023-06-01' };
            const yes = await post(gw, p, body, { ...h, origin: allowed });
            assert.equal(yes.status, 200, `${p}: ${yes.body}`);
            assert.equal(yes.headers['access-control-allow-origin'], allowed, p);
            assert.match(yes.headers.vary || '', /Origin/, p);
            assert.match(yes.headers['access-control-expose-headers'], /x-request-id/);
            const no = await post(gw, p, body, { ...h, origin: 'https://evil.example.com' });
            assert.equal(no.status, 200);
            for (const k of Object.keys(no.headers)) assert.ok(!k.startsWith('access-control-'), `${p}: ${k} for another origin`);
            const pre = await request(gw.url + p, { method: 'OPTIONS', headers: { origin: allowed, 'access-control-request-method': 'POST', 'access-control-request-headers': 'x-api-key, content-type' } });
            assert.equal(pre.status, 200, p);
            assert.equal(pre.headers['access-control-allow-origin'], allowed);
            assert.match(pre.headers['access-control-allow-methods'], /POST/);
            assert.match(pre.headers['access-control-allow-headers'], /x-api-key|Authorization/i);
            const preNo = await request(gw.url + p, { method: 'OPTIONS', headers: { origin: 'https://evil.example.com', 'access-control-request-method': 'POST' } });
            assert.equal(preNo.status, 204, p);
            for (const k of Object.keys(preNo.headers)) assert.ok(!k.startsWith('access-control-'), `${p} preflight: ${k}`);
        }
        // The default ["*"] is the seed's, on /api/generate only.
        const seed = await generate(dflt, { prompt: 'cors default' }, { origin: 'https://anywhere.example' });
        assert.equal(seed.headers['access-control-allow-origin'], '*');
        const api = await messages(dflt, 'cors default', { origin: 'https://anywhere.example' });
        assert.equal(api.status, 200);
        assert.equal(api.headers['access-control-allow-origin'], undefined, '/v1/messages answers CORS only to listed origins');
        const oai = await chat(dflt, { messages: [{ role: 'user', content: 'cors default' }] }, { origin: 'https://anywhere.example' });
        assert.equal(oai.headers['access-control-allow-origin'], undefined);
        const pre = await request(`${dflt.url}/v1/chat/completions`, { method: 'OPTIONS', headers: { origin: 'https://anywhere.example' } });
        assert.equal(pre.status, 204);
        assert.equal(pre.headers['access-control-allow-origin'], undefined);
        const preSeed = await request(`${dflt.url}/api/generate`, { method: 'OPTIONS', headers: { origin: 'https://anywhere.example' } });
        assert.equal(preSeed.status, 200);
        assert.equal(preSeed.headers['access-control-allow-origin'], '*');
    } finally {
        await gw.stop();
        await dflt.stop();
    }
});

// ---- the OpenAI API ------------------------------------------------------------------------

test('OpenAI SDK: plain and streamed text, a streamed tool call, usage with include_usage, cache hits', async () => {
    const dataDir = mkdir();
    const gw = await gateway(dataDir);
    try {
        const client = new OpenAI({ apiKey: 'unused', baseURL: `${gw.url}/v1`, maxRetries: 0 });
        const plain = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'plain openai text' }] });
        assert.equal(plain.object, 'chat.completion');
        assert.equal(plain.model, MODEL);
        assert.equal(plain.choices.length, 1);
        assert.deepEqual(plain.choices[0].message, { role: 'assistant', content: 'Echo: plain openai text', refusal: null });
        assert.equal(plain.choices[0].finish_reason, 'stop');
        assert.equal(plain.usage.completion_tokens, 4);
        assert.equal(plain.usage.total_tokens, plain.usage.prompt_tokens + plain.usage.completion_tokens);
        assert.equal(up.stats().lastRequest.body.system, 'Be brief.');

        // The same request again is a cache hit, plain and streamed.
        const n = up.stats().requests;
        await until(async () => (await chat(gw, { messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'plain openai text' }] })).headers['x-aigate-cache'] === 'hit', 5000, 'the fill');
        const hit = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'plain openai text' }] });
        assert.equal(hit.choices[0].message.content, 'Echo: plain openai text');
        const hitStream = await client.chat.completions.create({ model: MODEL, stream: true, stream_options: { include_usage: true }, messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'plain openai text' }] });
        let hitText = '';
        let hitUsage = null;
        for await (const ch of hitStream) {
            if (ch.choices[0] && ch.choices[0].delta.content) hitText += ch.choices[0].delta.content;
            if (ch.usage) hitUsage = ch.usage;
        }
        assert.equal(hitText, 'Echo: plain openai text');
        assert.equal(hitUsage.completion_tokens, 4);
        assert.equal(up.stats().requests, n, 'cache hits never reach the upstream');

        // Streamed text: every delta in order, a finish reason, then the usage chunk.
        const stream = await client.chat.completions.create({ model: MODEL, stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'stream one two three four five' }] });
        let text = '';
        let finish = null;
        let usage = null;
        let chunks = 0;
        for await (const ch of stream) {
            chunks++;
            assert.equal(ch.object, 'chat.completion.chunk');
            if (ch.choices.length) {
                if (ch.choices[0].delta.content) text += ch.choices[0].delta.content;
                if (ch.choices[0].finish_reason) finish = ch.choices[0].finish_reason;
            } else {
                usage = ch.usage;
            }
        }
        assert.equal(text, 'Echo: stream one two three four five');
        assert.equal(finish, 'stop');
        assert.ok(chunks >= 9, `${chunks} chunks: one per word`);
        assert.equal(usage.completion_tokens, 7);
        assert.ok(usage.prompt_tokens > 0);
        assert.equal(up.stats().lastRequest.body.stream, true);

        // Without include_usage there is no usage chunk.
        const s2 = await client.chat.completions.create({ model: MODEL, stream: true, messages: [{ role: 'user', content: 'no usage please' }] });
        for await (const ch of s2) assert.ok(ch.choices.length === 1 && !ch.usage, JSON.stringify(ch));

        // Tool calls: the fake answers [[blocks]] with text, a tool_use, text.
        const tools = [{ type: 'function', function: { name: 'get_weather', description: 'Weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }];
        const prompt = '[[blocks]] weather in Paris please';
        const tc = await client.chat.completions.create({ model: MODEL, tools, messages: [{ role: 'user', content: prompt }] });
        assert.equal(tc.choices[0].finish_reason, 'tool_calls');
        const call = tc.choices[0].message.tool_calls[0];
        assert.equal(call.type, 'function');
        assert.equal(call.function.name, 'get_weather');
        assert.deepEqual(JSON.parse(call.function.arguments), { echo: prompt });
        assert.deepEqual(up.stats().lastRequest.body.tools, [{ name: 'get_weather', description: 'Weather', input_schema: tools[0].function.parameters }]);

        const ts = await client.chat.completions.create({ model: MODEL, tools, stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: prompt }] });
        const calls = [];
        let args = 0;
        let tfinish = null;
        let tusage = null;
        for await (const ch of ts) {
            if (ch.usage) tusage = ch.usage;
            const d = ch.choices[0] && ch.choices[0].delta;
            if (ch.choices[0] && ch.choices[0].finish_reason) tfinish = ch.choices[0].finish_reason;
            for (const t of (d && d.tool_calls) || []) {
                if (!calls[t.index]) calls[t.index] = { id: t.id, name: t.function.name, arguments: '' };
                if (t.function && t.function.arguments) {
                    calls[t.index].arguments += t.function.arguments;
                    args++;
                }
            }
        }
        assert.equal(calls.length, 1);
        assert.match(calls[0].id, /^toolu_/);
        assert.equal(calls[0].name, 'get_weather');
        assert.ok(args > 1, `the arguments came in ${args} pieces`);
        assert.deepEqual(JSON.parse(calls[0].arguments), { echo: prompt });
        assert.equal(tfinish, 'tool_calls');
        assert.ok(tusage && tusage.completion_tokens > 0);

        // The usage log has an entry per upstream answer on this route.
        await until(() => usageEntries(gw).filter((e) => e.route === '/v1/chat/completions').length >= 6, 5000, 'usage entries');
    } finally {
        await gw.stop();
    }
});

test("OpenAI SDK error classes: 400, 401, 429 (the gateway's and the upstream's)", async () => {
    const dataDir = mkdir();
    const gw = await gateway(dataDir, 'auth = "required"');
    try {
        const key = createKey(gw, 'errors', ['--rpm', '2']);
        const client = new OpenAI({ apiKey: key, baseURL: `${gw.url}/v1`, maxRetries: 0 });
        const bad = await client.chat.completions.create({ model: MODEL, n: 2, messages: [{ role: 'user', content: 'x' }] }).catch((e) => e);
        assert.ok(bad instanceof OpenAIMod.BadRequestError, String(bad));
        assert.equal(bad.status, 400);
        assert.equal(bad.param, 'n');
        const wrong = new OpenAI({ apiKey: 'ag_wrong', baseURL: `${gw.url}/v1`, maxRetries: 0 });
        const unauth = await wrong.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'x' }] }).catch((e) => e);
        assert.ok(unauth instanceof OpenAIMod.AuthenticationError, String(unauth));
        assert.equal(unauth.status, 401);
        // The upstream's own 429, translated.
        const upstream429 = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: '[[status:429]] slow down' }] }).catch((e) => e);
        assert.ok(upstream429 instanceof OpenAIMod.RateLimitError, String(upstream429));
        assert.equal(upstream429.error.type, 'rate_limit_error');
        // The key's rpm (2): the third request is the gateway's 429.
        await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'second' }] });
        const limited = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'third' }] }).catch((e) => e);
        assert.ok(limited instanceof OpenAIMod.RateLimitError, String(limited));
        assert.equal(limited.status, 429);
        assert.ok(Number(limited.headers.get('retry-after')) >= 1);
    } finally {
        await gw.stop();
    }
});

// Request translations, checked against the exact body the upstream received.
const M = [{ role: 'user', content: 'hi' }];
const OUT = (extra = {}) => ({ model: MODEL, max_tokens: 1024, messages: M, ...extra });
const TOOL = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }];
const TOOL_OUT = [{ name: 'get_weather', input_schema: { type: 'object', properties: { city: { type: 'string' } } } }];
const mapped = [
    ['minimal', { messages: M }, OUT()],
    ['system and developer joined', { messages: [{ role: 'system', content: 'A.' }, { role: 'user', content: 'hi' }, { role: 'developer', content: [{ type: 'text', text: 'B.' }] }] }, OUT({ system: 'A.\nB.' })],
    ['max_tokens', { max_tokens: 77, messages: M }, OUT({ max_tokens: 77 })],
    ['max_completion_tokens wins', { max_tokens: 77, max_completion_tokens: 55, messages: M }, OUT({ max_tokens: 55 })],
    ['temperature kept', { temperature: 0.5, messages: M }, OUT({ temperature: 0.5 })],
    ['temperature capped at 1', { temperature: 1.7, messages: M }, OUT({ temperature: 1 })],
    ['top_p', { top_p: 0.25, messages: M }, OUT({ top_p: 0.25 })],
    ['stop string', { stop: 'END', messages: M }, OUT({ stop_sequences: ['END'] })],
    ['stop list, blanks dropped', { stop: ['a', ' ', 'b c'], messages: M }, OUT({ stop_sequences: ['a', 'b c'] })],
    ['stream', { stream: true, messages: M }, OUT({ stream: true })],
    ['stream with include_usage', { stream: true, stream_options: { include_usage: true }, messages: M }, OUT({ stream: true })],
    ['image base64',
        { messages: [{ role: 'user', content: [{ type: 'text', text: 'What?' }, { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } }] }] },
        OUT({ messages: [{ role: 'user', content: [{ type: 'text', text: 'What?' }, { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } }] }] })],
    ['image url',
        { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'https://example.com/cat.jpg' } }] }] },
        OUT({ messages: [{ role: 'user', content: [{ type: 'image', source: { type: 'url', url: 'https://example.com/cat.jpg' } }] }] })],
    ['assistant tool_calls and tool results',
        { messages: [{ role: 'user', content: 'go' }, { role: 'assistant', content: 'Checking.', tool_calls: [{ id: 'c1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] }, { role: 'tool', tool_call_id: 'c1', content: 'sunny' }] },
        OUT({ messages: [{ role: 'user', content: 'go' }, { role: 'assistant', content: [{ type: 'text', text: 'Checking.' }, { type: 'tool_use', id: 'c1', name: 'get_weather', input: { city: 'Paris' } }] }, { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'c1', content: 'sunny' }] }] })],
    ['tools', { tools: TOOL, messages: M }, OUT({ tools: TOOL_OUT })],
    ['tool_choice auto', { tools: TOOL, tool_choice: 'auto', messages: M }, OUT({ tools: TOOL_OUT, tool_choice: { type: 'auto' } })],
    ['tool_choice required is any', { tools: TOOL, tool_choice: 'required', messages: M }, OUT({ tools: TOOL_OUT, tool_choice: { type: 'any' } })],
    ['tool_choice none', { tools: TOOL, tool_choice: 'none', messages: M }, OUT({ tools: TOOL_OUT, tool_choice: { type: 'none' } })],
    ['tool_choice named', { tools: TOOL, tool_choice: { type: 'function', function: { name: 'get_weather' } }, messages: M }, OUT({ tools: TOOL_OUT, tool_choice: { type: 'tool', name: 'get_weather' } })],
    ['parallel_tool_calls false', { tools: TOOL, parallel_tool_calls: false, messages: M }, OUT({ tools: TOOL_OUT, tool_choice: { type: 'auto', disable_parallel_tool_use: true } })],
    ['n = 1 accepted', { n: 1, messages: M }, OUT()],
    ['nulls are absent', { n: null, temperature: null, top_p: null, stop: null, stream: null, max_tokens: null, messages: M }, OUT()],
];
for (const f of ['logprobs', 'top_logprobs', 'metadata', 'response_format', 'presence_penalty', 'frequency_penalty', 'seed', 'user', 'logit_bias', 'store', 'service_tier', 'reasoning_effort']) {
    const v = { logprobs: true, top_logprobs: 2, metadata: { k: 'v' }, response_format: { type: 'json_object' }, presence_penalty: 0.5, frequency_penalty: -0.5, seed: 42, user: 'u-1', logit_bias: { 50256: -100 }, store: true, service_tier: 'default', reasoning_effort: 'high' }[f];
    mapped.push([`${f} ignored`, { [f]: v, messages: M }, OUT()]);
}
const refused = [
    ['n = 2', { n: 2, messages: M }, 'n'],
    ['temperature above 2', { temperature: 2.5, messages: M }, 'temperature'],
    ['top_p above 1', { top_p: 1.5, messages: M }, 'top_p'],
    ['max_tokens 0', { max_tokens: 0, messages: M }, 'max_tokens'],
    ['stream_options without stream', { stream_options: { include_usage: true }, messages: M }, 'stream_options'],
    ['no messages', { messages: [] }, 'messages'],
    ['unknown role', { messages: [{ role: 'robot', content: 'x' }] }, 'messages[0].role'],
    ['tool_choice without tools', { tool_choice: 'auto', messages: M }, 'tool_choice'],
    ['tool call arguments not JSON', { messages: [{ role: 'user', content: 'x' }, { role: 'assistant', tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: '{oops' } }] }] }, 'messages[1].tool_calls[0].function.arguments'],
    ['image ftp url', { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'ftp://h/x.png' } }] }] }, 'messages[0].content[0].image_url.url'],
];

test(`request translations: ${mapped.length} mapped and ignored fields, ${refused.length} refusals, against the body the upstream got`, async () => {
    assert.ok(mapped.length + refused.length >= 25);
    const dataDir = mkdir();
    const gw = await gateway(dataDir, 'cache = false');
    try {
        for (const [name, body, want] of mapped) {
            const marker = up.stats().requests;
            const r = await chat(gw, body);
            assert.notEqual(r.status, 400, `${name}: refused: ${r.body}`);
            assert.equal(up.stats().requests, marker + 1, `${name}: one upstream request`);
            assert.deepEqual(up.stats().lastRequest.body, want, name);
        }
        for (const [name, body, param] of refused) {
            const marker = up.stats().requests;
            const r = await chat(gw, body);
            assertOpenAIError(r, 400);
            assert.equal(r.json.error.type, 'invalid_request_error', name);
            assert.equal(r.json.error.param, param, name);
            assert.equal(up.stats().requests, marker, `${name}: nothing reached the upstream`);
        }
        // Answers: finish reasons and usage in OpenAI's terms.
        const stop = await chat(gw, { stop: ['three'], messages: [{ role: 'user', content: 'one two three four' }] });
        assert.equal(stop.json.choices[0].finish_reason, 'stop');
        assert.equal(stop.json.choices[0].message.content, 'Echo: one two ');
        const length = await chat(gw, { max_tokens: 2, messages: [{ role: 'user', content: 'one two three four' }] });
        assert.deepEqual(length.json.choices, [{ index: 0, message: { role: 'assistant', content: 'Echo: one', refusal: null }, finish_reason: 'length', logprobs: null }]);
        assert.deepEqual({ ...length.json.usage, prompt_tokens_details: undefined }, { prompt_tokens: 4, completion_tokens: 2, total_tokens: 6, prompt_tokens_details: undefined });
        const upstreamErr = await chat(gw, { messages: [{ role: 'user', content: '[[status:529]] busy' }] });
        assertOpenAIError(upstreamErr, 503);
        assert.equal(upstreamErr.json.error.code, 'overloaded');
    } finally {
        await gw.stop();
    }
});

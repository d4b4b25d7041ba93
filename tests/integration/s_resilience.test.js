// SPDX-License-Identifier: MIT
//
// s_resilience.test.js: the upstream's failures (platform.md section 5): retries with backoff
// and the upstream's own word, a deadline, streams retried only before their first byte, the
// queue that holds requests while the upstream's rate window is spent, fallback models, and
// the seed's task routing. The fake upstream scripts the statuses and counts every attempt.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { BIN, startGateway, startFake, request, generate, until, TEST_KEY } = require('./lib.js');

let up, gw;
let seq = 0;
const fresh = (what) => `${what} ${++seq} ${Date.now()}`; // never a cache hit

// Fast backoff, so that a test of five retries takes milliseconds.
const FAST = 'upstream_retry_base = 0.01\nupstream_retry_max = 0.05\n';

before(async () => {
    up = await startFake();
    gw = await startGateway({
        upstream: `http://127.0.0.1:${up.port}`,
        threads: 2,
        config: `[aigate]\n${FAST}usage_log_flush = 0.1\nmodels = ["claude-sonnet-4-6"]\n` +
            '[aigate.fallbacks]\n"claude-sonnet-4-6" = ["claude-haiku-4-5"]\n',
    });
});

after(async () => {
    await gw.stop();
    await up.close();
});

function messages(g, body, headers = {}) {
    return request(`${g.url}/v1/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', 'x-api-key': 'client', ...headers },
        body: JSON.stringify({ model: 'claude-haiku-4-5', max_tokens: 64, ...body }),
    });
}

// Attempts the fake saw while `fn` ran.
async function attempts(fn) {
    const before = up.stats().requests;
    const res = await fn();
    return { res, n: up.stats().requests - before };
}

function usageEntries(g) {
    const r = spawnSync(BIN, ['r2', 'object', 'list', 'usage-logs', '--prefix', 'logs/', '--json'], { cwd: g.cwd, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const entries = [];
    for (const o of JSON.parse(r.stdout).objects) {
        const g2 = spawnSync(BIN, ['r2', 'object', 'get', `usage-logs/${o.key}`], { cwd: g.cwd, encoding: 'utf8' });
        assert.equal(g2.status, 0, g2.stderr);
        for (const line of g2.stdout.split('\n')) if (line) entries.push(JSON.parse(line));
    }
    return entries;
}

async function entryOf(g, requestId) {
    let e;
    await until(() => (e = usageEntries(g).find((x) => x.requestId === requestId)), 10000, `usage entry ${requestId}`);
    return e;
}

async function metric(g, name, labels) {
    const text = (await request(`${g.adminUrl}/metrics`)).body;
    const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`).join(',');
    const m = new RegExp(`^${name}\\{${want}\\} (\\S+)$`, 'm').exec(text);
    return m ? Number(m[1]) : 0;
}

test('529, 5xx, 429 and a reset are retried once and answered; x-aigate-retries says so', async () => {
    for (const step of [529, 500, 502, 503, 504, { status: 429, retryAfterMs: 20 }]) {
        up.setKnobs({ script: [step, 200] });
        const { res, n } = await attempts(() => generate(gw, { prompt: fresh('retry me') }));
        assert.equal(res.status, 200, `${JSON.stringify(step)}: ${res.body}`);
        assert.equal(n, 2, `${JSON.stringify(step)}: attempts`);
        assert.equal(res.headers['x-aigate-retries'], '1');
        assert.equal(res.headers['x-aigate-model'], 'claude-haiku-4-5');
    }
    // /v1/messages the same.
    up.setKnobs({ script: [529, 200] });
    const { res, n } = await attempts(() => messages(gw, { messages: [{ role: 'user', content: fresh('msg') }] }));
    assert.equal(res.status, 200, res.body);
    assert.equal(n, 2);
    assert.equal(res.headers['x-aigate-retries'], '1');
    const e = await entryOf(gw, res.headers['x-request-id']);
    assert.equal(e.attempts, 2);
    assert.equal(e.queuedMs, 0);
    assert.ok(await metric(gw, 'aigate_upstream_retries_total', { reason: 'overloaded' }) >= 2);
    assert.ok(await metric(gw, 'aigate_upstream_retries_total', { reason: 'server_error' }) >= 4);
    assert.ok(await metric(gw, 'aigate_upstream_retries_total', { reason: 'rate_limited' }) >= 1);

    // A reset connection. On a fresh gateway: libcurl makes a request again by itself when a
    // reused connection dies before answering, which would hide our attempt from the count.
    const g = await startGateway({ upstream: `http://127.0.0.1:${up.port}`, config: `[aigate]\n${FAST}` });
    try {
        up.setKnobs({ script: ['reset', 200] });
        const r = await attempts(() => generate(g, { prompt: fresh('reset me') }));
        assert.equal(r.res.status, 200, r.res.body);
        assert.equal(r.n, 2);
        assert.equal(r.res.headers['x-aigate-retries'], '1');
        assert.equal(await metric(g, 'aigate_upstream_retries_total', { reason: 'connection' }), 1);
    } finally {
        await g.stop();
    }
    up.setKnobs({ script: null });
});

test('400, 401, 403 and 404 are not retried', async () => {
    for (const status of [400, 401, 403, 404]) {
        up.setKnobs({ script: [status, 200] });
        const { res, n } = await attempts(() => generate(gw, { prompt: fresh('no retry') }));
        assert.equal(res.status, 502, `${status}`);
        assert.deepEqual(res.json, { error: 'AI service error' });
        assert.equal(n, 1, `${status}: attempts`);
        assert.equal(res.headers['x-aigate-retries'], '0');
        const m = await attempts(() => messages(gw, { messages: [{ role: 'user', content: fresh('no retry') }] }));
        assert.equal(m.res.status, 200, 'the script step was used by the first request only');
    }
    up.setKnobs({ script: [403] });
    const { res, n } = await attempts(() => messages(gw, { messages: [{ role: 'user', content: fresh('msg 403') }] }));
    assert.equal(res.status, 403, 'passed through as Anthropic said it');
    assert.equal(res.json.error.type, 'permission_error');
    assert.equal(n, 1);
    up.setKnobs({ script: null });
});

test('retry-after is waited; one past the cap and x-should-retry: false end the retries', async () => {
    up.resetStats();
    up.setKnobs({ script: [{ status: 529, retryAfter: 2 }, 200] });
    let { res, n } = await attempts(() => generate(gw, { prompt: fresh('wait for it') }));
    assert.equal(res.status, 200, res.body);
    assert.equal(n, 2);
    const [a, b] = up.stats().arrivals.slice(-2);
    assert.ok(b.t - a.t >= 2000, `second attempt ${b.t - a.t} ms after the first`);

    // Past upstream_retry_max_wait (60 s): 502 at once, without waiting.
    up.setKnobs({ script: [{ status: 529, retryAfter: 120 }, 200] });
    const t0 = Date.now();
    ({ res, n } = await attempts(() => generate(gw, { prompt: fresh('too long') })));
    assert.equal(res.status, 502);
    assert.equal(n, 1);
    assert.ok(Date.now() - t0 < 5000, `gave up after ${Date.now() - t0} ms`);

    up.setKnobs({ script: [{ status: 529, shouldRetry: false }, 200] });
    ({ res, n } = await attempts(() => generate(gw, { prompt: fresh('told not to') })));
    assert.equal(res.status, 502);
    assert.equal(n, 1);
    // x-should-retry: true makes a status worth another try that is not otherwise.
    up.setKnobs({ script: [{ status: 409, shouldRetry: true }, 200] });
    ({ res, n } = await attempts(() => generate(gw, { prompt: fresh('asked to') })));
    assert.equal(res.status, 200);
    assert.equal(n, 2);
    // A 429 without retry-after is a spend cap: waiting does not cure it.
    up.setKnobs({ script: [{ status: 429, retryAfter: null, retryAfterMs: null }, 200] });
    ({ res, n } = await attempts(() => messages(gw, { messages: [{ role: 'user', content: fresh('capped') }] })));
    up.setKnobs({ script: null });
    assert.equal(n, 1);
});

test('retries spent: 502 after upstream_retries + 1 attempts, all inside upstream_deadline', async () => {
    up.setKnobs({ script: [500, 500, 500, 500, 500] });
    const { res, n } = await attempts(() => generate(gw, { prompt: fresh('always failing') }));
    assert.equal(res.status, 502);
    assert.deepEqual(res.json, { error: 'AI service error' });
    assert.equal(n, 3, 'upstream_retries defaults to 2');
    assert.equal(res.headers['x-aigate-retries'], '2');
    up.setKnobs({ script: null, failStatus: 500 });

    const g = await startGateway({
        upstream: `http://127.0.0.1:${up.port}`,
        config: '[aigate]\nupstream_retries = 10\nupstream_retry_base = 0.3\nupstream_retry_max = 0.3\nupstream_deadline = 1\n',
    });
    try {
        const t0 = Date.now();
        const r = await attempts(() => generate(g, { prompt: fresh('deadline') }));
        const took = Date.now() - t0;
        assert.equal(r.res.status, 502);
        assert.ok(took < 1500, `took ${took} ms with a 1 s deadline`);
        assert.ok(r.n >= 1 && r.n < 11, `${r.n} attempts`);
    } finally {
        up.resetKnobs();
        await g.stop();
    }
});

// The events of an SSE body.
function events(text) {
    return text.split('\n\n').filter(Boolean).map((block) => {
        const ev = /^event: (.*)$/m.exec(block);
        return ev ? ev[1] : '';
    });
}

test('a stream refused before its first byte is retried; one cut after it is not', async () => {
    up.setKnobs({ script: [529, 200] });
    let { res, n } = await attempts(() => generate(gw, { prompt: fresh('stream me'), stream: true }));
    assert.equal(res.status, 200);
    assert.equal(n, 2);
    assert.equal(res.headers['x-aigate-retries'], '1');
    assert.ok(events(res.body).includes('message_stop'));

    up.setKnobs({ script: null, midStreamError: 2 });
    ({ res, n } = await attempts(() => messages(gw, { stream: true, messages: [{ role: 'user', content: fresh('cut me') }] })));
    assert.equal(res.status, 200);
    assert.equal(n, 1, 'bytes had reached the client: never made again');
    assert.ok(events(res.body).includes('error'));
    up.resetKnobs();
});

test('fallback: sonnet overloaded three times, haiku answers, and the answer says so', async () => {
    up.setKnobs({ modelStatus: { 'claude-sonnet-4-6': 529 } });
    up.resetStats();
    const prompt = fresh('fall back');
    const res = await generate(gw, { prompt, model: 'claude-sonnet-4-6' });
    assert.equal(res.status, 200, res.body);
    assert.equal(res.headers['x-aigate-model'], 'claude-haiku-4-5');
    assert.equal(res.headers['x-aigate-retries'], '2');
    const models = up.stats().arrivals.map((a) => a.model);
    assert.deepEqual(models, ['claude-sonnet-4-6', 'claude-sonnet-4-6', 'claude-sonnet-4-6', 'claude-haiku-4-5']);
    const e = await entryOf(gw, res.headers['x-request-id']);
    assert.equal(e.fallbackFrom, 'claude-sonnet-4-6');
    assert.equal(e.model, 'claude-haiku-4-5');
    assert.equal(e.attempts, 4);

    const m = await messages(gw, { model: 'claude-sonnet-4-6', messages: [{ role: 'user', content: fresh('fall back msg') }] });
    assert.equal(m.status, 200, m.body);
    assert.equal(m.headers['x-aigate-model'], 'claude-haiku-4-5');
    assert.equal(m.json.model, 'claude-haiku-4-5');
    assert.ok(await metric(gw, 'aigate_upstream_fallbacks_total', { model: 'claude-sonnet-4-6' }) >= 2);

    // The fallback's answer is not cached as sonnet's: the same request goes upstream again.
    up.resetKnobs();
    const again = await generate(gw, { prompt, model: 'claude-sonnet-4-6' });
    assert.equal(again.status, 200);
    assert.notEqual(again.headers['x-aigate-cache'], 'hit');
    assert.equal(again.headers['x-aigate-model'], 'claude-sonnet-4-6');
});

test('task routing: the seed table, DEFAULT_MODEL for other tasks, model beats task', async () => {
    const table = {
        classify: 'claude-haiku-4-5', summarize: 'claude-haiku-4-5', generate: 'claude-haiku-4-5',
        analyze: 'claude-sonnet-4-6', code_review: 'claude-sonnet-4-6', strategy: 'claude-opus-4-6',
    };
    for (const [task, model] of Object.entries(table)) {
        const res = await generate(gw, { prompt: fresh(task), task });
        assert.equal(res.status, 200, `${task}: ${res.body}`);
        const body = up.stats().lastRequest.body;
        assert.equal(body.model, model, task);
        assert.equal(body.task, undefined, 'task is never forwarded');
    }
    let res = await generate(gw, { prompt: fresh('other'), task: 'poetry' });
    assert.equal(res.status, 200);
    assert.equal(up.stats().lastRequest.body.model, 'claude-haiku-4-5');
    res = await generate(gw, { prompt: fresh('explicit'), task: 'strategy', model: 'claude-sonnet-4-6' });
    assert.equal(res.status, 200);
    assert.equal(up.stats().lastRequest.body.model, 'claude-sonnet-4-6');
    res = await generate(gw, { prompt: fresh('not allowed'), task: 'strategy', model: 'claude-opus-4-6' });
    assert.equal(res.status, 400, 'an explicit model is allowlist-checked, even with a task');

    const g = await startGateway({
        upstream: `http://127.0.0.1:${up.port}`,
        config: '[aigate]\n[aigate.routing]\nsummarize = "claude-opus-4-6"\n',
    });
    try {
        res = await generate(g, { prompt: fresh('configured'), task: 'summarize' });
        assert.equal(res.status, 200);
        assert.equal(up.stats().lastRequest.body.model, 'claude-opus-4-6');
        res = await generate(g, { prompt: fresh('replaced'), task: 'strategy' });
        assert.equal(up.stats().lastRequest.body.model, 'claude-haiku-4-5', 'the table replaces the seed default');
    } finally {
        await g.stop();
    }
});

// ---- the queue: a window of 5 requests per 1.5 s ----------------------------------------

const WINDOW = { limit: 5, windowMs: 1500 };

async function spendWindow(g, window = WINDOW) {
    up.setKnobs({ rateWindow: window }); // a new window from the next request
    for (let i = 0; i < window.limit; i++) {
        const r = await generate(g, { prompt: fresh('prime') });
        assert.equal(r.status, 200, r.body);
    }
}

test('queueing: requests wait for the reset instead of failing, and none reach a spent window', async () => {
    const g = await startGateway({ upstream: `http://127.0.0.1:${up.port}`, threads: 2, config: '[aigate]\nusage_log_flush = 0.1\n' });
    try {
        up.resetStats();
        await spendWindow(g);
        const all = Array.from({ length: 20 }, (_, i) => generate(g, { prompt: fresh(`queued ${i}`) }, {}));
        await until(async () => (await metric(g, 'aigate_queue_depth', { model: 'claude-haiku-4-5' })) >= 10, 5000, 'requests in the queue');
        const res = await Promise.all(all);
        for (const r of res) assert.equal(r.status, 200, r.body);
        assert.equal(up.stats().spentHits, 0, 'no request reached the upstream while its window was spent');
        assert.equal(await metric(g, 'aigate_queue_depth', { model: 'claude-haiku-4-5' }), 0);
        assert.ok(await metric(g, 'aigate_queue_wait_seconds_count', { model: 'claude-haiku-4-5' }) >= 15);
        const e = await entryOf(g, res[19].headers['x-request-id']);
        assert.ok(e.queuedMs > 0, `queuedMs ${e.queuedMs}`);
    } finally {
        up.resetKnobs();
        await g.stop();
    }
});

test('queue_max: the excess gets 503 with Retry-After at once; a client that leaves is dropped', async () => {
    const g = await startGateway({ upstream: `http://127.0.0.1:${up.port}`, config: '[aigate]\nqueue_max = 5\n' });
    try {
        up.resetStats();
        await spendWindow(g);
        const held = Array.from({ length: 5 }, (_, i) => generate(g, { prompt: fresh(`held ${i}`) }));
        await until(async () => (await metric(g, 'aigate_queue_depth', { model: 'claude-haiku-4-5' })) === 5, 5000, '5 in the queue');
        const t0 = Date.now();
        const over = await generate(g, { prompt: fresh('one too many') });
        assert.equal(over.status, 503);
        assert.deepEqual(over.json, { error: 'AI service busy: too many requests are waiting' });
        assert.ok(Number(over.headers['retry-after']) >= 1);
        const overMsg = await messages(g, { messages: [{ role: 'user', content: fresh('msg too many') }] });
        assert.equal(overMsg.status, 503);
        assert.equal(overMsg.json.type, 'error');
        assert.equal(overMsg.json.error.type, 'overloaded_error');
        assert.ok(overMsg.headers['retry-after']);
        assert.ok(Date.now() - t0 < 1000, 'refused at once, not at the reset');
        for (const r of await Promise.all(held)) assert.equal(r.status, 200, r.body);
        assert.equal(up.stats().spentHits, 0);

        // A client that goes away while held leaves the queue at once; the upstream never sees it.
        // A long window, so the client leaves well before its reset.
        await spendWindow(g, { limit: 5, windowMs: 3000 });
        const seen = up.stats().requests;
        const sock = net.connect(g.port, '127.0.0.1');
        const body = JSON.stringify({ prompt: fresh('leaving') });
        sock.write(`POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
        await until(async () => (await metric(g, 'aigate_queue_depth', { model: 'claude-haiku-4-5' })) === 1, 5000, 'held');
        sock.resetAndDestroy(); // gone (a FIN alone is a half-close: the answer is still wanted)
        await until(async () => (await metric(g, 'aigate_queue_depth', { model: 'claude-haiku-4-5' })) === 0, 1000, 'dropped');
        // The next request waits for the reset; by its answer the left one would have gone.
        const next = await generate(g, { prompt: fresh('after the reset') });
        assert.equal(next.status, 200);
        assert.equal(up.stats().requests - seen, 1, `only the request still there reached the upstream: ${JSON.stringify(up.stats().arrivals.slice(-3))} ${JSON.stringify(up.stats().statuses)}`);
    } finally {
        up.resetKnobs();
        await g.stop();
    }
});

test('a reset past queue_timeout is refused at once; the metrics pass promtool', async () => {
    const g = await startGateway({ upstream: `http://127.0.0.1:${up.port}`, config: '[aigate]\nqueue_timeout = 0.5\n' });
    try {
        await spendWindow(g);
        const t0 = Date.now();
        const r = await generate(g, { prompt: fresh('too far') });
        assert.equal(r.status, 503);
        assert.ok(Date.now() - t0 < 400, 'not held for a reset it cannot wait for');
        const text = (await request(`${g.adminUrl}/metrics`)).body;
        const p = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
        if (p.error) return; // promtool is installed by make test; run alone without it, skip
        assert.equal(p.status, 0, p.stdout + p.stderr);
    } finally {
        up.resetKnobs();
        await g.stop();
    }
});

test('scheduled tasks: routed by task through [aigate.routing], retried, fallen back', async () => {
    const g = await startGateway({
        upstream: `http://127.0.0.1:${up.port}`,
        config: `[aigate]\n${FAST}usage_log_flush = 0.1\n[aigate.routing]\nstrategy = "claude-sonnet-4-6"\n` +
            '[aigate.fallbacks]\n"claude-sonnet-4-6" = ["claude-haiku-4-5"]\n' +
            '[[aigate.tasks]]\nname = "plan"\ncron = "0 9 * * MON"\ntask = "strategy"\nprompt = "Plan the week."\n',
    });
    try {
        up.setKnobs({ script: [529, 200] });
        let r = await request(`${g.adminUrl}/tasks/plan/run`, { method: 'POST', timeoutMs: 30000 });
        assert.equal(r.status, 200, r.body);
        assert.equal(r.json.outcome, 'ok');
        assert.equal(r.json.attempts, 2);
        assert.equal(up.stats().lastRequest.body.model, 'claude-sonnet-4-6', 'strategy routed by the table');

        up.setKnobs({ script: null, modelStatus: { 'claude-sonnet-4-6': 529 } });
        r = await request(`${g.adminUrl}/tasks/plan/run`, { method: 'POST', timeoutMs: 30000 });
        assert.equal(r.json.outcome, 'ok', r.body);
        assert.equal(r.json.attempts, 4);
        assert.equal(up.stats().lastRequest.body.model, 'claude-haiku-4-5');
        let e;
        await until(() => (e = usageEntries(g).filter((x) => x.route === 'scheduled').pop()) && e.fallbackFrom, 10000, 'the run\'s entry');
        assert.equal(e.fallbackFrom, 'claude-sonnet-4-6');
        assert.equal(e.model, 'claude-haiku-4-5');
        assert.ok(await metric(g, 'aigate_upstream_retries_total', { reason: 'overloaded' }) >= 3);
    } finally {
        up.resetKnobs();
        await g.stop();
    }
});

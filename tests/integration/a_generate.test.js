// SPDX-License-Identifier: MIT
//
// a_generate.test.js: every row of the seed's POST /api/generate contract
// (mission.md section 1), against the real binary and the fake upstream.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { startGateway, startFake, request, generate, TEST_KEY, tmpdir } = require('./lib.js');

let up, gw;

before(async () => {
    up = await startFake();
    gw = await startGateway({
        upstream: `http://127.0.0.1:${up.port}`,
        // No retries: these tests are about how one failed answer maps (retries: s_resilience).
        config: `[vars]\nMAX_TOKENS = "256"\n[aigate]\nmodels = ["claude-sonnet-4-6"]\nupstream_timeout = 2\nupstream_retries = 0\n`,
    });
});

after(async () => {
    await gw.stop();
    await up.close();
    assert.ok(!gw.stderr.includes(TEST_KEY), 'the API key must never reach the log');
});

function assertCors(res) {
    assert.equal(res.headers['access-control-allow-origin'], '*', `CORS missing on ${res.status}`);
}

test('OPTIONS on any path answers the CORS preflight', async () => {
    for (const p of ['/api/generate', '/anything/else']) {
        const res = await request(gw.url + p, { method: 'OPTIONS' });
        assert.equal(res.status, 200);
        assert.equal(res.body, '');
        assertCors(res);
        assert.equal(res.headers['access-control-allow-methods'], 'POST, OPTIONS');
        assert.equal(res.headers['access-control-allow-headers'], 'Content-Type, Authorization');
    }
});

test('other methods and paths get 404 Not Found', async () => {
    for (const [method, p] of [['GET', '/api/generate'], ['POST', '/api/other'], ['PUT', '/api/generate'], ['GET', '/']]) {
        const res = await request(gw.url + p, { method });
        assert.equal(res.status, 404, `${method} ${p}`);
        assert.equal(res.body, 'Not Found');
        assertCors(res);
    }
});

test('a body that is not JSON gets 400 Invalid JSON', async () => {
    for (const body of ['not json', '{"prompt":', '', '{"prompt":"a"} trailing']) {
        const res = await generate(gw, body);
        assert.equal(res.status, 400, JSON.stringify(body));
        assert.deepEqual(res.json, { error: 'Invalid JSON' });
        assertCors(res);
    }
});

test('a missing, empty, non-string or too long prompt gets 400 Invalid prompt', async () => {
    const cases = [{}, { prompt: '' }, { prompt: 42 }, { prompt: null }, { prompt: ['a'] }, [], 'str', null,
        { prompt: 'x'.repeat(4001) },
        // 2000 emoji are 4000 UTF-16 units; one more unit is over the limit.
        { prompt: '😀'.repeat(2000) + 'a' }];
    for (const body of cases) {
        const res = await generate(gw, JSON.stringify(body));
        assert.equal(res.status, 400, JSON.stringify(body).slice(0, 60));
        assert.deepEqual(res.json, { error: 'Invalid prompt' });
        assertCors(res);
    }
});

test('a prompt of exactly 4000 UTF-16 units is accepted', async () => {
    const res = await generate(gw, { prompt: '😀'.repeat(2000) });
    assert.equal(res.status, 200, res.body);
});

test('the upstream answer comes back in the seed shape, and upstream got exactly the seed request', async () => {
    up.resetStats();
    const res = await generate(gw, { prompt: 'Explain zero-cost AI infrastructure in 2 sentences.' });
    assert.equal(res.status, 200, res.body);
    assertCors(res);
    assert.match(res.headers['content-type'], /application\/json/);
    assert.deepEqual(Object.keys(res.json), ['output', 'usage', 'cached']);
    assert.equal(res.json.cached, false);
    assert.match(res.json.output, /zero-cost AI infrastructure/);
    assert.ok(res.json.usage.input_tokens > 0 && res.json.usage.output_tokens > 0);
    const st = up.stats();
    assert.equal(st.requests, 1);
    const sent = st.lastRequest;
    assert.deepEqual(sent.body, {
        model: 'claude-haiku-4-5',
        max_tokens: 256,
        messages: [{ role: 'user', content: 'Explain zero-cost AI infrastructure in 2 sentences.' }],
    });
    assert.equal(sent.headers['anthropic-version'], '2023-06-01');
    assert.match(sent.headers['content-type'], /application\/json/);
    assert.equal(sent.headers['x-api-key'], TEST_KEY.length, 'x-api-key is forwarded (the fake logs its length)');
});

test('the text of every text block is joined, whatever block comes first', async () => {
    // The fake answers [thinking, text, tool_use, text]: content[0] is not text.
    const prompt = '[[thinking]][[blocks]] several blocks please';
    const res = await generate(gw, { prompt });
    assert.equal(res.status, 200, res.body);
    assert.equal(res.json.output, 'Echo: ' + prompt + 'Second text block.');
});

test('emoji and CJK prompts work end to end', async () => {
    const prompt = '你好，世界 🌍 — naïve café';
    const res = await generate(gw, { prompt });
    assert.equal(res.status, 200, res.body);
    assert.ok(res.json.output.includes('你好，世界'), res.json.output);
    assert.ok(res.json.output.includes('🌍'), res.json.output);
    assert.equal(up.stats().lastRequest.body.messages[0].content, prompt);
});

test('models are checked against the allowlist', async () => {
    let res = await generate(gw, { prompt: 'hi', model: 'claude-opus-4-6' });
    assert.equal(res.status, 400);
    assert.deepEqual(res.json, { error: 'Invalid model' });
    assertCors(res);
    res = await generate(gw, { prompt: 'hi', model: 42 });
    assert.equal(res.status, 400);
    res = await generate(gw, { prompt: 'hi', model: 'claude-sonnet-4-6' });
    assert.equal(res.status, 200, res.body);
    assert.equal(up.stats().lastRequest.body.model, 'claude-sonnet-4-6');
});

test('upstream errors become 502 AI service error, and the gateway keeps serving', async () => {
    for (const status of [400, 401, 429, 500, 529]) {
        up.setKnobs({ failStatus: status });
        const res = await generate(gw, { prompt: `fail with ${status}` });
        assert.equal(res.status, 502, `upstream ${status}`);
        assert.deepEqual(res.json, { error: 'AI service error' });
        assertCors(res);
    }
    up.setKnobs({ failStatus: 0, garbage: true });
    let res = await generate(gw, { prompt: 'garbage please' });
    assert.equal(res.status, 502);
    up.resetKnobs();
    res = await generate(gw, { prompt: 'healthy again' });
    assert.equal(res.status, 200, res.body);
    assert.match(gw.stderr, /upstream answered 529: overloaded_error/);
});

test('a connection reset by upstream becomes 502', async () => {
    up.setKnobs({ reset: true });
    const res = await generate(gw, { prompt: 'reset me' });
    up.resetKnobs();
    assert.equal(res.status, 502);
    assert.deepEqual(res.json, { error: 'AI service error' });
});

test('a stalled upstream is cut at upstream_timeout with 502', async () => {
    up.setKnobs({ stall: true });
    const t0 = Date.now();
    const res = await generate(gw, { prompt: 'stall me' });
    const elapsed = Date.now() - t0;
    up.resetKnobs();
    assert.equal(res.status, 502);
    assert.ok(elapsed >= 1900, `cut after ${elapsed} ms, before the 2 s timeout`);
    assert.ok(elapsed < 10000, `cut after ${elapsed} ms`);
});

test('every request gets one JSON access-log line without secrets', async () => {
    const res = await generate(gw, { prompt: 'log me' });
    assert.equal(res.status, 200);
    const id = res.headers['x-request-id'];
    assert.ok(id && id.length >= 8);
    let line;
    const deadline = Date.now() + 5000;
    while (!line && Date.now() < deadline) {
        line = gw.accessLog().find((l) => l.id === id);
        if (!line) await new Promise((r) => setTimeout(r, 10));
    }
    assert.ok(line, 'access log line for the request');
    assert.equal(line.method, 'POST');
    assert.equal(line.path, '/api/generate');
    assert.equal(line.status, 200);
    assert.equal(line.model, 'claude-haiku-4-5');
    assert.ok(line.bytes > 0 && line.duration_us > 0 && line.upstream_us > 0);
    assert.ok(line.duration_us >= line.upstream_us);
    assert.match(line.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
});

test('without ANTHROPIC_API_KEY the server starts, says so, and answers 503', async () => {
    const g = await startGateway({ key: false, upstream: `http://127.0.0.1:${up.port}` });
    try {
        assert.match(g.stderr, /ANTHROPIC_API_KEY is not set/);
        const res = await generate(g, { prompt: 'hi' });
        assert.equal(res.status, 503);
        assert.deepEqual(res.json, { error: 'Upstream not configured: set ANTHROPIC_API_KEY' });
        assertCors(res);
        // Validation still comes first.
        assert.equal((await generate(g, 'nope')).status, 400);
    } finally {
        await g.stop();
    }
});

test('the key is read from .dev.vars when the environment has none', async () => {
    const dir = tmpdir();
    fs.writeFileSync(path.join(dir, '.dev.vars'), `# local secrets\nOTHER=1\nANTHROPIC_API_KEY="${TEST_KEY}"\n`);
    const g = await startGateway({ key: false, cwd: dir, upstream: `http://127.0.0.1:${up.port}` });
    try {
        const res = await generate(g, { prompt: 'key from dotenv' });
        assert.equal(res.status, 200, res.body);
        assert.ok(!g.stderr.includes(TEST_KEY));
    } finally {
        await g.stop();
    }
});

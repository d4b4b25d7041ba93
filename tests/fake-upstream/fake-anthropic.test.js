// SPDX-License-Identifier: MIT
//
// fake-anthropic.test.js: checks that the fake upstream speaks the real wire format and that
// each knob does what tests of the gateway will rely on. Run: node --test tests/fake-upstream/
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const path = require('node:path');
const { spawn } = require('node:child_process');
const fake = require('./fake-anthropic.js');

const T = { timeout: 20000 };
const KEY = 'sk-test-key';
const HEADERS = { 'x-api-key': KEY, 'anthropic-version': '2023-06-01', 'content-type': 'application/json' };

// Servers and children still open when a test times out would keep the runner alive forever;
// the final hook ends them so a failure is reported instead of a hang.
const open = new Set();
test.after(async () => {
    for (const o of open) await o.close();
});

async function withServer(opts, fn) {
    const srv = await fake.start({ apiKey: KEY, ...opts });
    open.add(srv);
    try {
        return await fn(srv);
    } finally {
        await srv.close();
        open.delete(srv);
    }
}

function msg(text, extra = {}) {
    return { model: 'claude-test', max_tokens: 1000, messages: [{ role: 'user', content: text }], ...extra };
}

function post(srv, body, { headers = HEADERS, raw = false, signal, path: p = '/v1/messages' } = {}) {
    return fetch(srv.url + p, { method: 'POST', headers, body: raw ? body : JSON.stringify(body), signal });
}

async function getJSON(srv, p) {
    const r = await fetch(srv.url + p);
    return { status: r.status, body: await r.json() };
}

async function postJSON(srv, p, body) {
    const r = await fetch(srv.url + p, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return { status: r.status, body: await r.json() };
}

// Strict SSE parser for the framing the real API uses: every event is exactly
// "event: NAME\ndata: JSON\n\n" and the data's type equals NAME.
function parseSSE(text) {
    assert.ok(text.endsWith('\n\n'), 'stream ends with a blank line');
    const out = [];
    for (const frame of text.slice(0, -2).split('\n\n')) {
        const lines = frame.split('\n');
        assert.equal(lines.length, 2, `frame has two lines: ${JSON.stringify(frame)}`);
        assert.match(lines[0], /^event: [a-z_]+$/);
        assert.match(lines[1], /^data: /);
        const event = lines[0].slice('event: '.length);
        const rawData = lines[1].slice('data: '.length);
        const data = JSON.parse(rawData);
        assert.equal(data.type, event, 'data.type matches the event name');
        out.push({ event, data, rawData });
    }
    return out;
}

// Rebuilds a Message from stream events the way the SDK accumulator does.
function accumulate(events) {
    let m = null;
    const partial = {};
    for (const { event, data } of events) {
        if (event === 'message_start') m = structuredClone(data.message);
        else if (event === 'content_block_start') {
            assert.equal(data.index, m.content.length, 'blocks start in order');
            m.content.push(structuredClone(data.content_block));
        } else if (event === 'content_block_delta') {
            const b = m.content[data.index];
            const d = data.delta;
            if (d.type === 'text_delta') b.text += d.text;
            else if (d.type === 'thinking_delta') b.thinking += d.thinking;
            else if (d.type === 'signature_delta') b.signature = d.signature;
            else if (d.type === 'input_json_delta') partial[data.index] = (partial[data.index] || '') + d.partial_json;
            else assert.fail(`unknown delta ${d.type}`);
        } else if (event === 'content_block_stop') {
            if (partial[data.index] !== undefined) m.content[data.index].input = JSON.parse(partial[data.index]);
        } else if (event === 'message_delta') {
            m.stop_reason = data.delta.stop_reason;
            m.stop_sequence = data.delta.stop_sequence;
            Object.assign(m.usage, data.usage);
        }
    }
    return m;
}

function assertErrorShape(body, type, message) {
    assert.deepEqual(Object.keys(body), ['type', 'error']);
    assert.equal(body.type, 'error');
    assert.deepEqual(Object.keys(body.error), ['type', 'message']);
    assert.equal(body.error.type, type);
    if (message !== undefined) assert.equal(body.error.message, message);
}

test('header checks answer like the real API', T, async () => {
    await withServer({}, async (srv) => {
        const noKey = { ...HEADERS };
        delete noKey['x-api-key'];
        let r = await post(srv, msg('hi'), { headers: noKey });
        assert.equal(r.status, 401);
        assert.match(r.headers.get('request-id'), /^req_/);
        assertErrorShape(await r.json(), 'authentication_error', 'x-api-key header is required');

        r = await post(srv, msg('hi'), { headers: { ...HEADERS, 'x-api-key': 'wrong' } });
        assert.equal(r.status, 401);
        assertErrorShape(await r.json(), 'authentication_error', 'invalid x-api-key');

        const bearer = { ...noKey, authorization: `Bearer ${KEY}` };
        r = await post(srv, msg('hi'), { headers: bearer });
        assert.equal(r.status, 200);
        await r.arrayBuffer();

        const noVersion = { ...HEADERS };
        delete noVersion['anthropic-version'];
        r = await post(srv, msg('hi'), { headers: noVersion });
        assert.equal(r.status, 400);
        assertErrorShape(await r.json(), 'invalid_request_error', 'anthropic-version: header is required');

        r = await post(srv, msg('hi'), { headers: { ...HEADERS, 'content-type': 'text/plain' } });
        assert.equal(r.status, 400);
        assertErrorShape(await r.json(), 'invalid_request_error');

        const s = srv.stats();
        assert.equal(s.requests, 5);
        assert.equal(s.errors, 4);
        assert.equal(s.ok, 1);
        assert.deepEqual(s.statuses, { 200: 1, 400: 2, 401: 2 });
    });
});

test('without --api-key any non-empty key is accepted', T, async () => {
    await withServer({ apiKey: undefined }, async (srv) => {
        let r = await post(srv, msg('hi'), { headers: { ...HEADERS, 'x-api-key': 'anything' } });
        assert.equal(r.status, 200);
        await r.arrayBuffer();
        r = await post(srv, msg('hi'), { headers: { ...HEADERS, 'x-api-key': '' } });
        assert.equal(r.status, 401);
        assertErrorShape(await r.json(), 'authentication_error', 'x-api-key header is required');
    });
});

test('body validation rejects bad and unknown fields', T, async () => {
    await withServer({}, async (srv) => {
        const cases = [
            ['{not json', /not valid JSON/],
            [JSON.stringify([1]), /valid dictionary/],
            [JSON.stringify({ max_tokens: 5, messages: [{ role: 'user', content: 'x' }] }), /^model: Field required$/],
            [JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'x' }] }), /^max_tokens: Field required$/],
            [JSON.stringify({ model: 'm', max_tokens: 5 }), /^messages: Field required$/],
            [JSON.stringify(msg('x', { max_tokens: 0 })), /^max_tokens: .*greater than or equal to 1/],
            [JSON.stringify(msg('x', { max_tokens: 1.5 })), /^max_tokens: .*valid integer/],
            [JSON.stringify(msg('x', { max_tokens: '5' })), /^max_tokens: .*valid integer/],
            [JSON.stringify(msg('x', { messages: [] })), /^messages: /],
            [JSON.stringify(msg('x', { messages: 'hi' })), /^messages: /],
            [JSON.stringify(msg('x', { messages: [{ role: 'system', content: 'x' }] })), /^messages\.0\.role: /],
            [JSON.stringify(msg('x', { messages: [{ role: 'user' }] })), /^messages\.0\.content: Field required$/],
            [JSON.stringify(msg('x', { foo: 1 })), /^foo: Extra inputs are not permitted$/],
            [JSON.stringify(msg('x', { context_management: {} })), /^context_management: Extra inputs are not permitted$/],
            [JSON.stringify(msg('x', { metadata: { user_id: 'u', tenant: 't' } })), /^metadata\.tenant: Extra inputs are not permitted$/],
            [JSON.stringify(msg('x', { stream: 'yes' })), /^stream: /],
        ];
        for (const [body, re] of cases) {
            const r = await post(srv, body, { raw: true });
            assert.equal(r.status, 400, body);
            const j = await r.json();
            assertErrorShape(j, 'invalid_request_error');
            assert.match(j.error.message, re, body);
        }
        // Every documented top-level field passes.
        const all = msg('x', {
            system: 's', temperature: 0.5, top_p: 0.9, top_k: 5, stop_sequences: ['zz'], stream: false,
            metadata: { user_id: 'u' }, tools: [], tool_choice: { type: 'auto' }, thinking: { type: 'disabled' },
            service_tier: 'auto', container: null, inference_geo: null, output_config: {}, cache_control: null,
            mcp_servers: [],
        });
        const r = await post(srv, all);
        assert.equal(r.status, 200, JSON.stringify(await r.clone().json()));
        await r.arrayBuffer();
    });
});

test('replies are deterministic and usage follows the word rule', T, async () => {
    await withServer({}, async (srv) => {
        let r = await post(srv, msg('hello big world'));
        assert.equal(r.status, 200);
        assert.match(r.headers.get('content-type'), /^application\/json/);
        assert.match(r.headers.get('request-id'), /^req_/);
        assert.equal(r.headers.get('anthropic-ratelimit-requests-limit'), '1000');
        assert.match(r.headers.get('anthropic-ratelimit-tokens-reset'), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
        for (const k of ['requests', 'tokens', 'input-tokens', 'output-tokens'])
            for (const f of ['limit', 'remaining', 'reset']) assert.ok(r.headers.get(`anthropic-ratelimit-${k}-${f}`));
        const j = await r.json();
        assert.match(j.id, /^msg_/);
        assert.equal(j.type, 'message');
        assert.equal(j.role, 'assistant');
        assert.equal(j.model, 'claude-test');
        assert.deepEqual(j.content, [{ type: 'text', text: 'Echo: hello big world' }]);
        assert.equal(j.stop_reason, 'end_turn');
        assert.equal(j.stop_sequence, null);
        assert.deepEqual(j.usage, { input_tokens: 3, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: 4 });

        // Block content, a system prompt and earlier turns all count as input; the last user turn is echoed.
        r = await post(srv, {
            model: 'm', max_tokens: 50, system: [{ type: 'text', text: 'be brief' }],
            messages: [
                { role: 'user', content: 'first question' },
                { role: 'assistant', content: 'an answer' },
                { role: 'user', content: [{ type: 'text', text: 'second' }, { type: 'text', text: 'part two' }] },
            ],
        });
        const j2 = await r.json();
        assert.equal(j2.content[0].text, 'Echo: second\npart two');
        assert.equal(j2.usage.input_tokens, 2 + 2 + 2 + 3);
        assert.equal(j2.usage.output_tokens, 4);

        // max_tokens cuts the reply by words.
        r = await post(srv, msg('one two three four', { max_tokens: 3 }));
        const j3 = await r.json();
        assert.equal(j3.content[0].text, 'Echo: one two');
        assert.equal(j3.stop_reason, 'max_tokens');
        assert.equal(j3.usage.output_tokens, 3);

        // A stop sequence found in the reply ends it there.
        r = await post(srv, msg('alpha STOP beta', { stop_sequences: ['nope', 'STOP'] }));
        const j4 = await r.json();
        assert.equal(j4.content[0].text, 'Echo: alpha ');
        assert.equal(j4.stop_reason, 'stop_sequence');
        assert.equal(j4.stop_sequence, 'STOP');
        assert.equal(j4.usage.output_tokens, 2);

        // Same prompt, same reply text; ids differ.
        const a = await (await post(srv, msg('same'))).json();
        const b = await (await post(srv, msg('same'))).json();
        assert.deepEqual(a.content, b.content);
        assert.notEqual(a.id, b.id);
    });
});

test('[[blocks]] and [[thinking]] give multi-block replies', T, async () => {
    await withServer({}, async (srv) => {
        let j = await (await post(srv, msg('[[blocks]] weather?'))).json();
        assert.deepEqual(j.content.map((b) => b.type), ['text', 'tool_use', 'text']);
        assert.equal(j.content[0].text, 'Echo: [[blocks]] weather?');
        assert.match(j.content[1].id, /^toolu_/);
        assert.equal(j.content[1].name, 'fake_tool');
        assert.deepEqual(j.content[1].input, { echo: '[[blocks]] weather?' });
        assert.equal(j.content[2].text, 'Second text block.');
        assert.equal(j.stop_reason, 'tool_use');
        const expectOut = 3 + 2 + 3; // words of text, of the tool input JSON, of the last text
        assert.equal(j.usage.output_tokens, expectOut);

        const tools = [{ name: 'get_weather', input_schema: { type: 'object' } }];
        j = await (await post(srv, msg('[[thinking]][[blocks]] x', { tools }))).json();
        assert.deepEqual(j.content.map((b) => b.type), ['thinking', 'text', 'tool_use', 'text']);
        assert.equal(j.content[0].thinking, 'Thinking about: [[thinking]][[blocks]] x');
        assert.equal(typeof j.content[0].signature, 'string');
        assert.equal(j.content[2].name, 'get_weather');
    });
});

test('streaming sends the full event sequence, one write per event', T, async () => {
    await withServer({}, async (srv) => {
        const r = await post(srv, msg('hello there world', { stream: true }));
        assert.equal(r.status, 200);
        assert.equal(r.headers.get('content-type'), 'text/event-stream; charset=utf-8');
        assert.equal(r.headers.get('cache-control'), 'no-cache');
        assert.match(r.headers.get('request-id'), /^req_/);
        assert.ok(r.headers.get('anthropic-ratelimit-requests-remaining'));
        const events = parseSSE(await r.text());
        assert.deepEqual(events.map((e) => e.event), [
            'message_start', 'content_block_start', 'ping',
            'content_block_delta', 'content_block_delta', 'content_block_delta', 'content_block_delta',
            'content_block_stop', 'message_delta', 'message_stop',
        ]);
        const start = events[0].data.message;
        assert.deepEqual(start.content, []);
        assert.equal(start.stop_reason, null);
        assert.equal(start.usage.input_tokens, 3);
        assert.equal(start.usage.output_tokens, 1);
        assert.deepEqual(events[1].data, { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } });
        assert.equal(events[2].rawData, '{"type": "ping"}');
        assert.deepEqual(events.slice(3, 7).map((e) => e.data.delta), [
            { type: 'text_delta', text: 'Echo:' }, { type: 'text_delta', text: ' hello' },
            { type: 'text_delta', text: ' there' }, { type: 'text_delta', text: ' world' },
        ]);
        assert.deepEqual(events[7].data, { type: 'content_block_stop', index: 0 });
        assert.deepEqual(events[8].data.delta, { stop_reason: 'end_turn', stop_sequence: null });
        assert.equal(events[8].data.usage.output_tokens, 4);
        assert.equal(events[9].rawData, '{"type":"message_stop"}');

        // The streamed multi-block reply rebuilds to exactly the non-streamed one.
        const body = msg('[[thinking]][[blocks]] "quoted" \\ text', { max_tokens: 100 });
        const plain = await (await post(srv, body)).json();
        const streamed = accumulate(parseSSE(await (await post(srv, { ...body, stream: true })).text()));
        assert.deepEqual(streamed.content, plain.content.map((b) => (b.type === 'tool_use' ? { ...b, id: streamed.content[2].id } : b)));
        assert.equal(streamed.stop_reason, plain.stop_reason);
        assert.equal(streamed.usage.output_tokens, plain.usage.output_tokens);
        assert.equal(streamed.usage.input_tokens, plain.usage.input_tokens);

        const s = srv.stats();
        assert.equal(s.streams, 2);
        assert.equal(s.streamsCompleted, 2);
        assert.equal(s.streamsAborted, 0);
    });
});

test('tokenDelayMs spaces the deltas into separate chunks', T, async () => {
    await withServer({ tokenDelayMs: 25 }, async (srv) => {
        const r = await post(srv, msg('a b c d e f', { stream: true }));
        const reader = r.body.getReader();
        const dec = new TextDecoder();
        let chunks = 0;
        let text = '';
        for (let i = 0; i < 1000; i++) {
            const { value, done } = await reader.read();
            if (done) break;
            chunks++;
            text += dec.decode(value, { stream: true });
        }
        const deltas = parseSSE(text).filter((e) => e.event === 'content_block_delta').length;
        assert.equal(deltas, 7);
        // Deltas are a delay apart, so they cannot all arrive in one read; the bound is loose
        // because a reader starved on a busy machine may find two deltas waiting at once.
        assert.ok(chunks >= 4, `chunks ${chunks} for ${deltas} deltas`);
    });
});

test('latencyMs delays the response headers', T, async () => {
    await withServer({ latencyMs: 150 }, async (srv) => {
        const t0 = Date.now();
        const r = await post(srv, msg('x'));
        assert.ok(Date.now() - t0 >= 140, 'waited for the latency');
        assert.equal(r.status, 200);
        await r.arrayBuffer();
    });
});

test('failEvery with failStatus 429 fails every Nth request, with retry-after', T, async () => {
    await withServer({}, async (srv) => {
        const set = await postJSON(srv, '/_control', { failEvery: 3, failStatus: 429 });
        assert.equal(set.status, 200);
        assert.equal(set.body.failEvery, 3);
        const statuses = [];
        for (let i = 0; i < 6; i++) {
            const r = await post(srv, msg('x'));
            statuses.push(r.status);
            if (r.status === 429) {
                assert.equal(r.headers.get('retry-after'), '1');
                assert.match(r.headers.get('request-id'), /^req_/);
                assertErrorShape(await r.json(), 'rate_limit_error');
            } else {
                await r.arrayBuffer();
            }
        }
        assert.deepEqual(statuses, [200, 200, 429, 200, 200, 429]);

        srv.setKnobs({ failEvery: 2, retryAfter: 7, shouldRetry: false });
        let r = await post(srv, msg('x'));
        assert.equal(r.status, 200);
        await r.arrayBuffer();
        r = await post(srv, msg('x'));
        assert.equal(r.status, 429);
        assert.equal(r.headers.get('retry-after'), '7');
        assert.equal(r.headers.get('x-should-retry'), 'false');
        await r.arrayBuffer();

        const reset = await postJSON(srv, '/_control/reset', {});
        assert.deepEqual(reset.body, fake.DEFAULT_KNOBS);
        r = await post(srv, msg('x'));
        assert.equal(r.status, 200);
        await r.arrayBuffer();

        const bad = await postJSON(srv, '/_control', { failEvry: 2 });
        assert.equal(bad.status, 400);
        assert.match(bad.body.error, /failEvry: unknown knob/);
    });
});

test('failStatus alone fails every request with the matching error type', T, async () => {
    const table = {
        400: 'invalid_request_error', 401: 'authentication_error', 403: 'permission_error',
        404: 'not_found_error', 413: 'request_too_large', 429: 'rate_limit_error', 500: 'api_error',
        529: 'overloaded_error',
    };
    await withServer({}, async (srv) => {
        for (const [status, type] of Object.entries(table)) {
            srv.setKnobs({ failStatus: Number(status) });
            for (let i = 0; i < 2; i++) {
                const r = await post(srv, msg('x', { stream: i === 1 }));
                assert.equal(r.status, Number(status));
                assert.match(r.headers.get('content-type'), /^application\/json/);
                assertErrorShape(await r.json(), type);
                assert.equal(r.headers.get('retry-after'), status === '429' ? '1' : null);
            }
        }
        srv.resetKnobs();
        // The same through the prompt, for one request only.
        let r = await post(srv, msg('[[status:529]] busy?'));
        assert.equal(r.status, 529);
        assertErrorShape(await r.json(), 'overloaded_error', 'Overloaded');
        r = await post(srv, msg('fine'));
        assert.equal(r.status, 200);
        await r.arrayBuffer();
    });
});

test('reset destroys the connection without an answer', T, async () => {
    await withServer({ reset: true }, async (srv) => {
        await assert.rejects(post(srv, msg('x')), TypeError);
        assert.equal(srv.stats().resets, 1);
        srv.setKnobs({ reset: false });
        await assert.rejects(post(srv, msg('[[reset]]')), TypeError);
        const r = await post(srv, msg('x'));
        assert.equal(r.status, 200);
        await r.arrayBuffer();
        assert.equal(srv.stats().resets, 2);
    });
});

test('stall reads the body and never answers', T, async () => {
    await withServer({ stall: true }, async (srv) => {
        const waiting = srv.waitFor('stalls', 1, 5000);
        await assert.rejects(post(srv, msg('x'), { signal: AbortSignal.timeout(300) }), (e) =>
            ['TimeoutError', 'AbortError'].includes(e.name));
        assert.equal(await waiting, true);
        const s = srv.stats();
        assert.equal(s.stalls, 1);
        assert.equal(s.ok + s.errors, 0);
        assert.deepEqual(s.lastRequest.body, msg('x'));
        srv.setKnobs({ stall: false });
        const r = await post(srv, msg('x'));
        assert.equal(r.status, 200);
        await r.arrayBuffer();
    });
});

test('garbage answers 200 with a body that is not JSON', T, async () => {
    await withServer({ garbage: true }, async (srv) => {
        const r = await post(srv, msg('x'));
        assert.equal(r.status, 200);
        const text = await r.text();
        assert.throws(() => JSON.parse(text), SyntaxError);
        assert.equal(srv.stats().garbage, 1);
    });
});

test('midStreamError sends an error event after K deltas and ends the stream', T, async () => {
    await withServer({ midStreamError: 2 }, async (srv) => {
        let r = await post(srv, msg('one two three four', { stream: true }));
        assert.equal(r.status, 200);
        let events = parseSSE(await r.text());
        assert.deepEqual(events.map((e) => e.event), [
            'message_start', 'content_block_start', 'ping', 'content_block_delta', 'content_block_delta', 'error',
        ]);
        assert.equal(events[5].rawData, '{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}');
        // Non-streaming requests are not affected by this knob.
        r = await post(srv, msg('x'));
        assert.equal(r.status, 200);
        await r.arrayBuffer();
        srv.setKnobs({ midStreamError: null });
        r = await post(srv, msg('[[midstream:0]] x', { stream: true }));
        events = parseSSE(await r.text());
        assert.deepEqual(events.map((e) => e.event), ['message_start', 'content_block_start', 'ping', 'error']);
        const s = srv.stats();
        assert.equal(s.streamErrors, 2);
        assert.equal(s.streamsCompleted, 0);
        assert.equal(s.streamsAborted, 0);
    });
});

test('stats record what reached upstream and reset to zero', T, async () => {
    await withServer({}, async (srv) => {
        const bodies = [];
        for (let i = 0; i < 55; i++) {
            const b = msg(`n${i}`, { metadata: { user_id: `u${i}` } });
            bodies.push(b);
            const r = await post(srv, b, { headers: { ...HEADERS, 'anthropic-beta': 'b1,b2' } });
            await r.arrayBuffer();
        }
        const { status, body: s } = await getJSON(srv, '/stats');
        assert.equal(status, 200);
        assert.equal(s.requests, 55);
        assert.equal(s.ok, 55);
        assert.equal(s.errors, 0);
        assert.equal(s.bodies.length, 50);
        assert.deepEqual(s.bodies, bodies.slice(5));
        assert.deepEqual(s.lastRequest.body, bodies[54]);
        assert.equal(s.lastRequest.path, '/v1/messages');
        assert.equal(s.lastRequest.headers['x-api-key'], KEY.length);
        assert.equal(s.lastRequest.headers['anthropic-beta'], 'b1,b2');
        assert.ok(s.connections >= 1 && s.connections < 55, 'keep-alive reuses connections');
        assert.equal(s.maxInFlight, 1);

        const zeroed = await postJSON(srv, '/stats/reset', {});
        assert.equal(zeroed.status, 200);
        assert.equal(zeroed.body.requests, 0);
        assert.equal(zeroed.body.lastRequest, null);
        assert.deepEqual(zeroed.body.bodies, []);
        assert.equal(srv.stats().requests, 0);
    });
});

// Reads SSE events from a fetch response until `until(events)` holds; returns the events.
async function readEvents(res, until) {
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    const events = [];
    for (let i = 0; i < 10000 && !until(events); i++) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let at;
        while ((at = buf.indexOf('\n\n')) >= 0) {
            events.push(...parseSSE(buf.slice(0, at + 2)));
            buf = buf.slice(at + 2);
        }
    }
    return events;
}

test('a client that aborts mid-stream is counted in streamsAborted', T, async () => {
    await withServer({ tokenDelayMs: 20 }, async (srv) => {
        const ac = new AbortController();
        const r = await post(srv, msg('[[words:500]]', { stream: true }), { signal: ac.signal });
        const events = await readEvents(r, (ev) => ev.filter((e) => e.event === 'content_block_delta').length >= 3);
        assert.equal(events.filter((e) => e.event === 'content_block_delta').length, 3);
        ac.abort();
        // Through the HTTP long poll, as a gateway test would.
        const w = await getJSON(srv, '/stats/wait?field=streamsAborted&atLeast=1&timeoutMs=5000');
        assert.equal(w.status, 200);
        assert.equal(w.body.met, true);
        assert.equal(w.body.stats.streamsAborted, 1);
        assert.equal(w.body.stats.streamsCompleted, 0);
        assert.equal(srv.stats().inFlight, 0);
    });
});

test('a client that does not read causes back-pressure, counted in writesBlocked', T, async () => {
    await withServer({}, async (srv) => {
        const body = JSON.stringify(msg('[[words:400000]]', { stream: true, max_tokens: 400000 }));
        const sock = net.connect(srv.port, '127.0.0.1');
        sock.pause(); // never read: the server's writes must back up
        sock.write(`POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: ${KEY}\r\nanthropic-version: 2023-06-01\r\n` +
            `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
        try {
            assert.equal(await srv.waitFor('writesBlocked', 1, 10000), true);
        } finally {
            sock.destroy();
        }
        assert.equal(await srv.waitFor('streamsAborted', 1, 5000), true);
        assert.equal(srv.stats().streamsCompleted, 0);
    });
});

test('count_tokens and models endpoints', T, async () => {
    await withServer({}, async (srv) => {
        let r = await post(srv, { model: 'm', messages: [{ role: 'user', content: 'a b c' }], system: 'd e' },
            { path: '/v1/messages/count_tokens' });
        assert.equal(r.status, 200);
        assert.deepEqual(await r.json(), { input_tokens: 5 });
        r = await post(srv, msg('x'), { path: '/v1/messages/count_tokens' });
        assert.equal(r.status, 400);
        assertErrorShape(await r.json(), 'invalid_request_error', 'max_tokens: Extra inputs are not permitted');
        r = await fetch(srv.url + '/v1/models', { headers: HEADERS });
        const list = await r.json();
        assert.equal(list.has_more, false);
        assert.equal(list.data[0].type, 'model');
        const s = srv.stats();
        assert.equal(s.requests, 0, 'only /v1/messages counts as a request');
        assert.equal(s.errors, 0);
        assert.equal(s.countTokens, 2);
        r = await fetch(srv.url + '/nope');
        assert.equal(r.status, 404);
        assertErrorShape(await r.json(), 'not_found_error');
    });
});

// Starts the CLI; resolves with the child and the port from its "listening on" line.
function startCli(args) {
    const child = spawn(process.execPath, [path.join(__dirname, 'fake-anthropic.js'), ...args], {
        stdio: ['ignore', 'pipe', 'pipe'],
    });
    const entry = { close: () => child.kill('SIGKILL') };
    open.add(entry);
    child.on('exit', () => open.delete(entry));
    return new Promise((resolve, reject) => {
        let out = '';
        let err = '';
        child.stderr.on('data', (d) => { err += d; });
        child.stdout.on('data', (d) => {
            out += d;
            const nl = out.indexOf('\n');
            if (nl >= 0) resolve({ child, line: out.slice(0, nl) });
        });
        child.on('exit', (code) => reject(new Error(`exited ${code} before listening: ${err}`)));
    });
}

function exitOf(child) {
    return new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
}

test('CLI prints its address, takes knobs as flags and exits on SIGTERM', T, async () => {
    const { child, line } = await startCli(['--port', '0', '--api-key', 'cli-key', '--fail-every', '2',
        '--fail-status', '529', '--token-delay-ms', '1']);
    const exited = exitOf(child);
    try {
        const m = /^listening on 127\.0\.0\.1:(\d+)$/.exec(line);
        assert.ok(m, line);
        const srv = { url: `http://127.0.0.1:${m[1]}` };
        const headers = { ...HEADERS, 'x-api-key': 'cli-key' };
        let r = await post(srv, msg('cli'), { headers });
        assert.equal(r.status, 200);
        assert.equal((await r.json()).content[0].text, 'Echo: cli');
        r = await post(srv, msg('cli'), { headers });
        assert.equal(r.status, 529);
        assertErrorShape(await r.json(), 'overloaded_error', 'Overloaded');
        r = await post(srv, msg('cli'), { headers: HEADERS });
        assert.equal(r.status, 401);
        await r.arrayBuffer();

        let k = await postJSON(srv, '/_control', { failStatus: 0, failEvery: 0 });
        assert.equal(k.body.failEvery, 0);
        k = await postJSON(srv, '/_control/reset', {});
        assert.equal(k.body.failEvery, 2, 'reset returns to the flags given at start');
        assert.equal(k.body.tokenDelayMs, 1);
        const s = await getJSON(srv, '/stats');
        assert.equal(s.body.requests, 3);
        assert.equal(s.body.statuses['529'], 1);
    } finally {
        child.kill('SIGTERM');
    }
    assert.deepEqual(await exited, { code: 0, signal: null });
});

test('CLI rejects an unknown flag', T, async () => {
    const child = spawn(process.execPath, [path.join(__dirname, 'fake-anthropic.js'), '--fail-evry', '2'], {
        stdio: ['ignore', 'pipe', 'pipe'],
    });
    let err = '';
    child.stderr.on('data', (d) => { err += d; });
    const { code } = await exitOf(child);
    assert.equal(code, 2);
    assert.match(err, /unknown option: --fail-evry/);
});

test('CLI exits cleanly on SIGTERM with a stalled request open', T, async () => {
    const { child, line } = await startCli(['--stall']);
    const exited = exitOf(child);
    const port = /:(\d+)$/.exec(line)[1];
    const srv = { url: `http://127.0.0.1:${port}` };
    const pending = post(srv, msg('x')).then(() => 'answered', () => 'closed');
    const w = await getJSON(srv, '/stats/wait?field=stalls&atLeast=1&timeoutMs=5000');
    assert.equal(w.body.met, true);
    child.kill('SIGTERM');
    assert.deepEqual(await exited, { code: 0, signal: null });
    assert.equal(await pending, 'closed');
});

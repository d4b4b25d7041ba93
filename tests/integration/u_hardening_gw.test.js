// SPDX-License-Identifier: MIT
//
// u_hardening_gw.test.js: the gateway's defects found when it was attacked (issue 16): a hostile
// upstream (header injection, forged log lines, statuses and bodies no client can take), request
// bodies that say two things at once, head-of-line blocking on a cold worker, and what the
// operator is told. The hostile upstream is a raw TCP server, because node's own HTTP server
// refuses to send the bytes under test.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const { startGateway, startFake, request, generate, until } = require('./lib.js');

// A raw upstream: answers every request with `reply(body)`'s bytes, then closes.
async function rawUpstream(reply) {
    const seen = [];
    const server = net.createServer((sock) => {
        let buf = '';
        sock.on('data', (d) => {
            buf += d.toString('latin1');
            const head = buf.indexOf('\r\n\r\n');
            if (head < 0) return;
            const len = Number((/content-length: *(\d+)/i.exec(buf.slice(0, head)) || [0, 0])[1]);
            if (buf.length < head + 4 + len) return;
            const body = buf.slice(head + 4, head + 4 + len);
            seen.push(body);
            buf = '';
            sock.end(reply(body), 'latin1');
        });
        sock.on('error', () => {});
    });
    await new Promise((r) => server.listen(0, '127.0.0.1', r));
    return { port: server.address().port, seen, close: () => new Promise((r) => server.close(r)) };
}

const MESSAGE = JSON.stringify({
    id: 'msg_raw', type: 'message', role: 'assistant', model: 'claude-haiku-4-5',
    content: [{ type: 'text', text: 'hi' }], stop_reason: 'end_turn', stop_sequence: null,
    usage: { input_tokens: 1, output_tokens: 1 },
});

function http(status, headers, body) {
    const lines = [`HTTP/1.1 ${status}`, ...headers, `content-length: ${Buffer.byteLength(body, 'latin1')}`, 'connection: close'];
    return `${lines.join('\r\n')}\r\n\r\n${body}`;
}

function messages(g, body, headers = {}) {
    return request(`${g.url}/v1/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', 'x-api-key': 'client', ...headers },
        body: typeof body === 'string' ? body : JSON.stringify({ model: 'claude-haiku-4-5', max_tokens: 16, ...body }),
    });
}

const NO_RETRY = '[aigate]\nupstream_retries = 0\ncache = false\n';

test('a header value with a bare CR from the upstream is dropped, logged, never relayed', async () => {
    const up = await rawUpstream(() => http('200 OK', [
        'content-type: application/json',
        'request-id: req_1\rSet-Cookie: stolen=1',
        'anthropic-organization-id: fine',
    ], MESSAGE));
    const gw = await startGateway({ upstream: `http://127.0.0.1:${up.port}`, config: NO_RETRY });
    try {
        const res = await messages(gw, { messages: [{ role: 'user', content: 'hi' }] });
        assert.equal(res.status, 200, res.body);
        assert.equal(res.headers['set-cookie'], undefined);
        assert.equal(res.headers['request-id'], undefined, 'the injected header is dropped whole');
        assert.equal(res.headers['anthropic-organization-id'], 'fine', 'clean headers still pass');
        assert.match(gw.stderr, /upstream header request-id dropped: its value holds a CR, LF or NUL/);
    } finally {
        await gw.stop();
        await up.close();
    }
});

test('upstream error text cannot forge a log line; a status no client can take is a 502', async () => {
    let mode = 'newline';
    const up = await rawUpstream(() => {
        if (mode === 'newline') {
            const body = JSON.stringify({ type: 'error', error: { type: 'invalid_request_error', message: 'bad\n{"forged":"line"}\r\nFORGED' } });
            return http('400 Bad Request', ['content-type: application/json'], body);
        }
        if (mode === 'status') return http('600 Odd', ['content-type: application/json'], MESSAGE);
        return http('200 OK', ['content-type: application/json'], '<html>not a message</html>');
    });
    const gw = await startGateway({ upstream: `http://127.0.0.1:${up.port}`, config: NO_RETRY });
    try {
        let res = await generate(gw, { prompt: 'forge a line' });
        assert.equal(res.status, 502);
        await until(() => /upstream answered 400/.test(gw.stderr), 5000, 'the warning');
        for (const line of gw.stderr.split('\n')) {
            assert.ok(!line.startsWith('FORGED') && !line.startsWith('{"forged"'), `forged line: ${line}`);
        }
        assert.match(gw.stderr, /bad\\x0a\{"forged":"line"\}\\x0d\\x0aFORGED/);
        // The warning names the request, not the cache key's hash.
        const id = res.headers['x-request-id'];
        assert.match(gw.stderr, new RegExp(`request ${id}: upstream answered 400`));

        mode = 'status';
        res = await messages(gw, { messages: [{ role: 'user', content: 'odd status' }] });
        assert.equal(res.status, 502);
        assert.equal(res.json.type, 'error');
        assert.equal(res.json.error.type, 'api_error');
        mode = 'html';
        res = await messages(gw, { messages: [{ role: 'user', content: 'not json' }] });
        assert.equal(res.status, 502);
        assert.equal(res.json.error.type, 'api_error');
    } finally {
        await gw.stop();
        await up.close();
    }
});

let up, gw;
before(async () => {
    up = await startFake();
    gw = await startGateway({ upstream: `http://127.0.0.1:${up.port}`, threads: 1, config: '[aigate]\nmodels = ["claude-sonnet-4-6"]\n' });
});
after(async () => {
    await gw.stop();
    await up.close();
});

test('/v1/messages refuses duplicate keys at any level, and a missing or odd model', async () => {
    const before = up.stats().requests;
    const bodies = [
        '{"model":"claude-haiku-4-5","model":"claude-opus-4-6","max_tokens":16,"messages":[{"role":"user","content":"x"}]}',
        '{"model":"claude-haiku-4-5","max_tokens":16,"messages":[{"role":"user","content":"x","content":"y"}]}',
        '{"max_tokens":16,"messages":[{"role":"user","content":"x"}]}',
        '{"model":42,"max_tokens":16,"messages":[{"role":"user","content":"x"}]}',
    ];
    for (const body of bodies) {
        const res = await messages(gw, body);
        assert.equal(res.status, 400, body);
        assert.equal(res.json.type, 'error');
        assert.equal(res.json.error.type, 'invalid_request_error');
    }
    assert.equal(up.stats().requests, before, 'none reached the upstream');
});

test('a refused model tells the operator how to allow it; the client gets the seed body', async () => {
    const res = await generate(gw, { prompt: 'hi', model: 'claude-opus-4-6' });
    assert.equal(res.status, 400);
    assert.deepEqual(res.json, { error: 'Invalid model' });
    await until(() => /model "claude-opus-4-6" refused on \/api\/generate: allow it in \[aigate\] models/.test(gw.stderr), 5000, 'the hint');
});

test('a long stream on a cold worker does not hold up another request (no PIPEWAIT on HTTP/1.1)', async () => {
    const g = await startGateway({ upstream: `http://127.0.0.1:${up.port}`, threads: 1, config: '[aigate]\ncache = false\n' });
    try {
        const stream = generate(g, { prompt: '[[words:20]] [[delay:150]] slow stream', stream: true });
        await until(() => up.stats().streams > 0 || up.stats().inFlight > 0, 5000, 'the stream to start');
        const t0 = Date.now();
        const quick = await generate(g, { prompt: 'quick one' });
        const took = Date.now() - t0;
        assert.equal(quick.status, 200);
        const s = await stream;
        assert.equal(s.status, 200);
        assert.ok(took < 1500, `the quick request took ${took} ms behind a 3 s stream`);
    } finally {
        await g.stop();
    }
});

// Accumulates an event stream into its Message, as the SDKs do.
function accumulate(sse) {
    let msg = null;
    const partial = {};
    for (const block of sse.split('\n\n')) {
        const data = /^data: (.*)$/m.exec(block);
        if (!data) continue;
        const ev = JSON.parse(data[1]);
        switch (ev.type) {
        case 'message_start': msg = ev.message; break;
        case 'content_block_start': msg.content[ev.index] = ev.content_block; break;
        case 'content_block_delta': {
            const b = msg.content[ev.index];
            const d = ev.delta;
            if (d.type === 'text_delta') b.text += d.text;
            else if (d.type === 'input_json_delta') partial[ev.index] = (partial[ev.index] || '') + d.partial_json;
            else if (d.type === 'thinking_delta') b.thinking += d.thinking;
            else if (d.type === 'signature_delta') b.signature = d.signature;
            else if (d.type === 'citations_delta') (b.citations = b.citations || []).push(d.citation);
            else throw new Error(`unknown delta ${d.type}`);
            break;
        }
        case 'content_block_stop':
            if (partial[ev.index] !== undefined) msg.content[ev.index].input = JSON.parse(partial[ev.index] || '{}');
            break;
        case 'message_delta':
            Object.assign(msg, ev.delta);
            Object.assign(msg.usage, ev.usage);
            break;
        default: break;
        }
    }
    return msg;
}

// The response cache's /v1/messages keys, read with the storage CLI while the gateway runs.
function messageKeys(g) {
    const { spawnSync } = require('node:child_process');
    const r = spawnSync(require('./lib.js').BIN, ['kv', 'key', 'list', '--json', '--binding', 'CACHE', '--config', `${g.cwd}/aigate.toml`], { cwd: g.cwd, encoding: 'utf8' });
    if (r.status !== 0) return 0;
    return JSON.parse(r.stdout).keys.filter((k) => k.name.startsWith('msg:v2:')).length;
}

test('a cached answer serves streaming and plain clients with every block and field', async () => {
    const ask = (prompt, stream, extra = {}) =>
        messages(gw, { stream, messages: [{ role: 'user', content: prompt }], stop_sequences: ['NEVER'], ...extra });
    // Streamed first: the tool_use block and the text around it survive the cache.
    let n = messageKeys(gw);
    let first = await ask('[[blocks]] weather in Paris', true);
    assert.equal(first.status, 200);
    const streamed = accumulate(first.body);
    assert.deepEqual(streamed.content.map((b) => b.type), ['text', 'tool_use', 'text']);
    // Wait for the fill itself: a plain request sent before it would fill the key with its own answer.
    await until(() => messageKeys(gw) > n, 10000, 'the stream\'s fill');
    let hit = await ask('[[blocks]] weather in Paris', false);
    assert.equal(hit.headers['x-aigate-cache'], 'hit');
    assert.deepEqual(hit.json, streamed, 'the plain client gets the Message the stream was');

    // Plain first: the stream replayed from the cache rebuilds to the same Message.
    n = messageKeys(gw);
    first = await ask('[[blocks]] [[thinking]] plan a trip', false);
    assert.equal(first.status, 200);
    await until(() => messageKeys(gw) > n, 10000, 'the plain answer\'s fill');
    hit = await ask('[[blocks]] [[thinking]] plan a trip', true);
    assert.equal(hit.headers['x-aigate-cache'], 'hit');
    assert.equal(hit.headers['content-type'], 'text/event-stream; charset=utf-8');
    assert.deepEqual(accumulate(hit.body), first.json);
});

test('the server\'s own errors on /v1/messages speak Anthropic\'s shape; on /api/generate the seed\'s', async () => {
    const g = await startGateway({ upstream: `http://127.0.0.1:${up.port}`, config: '[aigate]\nmax_body_bytes = 1024\n' });
    try {
        const big = 'x'.repeat(4096);
        let res = await messages(g, { messages: [{ role: 'user', content: big }] });
        assert.equal(res.status, 413);
        assert.equal(res.json.type, 'error');
        assert.equal(res.json.error.type, 'request_too_large');
        res = await generate(g, { prompt: big });
        assert.equal(res.status, 413);
        assert.equal(typeof res.json.error, 'string');
    } finally {
        await g.stop();
    }
});

// The data of a chunked body (its framing taken off), up to the last chunk or the end.
function dechunk(s) {
    const parts = [];
    for (let i = 0; ;) {
        const eol = s.indexOf('\r\n', i);
        const n = eol < 0 ? 0 : parseInt(s.slice(i, eol), 16);
        if (!n) return parts.join('');
        parts.push(s.slice(eol + 2, eol + 2 + n));
        i = eol + 2 + n + 2;
    }
}

test('a slow reader pauses the upstream without an idle timeout; a drain cut is the server\'s', async () => {
    const g = await startGateway({
        upstream: `http://127.0.0.1:${up.port}`,
        config: '[aigate]\nstream_idle_timeout = 0.3\ncache = false\nusage_log_flush = 0.1\ndrain_timeout = 0.5\n',
    });
    try {
        // ~11 MB of events: more than the sockets and the relay's queue hold, so it pauses.
        const body = JSON.stringify({ model: 'claude-haiku-4-5', max_tokens: 100000, stream: true,
            messages: [{ role: 'user', content: '[[words:100000]] a long one' }] });
        const sock = net.connect(g.port, '127.0.0.1');
        let got = '';
        sock.on('data', (d) => (got += d.toString('latin1')));
        sock.write(`POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nanthropic-version: 2023-06-01\r\nx-api-key: c\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
        sock.pause();
        await until(() => up.stats().writesBlocked > 0, 10000, 'the upstream to feel the pause');
        await new Promise((r) => setTimeout(r, 1000)); // three idle timeouts' worth of a paused reader
        const ended = new Promise((r) => sock.on('end', r));
        sock.resume();
        await ended;
        // The chunks may split an event anywhere: match the decoded body.
        const events = dechunk(got.slice(got.indexOf('\r\n\r\n') + 4));
        assert.match(events, /event: message_stop/);
        assert.doesNotMatch(events, /event: error/);
        assert.doesNotMatch(g.stderr, /idle timeout/);

        // A stream the drain cuts: outcome serverStopped, not clientDisconnected.
        const streamsBefore = up.stats().streams;
        const slow = net.connect(g.port, '127.0.0.1');
        slow.on('error', () => {});
        const sb = JSON.stringify({ prompt: '[[words:100]] [[delay:200]] cut by the drain', stream: true });
        slow.write(`POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${sb.length}\r\n\r\n${sb}`);
        await until(() => up.stats().streams > streamsBefore, 5000, 'the second stream');
        await until(() => slow.bytesRead > 0, 5000, 'its first bytes');
        await g.stop();
        const { spawnSync } = require('node:child_process');
        const run = (args) => spawnSync(g.bin || require('./lib.js').BIN, args, { cwd: g.cwd, encoding: 'utf8' });
        const list = JSON.parse(run(['r2', 'object', 'list', 'usage-logs', '--prefix', 'logs/', '--json']).stdout);
        const entries = list.objects.flatMap((o) => run(['r2', 'object', 'get', `usage-logs/${o.key}`]).stdout.split('\n').filter(Boolean).map(JSON.parse));
        const outcomes = entries.filter((e) => e.stream).map((e) => e.outcome).sort();
        assert.deepEqual(outcomes, ['ok', 'serverStopped'], JSON.stringify(entries.map((e) => [e.stream, e.outcome, e.status, e.promptLength])) + g.stderr.slice(-1500));
    } finally {
        if (!g.exited) await g.stop();
    }
});

test('/api/generate takes JSON as deep as JSON.parse does', async () => {
    const depth = 5000;
    const body = `{"prompt":"deep one","extra":${'['.repeat(depth)}1${']'.repeat(depth)}}`;
    JSON.parse(body); // what the seed's Worker does first
    const res = await request(`${gw.url}/api/generate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    assert.equal(res.status, 200, res.body);
    assert.equal(res.json.output, 'Echo: deep one');
});

test("the README's single-test recipe: a relative AIGATE_BIN is taken from where node runs", () => {
    const { spawnSync } = require('node:child_process');
    const path = require('node:path');
    const root = path.resolve(__dirname, '../..');
    const r = spawnSync(process.execPath, ['-e', `process.stdout.write(require(${JSON.stringify(path.join(__dirname, 'lib.js'))}).BIN)`],
        { cwd: root, env: { ...process.env, AIGATE_BIN: 'build/debug/aigate' }, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, path.join(root, 'build/debug/aigate'), 'absolute, so gateways started from other folders find it');
});

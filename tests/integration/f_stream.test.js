// SPDX-License-Identifier: MIT
//
// f_stream.test.js: streaming (/api/generate with "stream": true and
// /v1/messages) relayed as it arrives, back-pressure, disconnects, errors,
// cache replay, and the official @anthropic-ai/sdk pointed at aigate.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const { BIN, startGateway, startFake, request, until, TEST_KEY } = require('./lib.js');
const Anthropic = require('@anthropic-ai/sdk').default || require('@anthropic-ai/sdk');

let up, gw;

before(async () => {
    up = await startFake();
    gw = await startGateway({ upstream: `http://127.0.0.1:${up.port}`, threads: 2 });
});

after(async () => {
    await gw.stop();
    await up.close();
    assert.ok(!gw.stderr.includes(TEST_KEY));
});

// Parses an event stream into [{event, data}] (data JSON-parsed).
function parseSSE(text) {
    const out = [];
    for (const block of text.split('\n\n')) {
        if (!block.trim()) continue;
        let event = 'message';
        const data = [];
        for (const line of block.split('\n')) {
            if (line.startsWith('event:')) event = line.slice(6).trim();
            else if (line.startsWith('data:')) data.push(line.slice(5).trim());
        }
        out.push({ event, data: JSON.parse(data.join('\n')) });
    }
    return out;
}

function summary(events) {
    const text = events
        .filter((e) => e.event === 'content_block_delta' && e.data.delta.type === 'text_delta')
        .map((e) => e.data.delta.text)
        .join('');
    const start = events.find((e) => e.event === 'message_start');
    const delta = events.filter((e) => e.event === 'message_delta').pop();
    return {
        types: events.map((e) => e.event),
        text,
        input: start && start.data.message.usage.input_tokens,
        output: delta && delta.data.usage.output_tokens,
    };
}

// POSTs and records each chunk as it arrives, with what upstream had finished by then.
function streamPost(url, body, { headers = {}, onChunk } = {}) {
    return new Promise((resolve, reject) => {
        const u = new URL(url);
        const req = http.request(
            { host: u.hostname, port: u.port, path: u.pathname, method: 'POST', agent: false,
                headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', ...headers } },
            (res) => {
                const chunks = [];
                res.on('data', (c) => {
                    chunks.push(c);
                    if (onChunk) onChunk(c, res, req);
                });
                res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
                res.on('error', reject);
            }
        );
        req.on('error', reject);
        req.end(JSON.stringify(body));
    });
}

test('the relayed stream equals what upstream sent, and starts before upstream finishes', async () => {
    up.setKnobs({ tokenDelayMs: 40 });
    const prompt = '[[words:12]] relay me';
    let firstChunkUpstreamDone;
    const res = await streamPost(`${gw.url}/api/generate`, { prompt, stream: true }, {
        headers: { 'cache-control': 'no-store' },
        onChunk: () => {
            if (firstChunkUpstreamDone === undefined) firstChunkUpstreamDone = up.stats().streamsCompleted;
        },
    });
    up.resetKnobs();
    assert.equal(res.status, 200);
    assert.match(res.headers['content-type'], /^text\/event-stream/);
    assert.equal(res.headers['access-control-allow-origin'], '*');
    assert.equal(firstChunkUpstreamDone, 0, 'the first event arrived while upstream was still streaming');
    // The same request straight to the fake: identical bytes but for the message id.
    const direct = await streamPost(`http://127.0.0.1:${up.port}/v1/messages`,
        { model: 'claude-haiku-4-5', max_tokens: 1024, messages: [{ role: 'user', content: prompt }], stream: true },
        { headers: { 'x-api-key': TEST_KEY } });
    const norm = (t) => t.replace(/msg_fake\d+/g, 'msg_X');
    assert.equal(norm(res.body), norm(direct.body));
    const s = summary(parseSSE(res.body));
    assert.deepEqual(s.types.slice(0, 3), ['message_start', 'content_block_start', 'ping']);
    assert.deepEqual(s.types.slice(-3), ['content_block_stop', 'message_delta', 'message_stop']);
    assert.equal(s.text, 'w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12');
    assert.equal(up.stats().lastRequest.body.stream, true);
});

test('a complete stream fills the cache; a replay has the same events and text, and serves plain requests too', async () => {
    const prompt = 'stream then replay';
    const live = await streamPost(`${gw.url}/api/generate`, { prompt, stream: true });
    await until(async () => {
        const r = await streamPost(`${gw.url}/api/generate`, { prompt, stream: true });
        return r.headers['x-aigate-cache'] === 'hit';
    }, 5000, 'the stream fill');
    const n = up.stats().requests;
    const replay = await streamPost(`${gw.url}/api/generate`, { prompt, stream: true });
    assert.equal(replay.headers['x-aigate-cache'], 'hit');
    assert.equal(up.stats().requests, n, 'replays make no upstream call');
    const a = summary(parseSSE(live.body));
    const b = summary(parseSSE(replay.body));
    assert.equal(b.text, a.text);
    assert.equal(b.input, a.input);
    assert.equal(b.output, a.output);
    assert.deepEqual([...new Set(b.types)], [...new Set(a.types)]);
    const plain = await request(`${gw.url}/api/generate`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: { prompt },
    });
    assert.equal(plain.json.cached, true);
    assert.equal(plain.json.output, a.text);
});

test('a cut stream is not cached; a mid-stream upstream error becomes event: error and a clean end', async () => {
    const prompt = '[[midstream:2]] break in the middle';
    const res = await streamPost(`${gw.url}/api/generate`, { prompt, stream: true });
    assert.equal(res.status, 200);
    const events = parseSSE(res.body);
    assert.equal(events[events.length - 1].event, 'error');
    assert.ok(!events.some((e) => e.event === 'message_stop'));
    const again = await streamPost(`${gw.url}/api/generate`, { prompt, stream: true });
    assert.notEqual(again.headers['x-aigate-cache'], 'hit');
});

test('an upstream failure before the first byte is a JSON error with its status', async () => {
    up.setKnobs({ failStatus: 529 });
    const res = await streamPost(`${gw.url}/api/generate`, { prompt: 'overloaded stream', stream: true });
    up.resetKnobs();
    assert.equal(res.status, 502);
    assert.deepEqual(JSON.parse(res.body), { error: 'AI service error' });
    const down = await startGateway({ upstream: 'http://127.0.0.1:1' });
    try {
        const r = await streamPost(`${down.url}/api/generate`, { prompt: 'nobody home', stream: true });
        assert.equal(r.status, 502);
    } finally {
        await down.stop();
    }
});

test('a client that leaves mid-stream stops the upstream call within a second', async () => {
    // 500 deltas 30 ms apart: left alone, upstream would stream for 15 s. The
    // bound is measured from the moment the client left to the moment upstream
    // saw its stream closed (the fake's streamAborted event), not after the fact.
    up.setKnobs({ tokenDelayMs: 30 });
    up.resetStats();
    let abortedAt = null;
    const onAbort = () => {
        if (abortedAt === null) abortedAt = Date.now();
    };
    up.events.on('streamAborted', onAbort);
    try {
        const leftAt = await new Promise((resolve, reject) => {
            const sock = net.connect(gw.port, '127.0.0.1', () => {
                const body = JSON.stringify({ prompt: '[[words:500]] abandon me', stream: true });
                sock.write(`POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
            });
            let got = '';
            sock.on('data', (d) => {
                got += d;
                if (got.includes('content_block_delta')) {
                    sock.destroy();
                    resolve(Date.now());
                }
            });
            sock.on('error', reject);
        });
        assert.equal(abortedAt, null, 'no stream was closed before the client left');
        await until(() => abortedAt !== null, 5000, 'upstream to see its stream closed');
        assert.ok(abortedAt - leftAt < 1000, `upstream saw its stream closed ${abortedAt - leftAt} ms after the client left`);
        const s = up.stats();
        assert.equal(s.streams, 1, 'one stream started since the reset: the one the client left');
        assert.equal(s.streamsAborted, 1);
        assert.equal(s.streamsCompleted, 0);
    } finally {
        up.events.off('streamAborted', onAbort);
        up.resetKnobs();
    }
    await until(() => gw.accessLog().some((l) => l.status === 200 && l.path === '/api/generate'), 2000, 'log');
});

function rssKiB(pid) {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return Number(m[1]);
}

// Whether the binary was built with AddressSanitizer (gcc imports __asan_init; clang links it in),
// or ThreadSanitizer, whose shadow memory makes RSS no measure of what aigate holds.
const ASAN = fs.readFileSync(BIN).includes('__asan_init');
const TSAN = fs.readFileSync(BIN).includes('__tsan_init');

test('a slow reader pauses upstream and memory stays bounded', async () => {
    // ASan keeps freed blocks in a quarantine (256 MiB by default), so RSS grows
    // with every byte allocated and freed, not with what is held: about 70 MiB
    // in this test. Under ASan this gateway gets a 1 MiB quarantine (a block
    // used just after its free is still caught) and a looser bound, which still
    // sits below the ~19 MB the stream takes if aigate buffers it all.
    const env = ASAN ? { ASAN_OPTIONS: `${process.env.ASAN_OPTIONS || 'detect_leaks=1'}:quarantine_size_mb=1` } : {};
    // The bound leaves a margin for a loaded machine (allocator caches, socket
    // buffers charged late) and still fails if aigate buffers the stream (~19 MB).
    const boundKiB = (ASAN ? 16 : 12) * 1024;
    const big = await startGateway({ upstream: `http://127.0.0.1:${up.port}`, config: '[vars]\nMAX_TOKENS = "200000"\n', env });
    let sock;
    try {
        up.resetStats();
        const rss0 = rssKiB(big.proc.pid);
        // ~20 MB of events; the client stops reading after the first chunk.
        const words = 150000;
        sock = net.connect(big.port, '127.0.0.1');
        await new Promise((r) => sock.on('connect', r));
        const body = JSON.stringify({ prompt: `[[words:${words}]] slow reader`, stream: true });
        sock.write(`POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nCache-Control: no-store\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
        let received = 0;
        await new Promise((r) => sock.once('data', (d) => { received += d.length; r(); }));
        sock.pause();
        assert.ok(await up.waitFor('writesBlocked', 1, 10000), 'upstream writes blocked: the transfer is paused');
        // Upstream is blocked now: everything it wrote sits in socket buffers or in
        // aigate. Wait until its write backlog stops moving, then weigh aigate.
        let last = -1;
        await until(() => {
            const w = up.stats().writesBlocked;
            const still = w === last;
            last = w;
            return still;
        }, 10000, 'upstream to stall');
        const peak = rssKiB(big.proc.pid);
        assert.equal(up.stats().streamsCompleted, 0, 'upstream could not finish while the client was not reading');
        if (!TSAN) assert.ok(peak - rss0 < boundKiB, `RSS grew by ${peak - rss0} KiB while the client was not reading (bound ${boundKiB} KiB${ASAN ? ', ASan' : ''})`);
        // Now read everything: the stream resumes and completes.
        let tail = '';
        sock.on('data', (d) => {
            received += d.length;
            tail = (tail + d.toString('latin1')).slice(-200);
        });
        sock.resume();
        await until(() => tail.includes('message_stop'), 30000, 'the whole stream');
        assert.ok(received > 15e6, `received ${received} bytes`);
    } finally {
        // A failure above must not leave the file hanging on this gateway and socket.
        if (sock) sock.destroy();
        await big.stop();
    }
});

test('500 concurrent streams complete with correct content', async () => {
    up.setKnobs({ tokenDelayMs: 2 });
    const results = await Promise.all(Array.from({ length: 500 }, (_, i) =>
        streamPost(`${gw.url}/api/generate`, { prompt: `stream number ${i}`, stream: true }, { headers: { 'cache-control': 'no-store' } })));
    up.resetKnobs();
    results.forEach((r, i) => {
        assert.equal(r.status, 200);
        assert.equal(summary(parseSSE(r.body)).text, `Echo: stream number ${i}`);
    });
});

test('the official SDK works against aigate: create, stream, and a 429 with retry-after', async () => {
    const client = new Anthropic({ apiKey: 'client-key-ignored', baseURL: gw.url, maxRetries: 0 });
    const msg = await client.messages.create({
        model: 'claude-haiku-4-5', max_tokens: 100, messages: [{ role: 'user', content: 'hello from the sdk' }],
    });
    assert.equal(msg.content[0].text, 'Echo: hello from the sdk');
    assert.ok(msg.usage.input_tokens > 0 && msg.usage.output_tokens > 0);
    assert.equal(up.stats().lastRequest.headers['x-api-key'], TEST_KEY.length, "aigate's key replaced the client's");

    const stream = client.messages.stream({
        model: 'claude-haiku-4-5', max_tokens: 100, messages: [{ role: 'user', content: 'stream via the sdk' }],
    });
    let deltas = '';
    stream.on('text', (t) => (deltas += t));
    const final = await stream.finalMessage();
    assert.equal(final.content[0].text, 'Echo: stream via the sdk');
    assert.equal(deltas, 'Echo: stream via the sdk');
    assert.ok(final.usage.output_tokens > 0);

    // A cached answer replays to the SDK as a valid stream too.
    const sdkBody = { model: 'claude-haiku-4-5', max_tokens: 100, messages: [{ role: 'user', content: 'stream via the sdk' }], stream: true };
    await until(async () => (await streamPost(`${gw.url}/v1/messages`, sdkBody)).headers['x-aigate-cache'] === 'hit', 5000, 'the fill');
    const n = up.stats().requests;
    const s2 = client.messages.stream({
        model: 'claude-haiku-4-5', max_tokens: 100, messages: [{ role: 'user', content: 'stream via the sdk' }],
    });
    const replayed = await s2.finalMessage();
    assert.equal(up.stats().requests, n, 'served from the cache');
    assert.equal(replayed.content[0].text, final.content[0].text);
    assert.equal(replayed.usage.output_tokens, final.usage.output_tokens);
    // And a non-streaming create of the same request gets a Message from that entry.
    const plain = await client.messages.create({
        model: 'claude-haiku-4-5', max_tokens: 100, messages: [{ role: 'user', content: 'stream via the sdk' }],
    });
    assert.equal(plain.content[0].text, final.content[0].text);
    assert.equal(up.stats().requests, n);

    // x-should-retry: false, so the gateway passes the 429 on at once (its own
    // retries of it are s_resilience's).
    up.setKnobs({ failStatus: 429, retryAfter: 7, shouldRetry: false });
    try {
        await assert.rejects(
            client.messages.create({ model: 'claude-haiku-4-5', max_tokens: 10, messages: [{ role: 'user', content: 'limit me' }] }),
            (err) => {
                assert.equal(err.status, 429);
                assert.equal(err.headers.get ? err.headers.get('retry-after') : err.headers['retry-after'], '7');
                assert.equal(err.error.error.type, 'rate_limit_error');
                return true;
            }
        );
    } finally {
        up.resetKnobs();
    }
    // Models outside the allowlist are refused in Anthropic's error shape.
    await assert.rejects(
        client.messages.create({ model: 'claude-opus-4-6', max_tokens: 10, messages: [{ role: 'user', content: 'x' }] }),
        (err) => err.status === 400 && err.error.error.type === 'invalid_request_error'
    );
});

test('a stream that stalls mid-way is cut by stream_idle_timeout with event: error', async () => {
    const g = await startGateway({ upstream: `http://127.0.0.1:${up.port}`, config: '[aigate]\nstream_idle_timeout = 1\n' });
    try {
        const t0 = Date.now();
        const res = await streamPost(`${g.url}/api/generate`, { prompt: '[[delay:5000]][[words:3]] stall after the start', stream: true },
            { headers: { 'cache-control': 'no-store' } });
        const elapsed = Date.now() - t0;
        assert.equal(res.status, 200);
        const events = parseSSE(res.body);
        assert.equal(events[0].event, 'message_start', 'the start was relayed before the stall');
        assert.equal(events[events.length - 1].event, 'error');
        assert.ok(elapsed < 4500, `cut after ${elapsed} ms, before the 5 s stall ended`);
        // A long but healthy stream (deltas every 300 ms, 3 s in all) is not cut.
        const ok = await streamPost(`${g.url}/api/generate`, { prompt: '[[delay:300]][[words:10]] slow but alive', stream: true },
            { headers: { 'cache-control': 'no-store' } });
        const s = summary(parseSSE(ok.body));
        assert.equal(s.types[s.types.length - 1], 'message_stop');
        assert.equal(s.text, 'w1 w2 w3 w4 w5 w6 w7 w8 w9 w10');
    } finally {
        await g.stop();
    }
});

// SPDX-License-Identifier: MIT
//
// k_tail_cli.test.js: the `aigate tail` client as a black box against a small
// SSE server written here (a real HTTP server on 127.0.0.1:0 that checks the
// query string and the bearer token, then sends events): the exact query string
// of the filters, NDJSON and pretty output, refusals, nothing listening, the
// reconnect after the server went away and came back on the same port, and a
// clean exit 0 on SIGINT and SIGTERM. (The real server side has its own test.)
'use strict';

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const { BIN, tmpdir, until, freePort } = require('./lib.js');

const SANITIZER = /AddressSanitizer|LeakSanitizer|runtime error:/;
const made = []; // temp folders
const running = new Set(); // tails and servers still up, stopped at the end

after(async () => {
    for (const r of running) await r.kill();
    for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});

// The events, as the server sends them (platform.md section 2) and as pretty shows them.
const T = 1773411781000; // 2026-03-13T14:23:01Z
const REQUEST = {
    outcome: 'ok', scriptName: 'my-worker', eventTimestamp: T,
    event: {
        request: { url: 'http://127.0.0.1:8787/api/generate', method: 'POST', headers: { authorization: 'REDACTED' } },
        response: { status: 200 },
    },
    logs: [], exceptions: [], wallTime: 342, cpuTime: 1,
    aigate: {
        requestId: 'r1', route: '/api/generate', client: '127.0.0.1', key: null, model: 'claude-haiku-4-5',
        inputTokens: 287, outputTokens: 156, costUsd: 0.000259, cached: false, retries: 0, upstreamMs: 330, stream: false,
    },
};
const CACHED = {
    ...REQUEST, wallTime: 2.4,
    aigate: { ...REQUEST.aigate, requestId: 'r2', cached: true, retries: 2, costUsd: 0, dropped: 3 },
};
const NO_MODEL = {
    ...REQUEST,
    event: { request: { url: 'http://127.0.0.1:8787/api/generate', method: 'GET', headers: {} }, response: { status: 405 } },
    wallTime: 0,
    aigate: { ...REQUEST.aigate, requestId: 'r3', model: null, inputTokens: 0, outputTokens: 0, costUsd: 0 },
};
const CANCELED = {
    ...REQUEST, outcome: 'canceled', wallTime: 1500,
    aigate: { ...REQUEST.aigate, requestId: 'r4', outputTokens: 40, costUsd: 0.0001, stream: true },
};
const SCHEDULED = {
    outcome: 'ok', scriptName: 'my-worker', eventTimestamp: 1773651600000, // 2026-03-16T09:00:00Z
    event: { cron: '0 9 * * MON', scheduledTime: 1773651600000 },
    logs: [], exceptions: [], wallTime: 2140, cpuTime: 3,
    aigate: { task: 'weekly-digest', model: 'claude-haiku-4-5', inputTokens: 1200, outputTokens: 450, costUsd: 0.0042, cached: false, retries: 0 },
};
const PRETTY = [
    '[2026-03-13T14:23:01Z] POST /api/generate - 200 OK (342ms)',
    '  model=claude-haiku-4-5 tokens=287+156 cost=$0.0003',
    '(3 events dropped: tail was too slow)',
    '[2026-03-13T14:23:01Z] POST /api/generate - 200 OK (2ms)',
    '  model=claude-haiku-4-5 tokens=287+156 cost=$0.0000 cached retries=2',
    '[2026-03-13T14:23:01Z] GET /api/generate - 405 Method Not Allowed (0ms)',
    '[2026-03-13T14:23:01Z] POST /api/generate - 200 OK - canceled (1500ms)',
    '  model=claude-haiku-4-5 tokens=287+40 cost=$0.0001',
    '[2026-03-16T09:00:00Z] cron "0 9 * * MON" weekly-digest - ok (2140ms)',
    '  model=claude-haiku-4-5 tokens=1200+450 cost=$0.0042',
];

// An admin listener stand-in. opts: {port (0: any), token (require Bearer token)}.
// Records every request; `send(text)` writes raw bytes to every open stream.
function startSse(opts = {}) {
    const srv = { requests: [], streams: new Set() };
    srv.server = http.createServer((req, res) => {
        srv.requests.push({ url: req.url, headers: req.headers });
        if (opts.token && req.headers.authorization !== `Bearer ${opts.token}`) {
            res.writeHead(401, { 'content-type': 'text/plain' });
            res.end('admin token required\n');
            return;
        }
        if (!req.url.startsWith('/tail?')) {
            res.writeHead(404, { 'content-type': 'text/plain' });
            res.end('no such admin path\n');
            return;
        }
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        res.write(': keepalive\n\n');
        srv.streams.add(res);
        res.on('close', () => srv.streams.delete(res));
    });
    srv.send = (text) => {
        for (const s of srv.streams) s.write(text);
    };
    srv.event = (obj) => srv.send(`data: ${JSON.stringify(obj)}\n\n`);
    // Gone at once: every connection cut, the port closed.
    srv.kill = () =>
        new Promise((resolve) => {
            running.delete(srv);
            srv.server.close(() => resolve());
            srv.server.closeAllConnections();
        });
    return new Promise((resolve, reject) => {
        srv.server.once('error', reject);
        srv.server.listen(opts.port || 0, '127.0.0.1', () => {
            srv.port = srv.server.address().port;
            srv.url = `http://127.0.0.1:${srv.port}`;
            running.add(srv);
            resolve(srv);
        });
    });
}

// Runs `aigate tail ARGS` in an empty folder (no config, no secrets file).
function startTail(args, { token } = {}) {
    const cwd = tmpdir();
    made.push(cwd);
    const env = { ...process.env, ASAN_OPTIONS: process.env.ASAN_OPTIONS || 'detect_leaks=1' };
    delete env.AIGATE_ADMIN_TOKEN;
    if (token !== undefined) env.AIGATE_ADMIN_TOKEN = token;
    const proc = spawn(BIN, ['tail', ...args], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    const t = { proc, out: '', err: '', exited: null };
    proc.stdout.on('data', (d) => (t.out += d));
    proc.stderr.on('data', (d) => (t.err += d));
    t.exit = new Promise((resolve) => {
        proc.on('error', (e) => {
            t.exited = { code: null, signal: null, error: String(e) };
            running.delete(t);
            resolve(t.exited);
        });
        // 'close': the pipes are drained too, so out and err are complete.
        proc.on('close', (code, signal) => {
            t.exited = { code, signal };
            running.delete(t);
            resolve(t.exited);
        });
    });
    t.lines = () => t.out.split('\n').filter((l) => l !== '');
    // Stops it with `signal` and checks the clean exit: 0, nothing cut, no sanitizer report.
    t.stop = async (signal = 'SIGINT') => {
        if (!t.exited) proc.kill(signal);
        const r = await t.exit;
        assert.deepEqual(r, { code: 0, signal: null }, `tail exit ${JSON.stringify(r)}; stderr:\n${t.err}`);
        assert.doesNotMatch(t.err, SANITIZER, t.err);
        assert.ok(t.out === '' || t.out.endsWith('\n'), `output cut: ${JSON.stringify(t.out.slice(-200))}`);
        return r;
    };
    t.kill = async () => {
        if (!t.exited) proc.kill('SIGKILL');
        await t.exit;
    };
    running.add(t);
    return t;
}

// A port that nothing listens on (bound, then released).

test('the filters go to the server as the query string, the token as a bearer', async () => {
    const srv = await startSse({ token: 's3cret-admin' });
    const t = startTail(
        [
            '--admin', srv.url,
            '--status', 'error', '--status=canceled',
            '--method', 'POST', '--method', 'GET',
            '--search', 'rate limit & co=1 café',
            '--ip', 'self',
            '--header', 'x-user:ada lovelace', '--header', 'x-trace',
            '--sampling-rate', '0.5',
            '--route', '/api/generate',
            '--model', 'claude-haiku-4-5',
            '--key', 'mobile app',
        ],
        { token: 's3cret-admin' }
    );
    await until(() => srv.streams.size === 1 || t.exited, 10000, 'the tail to connect');
    assert.equal(srv.requests.length, 1, t.err);
    const req = srv.requests[0];
    assert.equal(
        req.url,
        '/tail?format=json&status=error&status=canceled&method=POST&method=GET' +
            '&search=rate%20limit%20%26%20co%3D1%20caf%C3%A9&ip=self' +
            '&header=x-user%3Aada%20lovelace&header=x-trace&sampling_rate=0.5' +
            '&route=%2Fapi%2Fgenerate&model=claude-haiku-4-5&key=mobile%20app'
    );
    // What a server reads back is what was typed.
    const q = new URL(req.url, srv.url).searchParams;
    assert.deepEqual(q.getAll('status'), ['error', 'canceled']);
    assert.equal(q.get('search'), 'rate limit & co=1 café');
    assert.deepEqual(q.getAll('header'), ['x-user:ada lovelace', 'x-trace']);
    assert.equal(req.headers.authorization, 'Bearer s3cret-admin');
    assert.match(req.headers.accept, /text\/event-stream/);
    await t.stop('SIGINT');
    assert.equal(t.out, '');
    assert.doesNotMatch(t.err, /s3cret-admin/);
    await srv.kill();
});

test('json (the default when piped): each event as received, one per line', async () => {
    const srv = await startSse();
    const t = startTail(['--admin', srv.url + '/']);
    await until(() => srv.streams.size === 1 || t.exited, 10000, 'the tail to connect');
    assert.equal(srv.requests[0].url, '/tail?format=json');
    assert.equal(srv.requests[0].headers.authorization, undefined);
    const sent = [REQUEST, CACHED, NO_MODEL, CANCELED, SCHEDULED].map((e) => JSON.stringify(e));
    srv.send(`data: ${sent[0]}\n\n`);
    srv.send(`: keepalive\n\nevent: tail\nid: 7\nretry: 1000\ndata: ${sent[1]}\n\n`); // other fields: ignored
    srv.send(`data: ${sent[2].slice(0, 25)}`); // one event split across writes
    await until(() => t.lines().length === 2, 10000, 'two events');
    srv.send(`${sent[2].slice(25)}\r\n\r\ndata: ${sent[3]}\n\ndata: ${sent[4]}\n\n`);
    await until(() => t.lines().length === 5, 10000, 'five events');
    assert.deepEqual(t.lines(), sent);
    for (const l of t.lines()) JSON.parse(l);
    // The dropped count is news for a person, not a line of the NDJSON.
    assert.match(t.err, /^\(3 events dropped: tail was too slow\)$/m);
    await t.stop('SIGINT');
    await srv.kill();
});

test('pretty: the seed\'s lines', async () => {
    const srv = await startSse();
    const t = startTail(['--admin', srv.url, '--format', 'pretty']);
    await until(() => srv.streams.size === 1 || t.exited, 10000, 'the tail to connect');
    for (const e of [REQUEST, CACHED, NO_MODEL, CANCELED, SCHEDULED]) srv.event(e);
    srv.send('data: this is not json\n\n');
    await until(() => t.lines().length === PRETTY.length && /skipped/.test(t.err), 10000, 'the pretty lines');
    assert.deepEqual(t.lines(), PRETTY);
    assert.match(t.err, /tail: connected to http:\/\/127\.0\.0\.1:\d+, waiting for events/);
    assert.match(t.err, /tail: skipped an event that is not a JSON object/);
    await t.stop('SIGTERM');
    await srv.kill();
});

test('nothing listening: says so and exits 1', async () => {
    const port = await freePort();
    const t = startTail(['--admin', `http://127.0.0.1:${port}`]);
    const r = await t.exit;
    assert.equal(r.code, 1, t.err);
    assert.equal(t.err, `aigate: no aigate server at http://127.0.0.1:${port} (is it running? admin_listen)\n`);
    assert.equal(t.out, '');
});

test('refusals: a wrong or missing token, a path that is not a tail', async () => {
    const srv = await startSse({ token: 'tok-right-1234' });
    let t = startTail(['--admin', srv.url], { token: 'tok-other-5678' });
    assert.equal((await t.exit).code, 1);
    assert.match(t.err, /^aigate: the admin token is wrong/);
    assert.doesNotMatch(t.err, /tok-/); // never echoed

    t = startTail(['--admin', srv.url]);
    assert.equal((await t.exit).code, 1);
    assert.match(t.err, /^aigate: the admin token is missing: .*AIGATE_ADMIN_TOKEN/);
    assert.equal(srv.requests.length, 2);
    await srv.kill();

    const other = await startSse();
    t = startTail(['--admin', `${other.url}/elsewhere`]);
    assert.equal((await t.exit).code, 1);
    assert.equal(t.err, `aigate: ${other.url}/elsewhere/tail answered 404 Not Found: no such admin path\n`);
    await other.kill();
});

test('the server goes away and comes back on the same port: the tail reconnects', async () => {
    let srv = await startSse();
    const port = srv.port;
    const t = startTail(['--admin', srv.url, '--format', 'json', '--route', '/api/generate']);
    await until(() => srv.streams.size === 1 || t.exited, 10000, 'the tail to connect');
    srv.event(REQUEST);
    await until(() => t.lines().length === 1, 10000, 'the first event');

    await srv.kill(); // the server restarts
    await until(() => /tail: connection lost; reconnecting\.\.\./.test(t.err), 10000, 'the lost message');
    assert.equal(t.exited, null, 'the tail keeps trying');

    srv = await startSse({ port });
    await until(() => srv.streams.size === 1 || t.exited, 15000, 'the tail to reconnect');
    assert.equal(srv.requests[0].url, '/tail?format=json&route=%2Fapi%2Fgenerate');
    await until(() => /tail: reconnected/.test(t.err), 10000, 'the reconnected message');
    srv.event(SCHEDULED);
    await until(() => t.lines().length === 2, 10000, 'the event after the reconnect');
    assert.deepEqual(t.lines(), [JSON.stringify(REQUEST), JSON.stringify(SCHEDULED)]);
    assert.equal(t.err.match(/connection lost/g).length, 1);
    await t.stop('SIGINT');
    await srv.kill();
});

test('Ctrl-C while waiting to reconnect ends it cleanly too', async () => {
    const srv = await startSse();
    const t = startTail(['--admin', srv.url]);
    await until(() => srv.streams.size === 1 || t.exited, 10000, 'the tail to connect');
    await srv.kill(); // and stays away
    await until(() => /connection lost/.test(t.err), 10000, 'the lost message');
    await t.stop('SIGINT');
});

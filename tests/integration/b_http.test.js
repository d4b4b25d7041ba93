// SPDX-License-Identifier: MIT
//
// b_http.test.js: the HTTP/1.1 server over raw sockets: keep-alive,
// pipelining, chunked bodies, 100-continue, HEAD, limits (413/431/400),
// timeouts (slowloris, idle) and the connection cap.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const { startGateway, startFake, request, raw, parseResponses, until } = require('./lib.js');

let up, gw;

before(async () => {
    up = await startFake();
    gw = await startGateway({
        upstream: `http://127.0.0.1:${up.port}`,
        config: '[aigate]\nheader_timeout = 0.5\nidle_timeout = 0.8\nbody_timeout = 0.5\nmax_connections = 50\n',
    });
});

after(async () => {
    await gw.stop();
    await up.close();
});

const post = (body, extra = '') =>
    `POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n${extra}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;

test('keep-alive: two requests on one connection', async () => {
    const sock = net.connect(gw.port, '127.0.0.1');
    let got = '';
    sock.on('data', (d) => (got += d));
    await new Promise((r) => sock.on('connect', r));
    sock.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => parseResponses(got).length === 1, 3000, 'first response');
    sock.write(post('{"prompt":"second on the same connection"}'));
    await until(() => parseResponses(got).length === 2, 5000, 'second response');
    const [a, b] = parseResponses(got);
    assert.equal(a.status, 200);
    assert.equal(a.headers.connection, 'keep-alive');
    assert.equal(b.status, 200);
    assert.match(JSON.parse(b.body).output, /second on the same connection/);
    sock.destroy();
});

test('pipelining: responses come back in request order', async () => {
    const reqs = [
        post('{"prompt":"first"}'),
        'GET /nope HTTP/1.1\r\nHost: x\r\n\r\n',
        post('{"prompt":"third"}'),
        'OPTIONS /x HTTP/1.1\r\nHost: x\r\n\r\n',
        'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    ];
    const r = await raw(gw.port, reqs.join(''));
    assert.ok(r.closed, 'closed after Connection: close');
    const res = parseResponses(r.text);
    assert.deepEqual(res.map((x) => x.status), [200, 404, 200, 200, 200]);
    assert.match(JSON.parse(res[0].body).output, /first/);
    assert.match(JSON.parse(res[2].body).output, /third/);
    assert.equal(res[4].headers.connection, 'close');
});

test('a chunked request body is decoded', async () => {
    const body = '{"prompt":"chunked body works"}';
    const chunks = `5\r\n${body.slice(0, 5)}\r\n${(body.length - 5).toString(16)};ext=1\r\n${body.slice(5)}\r\n0\r\n\r\n`;
    const r = await raw(
        gw.port,
        ['POST /api/generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n', chunks,
            'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n']
    );
    const res = parseResponses(r.text);
    assert.equal(res[0].status, 200, r.text);
    assert.match(JSON.parse(res[0].body).output, /chunked body works/);
    assert.equal(res[1].status, 200);
});

test('Expect: 100-continue gets 100 Continue before the body is sent', async () => {
    const sock = net.connect(gw.port, '127.0.0.1');
    let got = '';
    sock.on('data', (d) => (got += d));
    await new Promise((r) => sock.on('connect', r));
    const body = '{"prompt":"after continue"}';
    sock.write(`POST /api/generate HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: ${body.length}\r\n\r\n`);
    await until(() => got.startsWith('HTTP/1.1 100 Continue\r\n\r\n'), 3000, '100 Continue');
    sock.write(body);
    await until(() => parseResponses(got).length === 2, 5000, 'final response');
    assert.equal(parseResponses(got)[1].status, 200);
    sock.destroy();
});

test('HEAD answers headers only', async () => {
    const r = await raw(gw.port, 'HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    assert.match(r.text, /^HTTP\/1.1 200 OK\r\n/);
    assert.match(r.text, /Content-Length: 15\r\n/);
    assert.ok(r.text.endsWith('\r\n\r\n'), 'no body after a HEAD response');
});

test('a body over the limit gets 413 without being read', async () => {
    const r = await raw(gw.port, 'POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n{');
    assert.match(r.text, /^HTTP\/1.1 413 /);
    assert.ok(r.closed);
});

test('a chunked body over the limit gets 413', async () => {
    const big = 'a'.repeat(600000);
    const r = await raw(gw.port, [
        'POST /api/generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n',
        `${big.length.toString(16)}\r\n${big}\r\n`,
        `${big.length.toString(16)}\r\n${big}\r\n0\r\n\r\n`,
    ]);
    assert.match(r.text, /^HTTP\/1.1 413 /);
});

test('headers over 16 KiB, or over 100 of them, get 431', async () => {
    let r = await raw(gw.port, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(17000)}\r\n\r\n`);
    assert.match(r.text, /^HTTP\/1.1 431 /);
    assert.ok(r.closed);
    const many = Array.from({ length: 150 }, (_, i) => `X-H${i}: v\r\n`).join('');
    r = await raw(gw.port, `GET /healthz HTTP/1.1\r\nHost: x\r\n${many}\r\n`);
    assert.match(r.text, /^HTTP\/1.1 431 /);
});

test('malformed requests get 400 and the connection closes', async () => {
    const bad = [
        'GARBAGE\r\n\r\n',
        'GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n',
        'POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello',
        'POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
        'POST /api/generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n',
        'GET / HTTP/1.1\r\nHost: x\r\n folded: line\r\n\r\n',
    ];
    for (const b of bad) {
        const r = await raw(gw.port, b);
        assert.match(r.text, /^HTTP\/1.1 400 /, JSON.stringify(b));
        assert.match(r.text, /Access-Control-Allow-Origin: \*/);
        assert.ok(r.closed, `closed after ${JSON.stringify(b)}`);
    }
});

test('a slowloris client is closed by the header timeout while others are served', async () => {
    const slow = net.connect(gw.port, '127.0.0.1');
    let got = '';
    let closed = false;
    slow.on('data', (d) => (got += d));
    slow.on('close', () => (closed = true));
    slow.on('error', () => {});
    await new Promise((r) => slow.on('connect', r));
    slow.write('GET /healthz HTTP/1.1\r\n');
    // Trickle header bytes; each is progress, but the head never completes.
    let i = 0;
    const trickle = setInterval(() => {
        if (!closed && i < 100) slow.write(`X-Slow-${i++}: 1\r\n`);
    }, 50);
    // Meanwhile a normal client is served.
    const res = await request(`${gw.url}/healthz`);
    assert.equal(res.status, 200);
    await until(() => closed, 5000, 'the slow client to be closed');
    clearInterval(trickle);
    assert.match(got, /^HTTP\/1.1 408 /);
    assert.ok(i < 60, `closed after ${i} header lines (timeout 0.5 s)`);
});

test('an idle keep-alive connection is closed after idle_timeout', async () => {
    const sock = net.connect(gw.port, '127.0.0.1');
    let closed = false;
    let got = '';
    sock.on('data', (d) => (got += d));
    sock.on('close', () => (closed = true));
    await new Promise((r) => sock.on('connect', r));
    sock.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    await until(() => parseResponses(got).length === 1, 3000, 'response');
    const t0 = Date.now();
    await until(() => closed, 5000, 'idle close');
    assert.ok(Date.now() - t0 >= 500, 'not closed before the idle timeout');
});

test('over max_connections, new connections get 503 and close', async () => {
    const g = await startGateway({ upstream: `http://127.0.0.1:${up.port}`, config: '[aigate]\nmax_connections = 3\n', threads: 1 });
    const held = [];
    try {
        for (let i = 0; i < 3; i++) {
            const s = net.connect(g.port, '127.0.0.1');
            await new Promise((r) => s.on('connect', r));
            held.push(s);
        }
        // The server has accepted the three once it answers on one of them.
        let got = '';
        held[0].on('data', (d) => (got += d));
        held[0].write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
        await until(() => got.includes('\r\n\r\n'), 3000, 'response on a held connection');
        const r = await raw(g.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
        assert.match(r.text, /^HTTP\/1.1 503 /);
        assert.ok(r.closed);
        held.pop().destroy();
        await until(async () => {
            const x = await raw(g.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
            return /^HTTP\/1.1 200 /.test(x.text);
        }, 5000, 'a slot to free up');
    } finally {
        held.forEach((s) => s.destroy());
        await g.stop();
    }
});

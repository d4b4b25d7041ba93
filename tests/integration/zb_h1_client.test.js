// SPDX-License-Identifier: MIT
//
// zb_h1_client.test.js: the native HTTP/1.1 upstream client (upstream/h1_client.c,
// `upstream_client = "native"`) against a raw upstream that counts its
// connections, over http:// and https:// (Node's TLS server, a test CA given
// as upstream_ca_file): keep-alive reuse, a pooled connection the server
// closed is never used for a request (and TLS sessions resume on the new
// one), Content-Length and chunked answers, malformed or cut answers give a
// 502 and the gateway goes on, a slow client pauses the upstream read (the
// upstream's socket fills) without losing a byte; a certificate that fails
// verification (wrong name, unknown CA, the system store) is a 502 with the
// cause logged, before any request byte is sent; a host name whose first
// address refuses is served through the next one.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const http = require('node:http');
const path = require('node:path');
const tls = require('node:tls');

const { BIN, TEST_KEY, startGateway, generate, until, tmpdir, testCA, openssl } = require('./lib.js');

const MESSAGE = JSON.stringify({
    id: 'msg_raw', type: 'message', role: 'assistant', model: 'claude-haiku-4-5',
    content: [{ type: 'text', text: 'hello from the raw upstream' }], stop_reason: 'end_turn', stop_sequence: null,
    usage: { input_tokens: 3, output_tokens: 5 },
});

const CONFIG = '[aigate]\nupstream_client = "native"\nupstream_retries = 0\ncache = false\n';

let ca, caDir;
before(() => {
    caDir = tmpdir();
    ca = testCA(caDir);
    ca.issue('upstream', '0x2001');
    ca.issue('wrong-name', '0x2002', 'DNS:elsewhere.example'); // names a host, not 127.0.0.1
    openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'self.key',
        '-out', 'self.pem', '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], caDir);
});
after(() => fs.rmSync(caDir, { recursive: true, force: true }));

// A keep-alive upstream: reply(i, body) gives the bytes of answer i (and
// whether to end the connection after it). Counts connections, requests and
// (over TLS, with the certificate `cert` of the test CA's folder) resumed sessions.
// st.url and st.config are the gateway's upstream and config for it.
async function rawUpstream(reply, cert) {
    const st = { connections: 0, requests: 0, open: 0, resumed: 0, sockets: [] };
    const onSocket = (sock) => {
        st.connections++;
        if (cert && sock.isSessionReused()) st.resumed++;
        st.open++;
        st.sockets.push(sock);
        sock.on('close', () => st.open--);
        let buf = Buffer.alloc(0);
        sock.on('data', (d) => {
            buf = Buffer.concat([buf, d]);
            for (;;) {
                const head = buf.indexOf('\r\n\r\n');
                if (head < 0) return;
                const len = Number((/content-length: *(\d+)/i.exec(buf.subarray(0, head).toString('latin1')) || [0, 0])[1]);
                if (buf.length < head + 4 + len) return;
                const body = buf.subarray(head + 4, head + 4 + len).toString('utf8');
                buf = buf.subarray(head + 4 + len);
                const i = st.requests++;
                const r = reply(i, body, sock);
                if (r === null) return; // the reply writes by itself
                sock.write(r.bytes, 'latin1');
                if (r.end) sock.end();
            }
        });
        sock.on('error', () => {});
    };
    const server = cert
        ? tls.createServer({ key: fs.readFileSync(path.join(caDir, `${cert}.key`)), cert: fs.readFileSync(path.join(caDir, `${cert}.pem`)) }, onSocket)
        : net.createServer(onSocket);
    server.on('tlsClientError', () => { st.tlsErrors = (st.tlsErrors || 0) + 1; });
    await new Promise((r) => server.listen(0, '127.0.0.1', r));
    st.port = server.address().port;
    st.url = `${cert ? 'https' : 'http'}://127.0.0.1:${st.port}`;
    st.config = CONFIG + (cert ? `upstream_ca_file = "${ca.file}"\n` : '');
    st.close = () => {
        for (const s of st.sockets) s.destroy();
        return new Promise((r) => server.close(r));
    };
    return st;
}

function lengthAnswer(body, extra = []) {
    return [`HTTP/1.1 200 OK`, 'content-type: application/json', ...extra, `content-length: ${Buffer.byteLength(body)}`, '', body].join('\r\n');
}

for (const [scheme, cert] of [['http', undefined], ['https', 'upstream']]) {
    test(`${scheme}: keep-alive: twenty requests in a row take one connection`, async () => {
        const up = await rawUpstream(() => ({ bytes: lengthAnswer(MESSAGE) }), cert);
        const gw = await startGateway({ upstream: up.url, config: up.config, threads: 1 });
        try {
            for (let i = 0; i < 20; i++) {
                const r = await generate(gw, { prompt: `again ${i}` });
                assert.equal(r.status, 200, r.body);
                assert.equal(r.json.output, 'hello from the raw upstream');
            }
            assert.equal(up.requests, 20);
            assert.equal(up.connections, 1, 'the pooled connection is reused');
        } finally {
            await gw.stop();
            await up.close();
        }
    });

    test(`${scheme}: a pooled connection the server closed is not used: the request goes on a new one, once`, async () => {
        // Each answer promises keep-alive, then the server closes the connection.
        const up = await rawUpstream(() => ({ bytes: lengthAnswer(MESSAGE), end: true }), cert);
        const gw = await startGateway({ upstream: up.url, config: up.config, threads: 1 });
        try {
            for (let i = 0; i < 5; i++) {
                // The close has happened at the server before the next request is made.
                await until(() => up.open === 0, 5000, 'the server to close');
                const r = await generate(gw, { prompt: `after a close ${i}` });
                assert.equal(r.status, 200, r.body);
                assert.equal(r.headers['x-aigate-retries'], '0', 'no attempt was lost to the dead connection');
            }
            assert.equal(up.requests, 5, 'one request per call: none sent on a closed connection');
            assert.equal(up.connections, 5);
            // Node's server issues two tickets per full handshake, none on a resumed
        // one, and takes each once: three of the four new connections resume.
        if (cert) assert.ok(up.resumed >= 3, `${up.resumed} of 4 new connections resumed a TLS session`);
        } finally {
            await gw.stop();
            await up.close();
        }
    });

    test(`${scheme}: chunked answers, in odd pieces, are decoded whole`, async () => {
        const up = await rawUpstream((i, body, sock) => {
            const parts = [MESSAGE.slice(0, 7), MESSAGE.slice(7, 8), MESSAGE.slice(8)];
            sock.write('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n');
            for (const p of parts) sock.write(`${Buffer.byteLength(p).toString(16)};ext=1\r\n${p}\r\n`);
            sock.write('0\r\nx-trailer: yes\r\n\r\n');
            return null;
        }, cert);
        const gw = await startGateway({ upstream: up.url, config: up.config, threads: 1 });
        try {
            for (let i = 0; i < 3; i++) {
                const r = await generate(gw, { prompt: `chunked ${i}` });
                assert.equal(r.status, 200, r.body);
                assert.equal(r.json.output, 'hello from the raw upstream');
            }
            assert.equal(up.connections, 1, 'a chunked answer that ended keeps the connection');
        } finally {
            await gw.stop();
            await up.close();
        }
    });

    test(`${scheme}: malformed or cut answers are a 502, and the gateway goes on`, async () => {
        const bad = [
            'HTTP/1.1 2OO OK\r\ncontent-length: 2\r\n\r\n{}', // bad status line
            'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n', // bad chunk size
            `HTTP/1.1 200 OK\r\nx-big: ${'a'.repeat(200000)}\r\ncontent-length: 2\r\n\r\n{}`, // header overflow
            'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"id":"m', // early close
            'HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello', // conflicting lengths
        ];
        const up = await rawUpstream((i) => (i < bad.length ? { bytes: bad[i], end: true } : { bytes: lengthAnswer(MESSAGE) }), cert);
        const gw = await startGateway({ upstream: up.url, config: up.config, threads: 1 });
        try {
            for (let i = 0; i < bad.length; i++) {
                const r = await generate(gw, { prompt: `bad ${i}` });
                assert.equal(r.status, 502, `case ${i}: ${r.status} ${r.body.slice(0, 200)}`);
                assert.deepEqual(r.json, { error: 'AI service error' });
            }
            const ok = await generate(gw, { prompt: 'good again' });
            assert.equal(ok.status, 200, ok.body);
        } finally {
            await gw.stop();
            await up.close();
        }
    });

    test(`${scheme}: a slow client pauses the upstream read; every byte arrives once it reads`, async () => {
        // The upstream writes until its socket is full (bounded), then 2000 more
        // events once it drains: it can only fill if the gateway stopped reading.
        const MAX = 400000;
        let blockedAt = 0;
        let sent = 0;
        const up = await rawUpstream((i, body, sock) => {
            sock.write('HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n');
            const ev = (name, data) => {
                const t = `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;
                return `${Buffer.byteLength(t).toString(16)}\r\n${t}\r\n`;
            };
            sock.write(ev('message_start', { type: 'message_start', message: { id: 'm', type: 'message', role: 'assistant', model: 'claude-haiku-4-5', content: [], usage: { input_tokens: 1, output_tokens: 0 } } }));
            sock.write(ev('content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }));
            const pad = 'x'.repeat(480);
            const pump = () => {
                while (sent < MAX && (!blockedAt || sent < blockedAt + 2000)) {
                    const ok = sock.write(ev('content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: `${pad}${String(sent).padStart(6, '0')} ` } }));
                    sent++;
                    if (!ok) {
                        if (!blockedAt) blockedAt = sent;
                        sock.once('drain', pump);
                        return;
                    }
                }
                sock.write(ev('content_block_stop', { type: 'content_block_stop', index: 0 }));
                sock.write(ev('message_delta', { type: 'message_delta', delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: sent } }));
                sock.write(ev('message_stop', { type: 'message_stop' }));
                sock.write('0\r\n\r\n');
            };
            pump();
            return null;
        }, cert);
        const gw = await startGateway({ upstream: up.url, config: up.config, threads: 1 });
        try {
            const got = await new Promise((resolve, reject) => {
                const req = http.request({ host: '127.0.0.1', port: gw.port, path: '/api/generate', method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
                    const chunks = [];
                    res.pause(); // the client reads nothing for a while
                    until(() => blockedAt > 0, 20000, 'the upstream to block on a full socket')
                        .then(() => {
                            res.on('data', (c) => chunks.push(c));
                            res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
                            res.resume();
                        })
                        .catch(reject);
                });
                req.on('error', reject);
                req.end(JSON.stringify({ prompt: 'a long stream', stream: true }));
            });
            assert.ok(blockedAt > 0 && blockedAt < MAX, `the upstream blocked after ${blockedAt} events`);
            assert.equal(sent, blockedAt + 2000);
            const deltas = got.match(/x{480}\d{6} /g) || [];
            assert.equal(deltas.length, sent, 'every delta arrived');
            for (let i = 0; i < sent; i++) assert.ok(deltas[i].endsWith(`${String(i).padStart(6, '0')} `), `delta ${i} in order`);
            assert.match(got, /event: message_stop/);
        } finally {
            await gw.stop();
            await up.close();
        }
    });
}

test('https: a certificate that fails verification is a 502 with the cause logged; no request byte is sent', async () => {
    const cases = [
        ['wrong-name', `upstream_ca_file = "${path.join(caDir, 'ca.pem')}"`, /certificate verify failed: IP address mismatch/],
        ['self', `upstream_ca_file = "${path.join(caDir, 'ca.pem')}"`, /certificate verify failed: self[- ]signed certificate/],
        ['upstream', '', /certificate verify failed: unable to get local issuer certificate/], // the system store
    ];
    for (const [cert, line, why] of cases) {
        const up = await rawUpstream(() => ({ bytes: lengthAnswer(MESSAGE) }), cert);
        const gw = await startGateway({ upstream: up.url, config: `${CONFIG}${line}\n`, threads: 1 });
        try {
            const r = await generate(gw, { prompt: `verify ${cert}` });
            assert.equal(r.status, 502, `${cert}: ${r.status} ${r.body}`);
            assert.deepEqual(r.json, { error: 'AI service error' });
            await until(() => why.test(gw.stderr), 5000, `the cause in the log (${why})`);
            assert.equal(up.requests, 0, 'nothing was sent to an unverified server');
        } finally {
            await gw.stop();
            await up.close();
        }
    }
});

test('https: an unreadable or empty upstream_ca_file stops the start with a clear line', () => {
    const { spawnSync } = require('node:child_process');
    const empty = path.join(caDir, 'empty.pem');
    fs.writeFileSync(empty, '');
    for (const [file, why] of [[path.join(caDir, 'missing.pem'), /upstream_ca_file ".*missing\.pem": cannot read it/],
        [empty, /upstream_ca_file ".*empty\.pem" holds no PEM certificate/]]) {
        const cwd = tmpdir();
        fs.writeFileSync(path.join(cwd, 'aigate.toml'), `[aigate]\nadmin_listen = ""\nupstream_ca_file = "${file}"\n`);
        const r = spawnSync(BIN, ['serve', '--port', '0', '--config', path.join(cwd, 'aigate.toml')],
            { cwd, env: { ...process.env, ANTHROPIC_API_KEY: TEST_KEY }, encoding: 'utf8', timeout: 20000 });
        assert.equal(r.status, 1, `${file}: exit ${r.status}; ${r.stderr}`);
        assert.match(r.stderr, why);
        fs.rmSync(cwd, { recursive: true, force: true });
    }
});

// The shared objects mapped into the gateway's process.
const mapsOf = (gw) => fs.readFileSync(`/proc/${gw.proc.pid}/maps`, 'utf8');

test('libcurl is not loaded while the native client serves; "curl" loads it at start and proxies the same', async () => {
    const up = await rawUpstream(() => ({ bytes: lengthAnswer(MESSAGE) }), 'upstream');
    let gw = await startGateway({ upstream: up.url, config: up.config, threads: 1 });
    try {
        assert.doesNotMatch(mapsOf(gw), /libcurl/, 'no libcurl at start');
        for (let i = 0; i < 3; i++) assert.equal((await generate(gw, { prompt: `native ${i}` })).status, 200);
        assert.doesNotMatch(mapsOf(gw), /libcurl/, 'no libcurl after https:// answers');
    } finally {
        await gw.stop();
    }
    gw = await startGateway({ upstream: up.url, config: up.config.replace('"native"', '"curl"'), threads: 1 });
    try {
        assert.match(mapsOf(gw), /libcurl\.so\.4/, 'loaded at start when configured');
        const before = up.connections;
        for (let i = 0; i < 5; i++) {
            const r = await generate(gw, { prompt: `curl ${i}` });
            assert.equal(r.status, 200, r.body);
            assert.equal(r.json.output, 'hello from the raw upstream');
        }
        assert.equal(up.connections - before, 1, 'libcurl keeps its connection alive too');
    } finally {
        await gw.stop();
        await up.close();
    }
});

// nss_wrapper (Debian's libnss-wrapper) makes getaddrinfo read a hosts file of the
// test's: a name whose first address refuses (127.0.0.2: nothing listens there)
// and whose second is the upstream's.
// Not under ThreadSanitizer: nss_wrapper's own lock is taken where TSan does not
// see it, which TSan then reports as an unlock of an unlocked mutex.
const NSS_WRAPPER = ['/usr/lib/x86_64-linux-gnu/libnss_wrapper.so'].find((f) => fs.existsSync(f));
const NSS_SKIP = !NSS_WRAPPER ? 'no libnss-wrapper' : process.env.TSAN_OPTIONS ? 'nss_wrapper hides its lock from TSan' : false;
test('a name whose first address refuses is served through its next one, within the connect deadline', { skip: NSS_SKIP }, async () => {
    const up = await rawUpstream(() => ({ bytes: lengthAnswer(MESSAGE) }));
    const dir = tmpdir();
    const env = (hosts) => {
        fs.writeFileSync(path.join(dir, hosts), hosts === 'both' ? '127.0.0.2 upstream.test\n127.0.0.1 upstream.test\n' : '127.0.0.2 upstream.test\n');
        return {
            LD_PRELOAD: NSS_WRAPPER, NSS_WRAPPER_HOSTS: path.join(dir, hosts),
            // ASan checks that its runtime is the first library: the wrapper comes first here.
            ASAN_OPTIONS: `${process.env.ASAN_OPTIONS || 'detect_leaks=1'}:verify_asan_link_order=0`,
        };
    };
    const url = `http://upstream.test:${up.port}`;
    try {
        // The control: the first address alone refuses, so the test cannot pass by luck.
        let gw = await startGateway({ upstream: url, config: up.config, threads: 1, env: env('first') });
        try {
            const r = await generate(gw, { prompt: 'only the refusing address' });
            assert.equal(r.status, 502, r.body);
            assert.equal(up.connections, 0);
        } finally {
            await gw.stop();
        }
        gw = await startGateway({ upstream: url, config: up.config, threads: 1, env: env('both') });
        try {
            for (let i = 0; i < 3; i++) {
                const r = await generate(gw, { prompt: `next address ${i}` });
                assert.equal(r.status, 200, r.body);
                assert.equal(r.json.output, 'hello from the raw upstream');
            }
            // The address that answered is kept: one connection, reused.
            assert.equal(up.connections, 1);
        } finally {
            await gw.stop();
        }
    } finally {
        await up.close();
        fs.rmSync(dir, { recursive: true, force: true });
    }
});

test('the usage object is passed on as the upstream wrote it, unless the cache could not read it back', async () => {
    const usages = [
        '{"input_tokens":3,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":5,"service_tier":"standard"}',
        '{"input_tokens":123456789012345678901234,"output_tokens":5}', // past 64 bits: jansson refuses it
        '{"input_tokens":3,"output_tokens":5,"note":"\\ud800"}', // a lone surrogate: likewise
    ];
    const up = await rawUpstream((i) => ({
        bytes: lengthAnswer(MESSAGE.replace(/"usage":\{[^}]*\}/, `"usage":${usages[i % usages.length]}`)),
    }));
    const gw = await startGateway({ upstream: up.url, config: up.config, threads: 1 });
    try {
        const raw = async (prompt) => {
            const r = await generate(gw, { prompt });
            assert.equal(r.status, 200, r.body);
            return JSON.stringify(JSON.parse(r.body).usage);
        };
        assert.equal(await raw('plain usage'), usages[0], 'as the upstream wrote it');
        assert.equal(await raw('huge usage'), '{"input_tokens":0,"output_tokens":5}');
        assert.equal(await raw('surrogate usage'), '{"input_tokens":3,"output_tokens":5}');
    } finally {
        await gw.stop();
        await up.close();
    }
});

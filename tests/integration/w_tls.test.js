// SPDX-License-Identifier: MIT
//
// w_tls.test.js: HTTPS on the listeners (tls_cert, tls_key, admin_tls). A test
// CA and its server certificates made with the openssl CLI; curl and Node's
// https client reach every route (streams too) and the admin listener; bad
// certificates stop the start with a clear line; a certificate swapped by
// `aigate deploy` reaches new connections while an open one keeps its own;
// plain HTTP on the port gets a 400, a handshake that never ends the header timeout.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const https = require('node:https');
const net = require('node:net');
const path = require('node:path');
const { BIN, TEST_KEY, tmpdir, until, startGateway, startFake, raw, openssl, testCA } = require('./lib.js');

let up, dir, ca;

// A server key and a certificate for 127.0.0.1 signed by the test CA, with
// the given serial; `dates` ({start, end}, YYYYMMDDHHMMSSZ) makes it through
// `openssl ca`, the one 3.0 tool that sets a start date in the past.
let testIssue;
function issue(name, serial, dates) {
    if (!dates) {
        testIssue(name, serial);
        return;
    }
    openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`,
        '-out', `${name}.csr`, '-subj', `/CN=aigate-test-${name}`], dir);
    fs.writeFileSync(path.join(dir, 'serial'), serial.replace(/^0x/, '') + '\n');
    openssl(['ca', '-batch', '-config', 'ca.cnf', '-cert', 'ca.pem', '-keyfile', 'ca.key', '-in', `${name}.csr`,
        '-out', `${name}.pem`, '-startdate', dates.start, '-enddate', dates.end, '-extfile', 'ext.cnf', '-notext'], dir);
}

function f(name) {
    return path.join(dir, name);
}

before(async () => {
    up = await startFake();
    dir = tmpdir();
    testIssue = testCA(dir).issue;
    fs.writeFileSync(f('ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
    fs.writeFileSync(f('index.txt'), '');
    fs.writeFileSync(f('ca.cnf'), [
        '[ca]', 'default_ca=d', '[d]', `database=${f('index.txt')}`, `new_certs_dir=${dir}`, `serial=${f('serial')}`,
        'default_md=sha256', 'policy=p', 'unique_subject=no', '[p]', 'commonName=supplied', '',
    ].join('\n'));
    issue('one', '0x1001');
    issue('two', '0x1002');
    issue('expired', '0x1003', { start: '20200101000000Z', end: '20200102000000Z' });
    issue('future', '0x1004', { start: '20400101000000Z', end: '20400102000000Z' });
    ca = fs.readFileSync(f('ca.pem'));
});

after(async () => {
    await up.close();
});

function tlsConfig(cert, key, extra = '') {
    return `[aigate]\ntls_cert = "${cert}"\ntls_key = "${key}"\nheader_timeout = 1\n${extra}`;
}

// One HTTPS request: {status, headers, body, json, serial (the peer
// certificate's), alpn, reused (on a kept-alive socket)}.
function get(url, { method = 'GET', headers = {}, body, agent = false, timeoutMs = 10000 } = {}) {
    return new Promise((resolve, reject) => {
        const u = new URL(url);
        const req = https.request({
            host: u.hostname, port: u.port, path: u.pathname + u.search, method, headers, agent, ca,
            ALPNProtocols: ['http/1.1'],
        }, (res) => {
            const chunks = [];
            const cert = res.socket.getPeerCertificate();
            const alpn = res.socket.alpnProtocol;
            res.on('data', (c) => chunks.push(c));
            res.on('end', () => {
                const text = Buffer.concat(chunks).toString('utf8');
                let json;
                try {
                    json = JSON.parse(text);
                } catch {
                    json = undefined;
                }
                resolve({ status: res.statusCode, headers: res.headers, body: text, json, serial: cert.serialNumber,
                    alpn, reused: req.reusedSocket });
            });
            res.on('error', reject);
        });
        req.setTimeout(timeoutMs, () => req.destroy(new Error('client timeout')));
        req.on('error', reject);
        if (body !== undefined) req.write(typeof body === 'string' ? body : JSON.stringify(body));
        req.end();
    });
}

// curl, without blocking this process (the fake upstream answers from it).
function curl(args) {
    return new Promise((resolve) => {
        const p = spawn('curl', ['-sS', '--cacert', f('ca.pem'), ...args]);
        let stdout = '';
        let stderr = '';
        p.stdout.on('data', (d) => (stdout += d));
        p.stderr.on('data', (d) => (stderr += d));
        p.on('close', (status) => resolve({ status, stdout, stderr }));
    });
}

function deploy(gw) {
    return new Promise((resolve) => {
        const env = { ...process.env };
        delete env.ANTHROPIC_API_KEY;
        const p = spawn(BIN, ['deploy', '--config', path.join(gw.cwd, 'aigate.toml')], { cwd: gw.cwd, env });
        let stdout = '';
        let stderr = '';
        p.stdout.on('data', (d) => (stdout += d));
        p.stderr.on('data', (d) => (stderr += d));
        p.on('close', (status) => resolve({ status, stdout, stderr }));
    });
}

const messagesBody = (stream) => ({
    model: 'claude-haiku-4-5', max_tokens: 64, messages: [{ role: 'user', content: 'hello over tls' }], stream,
});
const jsonHeaders = { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' };

test('Node https and curl reach every route over HTTPS, streams included, and the admin listener (admin_tls)', async () => {
    const gw = await startGateway({
        upstream: `http://127.0.0.1:${up.port}`, threads: 2,
        config: tlsConfig(f('one.pem'), f('one.key'), 'admin_tls = true\ncache = false\nprompt_max_length = 100000\n'),
    });
    try {
        const base = `https://127.0.0.1:${gw.port}`;
        const h = await get(`${base}/healthz`);
        assert.equal(h.status, 200);
        assert.equal(h.alpn, 'http/1.1');
        assert.equal(h.serial, '1001');
        const g = await get(`${base}/api/generate`, { method: 'POST', headers: jsonHeaders, body: { prompt: 'tls plain' } });
        assert.equal(g.status, 200, g.body);
        assert.equal(typeof g.json.output, 'string');
        const s = await get(`${base}/api/generate`, { method: 'POST', headers: jsonHeaders, body: { prompt: 'tls stream', stream: true } });
        assert.equal(s.status, 200, s.body);
        assert.match(s.headers['content-type'], /event-stream/);
        assert.match(s.body, /event: message_stop/);
        const m = await get(`${base}/v1/messages`, { method: 'POST', headers: { ...jsonHeaders, 'x-api-key': 'client' }, body: messagesBody(false) });
        assert.equal(m.status, 200, m.body);
        assert.equal(m.json.type, 'message');
        const ms = await get(`${base}/v1/messages`, { method: 'POST', headers: { ...jsonHeaders, 'x-api-key': 'client' }, body: messagesBody(true) });
        assert.equal(ms.status, 200, ms.body);
        assert.match(ms.body, /event: content_block_delta[\s\S]*event: message_stop/);
        // A bigger answer than one TLS record, through the chunked writer.
        const big = 'x'.repeat(60000);
        const b = await get(`${base}/api/generate`, { method: 'POST', headers: jsonHeaders, body: { prompt: big, stream: true } });
        assert.equal(b.status, 200);

        // curl: HTTP/1.1 (ALPN), keep-alive over one connection, a stream, TLS 1.1 refused.
        const c = await curl(['-w', '\n%{http_code} %{http_version} %{num_connects}', `${base}/healthz`, `${base}/healthz`]);
        assert.equal(c.status, 0, c.stderr);
        assert.match(c.stdout, /"ok"[\s\S]*200 1\.1 0$/);
        const cs = await curl(['-N', '-X', 'POST', '-H', 'content-type: application/json', '-d', '{"prompt":"curl stream","stream":true}',
            `${base}/api/generate`]);
        assert.equal(cs.status, 0, cs.stderr);
        assert.match(cs.stdout, /event: message_start[\s\S]*event: message_stop/);
        const cm = await curl(['-X', 'POST', '-H', 'content-type: application/json', '-H', 'anthropic-version: 2023-06-01',
            '-d', JSON.stringify(messagesBody(false)), `${base}/v1/messages`]);
        assert.equal(cm.status, 0, cm.stderr);
        assert.equal(JSON.parse(cm.stdout).type, 'message');
        const old = await curl(['--tls-max', '1.1', `${base}/healthz`]);
        assert.notEqual(old.status, 0, 'TLS 1.1 must be refused');
        const v12 = await curl(['--tlsv1.2', '--tls-max', '1.2', '-w', ' %{http_code}', `${base}/healthz`]);
        assert.match(v12.stdout, / 200$/, v12.stderr);

        // The admin listener speaks HTTPS too.
        const admin = await get(`https://127.0.0.1:${gw.adminPort}/healthz`);
        assert.equal(admin.status, 200);
        assert.equal(admin.serial, '1001');
        const am = await curl([`https://127.0.0.1:${gw.adminPort}/metrics`]);
        assert.equal(am.status, 0, am.stderr);
        assert.match(am.stdout, /aigate_/);
    } finally {
        await gw.stop();
    }
    assert.ok(!gw.stderr.includes(TEST_KEY));
});

test('plain HTTP on the HTTPS port gets a 400 and a clean close; a handshake that never ends is closed at header_timeout', async () => {
    const gw = await startGateway({ upstream: `http://127.0.0.1:${up.port}`, config: tlsConfig(f('one.pem'), f('one.key')) });
    try {
        const r = await raw(gw.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n', { timeoutMs: 5000 });
        assert.ok(r.closed, 'the server closes');
        assert.match(r.text, /^HTTP\/1\.1 400 [\s\S]*Connection: close[\s\S]*speaks HTTPS/);

        // A client that connects and never finishes its handshake (here: half a ClientHello).
        for (const bytes of [Buffer.alloc(0), Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01])]) {
            const t0 = Date.now();
            const closedAt = await new Promise((resolve, reject) => {
                const s = net.connect(gw.port, '127.0.0.1', () => s.write(bytes));
                s.on('close', () => resolve(Date.now()));
                s.on('error', (e) => (e.code === 'ECONNRESET' ? null : reject(e)));
                setTimeout(() => reject(new Error('not closed within 8 s')), 8000).unref();
            });
            const waited = closedAt - t0;
            assert.ok(waited >= 800 && waited < 5000, `closed after ${waited} ms (header_timeout 1 s)`);
        }
        // And the port still serves.
        assert.equal((await get(`https://127.0.0.1:${gw.port}/healthz`)).status, 200);
    } finally {
        await gw.stop();
    }
});

test('an expired, not yet valid, mismatched or unreadable certificate stops the start with a line naming the file', async () => {
    const cases = [
        [f('expired.pem'), f('expired.key'), /tls_cert ".*expired\.pem": the certificate expired \(notAfter Jan  2 00:00:00 2020 GMT\)/],
        [f('future.pem'), f('future.key'), /tls_cert ".*future\.pem": the certificate is not valid yet/],
        [f('one.pem'), f('two.key'), /tls_key ".*two\.key" does not match the certificate in tls_cert ".*one\.pem"/],
        [f('missing.pem'), f('one.key'), /tls_cert ".*missing\.pem": cannot read it: No such file/],
        [f('one.key'), f('one.key'), /tls_cert ".*one\.key" is not a PEM certificate chain/],
        [f('one.pem'), '', /tls_cert and tls_key must be set together/],
    ];
    for (const [cert, key, why] of cases) {
        const cwd = tmpdir();
        fs.writeFileSync(path.join(cwd, 'aigate.toml'), tlsConfig(cert, key, 'admin_listen = ""\n'));
        const env = { ...process.env, ANTHROPIC_API_KEY: TEST_KEY };
        const r = spawnSync(BIN, ['serve', '--port', '0', '--config', path.join(cwd, 'aigate.toml')],
            { cwd, env, encoding: 'utf8', timeout: 20000 });
        assert.equal(r.status, 1, `${cert}: exit ${r.status}; ${r.stderr}`);
        assert.match(r.stderr, why);
        assert.doesNotMatch(r.stderr, /listening on/);
    }
    const cwd = tmpdir();
    fs.writeFileSync(path.join(cwd, 'aigate.toml'), '[aigate]\nadmin_tls = true\nadmin_listen = ""\n');
    const r = spawnSync(BIN, ['serve', '--port', '0', '--config', path.join(cwd, 'aigate.toml')],
        { cwd, env: { ...process.env, ANTHROPIC_API_KEY: TEST_KEY }, encoding: 'utf8', timeout: 20000 });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /admin_tls = true needs tls_cert and tls_key/);
});

test('a certificate swapped on disk: deploy serves it to new connections, an open keep-alive connection keeps its own', async () => {
    const cert = f('live.pem');
    const key = f('live.key');
    fs.copyFileSync(f('one.pem'), cert);
    fs.copyFileSync(f('one.key'), key);
    const gw = await startGateway({
        upstream: `http://127.0.0.1:${up.port}`, threads: 2,
        config: tlsConfig(cert, key, 'admin_tls = true\nidle_timeout = 60\n'),
    });
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca });
    try {
        const base = `https://127.0.0.1:${gw.port}`;
        const first = await get(`${base}/healthz`, { agent });
        assert.equal(first.serial, '1001');

        // Renewed in place: the same file names, a new certificate and key.
        fs.copyFileSync(f('two.pem'), cert);
        fs.copyFileSync(f('two.key'), key);
        const d = await deploy(gw);
        assert.equal(d.status, 0, d.stdout + d.stderr);
        assert.match(d.stdout + gw.stderr, /tls_cert/);

        const fresh = await get(`${base}/healthz`);
        assert.equal(fresh.serial, '1002', 'a new connection gets the new certificate');
        const admin = await get(`https://127.0.0.1:${gw.adminPort}/healthz`);
        assert.equal(admin.serial, '1002', 'the admin listener too');
        const again = await get(`${base}/api/generate`, { agent, method: 'POST', headers: jsonHeaders, body: { prompt: 'still here' } });
        assert.equal(again.status, 200, again.body);
        assert.equal(again.reused, true, 'the same connection');
        assert.equal(again.serial, '1001', 'which keeps the certificate it was accepted with');

        // A broken swap (a key that does not match) is refused; the last good one stays.
        fs.copyFileSync(f('one.key'), key);
        const bad = await deploy(gw);
        assert.equal(bad.status, 1, bad.stdout + bad.stderr);
        assert.match(bad.stderr, /does not match the certificate/);
        assert.equal((await get(`${base}/healthz`)).serial, '1002');

        // SIGHUP reads the files again too.
        fs.copyFileSync(f('one.pem'), cert);
        const before = (gw.stderr.match(/reload: generation/g) || []).length;
        gw.proc.kill('SIGHUP');
        await until(() => (gw.stderr.match(/reload: generation/g) || []).length > before, 10000, 'the SIGHUP reload');
        assert.equal((await get(`${base}/healthz`)).serial, '1001');
    } finally {
        agent.destroy();
        await gw.stop();
    }
});

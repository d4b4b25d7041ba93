// SPDX-License-Identifier: MIT
//
// n_outputs.test.js: a scheduled task's outputs against real servers. The C
// driver tests/unit/outputs_cli.c (OUTPUTS_CLI_BIN) runs ag_outputs_deliver()
// on a JSON spec; a node:http server here is the webhook receiver, and
// tests/helpers/smtp-sink.js (npm smtp-server) is the SMTP server, plain with
// AUTH, with STARTTLS and with implicit TLS on a self-signed certificate made
// here by `openssl req`. R2 and KV are read back with the aigate CLI.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');
const { BIN, tmpdir, until } = require('./lib.js');

const CLI = process.env.OUTPUTS_CLI_BIN || path.join(__dirname, '../../build/debug/outputs_cli');
const SINK = path.join(__dirname, '../helpers/smtp-sink.js');
const SANITIZER = /AddressSanitizer|LeakSanitizer|ThreadSanitizer|runtime error:/;
const PASSWORD = 'pw-S3cret-smtp-7731';
const SCHEDULED = 1773651600000; // 2026-03-16T09:00:00Z
const OUTPUT = 'Digest of the week — résumé 📈\n\nLine two.\n.\nA line after a lone dot.\n' + 'long '.repeat(60) + '\n';
const SUBJECT = 'Résumé hebdo — 日本語 📈 2026-03-16';

const made = [];
const running = new Set();
let hook; // the webhook receiver
let dir; // config, data folder, certificates

after(async () => {
    for (const r of running) await r.stop();
    if (hook) await new Promise((r) => hook.server.close(r));
    for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});

function haveCli() {
    return fs.existsSync(CLI);
}

// The webhook receiver: /ok answers 200, /flaky/ID 503 twice then 200, /always500 500,
// /bad 400. Every request is kept: {method, url, headers, body}.
function startHook() {
    const h = { requests: [], counts: new Map() };
    h.server = http.createServer((req, res) => {
        const chunks = [];
        req.on('data', (c) => chunks.push(c));
        req.on('end', () => {
            const body = Buffer.concat(chunks).toString('utf8');
            h.requests.push({ method: req.method, url: req.url, headers: req.headers, body });
            const n = (h.counts.get(req.url) || 0) + 1;
            h.counts.set(req.url, n);
            let status = 200;
            if (req.url.startsWith('/flaky/')) status = n <= 2 ? 503 : 200;
            else if (req.url === '/always500') status = 500;
            else if (req.url === '/bad') status = 400;
            res.writeHead(status, { 'content-type': 'text/plain' });
            res.end(status === 200 ? 'ok' : `failure ${n}`);
        });
    });
    return new Promise((resolve) =>
        h.server.listen(0, '127.0.0.1', () => {
            h.url = `http://127.0.0.1:${h.server.address().port}`;
            resolve(h);
        })
    );
}

// A port nothing listens on.
function deadPort() {
    return new Promise((resolve) => {
        const s = net.createServer();
        s.listen(0, '127.0.0.1', () => {
            const { port } = s.address();
            s.close(() => resolve(port));
        });
    });
}

// Starts smtp-sink.js; resolves {port, messages(), stop()} once it printed its port.
async function startSink(args = []) {
    const out = path.join(dir, `sink-${Date.now()}-${Math.random().toString(16).slice(2)}.ndjson`);
    const proc = spawn(process.execPath, [SINK, '--out', out, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const s = { proc, stdout: '', stderr: '', exited: null };
    proc.stdout.on('data', (d) => (s.stdout += d));
    proc.stderr.on('data', (d) => (s.stderr += d));
    const exit = new Promise((r) => proc.on('exit', (code) => r((s.exited = { code }))));
    await until(() => s.exited || /"port":\d+/.test(s.stdout), 10000, 'the SMTP sink to listen');
    if (s.exited) throw new Error(`smtp-sink exited: ${s.stderr}`);
    s.port = JSON.parse(s.stdout.split('\n')[0]).port;
    s.messages = () =>
        fs.existsSync(out)
            ? fs.readFileSync(out, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l))
            : [];
    s.stop = async () => {
        running.delete(s);
        if (!s.exited) proc.kill('SIGTERM');
        await exit;
    };
    running.add(s);
    return s;
}

// Runs outputs_cli with the spec on stdin. Resolves {results, stdout, stderr}.
function deliver(spec, env = {}) {
    return new Promise((resolve, reject) => {
        const proc = spawn(CLI, [], {
            env: { ...process.env, ASAN_OPTIONS: process.env.ASAN_OPTIONS || 'detect_leaks=1', ...env },
            stdio: ['pipe', 'pipe', 'pipe'],
        });
        let stdout = '';
        let stderr = '';
        proc.stdout.on('data', (d) => (stdout += d));
        proc.stderr.on('data', (d) => (stderr += d));
        const timer = setTimeout(() => proc.kill('SIGKILL'), 60000);
        proc.on('error', reject);
        proc.on('exit', (code, signal) => {
            clearTimeout(timer);
            try {
                assert.equal(code, 0, `outputs_cli exit ${code} ${signal}; stderr:\n${stderr}`);
                assert.doesNotMatch(stderr, SANITIZER, stderr);
                resolve({ results: JSON.parse(stdout).results, stdout, stderr });
            } catch (e) {
                reject(e);
            }
        });
        proc.stdin.end(JSON.stringify(spec));
    });
}

function baseSpec(outputs, extra = {}) {
    return {
        config: path.join(dir, 'aigate.toml'),
        attempts: 3,
        backoffMs: 5,
        backoffMaxMs: 20,
        timeoutMs: 5000,
        delivery: {
            task: 'weekly-digest',
            cron: '0 9 * * MON',
            scheduledTime: SCHEDULED,
            model: 'claude-haiku-4-5',
            output: OUTPUT,
            inputTokens: 1200,
            outputTokens: 450,
            costUsd: 0.0042,
        },
        outputs,
        ...extra,
    };
}

// The message as a reader sees it: headers (unfolded, encoded words decoded) and the body
// (quoted-printable decoded, CRLF as LF).
function parseMail(raw) {
    const split = raw.indexOf('\r\n\r\n');
    assert.ok(split > 0, 'a blank line ends the headers');
    const head = raw.slice(0, split).replace(/\r\n[ \t]+/g, ' ');
    const headers = {};
    for (const line of head.split('\r\n')) {
        const i = line.indexOf(':');
        headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
    }
    const decodeWords = (v) =>
        v
            .replace(/(\?=)\s+(=\?)/g, '$1$2')
            .replace(/=\?UTF-8\?B\?([^?]*)\?=/gi, (_, b) => Buffer.from(b, 'base64').toString('latin1'));
    for (const k of Object.keys(headers)) headers[k] = Buffer.from(decodeWords(headers[k]), 'latin1').toString('utf8');
    let body = raw.slice(split + 4);
    if (/quoted-printable/i.test(headers['content-transfer-encoding'] || '')) {
        const bytes = Buffer.from(
            body.replace(/=\r\n/g, '').replace(/=([0-9A-F]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16))),
            'latin1'
        );
        body = bytes.toString('utf8');
    }
    return { headers, body: body.replace(/\r\n/g, '\n') };
}

before(async () => {
    dir = tmpdir();
    made.push(dir);
    fs.writeFileSync(
        path.join(dir, 'aigate.toml'),
        `[[r2_buckets]]\nbinding = "STORAGE"\nbucket_name = "digests"\n` +
            `[[kv_namespaces]]\nbinding = "CACHE"\nid = "cache"\n` +
            `[aigate]\ndata_dir = "${path.join(dir, 'data')}"\n`
    );
    hook = await startHook();
    execFileSync(
        'openssl',
        ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=127.0.0.1',
         '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
         '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem')],
        { stdio: 'ignore' }
    );
});

test('the webhook gets exactly the documented JSON', { skip: !haveCli() && 'no outputs_cli' }, async () => {
    hook.requests.length = 0;
    const { results } = await deliver(baseSpec([{ kind: 'webhook', url: `${hook.url}/ok?token=SECRET-Q` }]));
    assert.equal(results.length, 1);
    assert.equal(results[0].rc, 0, results[0].detail);
    assert.equal(results[0].attempts, 1);
    assert.equal(results[0].status, 200);
    assert.doesNotMatch(results[0].detail, /SECRET|\/ok/);
    assert.equal(hook.requests.length, 1);
    const req = hook.requests[0];
    assert.equal(req.method, 'POST');
    assert.equal(req.url, '/ok?token=SECRET-Q');
    assert.equal(req.headers['content-type'], 'application/json');
    assert.equal(req.headers['idempotency-key'], `weekly-digest:${SCHEDULED}`);
    assert.match(req.headers['user-agent'], /^aigate\//);
    const body = JSON.parse(req.body);
    assert.deepEqual(Object.keys(body), ['task', 'cron', 'scheduledTime', 'model', 'output', 'usage', 'costUsd']);
    assert.deepEqual(body, {
        task: 'weekly-digest',
        cron: '0 9 * * MON',
        scheduledTime: SCHEDULED,
        model: 'claude-haiku-4-5',
        output: OUTPUT,
        usage: { input_tokens: 1200, output_tokens: 450 },
        costUsd: 0.0042,
    });
});

test('a webhook answering 503 twice then 200 is retried and lands', { skip: !haveCli() && 'no outputs_cli' }, async () => {
    hook.requests.length = 0;
    const { results } = await deliver(baseSpec([{ kind: 'webhook', url: `${hook.url}/flaky/a` }]));
    assert.equal(results[0].rc, 0, results[0].detail);
    assert.equal(results[0].attempts, 3);
    assert.equal(results[0].status, 200);
    const tries = hook.requests.filter((r) => r.url === '/flaky/a');
    assert.equal(tries.length, 3);
    assert.equal(new Set(tries.map((r) => r.headers['idempotency-key'])).size, 1, 'one key for every try');
    assert.equal(new Set(tries.map((r) => r.body)).size, 1, 'the same body every try');
});

test('a 4xx other than 429 fails at once; 5xx every try', { skip: !haveCli() && 'no outputs_cli' }, async () => {
    hook.requests.length = 0;
    const { results } = await deliver(
        baseSpec([
            { kind: 'webhook', url: `${hook.url}/bad` },
            { kind: 'webhook', url: `${hook.url}/always500` },
        ])
    );
    assert.equal(results[0].error, 'the webhook answered with an error status');
    assert.equal(results[0].attempts, 1);
    assert.equal(results[0].status, 400);
    assert.match(results[0].detail, /^POST http:\/\/127\.0\.0\.1:\d+: HTTP 400: failure 1$/);
    assert.equal(results[1].attempts, 3);
    assert.equal(results[1].status, 500);
    assert.equal(hook.requests.filter((r) => r.url === '/bad').length, 1);
    assert.equal(hook.requests.filter((r) => r.url === '/always500').length, 3);
});

test('an email arrives with AUTH, the right headers and body, and the password shown nowhere',
    { skip: !haveCli() && 'no outputs_cli' }, async () => {
        const sink = await startSink(['--user', 'digest-bot', '--pass', PASSWORD]);
        const spec = baseSpec([{ kind: 'email', to: 'Me Myself <me@example.com>, ops@example.org', subject: SUBJECT }], {
            smtp: { url: `smtp://127.0.0.1:${sink.port}`, from: 'aigate <bot@example.com>', user: 'digest-bot', passwordSecret: 'SMTP_PASSWORD' },
        });
        const { results, stdout, stderr } = await deliver(spec, { SMTP_PASSWORD: PASSWORD });
        assert.equal(results[0].rc, 0, results[0].detail);
        assert.equal(results[0].attempts, 1);
        assert.equal(results[0].status, 250);
        assert.match(results[0].detail, /^smtp:\/\/127\.0\.0\.1:\d+: 250, 2 recipients$/);
        const msgs = sink.messages();
        assert.equal(msgs.length, 1);
        const m = msgs[0];
        assert.equal(m.user, 'digest-bot');
        assert.equal(m.from, 'bot@example.com');
        assert.deepEqual(m.to, ['me@example.com', 'ops@example.org']);
        const mail = parseMail(m.data);
        assert.equal(mail.headers.from, 'aigate <bot@example.com>');
        assert.equal(mail.headers.to, 'Me Myself <me@example.com>, ops@example.org');
        assert.equal(mail.headers.subject, SUBJECT);
        assert.equal(mail.headers['mime-version'], '1.0');
        assert.equal(mail.headers['content-type'], 'text/plain; charset=utf-8');
        assert.match(mail.headers['message-id'], /^<aigate\.weekly-digest\.1773651600000\.[0-9a-f]{16}@example\.com>$/);
        assert.ok(!Number.isNaN(Date.parse(mail.headers.date)), mail.headers.date);
        assert.equal(mail.body, OUTPUT);
        assert.ok(!m.data.split('\r\n').some((l) => Buffer.byteLength(l) > 78 && !/^(Subject|To):/.test(l)), 'short lines');
        assert.ok(!stdout.includes(PASSWORD) && !stderr.includes(PASSWORD), 'the password is shown nowhere');
        await sink.stop();
    });

test('a refused login is 535, not retried, and does not show the password', { skip: !haveCli() && 'no outputs_cli' }, async () => {
    const sink = await startSink(['--user', 'digest-bot', '--pass', 'the-right-one']);
    const spec = baseSpec([{ kind: 'email', to: 'me@example.com', subject: 'x' }], {
        smtp: { url: `smtp://127.0.0.1:${sink.port}`, from: 'bot@example.com', user: 'digest-bot', password: PASSWORD },
    });
    const { results, stdout, stderr } = await deliver(spec);
    assert.equal(results[0].error, 'the SMTP server refused the login');
    assert.equal(results[0].status, 535);
    assert.equal(results[0].attempts, 1);
    assert.equal(sink.messages().length, 0);
    assert.ok(!stdout.includes(PASSWORD) && !stderr.includes(PASSWORD), 'the password is shown nowhere');
    await sink.stop();
});

test('a 451 is retried', { skip: !haveCli() && 'no outputs_cli' }, async () => {
    const sink = await startSink(['--fail-first', '1']);
    const spec = baseSpec([{ kind: 'email', to: 'me@example.com', subject: 'retry' }], {
        smtp: { url: `smtp://127.0.0.1:${sink.port}`, from: 'bot@example.com' },
    });
    const { results } = await deliver(spec);
    assert.equal(results[0].rc, 0, results[0].detail);
    assert.equal(results[0].attempts, 2);
    assert.equal(results[0].status, 250);
    assert.equal(sink.messages().length, 1);
    await sink.stop();
});

test('STARTTLS and implicit TLS, verified against the test CA; an unknown CA fails at once',
    { skip: !haveCli() && 'no outputs_cli' }, async () => {
        const tls = ['--cert', path.join(dir, 'cert.pem'), '--key', path.join(dir, 'key.pem')];
        const starttls = await startSink([...tls, '--user', 'u', '--pass', PASSWORD]);
        const smtps = await startSink([...tls, '--secure']);
        const smtp = (url, more = {}) => ({ url, from: 'bot@example.com', caFile: path.join(dir, 'cert.pem'), ...more });
        let r = await deliver(
            baseSpec([{ kind: 'email', to: 'me@example.com', subject: 'starttls' }], {
                smtp: smtp(`smtp://127.0.0.1:${starttls.port}`, { requireTls: true, user: 'u', password: PASSWORD }),
            })
        );
        assert.equal(r.results[0].rc, 0, r.results[0].detail);
        assert.equal(starttls.messages()[0].secure, true);
        assert.equal(starttls.messages()[0].user, 'u');
        r = await deliver(
            baseSpec([{ kind: 'email', to: 'me@example.com', subject: 'smtps' }], { smtp: smtp(`smtps://127.0.0.1:${smtps.port}`) })
        );
        assert.equal(r.results[0].rc, 0, r.results[0].detail);
        assert.equal(smtps.messages()[0].secure, true);
        r = await deliver(
            baseSpec([{ kind: 'email', to: 'me@example.com', subject: 'no ca' }], {
                smtp: { url: `smtps://127.0.0.1:${smtps.port}`, from: 'bot@example.com' },
            })
        );
        assert.equal(r.results[0].error, 'TLS failed (certificate or handshake)');
        assert.equal(r.results[0].attempts, 1);
        assert.equal(smtps.messages().length, 1);
        // Required TLS from a server without STARTTLS: refused, nothing sent in the clear.
        const plain = await startSink([]);
        r = await deliver(
            baseSpec([{ kind: 'email', to: 'me@example.com', subject: 'plain' }], {
                smtp: smtp(`smtp://127.0.0.1:${plain.port}`, { requireTls: true }),
            })
        );
        assert.equal(r.results[0].error, 'TLS failed (certificate or handshake)');
        assert.equal(plain.messages().length, 0);
        await Promise.all([starttls.stop(), smtps.stop(), plain.stop()]);
    });

test('failing outputs do not stop R2, KV, email and command from landing', { skip: !haveCli() && 'no outputs_cli' }, async () => {
    const sink = await startSink([]);
    const dead = await deadPort();
    const teeOut = path.join(dir, 'command.out');
    hook.requests.length = 0;
    const spec = baseSpec(
        [
            { kind: 'webhook', url: `${hook.url}/always500` },
            { kind: 'webhook', url: `http://127.0.0.1:${dead}/hook` },
            { kind: 'r2', binding: 'STORAGE', key: 'digests/2026-03-16.md' },
            { kind: 'r2', binding: 'MISSING', key: 'x.md' },
            { kind: 'kv', binding: 'CACHE', key: 'digest:latest' },
            { kind: 'email', to: 'me@example.com', subject: SUBJECT },
            { kind: 'command', argv: ['/usr/bin/tee', teeOut] },
        ],
        { smtp: { url: `smtp://127.0.0.1:${sink.port}`, from: 'bot@example.com' } }
    );
    const { results } = await deliver(spec);
    const by = results.map((r) => [r.kind, r.rc === 0, r.attempts]);
    assert.deepEqual(by, [
        ['webhook', false, 3],
        ['webhook', false, 3],
        ['r2', true, 1],
        ['r2', false, 0],
        ['kv', true, 1],
        ['email', true, 1],
        ['command', true, 1],
    ]);
    assert.equal(results[0].status, 500);
    assert.equal(results[1].error, 'cannot connect to the destination');
    assert.equal(results[3].error, "the output's binding is not in the configuration");
    assert.equal(results[6].status, 0);
    assert.equal(fs.readFileSync(teeOut, 'utf8'), OUTPUT);
    assert.equal(sink.messages().length, 1);
    assert.equal(parseMail(sink.messages()[0].data).body, OUTPUT);

    // Read back through the CLI, as an operator would.
    const cfg = ['--config', path.join(dir, 'aigate.toml')];
    const obj = execFileSync(BIN, ['r2', 'object', 'get', 'digests/digests/2026-03-16.md', ...cfg]).toString('utf8');
    assert.equal(obj, OUTPUT);
    const meta = JSON.parse(execFileSync(BIN, ['r2', 'object', 'get', 'digests/digests/2026-03-16.md', '--json', ...cfg]));
    assert.equal(meta.httpMetadata.contentType, 'text/markdown; charset=utf-8');
    assert.deepEqual(meta.customMetadata, { cron: '0 9 * * MON', scheduledTime: String(SCHEDULED), task: 'weekly-digest' });
    const val = execFileSync(BIN, ['kv', 'key', 'get', 'digest:latest', '--binding', 'CACHE', ...cfg]).toString('utf8');
    assert.equal(val, OUTPUT);
    await sink.stop();
});

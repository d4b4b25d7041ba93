// SPDX-License-Identifier: MIT
//
// lib.js: what every black-box test needs: start the real aigate binary on an
// ephemeral port against the fake Anthropic server, talk HTTP to it (node:http
// or raw sockets), and stop it, checking it exits cleanly with no sanitizer report.
'use strict';

const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const assert = require('node:assert/strict');

const fake = require('../fake-upstream/fake-anthropic.js');

const BIN = path.resolve(process.env.AIGATE_BIN || path.join(__dirname, '../../build/debug/aigate'));
const TEST_KEY = 'sk-ant-test-0123456789abcdef-SECRET';

function tmpdir() {
    return fs.mkdtempSync(path.join(os.tmpdir(), 'aigate-test-'));
}

// Resolves when `predicate()` is true, polling every few ms; rejects at the deadline.
async function until(predicate, timeoutMs = 5000, what = 'condition') {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        if (await predicate()) return;
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 5));
    }
}

// Every gateway started and not yet exited. A test that fails before it stops
// its gateway must not leave it running, nor hang the file on it: the child and
// its pipes do not keep node alive (only a wait for its exit does), and
// whatever is still running when node exits is killed.
const live = new Set();
process.on('exit', () => {
    for (const proc of live) {
        try {
            proc.kill('SIGKILL');
        } catch {
            // already gone
        }
    }
});

// How long stop() waits for a clean exit before it kills and fails.
const STOP_TIMEOUT_MS = Number(process.env.AIGATE_STOP_TIMEOUT_MS || 60000);

// Starts aigate. opts: {config (TOML text), env, args, cwd, key (false: no key), upstream}.
async function startGateway(opts = {}) {
    const cwd = opts.cwd || tmpdir();
    const args = [opts.command || 'serve', '--host', '127.0.0.1', '--port', '0'];
    let config = opts.config;
    // Tests send far more than the default 20 requests a minute from 127.0.0.1:
    // lift the limit unless the test is about it (it sets rate_limit) or wants no file.
    if (opts.liftRateLimit !== false && (config !== undefined || !opts.noConfig) && !/^\s*rate_limit\s*=/m.test(config || '')) {
        config = config || '';
        if (/^\[aigate\]\s*$/m.test(config)) config = config.replace(/^\[aigate\]\s*$/m, '[aigate]\nrate_limit = 1000000');
        else config += '\n[aigate]\nrate_limit = 1000000\n';
    }
    if (config !== undefined) {
        fs.writeFileSync(path.join(cwd, 'aigate.toml'), config);
        args.push('--config', path.join(cwd, 'aigate.toml'));
    }
    if (opts.upstream) args.push('--upstream', opts.upstream);
    if (opts.threads) args.push('--threads', String(opts.threads));
    // Many gateways run at once: each gets its own admin port, unless the test sets one.
    if (opts.admin !== undefined) {
        if (opts.admin !== null) args.push('--admin-listen', opts.admin);
    } else if (!/^\s*admin_listen\s*=/m.test(config || '')) {
        args.push('--admin-listen', '127.0.0.1:0');
    }
    args.push(...(opts.args || []));
    const env = { ...process.env, ...(opts.env || {}) };
    delete env.ANTHROPIC_API_KEY;
    if (opts.key !== false) env.ANTHROPIC_API_KEY = opts.key || TEST_KEY;
    env.ASAN_OPTIONS = env.ASAN_OPTIONS || 'detect_leaks=1';
    const proc = spawn(BIN, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    const gw = { proc, cwd, stderr: '', stdout: '', port: 0, exited: null };
    live.add(proc);
    proc.stdout.on('data', (d) => (gw.stdout += d));
    proc.stderr.on('data', (d) => (gw.stderr += d));
    const closed = new Promise((resolve) => proc.on('close', resolve));
    const exited = new Promise((resolve) => {
        proc.on('exit', (code, signal) => {
            live.delete(proc);
            gw.exited = { code, signal };
            resolve(gw.exited);
        });
    });
    const ref = (on) => {
        for (const h of [proc, proc.stdout, proc.stderr]) on ? h.ref() : h.unref();
    };
    ref(false);
    // Waiting for the exit keeps node alive (and the output flowing) until it comes.
    Object.defineProperty(gw, 'exitPromise', {
        get() {
            if (!gw.exited) ref(true);
            return exited;
        },
    });
    try {
        await until(() => gw.exited || /aigate [^\n]*listening on [^ ]+:(\d+)/.test(gw.stderr), 15000, 'aigate to listen');
    } catch (e) {
        proc.kill('SIGKILL');
        throw new Error(`${e.message}; stderr:\n${gw.stderr.slice(-4000)}`);
    }
    if (gw.exited) {
        // Its last words (the reason) may still be in the pipe.
        ref(true);
        await Promise.race([closed, new Promise((r) => setTimeout(r, 2000))]);
        throw new Error(`aigate exited early (${JSON.stringify(gw.exited)}):\n${gw.stderr}`);
    }
    gw.port = Number(/aigate [^\n]*listening on [^ ]+:(\d+)/.exec(gw.stderr)[1]);
    gw.url = `http://127.0.0.1:${gw.port}`;
    const admin = /admin listening on ([^ \n]+):(\d+)/.exec(gw.stderr);
    if (admin) {
        gw.adminPort = Number(admin[2]);
        gw.adminUrl = `http://${admin[1].includes(':') ? `[${admin[1]}]` : admin[1]}:${gw.adminPort}`;
    }
    // Stops with SIGTERM (null: sends nothing, the test did) and checks for a
    // clean exit (0, no sanitizer report) within STOP_TIMEOUT_MS; past it, kills and fails.
    gw.stop = async (signal = 'SIGTERM') => {
        if (!gw.exited && signal) proc.kill(signal);
        let timer;
        const late = new Promise((resolve) => {
            timer = setTimeout(() => resolve(null), STOP_TIMEOUT_MS);
        });
        const r = await Promise.race([gw.exitPromise, late]);
        clearTimeout(timer);
        if (!r) {
            proc.kill('SIGKILL');
            await gw.exitPromise;
            assert.fail(`aigate did not exit within ${STOP_TIMEOUT_MS} ms of ${signal || 'its stop'}; killed. stderr:\n${gw.stderr.slice(-4000)}`);
        }
        assert.equal(r.code, 0, `aigate exit ${JSON.stringify(r)}; stderr:\n${gw.stderr.slice(-4000)}`);
        assert.doesNotMatch(gw.stderr, /AddressSanitizer|LeakSanitizer|ThreadSanitizer|runtime error:/, gw.stderr.slice(-4000));
        return r;
    };
    gw.accessLog = () =>
        gw.stderr
            .split('\n')
            .filter((l) => l.startsWith('{'))
            .map((l) => JSON.parse(l));
    return gw;
}

async function startFake(opts = {}) {
    return fake.start({ apiKey: TEST_KEY, ...opts });
}

// One HTTP request on a fresh connection. Resolves {status, headers, body, json}.
function request(url, { method = 'GET', headers = {}, body, timeoutMs = 10000 } = {}) {
    return new Promise((resolve, reject) => {
        const u = new URL(url);
        const req = http.request(
            { host: u.hostname, port: u.port, path: u.pathname + u.search, method, headers, agent: false },
            (res) => {
                const chunks = [];
                res.on('data', (c) => chunks.push(c));
                res.on('end', () => {
                    const text = Buffer.concat(chunks).toString('utf8');
                    let json;
                    try {
                        json = JSON.parse(text);
                    } catch {
                        json = undefined;
                    }
                    resolve({ status: res.statusCode, headers: res.headers, body: text, json });
                });
                res.on('error', reject);
            }
        );
        req.setTimeout(timeoutMs, () => req.destroy(new Error('client timeout')));
        req.on('error', reject);
        if (body !== undefined) req.write(typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body));
        req.end();
    });
}

function generate(gw, body, headers = {}) {
    return request(`${gw.url}/api/generate`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body,
    });
}

// A raw TCP exchange: sends `data` (string/Buffer or array of pieces), collects
// everything until the server closes or `until(text)` is true.
function raw(port, data, { until: stop, timeoutMs = 5000, halfClose = false } = {}) {
    return new Promise((resolve, reject) => {
        const sock = net.connect(port, '127.0.0.1');
        let got = '';
        const timer = setTimeout(() => {
            sock.destroy();
            resolve({ text: got, closed: false });
        }, timeoutMs);
        sock.on('connect', () => {
            for (const piece of [].concat(data)) sock.write(piece);
            if (halfClose) sock.end();
        });
        sock.on('data', (d) => {
            got += d.toString('latin1');
            if (stop && stop(got)) {
                clearTimeout(timer);
                sock.destroy();
                resolve({ text: got, closed: false });
            }
        });
        sock.on('close', () => {
            clearTimeout(timer);
            resolve({ text: got, closed: true });
        });
        sock.on('error', (e) => {
            if (e.code === 'ECONNRESET') return; // close follows
            clearTimeout(timer);
            reject(e);
        });
    });
}

// Splits a stream of HTTP/1.1 responses (Content-Length framed) into {status, headers, body}.
function parseResponses(text) {
    const out = [];
    let rest = text;
    while (rest.length) {
        const end = rest.indexOf('\r\n\r\n');
        if (end < 0) break;
        const lines = rest.slice(0, end).split('\r\n');
        const status = Number(lines[0].split(' ')[1]);
        const headers = {};
        for (const l of lines.slice(1)) {
            const i = l.indexOf(':');
            headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
        }
        if (status === 100) {
            rest = rest.slice(end + 4);
            out.push({ status, headers, body: '' });
            continue;
        }
        const len = Number(headers['content-length'] || 0);
        out.push({ status, headers, body: rest.slice(end + 4, end + 4 + len) });
        rest = rest.slice(end + 4 + len);
    }
    return out;
}

// Every usage-log entry in DIR's `usage-logs` bucket, read with the CLI as a
// user would (`aigate r2 object list/get`, every page): { keys, entries }.
function readUsageLog(dir, config = path.join(dir, 'aigate.toml')) {
    const run = (args) => {
        const r = spawnSync(BIN, [...args, '--config', config], { cwd: dir, encoding: 'utf8', maxBuffer: 64 << 20 });
        assert.equal(r.status, 0, r.stderr);
        return r.stdout;
    };
    const keys = [];
    let cursor;
    for (let i = 0; i < 100; i++) {
        const page = JSON.parse(run(['r2', 'object', 'list', 'usage-logs', '--prefix', 'logs/', '--json', ...(cursor ? ['--cursor', cursor] : [])]));
        keys.push(...page.objects.map((o) => o.key));
        if (!page.truncated) break;
        cursor = page.cursor;
    }
    const entries = [];
    for (const key of keys) {
        for (const line of run(['r2', 'object', 'get', `usage-logs/${key}`]).split('\n')) if (line) entries.push(JSON.parse(line));
    }
    return { keys, entries };
}

// The openssl CLI in cwd; its stdout (a failure fails the test).
function openssl(args, cwd) {
    const r = spawnSync('openssl', args, { cwd, encoding: 'utf8', timeout: 30000 });
    assert.equal(r.status, 0, `openssl ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
}

// A test CA in DIR (ca.pem, ca.key), made with the openssl CLI, and
// issue(name, serial, san): a P-256 key (DIR/name.key) and a certificate for
// san (DIR/name.pem) signed by the CA, valid for two days.
function testCA(dir) {
    openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key',
        '-out', 'ca.pem', '-days', '3', '-subj', '/CN=aigate test CA'], dir);
    const issue = (name, serial, san = 'IP:127.0.0.1,DNS:localhost') => {
        fs.writeFileSync(path.join(dir, `${name}.ext`), `subjectAltName=${san}\n`);
        openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`,
            '-out', `${name}.csr`, '-subj', `/CN=aigate-test-${name}`], dir);
        openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial', serial,
            '-days', '2', '-extfile', `${name}.ext`, '-out', `${name}.pem`], dir);
    };
    return { file: path.join(dir, 'ca.pem'), issue };
}

// A port free on 127.0.0.1 now (for servers that take a port, not 0).
function freePort() {
    return new Promise((resolve, reject) => {
        const s = net.createServer();
        s.on('error', reject);
        s.listen(0, '127.0.0.1', () => {
            const { port } = s.address();
            s.close(() => resolve(port));
        });
    });
}

// Every file under folder D, depth first, as paths.
function filesUnder(d) {
    const files = [];
    const walk = (x) => {
        for (const e of fs.readdirSync(x, { withFileTypes: true })) {
            const p = path.join(x, e.name);
            if (e.isDirectory()) walk(p);
            else files.push(p);
        }
    };
    walk(d);
    return files;
}

module.exports = {
    BIN, TEST_KEY, tmpdir, until, startGateway, startFake, request, generate, raw, parseResponses, readUsageLog,
    filesUnder, openssl, testCA, freePort,
};

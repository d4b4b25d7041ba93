#!/usr/bin/env node
// SPDX-License-Identifier: MIT
//
// bench/soak.js (`make soak`): mixed traffic against the real binary and the
// fake upstream for SOAK_SECONDS (default 600): cache hits, misses, streams,
// slow readers, client disconnects and bad requests, all to 127.0.0.1. Fails
// when anonymous RSS grows past a bound after the warm-up, when an accepted
// AI request has no usage entry, or when descriptors leak (counted with the
// traffic paused, before and after). Prints one JSON summary line.
//
//   SOAK_SECONDS=180 AIGATE_BIN=build/release/aigate node bench/soak.js
// Knobs: SOAK_CONCURRENCY (16), SOAK_RSS_GROWTH_MB (48), SOAK_WARMUP_SECONDS (a fifth, 10..120).
'use strict';

const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const fake = require('../tests/fake-upstream/fake-anthropic.js');

const ROOT = path.join(__dirname, '..');
const BIN = path.resolve(process.env.AIGATE_BIN || path.join(ROOT, 'build/release/aigate'));
const SECONDS = Number(process.env.SOAK_SECONDS || 600);
const CONCURRENCY = Number(process.env.SOAK_CONCURRENCY || 16);
const RSS_GROWTH = Number(process.env.SOAK_RSS_GROWTH_MB || 48) * 1024 * 1024;
const WARMUP = Number(process.env.SOAK_WARMUP_SECONDS || Math.min(120, Math.max(10, Math.round(SECONDS / 5))));
const KEY = 'sk-ant-soak-0123456789abcdef';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(pred, ms, what) {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
        if (await pred()) return;
        await sleep(20);
    }
    throw new Error(`soak: timed out waiting for ${what}`);
}

function procStatus(pid, field) {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
}

const fdCount = (pid) => fs.readdirSync(`/proc/${pid}/fd`).length;

// One HTTP exchange, bounded by a timeout. mode: 'read' (all of it), 'slow'
// (pauses between chunks), 'cut' (destroys the socket at the first byte).
function call(port, { method = 'POST', pathName, body, mode = 'read' }) {
    return new Promise((resolve) => {
        const data = typeof body === 'string' ? body : JSON.stringify(body);
        const req = http.request(
            { host: '127.0.0.1', port, path: pathName, method, agent: false, headers: { 'content-type': 'application/json', 'x-api-key': 'placeholder' } },
            (res) => {
                let n = 0;
                res.on('data', (c) => {
                    n += c.length;
                    if (mode === 'cut') {
                        req.destroy();
                        resolve({ status: res.statusCode, cut: true });
                    } else if (mode === 'slow') {
                        res.pause();
                        setTimeout(() => res.resume(), 20 + Math.floor(Math.random() * 30));
                    }
                });
                res.on('end', () => resolve({ status: res.statusCode, bytes: n }));
                res.on('error', () => resolve({ status: res.statusCode, error: true }));
            }
        );
        req.setTimeout(30000, () => req.destroy(new Error('timeout')));
        req.on('error', (e) => resolve({ status: 0, error: e.message }));
        req.end(data);
    });
}

// A request that is not HTTP: the server answers 400 and closes.
function garbage(port) {
    return new Promise((resolve) => {
        const s = net.connect(port, '127.0.0.1');
        const t = setTimeout(() => s.destroy(), 5000);
        s.on('connect', () => s.write('GET /\x01nope HTTP/1.1\r\nHost: x\r\n\r\n'));
        s.on('data', () => {});
        s.on('close', () => {
            clearTimeout(t);
            resolve();
        });
        s.on('error', () => {});
    });
}

const msg = (text, extra = {}) => ({ model: 'claude-haiku-4-5', max_tokens: 1024, messages: [{ role: 'user', content: text }], ...extra });

// Each kind: what it sends, and whether the gateway accepts it (it then owes a usage entry).
const KINDS = [
    ['hit', 30, (port) => call(port, { pathName: '/api/generate', body: { prompt: `popular ${Math.floor(Math.random() * 20)}` } }), true],
    ['miss', 20, (port, i) => call(port, { pathName: '/api/generate', body: { prompt: `unique ${process.pid} ${i} ${Math.random()}` } }), true],
    ['stream', 15, (port, i) => call(port, { pathName: '/v1/messages', body: msg(`[[words:200]] stream ${i}`, { stream: true }) }), true],
    ['slow', 10, (port, i) => call(port, { pathName: '/v1/messages', body: msg(`[[words:40]] slow ${i}`, { stream: true }), mode: 'slow' }), true],
    ['cut', 10, (port, i) => call(port, { pathName: '/v1/messages', body: msg(`[[words:400]][[delay:2]] cut ${i}`, { stream: true }), mode: 'cut' }), true],
    ['messages', 5, (port, i) => call(port, { pathName: '/v1/messages', body: msg(`plain ${i} ${Math.random()}`) }), true],
    ['bad_json', 5, (port) => call(port, { pathName: '/api/generate', body: '{"prompt": ' }), false],
    ['garbage', 5, (port) => garbage(port), false],
];
const WEIGHT = KINDS.reduce((a, k) => a + k[1], 0);

function pick() {
    let r = Math.random() * WEIGHT;
    for (const k of KINDS) {
        if ((r -= k[1]) < 0) return k;
    }
    return KINDS[0];
}

async function main() {
    if (!fs.existsSync(BIN)) throw new Error(`soak: no binary at ${BIN} (make release)`);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'aigate-soak-'));
    const up = await fake.start({ apiKey: KEY });
    const config = path.join(dir, 'aigate.toml');
    fs.writeFileSync(config, `[aigate]\ndata_dir = "${dir}/data"\nrate_limit = 1000000\naccess_log = false\nadmin_listen = ""\n` +
        `cache_max_bytes = 8388608\nusage_log_flush = 0.5\n`);
    const env = { ...process.env, ANTHROPIC_API_KEY: KEY };
    const gw = spawn(BIN, ['serve', '--config', config, '--host', '127.0.0.1', '--port', '0', '--upstream', `http://127.0.0.1:${up.port}`],
        { cwd: dir, env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    gw.stderr.on('data', (d) => {
        stderr += d;
        if (stderr.length > 1 << 20) stderr = stderr.slice(-(1 << 19));
    });
    let exited = null;
    const exit = new Promise((r) => gw.on('exit', (code, signal) => r((exited = { code, signal }))));
    await until(() => exited || /listening on [^ ]+:(\d+)/.test(stderr), 15000, 'aigate to listen');
    if (exited) throw new Error(`soak: aigate exited: ${stderr}`);
    const port = Number(/listening on [^ ]+:(\d+)/.exec(stderr)[1]);

    const counts = {};
    let accepted = 0;
    let failures = 0;
    let paused = false;
    let active = 0;
    const stopAt = Date.now() + SECONDS * 1000;
    const worker = async (w) => {
        for (let i = 0; Date.now() < stopAt; i++) {
            if (paused) {
                await sleep(20);
                continue;
            }
            const [name, , run, owesEntry] = pick();
            active++;
            const r = await run(port, `${w}-${i}`);
            active--;
            counts[name] = (counts[name] || 0) + 1;
            if (owesEntry) accepted++;
            if (r && owesEntry && r.status !== 200) failures++;
        }
    };
    // Descriptors with no traffic: pause, wait for the connections to go.
    const quietFds = async () => {
        paused = true;
        await until(() => active === 0, 60000, 'the traffic to pause');
        let last = -1;
        let stableSince = Date.now();
        await until(() => {
            const n = fdCount(gw.pid);
            if (n !== last) {
                last = n;
                stableSince = Date.now();
            }
            return Date.now() - stableSince > 1000;
        }, 30000, 'the descriptors to settle');
        paused = false;
        return last;
    };

    const samples = [];
    const sampler = setInterval(() => {
        if (!exited) samples.push({ t: Date.now(), anon: procStatus(gw.pid, 'RssAnon') });
    }, 2000);
    const workers = Array.from({ length: CONCURRENCY }, (_, w) => worker(w));
    await sleep(Math.min(WARMUP, SECONDS) * 1000);
    const fdsBefore = await quietFds();
    const rssBase = procStatus(gw.pid, 'RssAnon');
    await Promise.all(workers);
    const fdsAfter = await quietFds();
    const rssEnd = procStatus(gw.pid, 'RssAnon');
    clearInterval(sampler);
    const rssMaxAfterWarmup = Math.max(rssBase, ...samples.filter((s) => s.t >= stopAt - (SECONDS - WARMUP) * 1000).map((s) => s.anon));

    gw.kill('SIGTERM');
    await Promise.race([exit, sleep(30000)]);
    if (!exited) {
        gw.kill('SIGKILL');
        await exit;
    }
    await up.close();
    // The usage log, summed by the CLI after the server flushed it on exit.
    const st = spawnSync(BIN, ['stats', '--since', '7d', '--json', '--config', config], { cwd: dir, encoding: 'utf8', timeout: 120000 });
    const entries = st.status === 0 ? JSON.parse(st.stdout).requests : -1;

    const problems = [];
    if (exited.code !== 0) problems.push(`aigate exited ${JSON.stringify(exited)}`);
    if (entries !== accepted) problems.push(`${accepted} requests accepted, ${entries} usage entries`);
    if (fdsAfter > fdsBefore) problems.push(`descriptors ${fdsBefore} -> ${fdsAfter} with no traffic`);
    if (rssEnd - rssBase > RSS_GROWTH) problems.push(`anonymous RSS grew ${((rssEnd - rssBase) / 1048576).toFixed(1)} MiB after warm-up`);
    if (failures > accepted / 100) problems.push(`${failures} of ${accepted} AI requests failed`);
    const summary = {
        seconds: SECONDS, warmupSeconds: WARMUP, concurrency: CONCURRENCY, requests: counts, accepted, usageEntries: entries, failures,
        fdsBefore, fdsAfter, rssAnonMiB: { base: +(rssBase / 1048576).toFixed(1), end: +(rssEnd / 1048576).toFixed(1), max: +(rssMaxAfterWarmup / 1048576).toFixed(1) },
        ok: problems.length === 0, problems,
    };
    console.log(JSON.stringify(summary));
    if (problems.length) console.error(stderr.slice(-4000));
    fs.rmSync(dir, { recursive: true, force: true });
    process.exit(problems.length ? 1 : 0);
}

main().catch((e) => {
    console.error(e.stack || String(e));
    process.exit(1);
});

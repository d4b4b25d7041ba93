#!/usr/bin/env node
// SPDX-License-Identifier: MIT
//
// admin-shim.js: the real aigate with a stand-in admin listener in front, to
// run tests/integration/i_dashboard.test.js before aigate has its own. Not a
// test and not shipped. Use it as the binary:
//
//   AIGATE_BIN=web/dev/admin-shim.js AIGATE_REAL_BIN=build/debug/aigate \
//     node --test tests/integration/i_dashboard.test.js
//
// It runs AIGATE_REAL_BIN with the same arguments, passes its output through
// (less the "unknown key aigate.admin_listen" warning), and reads its access
// log (the JSON lines on stderr) to answer /series, /stats and /tail in the
// documented shapes (platform.md sections 2 and 3) on 127.0.0.1:<ephemeral>,
// which it announces as aigate will: "admin listening on 127.0.0.1:PORT".
// Tokens and cost are made up (the access log has neither): 7 in, 9 out, and
// $0.00005 per token; a 200 with no upstream time is a cache hit.
'use strict';

const http = require('node:http');
const path = require('node:path');
const { spawn } = require('node:child_process');

const { serveAsset, authorized, tailMatches } = require('./common.js');

const REAL = process.env.AIGATE_REAL_BIN || path.join(__dirname, '../../build/debug/aigate');
const TOKEN = process.env.AIGATE_ADMIN_TOKEN || '';
const records = [];
const subscribers = new Set();

const child = spawn(REAL, process.argv.slice(2), { stdio: ['ignore', 'inherit', 'pipe'] });
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => child.kill(sig));

let pending = '';
let announced = false;
child.stderr.on('data', (d) => {
    pending += d.toString('utf8');
    let i;
    while ((i = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, i);
        pending = pending.slice(i + 1);
        if (/unknown key aigate\.admin_listen/.test(line)) continue;
        process.stderr.write(line + '\n');
        if (line.startsWith('{')) {
            try {
                onRecord(JSON.parse(line));
            } catch (e) {
                /* not an access-log line */
            }
        }
        if (!announced && /listening on [^ ]+:\d+/.test(line)) {
            announced = true;
            server.listen(0, '127.0.0.1', () => {
                process.stderr.write(`shim: admin listening on 127.0.0.1:${server.address().port}\n`);
            });
        }
    }
});
child.on('exit', (code, signal) => {
    for (const s of subscribers) s.end();
    server.close();
    process.exit(signal ? 1 : code);
});

function onRecord(r) {
    const ai = r.model && r.status < 400;
    const cached = r.status === 200 && !!r.model && r.upstream_us === 0;
    const rec = {
        t: Date.parse(r.time),
        id: r.id,
        method: r.method,
        path: r.path,
        status: r.status,
        ms: r.duration_us / 1000,
        upstreamMs: r.upstream_us / 1000,
        model: r.model,
        inputTokens: ai ? 7 : 0,
        outputTokens: ai ? 9 : 0,
        costUsd: ai && !cached ? 16 * 0.00005 : 0,
        cached,
    };
    records.push(rec);
    const ev = {
        outcome: r.status >= 500 ? 'exception' : 'ok',
        scriptName: 'aigate',
        eventTimestamp: rec.t,
        event: { request: { url: `http://127.0.0.1${r.path}`, method: r.method, headers: {} }, response: { status: r.status } },
        logs: [],
        exceptions: [],
        wallTime: Math.round(rec.ms),
        cpuTime: 0,
        aigate: {
            requestId: r.id,
            route: r.path,
            client: r.client,
            key: null,
            model: r.model,
            inputTokens: rec.inputTokens,
            outputTokens: rec.outputTokens,
            costUsd: rec.costUsd,
            cached,
            retries: 0,
            upstreamMs: Math.round(rec.upstreamMs),
            stream: false,
        },
    };
    for (const s of subscribers) if (tailMatches(s.query, ev)) s.write(`data: ${JSON.stringify(ev)}\n\n`);
}

function pct(xs, p) {
    if (!xs.length) return null;
    const s = [...xs].sort((a, b) => a - b);
    return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

function series(minutes) {
    const now = Math.floor(Date.now() / 1000);
    const t0 = Math.floor(now / 60) * 60 - (minutes - 1) * 60;
    const ts = Array.from({ length: minutes }, (_, i) => t0 + i * 60);
    const by = ts.map((t) => records.filter((r) => r.t >= t * 1000 && r.t < (t + 60) * 1000));
    const cls = (k) => by.map((rs) => (rs.length ? rs.filter((r) => Math.floor(r.status / 100) === k).length : null));
    const none = (rs, f) => (rs.length ? f(rs) : null);
    const models = {};
    for (const m of new Set(records.filter((r) => r.model).map((r) => r.model))) {
        const of = (f) => by.map((rs) => none(rs.filter((r) => r.model === m), (x) => x.reduce((n, r) => n + f(r), 0)));
        models[m] = { inputTokens: of((r) => r.inputTokens), outputTokens: of((r) => r.outputTokens), costUsd: of((r) => r.costUsd) };
    }
    return {
        now,
        step: 60,
        minutes: ts,
        requests: { '2xx': cls(2), '3xx': cls(3), '4xx': cls(4), '5xx': cls(5) },
        errorRate: by.map((rs) => none(rs, (x) => x.filter((r) => r.status >= 500).length / x.length)),
        latencyMs: { p50: by.map((rs) => pct(rs.map((r) => r.ms), 50)), p99: by.map((rs) => pct(rs.map((r) => r.ms), 99)) },
        cpuMs: { p50: by.map((rs) => pct(rs.map((r) => r.ms / 10), 50)), p99: by.map((rs) => pct(rs.map((r) => r.ms / 10), 99)) },
        cacheHitRatio: by.map((rs) => {
            const c = rs.filter((r) => r.model && r.status === 200);
            return c.length ? c.filter((r) => r.cached).length / c.length : null;
        }),
        retries: by.map((rs) => none(rs, () => 0)),
        queueDepth: by.map((rs) => none(rs, () => 0)),
        models,
    };
}

function summary(rs) {
    const ms = rs.map((r) => r.ms);
    return {
        requests: rs.length,
        errors: rs.filter((r) => r.status >= 500).length,
        errorRate: rs.length ? rs.filter((r) => r.status >= 500).length / rs.length : 0,
        latencyMs: { p50: pct(ms, 50), p99: pct(ms, 99) },
        cpuMs: { p50: pct(ms, 50) / 10, p99: pct(ms, 99) / 10 },
        upstreamRequests: rs.filter((r) => r.upstreamMs > 0).length,
        cacheHits: rs.filter((r) => r.cached).length,
        tokens: { input: rs.reduce((n, r) => n + r.inputTokens, 0), output: rs.reduce((n, r) => n + r.outputTokens, 0) },
        costUsd: rs.reduce((n, r) => n + r.costUsd, 0),
    };
}

function stats() {
    const until = Date.now();
    const rs = records.filter((r) => r.t >= until - 3600e3 && r.status !== 400);
    const groups = [...new Set(rs.map((r) => r.model).filter(Boolean))].map((m) => ({ key: m, ...summary(rs.filter((r) => r.model === m)) }));
    return { since: new Date(until - 3600e3).toISOString(), until: new Date(until).toISOString(), ...summary(rs), groups };
}

const server = http.createServer((req, res) => {
    const u = new URL(req.url, 'http://x');
    if (!authorized(req, u, TOKEN)) {
        res.writeHead(401, { 'content-type': 'application/json' });
        return res.end('{"error":"unauthorized"}');
    }
    const json = (body) => {
        res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
        res.end(JSON.stringify(body));
    };
    if (req.method === 'GET' && u.pathname === '/series') return json(series(Number(u.searchParams.get('minutes')) || 60));
    if (req.method === 'GET' && u.pathname === '/stats') return json(stats());
    if (req.method === 'GET' && u.pathname === '/tail') {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' });
        res.write(': aigate tail\n\n');
        res.query = u.searchParams;
        subscribers.add(res);
        req.on('close', () => subscribers.delete(res));
        return;
    }
    if (serveAsset(req, res, u)) return;
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found\n');
});

// SPDX-License-Identifier: MIT
//
// mock-server.js: a stand-in for aigate's admin listener, to work on the
// dashboard without building or running aigate. Not a test and not shipped:
// it serves web/src/ and uPlot the way the binary does (same paths, same
// Content-Security-Policy) and answers /series, /stats and /tail with made-up
// data in the documented shapes (docs: platform.md sections 2 and 3).
//
//   node web/dev/mock-server.js [--port 8788] [--token SECRET] [--empty]
//
// --token makes every data request need `Authorization: Bearer SECRET` (open
// http://127.0.0.1:8788/#token=SECRET; the page and /assets/ need none); --empty answers as a server that has
// seen no traffic. POST /poke emits one tail event now; POST /drop makes the
// next tail event carry a dropped count.
'use strict';

const http = require('node:http');

const { serveAsset, authorized, tailMatches } = require('./common.js');

const args = process.argv.slice(2);
const opt = (name, dflt) => {
    const i = args.indexOf('--' + name);
    return i >= 0 ? args[i + 1] : dflt;
};
const PORT = Number(opt('port', 8788));
const TOKEN = opt('token', '');
const EMPTY = args.includes('--empty');

const MODELS = { 'claude-haiku-4-5': [1, 5], 'claude-sonnet-4-5': [3, 15] }; // $ per million in/out

const rnd = (lo, hi) => lo + Math.random() * (hi - lo);
const pick = (a) => a[Math.floor(Math.random() * a.length)];

function series(minutes) {
    const now = Math.floor(Date.now() / 1000);
    const t0 = Math.floor(now / 60) * 60 - (minutes - 1) * 60;
    const ts = Array.from({ length: minutes }, (_, i) => t0 + i * 60);
    // Traffic only in some minutes, so the charts show gaps (nulls).
    const live = ts.map((_, i) => !EMPTY && (i > minutes / 3 || i % 7 === 0));
    const per = (f) => ts.map((_, i) => (live[i] ? f(i) : null));
    const r2 = per(() => Math.round(rnd(20, 120)));
    const r4 = per(() => Math.round(rnd(0, 8)));
    const r5 = per(() => Math.round(rnd(0, 3)));
    const models = {};
    if (!EMPTY) {
        for (const [m, [pin, pout]] of Object.entries(MODELS)) {
            const input = per(() => Math.round(rnd(2000, 40000)));
            const output = per(() => Math.round(rnd(1000, 20000)));
            models[m] = {
                inputTokens: input,
                outputTokens: output,
                costUsd: input.map((v, i) => (v === null ? null : (v * pin + output[i] * pout) / 1e6)),
            };
        }
    }
    return {
        now,
        step: 60,
        minutes: ts,
        requests: { '2xx': r2, '3xx': per(() => 0), '4xx': r4, '5xx': r5 },
        errorRate: r2.map((v, i) => (v === null ? null : r5[i] / (v + r4[i] + r5[i]))),
        latencyMs: { p50: per(() => rnd(200, 500)), p99: per(() => rnd(900, 3000)) },
        cpuMs: { p50: per(() => rnd(0.05, 0.3)), p99: per(() => rnd(0.5, 2)) },
        cacheHitRatio: per((i) => (i % 5 === 0 ? null : rnd(0.05, 0.4))),
        retries: per(() => Math.round(rnd(0, 3))),
        queueDepth: per(() => Math.round(rnd(0, 4))),
        models,
    };
}

function stats() {
    const until = new Date();
    const since = new Date(until - 3600e3);
    const group = (key, requests) => ({
        key,
        requests,
        errors: Math.round(requests * 0.02),
        errorRate: 0.02,
        latencyMs: { p50: 340, p99: 2100 },
        cpuMs: { p50: 0.12, p99: 0.9 },
        upstreamRequests: Math.round(requests * 0.8),
        cacheHits: Math.round(requests * 0.2),
        tokens: { input: requests * 280, output: requests * 150 },
        costUsd: requests * 0.0009,
    });
    const groups = EMPTY ? [] : [group('claude-haiku-4-5', 2400), group('claude-sonnet-4-5', 610)];
    const total = group(null, groups.reduce((n, g) => n + g.requests, 0));
    delete total.key;
    return { since: since.toISOString(), until: until.toISOString(), ...total, groups };
}

// ---- tail
const subscribers = new Set();
let dropNext = 0;

function tailEvent() {
    const model = pick(Object.keys(MODELS));
    const status = pick([200, 200, 200, 200, 200, 200, 400, 429, 502]);
    const route = pick(['/api/generate', '/v1/messages']);
    const cached = status === 200 && Math.random() < 0.2;
    const inputTokens = status === 200 ? Math.round(rnd(20, 800)) : 0;
    const outputTokens = status === 200 && !cached ? Math.round(rnd(20, 600)) : 0;
    const ev = {
        outcome: status >= 500 ? 'exception' : Math.random() < 0.03 ? 'canceled' : 'ok',
        scriptName: 'aigate-dev',
        eventTimestamp: Date.now(),
        event: {
            request: { url: `http://127.0.0.1:8787${route}`, method: 'POST', headers: { 'content-type': 'application/json', authorization: 'REDACTED' } },
            response: { status },
        },
        logs: [],
        exceptions: status >= 500 ? [{ name: 'UpstreamError', message: 'upstream answered 529', timestamp: Date.now() }] : [],
        wallTime: Math.round(rnd(cached ? 1 : 150, cached ? 5 : 2500)),
        cpuTime: Number(rnd(0.05, 1).toFixed(2)),
        aigate: {
            requestId: Math.random().toString(16).slice(2, 18),
            route,
            client: '127.0.0.1',
            key: pick(['default', 'ops', null]),
            model,
            inputTokens,
            outputTokens,
            costUsd: cached ? 0 : (inputTokens * MODELS[model][0] + outputTokens * MODELS[model][1]) / 1e6,
            cached,
            retries: Math.random() < 0.1 ? 1 : 0,
            upstreamMs: cached ? 0 : Math.round(rnd(100, 2000)),
            stream: Math.random() < 0.3,
        },
    };
    if (Math.random() < 0.05) {
        ev.event = { cron: '0 9 * * MON', scheduledTime: Date.now() };
        ev.aigate.route = 'scheduled';
        ev.aigate.task = 'weekly-digest';
    }
    return ev;
}

function broadcast(ev) {
    for (const sub of subscribers) {
        if (!tailMatches(sub.query, ev)) continue;
        const out = dropNext ? { ...ev, aigate: { ...ev.aigate, dropped: dropNext } } : ev;
        sub.res.write(`data: ${JSON.stringify(out)}\n\n`);
    }
    dropNext = 0;
}

if (!EMPTY) setInterval(() => broadcast(tailEvent()), 1500).unref();

const server = http.createServer((req, res) => {
    const u = new URL(req.url, 'http://x');
    const log = (status) => console.log(`${new Date().toISOString()} ${req.method} ${req.url} ${status}`);
    if (!authorized(req, u, TOKEN)) {
        res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Bearer' });
        res.end('{"error":"unauthorized"}');
        return log(401);
    }
    const json = (body) => {
        res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
        res.end(JSON.stringify(body));
        log(200);
    };
    if (req.method === 'GET' && u.pathname === '/series') return json(series(Number(u.searchParams.get('minutes')) || 60));
    if (req.method === 'GET' && u.pathname === '/stats') return json(stats());
    if (req.method === 'GET' && u.pathname === '/tail') {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' });
        res.write(': aigate tail\n\n');
        const sub = { res, query: u.searchParams };
        subscribers.add(sub);
        req.on('close', () => subscribers.delete(sub));
        return log(200);
    }
    if (req.method === 'POST' && u.pathname === '/poke') {
        broadcast(tailEvent());
        res.end('ok\n');
        return log(200);
    }
    if (req.method === 'POST' && u.pathname === '/drop') {
        dropNext = 17;
        res.end('ok\n');
        return log(200);
    }
    if (serveAsset(req, res, u)) return log(200);
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found\n');
    log(404);
});

server.listen(PORT, '127.0.0.1', () => console.log(`dashboard mock on http://127.0.0.1:${server.address().port}/`));

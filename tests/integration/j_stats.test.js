// SPDX-License-Identifier: MIT
//
// j_stats.test.js: `aigate stats` end to end: requests through the real server,
// a SIGTERM (which flushes the usage log), then the CLI over the server's folder
// with the server stopped: --json totals and --by groups match what was sent and
// what the log holds, the table has its shape; an empty folder gives zeros; the
// log's bucket is found through [aigate] usage_log_binding; bad flags are usage errors.
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { BIN, startGateway, startFake, generate, tmpdir, readUsageLog } = require('./lib.js');

const HIST_REL_ERROR = 1 / 32; // util/hist.h's AG_HIST_REL_ERROR

function run(dir, args) {
    return spawnSync(BIN, args, { cwd: dir, encoding: 'utf8', maxBuffer: 64 << 20 });
}

function stats(dir, args) {
    const r = run(dir, ['stats', ...args]);
    assert.equal(r.status, 0, r.stderr);
    return r.stdout;
}

// The nearest-rank quantile, as util/hist.c ranks.
function quantile(sorted, q) {
    if (!sorted.length) return 0;
    const rank = Math.max(1, Math.ceil(q * sorted.length - 1e-9));
    return sorted[rank - 1];
}

function assertNearQuantile(gotMs, valuesMs, q, what) {
    const sorted = valuesMs.map((v) => Math.round(v * 1000)).sort((a, b) => a - b);
    const want = quantile(sorted, q);
    const got = Math.round(gotMs * 1000);
    assert.ok(Math.abs(got - want) <= HIST_REL_ERROR * want, `${what}: got ${got} µs, true ${want} µs`);
}

// What the engine's definitions give for a set of log entries.
function expected(entries) {
    const errors = entries.filter((e) => e.status >= 500).length;
    return {
        requests: entries.length,
        errors,
        cacheHits: entries.filter((e) => e.cached).length,
        upstreamRequests: entries.reduce((n, e) => n + (e.attempts !== undefined ? e.attempts : e.cached ? 0 : 1), 0),
        input: entries.reduce((n, e) => n + e.inputTokens, 0),
        output: entries.reduce((n, e) => n + e.outputTokens, 0),
        cost: entries.reduce((n, e) => n + e.costUsd, 0),
    };
}

function assertFigures(got, entries, what) {
    const want = expected(entries);
    assert.equal(got.requests, want.requests, `${what}: requests`);
    assert.equal(got.errors, want.errors, `${what}: errors`);
    assert.ok(Math.abs(got.errorRate - want.errors / want.requests) < 1e-6, `${what}: errorRate`);
    assert.equal(got.cacheHits, want.cacheHits, `${what}: cacheHits`);
    assert.equal(got.upstreamRequests, want.upstreamRequests, `${what}: upstreamRequests`);
    assert.deepEqual(got.tokens, { input: want.input, output: want.output }, `${what}: tokens`);
    assert.ok(Math.abs(got.costUsd - want.cost) < 1e-8, `${what}: costUsd ${got.costUsd} vs ${want.cost}`);
    const lat = entries.map((e) => e.latencyMs);
    assertNearQuantile(got.latencyMs.p50, lat, 0.5, `${what}: latency p50`);
    assertNearQuantile(got.latencyMs.p99, lat, 0.99, `${what}: latency p99`);
    const cpu = entries.filter((e) => e.cpuMs !== undefined).map((e) => e.cpuMs);
    assertNearQuantile(got.cpuMs.p50, cpu, 0.5, `${what}: cpu p50`);
    assertNearQuantile(got.cpuMs.p99, cpu, 0.99, `${what}: cpu p99`);
}

const FIELDS = ['requests', 'errors', 'errorRate', 'latencyMs', 'cpuMs', 'upstreamRequests', 'cacheHits', 'tokens', 'costUsd'];

test('aigate stats over what the server logged: totals, groups and the table', async () => {
    const up = await startFake();
    const dir = tmpdir();
    const gw = await startGateway({
        cwd: dir,
        upstream: `http://127.0.0.1:${up.port}`,
        threads: 2,
        config: '[aigate]\nusage_log_flush = 0.2\naccess_log = false\nmodels = ["claude-sonnet-4-5"]\n',
    });
    // 24 requests for the default model (every 4th prompt repeats: later ones can be cache
    // hits), 8 for another model, 4 the upstream fails.
    for (let i = 0; i < 24; i++) {
        const r = await generate(gw, { prompt: i % 4 === 0 ? 'the same prompt' : `haiku ${i}` });
        assert.equal(r.status, 200);
    }
    for (let i = 0; i < 8; i++) {
        const r = await generate(gw, { prompt: `sonnet ${i}`, model: 'claude-sonnet-4-5' });
        assert.equal(r.status, 200);
    }
    for (let i = 0; i < 4; i++) {
        const r = await generate(gw, { prompt: `[[status:500]] failing ${i}` });
        assert.ok(r.status >= 500, `upstream 500 answers ${r.status}`);
    }
    await gw.stop(); // SIGTERM: the usage log is written before the exit
    const upstreamCalls = up.stats().requests;
    await up.close();

    const entries = readUsageLog(dir).entries;
    assert.equal(entries.length, 36);

    // --json: the totals of everything just sent
    const j = JSON.parse(stats(dir, ['--json', '--since', '1h']));
    assert.deepEqual(Object.keys(j), ['since', 'until', ...FIELDS, 'skipped']);
    assert.match(j.since, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.equal(Date.parse(j.until) - Date.parse(j.since), 3600 * 1000);
    assert.ok(Math.abs(Date.parse(j.until) - Date.now()) < 60000);
    assert.equal(j.requests, 36);
    assert.equal(j.errors, 4);
    assert.equal(j.skipped, 0);
    assert.ok(j.cacheHits >= 1 && j.cacheHits <= 5, `cache hits: ${j.cacheHits}`);
    assertFigures(j, entries, 'total');
    // Once the gateway counts attempts, they are the upstream's calls.
    if (entries.some((e) => e.attempts > 0)) assert.equal(j.upstreamRequests, upstreamCalls);

    // --by model: one group per model, most requests first
    const m = JSON.parse(stats(dir, ['--json', '--since', '1h', '--by', 'model']));
    assert.deepEqual(Object.keys(m), ['since', 'until', ...FIELDS, 'skipped', 'groups']);
    assert.deepEqual(m.groups.map((g) => [g.key, g.requests]), [['claude-haiku-4-5', 28], ['claude-sonnet-4-5', 8]]);
    for (const g of m.groups) {
        assert.deepEqual(Object.keys(g), ['key', ...FIELDS]);
        assertFigures(g, entries.filter((e) => e.model === g.key), `model ${g.key}`);
    }

    // --by status: keys are strings
    const s = JSON.parse(stats(dir, ['--json', '--by', 'status']));
    assert.equal(s.groups[0].key, '200');
    assert.equal(s.groups[0].requests, 32);
    assert.equal(s.groups.reduce((n, g) => n + g.requests, 0), 36);
    for (const g of s.groups) assertFigures(g, entries.filter((e) => String(e.status) === g.key), `status ${g.key}`);

    // --by hour: the hours of the entries, oldest first
    const h = JSON.parse(stats(dir, ['--json', '--by', 'hour']));
    const hours = [...new Set(entries.map((e) => e.timestamp.slice(0, 13) + ':00:00Z'))].sort();
    assert.deepEqual(h.groups.map((g) => g.key), hours);

    // A window with nothing in it is zeros, not an error.
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const none = JSON.parse(stats(dir, ['--json', '--since', '1s', '--by', 'route']));
    assert.equal(none.requests, 0);
    assert.deepEqual(none.groups, []);
    assert.deepEqual(none.latencyMs, { p50: 0, p99: 0 });

    // The table: a window line, a header, a row per group and a total row.
    const text = stats(dir, ['--since', '1h', '--by', 'model']);
    const lines = text.trimEnd().split('\n');
    assert.match(lines[0], /^usage log from \S+Z to \S+Z$/);
    const cols = (l) => l.trim().split(/\s{2,}/);
    assert.deepEqual(cols(lines[1]), ['MODEL', 'REQUESTS', 'ERROR RATE', 'P50 MS', 'P99 MS', 'CPU P50 MS', 'CPU P99 MS',
        'UPSTREAM', 'CACHE HITS', 'TOKENS IN', 'TOKENS OUT', 'COST USD']);
    assert.equal(lines.length, 6);
    assert.match(lines[5], /^the usage log goes back to \d{4}-\d\d-\d\d$/); // how far back (retention)
    assert.deepEqual(cols(lines[2]).slice(0, 3), ['claude-haiku-4-5', '28', `${(400 / 28).toFixed(2)}%`]);
    assert.deepEqual(cols(lines[3]).slice(0, 3), ['claude-sonnet-4-5', '8', '0.00%']);
    const total = cols(lines[4]);
    assert.equal(total.length, 12);
    assert.deepEqual(total.slice(0, 3), ['total', '36', `${(400 / 36).toFixed(2)}%`]);
    assert.equal(total[9], String(j.tokens.input));
    assert.equal(total[11], j.costUsd.toFixed(6));
    // the header's columns line up with the numbers (right-aligned)
    assert.equal(lines[1].indexOf('REQUESTS') + 'REQUESTS'.length, lines[4].indexOf(' 36') + 3);
    const plain = stats(dir, []); // default: 24h, no grouping
    assert.equal(plain.trimEnd().split('\n').length, 4); // window, header, total, how far back
    assert.match(plain.split('\n')[2], /^total +36 /);
});

test('aigate stats: no log yet, the usage_log_binding bucket, bad flags', () => {
    const dir = tmpdir();
    // no data folder at all: zero counts, exit 0
    const z = JSON.parse(stats(dir, ['--json']));
    assert.equal(z.requests, 0);
    assert.equal(z.costUsd, 0);
    assert.equal(z.groups, undefined);
    assert.deepEqual(JSON.parse(stats(dir, ['--json', '--by', 'key'])).groups, []);

    // the bucket of [aigate] usage_log_binding, in the folder of data_dir
    fs.writeFileSync(path.join(dir, 'aigate.toml'),
        '[[r2_buckets]]\nbinding = "LOGS"\nbucket_name = "my-logs"\n[aigate]\nusage_log_binding = "LOGS"\ndata_dir = "./state"\n');
    const now = Date.now();
    const d = new Date(now - 60000);
    const day = d.toISOString().slice(0, 10).replace(/-/g, '/');
    const line = (o) => JSON.stringify({ timestamp: new Date(now - 60000).toISOString(), model: 'm', status: 200, cached: false, latencyMs: 12, costUsd: 0.25, ...o });
    fs.writeFileSync(path.join(dir, 'obj.ndjson'), `${line({ key: 'team-a', attempts: 2 })}\n${line({ status: 503 })}\nnot json\n`);
    let r = run(dir, ['r2', 'bucket', 'create', 'my-logs']);
    assert.equal(r.status, 0, r.stderr);
    r = run(dir, ['r2', 'object', 'put', `my-logs/logs/${day}/${String(now - 60000).padStart(13, '0')}-test-0000000000.ndjson`, '--file', 'obj.ndjson']);
    assert.equal(r.status, 0, r.stderr);
    assert.ok(fs.existsSync(path.join(dir, 'state', 'r2', 'my-logs')));
    const k = JSON.parse(stats(dir, ['--json', '--by', 'key', '--since', '10m']));
    assert.equal(k.requests, 2);
    assert.equal(k.errors, 1);
    assert.equal(k.errorRate, 0.5);
    assert.equal(k.upstreamRequests, 3); // 2 attempts, and 1 for a line without the field
    assert.equal(k.costUsd, 0.5);
    assert.equal(k.skipped, 1);
    assert.deepEqual(k.groups.map((g) => [g.key, g.requests]), [['', 1], ['team-a', 1]]);
    // --data-dir wins over the config's data_dir
    assert.equal(JSON.parse(stats(dir, ['--json', '--data-dir', path.join(dir, 'elsewhere')])).requests, 0);

    for (const args of [['--since', '5x'], ['--since', '1.5h'], ['--since'], ['--by', 'day'], ['--by', ''], ['extra'], ['--until', '1h']]) {
        const b = run(dir, ['stats', ...args]);
        assert.equal(b.status, 2, `${args.join(' ')}: ${b.stderr}`);
        assert.match(b.stderr, /usage: aigate stats/);
    }
    const help = run(dir, ['stats', '--help']);
    assert.equal(help.status, 0);
    assert.match(help.stdout, /^usage: aigate stats \[--since 24h\] \[--by model\|route\|status\|client\|key\|hour\] \[--json\]/);
});

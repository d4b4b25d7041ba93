// SPDX-License-Identifier: MIT
//
// z_s3.test.js: the S3 back end end to end against a real S3 server (s3rver,
// signatures checked with its built-in S3RVER key): usage-log batches land as
// NDJSON objects; while the server is down the gateway still answers and the
// batches wait in the local spool; once it is back every request id is in the
// bucket exactly once, also across a gateway restart; `aigate r2 object`
// put/get/list round trips.
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { BIN, startGateway, startFake, generate, tmpdir, until, readUsageLog } = require('./lib.js');

const S3RVER = require.resolve('s3rver/bin/s3rver.js');
const BUCKET = 'usage-logs';
// s3rver's one account. The gateway and the CLI (readUsageLog) inherit them.
process.env.S3_ACCESS_KEY_ID = 'S3RVER';
process.env.S3_SECRET_ACCESS_KEY = 'S3RVER';

const live = new Set();
process.on('exit', () => {
    for (const p of live) {
        try {
            p.kill('SIGKILL');
        } catch {
            // already gone
        }
    }
});

// Starts s3rver on 127.0.0.1 (port 0: an ephemeral one) keeping its data in dir.
async function startS3(dir, port = 0) {
    const proc = spawn(process.execPath, [S3RVER, '-d', dir, '-a', '127.0.0.1', '-p', String(port), '-s',
        '--no-vhost-buckets', '--configure-bucket', BUCKET], { stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(proc);
    const s3 = { proc, out: '', exited: false };
    proc.stdout.on('data', (d) => (s3.out += d));
    proc.stderr.on('data', (d) => (s3.out += d));
    const exit = new Promise((resolve) => proc.on('exit', () => {
        s3.exited = true;
        live.delete(proc);
        resolve();
    }));
    await until(() => s3.exited || /S3rver listening on [^:]+:(\d+)/.test(s3.out), 15000, 's3rver to listen').catch((e) => {
        proc.kill('SIGKILL');
        throw new Error(`${e.message}: ${s3.out}`);
    });
    assert.ok(!s3.exited, `s3rver exited: ${s3.out}`);
    s3.port = Number(/S3rver listening on [^:]+:(\d+)/.exec(s3.out)[1]);
    s3.kill = async () => {
        proc.kill('SIGKILL');
        await exit;
    };
    return s3;
}

function configFor(s3port) {
    return `[[r2_buckets]]\nbinding = "STORAGE"\nbucket_name = "${BUCKET}"\nbackend = "s3"\n\n` +
        `[aigate]\nusage_log_flush = 0.1\naccess_log = false\n\n` +
        `[aigate.s3]\nendpoint = "http://127.0.0.1:${s3port}"\nregion = "us-east-1"\n`;
}

// requestId -> how many times it is in the bucket.
function bucketCounts(dir) {
    const counts = new Map();
    for (const e of readUsageLog(dir).entries) counts.set(e.requestId, (counts.get(e.requestId) || 0) + 1);
    return counts;
}

// The same while the gateway may be writing: s3rver writes an object in place,
// so a read can meet one half written. null then: the poll tries again.
function bucketCountsNow(dir) {
    try {
        return bucketCounts(dir);
    } catch {
        return null;
    }
}

// A file a drain deleted between the listing and the read is not an error.
function readIfThere(fn) {
    try {
        return fn();
    } catch (e) {
        if (e.code === 'ENOENT') return null;
        throw e;
    }
}

// Every entry in the spool's files (AGOBJ01 header, key, metadata, then the NDJSON bytes).
function spoolIds(dir) {
    const root = path.join(dir, '.aigate', 'spool', 'usage-log', BUCKET);
    const ids = [];
    if (!fs.existsSync(root)) return ids;
    for (const shard of fs.readdirSync(root)) {
        const sub = path.join(root, shard);
        const st = readIfThere(() => fs.statSync(sub));
        if (!st || !st.isDirectory()) continue;
        for (const f of readIfThere(() => fs.readdirSync(sub)) || []) {
            if (f.startsWith('.')) continue; // a put in progress (puts rename whole files)
            const text = readIfThere(() => fs.readFileSync(path.join(sub, f), 'latin1'));
            if (text === null) continue;
            const at = text.indexOf('{"timestamp"');
            if (at < 0) continue;
            for (const line of text.slice(at).split('\n')) if (line) ids.push(JSON.parse(line).requestId);
        }
    }
    return ids;
}

async function sendMany(gw, n, tag) {
    const ids = [];
    for (let i = 0; i < n; i++) {
        const r = await generate(gw, { prompt: `${tag} ${i}` });
        assert.equal(r.status, 200, r.body);
        ids.push(r.headers['x-request-id']);
    }
    return ids;
}

function assertExactlyOnce(counts, ids) {
    for (const id of ids) assert.equal(counts.get(id), 1, `request ${id} is in the bucket ${counts.get(id) || 0} times`);
    assert.equal(counts.size, ids.length, 'no entry besides the requests sent');
}

test('usage log on S3: batches land; S3 down spools; S3 back drains each entry exactly once', async () => {
    const s3dir = tmpdir();
    let s3 = await startS3(s3dir);
    const up = await startFake();
    const dir = tmpdir();
    const gw = await startGateway({ cwd: dir, upstream: `http://127.0.0.1:${up.port}`, config: configFor(s3.port) });
    try {
        const first = await sendMany(gw, 5, 'up');
        let counts;
        await until(() => {
            counts = bucketCountsNow(dir);
            return counts && first.every((id) => counts.has(id));
        }, 15000, 'the first batches in the bucket');
        assertExactlyOnce(counts, first);
        for (const k of readUsageLog(dir).keys) assert.match(k, /^logs\/\d{4}\/\d\d\/\d\d\/\d{13}-[0-9a-f]{16}-\d{10}\.ndjson$/);

        // S3 down: the gateway answers, and the batches go to the spool.
        await s3.kill();
        const second = await sendMany(gw, 5, 'down');
        await until(() => second.every((id) => spoolIds(dir).includes(id)), 15000, 'the spool to hold the batches');
        assert.equal(new Set(spoolIds(dir)).size, spoolIds(dir).length, 'each entry spooled once');
        assert.ok(first.every((id) => !spoolIds(dir).includes(id)), 'what the store took is not in the spool');
        const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
        const spoolBytes = Number(/^aigate_usage_log_spool_bytes (\d+)$/m.exec(metrics)[1]);
        assert.ok(spoolBytes > 0, metrics);
        const third = await sendMany(gw, 3, 'still down');

        // Back on the same port and folder: every id exactly once, the spool empty.
        s3 = await startS3(s3dir, s3.port);
        const all = [...first, ...second, ...third];
        await until(() => {
            counts = bucketCountsNow(dir);
            return counts && all.every((id) => counts.has(id)) && spoolIds(dir).length === 0;
        }, 20000, 'every entry in the bucket');
        assertExactlyOnce(counts, all);
        await gw.stop();
        assertExactlyOnce(bucketCounts(dir), all);
        assert.match(gw.stderr, /usage log: the spool is drained/);
        assert.doesNotMatch(gw.stderr, /usage-log unwritten/);
    } finally {
        if (!gw.exited) await gw.stop().catch(() => {});
        await s3.kill();
        await up.close();
    }
});

test('usage log on S3: what a stopping gateway spooled is drained by the next one, once', async () => {
    const s3dir = tmpdir();
    let s3 = await startS3(s3dir);
    const up = await startFake();
    const dir = tmpdir();
    const opts = { cwd: dir, upstream: `http://127.0.0.1:${up.port}`, config: configFor(s3.port) };
    let gw = await startGateway(opts);
    try {
        await s3.kill();
        const ids = await sendMany(gw, 4, 'before restart');
        await gw.stop(); // close: the store refuses, so the spool takes them at once
        assert.deepEqual([...spoolIds(dir)].sort(), [...ids].sort());
        assert.doesNotMatch(gw.stderr, /usage-log unwritten/);

        s3 = await startS3(s3dir, s3.port);
        gw = await startGateway(opts);
        let counts;
        await until(() => {
            counts = bucketCountsNow(dir);
            return counts && ids.every((id) => counts.has(id)) && spoolIds(dir).length === 0;
        }, 20000, 'the spool drained at start');
        assertExactlyOnce(counts, ids);
        assert.match(gw.stderr, /wait in the spool/);
        await gw.stop();
        assertExactlyOnce(bucketCounts(dir), ids);
    } finally {
        if (!gw.exited) await gw.stop().catch(() => {});
        await s3.kill();
        await up.close();
    }
});

test('aigate r2 object put/get/list round trip on the S3 back end', async () => {
    const s3dir = tmpdir();
    const s3 = await startS3(s3dir);
    const dir = tmpdir();
    const config = path.join(dir, 'aigate.toml');
    fs.writeFileSync(config, configFor(s3.port));
    const r2 = (args, input) => spawnSync(BIN, ['r2', 'object', ...args, '--config', config], { cwd: dir, input, encoding: 'utf8' });
    try {
        const body = 'line one\nline two ünïcode\n';
        let r = r2(['put', `${BUCKET}/cli/a.txt`, '--content-type', 'text/plain'], body);
        assert.equal(r.status, 0, r.stderr);
        r = r2(['put', `${BUCKET}/cli/b.txt`], 'b');
        assert.equal(r.status, 0, r.stderr);
        r = r2(['get', `${BUCKET}/cli/a.txt`]);
        assert.equal(r.status, 0, r.stderr);
        assert.equal(r.stdout, body);
        r = r2(['get', `${BUCKET}/cli/a.txt`, '--json']);
        assert.equal(r.status, 0, r.stderr);
        const info = JSON.parse(r.stdout);
        assert.equal(info.size, Buffer.byteLength(body));
        assert.equal(info.httpMetadata.contentType, 'text/plain');
        r = r2(['list', BUCKET, '--prefix', 'cli/', '--json']);
        assert.equal(r.status, 0, r.stderr);
        const page = JSON.parse(r.stdout);
        assert.deepEqual(page.objects.map((o) => o.key), ['cli/a.txt', 'cli/b.txt']);
        assert.deepEqual(page.objects.map((o) => o.size), [Buffer.byteLength(body), 1]);
        r = r2(['get', `${BUCKET}/cli/missing.txt`]);
        assert.equal(r.status, 1, 'a missing object exits 1');
        // s3rver's own files hold what the CLI put: it went to S3, not to a local folder.
        assert.equal(fs.readFileSync(path.join(s3dir, BUCKET, 'cli', 'a.txt._S3rver_object'), 'utf8'), body);
        assert.ok(!fs.existsSync(path.join(dir, '.aigate', 'r2', BUCKET)), 'no local bucket folder');
    } finally {
        await s3.kill();
    }
});

// SPDX-License-Identifier: MIT
//
// x_upgrade.test.js: binary upgrade (`aigate deploy --upgrade`, SIGUSR2) under
// load to a second copy of the binary: zero failed requests, the new pid
// serves, the old one exits 0, the usage log has every request exactly once;
// a binary that fails to start leaves the old one serving, and says why.
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { BIN, startGateway, startFake, request, tmpdir, until, readUsageLog } = require('./lib.js');

function deploy(gw, args = []) {
    return new Promise((resolve) => {
        const env = { ...process.env };
        delete env.ANTHROPIC_API_KEY;
        const p = spawn(BIN, ['deploy', '--config', path.join(gw.cwd, 'aigate.toml'), ...args], { cwd: gw.cwd, env });
        let stdout = '';
        let stderr = '';
        p.stdout.on('data', (d) => (stdout += d));
        p.stderr.on('data', (d) => (stderr += d));
        p.on('close', (status) => resolve({ status, stdout, stderr }));
    });
}

function alive(pid) {
    try {
        process.kill(pid, 0);
        return true;
    } catch {
        return false;
    }
}

// The new process is not this one's child: it is stopped by pid, and its end awaited.
async function stopPid(pid) {
    process.kill(pid, 'SIGTERM');
    await until(() => !alive(pid), 60000, `pid ${pid} to exit`);
}

const CONFIG = '[aigate]\nusage_log_flush = 0.2\naccess_log = false\n';

test('upgrade under load: 64 busy connections, 20 open streams, zero failed requests or resets; every request logged once', async () => {
    const up = await startFake();
    const gw = await startGateway({ upstream: `http://127.0.0.1:${up.port}`, threads: 2, config: CONFIG });
    const copy = path.join(tmpdir(), 'aigate-new');
    fs.copyFileSync(BIN, copy);
    fs.chmodSync(copy, 0o755);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
    const failures = [];
    const ids = new Set();
    let done = 0;
    let streams = 0;
    let stop = false;
    let newPid = 0;
    let phase = 'warm-up';
    const post = (body) =>
        new Promise((resolve) => {
            const req = http.request(
                { host: '127.0.0.1', port: gw.port, path: '/api/generate', method: 'POST', agent, headers: { 'content-type': 'application/json' } },
                (res) => {
                    const chunks = [];
                    res.on('data', (c) => chunks.push(c));
                    res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
                    res.on('error', (e) => resolve({ error: e }));
                }
            );
            req.setTimeout(30000, () => req.destroy(new Error('client timeout')));
            req.on('error', (e) => resolve({ error: e }));
            req.end(JSON.stringify(body));
        });
    let n = 0;
    async function worker(k) {
        while (!stop) {
            const i = n++;
            let body;
            if (k < 20) body = { prompt: `[[delay:15]][[words:30]] stream ${i}`, stream: true };
            else if (i % 2) body = { prompt: 'the same prompt: a cache hit' };
            else body = { prompt: `a fresh prompt ${i}` };
            const r = await post(body);
            if (r.error || r.status !== 200) {
                failures.push(`${phase}: ${r.error ? r.error.code || r.error.message : `${r.status} ${r.body.slice(0, 200)}`}`);
                continue;
            }
            ids.add(r.headers['x-request-id']);
            if (body.stream) {
                if (!r.body.includes('message_stop')) failures.push(`stream ${i} did not complete`);
                streams++;
            }
            done++;
        }
    }
    const workers = Array.from({ length: 64 }, (_, k) => worker(k));
    try {
        await until(() => done >= 100 && streams >= 5, 30000, 'the load to warm up');
        const oldPid = gw.proc.pid;
        phase = 'failed-upgrade';
        // A binary that fails to start: the old one keeps serving, the command says why.
        const bad = path.join(tmpdir(), 'aigate-broken');
        fs.writeFileSync(bad, '#!/bin/sh\necho "broken build: cannot load libmissing.so" >&2\nexit 3\n', { mode: 0o755 });
        const before = done;
        const f = await deploy(gw, ['--upgrade', '--binary', bad]);
        assert.equal(f.status, 1, f.stdout);
        assert.match(f.stderr, /did not start: it exited with status 3/);
        assert.match(f.stderr, /broken build: cannot load libmissing\.so/);
        assert.match(f.stderr, /keeps serving/);
        assert.ok(alive(oldPid) && !gw.exited, 'the old one still runs');
        assert.equal((await request(`${gw.adminUrl}/healthz`)).json.pid, oldPid);
        await until(() => done > before + 20, 10000, 'requests to go on after the failed upgrade');

        phase = 'upgrade';
        // The real one, to a second copy of the binary.
        const before2 = done;
        const d = await deploy(gw, ['--upgrade', '--binary', copy]);
        assert.equal(d.status, 0, d.stderr + d.stdout);
        const m = /Upgraded: pid (\d+) serves/.exec(d.stdout);
        assert.ok(m, d.stdout);
        newPid = Number(m[1]);
        assert.notEqual(newPid, oldPid);
        assert.ok(d.stdout.includes(copy), d.stdout);
        // The old one drains and exits 0; the new one serves.
        const exit = await gw.exitPromise;
        assert.equal(exit.code, 0, `old exit ${JSON.stringify(exit)}; stderr:\n${gw.stderr.slice(-3000)}`);
        await until(() => done > before2 + 100, 20000, 'requests to go on after the upgrade');
        assert.equal((await request(`${gw.adminUrl}/healthz`)).json.pid, newPid);
        const pidFile = fs.readFileSync(path.join(gw.cwd, '.aigate', 'aigate.pid'), 'utf8');
        assert.equal(Number(pidFile.split('\n')[0]), newPid);

        phase = 'sigusr2';
        // SIGUSR2 too: the new one upgrades itself (same binary path) and exits 0.
        const before3 = done;
        process.kill(newPid, 'SIGUSR2');
        let third = 0;
        await until(() => {
            const p = Number(fs.readFileSync(path.join(gw.cwd, '.aigate', 'aigate.pid'), 'utf8').split('\n')[0]);
            if (p !== newPid) third = p;
            return third && !alive(newPid);
        }, 60000, 'the SIGUSR2 upgrade');
        const answer = JSON.parse(fs.readFileSync(path.join(gw.cwd, '.aigate', 'aigate.upgrade'), 'utf8'));
        assert.equal(answer.upgraded, true);
        assert.equal(answer.pid, third);
        newPid = third;
        await until(() => done > before3 + 100, 20000, 'requests to go on after SIGUSR2');
        assert.equal((await request(`${gw.adminUrl}/healthz`)).json.pid, newPid);

        stop = true;
        await Promise.all(workers);
        // Not one: no reset either, since every connection the old process had
        // is closed only after an answer that said Connection: close.
        assert.deepEqual(failures, [], `failed requests: ${failures.slice(0, 10).join('; ')}`);
        assert.ok(streams >= 20, `${streams} streams completed`);
        await stopPid(newPid);
        newPid = 0;
        assert.doesNotMatch(gw.stderr, /AddressSanitizer|LeakSanitizer|ThreadSanitizer|runtime error:/, gw.stderr.slice(-4000));
        const { entries } = readUsageLog(gw.cwd);
        const seen = new Map();
        for (const e of entries) seen.set(e.requestId, (seen.get(e.requestId) || 0) + 1);
        const dup = [...seen].filter(([, c]) => c > 1);
        assert.deepEqual(dup, [], 'no request logged twice');
        const missing = [...ids].filter((id) => !seen.has(id));
        assert.deepEqual(missing, [], 'every answered request is logged');
    } finally {
        stop = true;
        await Promise.all(workers);
        agent.destroy();
        if (newPid && alive(newPid)) process.kill(newPid, 'SIGKILL');
        if (!gw.exited) gw.proc.kill('SIGKILL');
        await up.close();
    }
});

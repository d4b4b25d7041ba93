// SPDX-License-Identifier: MIT
//
// v_lifecycle.test.js: `aigate init`; reload (SIGHUP, `aigate deploy`, POST /reload)
// under load with zero failed requests; a refused config that changes nothing;
// limiter counts that outlive a reload; sd_notify around start, reload and stop;
// `make install` into a DESTDIR and the unit through systemd-analyze.
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { BIN, startGateway, startFake, request, tmpdir, until, filesUnder } = require('./lib.js');

const ROOT = path.resolve(__dirname, '../..');

function run(args, opts = {}) {
    const env = { ...process.env, ...(opts.env || {}) };
    delete env.ANTHROPIC_API_KEY;
    return spawnSync(BIN, args, { cwd: opts.cwd || tmpdir(), env, encoding: 'utf8', timeout: 20000 });
}

// `aigate deploy` without blocking this process: the fake upstream and the
// load run in it and must keep answering meanwhile.
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

async function reloads(gw, result = 'success') {
    const m = await request(`${gw.adminUrl}/metrics`);
    const re = new RegExp(`^aigate_config_reloads_total\\{result="${result}"\\} (\\d+)$`, 'm');
    const hit = re.exec(m.body);
    return hit ? Number(hit[1]) : -1;
}

function messages(gw, prompt, headers = {}) {
    return request(`${gw.url}/v1/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', ...headers },
        body: { model: 'claude-haiku-4-5', max_tokens: 16, messages: [{ role: 'user', content: prompt }] },
    });
}

test('aigate init makes a project whose wrangler.toml passes config check, and never overwrites', () => {
    const dir = tmpdir();
    const r = run(['init', 'my-ai-worker'], { cwd: dir });
    assert.equal(r.status, 0, r.stderr);
    const proj = path.join(dir, 'my-ai-worker');
    for (const f of ['wrangler.toml', '.dev.vars.example', '.gitignore', 'README.md'])
        assert.ok(fs.existsSync(path.join(proj, f)), `${f} exists`);
    const ignore = fs.readFileSync(path.join(proj, '.gitignore'), 'utf8').split('\n');
    assert.ok(ignore.includes('.dev.vars') && ignore.includes('.aigate/'), ignore.join('|'));
    const toml = fs.readFileSync(path.join(proj, 'wrangler.toml'), 'utf8');
    assert.match(toml, /^name = "my-ai-worker"$/m);
    assert.match(toml, /^\[\[kv_namespaces\]\]\nbinding = "CACHE"$/m);
    assert.match(toml, /^simple = \{ limit = 100, period = 60 \}$/m);
    const readme = fs.readFileSync(path.join(proj, 'README.md'), 'utf8');
    for (const verb of ['aigate secret put ANTHROPIC_API_KEY', 'aigate dev', 'aigate deploy', 'aigate tail', 'aigate stats'])
        assert.ok(readme.includes(verb), `README says ${verb}`);
    assert.match(r.stdout, /Next steps:[\s\S]*cd my-ai-worker[\s\S]*aigate deploy/);
    const check = run(['config', 'check'], { cwd: proj });
    assert.equal(check.status, 0, check.stderr);
    assert.match(check.stdout, /wrangler\.toml: ok/);
    // Again: refused, and nothing in the folder changes.
    fs.writeFileSync(path.join(proj, 'wrangler.toml'), 'name = "edited"\n');
    const again = run(['init', 'my-ai-worker'], { cwd: dir });
    assert.equal(again.status, 1);
    assert.match(again.stderr, /my-ai-worker already exists/);
    assert.equal(fs.readFileSync(path.join(proj, 'wrangler.toml'), 'utf8'), 'name = "edited"\n');
    assert.equal(run(['init', '--help']).status, 0);
    assert.equal(run(['init']).status, 2);
    assert.equal(run(['init', 'a b']).status, 2);
});

function loadConfig(limit) {
    return `[aigate]
rate_limit = 1000000
trusted_proxies = ["127.0.0.1"]

[aigate.routes."/v1/messages"]
rate_limit = ${limit}
rate_period = 3600
`;
}

// Sends limit+1 requests as a fresh client: exactly `limit` pass.
async function limitInForce(gw, limit, client) {
    const statuses = [];
    for (let i = 0; i <= limit; i++) {
        const r = await messages(gw, `probe ${client} ${i}`, { 'x-forwarded-for': client });
        statuses.push(r.status);
    }
    return statuses.filter((s) => s === 200).length === limit && statuses[limit] === 429 ? limit : statuses.join(',');
}

test('reload under load: 20 reloads (SIGHUP and aigate deploy) with 64 busy connections drop nothing', async () => {
    const up = await startFake();
    const gw = await startGateway({ upstream: `http://127.0.0.1:${up.port}`, threads: 2, config: loadConfig(3) });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
    const failures = [];
    let done = 0;
    let streams = 0;
    let hits = 0;
    let stop = false;
    // One request on the pool's kept-alive connections; resolves its status and body.
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
            req.setTimeout(20000, () => req.destroy(new Error('client timeout')));
            req.on('error', (e) => resolve({ error: e }));
            req.end(JSON.stringify(body));
        });
    let n = 0;
    async function worker(k) {
        while (!stop) {
            const i = n++;
            let body;
            // Slots 0-19 keep a stream open (slow deltas), the rest alternate cache hits and misses.
            if (k < 20) body = { prompt: `[[delay:15]][[words:30]] stream ${i}`, stream: true };
            else if (i % 2) body = { prompt: 'the same prompt: a cache hit' };
            else body = { prompt: `a fresh prompt ${i}` };
            const r = await post(body);
            if (r.error || r.status !== 200) {
                failures.push(r.error ? r.error.code || r.error.message : `${r.status} ${r.body.slice(0, 200)}`);
                continue;
            }
            if (body.stream) {
                if (!r.body.includes('message_stop')) failures.push(`stream ${i} did not complete`);
                streams++;
            }
            if (r.headers['x-aigate-cache'] === 'hit') hits++;
            done++;
        }
    }
    const workers = Array.from({ length: 64 }, (_, k) => worker(k));
    try {
        await until(() => done >= 100 && streams >= 5, 20000, 'the load to warm up');
        assert.equal(await limitInForce(gw, 3, '10.0.0.1'), 3);
        const t0 = Date.now();
        for (let i = 1; i <= 20; i++) {
            const limit = i % 2 ? 5 : 3;
            fs.writeFileSync(path.join(gw.cwd, 'aigate.toml'), loadConfig(limit));
            const before = done;
            if (i % 2) {
                gw.proc.kill('SIGHUP');
            } else {
                const d = await deploy(gw);
                assert.equal(d.status, 0, d.stderr);
                assert.match(d.stdout, /Changed: routes/);
                assert.match(d.stdout, new RegExp(`Current generation: ${i + 1}\\b`));
                assert.match(d.stdout, /POST \/api\/generate/);
            }
            await until(async () => (await reloads(gw)) === i, 10000, `reload ${i}`);
            assert.equal(await limitInForce(gw, limit, `10.0.${i}.1`), limit, `reload ${i}: the new limit`);
            // Requests keep completing between reloads.
            await until(() => done > before + 10, 10000, 'requests to go on');
        }
        const elapsed = Date.now() - t0;
        stop = true;
        await Promise.all(workers);
        assert.deepEqual(failures, [], `failed requests: ${failures.slice(0, 10).join('; ')}`);
        assert.ok(streams >= 20, `${streams} streams completed`);
        assert.ok(hits > 0, 'cache hits were served');
        assert.equal(await reloads(gw), 20);
        assert.equal(await reloads(gw, 'failure'), 0);
        assert.match(gw.stderr, /reload: generation 21 applied/);
        assert.ok(elapsed < 60000, `20 reloads took ${elapsed} ms`);
    } finally {
        stop = true;
        await Promise.all(workers);
        agent.destroy();
        await gw.stop();
        await up.close();
    }
});

test('a broken config on reload changes nothing: deploy exits 1 with file:line:col, the old generation serves', async () => {
    const up = await startFake();
    const gw = await startGateway({ upstream: `http://127.0.0.1:${up.port}`, config: loadConfig(2) });
    try {
        // Counts outlive a reload that leaves the limit alone.
        assert.equal((await messages(gw, 'a', { 'x-forwarded-for': '10.1.0.1' })).status, 200);
        assert.equal((await messages(gw, 'b', { 'x-forwarded-for': '10.1.0.1' })).status, 200);
        fs.writeFileSync(path.join(gw.cwd, 'aigate.toml'), loadConfig(2).replace('rate_limit = 1000000', 'rate_limit = 999999\ncache_ttl = 60\nmax_connections = 77'));
        const ok = await deploy(gw);
        assert.equal(ok.status, 0, ok.stderr);
        assert.match(ok.stdout, /Changed: rate_limit, cache_ttl/);
        assert.match(ok.stdout, /needs a restart \(or --upgrade\): max_connections/);
        assert.equal((await messages(gw, 'c', { 'x-forwarded-for': '10.1.0.1' })).status, 429, 'the count carried over');

        const broken = '[aigate]\nrate_limit = 1000000\ncache_ttl = "soon"\n';
        fs.writeFileSync(path.join(gw.cwd, 'aigate.toml'), broken);
        const d = await deploy(gw);
        assert.equal(d.status, 1);
        assert.match(d.stderr, /aigate\.toml:3:13: /);
        assert.match(d.stderr, /not deployed/);
        // The server refuses it too, whichever way it comes.
        const r = await request(`${gw.adminUrl}/reload`, { method: 'POST' });
        assert.equal(r.status, 400);
        assert.match(r.json.errors.join('\n'), /aigate\.toml:3:13: /);
        gw.proc.kill('SIGHUP');
        await until(async () => (await reloads(gw, 'failure')) === 2, 10000, 'the refused SIGHUP reload');
        assert.equal(await reloads(gw), 1);
        // A server-side check the local one does not make (routes): refused by the server.
        fs.writeFileSync(path.join(gw.cwd, 'aigate.toml'), '[aigate.routes."/nope"]\nrate_limit = 3\n');
        const d2 = await deploy(gw);
        assert.equal(d2.status, 1);
        assert.match(d2.stderr, /aigate\.toml:1:1: aigate\.routes\."\/nope": no such AI route/);
        // Still generation 2, with its limit.
        assert.equal((await messages(gw, 'd', { 'x-forwarded-for': '10.1.0.1' })).status, 429);
        assert.equal(await limitInForce(gw, 2, '10.1.0.2'), 2);
        assert.match(gw.stderr, /reload refused: the configuration is unchanged \(generation 2\)/);
        const w = await request(`${gw.url}/api/generate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: { prompt: 'still here' } });
        assert.equal(w.status, 200);
    } finally {
        await gw.stop();
        await up.close();
    }
    assert.ok(!fs.existsSync(path.join(gw.cwd, '.aigate', 'aigate.pid')), 'the pid file goes with the server');
});

test('a reload that changes [[aigate.tasks]] restarts the tasks runner; one that does not leaves it', async () => {
    const up = await startFake();
    const tasks = (cron, prompt) => `[triggers]
crons = ["${cron}"]

[[aigate.tasks]]
name = "digest"
cron = "${cron}"
prompt = "${prompt}"

[aigate]
rate_limit = 1000000
`;
    const gw = await startGateway({ upstream: `http://127.0.0.1:${up.port}`, config: tasks('0 9 * * MON', 'Digest') });
    try {
        fs.writeFileSync(path.join(gw.cwd, 'aigate.toml'), tasks('30 7 * * *', 'Digest'));
        const d = await deploy(gw);
        assert.equal(d.status, 0, d.stderr);
        assert.match(d.stdout, /Changed: triggers\.crons, tasks/);
        assert.match(d.stdout, /Scheduled tasks: restarted/);
        assert.match(d.stdout, /schedule: 30 7 \* \* \*/);
        const list = await request(`${gw.adminUrl}/tasks`);
        assert.equal(list.status, 200);
        assert.equal(list.json[0].cron, '30 7 * * *');
        // The new runner runs.
        const run1 = await request(`${gw.adminUrl}/tasks/digest/run`, { method: 'POST', timeoutMs: 20000 });
        assert.equal(run1.status, 200, run1.body);
        assert.equal(run1.json.outcome, 'ok', run1.body);
        // A change the tasks do not read leaves the runner alone.
        fs.writeFileSync(path.join(gw.cwd, 'aigate.toml'), tasks('30 7 * * *', 'Digest').replace('rate_limit = 1000000', 'rate_limit = 999999'));
        const d2 = await deploy(gw);
        assert.equal(d2.status, 0, d2.stderr);
        assert.match(d2.stdout, /Scheduled tasks: unchanged/);
        // A broken task refuses the whole config, at its position.
        fs.writeFileSync(path.join(gw.cwd, 'aigate.toml'), tasks('61 7 * * *', 'Digest'));
        const d3 = await deploy(gw);
        assert.equal(d3.status, 1);
        assert.match(d3.stderr, /aigate\.toml:\d+:\d+: /);
        assert.equal((await request(`${gw.adminUrl}/tasks`)).json[0].cron, '30 7 * * *');
    } finally {
        await gw.stop();
        await up.close();
    }
});

test('sd_notify: READY=1 once listening, RELOADING=1 then READY=1 around a reload, STOPPING=1 on drain', async (t) => {
    if (!process.env.NOTIFY_SINK_BIN) return t.skip('NOTIFY_SINK_BIN is not set (cmake sets it)');
    const dir = tmpdir();
    const sock = path.join(dir, 'notify.sock');
    const sink = spawn(process.env.NOTIFY_SINK_BIN, [sock], { stdio: ['ignore', 'pipe', 'inherit'] });
    let got = '';
    sink.stdout.on('data', (d) => (got += d));
    try {
        await until(() => got.includes('listening\n'), 5000, 'the sink');
        const gw = await startGateway({ env: { NOTIFY_SOCKET: sock }, config: '[aigate]\n' });
        const lines = () => got.split('\n').filter((l) => l && l !== 'listening');
        await until(() => lines().includes('READY=1'), 5000, 'READY=1');
        gw.proc.kill('SIGHUP');
        await until(() => lines().length >= 3, 5000, 'the reload notifications');
        assert.match(lines()[1], /^RELOADING=1\|MONOTONIC_USEC=\d+$/);
        assert.equal(lines()[2], 'READY=1');
        // POST /reload too.
        const r = await request(`${gw.adminUrl}/reload`, { method: 'POST' });
        assert.equal(r.status, 200, r.body);
        assert.equal(r.json.generation, 3);
        await until(() => lines().length >= 5, 5000, 'the second reload');
        await gw.stop();
        await until(() => lines().includes('STOPPING=1'), 5000, 'STOPPING=1');
        assert.deepEqual(lines().map((l) => l.split('|')[0]), ['READY=1', 'RELOADING=1', 'READY=1', 'RELOADING=1', 'READY=1', 'STOPPING=1']);
    } finally {
        sink.kill();
    }
});

test('make install puts the binary, the unit, a config and the docs under DESTDIR; systemd-analyze accepts the unit', () => {
    const dest = tmpdir();
    const r = spawnSync('make', ['-s', '-C', ROOT, 'install', `DESTDIR=${dest}`, 'PREFIX=/usr', `INSTALL_BIN=${BIN}`], { encoding: 'utf8', timeout: 60000 });
    assert.equal(r.status, 0, r.stderr + r.stdout);
    const files = filesUnder(dest).map((p) => path.relative(dest, p));
    for (const f of ['usr/bin/aigate', 'usr/lib/systemd/system/aigate.service', 'etc/aigate/aigate.toml',
        'usr/share/doc/aigate/README.md', 'usr/share/doc/aigate/architecture.md', 'usr/share/doc/aigate/config.md'])
        assert.ok(files.includes(f), `${f} installed (got ${files.join(', ')})`);
    assert.ok(fs.statSync(path.join(dest, 'usr/bin/aigate')).mode & 0o111, 'the binary is executable');
    const unit = fs.readFileSync(path.join(dest, 'usr/lib/systemd/system/aigate.service'), 'utf8');
    for (const line of ['Type=notify', 'ExecStart=/usr/bin/aigate serve --config /etc/aigate/aigate.toml',
        'ExecReload=/usr/bin/aigate deploy --config /etc/aigate/aigate.toml', 'DynamicUser=yes', 'StateDirectory=aigate',
        'ProtectSystem=strict', 'NoNewPrivileges=yes', 'ReadWritePaths=/var/lib/aigate', 'CapabilityBoundingSet=',
        'SystemCallFilter=@system-service'])
        assert.ok(unit.split('\n').includes(line), `the unit has ${line}`);
    // The installed config is one the binary accepts.
    const check = run(['config', 'check', '--config', path.join(dest, 'etc/aigate/aigate.toml')]);
    assert.equal(check.status, 0, check.stderr);
    // A second install keeps an edited config.
    fs.writeFileSync(path.join(dest, 'etc/aigate/aigate.toml'), 'name = "mine"\n');
    const again = spawnSync('make', ['-s', '-C', ROOT, 'install', `DESTDIR=${dest}`, 'PREFIX=/usr', `INSTALL_BIN=${BIN}`], { encoding: 'utf8', timeout: 60000 });
    assert.equal(again.status, 0, again.stderr);
    assert.equal(fs.readFileSync(path.join(dest, 'etc/aigate/aigate.toml'), 'utf8'), 'name = "mine"\n');

    const analyze = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
    if (analyze.status !== 0) return; // not installed: the rest needs it
    // verify wants ExecStart's binary to exist: point it at the installed one.
    const unitDir = tmpdir();
    fs.writeFileSync(path.join(unitDir, 'aigate.service'), unit.replaceAll('/usr/bin/aigate', path.join(dest, 'usr/bin/aigate')));
    const v = spawnSync('systemd-analyze', ['verify', path.join(unitDir, 'aigate.service')], { encoding: 'utf8', timeout: 30000 });
    assert.equal(v.status, 0, v.stderr + v.stdout);
    assert.doesNotMatch(v.stderr, /aigate\.service/, v.stderr);
});

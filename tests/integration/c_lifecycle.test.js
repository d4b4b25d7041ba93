// SPDX-License-Identifier: MIT
//
// c_lifecycle.test.js: the CLI, configuration loading and errors, the seed's
// wrangler.toml, upstream down, and graceful shutdown with a request in flight.
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { BIN, startGateway, startFake, generate, tmpdir, until } = require('./lib.js');

const SEED_WRANGLER = `# wrangler.toml — Production AI Worker configuration
name = "my-ai-worker"
main = "src/index.js"
compatibility_date = "2026-01-01"
compatibility_flags = ["nodejs_compat"]
# KV namespace for session management and caching
[[kv_namespaces]]
binding = "CACHE"
id = "REPLACE_WITH_YOUR_KV_ID"
# R2 bucket for storing AI outputs and assets
[[r2_buckets]]
binding = "STORAGE"
bucket_name = "my-ai-outputs"
# Environment variables (non-secret)
[vars]
ENVIRONMENT = "production"
MAX_TOKENS = "1024"
DEFAULT_MODEL = "claude-haiku-4-5"
# Rate limiting (Cloudflare managed, free tier)
[[unsafe.bindings]]
type = "ratelimit"
name = "RATE_LIMITER"
namespace_id = "1001"
simple = { limit = 100, period = 60 }
`;

function run(args, opts = {}) {
    const env = { ...process.env, ...(opts.env || {}) };
    delete env.ANTHROPIC_API_KEY;
    return spawnSync(BIN, args, { cwd: opts.cwd || tmpdir(), env, encoding: 'utf8', timeout: 20000 });
}

test('--version and help', () => {
    const v = run(['--version']);
    assert.equal(v.status, 0);
    assert.match(v.stdout, /^aigate \d+\.\d+\.\d+\n$/);
    const h = run(['help']);
    assert.equal(h.status, 0);
    for (const word of ['dev', 'serve', 'config check', '--config', '--port', '--host', '--threads', '--upstream'])
        assert.ok(h.stdout.includes(word), `help mentions ${word}`);
    const bad = run(['frobnicate']);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /unknown command/);
});

test("the seed's wrangler.toml loads unchanged, found in the current folder", () => {
    const dir = tmpdir();
    fs.writeFileSync(path.join(dir, 'wrangler.toml'), SEED_WRANGLER);
    const r = run(['config', 'check'], { cwd: dir });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /wrangler\.toml: ok/);
    assert.doesNotMatch(r.stderr, /warning/, 'no warnings for the seed file');
});

test('aigate.toml wins over wrangler.toml, and --config over both', () => {
    const dir = tmpdir();
    fs.writeFileSync(path.join(dir, 'wrangler.toml'), SEED_WRANGLER);
    fs.writeFileSync(path.join(dir, 'aigate.toml'), '[aigate]\nport = 9999\n');
    assert.match(run(['config', 'check'], { cwd: dir }).stdout, /^aigate\.toml: ok/);
    fs.writeFileSync(path.join(dir, 'other.toml'), 'name = "x"\n');
    assert.match(run(['config', 'check', '--config', 'other.toml'], { cwd: dir }).stdout, /^other\.toml: ok/);
});

test('a bad config stops startup with file:line:col and a non-zero exit', () => {
    const dir = tmpdir();
    const cases = [
        ['[aigate]\nport = "eighty"\n', /bad\.toml:2:8: aigate\.port must be a number/],
        ['[aigate]\nthreads = 1\nport = 70000\n', /bad\.toml:3:8: aigate\.port = 70000 is out of range/],
        ['[vars]\nMAX_TOKENS = "lots"\n', /bad\.toml:2:14: vars\.MAX_TOKENS must be/],
        ['name = "x"\nname = "y"\n', /bad\.toml:2:\d+: .*duplicate/i],
        ['[aigate\n', /bad\.toml:1:\d+: /],
        ['[aigate]\nupstream = "ftp://x"\n', /bad\.toml:2:12: aigate\.upstream must be an http/],
    ];
    for (const [text, re] of cases) {
        fs.writeFileSync(path.join(dir, 'bad.toml'), text);
        for (const cmd of [['config', 'check'], ['serve', '--port', '0']]) {
            const r = run([...cmd, '--config', 'bad.toml'], { cwd: dir });
            assert.notEqual(r.status, 0, `${cmd[0]} with ${JSON.stringify(text)}`);
            assert.match(r.stderr, re);
        }
    }
    // All errors are reported at once.
    fs.writeFileSync(path.join(dir, 'bad.toml'), '[aigate]\nport = "a"\nthreads = "b"\n');
    const r = run(['config', 'check', '--config', 'bad.toml'], { cwd: dir });
    assert.match(r.stderr, /:2:8: /);
    assert.match(r.stderr, /:3:11: /);
    const missing = run(['config', 'check', '--config', 'nope.toml'], { cwd: dir });
    assert.notEqual(missing.status, 0);
    assert.match(missing.stderr, /nope\.toml: cannot read/);
});

test('unknown keys are warnings, not errors', () => {
    const dir = tmpdir();
    fs.writeFileSync(path.join(dir, 'aigate.toml'), 'colour = "blue"\n[aigate]\nportt = 1\n');
    const r = run(['config', 'check'], { cwd: dir });
    assert.equal(r.status, 0);
    assert.match(r.stderr, /aigate\.toml:1:\d+: warning: unknown key colour/);
    assert.match(r.stderr, /aigate\.toml:3:\d+: warning: unknown key aigate\.portt/);
});

test('upstream down gives 502 and the server keeps running', async () => {
    // A port with nothing listening: bind one, note it, close it.
    const srv = net.createServer();
    await new Promise((r) => srv.listen(0, '127.0.0.1', r));
    const port = srv.address().port;
    await new Promise((r) => srv.close(r));
    const gw = await startGateway({ upstream: `http://127.0.0.1:${port}` });
    try {
        for (let i = 0; i < 3; i++) {
            const res = await generate(gw, { prompt: 'anyone there?' });
            assert.equal(res.status, 502);
            assert.deepEqual(res.json, { error: 'AI service error' });
        }
        assert.match(gw.stderr, /upstream failed: .*(connect|Connection refused)/i);
    } finally {
        await gw.stop();
    }
});

test('SIGTERM with a request in flight: it completes, then exit 0', async () => {
    const up = await startFake({ latencyMs: 700 });
    const gw = await startGateway({ upstream: `http://127.0.0.1:${up.port}` });
    try {
        const pending = generate(gw, { prompt: 'finish me before you go' });
        await up.waitFor('requests', 1, 5000);
        gw.proc.kill('SIGTERM');
        const res = await pending;
        assert.equal(res.status, 200, res.body);
        assert.match(res.json.output, /finish me/);
        assert.equal(res.headers.connection, 'close');
        const exit = await gw.exitPromise;
        assert.equal(exit.code, 0);
        // New connections are refused once draining ends.
        await assert.rejects(generate(gw, { prompt: 'too late' }));
    } finally {
        await gw.stop();
        await up.close();
    }
});

test('dev uses the embedded defaults when no config file exists', async () => {
    const up = await startFake();
    const gw = await startGateway({ command: 'dev', noConfig: true, upstream: `http://127.0.0.1:${up.port}` });
    try {
        assert.match(gw.stderr, /config \(embedded defaults\)/);
        const res = await generate(gw, { prompt: 'defaults' });
        assert.equal(res.status, 200, res.body);
        const sent = up.stats().lastRequest.body;
        assert.equal(sent.model, 'claude-haiku-4-5');
        assert.equal(sent.max_tokens, 1024);
    } finally {
        await gw.stop();
        await up.close();
    }
});

test('--threads runs several loops that all serve', async () => {
    const up = await startFake();
    const gw = await startGateway({ upstream: `http://127.0.0.1:${up.port}`, threads: 4 });
    try {
        assert.match(gw.stderr, /4 threads/);
        const all = await Promise.all(Array.from({ length: 40 }, (_, i) => generate(gw, { prompt: `p${i}` })));
        all.forEach((r, i) => {
            assert.equal(r.status, 200);
            assert.match(r.json.output, new RegExp(`p${i}\\b`));
        });
        await until(() => up.stats().requests === 40, 2000, 'all upstream requests counted');
    } finally {
        await gw.stop();
        await up.close();
    }
});

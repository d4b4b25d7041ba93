// SPDX-License-Identifier: MIT
//
// p_hardening.test.js: the hardening issue's CLI, config, secrets and disk items
// as a new user meets them: every verb answers --help and -h, an unknown flag is
// named, config check reports at file:line:col and warns about near-miss vars,
// credentials with control bytes are refused and never printed, and a small
// cache keeps caching new answers within its bound.
'use strict';

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { BIN, startGateway, startFake, generate, tmpdir, until } = require('./lib.js');

const SANITIZER = /AddressSanitizer|LeakSanitizer|runtime error:/;
const made = [];
function mkdir() {
    const d = tmpdir();
    made.push(d);
    return d;
}
after(() => {
    for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});

// The CLI where it needs no server (help, config check, secret put).
function cli(args, { input, cwd, env: extra } = {}) {
    const env = { ...process.env, ASAN_OPTIONS: process.env.ASAN_OPTIONS || 'detect_leaks=1', ...(extra || {}) };
    delete env.ANTHROPIC_API_KEY;
    const r = spawnSync(BIN, args, { cwd: cwd || mkdir(), env, input, timeout: 30000 });
    assert.equal(r.error, undefined, String(r.error));
    const res = { status: r.status, out: r.stdout.toString('utf8'), err: r.stderr.toString('utf8') };
    assert.doesNotMatch(res.err, SANITIZER, res.err);
    return res;
}

const VERBS = [
    ['dev'], ['serve'], ['config'], ['config', 'check'], ['config', 'reference'], ['version'], ['help'],
    ['kv'], ['kv', 'namespace'], ['kv', 'namespace', 'create'], ['kv', 'namespace', 'list'],
    ['kv', 'key'], ['kv', 'key', 'put'], ['kv', 'key', 'get'], ['kv', 'key', 'list'], ['kv', 'key', 'delete'],
    ['r2'], ['r2', 'bucket'], ['r2', 'bucket', 'create'], ['r2', 'bucket', 'list'], ['r2', 'bucket', 'delete'],
    ['r2', 'object'], ['r2', 'object', 'put'], ['r2', 'object', 'get'], ['r2', 'object', 'list'],
    ['r2', 'object', 'delete'], ['secret'], ['secret', 'put'], ['secret', 'list'], ['secret', 'delete'],
    ['stats'], ['cron'], ['cron', 'list'], ['cron', 'run'], ['tail'],
];

test('every verb answers --help and -h with its usage on stdout', () => {
    for (const verb of VERBS) {
        for (const flag of ['--help', '-h']) {
            const r = cli([...verb, flag]);
            assert.equal(r.status, 0, `aigate ${verb.join(' ')} ${flag}: exit ${r.status}\n${r.err}`);
            assert.match(r.out, /usage: aigate/, `aigate ${verb.join(' ')} ${flag}:\n${r.out}`);
            assert.doesNotMatch(r.err, /needs a value/);
        }
    }
});

test('an unknown flag is named', () => {
    for (const verb of [['dev'], ['serve'], ['config', 'check'], ['stats'], ['kv', 'key', 'list'], ['r2', 'bucket', 'list']]) {
        const r = cli([...verb, '--frobnicate=1']);
        assert.equal(r.status, 2, `aigate ${verb.join(' ')}: ${r.err}`);
        assert.match(r.err, /unknown option '--frobnicate'/, `aigate ${verb.join(' ')}: ${r.err}`);
    }
    const short = cli(['dev', '-x']);
    assert.equal(short.status, 2);
    assert.match(short.err, /unknown option '-x'/);
    const missing = cli(['serve', '--port']);
    assert.equal(missing.status, 2);
    assert.match(missing.err, /--port needs a value/);
});

test('config check: a bad trusted proxy at file:line:col, as the server refuses it', async () => {
    const cwd = mkdir();
    fs.writeFileSync(path.join(cwd, 'aigate.toml'), '[aigate]\ntrusted_proxies = ["10.0.0.1",\n  "not-an-ip"]\n');
    const r = cli(['config', 'check'], { cwd });
    assert.equal(r.status, 1, r.err);
    assert.match(r.err, /aigate\.toml:3:3: aigate\.trusted_proxies\[1\]: 'not-an-ip' is not an address or CIDR/);
    // The server refuses it with the same words, before it listens.
    const gw = await startGateway({ cwd, config: '[aigate]\ntrusted_proxies = ["10.0.0.1",\n  "not-an-ip"]\n' }).catch((e) => e);
    assert.ok(gw instanceof Error, 'the server started with a bad trusted proxy');
    assert.match(gw.message, /aigate\.toml:\d+:3: aigate\.trusted_proxies\[1\]: 'not-an-ip' is not an address or CIDR/);
});

test('config check warns about vars that look like ours and an unpriced DEFAULT_MODEL', () => {
    const cwd = mkdir();
    fs.writeFileSync(path.join(cwd, 'aigate.toml'), '[vars]\nMAX_TOKEN = "512"\nDEFAULT_MODEL = "claude-x-9"\nAPP_NAME = "mine"\n');
    const r = cli(['config', 'check'], { cwd });
    assert.equal(r.status, 0, r.err);
    assert.match(r.err, /aigate\.toml:2:\d+: warning: vars\.MAX_TOKEN is not read by aigate: did you mean MAX_TOKENS\?/);
    assert.match(r.err, /aigate\.toml:3:\d+: warning: vars\.DEFAULT_MODEL "claude-x-9" has no price/);
    assert.doesNotMatch(r.err, /APP_NAME/);
});

test('secret put trims one trailing newline and refuses other control bytes', () => {
    const cwd = mkdir();
    const dir = path.join(cwd, 'data');
    const ok = cli(['secret', 'put', 'K1', '--data-dir', dir], { input: 'sk-ant-fine\r\n' });
    assert.equal(ok.status, 0, ok.err);
    assert.match(fs.readFileSync(path.join(dir, 'secrets'), 'utf8'), /^K1="sk-ant-fine"$/m);
    const cr = cli(['secret', 'put', 'K2', '--data-dir', dir], { input: 'sk-ant-a\rX-Evil: 1\n' });
    assert.equal(cr.status, 1);
    assert.match(cr.err, /byte 9 of the value is a control byte \(0x0d\)/);
    assert.doesNotMatch(cr.err, /sk-ant|Evil/);
    const esc = cli(['secret', 'put', 'K3', '--data-dir', dir], { input: 'a\x1bb' });
    assert.equal(esc.status, 1);
    assert.doesNotMatch(fs.readFileSync(path.join(dir, 'secrets'), 'utf8'), /K2|K3/);
});

test('an upstream key with CR/LF is refused, never sent, never printed', async () => {
    const up = await startFake();
    const gw = await startGateway({ upstream: `http://127.0.0.1:${up.port}`, key: 'sk-ant-evil\r\nX-Injected: 1' });
    try {
        assert.match(gw.stderr, /refusing the secret ANTHROPIC_API_KEY from the environment: byte 12 is a control byte/);
        assert.doesNotMatch(gw.stderr, /sk-ant-evil|X-Injected/);
        const r = await generate(gw, { prompt: 'hi' });
        assert.equal(r.status, 503, r.body);
        assert.equal(up.stats().requests, 0);
    } finally {
        await gw.stop();
        await up.close();
    }
});

test('the start-up line does not print credentials of the upstream URL', async () => {
    const up = await startFake();
    const gw = await startGateway({ upstream: `http://proxyuser:hunter2pass@127.0.0.1:${up.port}` });
    try {
        assert.match(gw.stderr, /upstream http:\/\/\*\*\*@127\.0\.0\.1:\d+/);
        assert.doesNotMatch(gw.stderr, /hunter2pass|proxyuser/);
    } finally {
        await gw.stop();
        await up.close();
    }
});

test('a 1 MiB cache takes 3 MiB of answers: it stays within its bound and keeps caching new ones', async () => {
    const up = await startFake();
    const data = mkdir();
    const gw = await startGateway({
        upstream: `http://127.0.0.1:${up.port}`,
        config: `[aigate]\ndata_dir = "${data}"\ncache_max_bytes = 1048576\nprompt_max_length = 100000\n`,
    });
    const file = path.join(data, 'kv', 'CACHE', 'data.mdb');
    const prompt = (i) => `p${i} ` + 'x'.repeat(30000);
    try {
        for (let i = 0; i < 100; i++) {
            const r = await generate(gw, { prompt: prompt(i) });
            assert.equal(r.status, 200, r.body);
            if (fs.existsSync(file)) assert.ok(fs.statSync(file).size <= 1048576, `cache file ${fs.statSync(file).size} bytes`);
        }
        // The newest answers are cached (fills are off the loop: poll).
        for (const i of [99, 98, 97]) {
            await until(async () => (await generate(gw, { prompt: prompt(i) })).json.cached === true, 10000, `answer ${i} cached`);
        }
        const first = await generate(gw, { prompt: prompt(0) });
        assert.equal(first.json.cached, false, 'the oldest answer was evicted');
        assert.ok(fs.statSync(file).size <= 1048576);
        assert.doesNotMatch(gw.stderr, /cache fill failed/);
    } finally {
        await gw.stop();
        await up.close();
    }
});

test('r2 object put streams: a 64 MiB object round-trips and the upload does not hold it in memory', () => {
    const crypto = require('node:crypto');
    const cwd = mkdir();
    const dir = path.join(cwd, 'data');
    assert.equal(cli(['r2', 'bucket', 'create', 'big', '--data-dir', dir]).status, 0);
    // 64 MiB that do not repeat by block: a counter in every 16 bytes.
    const size = 64 << 20;
    const buf = Buffer.alloc(size);
    for (let i = 0; i < size; i += 16) buf.writeUInt32LE(i, i);
    const src = path.join(cwd, 'src.bin');
    fs.writeFileSync(src, buf);
    const want = crypto.createHash('sha256').update(buf).digest('hex');
    const md5 = crypto.createHash('md5').update(buf).digest('hex');
    // Peak RSS of the upload, where /usr/bin/time is there (Debian's `time`); a
    // loose bound only without ASan, whose shadow memory is no measure.
    const asan = fs.readFileSync(BIN).includes('__asan_init');
    const timed = fs.existsSync('/usr/bin/time') && !asan;
    const args = ['r2', 'object', 'put', 'big/blob.bin', '--file', src, '--data-dir', dir, '--json'];
    const env = { ...process.env, ASAN_OPTIONS: process.env.ASAN_OPTIONS || 'detect_leaks=1' };
    const r = spawnSync(timed ? '/usr/bin/time' : BIN, timed ? ['-f', 'maxrss-kib=%M', BIN, ...args] : args, { cwd, env, timeout: 120000 });
    assert.equal(r.status, 0, r.stderr.toString());
    const info = JSON.parse(r.stdout.toString());
    assert.equal(info.size, size);
    assert.equal(info.etag, md5);
    if (timed) {
        const kib = Number(/maxrss-kib=(\d+)/.exec(r.stderr.toString())[1]);
        assert.ok(kib * 1024 < size / 2, `the upload of ${size} bytes peaked at ${kib} KiB`);
    }
    // From stdin too (a pipe: the length is known only at its end).
    const piped = cli(['r2', 'object', 'put', 'big/piped.bin', '--data-dir', dir, '--json'], { cwd, input: buf.subarray(0, 3 << 20) });
    assert.equal(piped.status, 0, piped.err);
    assert.equal(JSON.parse(piped.out).size, 3 << 20);
    const out = path.join(cwd, 'out.bin');
    assert.equal(cli(['r2', 'object', 'get', 'big/blob.bin', '--file', out, '--data-dir', dir], { cwd }).status, 0);
    assert.equal(crypto.createHash('sha256').update(fs.readFileSync(out)).digest('hex'), want);
    const head = JSON.parse(cli(['r2', 'object', 'list', 'big', '--data-dir', dir, '--json'], { cwd }).out);
    assert.deepEqual(head.objects.map((o) => [o.key, o.size]), [['blob.bin', size], ['piped.bin', 3 << 20]]);
});

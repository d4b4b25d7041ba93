// SPDX-License-Identifier: MIT
//
// e_cli.test.js: the storage CLI (`aigate kv`, `aigate r2`, `aigate secret`)
// run as a black box WHILE a gateway serves the same data folder: round trips,
// --json shapes, limits, traversal, secrets never echoed, and exit codes.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, spawnSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { BIN, startGateway, startFake, generate, request, tmpdir, until } = require('./lib.js');

const SANITIZER = /AddressSanitizer|LeakSanitizer|runtime error:/;

let up; // its upstream
let gw; // the running server
let dataDir; // its data_dir, shared with the CLI
let configPath;
let cliCwd; // the CLI runs elsewhere: it must find the data folder through --config
const made = []; // temp folders to remove at the end

function mkdir() {
    const d = tmpdir();
    made.push(d);
    return d;
}

before(async () => {
    dataDir = mkdir();
    const gwCwd = mkdir();
    up = await startFake();
    gw = await startGateway({ cwd: gwCwd, upstream: `http://127.0.0.1:${up.port}`, config: `[aigate]\ndata_dir = "${dataDir}"\n` });
    configPath = path.join(gwCwd, 'aigate.toml');
    cliCwd = mkdir();
});

after(async () => {
    // The server served throughout and still stops cleanly.
    assert.equal(gw.exited, null, gw.stderr);
    await gw.stop();
    await up.close();
    for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});

// Runs the CLI with --config. Returns {status, stdout (Buffer), out (text), err (text)}.
function cli(args, { input, config = true } = {}) {
    const env = { ...process.env, ASAN_OPTIONS: process.env.ASAN_OPTIONS || 'detect_leaks=1' };
    delete env.ANTHROPIC_API_KEY;
    const r = spawnSync(BIN, config ? [...args, '--config', configPath] : args, {
        cwd: cliCwd,
        env,
        input,
        timeout: 30000,
    });
    assert.equal(r.error, undefined, String(r.error));
    const res = { status: r.status, stdout: r.stdout, out: r.stdout.toString('utf8'), err: r.stderr.toString('utf8') };
    assert.doesNotMatch(res.err, SANITIZER, res.err);
    return res;
}

function ok(args, opts) {
    const r = cli(args, opts);
    assert.equal(r.status, 0, `aigate ${args.join(' ')}: exit ${r.status}\n${r.err}`);
    return r;
}

function json(args, opts) {
    return JSON.parse(ok([...args, '--json'], opts).out);
}

test('kv namespace create and list', () => {
    // The server may hold namespaces of its own (its cache): look only at ours.
    const mine = (names) => names.filter((n) => n.startsWith('NS_'));
    const r = ok(['kv', 'namespace', 'create', 'NS_ONE']);
    assert.match(r.out, /\{ binding = "NS_ONE", id = "NS_ONE" \}/);
    assert.ok(fs.statSync(path.join(dataDir, 'kv', 'NS_ONE')).isDirectory());
    const j = json(['kv', 'namespace', 'create', 'NS_TWO']);
    assert.deepEqual(j, { binding: 'NS_TWO', id: 'NS_TWO', path: path.join(dataDir, 'kv', 'NS_TWO') });

    const lines = ok(['kv', 'namespace', 'list']).out.split('\n');
    assert.equal(lines.pop(), ''); // one name per line, newline-terminated
    assert.deepEqual(mine(lines), ['NS_ONE', 'NS_TWO']);
    const list = json(['kv', 'namespace', 'list']);
    assert.deepEqual(list.map((n) => n.binding), lines); // same names, same (sorted) order
    assert.deepEqual(
        list.filter((n) => n.binding.startsWith('NS_')),
        [
            { binding: 'NS_ONE', id: 'NS_ONE' },
            { binding: 'NS_TWO', id: 'NS_TWO' },
        ]
    );

    const again = cli(['kv', 'namespace', 'create', 'NS_ONE']);
    assert.equal(again.status, 1);
    assert.match(again.err, /already exists/);
    const bad = cli(['kv', 'namespace', 'create', 'no/slash']);
    assert.equal(bad.status, 1);
    assert.match(bad.err, /invalid KV binding name/);
    assert.equal(fs.existsSync(path.join(dataDir, 'kv', 'no')), false);
});

test('a namespace the server holds open is usable from the CLI', async () => {
    // The gateway's response cache (binding CACHE by default): make the server
    // write an entry, then read and write beside it from the CLI. The fill lands
    // off the server's loop after the answer, so poll the store for it.
    const prompt = 'an answer for the CLI to find';
    const miss = await generate(gw, { prompt });
    assert.equal(miss.status, 200, miss.body);
    assert.equal(miss.json.cached, false);
    let filled; // the server's entry, as the CLI reads it
    await until(() => {
        const list = cli(['kv', 'key', 'list', '--binding', 'CACHE', '--json']);
        if (list.status !== 0) return false; // no CACHE namespace yet
        for (const { name } of JSON.parse(list.out).keys) {
            const value = ok(['kv', 'key', 'get', name, '--binding', 'CACHE']).out;
            if (value.includes(miss.json.output)) filled = name;
        }
        return filled !== undefined;
    }, 10000, "the server's cache entry, seen from the CLI");
    assert.match(ok(['kv', 'namespace', 'list']).out, /^CACHE$/m);
    ok(['kv', 'key', 'put', 'cli-probe', 'v', '--binding', 'CACHE', '--ttl', '60']);
    assert.equal(ok(['kv', 'key', 'get', 'cli-probe', '--binding', 'CACHE']).out, 'v');
    assert.ok(json(['kv', 'key', 'list', '--binding', 'CACHE']).keys.some((k) => k.name === 'cli-probe'));
    ok(['kv', 'key', 'delete', 'cli-probe', '--binding', 'CACHE']);
    assert.equal(cli(['kv', 'key', 'get', 'cli-probe', '--binding', 'CACHE']).status, 1);
    // The server's entry survived the CLI's writes, and the server still answers from it.
    assert.ok(json(['kv', 'key', 'list', '--binding', 'CACHE']).keys.some((k) => k.name === filled));
    const hit = await generate(gw, { prompt });
    assert.equal(hit.json.cached, true);
    assert.equal(hit.json.output, miss.json.output);
});

test('kv key put/get/list/delete round trip', () => {
    ok(['kv', 'namespace', 'create', 'KEYS']);
    const before = Math.floor(Date.now() / 1000);
    const put = ok(['kv', 'key', 'put', 'user:1', 'hello world', '--binding', 'KEYS', '--ttl', '3600', '--metadata', '{"plan":"pro","n":2}']);
    assert.match(put.out, /Wrote key "user:1"/);
    assert.doesNotMatch(put.out, /hello world/); // values are not echoed

    // Human get: the raw bytes, nothing added.
    assert.equal(ok(['kv', 'key', 'get', 'user:1', '--binding', 'KEYS']).out, 'hello world');
    const g = json(['kv', 'key', 'get', 'user:1', '--binding', 'KEYS']);
    assert.deepEqual(Object.keys(g).sort(), ['expiration', 'metadata', 'value']);
    assert.equal(g.value, 'hello world');
    assert.deepEqual(g.metadata, { plan: 'pro', n: 2 });
    assert.ok(g.expiration >= before + 3600 && g.expiration <= Math.ceil(Date.now() / 1000) + 3600, String(g.expiration));

    // stdin (binary, NUL and newline included) and --path; --expiration.
    const bin = Buffer.from([0, 1, 2, 10, 13, 0xff, 0, 0x41, 10]);
    ok(['kv', 'key', 'put', 'user:2', '-', '--binding', 'KEYS'], { input: bin });
    assert.deepEqual(ok(['kv', 'key', 'get', 'user:2', '--binding', 'KEYS']).stdout, bin);
    const file = path.join(cliCwd, 'value.txt');
    fs.writeFileSync(file, 'from a file\n');
    const exp = Math.floor(Date.now() / 1000) + 7200;
    ok(['kv', 'key', 'put', 'user:3', '--path', file, '--binding', 'KEYS', '--expiration', String(exp)]);
    assert.equal(ok(['kv', 'key', 'get', 'user:3', '--binding', 'KEYS']).out, 'from a file\n');
    const g3 = json(['kv', 'key', 'get', 'user:3', '--binding', 'KEYS']);
    assert.deepEqual(g3, { value: 'from a file\n', metadata: null, expiration: exp });
    ok(['kv', 'key', 'put', 'other', 'x', '--binding', 'KEYS']);

    // Workers-like list: expiration/metadata only when set; cursor only while incomplete.
    const all = json(['kv', 'key', 'list', '--binding', 'KEYS']);
    assert.equal(all.list_complete, true);
    assert.equal('cursor' in all, false);
    assert.deepEqual(all.keys.map((k) => k.name), ['other', 'user:1', 'user:2', 'user:3']);
    assert.deepEqual(all.keys[0], { name: 'other' });
    assert.deepEqual(all.keys[1], { name: 'user:1', expiration: g.expiration, metadata: { plan: 'pro', n: 2 } });
    assert.deepEqual(all.keys[3], { name: 'user:3', expiration: exp });
    assert.equal(ok(['kv', 'key', 'list', '--binding', 'KEYS']).out, 'other\nuser:1\nuser:2\nuser:3\n');

    const p1 = json(['kv', 'key', 'list', '--binding', 'KEYS', '--prefix', 'user:', '--limit', '2']);
    assert.deepEqual(p1.keys.map((k) => k.name), ['user:1', 'user:2']);
    assert.equal(p1.list_complete, false);
    assert.equal(typeof p1.cursor, 'string');
    const p2 = json(['kv', 'key', 'list', '--binding', 'KEYS', '--prefix', 'user:', '--limit', '2', '--cursor', p1.cursor]);
    assert.deepEqual(p2.keys.map((k) => k.name), ['user:3']);
    assert.equal(p2.list_complete, true);

    // delete; a missing key is exit 1 with a clear message.
    assert.deepEqual(json(['kv', 'key', 'delete', 'user:1', '--binding', 'KEYS']), { ok: true, binding: 'KEYS', key: 'user:1' });
    const miss = cli(['kv', 'key', 'get', 'user:1', '--binding', 'KEYS']);
    assert.equal(miss.status, 1);
    assert.equal(miss.out, '');
    assert.match(miss.err, /key "user:1" not found in KV namespace "KEYS"/);
    assert.deepEqual(json(['kv', 'key', 'list', '--binding', 'KEYS', '--prefix', 'user:']).keys.map((k) => k.name), ['user:2', 'user:3']);
});

test('kv limits and unknown bindings', () => {
    ok(['kv', 'namespace', 'create', 'LIMITS']);
    const k512 = 'k'.repeat(512);
    ok(['kv', 'key', 'put', k512, 'v', '--binding', 'LIMITS']);
    assert.equal(ok(['kv', 'key', 'get', k512, '--binding', 'LIMITS']).out, 'v');
    const long = cli(['kv', 'key', 'put', 'k'.repeat(513), 'v', '--binding', 'LIMITS']);
    assert.equal(long.status, 1);
    assert.match(long.err, /longer than 512 bytes/);
    assert.equal(json(['kv', 'key', 'list', '--binding', 'LIMITS']).keys.length, 1);

    const meta = cli(['kv', 'key', 'put', 'm', 'v', '--binding', 'LIMITS', '--metadata', '{not json']);
    assert.equal(meta.status, 1);
    assert.match(meta.err, /metadata is not valid JSON/);

    // put to a binding nobody created fails with the command that fixes it, and creates nothing.
    const unknown = cli(['kv', 'key', 'put', 'a', 'b', '--binding', 'NOPE']);
    assert.equal(unknown.status, 1);
    assert.match(unknown.err, /aigate kv namespace create NOPE/);
    assert.equal(fs.existsSync(path.join(dataDir, 'kv', 'NOPE')), false);
});

test('r2 buckets and objects, binary round trip, delimiter rollups', () => {
    const c = ok(['r2', 'bucket', 'create', 'ai-outputs']);
    assert.match(c.out, /bucket_name = "ai-outputs"/);
    ok(['r2', 'bucket', 'create', 'logs']);
    // The running server holds its usage-log bucket ("usage-logs") in the same folder.
    assert.equal(ok(['r2', 'bucket', 'list']).out, 'ai-outputs\nlogs\nusage-logs\n');
    assert.deepEqual(json(['r2', 'bucket', 'list']), [{ name: 'ai-outputs' }, { name: 'logs' }, { name: 'usage-logs' }]);
    assert.equal(cli(['r2', 'bucket', 'create', 'logs']).status, 1);
    const badName = cli(['r2', 'bucket', 'create', 'Bad_Name']);
    assert.equal(badName.status, 1);
    assert.match(badName.err, /invalid bucket name/);

    // Binary content with NUL bytes, from a file, comes back byte-identical.
    const blob = Buffer.concat([crypto.randomBytes(70000), Buffer.alloc(300), Buffer.from('\0end\n')]);
    const src = path.join(cliCwd, 'blob.bin');
    fs.writeFileSync(src, blob);
    const up = json(['r2', 'object', 'put', 'ai-outputs/runs/2025/blob.bin', '--file', src, '--content-type', 'application/octet-stream']);
    assert.equal(up.key, 'runs/2025/blob.bin');
    assert.equal(up.size, blob.length);
    assert.equal(up.etag, crypto.createHash('md5').update(blob).digest('hex'));
    assert.equal(up.httpMetadata.contentType, 'application/octet-stream');
    assert.match(up.uploaded, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);

    const got = ok(['r2', 'object', 'get', 'ai-outputs/runs/2025/blob.bin']);
    assert.ok(got.stdout.equals(blob), 'stdout differs from the uploaded bytes');
    const dst = path.join(cliCwd, 'copy.bin');
    ok(['r2', 'object', 'get', 'ai-outputs/runs/2025/blob.bin', '--file', dst]);
    assert.ok(fs.readFileSync(dst).equals(blob), '--file copy differs');
    const head = json(['r2', 'object', 'get', 'ai-outputs/runs/2025/blob.bin']);
    assert.equal(head.size, blob.length);
    assert.equal(head.etag, up.etag);

    // stdin upload, and a layout for the delimiter.
    ok(['r2', 'object', 'put', 'ai-outputs/runs/2025/b.json'], { input: '{"b":1}' });
    ok(['r2', 'object', 'put', 'ai-outputs/runs/top.json'], { input: '{}' });
    ok(['r2', 'object', 'put', 'ai-outputs/readme.txt', '--file', '-'], { input: 'hi\n' });
    assert.equal(ok(['r2', 'object', 'get', 'ai-outputs/readme.txt']).out, 'hi\n');

    const root = json(['r2', 'object', 'list', 'ai-outputs', '--delimiter', '/']);
    assert.deepEqual(root.delimitedPrefixes, ['runs/']);
    assert.deepEqual(root.objects.map((o) => o.key), ['readme.txt']);
    assert.equal(root.truncated, false);
    const runs = json(['r2', 'object', 'list', 'ai-outputs', '--prefix', 'runs/', '--delimiter', '/']);
    assert.deepEqual(runs.delimitedPrefixes, ['runs/2025/']);
    assert.deepEqual(runs.objects.map((o) => o.key), ['runs/top.json']);
    const flat = json(['r2', 'object', 'list', 'ai-outputs']);
    assert.deepEqual(flat.objects.map((o) => o.key), ['readme.txt', 'runs/2025/b.json', 'runs/2025/blob.bin', 'runs/top.json']);
    assert.deepEqual(flat.delimitedPrefixes, []);
    const page = json(['r2', 'object', 'list', 'ai-outputs', '--limit', '3']);
    assert.equal(page.objects.length, 3);
    assert.equal(page.truncated, true);
    const rest = json(['r2', 'object', 'list', 'ai-outputs', '--limit', '3', '--cursor', page.cursor]);
    assert.deepEqual(rest.objects.map((o) => o.key), ['runs/top.json']);
    const human = ok(['r2', 'object', 'list', 'ai-outputs', '--delimiter', '/']).out.split('\n');
    assert.match(human[0], /PRE\s+runs\/$/);
    assert.match(human[1], /\s3\s+readme\.txt$/);

    // delete; then get is exit 1 and --file is not created.
    ok(['r2', 'object', 'delete', 'ai-outputs/runs/2025/blob.bin']);
    const gone = cli(['r2', 'object', 'get', 'ai-outputs/runs/2025/blob.bin', '--file', path.join(cliCwd, 'never.bin')]);
    assert.equal(gone.status, 1);
    assert.match(gone.err, /not found/);
    assert.equal(fs.existsSync(path.join(cliCwd, 'never.bin')), false);

    const noBucket = cli(['r2', 'object', 'put', 'missing-bucket/x', '--file', src]);
    assert.equal(noBucket.status, 1);
    assert.match(noBucket.err, /aigate r2 bucket create missing-bucket/);
});

test('r2 refuses traversal keys', () => {
    const src = path.join(cliCwd, 'evil.txt');
    fs.writeFileSync(src, 'evil');
    for (const target of ['logs/../x', 'logs/a/../../x', 'logs//etc/passwd', 'logs/./x']) {
        const r = cli(['r2', 'object', 'put', target, '--file', src]);
        assert.equal(r.status, 1, target);
        assert.match(r.err, /"\." or "\.\." segment/, target);
    }
    assert.equal(fs.existsSync(path.join(dataDir, 'r2', 'x')), false);
    assert.equal(fs.existsSync(path.join(dataDir, 'x')), false);
    const get = cli(['r2', 'object', 'get', 'logs/../../secrets']);
    assert.equal(get.status, 1);
    assert.equal(get.out, '');
    assert.deepEqual(json(['r2', 'object', 'list', 'logs']).objects, []);
});

test('secret put/list/delete never shows the value', () => {
    const value = 'sk-ant-cli-TOP-SECRET-0123456789';
    const put = ok(['secret', 'put', 'ANTHROPIC_API_KEY'], { input: value + '\n' });
    assert.ok(!put.out.includes(value) && !put.err.includes(value), 'value echoed');
    const file = path.join(dataDir, 'secrets');
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    assert.equal(fs.statSync(dataDir).isDirectory(), true);
    // Stored without the trailing newline.
    assert.match(fs.readFileSync(file, 'utf8'), new RegExp(`^ANTHROPIC_API_KEY="${value}"$`, 'm'));

    // A value with newlines round-trips into one file line.
    ok(['secret', 'put', 'PEM_KEY'], { input: '-----BEGIN-----\nAAAA\n-----END-----\n' });
    const list = ok(['secret', 'list']);
    assert.equal(list.out, 'ANTHROPIC_API_KEY\nPEM_KEY\n');
    assert.ok(!list.out.includes(value) && !list.err.includes(value));
    const lj = json(['secret', 'list']);
    assert.deepEqual(lj, [
        { name: 'ANTHROPIC_API_KEY', type: 'secret_text' },
        { name: 'PEM_KEY', type: 'secret_text' },
    ]);
    assert.ok(!JSON.stringify(lj).includes(value));
    assert.match(fs.readFileSync(file, 'utf8'), /^PEM_KEY="-----BEGIN-----\\nAAAA\\n-----END-----"$/m);
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);

    const badName = cli(['secret', 'put', '1BAD-NAME'], { input: 'x' });
    assert.equal(badName.status, 1);
    assert.match(badName.err, /invalid secret name/);
    const empty = cli(['secret', 'put', 'EMPTY'], { input: '\n' });
    assert.equal(empty.status, 1);
    assert.match(empty.err, /empty/);
    const nul = cli(['secret', 'put', 'NUL'], { input: Buffer.from('a\0b') });
    assert.equal(nul.status, 1);

    assert.deepEqual(json(['secret', 'delete', 'PEM_KEY']), { ok: true, name: 'PEM_KEY' });
    assert.equal(ok(['secret', 'list']).out, 'ANTHROPIC_API_KEY\n');
    const again = cli(['secret', 'delete', 'PEM_KEY']);
    assert.equal(again.status, 1);
    assert.match(again.err, /no secret PEM_KEY/);
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    // No temp file was left in the data folder.
    assert.deepEqual(fs.readdirSync(dataDir).filter((n) => n.includes('secrets')), ['secrets']);
});

// At a terminal the value is typed after a prompt with echo off. script(1)
// gives the CLI a pseudo-terminal; everything the terminal shows comes back on
// script's stdout, so the value must not be there.
const SCRIPT = ['/usr/bin/script', '/bin/script'].find((p) => fs.existsSync(p));
test('secret put at a terminal prompts and does not echo', { skip: !SCRIPT && 'script(1) not installed' }, async () => {
    const value = 'typed-at-a-tty-SECRET-42';
    const q = (s) => `'${s.replace(/'/g, `'\\''`)}'`;
    const cmd = [BIN, 'secret', 'put', 'TTY_SECRET', '--config', configPath].map(q).join(' ');
    const env = { ...process.env, ASAN_OPTIONS: process.env.ASAN_OPTIONS || 'detect_leaks=1' };
    const p = spawn(SCRIPT, ['-qec', cmd, '/dev/null'], { cwd: cliCwd, env, stdio: ['pipe', 'pipe', 'pipe'] });
    let shown = '';
    p.stdout.on('data', (d) => (shown += d));
    p.stderr.on('data', (d) => (shown += d));
    const exited = new Promise((resolve) => p.on('exit', (code) => resolve(code)));
    await until(() => shown.includes('Enter a secret value:'), 15000, 'the prompt');
    p.stdin.write(value + '\n');
    const timer = setTimeout(() => p.kill('SIGKILL'), 15000);
    const code = await exited;
    clearTimeout(timer);
    assert.equal(code, 0, shown);
    assert.ok(!shown.includes(value), `the value was echoed:\n${shown}`);
    assert.match(shown, /Stored secret TTY_SECRET/);
    assert.doesNotMatch(shown, SANITIZER);
    assert.match(fs.readFileSync(path.join(dataDir, 'secrets'), 'utf8'), new RegExp(`^TTY_SECRET="${value}"$`, 'm'));
    ok(['secret', 'delete', 'TTY_SECRET']);
});

test('usage errors exit 2; --help exits 0', () => {
    const usage = [
        ['kv'],
        ['kv', 'bogus'],
        ['kv', 'key'],
        ['kv', 'key', 'put'],
        ['kv', 'key', 'put', 'k', 'v'], // no --binding
        ['kv', 'key', 'put', 'k', 'v', '--path', '/dev/null', '--binding', 'NS_ONE'], // two values
        ['kv', 'key', 'list', '--binding', 'NS_ONE', '--limit', '0'],
        ['kv', 'key', 'put', 'k', 'v', '--binding', 'NS_ONE', '--ttl', 'soon'],
        ['kv', 'key', 'get', 'k', '--binding', 'NS_ONE', '--bogus'],
        ['kv', 'key', 'get', 'k', '--binding'], // flag without its value
        ['kv', 'namespace', 'list', 'extra'],
        ['kv', 'namespace', 'list', '--json=yes'],
        ['r2'],
        ['r2', 'object', 'get', 'no-slash'],
        ['r2', 'object', 'put', 'logs/'],
        ['r2', 'bucket', 'create'],
        ['secret'],
        ['secret', 'put'],
        ['secret', 'frobnicate'],
    ];
    for (const args of usage) {
        const r = cli(args, { input: '' });
        assert.equal(r.status, 2, `aigate ${args.join(' ')}: exit ${r.status}\n${r.err}`);
        assert.match(r.err, /usage: aigate/, args.join(' '));
        assert.equal(r.out, '', args.join(' '));
    }
    for (const args of [['kv', '--help'], ['kv', 'key', 'put', '--help'], ['r2', 'object', 'list', '-h'], ['secret', 'help']]) {
        const r = ok(args);
        assert.match(r.out, /^usage: aigate/, args.join(' '));
    }
    const help = ok(['help'], { config: false });
    assert.match(help.out, /\bkv\b[\s\S]*\br2\b[\s\S]*\bsecret\b/);
});

test('--data-dir overrides the config, and the server kept serving', async () => {
    const other = mkdir();
    assert.equal(ok(['kv', 'namespace', 'list', '--data-dir', other]).out, '');
    ok(['kv', 'namespace', 'create', 'ELSEWHERE', '--data-dir', other]);
    assert.ok(fs.existsSync(path.join(other, 'kv', 'ELSEWHERE')));
    assert.ok(!ok(['kv', 'namespace', 'list']).out.includes('ELSEWHERE'));
    // A config with an error is exit 1 with the file's own message.
    const broken = path.join(cliCwd, 'broken.toml');
    fs.writeFileSync(broken, '[aigate]\nport = "not a number"\n');
    const r = cli(['kv', 'namespace', 'list', '--config', broken], { config: false });
    assert.equal(r.status, 1);
    assert.match(r.err, /broken\.toml/);
    // The server answered all along.
    const res = await request(`${gw.url}/nope`);
    assert.equal(res.status, 404);
});

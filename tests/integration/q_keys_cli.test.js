// SPDX-License-Identifier: MIT
//
// q_keys_cli.test.js: `aigate keys` (platform.md section 6) as a black box on
// a data folder that a running gateway serves too: a key printed once (alone
// on stdout, or in --json with its limits), never again by list/show/revoke
// and never stored in the clear; rotate and revoke as another process sees
// them; usage errors and exit codes.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { BIN, startGateway, startFake, generate, tmpdir, filesUnder } = require('./lib.js');

const SANITIZER = /AddressSanitizer|LeakSanitizer|runtime error:/;
const KEY = /^ag_[0-9A-Za-z]{43}$/;

let up;
let gw;
let dataDir;
let configPath;
let cliCwd;
const made = [];
const keysSeen = []; // every key printed, to check that nothing prints or stores one again

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
    assert.equal(gw.exited, null, gw.stderr);
    await gw.stop();
    await up.close();
    for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});

// Each call is its own process, as an operator's would be.
function cli(args, { config = true } = {}) {
    const env = { ...process.env, ASAN_OPTIONS: process.env.ASAN_OPTIONS || 'detect_leaks=1' };
    delete env.ANTHROPIC_API_KEY;
    const r = spawnSync(BIN, ['keys', ...args, ...(config ? ['--config', configPath] : [])], { cwd: cliCwd, env, timeout: 30000 });
    assert.equal(r.error, undefined, String(r.error));
    const res = { status: r.status, out: r.stdout.toString('utf8'), err: r.stderr.toString('utf8') };
    assert.doesNotMatch(res.err, SANITIZER, res.err);
    for (const k of keysSeen) {
        if (!args.includes('create') && !args.includes('rotate')) assert.ok(!res.out.includes(k) && !res.err.includes(k), `a key was printed again by keys ${args.join(' ')}`);
    }
    return res;
}

function noKeyOnDisk() {
    const files = filesUnder(dataDir);
    assert.ok(files.some((f) => f.includes(`${path.sep}keys${path.sep}`)), `no key store in ${dataDir}`);
    for (const f of files) {
        const data = fs.readFileSync(f);
        for (const k of keysSeen) assert.equal(data.indexOf(k.slice(3)), -1, `${f} holds a key in the clear`);
    }
}

test('create prints the key once, alone on stdout; another process sees the record', () => {
    const r = cli(['create', 'alice', '--rpm', '60', '--tpm', '20000', '--daily-usd', '1.5', '--monthly-usd', '30', '--models', 'claude-haiku-4-5,claude-sonnet-4-6', '--expires', '2099-01-02']);
    assert.equal(r.status, 0, r.err);
    const key = r.out.trim();
    assert.match(key, KEY);
    assert.equal(r.out, `${key}\n`);
    assert.doesNotMatch(r.err, /ag_[0-9A-Za-z]{43}/);
    assert.match(r.err, /only time/);
    keysSeen.push(key);

    const show = cli(['show', 'alice', '--json']);
    assert.equal(show.status, 0, show.err);
    const rec = JSON.parse(show.out);
    assert.equal(rec.key, undefined);
    assert.deepEqual(
        { name: rec.name, rpm: rec.rpm, tpm: rec.tpm, daily_usd: rec.daily_usd, monthly_usd: rec.monthly_usd, models: rec.models, expires: rec.expires, status: rec.status, revoked: rec.revoked },
        { name: 'alice', rpm: 60, tpm: 20000, daily_usd: 1.5, monthly_usd: 30, models: ['claude-haiku-4-5', 'claude-sonnet-4-6'], expires: '2099-01-02T00:00:00.000Z', status: 'active', revoked: null },
    );
    assert.ok(Math.abs(Date.parse(rec.created) - Date.now()) < 60000, rec.created);

    const text = cli(['show', 'alice']);
    assert.equal(text.status, 0, text.err);
    assert.match(text.out, /status: +active/);
    assert.match(text.out, /rpm 60, tpm 20000, \$1\.5\/day, \$30\/month/);
});

test('--json create: {"name","key",...limits}; unset limits are null', () => {
    const r = cli(['create', 'bob', '--json']);
    assert.equal(r.status, 0, r.err);
    const j = JSON.parse(r.out);
    assert.match(j.key, KEY);
    keysSeen.push(j.key);
    assert.equal(j.name, 'bob');
    for (const f of ['rpm', 'tpm', 'daily_usd', 'monthly_usd', 'models', 'expires']) assert.equal(j[f], null, f);
    assert.equal(j.status, 'active');
    assert.notEqual(j.key, keysSeen[0]);
});

test('list shows names, status and limits, never a key', () => {
    const j = cli(['list', '--json']);
    assert.equal(j.status, 0, j.err);
    const list = JSON.parse(j.out);
    assert.deepEqual(list.map((k) => k.name), ['alice', 'bob']);
    for (const k of list) assert.equal(k.key, undefined);
    const t = cli(['list']);
    assert.equal(t.status, 0, t.err);
    assert.match(t.out, /^NAME +STATUS/);
    assert.match(t.out, /\nalice +active +2099-01-02T00:00:00\.000Z +rpm 60/);
    assert.match(t.out, /\nbob +active +never +none\n/);
});

test('rotate prints a new key once; revoke is seen by the next process', () => {
    const r = cli(['rotate', 'alice', '--json']);
    assert.equal(r.status, 0, r.err);
    const j = JSON.parse(r.out);
    assert.match(j.key, KEY);
    assert.ok(!keysSeen.includes(j.key));
    keysSeen.push(j.key);
    assert.equal(j.rpm, 60);
    assert.equal(j.daily_usd, 1.5);
    assert.notEqual(j.rotated, null);

    const rv = cli(['revoke', 'alice']);
    assert.equal(rv.status, 0, rv.err);
    assert.match(rv.out, /Revoked key alice/);
    const s = JSON.parse(cli(['show', 'alice', '--json']).out);
    assert.equal(s.status, 'revoked');
    assert.ok(Math.abs(Date.parse(s.revoked) - Date.now()) < 60000);
    // A second revoke keeps the first time; a revoked key cannot be rotated back to life.
    const again = JSON.parse(cli(['revoke', 'alice', '--json']).out);
    assert.equal(again.revoked, s.revoked);
    const rot = cli(['rotate', 'alice']);
    assert.equal(rot.status, 1);
    assert.match(rot.err, /revoked/);
    assert.equal(rot.out, '');
});

test('an expired key says so', () => {
    const r = cli(['create', 'old', '--expires', '2001-01-01T00:00:00Z']);
    assert.equal(r.status, 0, r.err);
    keysSeen.push(r.out.trim());
    assert.equal(JSON.parse(cli(['show', 'old', '--json']).out).status, 'expired');
});

test('errors: exit 1 for what is not there or taken, 2 for usage', () => {
    let r = cli(['create', 'bob']);
    assert.equal(r.status, 1);
    assert.match(r.err, /exists already/);
    assert.equal(r.out, '');
    for (const name of ['show', 'revoke', 'rotate']) {
        r = cli([name, 'nobody']);
        assert.equal(r.status, 1, name);
        assert.match(r.err, /no key named nobody/);
    }
    for (const args of [
        ['create', 'bad name'],
        ['create', 'x', '--rpm', '0'],
        ['create', 'x', '--rpm', 'ten'],
        ['create', 'x', '--daily-usd', '-1'],
        ['create', 'x', '--models', 'a,,b'],
        ['create', 'x', '--expires', 'tomorrow'],
        ['create'],
        ['show'],
        ['frobnicate'],
        ['create', 'x', '--bogus'],
    ]) {
        r = cli(args);
        assert.equal(r.status, 2, `${args.join(' ')}: ${r.err}`);
        assert.match(r.err, /usage: aigate keys/);
    }
    assert.equal(JSON.parse(cli(['show', 'x', '--json']).out || 'null'), null);
});

test('--help and -h print the usage on stdout', () => {
    for (const args of [['--help'], ['-h'], ['create', '--help'], ['list', '-h'], ['rotate', '--help']]) {
        const r = cli(args, { config: false });
        assert.equal(r.status, 0, args.join(' '));
        assert.match(r.out, /usage: aigate keys/);
    }
});

test('the store holds hashes only, and the gateway serving the folder is unaffected', async () => {
    noKeyOnDisk();
    const mode = fs.statSync(path.join(dataDir, 'keys')).mode & 0o777;
    assert.equal(mode, 0o700);
    const res = await generate(gw, { prompt: 'still serving' });
    assert.equal(res.status, 200, res.text);
});

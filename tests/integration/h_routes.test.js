// SPDX-License-Identifier: MIT
//
// h_routes.test.js: per-route settings ([aigate.routes."PATH"] merged over
// [aigate]), the deprecated messages_* aliases, route errors in the config,
// and the client of each request on a kept-alive proxy connection.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const { startGateway, startFake, request, generate, until, tmpdir } = require('./lib.js');

const BIN = process.env.AIGATE_BIN || path.join(__dirname, '../../build/debug/aigate');
let up;
before(async () => {
    up = await startFake();
});
after(async () => {
    await up.close();
});

const messages = (gw, content, model = 'claude-haiku-4-5') =>
    request(`${gw.url}/v1/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
        body: { model, max_tokens: 10, messages: [{ role: 'user', content }] },
    });

test('a route table sets its own limit, cache and models; the rest is inherited', async () => {
    const gw = await startGateway({
        upstream: `http://127.0.0.1:${up.port}`,
        liftRateLimit: false,
        config: `[aigate]
rate_limit = 1000
models = ["claude-sonnet-4-6"]
[aigate.routes."/v1/messages"]
rate_limit = 2
models = ["claude-opus-4-6"]
[aigate.routes."/api/generate"]
cache = false
`,
    });
    try {
        // /v1/messages: its own limit of 2, its own model list.
        assert.equal((await messages(gw, 'm one')).status, 200);
        assert.equal((await messages(gw, 'm two', 'claude-opus-4-6')).status, 200);
        const refused = await messages(gw, 'm three', 'claude-sonnet-4-6');
        assert.equal(refused.status, 400, 'the route list replaces [aigate] models');
        const limited = await messages(gw, 'm four');
        assert.equal(limited.status, 429);
        assert.equal(limited.headers['ratelimit-limit'], '2');
        // /api/generate: [aigate]'s limit and models, but no cache.
        const ok = await generate(gw, { prompt: 'not cached here', model: 'claude-sonnet-4-6' });
        assert.equal(ok.status, 200);
        assert.equal(ok.headers['ratelimit-limit'], '1000');
        const before = up.stats().requests;
        const again = await generate(gw, { prompt: 'not cached here', model: 'claude-sonnet-4-6' });
        assert.equal(again.status, 200);
        assert.equal(again.json.cached, false);
        assert.equal(up.stats().requests, before + 1, 'cache = false: every request goes upstream');
    } finally {
        await gw.stop();
    }
});

test('the messages_* keys still work, with a deprecation warning', async () => {
    const gw = await startGateway({
        upstream: `http://127.0.0.1:${up.port}`,
        config: '[aigate]\nrate_limit = 100\nmessages_rate_limit = 1\n',
    });
    try {
        assert.match(gw.stderr, /warning: aigate\.messages_rate_limit is deprecated: set rate_limit in \[aigate\.routes\."\/v1\/messages"\]/);
        assert.equal((await messages(gw, 'alias one')).status, 200);
        assert.equal((await messages(gw, 'alias two')).status, 429);
    } finally {
        await gw.stop();
    }
});

test('a table for a route aigate does not serve is an error with its place', async () => {
    const dir = tmpdir();
    const file = path.join(dir, 'aigate.toml');
    fs.writeFileSync(file, '[aigate]\nrate_limit = 5\n\n[aigate.routes."/v2/nothing"]\ncache = false\n');
    const r = spawnSync(BIN, ['config', 'check', '--config', file], { cwd: dir, encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.match(r.stderr, new RegExp(`${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:4:\\d+: aigate\\.routes\\."/v2/nothing": no such AI route`));
    await assert.rejects(
        startGateway({ upstream: `http://127.0.0.1:${up.port}`, config: '[aigate.routes."/nope"]\ncache = true\n' }),
        /no such AI route/
    );
});

test('each request on a kept-alive proxy connection is its own client', async () => {
    const gw = await startGateway({
        upstream: `http://127.0.0.1:${up.port}`,
        config: '[aigate]\ntrusted_proxies = ["127.0.0.0/8", "::1"]\n',
    });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const send = (prompt, xff) =>
        new Promise((resolve, reject) => {
            const headers = { 'content-type': 'application/json' };
            if (xff) headers['x-forwarded-for'] = xff;
            const req = http.request({ host: '127.0.0.1', port: gw.port, path: '/api/generate', method: 'POST', headers, agent }, (res) => {
                res.resume();
                res.on('end', () => resolve({ status: res.statusCode, id: res.headers['x-request-id'], socket: req.socket }));
            });
            req.on('error', reject);
            req.end(JSON.stringify({ prompt }));
        });
    try {
        const a = await send('client a', '198.51.100.10');
        const b = await send('client b', '198.51.100.20');
        const c = await send('the proxy itself', null);
        assert.deepEqual([a.status, b.status, c.status], [200, 200, 200]);
        assert.equal(a.socket, b.socket, 'one kept-alive connection');
        assert.equal(b.socket, c.socket, 'one kept-alive connection');
        const clientOf = (id) => (gw.accessLog().find((l) => l.id === id) || {}).client;
        await until(() => clientOf(c.id) !== undefined, 3000, 'access log lines');
        assert.equal(clientOf(a.id), '198.51.100.10');
        assert.equal(clientOf(b.id), '198.51.100.20', 'not the peer the previous request resolved');
        assert.equal(clientOf(c.id), '127.0.0.1');
    } finally {
        agent.destroy();
        await gw.stop();
    }
});

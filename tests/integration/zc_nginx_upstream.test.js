// SPDX-License-Identifier: MIT
//
// zc_nginx_upstream.test.js: the native upstream client against a real nginx
// (Debian's nginx-light), plain and over TLS with a test CA: answers arrive
// whole, keep-alive reuses one connection (nginx's own $connection and
// $connection_requests say so), new connections after nginx closed the old
// ones resume TLS sessions, TLS 1.2 and 1.3 ($ssl_session_reused), and
// nginx's own 404 page gives the gateway's 502 without a crash.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');

const { startGateway, generate, until, tmpdir, testCA, freePort } = require('./lib.js');

const MESSAGE = JSON.stringify({
    id: 'msg_nginx', type: 'message', role: 'assistant', model: 'claude-haiku-4-5',
    content: [{ type: 'text', text: 'hello from nginx' }], stop_reason: 'end_turn', stop_sequence: null,
    usage: { input_tokens: 3, output_tokens: 4 },
});
const CONFIG = '[aigate]\nupstream_client = "native"\nupstream_retries = 0\ncache = false\n';

const haveNginx = spawnSync('nginx', ['-v'], { encoding: 'utf8' }).status === 0;
let dir, nginx, ports, ca;


// nginx's access log: one {conn, requests, reused, status, uri} per request.
function accessLog() {
    const f = path.join(dir, 'access.log');
    if (!fs.existsSync(f)) return [];
    return fs.readFileSync(f, 'utf8').split('\n').filter(Boolean).map((l) => {
        const [conn, requests, reused, status, uri, protocol] = l.split(' ');
        return { conn, requests: Number(requests), reused, status: Number(status), uri, protocol };
    });
}

before(async () => {
    if (!haveNginx) return;
    dir = tmpdir();
    ca = testCA(dir);
    ca.issue('nginx', '0x3001');
    ports = { plain: await freePort(), tls: await freePort(), tls13: await freePort() };
    fs.mkdirSync(path.join(dir, 'tmp'));
    const user = process.getuid() === 0 ? 'user root root;' : '';
    fs.writeFileSync(path.join(dir, 'nginx.conf'), `${user}
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 256; }
http {
    log_format conns '$connection $connection_requests $ssl_session_reused $status $uri $ssl_protocol';
    access_log ${dir}/access.log conns;
    client_body_temp_path ${dir}/tmp;
    proxy_temp_path ${dir}/tmp;
    fastcgi_temp_path ${dir}/tmp;
    uwsgi_temp_path ${dir}/tmp;
    scgi_temp_path ${dir}/tmp;
    keepalive_requests 1000;
    server {
        listen 127.0.0.1:${ports.plain};
        listen 127.0.0.1:${ports.tls} ssl;
        ssl_certificate ${dir}/nginx.pem;
        ssl_certificate_key ${dir}/nginx.key;
        location = /v1/messages {
            default_type application/json;
            return 200 '${MESSAGE}';
        }
        location = /short/v1/messages {
            # keepalive_requests 1 here: nginx closes each connection after its answer.
            keepalive_requests 1;
            default_type application/json;
            return 200 '${MESSAGE}';
        }
    }
    server {
        # nginx 1.22 speaks TLS 1.2 unless told: this one, TLS 1.3 only.
        listen 127.0.0.1:${ports.tls13} ssl;
        ssl_protocols TLSv1.3;
        ssl_certificate ${dir}/nginx.pem;
        ssl_certificate_key ${dir}/nginx.key;
        keepalive_requests 1;
        location = /v1/messages {
            default_type application/json;
            return 200 '${MESSAGE}';
        }
    }
}
`);
    nginx = spawn('nginx', ['-p', `${dir}/`, '-e', `${dir}/error.log`, '-c', `${dir}/nginx.conf`, '-g', 'daemon off;'],
        { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    nginx.stderr.on('data', (d) => { err += d; });
    await until(() => new Promise((resolve) => {
        const s = net.connect(ports.plain, '127.0.0.1', () => { s.destroy(); resolve(true); });
        s.on('error', () => resolve(false));
    }), 10000, `nginx to listen (${err})`);
});

after(async () => {
    if (!nginx) return;
    const gone = new Promise((r) => nginx.once('exit', r));
    nginx.kill('SIGQUIT');
    await gone;
    fs.rmSync(dir, { recursive: true, force: true });
});

for (const scheme of ['http', 'https']) {
    test(`${scheme}: answers from nginx arrive whole on one kept-alive connection`, { skip: !haveNginx && 'no nginx' }, async () => {
        const port = scheme === 'https' ? ports.tls : ports.plain;
        const config = CONFIG + (scheme === 'https' ? `upstream_ca_file = "${ca.file}"\n` : '');
        const gw = await startGateway({ upstream: `${scheme}://127.0.0.1:${port}`, config, threads: 1 });
        const seen = accessLog().length;
        try {
            for (let i = 0; i < 10; i++) {
                const r = await generate(gw, { prompt: `nginx ${scheme} ${i}` });
                assert.equal(r.status, 200, r.body);
                assert.equal(r.json.output, 'hello from nginx');
            }
            await until(() => accessLog().length >= seen + 10, 5000, 'nginx to log the requests');
            const mine = accessLog().slice(seen);
            assert.equal(new Set(mine.map((l) => l.conn)).size, 1, `one connection: ${JSON.stringify(mine)}`);
            assert.deepEqual(mine.map((l) => l.requests), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        } finally {
            await gw.stop();
        }
    });
}

for (const [proto, port, base] of [['TLSv1.2', () => ports.tls, '/short'], ['TLSv1.3', () => ports.tls13, '']]) {
    test(`https (${proto}): nginx closes after each answer; the new connections resume TLS sessions`, { skip: !haveNginx && 'no nginx' }, async () => {
        const gw = await startGateway({ upstream: `https://127.0.0.1:${port()}${base}`, config: `${CONFIG}upstream_ca_file = "${ca.file}"\n`, threads: 1 });
        const seen = accessLog().length;
        try {
            for (let i = 0; i < 6; i++) {
                const r = await generate(gw, { prompt: `closing ${proto} ${i}` });
                assert.equal(r.status, 200, r.body);
                assert.equal(r.headers['x-aigate-retries'], '0', 'no attempt lost to a closed connection');
            }
            await until(() => accessLog().length >= seen + 6, 5000, 'nginx to log the requests');
            const mine = accessLog().slice(seen);
            assert.equal(new Set(mine.map((l) => l.conn)).size, 6, 'a connection per request');
            assert.ok(mine.every((l) => l.protocol === proto), JSON.stringify(mine));
            // All but the first resume: a TLS 1.2 session serves many, and nginx sends
            // TLS 1.3 tickets on resumed handshakes too, each used once.
            assert.deepEqual(mine.map((l) => l.reused), ['.', 'r', 'r', 'r', 'r', 'r']);
        } finally {
            await gw.stop();
        }
    });
}

test('nginx\'s own error page (404, HTML) is a 502 from the gateway, which goes on', { skip: !haveNginx && 'no nginx' }, async () => {
    const gw = await startGateway({ upstream: `http://127.0.0.1:${ports.plain}/missing`, config: CONFIG, threads: 1 });
    try {
        const r = await generate(gw, { prompt: 'not there' });
        assert.equal(r.status, 502, r.body);
        assert.deepEqual(r.json, { error: 'AI service error' });
        await until(() => /upstream answered 404/.test(gw.stderr), 5000, 'the 404 in the log');
    } finally {
        await gw.stop();
    }
});

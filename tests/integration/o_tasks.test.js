// SPDX-License-Identifier: MIT
//
// o_tasks.test.js: scheduled AI tasks end to end, on the real binary: the
// seed's weekly digest triggered through /__scheduled calls the fake upstream
// with the rendered prompt and delivers to R2, KV, a webhook (that fails once),
// an SMTP server (a real one: tests/helpers/smtp-sink.js) and a command; an
// upstream 529 is retried; the usage log, the tail and the metrics have the
// run; `aigate cron list --json` gives croner's next times.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');
const { Cron } = require('croner');

const { BIN, startGateway, startFake, request, until, tmpdir } = require('./lib.js');

const SINK = path.join(__dirname, '../helpers/smtp-sink.js');
let up, sink, hook, dir;
const hookBodies = [];
let hookFailures = 1;

before(async () => {
    up = await startFake();
    dir = tmpdir();
    // The SMTP server: a real process, one NDJSON line per message received.
    const out = path.join(dir, 'mail.ndjson');
    const proc = spawn(process.execPath, [SINK, '--out', out], { stdio: ['ignore', 'pipe', 'pipe'] });
    sink = { proc, stdout: '', out };
    proc.stdout.on('data', (d) => (sink.stdout += d));
    await until(() => /"port":\d+/.test(sink.stdout), 10000, 'the SMTP sink');
    sink.port = JSON.parse(sink.stdout.split('\n')[0]).port;
    sink.messages = () => (fs.existsSync(out) ? fs.readFileSync(out, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)) : []);
    // The webhook receiver: 503 the first time, then 200.
    hook = http.createServer((req, res) => {
        if (req.method === 'GET' && req.url === '/page') {
            res.writeHead(200, { 'content-type': 'text/plain' }).end('the front page says hello');
            return;
        }
        let body = '';
        req.on('data', (d) => (body += d));
        req.on('end', () => {
            if (hookFailures > 0) {
                hookFailures--;
                res.writeHead(503).end('busy');
                return;
            }
            hookBodies.push(JSON.parse(body));
            res.writeHead(200).end('ok');
        });
    });
    await new Promise((r) => hook.listen(0, '127.0.0.1', r));
});

after(async () => {
    await up.close();
    sink.proc.kill('SIGTERM');
    hook.close();
});

function config(extra = '') {
    return `name = "my-ai-worker"
[vars]
MAX_TOKENS = "1024"
DEFAULT_MODEL = "claude-haiku-4-5"
[triggers]
crons = ["0 9 * * MON", "*/30 * * * *"]
[[kv_namespaces]]
binding = "CACHE"
id = "cache"
[[r2_buckets]]
binding = "STORAGE"
bucket_name = "usage-logs"
[[r2_buckets]]
binding = "DIGESTS"
bucket_name = "digests"
[aigate]
usage_log_flush = 0.1
[aigate.smtp]
url = "smtp://127.0.0.1:${sink.port}"
from = "aigate@example.com"
[[aigate.tasks]]
name = "weekly-digest"
cron = "0 9 * * MON"
task = "summarize"
max_tokens = 300
prompt = """Write a short digest of last week's traffic.
Notes: {{kv:CACHE:notes}}
Missing: {{r2:DIGESTS:nothing-here}}
Page: {{fetch:http://127.0.0.1:${hook.address().port}/page}}
{{usage:7d}}"""
output.r2 = "DIGESTS:digests/{{date}}.md"
output.kv = "CACHE:digest:latest"
output.webhook = "http://127.0.0.1:${hook.address().port}/digest"
output.email = { to = "me@example.com", subject = "Weekly digest {{date}}" }
output.command = ["/usr/bin/tee", "${path.join(dir, 'command-out.txt')}"]
${extra}`;
}

const run = (args, cwd) => spawnSync(BIN, args, { cwd, encoding: 'utf8' });

test('the weekly digest: rendered prompt, five outputs, a failing webhook retried, recorded', async () => {
    const gw = await startGateway({ cwd: dir, upstream: `http://127.0.0.1:${up.port}`, config: config() });
    try {
        assert.match(gw.stderr, /triggers\.crons "\*\/30 \* \* \* \*" has no \[\[aigate\.tasks\]\] entry/);
        const cfg = path.join(dir, 'aigate.toml');
        assert.equal(run(['kv', 'key', 'put', 'notes', 'the launch went well', '--binding', 'CACHE', '--config', cfg], dir).status, 0);
        // A tail subscriber for the run's event.
        const events = [];
        const tail = http.get(`${gw.adminUrl}/tail?format=json`, (res) => {
            res.setEncoding('utf8');
            let buf = '';
            res.on('data', (d) => {
                buf += d;
                for (let i; (i = buf.indexOf('\n\n')) >= 0; buf = buf.slice(i + 2)) {
                    const line = buf.slice(0, i);
                    if (line.startsWith('data: ')) events.push(JSON.parse(line.slice(6)));
                }
            });
        });
        const before = up.stats().requests;
        const r = await request(`${gw.adminUrl}/__scheduled?cron=0+9+*+*+MON`, { method: 'POST' });
        assert.equal(r.status, 200);
        assert.equal(r.body, 'Ran scheduled event');
        // The outputs land: KV, R2, webhook (after one 503), email, command.
        await until(() => hookBodies.length === 1 && sink.messages().length === 1 && fs.existsSync(path.join(dir, 'command-out.txt')), 20000, 'the outputs');
        assert.equal(up.stats().requests, before + 1);
        const hookBody = hookBodies[0];
        assert.equal(hookBody.task, 'weekly-digest');
        assert.equal(hookBody.cron, '0 9 * * MON');
        assert.equal(hookBody.model, 'claude-haiku-4-5', 'summarize routes to haiku');
        assert.match(hookBody.output, /^Echo: Write a short digest of last week's traffic\.\nNotes: the launch went well\nMissing: \nPage: the front page says hello\n/);
        assert.match(hookBody.output, /usage log from .* to .*\n.*REQUESTS/i, 'the usage window rendered');
        assert.ok(hookBody.usage.input_tokens > 0 && hookBody.usage.output_tokens > 0);
        const date = new Date(hookBody.scheduledTime).toISOString().slice(0, 10);
        const mail = sink.messages()[0];
        assert.match(mail.data, new RegExp(`Subject: Weekly digest ${date}`));
        assert.ok(mail.data.includes('the launch went well'));
        assert.equal(fs.readFileSync(path.join(dir, 'command-out.txt'), 'utf8'), hookBody.output);
        const obj = run(['r2', 'object', 'get', `digests/digests/${date}.md`, '--config', cfg], dir);
        assert.equal(obj.status, 0, obj.stderr);
        assert.equal(obj.stdout, hookBody.output);
        const kv = run(['kv', 'key', 'get', 'digest:latest', '--binding', 'CACHE', '--config', cfg], dir);
        assert.equal(kv.stdout, hookBody.output);
        // The tail saw a scheduled event; the metrics and the usage log have the run.
        await until(() => events.some((e) => e.event && e.event.cron === '0 9 * * MON'), 5000, 'the tail event');
        const ev = events.find((e) => e.event && e.event.cron);
        assert.equal(ev.outcome, 'ok');
        assert.equal(ev.event.scheduledTime, hookBody.scheduledTime);
        assert.equal(ev.aigate.task, 'weekly-digest');
        const m = (await request(`${gw.adminUrl}/metrics`)).body;
        assert.match(m, /aigate_task_runs_total\{task="weekly-digest",outcome="ok"\} 1/);
        await until(async () => {
            const st = (await request(`${gw.adminUrl}/stats?since=1h&by=route`)).json;
            return st && st.groups.some((g) => g.key === 'scheduled' && g.requests === 1);
        }, 5000, 'the run in the usage log');
        tail.destroy();
    } finally {
        await gw.stop();
    }
});

test('POST /tasks/NAME/run answers the run record; an upstream 529 is retried', async () => {
    const gw = await startGateway({ cwd: dir, upstream: `http://127.0.0.1:${up.port}`, config: config() });
    try {
        const cfg = path.join(dir, 'aigate.toml');
        assert.equal(run(['kv', 'key', 'put', 'notes', 'the launch went well', '--binding', 'CACHE', '--config', cfg], dir).status, 0);
        up.setKnobs({ failStatus: 529, failEvery: 2 });
        // The next /v1/messages call is the first of the count: it succeeds; the task's is the second.
        const warm = await request(`${gw.url}/api/generate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: { prompt: 'warm the count' } });
        assert.equal(warm.status, 200);
        const r = await request(`${gw.adminUrl}/tasks/weekly-digest/run`, { method: 'POST', timeoutMs: 30000 });
        assert.equal(r.status, 200, r.body);
        const rec = r.json;
        assert.equal(rec.task, 'weekly-digest');
        assert.equal(rec.outcome, 'ok');
        assert.equal(rec.attempts, 2, 'the 529 was retried');
        assert.deepEqual(rec.missing, ['{{r2:DIGESTS:nothing-here}}']);
        assert.deepEqual(rec.outputs.map((o) => [o.kind, o.ok]), [['r2', true], ['kv', true], ['webhook', true], ['email', true], ['command', true]]);
        assert.equal((await request(`${gw.adminUrl}/tasks/nope/run`, { method: 'POST' })).status, 404);
        up.resetKnobs();
        // aigate cron run goes through the same route.
        // Not spawnSync: the run calls the fake upstream, which lives in this process.
        const cli = await new Promise((resolve) => {
            const p = spawn(BIN, ['cron', 'run', 'weekly-digest', '--config', path.join(dir, 'aigate.toml'), '--admin', gw.adminUrl], { cwd: dir });
            let out = '', err = '';
            p.stdout.on('data', (d) => (out += d));
            p.stderr.on('data', (d) => (err += d));
            p.on('exit', (status) => resolve({ status, stdout: out, stderr: err }));
        });
        assert.equal(cli.status, 0, cli.stderr);
        assert.equal(JSON.parse(cli.stdout).outcome, 'ok');
    } finally {
        up.resetKnobs();
        await gw.stop();
    }
});

test('aigate cron list --json gives croner\'s next three times; cron run needs an admin listener', () => {
    const cfg = path.join(dir, 'list.toml');
    fs.writeFileSync(cfg, config(`[[aigate.tasks]]
name = "month-end"
cron = "0 18 L * *"
prompt = "Close the month"
[[aigate.tasks]]
name = "weekdays"
cron = "15 8 * * 2-6"
prompt = "Standup notes"
`).replace(/url = "smtp[^"]*"/, 'url = "smtp://127.0.0.1:25"'));
    const r = run(['cron', 'list', '--json', '--config', cfg, '--admin', 'http://127.0.0.1:1'], dir);
    assert.equal(r.status, 0, r.stderr);
    const list = JSON.parse(r.stdout);
    assert.deepEqual(list.map((t) => t.name), ['weekly-digest', 'month-end', 'weekdays']);
    const now = new Date();
    for (const t of list) {
        const expect = new Cron(t.cron, { timezone: 'UTC', alternativeWeekdays: true, domAndDow: false, mode: '5-part' }).nextRuns(3, now).map((d) => d.toISOString().replace('.000Z', 'Z'));
        assert.deepEqual(t.next, expect, t.name);
        assert.equal(t.last, null);
    }
    const off = path.join(dir, 'off.toml');
    fs.writeFileSync(off, '[aigate]\nadmin_listen = ""\n');
    const no = run(['cron', 'run', 'weekly-digest', '--config', off], dir);
    assert.equal(no.status, 1);
    assert.match(no.stderr, /admin_listen/);
});

test('a bad cron expression or template is a config error with its place', () => {
    const bad = path.join(dir, 'bad.toml');
    fs.writeFileSync(bad, '[[aigate.tasks]]\nname = "x"\ncron = "0 9 * * 0"\nprompt = "{{nope}}"\n');
    const r = run(['config', 'check', '--config', bad], dir);
    assert.equal(r.status, 1);
    assert.match(r.stderr, new RegExp(`${bad.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:3:\\d+: task x: cron "0 9 \\* \\* 0": `));
    assert.match(r.stderr, /:4:\d+: task x: prompt/);
});

test('a task runs at its time: the next minute of "* * * * *", by email and to R2', async () => {
    const minutely = config().replace('cron = "0 9 * * MON"\ntask', 'cron = "* * * * *"\ntask');
    const gw = await startGateway({ cwd: dir, upstream: `http://127.0.0.1:${up.port}`, config: minutely });
    try {
        const mails = sink.messages().length;
        // No trigger: the scheduler's timer fires at the minute (a real wait, bounded).
        let last = null;
        await until(async () => {
            const list = (await request(`${gw.adminUrl}/tasks`)).json;
            last = list && list[0].last;
            return last && last.outcome === 'ok' && sink.messages().length > mails;
        }, 75000, 'the minutely run');
        assert.equal(last.scheduledTime % 60000, 0, 'at a whole minute');
        assert.ok(Math.abs(Date.now() - last.scheduledTime) < 75000);
        const date = new Date(last.scheduledTime).toISOString().slice(0, 10);
        const obj = run(['r2', 'object', 'get', `digests/digests/${date}.md`, '--config', path.join(dir, 'aigate.toml')], dir);
        assert.equal(obj.status, 0, obj.stderr);
    } finally {
        await gw.stop();
    }
});

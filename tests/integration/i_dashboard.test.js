// SPDX-License-Identifier: MIT
//
// i_dashboard.test.js: the dashboard in a real browser. The real aigate serves
// it at GET / on its admin listener; headless Chromium (Debian's, through
// puppeteer-core) loads it after some traffic (200s, a 400, a cache hit, a
// stream, an upstream failure with retries) and we check what a person would
// see: every chart drawn with data, the summary by model, the live tail
// getting a row for a new request, its filters reaching the server as query
// parameters, a narrow window that stacks, and nothing failing: no console
// error, no failed or refused request, no request to another origin. With
// AIGATE_ADMIN_TOKEN set, the page sends the token from #token= as a header
// on every data request and never in a URL. Leaves a screenshot in
// $AIGATE_ARTIFACTS (default build/test-artifacts/dashboard.png).
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const puppeteer = require('puppeteer-core');
const { startGateway, startFake, generate, request, until } = require('./lib.js');

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = process.env.AIGATE_ARTIFACTS || path.join(__dirname, '../../build/test-artifacts');
const CHARTS = ['requests', 'errorRate', 'latency', 'cpu', 'tokens', 'cost', 'cacheHitRatio', 'retries', 'queueDepth'];
const MODEL = 'claude-haiku-4-5';

let up;
let browser;

before(async () => {
    up = await startFake();
    browser = await puppeteer.launch({
        executablePath: CHROMIUM,
        headless: true,
        args: ['--no-sandbox', '--headless=new', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'],
    });
});

after(async () => {
    if (browser) await browser.close();
    if (up) await up.close();
});

// Starts aigate with the admin listener on an ephemeral port; resolves
// {gw, admin} or null when this aigate has no admin listener yet.
async function startWithAdmin(opts = {}) {
    const gw = await startGateway({
        upstream: `http://127.0.0.1:${up.port}`,
        threads: 2,
        config: '[aigate]\nadmin_listen = "127.0.0.1:0"\nusage_log_flush = 0.1\n',
        ...opts,
    });
    // lib.js reads the admin port from the log once the main listener's line is there.
    if (!gw.adminUrl) {
        await gw.stop();
        return null;
    }
    return { gw, admin: gw.adminUrl };
}

// Watches a page for everything that must not happen. `allowAbort(url)` says
// which aborted requests are the page's own doing (the tail restarts when a
// filter changes).
function watch(page, origin) {
    const problems = [];
    const requests = [];
    page.on('console', (m) => {
        if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('request', (r) => {
        requests.push({ url: r.url(), method: r.method(), headers: r.headers() });
        const u = new URL(r.url());
        if (u.protocol !== 'data:' && u.origin !== origin) problems.push(`request to another origin: ${r.url()}`);
    });
    page.on('requestfailed', (r) => {
        const err = r.failure() ? r.failure().errorText : 'failed';
        const u = new URL(r.url());
        if (err === 'net::ERR_ABORTED' && u.pathname === '/tail' && watch.closing.has(page)) return;
        if (err === 'net::ERR_ABORTED' && u.pathname === '/tail' && page.tailRestarts > 0) {
            page.tailRestarts--;
            return;
        }
        problems.push(`request failed: ${r.method()} ${r.url()}: ${err}`);
    });
    page.on('response', (r) => {
        if (r.status() >= 400) problems.push(`HTTP ${r.status()} for ${r.request().method()} ${r.url()}`);
    });
    return { problems, requests };
}
watch.closing = new Set();

async function closePage(page) {
    watch.closing.add(page);
    await page.close();
}

// What each chart's container says uPlot drew: {name: {points, series, draws}}.
function chartState(page) {
    return page.evaluate(() =>
        Object.fromEntries(
            [...document.querySelectorAll('.chart[data-chart]')].map((e) => [
                e.dataset.chart,
                { points: Number(e.dataset.points || 0), series: Number(e.dataset.series || 0), draws: Number(e.dataset.draws || 0) },
            ])
        )
    );
}

// Waits for a /tail request from the page whose query has `want` (a string).
function tailRequest(page, want) {
    return page.waitForRequest((r) => {
        const u = new URL(r.url());
        return u.pathname === '/tail' && u.search.includes(want);
    }, { timeout: 10000 });
}

async function traffic(gw) {
    const ok = [];
    for (let i = 0; i < 3; i++) ok.push(await generate(gw, { prompt: `dashboard request ${i}` }));
    for (const r of ok) assert.equal(r.status, 200, r.body);
    const bad = await generate(gw, '{"prompt": ');
    assert.equal(bad.status, 400, bad.body);
    const hit = await generate(gw, { prompt: 'dashboard request 0' });
    assert.equal(hit.status, 200, hit.body);
    const stream = await generate(gw, { prompt: '[[words:5]] a stream', stream: true });
    assert.equal(stream.status, 200, stream.body);
    assert.match(stream.headers['content-type'], /text\/event-stream/);
    // An upstream failure: retried, then answered 502 (outcome "exception").
    const failed = await generate(gw, { prompt: '[[status:503]] failing upstream' });
    assert.ok(failed.status >= 500, `${failed.status} ${failed.body}`);
    return { hitCache: hit.headers['x-aigate-cache'] };
}

test('the dashboard: charts with data, the tail, filters, a narrow window, nothing failing', async (t) => {
    const started = await startWithAdmin();
    if (!started) return t.skip('this aigate has no admin listener (admin_listen is an unknown key)');
    const { gw, admin } = started;
    try {
        const { hitCache } = await traffic(gw);
        if (hitCache !== undefined) assert.equal(hitCache, 'hit');

        // The page and its files, as a browser gets them.
        const pageRes = await request(`${admin}/`);
        assert.equal(pageRes.status, 200);
        assert.match(pageRes.headers['content-type'], /^text\/html/);
        const csp = pageRes.headers['content-security-policy'] || '';
        for (const d of ["default-src 'self'", "script-src 'self'", "style-src 'self'", "connect-src 'self'"]) assert.ok(csp.includes(d), `CSP ${csp}`);
        assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
        for (const [p, type] of [['/assets/dashboard.js', /javascript/], ['/assets/uPlot.iife.min.js', /javascript/], ['/assets/dashboard.css', /text\/css/]]) {
            const r = await request(`${admin}${p}`);
            assert.equal(r.status, 200, p);
            assert.match(r.headers['content-type'], type, p);
        }
        assert.equal((await request(`${admin}/assets/nope.js`)).status, 404);

        const page = await browser.newPage();
        await page.setViewport({ width: 1280, height: 900 });
        const seen = watch(page, admin);
        page.tailRestarts = 0;
        const firstTail = tailRequest(page, 'format=json');
        const nav = await page.goto(`${admin}/`, { waitUntil: 'load' });
        assert.equal(nav.status(), 200);
        await firstTail;

        // Every chart drawn, with data points.
        try {
            await page.waitForFunction(
                (names) => names.every((n) => Number((document.querySelector(`.chart[data-chart="${n}"]`) || { dataset: {} }).dataset.points) > 0),
                { timeout: 20000 },
                CHARTS
            );
        } catch (e) {
            assert.fail(`charts without data: ${JSON.stringify(await chartState(page))}`);
        }
        const charts = await chartState(page);
        assert.deepEqual(Object.keys(charts).sort(), [...CHARTS].sort());
        for (const n of CHARTS) assert.ok(charts[n].draws > 0 && charts[n].series > 0, `${n}: ${JSON.stringify(charts[n])}`);
        assert.ok(await page.$$eval('.chart canvas', (cs) => cs.length >= 9 && cs.every((c) => c.width > 0 && c.height > 0)), 'every chart has a canvas');
        // The series come from GET /series?minutes=60, then again every 5 s.
        await page.waitForRequest((r) => new URL(r.url()).pathname === '/series', { timeout: 8000 });
        assert.ok(seen.requests.some((r) => r.url.endsWith('/series?minutes=60')));
        assert.ok(seen.requests.some((r) => r.url.endsWith('/stats?since=1h&by=model')));

        // The summary by model: the usage log is flushed every 0.1 s and /stats is polled every 15 s.
        await page.waitForFunction((m) => !!document.querySelector(`#models tbody tr[data-model="${m}"]`), { timeout: 20000 }, MODEL);

        // The live tail shows a new request, newest first.
        await page.waitForFunction(() => document.querySelector('#tail-state').textContent === 'live', { timeout: 10000 });
        const fresh = await generate(gw, { prompt: `a request for the tail ${Date.now()}` });
        assert.equal(fresh.status, 200);
        const id = fresh.headers['x-request-id'];
        assert.ok(id, 'x-request-id');
        await page.waitForSelector(`#tail tbody tr[data-request-id="${id}"]`, { timeout: 10000 });
        const row = await page.$eval('#tail tbody tr', (tr) => ({ id: tr.dataset.requestId, cells: [...tr.cells].map((c) => c.textContent) }));
        assert.equal(row.id, id, 'the newest row is first');
        assert.equal(row.cells[1], 'POST');
        assert.equal(row.cells[2], '/api/generate');
        assert.equal(row.cells[3], '200');
        assert.equal(row.cells[5], MODEL);
        assert.match(row.cells[6], /^\d+\+\d+$/, 'tokens in+out');
        assert.match(row.cells[7], /^\$/, 'cost');
        assert.equal(row.cells[8], '', 'not cached');
        // A cache hit says so.
        const again = await generate(gw, { prompt: 'dashboard request 1' });
        assert.equal(again.status, 200);
        const hitRow = await page.waitForSelector(`#tail tbody tr[data-request-id="${again.headers['x-request-id']}"]`, { timeout: 10000 });
        assert.equal(await hitRow.evaluate((tr) => tr.cells[8].textContent), 'hit');
        await fs.promises.mkdir(ARTIFACTS, { recursive: true });
        await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard.png'), fullPage: true });

        // Filters go to /tail as query parameters, and the server applies them.
        page.tailRestarts++;
        let next = tailRequest(page, 'status=error');
        await page.click('#tail-filters input[name="status"][value="error"]');
        await next;
        await page.waitForFunction(() => document.querySelector('#tail-state').textContent === 'live', { timeout: 10000 });
        const okAgain = await generate(gw, { prompt: `not an error ${Date.now()}` });
        const errAgain = await generate(gw, { prompt: `[[status:503]] an error ${Date.now()}` });
        assert.ok(errAgain.status >= 500);
        await page.waitForSelector(`#tail tbody tr[data-request-id="${errAgain.headers['x-request-id']}"]`, { timeout: 15000 });
        assert.equal(await page.$(`#tail tbody tr[data-request-id="${okAgain.headers['x-request-id']}"]`), null, 'status=error leaves out a 200');
        page.tailRestarts++;
        next = tailRequest(page, 'model=');
        await page.type('#tail-filters input[name="model"]', MODEL);
        const modelReq = await next;
        const q = new URL(modelReq.url()).searchParams;
        assert.deepEqual(q.getAll('status'), ['error']);
        assert.equal(q.get('model'), MODEL);
        assert.equal(q.get('format'), 'json');
        page.tailRestarts++;
        next = tailRequest(page, 'route=%2Fapi%2Fgenerate');
        await page.type('#tail-filters input[name="route"]', '/api/generate');
        await next;
        page.tailRestarts++;
        next = tailRequest(page, 'search=two%20words');
        await page.type('#tail-filters input[name="search"]', 'two words');
        await next;
        page.tailRestarts++;
        next = tailRequest(page, 'method=POST');
        await page.select('#tail-filters select[name="method"]', 'POST');
        await next;

        // A narrow window: the grid stacks, nothing is wider than the window.
        await page.setViewport({ width: 390, height: 844 });
        // Charts resize on their next frame: wait for the page to settle at the new width
        // (a page that stays wider than the window fails at the deadline, below).
        await page.waitForFunction(() => {
            const cs = [...document.querySelectorAll('.chart .uplot')];
            return cs.length && cs.every((c) => c.getBoundingClientRect().width <= window.innerWidth) &&
                document.documentElement.scrollWidth <= window.innerWidth;
        }, { timeout: 10000 }).catch(() => {});
        const layout = await page.evaluate(() => ({
            scroll: document.documentElement.scrollWidth,
            width: window.innerWidth,
            lefts: [...new Set([...document.querySelectorAll('.card')].map((c) => Math.round(c.getBoundingClientRect().left)))],
        }));
        assert.ok(layout.scroll <= layout.width, `no horizontal scroll on a narrow window: ${JSON.stringify(layout)}`);
        assert.equal(layout.lefts.length, 1, `the cards stack in one column: ${JSON.stringify(layout)}`);
        await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-narrow.png'), fullPage: true });

        // Nothing leaked: no request body, no API key on the page.
        const text = await page.evaluate(() => document.body.innerText);
        assert.ok(!text.includes('dashboard request 1'), 'no prompt on the page');
        assert.ok(!text.includes('sk-ant-'), 'no key on the page');

        await closePage(page);
        assert.deepEqual(seen.problems, []);
    } finally {
        await gw.stop();
    }
});

test('with AIGATE_ADMIN_TOKEN, the page is behind a login and sends #token= as a Bearer header, never in a URL', async (t) => {
    const TOKEN = 'dash-token-0123456789';
    const started = await startWithAdmin({ env: { AIGATE_ADMIN_TOKEN: TOKEN } });
    if (!started) return t.skip('this aigate has no admin listener (admin_listen is an unknown key)');
    const { gw, admin } = started;
    try {
        assert.equal((await request(`${admin}/series?minutes=60`)).status, 401);
        assert.equal((await request(`${admin}/series?minutes=60`, { headers: { authorization: `Bearer ${TOKEN}` } })).status, 200);
        // The page itself is behind the token too: a browser gets a login prompt (Basic,
        // the token as the password) and then sends it with every request of the page.
        const unauth = await request(`${admin}/`);
        assert.equal(unauth.status, 401);
        assert.match(unauth.headers['www-authenticate'], /Basic realm=/);
        const basic = `Basic ${Buffer.from(`admin:${TOKEN}`).toString('base64')}`;
        assert.equal((await request(`${admin}/`, { headers: { authorization: basic } })).status, 200);
        assert.equal((await generate(gw, { prompt: 'with a token' })).status, 200);

        const page = await browser.newPage();
        await page.authenticate({ username: 'admin', password: TOKEN });
        const seen = watch(page, admin);
        const firstTail = tailRequest(page, 'format=json');
        await page.goto(`${admin}/#token=${TOKEN}`, { waitUntil: 'load' });
        await firstTail;
        await page.waitForFunction(() => Number(document.querySelector('.chart[data-chart="requests"]').dataset.points) > 0, { timeout: 20000 });
        await page.waitForFunction(() => document.querySelector('#tail-state').textContent === 'live', { timeout: 10000 });
        const r = await generate(gw, { prompt: `tail with a token ${Date.now()}` });
        await page.waitForSelector(`#tail tbody tr[data-request-id="${r.headers['x-request-id']}"]`, { timeout: 10000 });

        const data = seen.requests.filter((q) => /^\/(series|stats|tail)$/.test(new URL(q.url).pathname));
        for (const p of ['/series', '/stats', '/tail']) assert.ok(data.some((q) => new URL(q.url).pathname === p), `the page asked for ${p}`);
        for (const q of data) assert.equal(q.headers.authorization, `Bearer ${TOKEN}`, q.url);
        for (const q of seen.requests) if (q.url !== `${admin}/#token=${TOKEN}`) assert.ok(!q.url.includes(TOKEN), `token in ${q.url}`);
        assert.ok(!page.url().includes(TOKEN), 'the token leaves the address bar');
        await closePage(page);
        assert.deepEqual(seen.problems, []);
    } finally {
        await gw.stop();
    }
});

/* aigate dashboard: charts of the last hour from GET /series (every 5 s), a
 * summary by model from GET /stats (every 15 s), and the live tail from
 * GET /tail as a server-sent event stream read through fetch().
 *
 * The page runs under a strict Content-Security-Policy: no inline script or
 * style, no eval, nothing from another origin. Every request is a relative URL
 * on the admin listener. With `#token=XYZ` in the page URL every request sends
 * `Authorization: Bearer XYZ` (never the token in a URL), which is why the tail
 * is read with fetch() and not EventSource (it cannot send headers).
 *
 * Each chart's container carries data-points (the non-null values drawn),
 * data-series (its series) and data-draws (how many times uPlot drew it), so
 * anyone can see from the DOM what a chart holds.
 */
(function () {
    'use strict';

    const SERIES_EVERY_MS = 5000;
    const STATS_EVERY_MS = 15000;
    const TAIL_MAX_ROWS = 200;
    const TAIL_RETRY_MAX_MS = 15000;
    const CHART_HEIGHT = 180;

    const $ = (sel, root) => (root || document).querySelector(sel);
    const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

    /* ---- auth ---------------------------------------------------------- */

    const TOKEN_KEY = 'aigate.adminToken';
    let token = readToken();

    /* The token comes in the fragment (never sent to a server); it is kept for
     * this tab only and taken out of the address bar, so it stays out of the
     * history, bookmarks and screenshots. */
    function readToken() {
        const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
        if (m) {
            let t = m[1];
            try {
                t = decodeURIComponent(t);
            } catch (e) {
                /* keep it as written */
            }
            try {
                sessionStorage.setItem(TOKEN_KEY, t);
            } catch (e) {
                /* storage off: the token lives until the page is reloaded */
            }
            history.replaceState(null, '', location.pathname + location.search);
            return t || null;
        }
        try {
            return sessionStorage.getItem(TOKEN_KEY);
        } catch (e) {
            return null;
        }
    }

    window.addEventListener('hashchange', () => {
        if (!/(?:^#|&)token=/.test(location.hash)) return;
        token = readToken();
        hideNotice();
        pollSeries();
        pollStats();
        restartTail();
    });

    function requestHeaders(accept) {
        const h = new Headers({ Accept: accept });
        if (token) h.set('Authorization', 'Bearer ' + token);
        return h;
    }

    class HttpError extends Error {
        constructor(what, status) {
            super(what + ': HTTP ' + status);
            this.status = status;
        }
    }

    async function getJSON(url, what) {
        const r = await fetch(url, { headers: requestHeaders('application/json'), cache: 'no-store' });
        if (!r.ok) throw new HttpError(what, r.status);
        return r.json();
    }

    function noteError(e) {
        if (e && e.status === 401) {
            showNotice(
                'This admin listener needs a token: open the dashboard as ' +
                    location.origin + location.pathname + '#token=<AIGATE_ADMIN_TOKEN>.'
            );
        }
    }

    function showNotice(text) {
        const n = $('#notice');
        n.textContent = text;
        n.hidden = false;
    }

    function hideNotice() {
        $('#notice').hidden = true;
    }

    /* ---- formatting ---------------------------------------------------- */

    const num = (v) => typeof v === 'number' && isFinite(v);

    function fmtCount(v) {
        if (!num(v)) return '–';
        return v.toLocaleString('en-US', { maximumFractionDigits: Math.abs(v) < 10 ? 2 : 0 });
    }

    function fmtCompact(v) {
        if (!num(v)) return '–';
        const a = Math.abs(v);
        if (a >= 1e9) return (v / 1e9).toFixed(a >= 1e10 ? 0 : 1) + 'G';
        if (a >= 1e6) return (v / 1e6).toFixed(a >= 1e7 ? 0 : 1) + 'M';
        if (a >= 1e3) return (v / 1e3).toFixed(a >= 1e4 ? 0 : 1) + 'k';
        return fmtCount(v);
    }

    function fmtMs(v) {
        if (!num(v)) return '–';
        if (v >= 10000) return (v / 1000).toFixed(1) + ' s';
        return (v < 10 ? v.toFixed(1) : Math.round(v).toString()) + ' ms';
    }

    function fmtPct(v) {
        return num(v) ? (v < 10 && v > 0 ? v.toFixed(2) : v.toFixed(1)) + '%' : '–';
    }

    function fmtUsd(v) {
        if (!num(v)) return '–';
        if (v === 0) return '$0';
        const a = Math.abs(v);
        if (a >= 1) return '$' + v.toFixed(2);
        if (a >= 0.0001) return '$' + v.toFixed(4);
        return '$' + v.toPrecision(2);
    }

    function fmtClock(ms) {
        const d = new Date(ms);
        const p = (n) => String(n).padStart(2, '0');
        return p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds());
    }

    const FORMATS = { count: fmtCount, ms: fmtMs, pct: fmtPct, usd: fmtUsd, tokens: fmtCompact };

    /* Axis labels: short, and no more digits than the ticks need. */
    function fmtAxis(unit, v) {
        if (!num(v)) return '';
        const trim = (x, d) => String(Number(x.toFixed(d)));
        switch (unit) {
            case 'pct':
                return trim(v, 1) + '%';
            case 'ms':
                return v >= 1000 ? trim(v / 1000, 2) + ' s' : trim(v, 2) + ' ms';
            case 'usd':
                return '$' + (v >= 1 ? trim(v, 2) : String(Number(v.toPrecision(3))));
            default:
                return fmtCompact(v);
        }
    }

    /* ---- charts -------------------------------------------------------- */

    const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#bcbd22', '#7f7f7f', '#d62728'];
    const STATUS_COLORS = { '2xx': '#2e7d32', '3xx': '#1f77b4', '4xx': '#ef6c00', '5xx': '#c62828' };
    const modelColors = new Map();

    function modelColor(name) {
        if (!modelColors.has(name)) modelColors.set(name, PALETTE[modelColors.size % PALETTE.length]);
        return modelColors.get(name);
    }

    /* One array of n numbers or nulls, whatever the server sent. */
    function column(a, n) {
        const out = new Array(n).fill(null);
        if (Array.isArray(a)) for (let i = 0; i < n && i < a.length; i++) out[i] = num(a[i]) ? a[i] : null;
        return out;
    }

    const scale = (a, k) => a.map((v) => (v === null ? null : v * k));
    const add = (a, b) => a.map((v, i) => (v === null && b[i] === null ? null : (v || 0) + (b[i] || 0)));
    const get = (o, k) => (o && typeof o === 'object' ? o[k] : undefined);

    function modelNames(d) {
        const m = get(d, 'models');
        return m && typeof m === 'object' ? Object.keys(m).sort() : [];
    }

    /* What each chart shows, from one /series answer. */
    const CHARTS = {
        requests: {
            unit: 'count',
            series: (d, n) =>
                ['2xx', '3xx', '4xx', '5xx'].map((k) => ({
                    label: k,
                    color: STATUS_COLORS[k],
                    data: column(get(d.requests, k), n),
                })),
        },
        errorRate: {
            unit: 'pct',
            range: [0, 100],
            series: (d, n) => [{ label: 'errors', color: '#c62828', data: scale(column(d.errorRate, n), 100) }],
        },
        latency: {
            unit: 'ms',
            series: (d, n) => [
                { label: 'p50', color: '#1f77b4', data: column(get(d.latencyMs, 'p50'), n) },
                { label: 'p99', color: '#d62728', data: column(get(d.latencyMs, 'p99'), n) },
            ],
        },
        cpu: {
            unit: 'ms',
            series: (d, n) => [
                { label: 'p50', color: '#1f77b4', data: column(get(d.cpuMs, 'p50'), n) },
                { label: 'p99', color: '#d62728', data: column(get(d.cpuMs, 'p99'), n) },
            ],
        },
        tokens: {
            unit: 'tokens',
            series: (d, n) =>
                modelNames(d).map((m) => ({
                    label: m,
                    color: modelColor(m),
                    data: add(column(get(d.models[m], 'inputTokens'), n), column(get(d.models[m], 'outputTokens'), n)),
                })),
        },
        cost: {
            unit: 'usd',
            series: (d, n) =>
                modelNames(d).map((m) => ({ label: m, color: modelColor(m), data: column(get(d.models[m], 'costUsd'), n) })),
        },
        cacheHitRatio: {
            unit: 'pct',
            range: [0, 100],
            series: (d, n) => [{ label: 'hits', color: '#2ca02c', data: scale(column(d.cacheHitRatio, n), 100) }],
        },
        retries: {
            unit: 'count',
            series: (d, n) => [{ label: 'retries', color: '#ff7f0e', data: column(d.retries, n) }],
        },
        queueDepth: {
            unit: 'count',
            series: (d, n) => [{ label: 'queued', color: '#9467bd', data: column(d.queueDepth, n) }],
        },
    };

    const plots = {}; /* chart name -> {key, plot} */

    /* Records on the container what uPlot just drew. */
    function markDrawn(el, u) {
        let points = 0;
        for (let s = 1; s < u.data.length; s++) for (const v of u.data[s]) if (v !== null && v !== undefined) points++;
        el.dataset.points = String(points);
        el.dataset.series = String(u.series.length - 1);
        el.dataset.draws = String((Number(el.dataset.draws) || 0) + 1);
    }

    function chartWidth(el) {
        return Math.max(200, Math.floor(el.clientWidth || 360));
    }

    function plotOptions(el, spec, series) {
        const fmt = FORMATS[spec.unit];
        const axis = { stroke: '#5f6b7a', grid: { stroke: '#eceff2', width: 1 }, ticks: { stroke: '#dde1e6', width: 1 } };
        return {
            width: chartWidth(el),
            height: CHART_HEIGHT,
            scales: {
                x: { time: true },
                y: {
                    range: spec.range || ((u, min, max) => [0, num(max) && max > 0 ? max * 1.1 : 1]),
                },
            },
            series: [{ value: (u, v) => (v === null ? '–' : fmtClock(v * 1000)) }].concat(
                series.map((s) => ({
                    label: s.label,
                    stroke: s.color,
                    width: 1.5,
                    spanGaps: false,
                    points: { show: true, size: 4, stroke: s.color, fill: s.color },
                    value: (u, v) => (v === null || v === undefined ? '–' : fmt(v)),
                }))
            ),
            axes: [
                Object.assign({}, axis),
                Object.assign({}, axis, {
                    values: (u, splits) => splits.map((v) => fmtAxis(spec.unit, v)),
                    /* wide enough for the longest label, so none is clipped */
                    size: (u, values) => 20 + 8 * Math.max(3, ...(values || []).map((v) => String(v).length)),
                }),
            ],
            legend: { live: true },
            cursor: { drag: { x: false, y: false } },
            hooks: { draw: [(u) => markDrawn(el, u)] },
        };
    }

    function renderChart(name, el, x, series) {
        const spec = CHARTS[name];
        const data = [x].concat(series.map((s) => s.data));
        const key = series.map((s) => s.label).join('\n');
        const cur = plots[name];
        if (cur && cur.key === key) {
            cur.plot.setData(data);
            return;
        }
        /* The set of series changed (a model appeared or left): start over. */
        if (cur) cur.plot.destroy();
        plots[name] = { key, plot: new uPlot(plotOptions(el, spec, series), data, el) };
    }

    const resizer = new ResizeObserver((entries) => {
        for (const e of entries) {
            const name = e.target.dataset.chart;
            const p = plots[name];
            if (p && Math.abs(p.plot.width - chartWidth(e.target)) > 1) p.plot.setSize({ width: chartWidth(e.target), height: CHART_HEIGHT });
        }
    });

    function renderSeries(d) {
        const x = Array.isArray(d.minutes) ? d.minutes.filter(num) : [];
        const n = x.length;
        for (const el of $$('.chart[data-chart]')) {
            const name = el.dataset.chart;
            if (!CHARTS[name]) continue;
            renderChart(name, el, x, CHARTS[name].series(d, n));
        }
    }

    /* ---- polling ------------------------------------------------------- */

    function setState(text, isError) {
        const s = $('#state');
        s.textContent = text;
        s.classList.toggle('error', !!isError);
    }

    let seriesBusy = false;
    async function pollSeries() {
        if (seriesBusy) return;
        seriesBusy = true;
        try {
            const d = await getJSON('series?minutes=60', 'series');
            renderSeries(d);
            hideNotice();
            setState('updated ' + fmtClock(Date.now()));
        } catch (e) {
            noteError(e);
            setState(e.message || String(e), true);
        } finally {
            seriesBusy = false;
        }
    }

    function setTotal(key, text) {
        const el = $('[data-total="' + key + '"]');
        if (el) el.textContent = text;
    }

    function pair(o, fmt) {
        return fmt(get(o, 'p50')) + ' / ' + fmt(get(o, 'p99'));
    }

    function cell(tr, text, cls) {
        const td = document.createElement('td');
        td.textContent = text;
        if (cls) td.className = cls;
        tr.appendChild(td);
        return td;
    }

    function renderStats(s) {
        setTotal('requests', fmtCount(s.requests));
        setTotal('errorRate', num(s.errorRate) ? fmtPct(s.errorRate * 100) : '–');
        setTotal('latency', pair(s.latencyMs, fmtMs));
        setTotal('cpu', pair(s.cpuMs, fmtMs));
        setTotal('upstreamRequests', fmtCount(s.upstreamRequests));
        setTotal('cacheHits', fmtCount(s.cacheHits));
        setTotal('tokens', fmtCompact(get(s.tokens, 'input')) + ' / ' + fmtCompact(get(s.tokens, 'output')));
        setTotal('costUsd', fmtUsd(s.costUsd));

        const groups = (Array.isArray(s.groups) ? s.groups : []).filter((g) => g && g.key !== undefined && g.key !== null && g.key !== '');
        groups.sort((a, b) => (b.costUsd || 0) - (a.costUsd || 0) || (b.requests || 0) - (a.requests || 0));
        const tbody = $('#models tbody');
        const rows = groups.map((g) => {
            const tr = document.createElement('tr');
            tr.dataset.model = String(g.key);
            cell(tr, String(g.key));
            cell(tr, fmtCount(g.requests), 'num');
            cell(tr, fmtCount(g.errors), 'num');
            cell(tr, fmtCount(get(g.tokens, 'input')), 'num');
            cell(tr, fmtCount(get(g.tokens, 'output')), 'num');
            cell(tr, fmtUsd(g.costUsd), 'num');
            cell(tr, fmtCount(g.cacheHits), 'num');
            cell(tr, pair(g.latencyMs, fmtMs), 'num');
            return tr;
        });
        tbody.replaceChildren(...rows);
        $('#models-empty').hidden = rows.length > 0;
    }

    let statsBusy = false;
    async function pollStats() {
        if (statsBusy) return;
        statsBusy = true;
        try {
            renderStats(await getJSON('stats?since=1h&by=model', 'stats'));
        } catch (e) {
            noteError(e);
            setState(e.message || String(e), true);
        } finally {
            statsBusy = false;
        }
    }

    /* ---- live tail ----------------------------------------------------- */

    const filters = $('#tail-filters');
    let tailCtl = null;
    let tailTimer = null;
    let tailRetryMs = 1000;

    function setTailState(text) {
        $('#tail-state').textContent = text;
    }

    /* The filters go to the server as query parameters; it filters, so a
     * narrow tail costs it nothing for what it drops. %20 for spaces, not '+'. */
    function tailURL() {
        const q = ['format=json'];
        for (const box of $$('input[name="status"]:checked', filters)) q.push('status=' + encodeURIComponent(box.value));
        for (const name of ['method', 'search', 'route', 'model']) {
            const v = filters.elements[name].value.trim();
            if (v) q.push(name + '=' + encodeURIComponent(v));
        }
        return 'tail?' + q.join('&');
    }

    function restartTail() {
        if (tailCtl) tailCtl.abort();
        tailCtl = null;
        clearTimeout(tailTimer);
        tailRetryMs = 1000;
        runTail();
    }

    async function runTail() {
        const ctl = new AbortController();
        tailCtl = ctl;
        setTailState('connecting…');
        try {
            const r = await fetch(tailURL(), { headers: requestHeaders('text/event-stream'), cache: 'no-store', signal: ctl.signal });
            if (!r.ok) throw new HttpError('tail', r.status);
            if (!r.body) throw new Error('tail: no stream');
            setTailState('live');
            tailRetryMs = 1000;
            const reader = r.body.getReader();
            const decoder = new TextDecoder();
            let buf = '';
            for (;;) {
                const { value, done } = await reader.read();
                if (done) break;
                buf += decoder.decode(value, { stream: true });
                for (;;) {
                    const m = /\r?\n\r?\n/.exec(buf);
                    if (!m) break;
                    onBlock(buf.slice(0, m.index));
                    buf = buf.slice(m.index + m[0].length);
                }
            }
            throw new Error('tail: the stream ended');
        } catch (e) {
            if (ctl.signal.aborted) return;
            noteError(e);
            setTailState((e.message || String(e)) + '; reconnecting…');
            tailTimer = setTimeout(() => {
                if (tailCtl === ctl) runTail();
            }, tailRetryMs);
            tailRetryMs = Math.min(tailRetryMs * 2, TAIL_RETRY_MAX_MS);
        }
    }

    /* One server-sent event: its data lines, joined. Comments (":") and other
     * fields are skipped. */
    function onBlock(block) {
        const data = [];
        for (const line of block.split(/\r?\n/)) {
            if (line.startsWith('data:')) data.push(line.slice(line.startsWith('data: ') ? 6 : 5));
        }
        if (!data.length) return;
        let ev;
        try {
            ev = JSON.parse(data.join('\n'));
        } catch (e) {
            return;
        }
        if (ev && typeof ev === 'object') onTailEvent(ev);
    }

    function onTailEvent(ev) {
        const ag = get(ev, 'aigate') || {};
        if (num(ag.dropped) && ag.dropped > 0) addNotice(ag.dropped);
        if (!ev.event || typeof ev.event !== 'object') return;
        addRow(ev, ag);
    }

    function prepend(tr) {
        const tbody = $('#tail tbody');
        tbody.insertBefore(tr, tbody.firstChild);
        while (tbody.rows.length > TAIL_MAX_ROWS) tbody.deleteRow(-1);
        $('#tail-empty').hidden = true;
    }

    function addNotice(n) {
        const tr = document.createElement('tr');
        tr.className = 'notice';
        const td = cell(tr, n + (n === 1 ? ' event' : ' events') + ' dropped: the tail could not keep up');
        td.colSpan = 10;
        prepend(tr);
    }

    function pathOf(url) {
        if (typeof url !== 'string') return '';
        try {
            return new URL(url, location.origin).pathname;
        } catch (e) {
            return url;
        }
    }

    function addRow(ev, ag) {
        const req = get(ev.event, 'request');
        const status = get(get(ev.event, 'response'), 'status');
        const tr = document.createElement('tr');
        tr.className = 'fresh ' + String(ev.outcome || '');
        if (num(status) && status >= 400 && status < 500) tr.classList.add('client-error');
        if (ag.requestId) tr.dataset.requestId = String(ag.requestId);
        tr.title = [ag.requestId && 'request ' + ag.requestId, ag.route && 'route ' + ag.route, ag.key && 'key ' + ag.key]
            .filter(Boolean)
            .join(', ');
        cell(tr, num(ev.eventTimestamp) ? fmtClock(ev.eventTimestamp) : '');
        if (req) {
            cell(tr, String(req.method || ''));
            cell(tr, pathOf(req.url), 'path');
        } else {
            /* a scheduled run */
            cell(tr, 'cron');
            cell(tr, [ev.event.cron && '"' + ev.event.cron + '"', ag.task || ag.route].filter(Boolean).join(' '), 'path');
        }
        cell(tr, num(status) ? String(status) : String(ev.outcome || ''), 'num status');
        cell(tr, fmtMs(ev.wallTime), 'num');
        cell(tr, ag.model ? String(ag.model) : '');
        const tokens = (num(ag.inputTokens) ? ag.inputTokens : 0) + (num(ag.outputTokens) ? ag.outputTokens : 0);
        cell(tr, tokens > 0 ? (ag.inputTokens || 0) + '+' + (ag.outputTokens || 0) : '', 'num');
        cell(tr, num(ag.costUsd) && (tokens > 0 || ag.costUsd > 0 || ag.cached) ? fmtUsd(ag.costUsd) : '', 'num');
        cell(tr, ag.cached ? 'hit' : '', 'cached');
        const notes = [ag.stream ? 'stream' : '', num(ag.retries) && ag.retries > 0 ? 'retries=' + ag.retries : '', ev.outcome === 'canceled' ? 'canceled' : ''];
        cell(tr, notes.filter(Boolean).join(' '));
        prepend(tr);
    }

    let filterTimer = null;
    filters.addEventListener('submit', (e) => e.preventDefault());
    filters.addEventListener('change', (e) => {
        if (e.target.type === 'text' || e.target.type === 'search') return; /* 'input' has it */
        clearTimeout(filterTimer);
        clearTail();
        restartTail();
    });
    filters.addEventListener('input', (e) => {
        if (e.target.type !== 'text' && e.target.type !== 'search') return;
        clearTimeout(filterTimer);
        filterTimer = setTimeout(() => {
            clearTail();
            restartTail();
        }, 400);
    });

    function clearTail() {
        $('#tail tbody').replaceChildren();
        $('#tail-empty').hidden = false;
    }
    $('#tail-clear').addEventListener('click', clearTail);

    /* ---- start --------------------------------------------------------- */

    for (const el of $$('.chart[data-chart]')) resizer.observe(el);
    pollSeries();
    pollStats();
    runTail();
    setInterval(pollSeries, SERIES_EVERY_MS);
    setInterval(pollStats, STATS_EVERY_MS);
})();

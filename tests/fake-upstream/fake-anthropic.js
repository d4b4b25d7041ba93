// SPDX-License-Identifier: MIT
//
// fake-anthropic.js: a local stand-in for the Anthropic Messages API that aigate's integration
// tests and benchmarks run against: deterministic replies, fault-injection knobs, and counters
// that let a test assert exactly what reached upstream. No npm dependencies (node >= 18).
'use strict';

const http = require('node:http');
const crypto = require('node:crypto');
const { EventEmitter } = require('node:events');

// Top-level request fields the real API accepts (docs/anthropic-api.md section 1.2). Anything
// else is rejected the way the real API does, so a gateway that leaks its own fields is caught.
const MESSAGE_FIELDS = new Set([
    'model', 'max_tokens', 'messages', 'system', 'temperature', 'top_p', 'top_k',
    'stop_sequences', 'stream', 'metadata', 'tools', 'tool_choice', 'thinking', 'service_tier',
    'container', 'inference_geo', 'output_config', 'cache_control', 'mcp_servers',
]);
const COUNT_TOKENS_FIELDS = new Set([
    'model', 'messages', 'system', 'tools', 'tool_choice', 'thinking', 'cache_control',
    'output_config', 'mcp_servers',
]);

const ERROR_TYPES = {
    400: ['invalid_request_error', 'invalid request'],
    401: ['authentication_error', 'invalid x-api-key'],
    402: ['billing_error', 'Your credit balance is too low to access the Anthropic API.'],
    403: ['permission_error', 'Your API key does not have permission to use the specified resource.'],
    404: ['not_found_error', 'The requested resource could not be found.'],
    413: ['request_too_large', 'Request exceeds the maximum allowed number of bytes.'],
    429: ['rate_limit_error', 'Number of request tokens has exceeded your per-minute rate limit'],
    500: ['api_error', 'Internal server error'],
    504: ['timeout_error', 'Request timed out'],
    529: ['overloaded_error', 'Overloaded'],
};

function errorTypeFor(status) {
    if (ERROR_TYPES[status]) return ERROR_TYPES[status];
    // The docs: invalid_request_error also covers "other 4XX not listed".
    return status < 500 ? ['invalid_request_error', 'invalid request'] : ['api_error', 'Internal server error'];
}

const DEFAULT_KNOBS = Object.freeze({
    latencyMs: 0,
    tokenDelayMs: 0,
    failEvery: 0,
    failStatus: 0,
    reset: false,
    stall: false,
    garbage: false,
    midStreamError: null,
    retryAfter: null,
    shouldRetry: null,
    retryAfterMs: null,
    script: null,
    modelStatus: null,
    rateWindow: null,
    maxBodyBytes: 32 * 1024 * 1024,
});

// One step of a `script`: 200 (answer normally), a status 400..599, 'reset', 'stall', or an
// object {status, retryAfter, retryAfterMs, shouldRetry} for an error with its own headers.
function checkScriptStep(v, i) {
    if (v === 200 || v === 'reset' || v === 'stall') return v;
    if (Number.isInteger(v) && v >= 400 && v <= 599) return v;
    if (v && typeof v === 'object' && !Array.isArray(v) && Number.isInteger(v.status) &&
        v.status >= 400 && v.status <= 599) {
        for (const k of Object.keys(v)) {
            if (!['status', 'retryAfter', 'retryAfterMs', 'shouldRetry'].includes(k))
                throw new Error(`script[${i}].${k}: unknown field`);
        }
        return { ...v };
    }
    throw new Error(`script[${i}]: must be 200, a status 400..599, "reset", "stall" or {status,...}`);
}

function isNonNegInt(v) {
    return Number.isInteger(v) && v >= 0;
}

// Returns a full knob set: base overlaid with the validated fields of k. Throws on an unknown
// knob or a bad value so that a typo in a test fails loudly instead of silently doing nothing.
function mergeKnobs(base, k) {
    if (k === null || typeof k !== 'object' || Array.isArray(k)) throw new Error('knobs must be a JSON object');
    const out = { ...base };
    for (const [name, v] of Object.entries(k)) {
        switch (name) {
        case 'latencyMs':
        case 'tokenDelayMs':
        case 'failEvery':
            if (!isNonNegInt(v)) throw new Error(`${name}: must be an integer >= 0`);
            out[name] = v;
            break;
        case 'failStatus':
            if (v === null || v === false) v = 0;
            if (!(v === 0 || (Number.isInteger(v) && v >= 400 && v <= 599)))
                throw new Error('failStatus: must be 0 or an integer 400..599');
            out[name] = v;
            break;
        case 'reset':
        case 'stall':
        case 'garbage':
            if (typeof v !== 'boolean') throw new Error(`${name}: must be a boolean`);
            out[name] = v;
            break;
        case 'midStreamError':
            if (v === null || v === false) out[name] = null;
            else if (v === true) out[name] = 1;
            else if (isNonNegInt(v)) out[name] = v;
            else throw new Error('midStreamError: must be null, a boolean or an integer >= 0');
            break;
        case 'retryAfter':
            if (v !== null && !(typeof v === 'number' && Number.isFinite(v) && v >= 0))
                throw new Error('retryAfter: must be null or a number >= 0');
            out[name] = v;
            break;
        case 'shouldRetry':
            if (v !== null && typeof v !== 'boolean') throw new Error('shouldRetry: must be null or a boolean');
            out[name] = v;
            break;
        case 'maxBodyBytes':
            if (!(Number.isInteger(v) && v > 0)) throw new Error('maxBodyBytes: must be an integer > 0');
            out[name] = v;
            break;
        case 'retryAfterMs':
            if (v !== null && !(typeof v === 'number' && Number.isFinite(v) && v >= 0))
                throw new Error('retryAfterMs: must be null or a number >= 0');
            out[name] = v;
            break;
        case 'script':
            // Consumed one step per /v1/messages request, in arrival order; then normal answers.
            if (v !== null && !Array.isArray(v)) throw new Error('script: must be null or an array');
            out[name] = v === null ? null : v.map(checkScriptStep);
            break;
        case 'modelStatus':
            // {model: status}: every request for that model gets the status.
            if (v !== null && (typeof v !== 'object' || Array.isArray(v)))
                throw new Error('modelStatus: must be null or an object');
            if (v) {
                for (const [m, st] of Object.entries(v)) {
                    if (!(Number.isInteger(st) && st >= 400 && st <= 599))
                        throw new Error(`modelStatus.${m}: must be a status 400..599`);
                }
            }
            out[name] = v === null ? null : { ...v };
            break;
        case 'rateWindow':
            // {limit, windowMs}: a fixed window of `limit` requests; the requests-* headers count
            // it down to its reset (ms precision), and a request past the limit gets a 429
            // (counted in stats.spentHits).
            if (v !== null && !(v && Number.isInteger(v.limit) && v.limit > 0 &&
                                Number.isInteger(v.windowMs) && v.windowMs > 0))
                throw new Error('rateWindow: must be null or {limit: int > 0, windowMs: int > 0}');
            out[name] = v === null ? null : { limit: v.limit, windowMs: v.windowMs };
            break;
        default:
            throw new Error(`${name}: unknown knob`);
        }
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// Tokens. One token = one whitespace-separated word; usage counts and max_tokens use the same
// rule, so tests can predict every number.

function wordCount(s) {
    const m = s.match(/\S+/g);
    return m ? m.length : 0;
}

// Splits s into one piece per word, each carrying the whitespace before it; trailing whitespace
// rides on the last piece. pieces(s).join('') === s for any s with at least one word.
function pieces(s) {
    const m = s.match(/\s*\S+\s*$|\s*\S+/g);
    if (!m) return s ? [s] : [];
    return m;
}

// Text of one message's content: a string, or the text of its text blocks and of tool_result
// contents, joined with "\n".
function contentText(content) {
    if (typeof content === 'string') return content;
    if (!Array.isArray(content)) return '';
    const parts = [];
    for (const b of content) {
        if (!b || typeof b !== 'object') continue;
        if (b.type === 'text' && typeof b.text === 'string') parts.push(b.text);
        else if (b.type === 'tool_result') parts.push(contentText(b.content));
    }
    return parts.join('\n');
}

function inputTokens(body) {
    let n = 0;
    if (body.system !== undefined) n += wordCount(contentText(body.system));
    for (const m of body.messages) n += wordCount(contentText(m.content));
    return Math.max(1, n);
}

function lastUserText(body) {
    for (let i = body.messages.length - 1; i >= 0; i--) {
        if (body.messages[i].role === 'user') return contentText(body.messages[i].content);
    }
    return '';
}

// Leading [[name]] / [[name:value]] tags of the prompt: per-request overrides, because the
// gateway forwards neither custom headers nor unknown fields.
function directives(prompt) {
    const d = {};
    const re = /^\s*\[\[([a-z-]+)(?::([^\]]*))?\]\]/;
    let rest = prompt;
    for (let i = 0; i < 32; i++) {
        const m = re.exec(rest);
        if (!m) break;
        rest = rest.slice(m[0].length);
        const name = m[1];
        const num = m[2] !== undefined && /^\d+$/.test(m[2]) ? Number(m[2]) : null;
        switch (name) {
        case 'blocks':
        case 'thinking':
        case 'reset':
        case 'stall':
        case 'garbage':
            d[name] = true;
            break;
        case 'status':
            if (num !== null && num >= 400 && num <= 599) d.status = num;
            break;
        case 'midstream':
            d.midstream = num === null ? 1 : num;
            break;
        case 'latency':
        case 'delay':
        case 'words':
            if (num !== null) d[name] = num;
            break;
        default:
            break;
        }
    }
    return d;
}

// ---------------------------------------------------------------------------------------------
// Validation: returns an error message for a 400, or null.

function validateMessages(messages, where) {
    if (!Array.isArray(messages)) return `${where}: Input should be a valid list`;
    if (messages.length === 0) return `${where}: at least one message is required`;
    for (let i = 0; i < messages.length; i++) {
        const m = messages[i];
        const p = `${where}.${i}`;
        if (!m || typeof m !== 'object' || Array.isArray(m)) return `${p}: Input should be a valid dictionary`;
        for (const k of Object.keys(m)) {
            if (k !== 'role' && k !== 'content') return `${p}.${k}: Extra inputs are not permitted`;
        }
        if (m.role === undefined) return `${p}.role: Field required`;
        if (m.role !== 'user' && m.role !== 'assistant') return `${p}.role: Input should be 'user' or 'assistant'`;
        if (m.content === undefined) return `${p}.content: Field required`;
        if (typeof m.content === 'string') continue;
        if (!Array.isArray(m.content)) return `${p}.content: Input should be a valid string or list`;
        for (let j = 0; j < m.content.length; j++) {
            const b = m.content[j];
            if (!b || typeof b !== 'object' || Array.isArray(b)) return `${p}.content.${j}: Input should be a valid dictionary`;
            if (typeof b.type !== 'string') return `${p}.content.${j}.type: Field required`;
            if (b.type === 'text' && typeof b.text !== 'string') return `${p}.content.${j}.text: Field required`;
        }
    }
    return null;
}

function validateCommon(body, allowed) {
    if (!body || typeof body !== 'object' || Array.isArray(body)) return 'Input should be a valid dictionary';
    for (const k of Object.keys(body)) {
        if (!allowed.has(k)) return `${k}: Extra inputs are not permitted`;
    }
    if (body.model === undefined) return 'model: Field required';
    if (typeof body.model !== 'string') return 'model: Input should be a valid string';
    if (body.model.length < 1 || body.model.length > 256) return 'model: String should have between 1 and 256 characters';
    if (body.messages === undefined) return 'messages: Field required';
    const e = validateMessages(body.messages, 'messages');
    if (e) return e;
    if (body.system !== undefined && typeof body.system !== 'string' && !Array.isArray(body.system))
        return 'system: Input should be a valid string or list';
    return null;
}

function validateMessageBody(body) {
    const e = validateCommon(body, MESSAGE_FIELDS);
    if (e) return e;
    if (body.max_tokens === undefined) return 'max_tokens: Field required';
    if (!Number.isInteger(body.max_tokens)) return 'max_tokens: Input should be a valid integer';
    if (body.max_tokens < 1) return 'max_tokens: Input should be greater than or equal to 1';
    if (body.stream !== undefined && typeof body.stream !== 'boolean') return 'stream: Input should be a valid boolean';
    if (body.metadata !== undefined) {
        if (!body.metadata || typeof body.metadata !== 'object' || Array.isArray(body.metadata))
            return 'metadata: Input should be a valid dictionary';
        for (const k of Object.keys(body.metadata)) {
            if (k !== 'user_id') return `metadata.${k}: Extra inputs are not permitted`;
        }
    }
    if (body.stop_sequences !== undefined) {
        if (!Array.isArray(body.stop_sequences)) return 'stop_sequences: Input should be a valid list';
        for (const s of body.stop_sequences) {
            if (typeof s !== 'string') return 'stop_sequences: Input should be a valid list of strings';
            if (!s.trim()) return 'stop_sequences: each stop sequence must contain non-whitespace';
        }
    }
    if (body.tools !== undefined && !Array.isArray(body.tools)) return 'tools: Input should be a valid list';
    return null;
}

// ---------------------------------------------------------------------------------------------
// The reply: a list of blocks, each with the pieces its deltas stream, cut to max_tokens.

function buildReply(body, d, ids) {
    const prompt = lastUserText(body);
    const blocks = [];
    let stopReason = 'end_turn';
    let stopSequence = null;

    let main;
    if (d.words !== undefined) {
        const w = [];
        for (let i = 1; i <= d.words; i++) w.push(`w${i}`);
        main = w.join(' ');
    } else {
        main = 'Echo: ' + prompt;
    }
    if (Array.isArray(body.stop_sequences) && !d.blocks) {
        let at = -1;
        for (const s of body.stop_sequences) {
            const i = main.indexOf(s);
            if (i >= 0 && (at < 0 || i < at)) {
                at = i;
                stopSequence = s;
            }
        }
        if (at >= 0) {
            main = main.slice(0, at);
            stopReason = 'stop_sequence';
        }
    }

    if (d.thinking) {
        const thinking = 'Thinking about: ' + prompt;
        const signature = crypto.createHash('sha256').update(thinking).digest('base64');
        blocks.push({ type: 'thinking', text: thinking, signature });
    }
    blocks.push({ type: 'text', text: main });
    if (d.blocks) {
        const name = Array.isArray(body.tools) && body.tools[0] && typeof body.tools[0].name === 'string'
            ? body.tools[0].name : 'fake_tool';
        blocks.push({ type: 'tool_use', id: ids.tool(), name, input: { echo: prompt } });
        blocks.push({ type: 'text', text: 'Second text block.' });
        stopReason = 'tool_use';
    }

    // Cut to max_tokens: a text or thinking block keeps its first words; a tool_use block that
    // does not fit whole is dropped, and so is every later block.
    let budget = body.max_tokens;
    let used = 0;
    const out = [];
    for (const b of blocks) {
        if (budget === 0) {
            stopReason = 'max_tokens';
            stopSequence = null;
            break;
        }
        if (b.type === 'tool_use') {
            b.json = JSON.stringify(b.input);
            const n = wordCount(b.json);
            if (n > budget) {
                stopReason = 'max_tokens';
                stopSequence = null;
                break;
            }
            b.tokens = n;
            // Fragments like the real API's: an empty first one, then short slices that may
            // split escapes and words.
            b.pieces = [''];
            for (let i = 0; i < b.json.length; i += 8) b.pieces.push(b.json.slice(i, i + 8));
        } else {
            let p = pieces(b.text);
            const n = wordCount(b.text);
            if (n > budget) {
                p = p.slice(0, budget);
                b.text = p.join('');
                b.tokens = budget;
                b.pieces = p;
                used += budget;
                budget = 0;
                out.push(b);
                stopReason = 'max_tokens';
                stopSequence = null;
                break;
            }
            b.pieces = p;
            b.tokens = n;
        }
        used += b.tokens;
        budget -= b.tokens;
        out.push(b);
    }
    return { blocks: out, stopReason, stopSequence, outputTokens: used };
}

function blockJSON(b) {
    switch (b.type) {
    case 'thinking':
        return { type: 'thinking', thinking: b.text, signature: b.signature };
    case 'tool_use':
        return { type: 'tool_use', id: b.id, name: b.name, input: b.input };
    default:
        return { type: 'text', text: b.text };
    }
}

function blockStartJSON(b) {
    switch (b.type) {
    case 'thinking':
        return { type: 'thinking', thinking: '' };
    case 'tool_use':
        return { type: 'tool_use', id: b.id, name: b.name, input: {} };
    default:
        return { type: 'text', text: '' };
    }
}

function deltaJSON(b, piece) {
    switch (b.type) {
    case 'thinking':
        return { type: 'thinking_delta', thinking: piece };
    case 'tool_use':
        return { type: 'input_json_delta', partial_json: piece };
    default:
        return { type: 'text_delta', text: piece };
    }
}

// ---------------------------------------------------------------------------------------------

// Unref'd: a held answer (a long latency) must not keep a closed fake's process
// alive; its client's socket keeps it alive while anyone waits for it.
function sleep(ms) {
    return ms > 0 ? new Promise((r) => setTimeout(r, ms).unref()) : Promise.resolve();
}

function rfc3339(ms) {
    return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function newStats() {
    return {
        requests: 0,
        ok: 0,
        errors: 0,
        streams: 0,
        streamsCompleted: 0,
        streamsAborted: 0,
        streamErrors: 0,
        writesBlocked: 0,
        resets: 0,
        stalls: 0,
        garbage: 0,
        countTokens: 0,
        spentHits: 0,
        inFlight: 0,
        maxInFlight: 0,
        connections: 0,
        statuses: {},
        lastRequest: null,
        bodies: [],
        arrivals: [],
    };
}

const STAT_WAIT_FIELDS = new Set([
    'requests', 'ok', 'errors', 'streams', 'streamsCompleted', 'streamsAborted', 'streamErrors',
    'writesBlocked', 'resets', 'stalls', 'garbage', 'countTokens', 'spentHits', 'inFlight', 'maxInFlight',
    'connections',
]);

function start(opts = {}) {
    const host = opts.host || '127.0.0.1';
    const apiKey = opts.apiKey || null;
    const verbose = !!opts.verbose;
    const knobOpts = {};
    for (const k of Object.keys(DEFAULT_KNOBS)) {
        if (opts[k] !== undefined) knobOpts[k] = opts[k];
    }
    const initialKnobs = mergeKnobs(DEFAULT_KNOBS, knobOpts);
    let knobs = initialKnobs;
    let failCounter = 0; // /v1/messages requests since the knobs were last set
    let stats = newStats();
    let seq = 0;
    const events = new EventEmitter();
    const waiters = new Set();

    const ids = {
        req: () => `req_fake${String(++seq).padStart(16, '0')}`,
        msg: () => `msg_fake${String(++seq).padStart(16, '0')}`,
        tool: () => `toolu_fake${String(++seq).padStart(16, '0')}`,
    };

    function notify() {
        for (const w of waiters) {
            if (stats[w.field] >= w.atLeast) {
                waiters.delete(w);
                clearTimeout(w.timer);
                w.resolve(true);
            }
        }
    }

    function inc(field, by = 1) {
        stats[field] += by;
        if (field === 'inFlight' && stats.inFlight > stats.maxInFlight) stats.maxInFlight = stats.inFlight;
        if (waiters.size) notify();
    }

    // Resolves true once stats[field] >= atLeast, false after timeoutMs.
    function waitFor(field, atLeast, timeoutMs) {
        if (!STAT_WAIT_FIELDS.has(field)) return Promise.reject(new Error(`${field}: not a counter`));
        if (stats[field] >= atLeast) return Promise.resolve(true);
        return new Promise((resolve) => {
            const w = { field, atLeast, resolve };
            w.timer = setTimeout(() => {
                waiters.delete(w);
                resolve(false);
            }, timeoutMs);
            waiters.add(w);
        });
    }

    function snapshot() {
        return { ...stats, statuses: { ...stats.statuses }, bodies: stats.bodies.slice(),
            arrivals: stats.arrivals.slice() };
    }

    function resetStats() {
        const inFlight = stats.inFlight;
        stats = newStats();
        stats.inFlight = inFlight;
    }

    // The rateWindow knob's state: the current window's end and what it has counted.
    const win = { end: 0, used: 0 };

    // Counts one request against rateWindow; false when the window is spent.
    function takeWindow(rw) {
        const now = Date.now();
        if (now >= win.end) {
            win.end = now + rw.windowMs;
            win.used = 0;
        }
        if (win.used >= rw.limit) return false;
        win.used++;
        return true;
    }

    function rateLimitHeaders() {
        const now = Date.now();
        const reset = rfc3339(now + 60000);
        const h = {};
        for (const [kind, limit, remaining] of [
            ['requests', 1000, 999], ['tokens', 96000, 90000],
            ['input-tokens', 80000, 78000], ['output-tokens', 16000, 12000]]) {
            h[`anthropic-ratelimit-${kind}-limit`] = String(limit);
            h[`anthropic-ratelimit-${kind}-remaining`] = String(remaining);
            h[`anthropic-ratelimit-${kind}-reset`] = reset;
        }
        const rw = knobs.rateWindow;
        if (rw) {
            h['anthropic-ratelimit-requests-limit'] = String(rw.limit);
            h['anthropic-ratelimit-requests-remaining'] = String(Math.max(0, rw.limit - win.used));
            h['anthropic-ratelimit-requests-reset'] = new Date(win.end).toISOString();
        }
        return h;
    }

    function countStatus(status) {
        stats.statuses[status] = (stats.statuses[status] || 0) + 1;
    }

    function sendJSON(res, status, obj, headers = {}) {
        const body = JSON.stringify(obj);
        res.writeHead(status, {
            'content-type': 'application/json',
            'content-length': Buffer.byteLength(body),
            ...headers,
        });
        res.end(body);
    }

    // An Anthropic-shaped error. api marks /v1 answers, which count in the stats.
    function sendError(res, ctx, status, message, api = true, step = null) {
        const [type, defaultMessage] = errorTypeFor(status);
        const headers = { 'request-id': ctx.requestId };
        if (api) {
            Object.assign(headers, rateLimitHeaders());
            // A script step's own fields win; its explicit null means "no such header".
            const o = step && typeof step === 'object' ? step : {};
            const ram = 'retryAfterMs' in o ? o.retryAfterMs : knobs.retryAfterMs;
            const sr = 'shouldRetry' in o ? o.shouldRetry : knobs.shouldRetry;
            let ra = 'retryAfter' in o ? o.retryAfter : knobs.retryAfter;
            if (!('retryAfter' in o) && ra === null && status === 429 && ram === null) ra = 1;
            if (ra !== null) headers['retry-after'] = String(ra);
            if (ram !== null) headers['retry-after-ms'] = String(ram);
            if (sr !== null) headers['x-should-retry'] = String(sr);
            inc('errors');
            countStatus(status);
        }
        sendJSON(res, status, { type: 'error', error: { type, message: message || defaultMessage } }, headers);
        if (verbose) process.stderr.write(`fake-anthropic: ${ctx.method} ${ctx.path} -> ${status} ${message || ''}\n`);
    }

    function readBody(req, limit) {
        return new Promise((resolve, reject) => {
            const chunks = [];
            let size = 0;
            req.on('data', (c) => {
                size += c.length;
                // Past the limit keep reading, so the connection stays usable, but keep nothing.
                if (size <= limit) chunks.push(c);
            });
            req.on('end', () => resolve({ buf: size <= limit ? Buffer.concat(chunks) : null, size }));
            req.on('error', reject);
        });
    }

    function redactedHeaders(h) {
        const out = { ...h };
        for (const k of ['x-api-key', 'authorization']) {
            if (typeof out[k] === 'string') out[k] = out[k].length;
        }
        return out;
    }

    // Shared header checks of every /v1 endpoint; returns [status, message] or null.
    function checkHeaders(req) {
        let key = req.headers['x-api-key'];
        if (!key && typeof req.headers.authorization === 'string') {
            const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization);
            if (m) key = m[1];
        }
        if (!key) return [401, 'x-api-key header is required'];
        if (apiKey !== null && key !== apiKey) return [401, 'invalid x-api-key'];
        if (!req.headers['anthropic-version']) return [400, 'anthropic-version: header is required'];
        return null;
    }

    function checkContentType(req) {
        const ct = req.headers['content-type'] || '';
        if (!/^application\/json\b/i.test(ct.trim())) return [400, 'content-type: must be application/json'];
        return null;
    }

    function record(req, ctx, body) {
        const entry = body === undefined ? null : body;
        stats.lastRequest = {
            method: req.method,
            path: ctx.path,
            headers: redactedHeaders(req.headers),
            body: entry,
        };
        stats.bodies.push(entry);
        if (stats.bodies.length > 50) stats.bodies.shift();
    }

    function parseJSON(buf) {
        try {
            return { ok: true, value: JSON.parse(buf.toString('utf8')) };
        } catch (e) {
            return { ok: false, value: buf.toString('utf8') };
        }
    }

    async function handleMessages(req, res, ctx) {
        inc('requests');
        const n = ++failCounter;
        inc('inFlight');
        let done = false;
        res.on('close', () => {
            if (!done) {
                done = true;
                inc('inFlight', -1);
            }
        });
        const k = knobs; // one request sees one knob set, even if a test changes them meanwhile
        const { buf } = await readBody(req, k.maxBodyBytes);
        const parsed = buf ? parseJSON(buf) : { ok: false, value: null };
        record(req, ctx, parsed.value);
        const body = parsed.ok ? parsed.value : null;
        const validationError = parsed.ok ? validateMessageBody(body) : null;
        const d = body && !validationError ? directives(lastUserText(body)) : {};

        await sleep(d.latency !== undefined ? d.latency : k.latencyMs);
        if (res.destroyed) return;

        const hdr = checkHeaders(req) || checkContentType(req);
        if (hdr) return sendError(res, ctx, hdr[0], hdr[1]);
        if (!buf) return sendError(res, ctx, 413);
        if (!parsed.ok) return sendError(res, ctx, 400, 'invalid request: the request body is not valid JSON');
        if (validationError) return sendError(res, ctx, 400, validationError);

        stats.arrivals.push({ t: Date.now(), model: body.model, stream: !!body.stream });
        if (stats.arrivals.length > 200) stats.arrivals.shift();
        // A fault: the script's next step first, then the model's status, the prompt's tags,
        // the rate window, and the knobs (gated by failEvery).
        let fault = null;
        let midK = null;
        let step = null;
        if (k.script && k.script.length) {
            step = k.script.shift();
            if (step !== 200) fault = typeof step === 'object' ? step.status : step;
        } else if (k.modelStatus && k.modelStatus[body.model] !== undefined) {
            fault = k.modelStatus[body.model];
        } else if (k.rateWindow && !takeWindow(k.rateWindow)) {
            inc('spentHits');
            fault = 429;
        } else if (d.reset) fault = 'reset';
        else if (d.stall) fault = 'stall';
        else if (d.garbage) fault = 'garbage';
        else if (d.status !== undefined) fault = d.status;
        else if (d.midstream !== undefined) midK = d.midstream;
        else if (k.failEvery === 0 || n % k.failEvery === 0) {
            if (k.reset) fault = 'reset';
            else if (k.stall) fault = 'stall';
            else if (k.garbage) fault = 'garbage';
            else if (k.failStatus) fault = k.failStatus;
            else if (k.midStreamError !== null) midK = k.midStreamError;
            else if (k.failEvery > 0) fault = 500;
        }

        if (fault === 'reset') {
            inc('resets');
            events.emit('reset');
            req.socket.destroy();
            return;
        }
        if (fault === 'stall') {
            inc('stalls');
            events.emit('stall');
            return; // never answered; close() or the client ends it
        }
        if (fault === 'garbage') {
            inc('garbage');
            countStatus(200);
            const junk = '<html><body>upstream garbage: this is not JSON {"type":';
            res.writeHead(200, {
                'content-type': 'application/json',
                'content-length': Buffer.byteLength(junk),
                'request-id': ctx.requestId,
            });
            res.end(junk);
            return;
        }
        if (typeof fault === 'number') return sendError(res, ctx, fault, undefined, true, step);

        const reply = buildReply(body, d, ids);
        const input = inputTokens(body);
        const msgId = ids.msg();
        const headers = { 'request-id': ctx.requestId, 'anthropic-organization-id': 'fake-org', ...rateLimitHeaders() };

        if (!body.stream) {
            inc('ok');
            countStatus(200);
            sendJSON(res, 200, {
                id: msgId,
                type: 'message',
                role: 'assistant',
                model: body.model,
                content: reply.blocks.map(blockJSON),
                stop_reason: reply.stopReason,
                stop_sequence: reply.stopSequence,
                usage: {
                    input_tokens: input,
                    cache_creation_input_tokens: 0,
                    cache_read_input_tokens: 0,
                    output_tokens: reply.outputTokens,
                },
            }, headers);
            if (verbose) process.stderr.write(`fake-anthropic: POST ${ctx.path} -> 200\n`);
            return;
        }
        await stream(res, ctx, body, reply, input, msgId, headers, midK, d.delay !== undefined ? d.delay : k.tokenDelayMs);
    }

    async function stream(res, ctx, body, reply, input, msgId, headers, midK, delayMs) {
        inc('ok');
        inc('streams');
        countStatus(200);
        let finished = false;
        let aborted = false;
        res.on('close', () => {
            if (!finished) {
                finished = true;
                aborted = true;
                inc('streamsAborted');
                events.emit('streamAborted');
            }
        });
        res.writeHead(200, {
            'content-type': 'text/event-stream; charset=utf-8',
            'cache-control': 'no-cache',
            ...headers,
        });
        // One write per event, so per-token delays give separate chunks; wait for 'drain' when
        // the client reads slowly, counting each time back-pressure was seen.
        const write = async (name, data) => {
            if (aborted) return false;
            const ok = res.write(`event: ${name}\ndata: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`);
            if (!ok) {
                inc('writesBlocked');
                await new Promise((resolve) => {
                    const go = () => {
                        res.off('drain', go);
                        res.off('close', go);
                        resolve();
                    };
                    res.on('drain', go);
                    res.on('close', go);
                });
            }
            return !aborted;
        };
        let deltas = 0;
        const failHere = async () => {
            // Real framing of a mid-stream error: one error event, then the stream ends.
            await write('error', '{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}');
            if (aborted) return;
            finished = true;
            inc('streamErrors');
            events.emit('streamError');
            res.end();
        };

        const ok = await write('message_start', {
            type: 'message_start',
            message: {
                id: msgId,
                type: 'message',
                role: 'assistant',
                model: body.model,
                content: [],
                stop_reason: null,
                stop_sequence: null,
                usage: { input_tokens: input, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: 1 },
            },
        });
        if (!ok) return;
        for (let i = 0; i < reply.blocks.length; i++) {
            const b = reply.blocks[i];
            if (!(await write('content_block_start', { type: 'content_block_start', index: i, content_block: blockStartJSON(b) })))
                return;
            if (i === 0 && !(await write('ping', '{"type": "ping"}'))) return;
            for (const p of b.pieces) {
                if (midK !== null && deltas >= midK) return failHere();
                if (deltas > 0) await sleep(delayMs);
                if (!(await write('content_block_delta', { type: 'content_block_delta', index: i, delta: deltaJSON(b, p) })))
                    return;
                deltas++;
            }
            if (b.type === 'thinking') {
                const sig = { type: 'content_block_delta', index: i, delta: { type: 'signature_delta', signature: b.signature } };
                if (!(await write('content_block_delta', sig))) return;
            }
            if (midK !== null && i === reply.blocks.length - 1) return failHere();
            if (!(await write('content_block_stop', { type: 'content_block_stop', index: i }))) return;
        }
        // Cumulative usage, newer form: input counts repeated next to output_tokens.
        if (!(await write('message_delta', {
            type: 'message_delta',
            delta: { stop_reason: reply.stopReason, stop_sequence: reply.stopSequence },
            usage: {
                input_tokens: input,
                cache_creation_input_tokens: 0,
                cache_read_input_tokens: 0,
                output_tokens: reply.outputTokens,
            },
        })))
            return;
        if (!(await write('message_stop', { type: 'message_stop' }))) return;
        finished = true;
        inc('streamsCompleted');
        events.emit('streamCompleted');
        res.end();
        if (verbose) process.stderr.write(`fake-anthropic: POST ${ctx.path} -> 200 (stream)\n`);
    }

    async function handleCountTokens(req, res, ctx) {
        inc('countTokens');
        const { buf } = await readBody(req, knobs.maxBodyBytes);
        const parsed = buf ? parseJSON(buf) : { ok: false, value: null };
        record(req, ctx, parsed.value);
        // Answers here stay out of ok/errors/statuses, which describe /v1/messages only.
        const hdr = checkHeaders(req) || checkContentType(req);
        if (hdr) return sendError(res, ctx, hdr[0], hdr[1], false);
        if (!buf) return sendError(res, ctx, 413, undefined, false);
        if (!parsed.ok) return sendError(res, ctx, 400, 'invalid request: the request body is not valid JSON', false);
        const e = validateCommon(parsed.value, COUNT_TOKENS_FIELDS);
        if (e) return sendError(res, ctx, 400, e, false);
        sendJSON(res, 200, { input_tokens: inputTokens(parsed.value) }, { 'request-id': ctx.requestId });
    }

    const MODELS = ['claude-sonnet-4-20250514', 'claude-3-5-haiku-20241022'];
    function modelInfo(id) {
        return { type: 'model', id, display_name: `Fake ${id}`, created_at: '2025-01-01T00:00:00Z' };
    }

    async function handleModels(req, res, ctx) {
        await readBody(req, 1 << 20);
        const hdr = checkHeaders(req);
        if (hdr) return sendError(res, ctx, hdr[0], hdr[1], false);
        const one = /^\/v1\/models\/(.+)$/.exec(ctx.path);
        if (one) return sendJSON(res, 200, modelInfo(decodeURIComponent(one[1])), { 'request-id': ctx.requestId });
        sendJSON(res, 200, {
            data: MODELS.map(modelInfo),
            has_more: false,
            first_id: MODELS[0],
            last_id: MODELS[MODELS.length - 1],
        }, { 'request-id': ctx.requestId });
    }

    async function handleControl(req, res, ctx, url) {
        const { buf } = await readBody(req, 1 << 20);
        const route = `${req.method} ${ctx.path}`;
        switch (route) {
        case 'GET /stats':
            return sendJSON(res, 200, snapshot());
        case 'POST /stats/reset':
            resetStats();
            return sendJSON(res, 200, snapshot());
        case 'GET /stats/wait': {
            // Long poll: answers once the counter reaches atLeast, so tests need no sleeps.
            const field = url.searchParams.get('field') || '';
            const atLeast = Number(url.searchParams.get('atLeast') || '1');
            const timeoutMs = Math.min(Number(url.searchParams.get('timeoutMs') || '5000'), 600000);
            if (!STAT_WAIT_FIELDS.has(field) || !Number.isFinite(atLeast) || !Number.isFinite(timeoutMs))
                return sendJSON(res, 400, { error: 'field must name a counter; atLeast and timeoutMs numbers' });
            const met = await waitFor(field, atLeast, timeoutMs);
            if (res.destroyed) return;
            return sendJSON(res, met ? 200 : 504, { met, stats: snapshot() });
        }
        case 'GET /_control':
            return sendJSON(res, 200, knobs);
        case 'POST /_control': {
            const p = buf ? parseJSON(buf) : { ok: false };
            if (!p.ok) return sendJSON(res, 400, { error: 'body must be JSON' });
            try {
                knobs = mergeKnobs(knobs, p.value);
            } catch (e) {
                return sendJSON(res, 400, { error: e.message });
            }
            failCounter = 0;
            if (p.value && 'rateWindow' in p.value) win.end = 0;
            return sendJSON(res, 200, knobs);
        }
        case 'POST /_control/reset':
            knobs = initialKnobs;
            failCounter = 0;
            return sendJSON(res, 200, knobs);
        case 'GET /_health':
            return sendJSON(res, 200, { ok: true });
        default:
            return null;
        }
    }

    async function handle(req, res) {
        const url = new URL(req.url, 'http://fake');
        const ctx = { method: req.method, path: url.pathname, requestId: ids.req() };
        if (ctx.path === '/v1/messages') {
            if (req.method !== 'POST') {
                await readBody(req, 1 << 20);
                return sendError(res, ctx, 405, `Method ${req.method} not allowed`, false);
            }
            return handleMessages(req, res, ctx);
        }
        if (ctx.path === '/v1/messages/count_tokens' && req.method === 'POST') return handleCountTokens(req, res, ctx);
        if ((ctx.path === '/v1/models' || ctx.path.startsWith('/v1/models/')) && req.method === 'GET')
            return handleModels(req, res, ctx);
        if ((await handleControl(req, res, ctx, url)) === null && !res.headersSent) {
            sendError(res, ctx, 404, `${req.method} ${ctx.path}: not found`, false);
        }
    }

    const server = http.createServer({ noDelay: true }, (req, res) => {
        handle(req, res).catch((e) => {
            process.stderr.write(`fake-anthropic: internal error: ${e && e.stack ? e.stack : e}\n`);
            if (!res.headersSent) {
                sendError(res, { method: req.method, path: req.url, requestId: 'req_fake_internal' }, 500, String(e), false);
            } else {
                res.destroy();
            }
        });
    });
    // Long keep-alive so a pooling client never races an idle close; no request timeout so
    // that a stall stays a stall.
    server.keepAliveTimeout = 65000;
    server.headersTimeout = 66000;
    server.requestTimeout = 0;
    server.on('connection', () => inc('connections'));

    return new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(opts.port || 0, host, () => {
            server.off('error', reject);
            const port = server.address().port;
            let closing = null;
            resolve({
                port,
                host,
                url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
                events,
                close() {
                    if (!closing) {
                        closing = new Promise((r) => server.close(() => r()));
                        server.closeAllConnections();
                        for (const w of waiters) {
                            clearTimeout(w.timer);
                            w.resolve(false);
                        }
                        waiters.clear();
                    }
                    return closing;
                },
                stats: snapshot,
                resetStats,
                waitFor,
                knobs: () => knobs,
                setKnobs(kk) {
                    knobs = mergeKnobs(knobs, kk);
                    failCounter = 0;
                    if (kk && 'rateWindow' in kk) win.end = 0; // a new window from the next request
                    return knobs;
                },
                resetKnobs() {
                    knobs = initialKnobs;
                    failCounter = 0;
                    return knobs;
                },
            });
        });
    });
}

// ---------------------------------------------------------------------------------------------
// CLI

const USAGE = `usage: node fake-anthropic.js [--port N] [--host H] [--api-key KEY] [--verbose]
  knobs: --latency-ms N --token-delay-ms N --fail-every N --fail-status S --reset --stall
         --garbage --mid-stream-error K --retry-after S --should-retry true|false
         --max-body-bytes N
  see tests/fake-upstream/README.md`;

function parseArgs(argv) {
    const opts = {};
    for (let i = 0; i < argv.length; i++) {
        let arg = argv[i];
        if (arg === '-h' || arg === '--help') return { help: true };
        if (!arg.startsWith('--')) throw new Error(`unexpected argument: ${arg}`);
        let value;
        const eq = arg.indexOf('=');
        if (eq >= 0) {
            value = arg.slice(eq + 1);
            arg = arg.slice(0, eq);
        }
        const name = arg.slice(2).replace(/-([a-z])/g, (_, c) => c.toUpperCase());
        const takeValue = () => {
            if (value !== undefined) return value;
            if (i + 1 >= argv.length) throw new Error(`${arg}: needs a value`);
            return argv[++i];
        };
        if (name === 'port') opts.port = Number(takeValue());
        else if (name === 'host') opts.host = takeValue();
        else if (name === 'apiKey') opts.apiKey = takeValue();
        else if (name === 'verbose') opts.verbose = true;
        else if (!(name in DEFAULT_KNOBS)) throw new Error(`unknown option: ${arg}`);
        else if (typeof DEFAULT_KNOBS[name] === 'boolean') opts[name] = value === undefined ? true : value === 'true';
        else {
            const v = takeValue();
            opts[name] = v === 'true' ? true : v === 'false' ? false : v === 'null' ? null : Number(v);
        }
    }
    if (opts.port !== undefined && !(Number.isInteger(opts.port) && opts.port >= 0 && opts.port < 65536))
        throw new Error('--port: must be 0..65535');
    return opts;
}

async function main() {
    let opts;
    try {
        opts = parseArgs(process.argv.slice(2));
        if (opts.help) {
            process.stdout.write(USAGE + '\n');
            return;
        }
        mergeKnobs(DEFAULT_KNOBS, Object.fromEntries(Object.entries(opts).filter(([k]) => k in DEFAULT_KNOBS)));
    } catch (e) {
        process.stderr.write(`fake-anthropic: ${e.message}\n${USAGE}\n`);
        process.exit(2);
    }
    // The handlers go in before the "listening" line: a harness may signal as soon as it reads
    // it, and a signal that beats the handler would kill the process with the default action.
    let srv = null;
    const stop = () => {
        if (!srv) process.exit(0);
        srv.close().then(() => process.exit(0));
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
    srv = await start(opts);
    process.stdout.write(`listening on ${srv.host}:${srv.port}\n`);
}

module.exports = { start, wordCount, pieces, DEFAULT_KNOBS, MESSAGE_FIELDS };

if (require.main === module) {
    main().catch((e) => {
        process.stderr.write(`fake-anthropic: ${e.message}\n`);
        process.exit(1);
    });
}

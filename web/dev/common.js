// SPDX-License-Identifier: MIT
//
// common.js: what the two dev servers share: serving the page and its files
// the way aigate does (same paths, same Content-Security-Policy), the token
// rule, and the tail filters (platform.md section 2).
'use strict';

const fs = require('node:fs');
const path = require('node:path');

const WEB = path.join(__dirname, '..');
const CSP = "default-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' data:";
const TYPES = {
    '.html': 'text/html; charset=utf-8',
    '.js': 'text/javascript; charset=utf-8',
    '.css': 'text/css; charset=utf-8',
    '.svg': 'image/svg+xml',
};

function assetFile(urlPath) {
    if (urlPath === '/') return path.join(WEB, 'src/index.html');
    const m = /^\/assets\/([A-Za-z0-9._-]+)$/.exec(urlPath);
    if (!m) return null;
    for (const dir of ['src', 'node_modules/uplot/dist']) {
        const f = path.join(WEB, dir, m[1]);
        if (fs.existsSync(f)) return f;
    }
    return null;
}

// The page and its files carry no secret, and a browser cannot send a header
// when it navigates: they need no token. Everything else does.
function isPage(req, u) {
    return req.method === 'GET' && (u.pathname === '/' || u.pathname.startsWith('/assets/'));
}

function authorized(req, u, token) {
    return !token || isPage(req, u) || req.headers.authorization === `Bearer ${token}`;
}

// Answers a page or asset request; false when `u` names none.
function serveAsset(req, res, u) {
    const f = req.method === 'GET' ? assetFile(u.pathname) : null;
    if (!f) return false;
    res.writeHead(200, {
        'content-type': TYPES[path.extname(f)] || 'application/octet-stream',
        'content-security-policy': CSP,
        'x-content-type-options': 'nosniff',
        'cache-control': 'no-cache',
    });
    res.end(fs.readFileSync(f));
    return true;
}

// Does a tail event pass the filters in the query (URLSearchParams)?
function tailMatches(q, ev) {
    const ag = ev.aigate || {};
    const statuses = q.getAll('status');
    if (statuses.length && !statuses.map((s) => (s === 'error' ? 'exception' : s)).includes(ev.outcome)) return false;
    const methods = q.getAll('method').map((m) => m.toUpperCase());
    if (methods.length && !(ev.event.request && methods.includes(ev.event.request.method))) return false;
    if (q.get('route') && ag.route !== q.get('route')) return false;
    if (q.get('model') && ag.model !== q.get('model')) return false;
    if (q.get('search') && !JSON.stringify(ev).includes(q.get('search'))) return false;
    return true;
}

module.exports = { WEB, CSP, serveAsset, authorized, tailMatches };

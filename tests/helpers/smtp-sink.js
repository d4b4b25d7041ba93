// SPDX-License-Identifier: MIT
//
// smtp-sink.js: a real SMTP server (npm smtp-server) for tests. It listens on
// 127.0.0.1:0, prints {"port":N} on one stdout line, and appends each message it
// accepts to --out as one NDJSON line: {from, to, user, secure, data}. Stops on
// SIGTERM or SIGINT.
//
//   node smtp-sink.js --out FILE [--user U --pass P] [--cert C --key K] [--secure]
//                     [--fail-first N]
//
// --user/--pass: AUTH PLAIN and LOGIN with these credentials (others get 535);
//   without them no AUTH is offered. AUTH is allowed without TLS (a test sink).
// --cert/--key: STARTTLS with this certificate; without them STARTTLS is not
//   offered (smtp-server would otherwise offer it with a built-in certificate).
// --secure: implicit TLS (smtps) with --cert/--key.
// --fail-first N: answer 451 to the first N messages (a temporary failure).
'use strict';

const fs = require('node:fs');
const { SMTPServer } = require('smtp-server');

function arg(name) {
    const i = process.argv.indexOf(name);
    return i > 0 ? process.argv[i + 1] : undefined;
}

const out = arg('--out');
if (!out) {
    process.stderr.write('smtp-sink: --out FILE is required\n');
    process.exit(2);
}
const user = arg('--user');
const pass = arg('--pass');
const cert = arg('--cert');
const key = arg('--key');
const secure = process.argv.includes('--secure');
let failFirst = Number(arg('--fail-first') || 0);

const options = {
    logger: false,
    secure,
    hideSTARTTLS: !cert || secure,
    allowInsecureAuth: true,
    authMethods: ['PLAIN', 'LOGIN'],
    authOptional: !user,
    disabledCommands: user ? [] : ['AUTH'],
    onAuth(auth, session, cb) {
        if (auth.username === user && auth.password === pass) return cb(null, { user: auth.username });
        const err = new Error('Authentication failed');
        err.responseCode = 535;
        return cb(err);
    },
    onData(stream, session, cb) {
        const chunks = [];
        stream.on('data', (c) => chunks.push(c));
        stream.on('end', () => {
            if (failFirst > 0) {
                failFirst--;
                const err = new Error('Try again later');
                err.responseCode = 451;
                return cb(err);
            }
            const rec = {
                from: session.envelope.mailFrom && session.envelope.mailFrom.address,
                to: session.envelope.rcptTo.map((r) => r.address),
                user: session.user || null,
                secure: Boolean(session.secure),
                data: Buffer.concat(chunks).toString('utf8'),
            };
            fs.appendFileSync(out, JSON.stringify(rec) + '\n');
            cb(null, 'Queued');
        });
    },
};
if (cert) {
    options.cert = fs.readFileSync(cert);
    options.key = fs.readFileSync(key);
}

const server = new SMTPServer(options);
server.on('error', (e) => process.stderr.write(`smtp-sink: ${e.message}\n`));
server.listen(0, '127.0.0.1', () => {
    process.stdout.write(JSON.stringify({ port: server.server.address().port }) + '\n');
});
for (const sig of ['SIGTERM', 'SIGINT']) {
    process.on(sig, () => {
        server.close(() => process.exit(0));
        setTimeout(() => process.exit(0), 2000).unref(); // a client still connected
    });
}

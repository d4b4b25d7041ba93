// SPDX-License-Identifier: MIT
//
// m_cron_oracle.test.js: src/cron/cron.c against the croner package (pinned in
// package.json) as an oracle. For every expression of the table, from every start
// instant (month ends, Feb 28/29 of leap and common years, century years, Dec 31
// 23:59), the next five run times of tests/unit/cron_next.c (CRON_NEXT_BIN) must be
// croner's; and both must reject the same malformed expressions. Croner runs with
// Quartz weekday numbering (1 = Sunday, as Cloudflare), in UTC, with either-day
// matching (domAndDow: false), five fields only, and `a/n` steps allowed.
//
// Where croner and Cloudflare's documented syntax disagree, the spec wins and the
// case is left out of these tables, to be checked by hand in tests/unit/test_cron.c:
//   - `L-n` in day of month (croner rejects it: "L has to be a value of its own");
//   - a lone `L` in day of week, Saturday (croner rejects it);
//   - `LW` as a list item, `1,LW` (croner rejects it);
//   - `?` (croner reads it as `*`; Cloudflare rejects it);
//   - `@daily` and the other macros (croner accepts them);
//   - day of week 8 (croner, with alternativeWeekdays, wraps it to Sunday);
//   - a step with no base, `/5` (croner's sloppyRanges accepts it);
//   - `x#L`, `+MON`, and `L` or `#` after a range (`1-3L`, `1-3#2`): croner's own
//     extensions, not Cloudflare's.
'use strict';

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const path = require('node:path');
const { Cron } = require('croner');

const BIN = process.env.CRON_NEXT_BIN || path.join(__dirname, '../../build/debug/cron_next');
const CRONER = {
    alternativeWeekdays: true, // 1 = Sunday .. 7 = Saturday (Quartz, Cloudflare)
    timezone: 'UTC',
    domAndDow: false, // both day fields restricted: either matches (croner 11; legacyMode: true before)
    mode: '5-part', // no seconds, no years
    sloppyRanges: true, // `a/n`: from a to the field's maximum
    paused: true,
};

// Every syntax element, both day fields, month ends and leap days.
const ACCEPTED = [
    // minute and hour
    '* * * * *',
    '*/5 * * * *',
    '0 * * * *',
    '30 */3 * * *',
    '15,45 9-17 * * *',
    '0-30/10 * * * *',
    '5/20 * * * *',
    '59 23 * * *',
    '7 1-23/2 * * *',
    '0,30 0,12 * * *',
    '*/60 */24 * * *',
    '10-15 3 * * *',
    '05 07 * * *',
    // day of month
    '0 0 1 * *',
    '0 0 15 * *',
    '0 0 31 * *',
    '0 0 30 * *',
    '0 0 29 * *',
    '0 0 29 2 *',
    '0 0 28-31 * *',
    '0 0 1-7 * *',
    '0 0 */10 * *',
    '0 0 5/10 * *',
    '0 0 1,15,31 * *',
    '0 0 L * *',
    '0 0 L 2 *',
    '0 0 l * *',
    '0 0 LW * *',
    '59 23 LW * *',
    '0 0 LW 2 *',
    '0 0 15W * *',
    '0 0 15w * *',
    '0 0 1W * *',
    '0 0 31W * *',
    '0 0 30W * *',
    '0 0 29W 2 *',
    '0 0 L,15 * *',
    '0 0 1,15W * *',
    '0 0 31 4 *', // never
    '0 0 30 2 *', // never
    // month
    '0 0 1 1 *',
    '0 0 1 JAN,JUL *',
    '0 0 1 jan-mar *',
    '0 0 * FEB *',
    '0 0 1 */3 *',
    '0 0 1 2-12/2 *',
    '0 0 1 Dec *',
    '0 0 1 3/4 *',
    '59 23 31 12 *',
    '0 0 L feb-apr *',
    // day of week
    '0 9 * * MON',
    '0 9 * * mon-fri',
    '10 7 * * 2-6',
    '0 17 * * sun',
    '0 17 * * 1',
    '0 0 * * 7',
    '0 0 * * SAT,SUN',
    '0 0 * * */2',
    '0 0 * * 2/2',
    '0 0 * * 1-7/3',
    '0 0 * * MON-WED,FRI',
    '0 0 * * 6L',
    '0 0 * * FRIL',
    '0 0 * * 1L',
    '0 0 * * 7L',
    '0 0 * * 6l',
    '0 0 * * 6#2',
    '0 0 * * SUN#1',
    '0 0 * * 2#5',
    '0 0 * 2 5#5',
    '0 0 * * 2,6L',
    '0 0 * * 2#1,6#3',
    '0 0 * 2 1#5',
    // both day fields: either matches
    '0 0 1 * MON',
    '0 0 13 * FRI',
    '0 0 */2 * MON',
    '0 0 1-31 * MON',
    '0 0 13 * */7',
    '0 0 L * 2',
    '0 0 LW * 2',
    '0 0 15W * 2',
    '0 0 30 2 MON',
    '0 0 29 2 1',
    '0 0 L * 2#1',
    '0 0 1 * 6L',
    '30 8 1,15 * sat',
    '0 0 LW * 7L',
    '0 0 31 * 2#5',
    '45 23 L 2 SUN#1',
];

// Rejected by both (what only one rejects is listed at the top).
const REJECTED = [
    '60 * * * *',
    '0 24 * * *',
    '0 0 32 * *',
    '0 0 0 * *',
    '0 0 * 13 *',
    '0 0 * 0 *',
    '0 0 * * 0',
    '5-1 * * * *',
    '0 0 * * FRI-MON',
    '*/0 * * * *',
    '*/61 * * * *',
    '0 */25 * * *',
    '0 0 * * */8',
    '0 0 0 * * *',
    '0 0 0 * * * 2024',
    '* * * *',
    '1,,2 * * * *',
    '0 0 * * mon,',
    '0 0 * * 2#6',
    '0 0 * * 2#0',
    '0 0 L/2 * *',
    '0 0 1-5W * *',
    '0 0 *W * *',
    '0 0 * * FOO',
    '0 0 * FOO *',
    'x * * * *',
];

function utc(s) {
    return Math.floor(Date.parse(s) / 1000);
}

const STARTS = [
    '2024-01-01T00:00:00Z',
    '2024-01-31T23:59:00Z',
    '2024-02-28T23:59:00Z', // leap year
    '2024-02-29T12:30:00Z',
    '2025-02-28T23:59:30Z', // common year
    '2023-12-31T23:59:00Z',
    '2024-12-31T23:59:59Z',
    '2024-04-30T23:59:00Z',
    '2024-06-15T10:17:45Z',
    '2024-08-31T00:00:00Z',
    '2027-03-31T23:59:00Z',
    '1999-12-31T23:59:00Z',
    '2000-02-28T23:59:00Z', // a leap century
    '2100-02-27T00:00:00Z', // a common century
].map(utc);

function iso(t) {
    return new Date(t * 1000).toISOString();
}

// One run of cron_next over all the lines; returns its answer per line.
function cronNext(lines) {
    const r = spawnSync(BIN, [], { input: lines.join('\n') + '\n', encoding: 'utf8', maxBuffer: 64 << 20 });
    assert.equal(r.status, 0, `cron_next failed: ${r.stderr}`);
    const out = r.stdout.split('\n').filter((l) => l !== '');
    assert.equal(out.length, lines.length, 'one answer per line');
    return out.map((l) => {
        const m = /^error (\d+) (.+)$/.exec(l);
        if (m) return { error: m[2], offset: Number(m[1]) };
        assert.match(l, /^ok( -?\d+)+$/);
        const times = l.split(' ').slice(1).map(Number);
        return { runs: times.filter((t) => t !== -1).map(iso) };
    });
}

function croner(expr, start) {
    try {
        const c = new Cron(expr, CRONER);
        return { runs: c.nextRuns(5, new Date(start * 1000)).map((d) => d.toISOString()) };
    } catch (e) {
        return { error: e.message };
    }
}

test('the table covers the syntax', () => {
    assert.ok(ACCEPTED.length >= 60, `${ACCEPTED.length} expressions`);
    const all = ACCEPTED.join('\n');
    for (const re of [/\*\/\d/, /\d-\d+\/\d/, /(^|[ ,])\d+\/\d/, /,/, /[A-Za-z]{3}-[A-Za-z]{3}/, / L /, /LW/,
        /\d+W/, /\dL( |,|$)/m, /#\d/, / L .* \d/, /(jan|feb|Dec)/i, /(sun|mon|sat)/i]) {
        assert.match(all, re);
    }
});

test('next five runs agree with croner', () => {
    const lines = [];
    const cases = [];
    for (const expr of ACCEPTED) {
        for (const start of STARTS) {
            lines.push(`${expr}\t${start}`);
            cases.push({ expr, start });
        }
    }
    const ours = cronNext(lines);
    const diffs = [];
    cases.forEach(({ expr, start }, i) => {
        const theirs = croner(expr, start);
        assert.ok(!theirs.error, `croner rejects "${expr}": ${theirs.error}`);
        assert.ok(!ours[i].error, `we reject "${expr}" at ${ours[i].offset}: ${ours[i].error}`);
        if (JSON.stringify(ours[i].runs) !== JSON.stringify(theirs.runs)) {
            diffs.push({ expr, after: iso(start), ours: ours[i].runs, croner: theirs.runs });
        }
    });
    assert.deepEqual(diffs, [], `${diffs.length} of ${cases.length} cases differ`);
});

test('both reject the same malformed expressions', () => {
    const ours = cronNext(REJECTED.map((e) => `${e}\t${STARTS[0]}`));
    REJECTED.forEach((expr, i) => {
        assert.ok(croner(expr, STARTS[0]).error, `croner accepts "${expr}"`);
        assert.ok(ours[i].error, `we accept "${expr}"`);
        assert.ok(ours[i].offset <= expr.length, `"${expr}": offset ${ours[i].offset}`);
    });
});

// SPDX-License-Identifier: MIT
//
// record.js: records the fake upstream's event streams that test_openai replays through the
// OpenAI stream translator (one .sse file per stream, byte for byte as the fake sent them).
//   node tests/unit/data/openai/record.js           writes the files next to this script
//   node tests/unit/data/openai/record.js --check   fails when the fake now streams otherwise
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const fake = require('../../../fake-upstream/fake-anthropic.js');

const TOOLS = [{ name: 'get_weather', description: 'Weather of a city',
    input_schema: { type: 'object', properties: { city: { type: 'string' } } } }];

// name -> an Anthropic request body (the translator's output for an OpenAI request of the kind).
const STREAMS = {
    text: { messages: [{ role: 'user', content: 'hello world, say "hi" with ünïcode 😀 and a\ttab' }] },
    tool_use: { tools: TOOLS,
        messages: [{ role: 'user', content: '[[blocks]] weather in "Paris" \\ ünïcode 😀 please' }] },
    thinking: { messages: [{ role: 'user', content: '[[thinking]] think about it first' }] },
    max_tokens: { max_tokens: 3, messages: [{ role: 'user', content: 'one two three four five' }] },
    stop_sequence: { stop_sequences: ['STOP'],
        messages: [{ role: 'user', content: 'go on until STOP and no further' }] },
    mid_error: { messages: [{ role: 'user', content: '[[midstream:3]] this stream fails midway' }] },
};

async function record() {
    const srv = await fake.start({ port: 0, apiKey: 'sk-record' });
    const out = {};
    try {
        for (const [name, extra] of Object.entries(STREAMS)) {
            const body = { model: 'claude-test-1', max_tokens: 256, stream: true, ...extra };
            const res = await fetch(`${srv.url}/v1/messages`, {
                method: 'POST',
                headers: { 'x-api-key': 'sk-record', 'anthropic-version': '2023-06-01',
                    'content-type': 'application/json' },
                body: JSON.stringify(body),
            });
            if (res.status !== 200) throw new Error(`${name}: status ${res.status}`);
            out[name] = Buffer.from(await res.arrayBuffer());
        }
    } finally {
        await srv.close();
    }
    return out;
}

async function main() {
    const check = process.argv.includes('--check');
    const streams = await record();
    let stale = 0;
    for (const [name, bytes] of Object.entries(streams)) {
        const file = path.join(__dirname, `${name}.sse`);
        if (!check) {
            fs.writeFileSync(file, bytes);
            continue;
        }
        const have = fs.existsSync(file) ? fs.readFileSync(file) : null;
        if (!have || !have.equals(bytes)) {
            stale++;
            console.error(`${name}.sse differs from what the fake streams now: run ${__filename}`);
        }
    }
    if (stale) process.exit(1);
    console.log(check ? 'recorded streams are current' : `wrote ${Object.keys(streams).length} streams`);
}

main().catch((e) => {
    console.error(e);
    process.exit(1);
});

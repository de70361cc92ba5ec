// The official OpenAI Node SDK (npm `openai`), unchanged but for baseURL, against llmproxy (and its mock
// upstream): the twin of openai_sdk.py, with the same cases, arguments, environment and output.
//
// Usage: node openai_sdk.mjs BASE_URL MODEL EMBED_MODEL [CA_FILE]
//   With CA_FILE (an https BASE_URL) the certificate must also be in NODE_EXTRA_CA_CERTS (Node reads it
//   only at start-up; the SDK's fetch has no per-client trust store).
// Environment:
//   LLMPROXY_SDK_KEY           the API key for every call (the gateway's master key); default sk-client-side-anything
//   LLMPROXY_SDK_SKIP          comma-separated cases not to run (a provider without embeddings, ...)
//   LLMPROXY_SDK_CONTENT       a whole chat answer's text when the provider's mock says something else
//   LLMPROXY_SDK_EMBED_DIM     the embedding vectors' length (default 8, the mock's default)
//   LLMPROXY_SDK_NODE_MODULES  where `openai` is installed; default ../../target/sdk-node/node_modules
//                              (scripts/install-deps --test puts it there)
// Prints one JSON line {"sdk", "version", "order": [case, ...], "cases": {case: "pass" | "skip" | "fail: why"},
// "values": {case: what it saw}}, and exits 1 when a case failed.
// The expected answers are the mock upstream's (the mock-upstream crate, mock-upstream/src/).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const modules =
  process.env.LLMPROXY_SDK_NODE_MODULES || path.join(here, '..', '..', 'target', 'sdk-node', 'node_modules');
const sdk = createRequire(path.join(modules, 'llmproxy-sdk-test.js'))('openai');
const { OpenAI } = sdk;
const version = JSON.parse(readFileSync(path.join(modules, 'openai', 'package.json'), 'utf8')).version;

const CASES = [
  'chat',
  'stream',
  'tools',
  'tools_stream',
  'tool_result',
  'embeddings',
  'embeddings_base64',
  'responses',
  'responses_stream',
  'models_list',
  'models_retrieve',
  'error_401',
  'error_404',
  'error_429',
];
// A whole answer's text: the mock's, unless the provider's dialect answers otherwise.
const CONTENT = process.env.LLMPROXY_SDK_CONTENT || 'Hello from mock';
const STREAM = 'tok0 tok1 tok2 tok3 tok4 ';
// The mock's default --embedding-dim; its Bedrock dialect's Cohere vectors have 1024.
const EMBED_DIM = Number(process.env.LLMPROXY_SDK_EMBED_DIM || 8);
const TOOLS = [
  {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'The current weather in a city',
      parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
    },
  },
];
// The mock answers with a tool call when asked to (forwarded by the gateway like any header).
const TOOL_HEADERS = { 'x-mock-tool-call': 'get_weather', 'x-mock-tool-input': '{"city":"Paris"}' };
const USER = [{ role: 'user', content: 'Say hi' }];

/** The mock's deterministic vector for input i. */
const mockEmbedding = (i, dim) =>
  Array.from({ length: dim }, (_, j) => (((i * 31 + j * 7) % 200) - 100) / 100);

function check(cond, what) {
  if (!cond) throw new Error(what);
}
const show = (v) => JSON.stringify(v);

const [baseURL, model, embedModel, caFile] = process.argv.slice(2);
if (!embedModel) {
  console.error('usage: node openai_sdk.mjs BASE_URL MODEL EMBED_MODEL [CA_FILE]');
  process.exit(2);
}
if (caFile && process.env.NODE_EXTRA_CA_CERTS !== caFile) {
  console.error('CA_FILE must also be given as NODE_EXTRA_CA_CERTS');
  process.exit(2);
}
const apiKey = process.env.LLMPROXY_SDK_KEY || 'sk-client-side-anything';
const skip = new Set((process.env.LLMPROXY_SDK_SKIP || '').split(',').filter(Boolean));
const unknown = [...skip].filter((s) => !CASES.includes(s));
if (unknown.length) {
  console.error(`unknown cases in LLMPROXY_SDK_SKIP: ${unknown}`);
  process.exit(2);
}

const makeClient = (key) => new OpenAI({ baseURL, apiKey: key, maxRetries: 0, timeout: 30_000 });
const client = makeClient(apiKey);

const cases = {
  async chat() {
    const r = await client.chat.completions.create({
      model,
      messages: [{ role: 'system', content: 'Be brief.' }, ...USER],
    });
    const c = r.choices[0];
    check(c.message.role === 'assistant', `role ${c.message.role}`);
    check(c.message.content === CONTENT, `content ${show(c.message.content)}`);
    check(c.finish_reason === 'stop', `finish_reason ${c.finish_reason}`);
    const u = r.usage;
    check(u.prompt_tokens > 0 && u.completion_tokens > 0, `usage ${show(u)}`);
    check(u.total_tokens === u.prompt_tokens + u.completion_tokens, `usage ${show(u)}`);
    return { content: c.message.content, total_tokens: u.total_tokens };
  },

  async stream() {
    const stream = await client.chat.completions.create({
      model,
      messages: USER,
      stream: true,
      stream_options: { include_usage: true },
    });
    let content = '';
    let usage = null;
    let finish = null;
    let role = null;
    for await (const chunk of stream) {
      const ch = chunk.choices?.[0];
      if (ch) {
        role = role || ch.delta?.role || null;
        content += ch.delta?.content || '';
        finish = ch.finish_reason || finish;
      }
      if (chunk.usage) usage = chunk.usage.total_tokens;
    }
    check(role === 'assistant', `role ${role}`);
    check(content === STREAM, `content ${show(content)}`);
    check(finish === 'stop', `finish_reason ${finish}`);
    check(usage > 0, `usage ${usage}`);
    return { content, total_tokens: usage };
  },

  async tools() {
    const r = await client.chat.completions.create(
      { model, messages: [{ role: 'user', content: 'Weather in Paris?' }], tools: TOOLS, tool_choice: 'auto' },
      { headers: TOOL_HEADERS },
    );
    const c = r.choices[0];
    const calls = c.message.tool_calls || [];
    check(c.finish_reason === 'tool_calls', `finish_reason ${c.finish_reason}`);
    check(calls.length === 1, `tool_calls ${show(calls)}`);
    const call = calls[0];
    check(call.id && call.type === 'function', `tool call ${show(call)}`);
    check(call.function.name === 'get_weather', `name ${call.function.name}`);
    const args = JSON.parse(call.function.arguments);
    check(show(args) === show({ city: 'Paris' }), `arguments ${call.function.arguments}`);
    return { name: call.function.name, arguments: args };
  },

  async tools_stream() {
    const stream = await client.chat.completions.create(
      { model, messages: [{ role: 'user', content: 'Weather in Paris?' }], tools: TOOLS, stream: true },
      { headers: TOOL_HEADERS },
    );
    const calls = new Map();
    let finish = null;
    for await (const chunk of stream) {
      const ch = chunk.choices?.[0];
      if (!ch) continue;
      for (const d of ch.delta?.tool_calls || []) {
        if (!calls.has(d.index)) calls.set(d.index, { id: null, name: '', arguments: '' });
        const call = calls.get(d.index);
        call.id = call.id || d.id || null;
        call.name += d.function?.name || '';
        call.arguments += d.function?.arguments || '';
      }
      finish = ch.finish_reason || finish;
    }
    check(finish === 'tool_calls', `finish_reason ${finish}`);
    check(show([...calls.keys()]) === '[0]', `tool call indexes ${show([...calls.keys()])}`);
    const call = calls.get(0);
    check(call.id && call.name === 'get_weather', `tool call ${show(call)}`);
    const args = JSON.parse(call.arguments);
    check(show(args) === show({ city: 'Paris' }), `arguments ${call.arguments}`);
    return { name: call.name, arguments: args };
  },

  // The round trip's second half: the assistant's tool call and the tool's answer go back.
  async tool_result() {
    const r = await client.chat.completions.create({
      model,
      messages: [
        { role: 'user', content: 'Weather in Paris?' },
        {
          role: 'assistant',
          content: null,
          tool_calls: [
            {
              id: 'call_sdk_1',
              type: 'function',
              function: { name: 'get_weather', arguments: '{"city":"Paris"}' },
            },
          ],
        },
        { role: 'tool', tool_call_id: 'call_sdk_1', content: '18C, sunny' },
      ],
      tools: TOOLS,
    });
    const c = r.choices[0];
    check(c.message.content === CONTENT, `content ${show(c.message.content)}`);
    check(c.finish_reason === 'stop', `finish_reason ${c.finish_reason}`);
    return { content: c.message.content };
  },

  async embeddings() {
    const emb = await client.embeddings.create({
      model: embedModel,
      input: ['one', 'two'],
      encoding_format: 'float',
    });
    check(show(emb.data.map((d) => d.index)) === '[0,1]', `indexes ${show(emb.data.map((d) => d.index))}`);
    const dims = emb.data.map((d) => d.embedding.length);
    check(show(dims) === show([EMBED_DIM, EMBED_DIM]), `dimensions ${show(dims)}`);
    check(show(emb.data[1].embedding) === show(mockEmbedding(1, EMBED_DIM)), `vector ${show(emb.data[1].embedding)}`);
    check(emb.usage.prompt_tokens > 0, `usage ${show(emb.usage)}`);
    return { dims };
  },

  // The SDK's default: it asks for base64 and decodes the float32 vectors itself.
  async embeddings_base64() {
    const emb = await client.embeddings.create({ model: embedModel, input: ['one', 'two'] });
    check(show(emb.data.map((d) => d.index)) === '[0,1]', `indexes ${show(emb.data.map((d) => d.index))}`);
    for (const d of emb.data) {
      const want = mockEmbedding(d.index, EMBED_DIM);
      const close =
        d.embedding.length === EMBED_DIM && d.embedding.every((x, j) => Math.abs(x - want[j]) < 1e-6);
      check(close, `vector ${d.index}: ${show(d.embedding)}`);
    }
    return { dims: emb.data.map((d) => d.embedding.length) };
  },

  async responses() {
    const r = await client.responses.create({ model, input: 'Say hi' });
    check(r.output_text === CONTENT, `output_text ${show(r.output_text)}`);
    check(r.status === 'completed', `status ${r.status}`);
    check(r.usage.input_tokens > 0 && r.usage.output_tokens > 0, `usage ${show(r.usage)}`);
    return { output_text: r.output_text, total_tokens: r.usage.total_tokens };
  },

  async responses_stream() {
    const stream = await client.responses.create({ model, input: 'Say hi', stream: true });
    let text = '';
    let doneText = null;
    let usage = null;
    const types = [];
    for await (const ev of stream) {
      types.push(ev.type);
      if (ev.type === 'response.output_text.delta') text += ev.delta;
      else if (ev.type === 'response.output_text.done') doneText = ev.text;
      else if (ev.type === 'response.completed') usage = ev.response.usage.total_tokens;
    }
    check(types[0] === 'response.created', `first event ${types[0]}`);
    check(types.at(-1) === 'response.completed', `last event ${types.at(-1)}`);
    check(text === STREAM && doneText === STREAM, `text ${show(text)} / done ${show(doneText)}`);
    check(usage > 0, `usage ${usage}`);
    return { text, total_tokens: usage };
  },

  async models_list() {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    ids.sort();
    check(ids.includes(model), `${model} not in ${show(ids)}`);
    return { ids };
  },

  async models_retrieve() {
    const m = await client.models.retrieve(model);
    check(m.id === model && m.object === 'model', `model ${show(m)}`);
    return { id: m.id };
  },

  async error_401() {
    const bad = makeClient('sk-wrong-key');
    return expectError(sdk.AuthenticationError, 401, () =>
      bad.chat.completions.create({ model, messages: USER }),
    );
  },

  async error_404() {
    const v = await expectError(sdk.NotFoundError, 404, () =>
      client.chat.completions.create({ model: 'no-such-model', messages: USER }),
    );
    check(v.code === 'model_not_found', `code ${v.code}`);
    return v;
  },

  // The upstream answers 429 (the mock, in its provider's dialect); the gateway relays it.
  async error_429() {
    return expectError(sdk.RateLimitError, 429, () =>
      client.chat.completions.create({ model, messages: USER }, { headers: { 'x-mock-status': '429' } }),
    );
  },
};

async function expectError(cls, status, call) {
  try {
    await call();
  } catch (e) {
    if (!(e instanceof sdk.APIError)) throw e;
    check(e instanceof cls, `${e.constructor.name} (${e.status}), not ${cls.name}`);
    check(e.status === status, `status ${e.status}`);
    return { error: e.constructor.name, status: e.status, code: e.code ?? null };
  }
  throw new Error(`no error, expected ${cls.name}`);
}

const out = { sdk: 'openai-node', version, order: CASES, cases: {}, values: {} };
for (const name of CASES) {
  if (skip.has(name)) {
    out.cases[name] = 'skip';
    continue;
  }
  try {
    out.values[name] = await cases[name]();
    out.cases[name] = 'pass';
  } catch (e) {
    // One case's failure must not hide the others.
    out.cases[name] = `fail: ${e?.constructor?.name}: ${e?.message}`;
    console.error(e);
  }
}
process.stdout.write(`${JSON.stringify(out)}\n`);
process.exitCode = Object.values(out.cases).some((v) => v.startsWith('fail')) ? 1 : 0;

'use strict';

// The MCP server: the CLI's session workflow as tools over stdio. The tools
// come from the CLI's command table (lib/cli/table.js): each runs the CLI
// command's own handler and returns its JSON object as one text item;
// `isError` when the object is an error. Arguments are checked against the
// tool's own schema first, and errors speak of parameters, never CLI flags.
// Messages go over our own stdio transport (StdioLineTransport, below), which
// answers a message it will not take and keeps serving.

const { Server } = require('@modelcontextprotocol/sdk/server/index.js');
const { STDIO_DEFAULT_MAX_BUFFER_SIZE, serializeMessage } = require('@modelcontextprotocol/sdk/shared/stdio.js');
const {
  ListToolsRequestSchema,
  CallToolRequestSchema,
  CallToolRequestParamsSchema,
  ErrorCode,
  JSONRPCMessageSchema,
} = require('@modelcontextprotocol/sdk/types.js');
const { COMMANDS, flagForms } = require('./cli/table.js');
const { version } = require('../package.json');

/** A command's parameters: its positional arguments and the flags it exposes, as JSON schema properties. */
function properties(command) {
  const out = {};
  const params = [];
  for (const a of command.args ?? []) {
    out[a.key] = { type: 'string', description: a.tool };
    params.push({ key: a.key, cli: [a.placeholder] });
  }
  for (const o of command.options) {
    if (o.tool === false) continue;
    const type = o.schema ?? { type: o.value ? 'string' : 'boolean' };
    out[o.key] = { ...type, description: typeof o.tool === 'string' ? o.tool : o.description };
    params.push({ key: o.key, cli: flagForms(o) });
  }
  return { properties: out, params };
}

/** The tool's description: what it does, the CLI command it runs, and its two exclusive parameters. */
function toolDescription(command) {
  const [a, b] = command.exclusive ?? [];
  const exclusive = a ? `; ${a} or ${b}, not both` : '';
  return `${command.tool.description} (same as \`aluvia ${command.path.join(' ')}\`)${exclusive}.`;
}

const TOOLS = COMMANDS.filter((c) => c.tool).map((c) => {
  const { properties: props, params } = properties(c);
  return {
    name: c.tool.name,
    description: toolDescription(c),
    inputSchema: { type: 'object', properties: props, required: c.tool.required ?? [], additionalProperties: false },
    command: c,
    params,
  };
});

const TYPE_NAMES = { string: 'a string', boolean: 'a boolean', integer: 'an integer' };

/** The first way `args` breaks the tool's schema, as an error message naming the parameter; undefined when it fits. */
function schemaError(tool, args) {
  if (args === null || typeof args !== 'object' || Array.isArray(args)) return 'Arguments must be an object.';
  const { properties: props } = tool.inputSchema;
  // Own properties only: `constructor` or `toString` are parameters like any
  // other name, and unknown unless the tool has them.
  for (const [key, value] of Object.entries(args)) {
    const schema = Object.hasOwn(props, key) ? props[key] : undefined;
    if (!schema) {
      const known = Object.keys(props);
      const list = known.length ? ` Known parameters: ${known.join(', ')}.` : ' This tool takes no parameters.';
      return `Unknown parameter: '${key}'.${list}`;
    }
    if (schema.enum && !schema.enum.includes(value)) {
      const allowed = schema.enum.map((v) => `'${v}'`).join(' or ');
      return `Invalid parameter '${key}': expected ${allowed}, got ${JSON.stringify(value)}.`;
    }
    const ok =
      schema.type === 'integer'
        ? Number.isSafeInteger(value) && (schema.minimum === undefined || value >= schema.minimum)
        : typeof value === schema.type;
    if (!ok) {
      const min = schema.minimum !== undefined ? ` of at least ${schema.minimum}` : '';
      return `Invalid parameter '${key}': expected ${TYPE_NAMES[schema.type]}${min}, got ${JSON.stringify(value)}.`;
    }
  }
  const given = (k) => Object.hasOwn(args, k) && args[k] !== undefined && args[k] !== false;
  const [a, b] = tool.command.exclusive ?? [];
  if (a && given(a) && given(b)) return `Parameters '${a}' and '${b}' cannot be used together; use one of them.`;
  // A missing required parameter is left to the handler (`URL is required.`).
  return undefined;
}

const escapeRegExp = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** A handler's error in MCP terms: no "Usage: aluvia …" tail, parameter names for CLI flags. */
function inToolTerms(tool, message) {
  let out = message.replace(/ Usage: aluvia .*$/, '');
  for (const p of tool.params) {
    for (const cli of p.cli) out = out.replace(new RegExp(`${escapeRegExp(cli)}(?![\\w-])`, 'g'), `'${p.key}'`);
  }
  return out;
}

/** Run one tool: never throws, never exits; the JSON object as MCP content. */
async function callTool(name, args) {
  const tool = TOOLS.find((t) => t.name === name);
  let out;
  if (!tool) {
    out = { error: `Unknown tool: '${name}'.` };
  } else {
    const invalid = schemaError(tool, args ?? {});
    if (invalid) {
      out = { error: invalid };
    } else {
      try {
        out = await tool.command.run({ ...(args ?? {}) });
        if (tool.command.tool.output) out = tool.command.tool.output(out);
      } catch (err) {
        out = { error: err?.message ?? String(err) };
      }
      if (typeof out?.error === 'string') out = { ...out, error: inToolTerms(tool, out.error) };
    }
  }
  return { content: [{ type: 'text', text: JSON.stringify(out) }], isError: Boolean(out?.error) };
}

/**
 * tools/call as the SDK reads it, but with the arguments handed on as they
 * came: the SDK's own schema reads them as a record, which drops a
 * `__proto__` key, and every name an agent sends must be checked. (The SDK
 * still checks the request against its own schema before the handler runs.)
 */
const CallToolAsSentSchema = CallToolRequestSchema.extend({
  params: CallToolRequestParamsSchema.omit({ arguments: true }).loose(),
});

function createServer() {
  const server = new Server({ name: 'aluvia', version }, { capabilities: { tools: {} } });
  server.setRequestHandler(ListToolsRequestSchema, async () => ({
    tools: TOOLS.map(({ name, description, inputSchema }) => ({ name, description, inputSchema })),
  }));
  server.setRequestHandler(CallToolAsSentSchema, (req) => callTool(req.params.name, req.params.arguments));
  return server;
}

/** The largest message taken, in bytes (without its newline): the SDK's own stdio limit. */
const MAX_MESSAGE_BYTES = STDIO_DEFAULT_MAX_BUFFER_SIZE;
const LIMIT_TEXT = `${MAX_MESSAGE_BYTES / 2 ** 20} MiB`;
/** How much of each end of a refused message is kept to read its id from. */
const ID_WINDOW_BYTES = 4096;

const WHITESPACE = ' \t\n\r';

/** `v` as a JSON-RPC id (a string or a number); null for anything else. */
const asId = (v) => (typeof v === 'string' || Number.isFinite(v) ? v : null);

/** A JSON-RPC id (a string or a number) from its JSON text; null for anything else. */
function idFromJson(text) {
  try {
    return asId(JSON.parse(text));
  } catch {
    return null;
  }
}

/**
 * The top-level `id` of the JSON object that `text` starts with, read
 * forwards, when it appears before `text` is cut off or stops being JSON;
 * otherwise null.
 */
function idFromStart(text) {
  let i = 0;
  const ws = () => {
    while (i < text.length && WHITESPACE.includes(text[i])) i++;
  };
  // At an opening quote: past the string, false when cut off.
  const string = () => {
    for (i++; i < text.length; i++) {
      if (text[i] === '\\') i++;
      else if (text[i] === '"') {
        i++;
        return true;
      }
    }
    return false;
  };
  // Up to the `,` or `}` that ends a member's value; false when cut off.
  const value = () => {
    let depth = 0;
    while (i < text.length) {
      const c = text[i];
      if (c === '"') {
        if (!string()) return false;
        continue;
      }
      if (depth === 0 && (c === ',' || c === '}' || c === ']')) return true;
      if (c === '{' || c === '[') depth++;
      else if (c === '}' || c === ']') depth--;
      i++;
    }
    return false;
  };
  ws();
  if (text[i] !== '{') return null;
  i++;
  for (;;) {
    ws();
    const keyStart = i;
    if (text[i] !== '"' || !string()) return null;
    const key = idFromJson(text.slice(keyStart, i));
    ws();
    if (text[i] !== ':') return null;
    i++;
    const valueStart = i;
    if (!value()) return null;
    if (key === 'id') return idFromJson(text.slice(valueStart, i));
    if (text[i] !== ',') return null;
    i++;
  }
}

/**
 * The top-level `id` of the JSON object that `text` ends with, read
 * backwards (clients often write the id last), when it appears before the
 * start of `text`; otherwise null.
 */
function idFromEnd(text) {
  let i = text.length - 1;
  const ws = () => {
    while (i >= 0 && WHITESPACE.includes(text[i])) i--;
  };
  // At a closing quote: before the opening one, false when cut off. A quote
  // ends a string when an even number of backslashes precedes it.
  const string = () => {
    for (i--; i >= 0; i--) {
      if (text[i] !== '"') continue;
      let j = i - 1;
      while (j >= 0 && text[j] === '\\') j--;
      if (j < 0) return false;
      if ((i - 1 - j) % 2 === 0) {
        i--;
        return true;
      }
    }
    return false;
  };
  // Back to the `:` before a member's value; false when cut off.
  const value = () => {
    let depth = 0;
    while (i >= 0) {
      const c = text[i];
      if (c === '"') {
        if (!string()) return false;
        continue;
      }
      if (depth === 0 && c === ':') return true;
      if (c === '}' || c === ']') depth++;
      else if (c === '{' || c === '[') depth--;
      if (depth < 0) return false;
      i--;
    }
    return false;
  };
  ws();
  if (text[i] !== '}') return null;
  i--;
  for (;;) {
    ws();
    const valueEnd = i + 1;
    if (!value()) return null;
    const valueText = text.slice(i + 1, valueEnd);
    i--;
    ws();
    const keyEnd = i + 1;
    if (text[i] !== '"' || !string()) return null;
    if (idFromJson(text.slice(i + 1, keyEnd)) === 'id') return idFromJson(valueText);
    ws();
    if (text[i] !== ',') return null;
    i--;
  }
}

/** A copy of the first `n` bytes of `buffers` taken as one. */
function firstBytes(buffers, n) {
  const out = [];
  let size = 0;
  for (const b of buffers) {
    if (size >= n) break;
    out.push(b.subarray(0, n - size));
    size += out.at(-1).length;
  }
  return Buffer.concat(out, size);
}

/** A copy of the last `n` bytes of `buffers` taken as one. */
function lastBytes(buffers, n) {
  const out = [];
  let size = 0;
  for (let k = buffers.length - 1; k >= 0 && size < n; k--) {
    const b = buffers[k];
    out.unshift(b.subarray(Math.max(0, b.length - (n - size))));
    size += out[0].length;
  }
  return Buffer.concat(out, size);
}

/** The id a refused message carries, read from its two ends; null when neither shows one. */
const readId = (head, tail) => idFromStart(head) ?? idFromEnd(tail);

/**
 * The MCP stdio transport (one JSON-RPC message per line), with what the
 * SDK's own leaves out: a message it will not take is answered and the server
 * keeps serving. A line over MAX_MESSAGE_BYTES is read no further than its
 * two ends (memory stays bounded however long it is) and gets an Invalid
 * Request error, a line that is not JSON a Parse error and one that is not a
 * JSON-RPC message an Invalid Request error, each with the message's id when
 * one can be read, and one line on stderr. (The SDK's transport closes on an
 * oversize line, and the server then exits with status 0 without a word.)
 */
class StdioLineTransport {
  constructor(stdin = process.stdin, stdout = process.stdout, stderr = process.stderr) {
    this._stdin = stdin;
    this._stdout = stdout;
    this._stderr = stderr;
    this._reset();
    this._ondata = (chunk) => this._read(chunk);
    this._onerror = (error) => this.onerror?.(error);
    this._onend = () => this._endOfLine();
  }

  async start() {
    if (this._started) throw new Error('The stdio transport is already started.');
    this._started = true;
    this._stdin.on('data', this._ondata);
    this._stdin.on('error', this._onerror);
    this._stdin.on('end', this._onend);
  }

  /** The line being read: its pieces while it is within the limit, else only its size and two ends. */
  _reset() {
    this._pieces = [];
    this._size = 0;
    this._over = null;
  }

  _read(chunk) {
    let start = 0;
    for (;;) {
      const newline = chunk.indexOf(0x0a, start);
      this._add(chunk.subarray(start, newline === -1 ? chunk.length : newline));
      if (newline === -1) return;
      this._endOfLine();
      start = newline + 1;
    }
  }

  _add(piece) {
    if (piece.length === 0) return;
    if (this._over) {
      this._over.size += piece.length;
      this._over.tail = lastBytes([this._over.tail, piece], ID_WINDOW_BYTES);
    } else if (this._size + piece.length <= MAX_MESSAGE_BYTES) {
      this._pieces.push(piece);
      this._size += piece.length;
    } else {
      const all = [...this._pieces, piece];
      this._over = {
        size: this._size + piece.length,
        head: firstBytes(all, ID_WINDOW_BYTES),
        tail: lastBytes(all, ID_WINDOW_BYTES),
      };
      this._pieces = [];
      this._size = 0;
    }
  }

  _endOfLine() {
    const over = this._over;
    const line = over ? null : Buffer.concat(this._pieces, this._size).toString('utf8');
    this._reset();
    if (over) {
      // A line may end with CRLF: the CR is no part of the message.
      const crlf = over.tail.at(-1) === 0x0d;
      const size = crlf ? over.size - 1 : over.size;
      const id = readId(over.head.toString('utf8'), over.tail.subarray(0, crlf ? -1 : undefined).toString('utf8'));
      this._refuse(
        id,
        ErrorCode.InvalidRequest,
        `Message of ${size} bytes refused: over the ${LIMIT_TEXT} limit.`,
        `message of ${size} bytes refused: over the ${LIMIT_TEXT} limit`,
      );
      return;
    }
    const text = line.replace(/\r$/, '');
    if (!text.trim()) return;
    let value;
    try {
      value = JSON.parse(text);
    } catch {
      this._refuse(readId(text, text), ErrorCode.ParseError, 'Parse error: not JSON.', 'message refused: not JSON');
      return;
    }
    const message = JSONRPCMessageSchema.safeParse(value);
    if (!message.success) {
      const id = value && typeof value === 'object' && Object.hasOwn(value, 'id') ? asId(value.id) : null;
      this._refuse(
        id,
        ErrorCode.InvalidRequest,
        'Invalid Request: not a JSON-RPC 2.0 message.',
        'message refused: not a JSON-RPC 2.0 message',
      );
      return;
    }
    this.onmessage?.(message.data);
  }

  _refuse(id, code, message, logLine) {
    this._stderr.write(`aluvia-mcp: ${logLine}\n`);
    this._stdout.write(serializeMessage({ jsonrpc: '2.0', id, error: { code, message } }));
  }

  send(message) {
    return new Promise((resolve) => {
      if (this._stdout.write(serializeMessage(message))) resolve();
      else this._stdout.once('drain', resolve);
    });
  }

  async close() {
    this._stdin.off('data', this._ondata);
    this._stdin.off('error', this._onerror);
    this._stdin.off('end', this._onend);
    if (this._stdin.listenerCount('data') === 0) this._stdin.pause();
    this._reset();
    this.onclose?.();
  }
}

async function main() {
  const server = createServer();
  server.onerror = (err) => process.stderr.write(`aluvia-mcp: ${String(err?.message ?? err).replace(/\s+/g, ' ')}\n`);
  await server.connect(new StdioLineTransport());
  process.stderr.write('Aluvia MCP server running on stdio\n');
}

module.exports = { TOOLS, callTool, createServer, StdioLineTransport, main };

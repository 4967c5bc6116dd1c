'use strict';

// The MCP server: the CLI's session workflow as tools over stdio. The tools
// come from the CLI's command table (lib/cli/table.js): each runs the CLI
// command's own handler and returns its JSON object as one text item;
// `isError` when the object is an error. Arguments are checked against the
// tool's own schema first, and errors speak of parameters, never CLI flags.

const { Server } = require('@modelcontextprotocol/sdk/server/index.js');
const { StdioServerTransport } = require('@modelcontextprotocol/sdk/server/stdio.js');
const {
  ListToolsRequestSchema,
  CallToolRequestSchema,
  CallToolRequestParamsSchema,
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

async function main() {
  const server = createServer();
  await server.connect(new StdioServerTransport());
  process.stderr.write('Aluvia MCP server running on stdio\n');
}

module.exports = { TOOLS, callTool, createServer, main };

'use strict';

// The MCP server: the CLI's session workflow as tools over stdio. Each tool
// runs the CLI command's own handler (lib/cli/commands.js) and returns its
// JSON object as one text item; `isError` when the object is an error.

const { Server } = require('@modelcontextprotocol/sdk/server/index.js');
const { StdioServerTransport } = require('@modelcontextprotocol/sdk/server/stdio.js');
const { ListToolsRequestSchema, CallToolRequestSchema } = require('@modelcontextprotocol/sdk/types.js');
const commands = require('./cli/commands.js');
const { version } = require('../package.json');

const text = (description) => ({ type: 'string', description });
const flag = (description) => ({ type: 'boolean', description });
const browserSession = text('Session name; auto-selected when exactly one session runs');

function tool(name, description, properties, run, required = []) {
  return { name, description, inputSchema: { type: 'object', properties, required, additionalProperties: false }, run };
}

const TOOLS = [
  tool(
    'session_start',
    'Start a background headless browser session on a URL (same as `aluvia session start`).',
    {
      url: text('URL to open'),
      connectionId: { type: 'integer', minimum: 1, description: 'Reuse this account connection' },
      headful: flag('Show the browser window'),
      browserSession: text('Name for the session (letters, numbers, hyphens, underscores)'),
      autoUnblock: flag('Detect blocks and re-route blocked sites through the gateway'),
      disableBlockDetection: flag('Turn block detection off'),
    },
    (a) => (a.url ? commands.sessionStart(a) : { error: 'URL is required.' }),
    ['url'],
  ),
  tool(
    'session_close',
    'Close a browser session, or all of them (same as `aluvia session close`).',
    { browserSession, all: flag('Close every running session') },
    (a) => commands.sessionClose(a),
  ),
  tool('session_list', 'List running browser sessions (same as `aluvia session list`).', {}, (a) =>
    commands.sessionList(a),
  ),
  tool(
    'session_get',
    'Details of a session: block detection state, the connection, traffic (same as `aluvia session get`).',
    { browserSession },
    (a) => commands.sessionGet(a),
  ),
  tool(
    'session_rotate_ip',
    "Rotate the session's exit IP with a new session ID (same as `aluvia session rotate-ip`).",
    { browserSession },
    (a) => commands.sessionRotateIp(a),
  ),
  tool(
    'session_set_geo',
    "Set or clear the session's geo targeting (same as `aluvia session set-geo`); geo or clear, not both.",
    { geo: text('Geo code, e.g. us_ca'), clear: flag('Clear geo targeting'), browserSession },
    (a) => commands.sessionSetGeo(a),
  ),
  tool(
    'session_set_rules',
    "Append to or remove from the session's routing rules (same as `aluvia session set-rules`); rules or remove, not both.",
    {
      rules: text('Comma-separated rules to append'),
      remove: text('Comma-separated rules to remove'),
      browserSession,
    },
    (a) => commands.sessionSetRules(a),
  ),
  tool('account_get', 'Account details (same as `aluvia account`).', {}, (a) => commands.account(a)),
  tool(
    'account_usage',
    'Account usage (same as `aluvia account usage`).',
    { start: text('Start, ISO 8601'), end: text('End, ISO 8601') },
    (a) => commands.accountUsage(a),
  ),
  tool('geos_list', 'Available geo codes (same as `aluvia geos`).', {}, (a) => commands.geos(a)),
];

/** Run one tool: never throws, never exits; the JSON object as MCP content. */
async function callTool(name, args) {
  const found = TOOLS.find((t) => t.name === name);
  let out;
  if (!found) {
    out = { error: `Unknown tool: '${name}'.` };
  } else {
    try {
      out = await found.run({ ...(args ?? {}) });
    } catch (err) {
      out = { error: err?.message ?? String(err) };
    }
  }
  return { content: [{ type: 'text', text: JSON.stringify(out) }], isError: Boolean(out?.error) };
}

function createServer() {
  const server = new Server({ name: 'aluvia', version }, { capabilities: { tools: {} } });
  server.setRequestHandler(ListToolsRequestSchema, async () => ({
    tools: TOOLS.map(({ name, description, inputSchema }) => ({ name, description, inputSchema })),
  }));
  server.setRequestHandler(CallToolRequestSchema, (req) => callTool(req.params.name, req.params.arguments));
  return server;
}

async function main() {
  const server = createServer();
  await server.connect(new StdioServerTransport());
  process.stderr.write('Aluvia MCP server running on stdio\n');
}

module.exports = { TOOLS, callTool, createServer, main };

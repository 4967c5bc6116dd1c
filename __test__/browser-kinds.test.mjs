// Two browser kinds: `chromium` (the full browser, new headless) and
// `headless-shell`, chosen by the client's `browser` option, the CLI's
// `--browser`, MCP's `browser` parameter or ALUVIA_BROWSER, and reported as
// `{kind, version}`. Each kind's page-visible fingerprint is printed for the
// README's table.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readlinkSync, readFileSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { sdk, root, serve, withEmulator, emulatorClientOptions, require } from './helpers.mjs';
import { Sandbox, descendants } from './sessions.mjs';

const { AluviaClient } = sdk;
const native = require('../lib/native.js');
const { Client } = require('@modelcontextprotocol/sdk/client/index.js');
const { StdioClientTransport } = require('@modelcontextprotocol/sdk/client/stdio.js');

const KINDS = ['chromium', 'headless-shell'];

/** Whether this machine has a browser of `kind` (the shell may be missing). */
function available(kind) {
  try {
    return native.sessionBrowser(kind, null, false).path;
  } catch {
    return null;
  }
}

// What a site's fingerprinting script looks at first.
const FINGERPRINT_PAGE = `<!doctype html><title>fingerprint</title><script>
window.fingerprint = (() => {
  let webgl = null;
  try {
    const gl = document.createElement('canvas').getContext('webgl');
    const ext = gl && gl.getExtension('WEBGL_debug_renderer_info');
    webgl = gl ? (ext ? gl.getParameter(ext.UNMASKED_VENDOR_WEBGL) : gl.getParameter(gl.VENDOR)) : null;
  } catch (e) { webgl = 'error'; }
  return {
    webdriver: navigator.webdriver,
    userAgent: navigator.userAgent,
    windowChrome: typeof window.chrome === 'object' && window.chrome !== null,
    plugins: navigator.plugins.length,
    webglVendor: webgl,
    languages: navigator.languages.join(','),
  };
})();
</script>`;

/**
 * Whether `exes` is one browser of `kind`: the shell's own binary, or, for
 * `chromium`, another one (Debian's /usr/bin/chromium is a script that runs
 * /usr/lib/chromium/chromium).
 */
function oneOfKind(exes, kind) {
  const shell = available('headless-shell') && realpathSync(available('headless-shell'));
  if (exes.length !== 1) return false;
  return kind === 'headless-shell' ? exes[0] === shell : exes[0] !== shell && /chrom/i.test(exes[0]);
}

/** How each kind looks to a page (the README's table), the user agent aside. */
const FINGERPRINTS = {
  chromium: {
    webdriver: true,
    windowChrome: true,
    plugins: 5,
    webglVendor: 'Google Inc. (Google)',
    languages: 'en-US,en',
  },
  'headless-shell': {
    webdriver: true,
    windowChrome: false,
    plugins: 0,
    webglVendor: 'Google Inc. (Google)',
    languages: 'en-US',
  },
};

/** The executable of the browser process under `pid` (a daemon or this process). */
function browserExecutables(pid) {
  return descendants(pid)
    .filter((p) => {
      try {
        const cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8');
        return cmd.includes('--user-data-dir=') && !cmd.includes('--type=');
      } catch {
        return false;
      }
    })
    .map((p) => readlinkSync(`/proc/${p}/exe`));
}

for (const kind of KINDS) {
  test(`browser: '${kind}' runs that binary, reports {kind, version} and loads pages through the proxy`, async (t) => {
    const path = available(kind);
    if (!path) return t.skip(`no ${kind} here`);
    const origin = await serve((_req, res) => {
      res.setHeader('content-type', 'text/html');
      res.end(FINGERPRINT_PAGE);
    });
    try {
      await withEmulator(async (emu) => {
        const client = new AluviaClient(
          emulatorClientOptions(emu, { startPlaywright: true, browser: kind, blockDetection: { enabled: false } }),
        );
        const conn = await client.start();
        try {
          assert.equal(conn.browserInfo.kind, kind);
          assert.match(conn.browserInfo.version, /^\d+\.\d+\.\d+\.\d+$/);
          const exes = browserExecutables(process.pid);
          assert.ok(oneOfKind(exes, kind), `${exes} for ${path}`);
          const page = await conn.browserContext.newPage();
          const res = await page.goto(`${origin.url}/fp`);
          assert.equal(res.status(), 200);
          const fp = await page.evaluate(() => window.fingerprint);
          t.diagnostic(`${kind} ${conn.browserInfo.version}: ${JSON.stringify(fp)}`);
          assert.ok(fp.userAgent.includes(conn.browserInfo.version.split('.')[0]), fp.userAgent);
          // What the README's table says each kind shows a page: the flags
          // that trim a session's processes must not change it.
          const { userAgent: _, ...seen } = fp;
          assert.deepEqual(seen, FINGERPRINTS[kind]);
          assert.ok(
            client.getTrafficStats().some((e) => e.hostname === '127.0.0.1'),
            'the page came through the proxy',
          );
        } finally {
          await conn.close();
        }
      });
    } finally {
      await origin.close();
    }
  });
}

test('the CLI: --browser and ALUVIA_BROWSER choose the kind; session list and get report it; bad values fail before anything starts', async (t) => {
  if (!available('headless-shell')) return t.skip('no headless shell here');
  await withEmulator(async (emu) => {
    const sb = new Sandbox(emu, 'kinds');
    try {
      const shell = await sb.cli([
        'session',
        'start',
        'about:blank',
        '--browser',
        'headless-shell',
        '--browser-session',
        'hs',
      ]);
      assert.equal(shell.code, 0, shell.stdout);
      const full = await sb.cli(['session', 'start', 'about:blank', '--browser-session', 'full']);
      assert.equal(full.code, 0, full.stdout);
      const fromEnv = await sb.cli(['session', 'start', 'about:blank', '--browser-session', 'env'], {
        env: { ALUVIA_BROWSER: 'headless-shell' },
      });
      assert.equal(fromEnv.code, 0, fromEnv.stdout);
      const list = await sb.cli(['session', 'list']);
      const kinds = Object.fromEntries(list.json.sessions.map((s) => [s.browserSession, s.browser?.kind]));
      assert.deepEqual(kinds, { env: 'headless-shell', full: 'chromium', hs: 'headless-shell' });
      const get = await sb.cli(['session', 'get', '--browser-session', 'hs']);
      assert.equal(get.json.browser.kind, 'headless-shell');
      assert.match(get.json.browser.version, /^\d+\.\d+\.\d+\.\d+$/);
      assert.ok(oneOfKind(browserExecutables(shell.json.pid), 'headless-shell'));
      assert.ok(oneOfKind(browserExecutables(full.json.pid), 'chromium'));

      const before = sb.locks().length;
      const bad = await sb.cli(['session', 'start', 'about:blank', '--browser', 'chrome']);
      assert.equal(bad.code, 1);
      assert.equal(bad.json.error, "--browser must be 'chromium' or 'headless-shell', got 'chrome'");
      const badEnv = await sb.cli(['session', 'start', 'about:blank'], { env: { ALUVIA_BROWSER: 'firefox' } });
      assert.equal(badEnv.json.error, "ALUVIA_BROWSER must be 'chromium' or 'headless-shell', got 'firefox'");
      const headful = await sb.cli(['session', 'start', 'about:blank', '--browser', 'headless-shell', '--headful']);
      assert.match(headful.json.error, /^The headless-shell browser has no window/);
      assert.equal(sb.locks().length, before, 'nothing was started');
    } finally {
      await sb.dispose();
    }
  });
});

test("MCP session_start takes browser, and refuses a kind it doesn't know in MCP terms", async (t) => {
  if (!available('headless-shell')) return t.skip('no headless shell here');
  await withEmulator(async (emu) => {
    const sb = new Sandbox(emu, 'kinds-mcp');
    const transport = new StdioClientTransport({
      command: process.execPath,
      args: [join(root, 'bin', 'aluvia-mcp.js')],
      env: { ...process.env, ...sb.env },
      stderr: 'pipe',
    });
    const client = new Client({ name: 'aluvia-test', version: '1.0.0' });
    await client.connect(transport);
    try {
      const tools = await client.listTools();
      const start = tools.tools.find((tool) => tool.name === 'session_start');
      assert.deepEqual(start.inputSchema.properties.browser.enum, ['chromium', 'headless-shell']);
      const bad = await client.callTool({
        name: 'session_start',
        arguments: { url: 'about:blank', browser: 'chrome' },
      });
      assert.equal(bad.isError, true);
      assert.equal(
        JSON.parse(bad.content[0].text).error,
        `Invalid parameter 'browser': expected 'chromium' or 'headless-shell', got "chrome".`,
      );
      const ok = await client.callTool({
        name: 'session_start',
        arguments: { url: 'about:blank', browser: 'headless-shell', browserSession: 'm' },
      });
      assert.ok(!ok.isError, ok.content[0].text);
      const got = await client.callTool({ name: 'session_get', arguments: { browserSession: 'm' } });
      assert.equal(JSON.parse(got.content[0].text).browser.kind, 'headless-shell');
    } finally {
      await client.close();
      await sb.dispose();
    }
  });
});

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, existsSync, readdirSync } from 'node:fs';
import { sdk, serve, root, emulatorClientOptions, eventually, runNode, privateTmpdir } from './helpers.mjs';

const { AluviaClient, AluviaApi } = sdk;

let emu;
let api;
let corpus;

const LONG = 'This is an ordinary page about gardening, cooking and travel. '.repeat(12);

function page(title, body, extraHead = '') {
  return `<!doctype html><html><head><title>${title}</title>${extraHead}</head><body>${body}</body></html>`;
}

// One page per signal, and benign look-alikes.
const PAGES = {
  '/status-403': { status: 403, html: page('Shop', `<p>${LONG}</p>`) },
  '/status-429': { status: 429, html: page('Shop', `<p>${LONG}</p>`) },
  '/status-503': { status: 503, html: page('Shop', `<p>${LONG}</p>`) },
  '/cf-mitigated': { headers: { 'cf-mitigated': 'Challenge' }, html: page('Shop', `<p>${LONG}</p>`) },
  '/server-cloudflare': { headers: { server: 'cloudflare' }, html: page('Shop', `<p>${LONG}</p>`) },
  '/title': { html: page('Access Denied', `<p>${LONG}</p>`) },
  '/selector': { html: page('Shop', `<p>${LONG}</p><div class="g-recaptcha"></div>`) },
  '/short': { html: page('Shop', '<p>Hello there.</p>') },
  '/strong': { html: page('Shop', '<p>Please solve the captcha below so that we can let you continue shopping.</p>') },
  '/article': {
    html: page(
      'News',
      `<p>${LONG} Last week several readers said their favourite forum was blocked by a Cloudflare rule; the admins fixed it. ${LONG}</p>`,
    ),
  },
  '/ratio': {
    html: page(
      'Shop',
      `<p>A short but complete sentence about our nice shop and its goods.</p>${'<div data-pad="xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"></div>'.repeat(60)}`,
    ),
  },
  '/meta': {
    html: page(
      'Shop',
      `<p>${LONG}</p>`,
      '<meta http-equiv="refresh" content="600;url=https://geo.captcha-delivery.com/captcha/">',
    ),
  },
  '/redirect': { status: 302, headers: { location: '/cdn-cgi/challenge-platform/h/b' }, html: '' },
  '/cdn-cgi/challenge-platform/h/b': { html: page('Shop', `<p>${LONG}</p>`) },
  '/spa': {
    html: page(
      'App',
      `<p>${LONG}</p><script>
        window.addEventListener('load', () => setTimeout(() => {
          history.pushState({}, '', '/spa/denied');
          document.title = 'Access denied';
          document.body.innerHTML = '<h1>Access denied</h1>';
        }, 2500));
      </script>`,
    ),
  },
};

// [path, expected signal names, expected status]
const CORPUS = [
  ['/status-403', ['http_status_403'], 'blocked'],
  ['/status-429', ['http_status_429'], 'blocked'],
  ['/status-503', ['http_status_503'], 'suspected'],
  ['/cf-mitigated', ['waf_header_cf_mitigated'], 'blocked'],
  ['/server-cloudflare', ['waf_header_cloudflare'], 'clear'],
  ['/title', ['title_keyword'], 'blocked'],
  ['/selector', ['challenge_selector'], 'blocked'],
  ['/short', ['visible_text_short'], 'clear'],
  ['/strong', ['visible_text_keyword_strong'], 'suspected'],
  ['/article', ['visible_text_keyword_weak'], 'clear'],
  ['/ratio', ['low_text_ratio'], 'clear'],
  ['/meta', ['meta_refresh_challenge'], 'suspected'],
  ['/redirect', ['redirect_to_challenge'], 'blocked'],
];

// A private TMPDIR: auto-unblock takes its rules lock in {tmpdir}/aluvia-sdk,
// and Chromium profiles live in tmpdir too; all of it goes in after().
const tmp = privateTmpdir('aluvia-browser-');
const privateTmp = tmp.dir;

before(async () => {
  emu = await sdk.startEmulator();
  api = new AluviaApi({ apiKey: emu.apiKey, apiBaseUrl: emu.apiBaseUrl });
  corpus = await serve((req, res) => {
    const p = PAGES[req.url.split('?')[0]] ?? { status: 404, html: page('Not found', `<p>${LONG}</p>`) };
    res.writeHead(p.status ?? 200, { 'content-type': 'text/html', ...(p.headers ?? {}) });
    res.end(p.html);
  });
});

after(async () => {
  await corpus?.close();
  await emu?.stop();
  tmp.restore();
});

function options(blockDetection, extra = {}) {
  return emulatorClientOptions(emu, { startPlaywright: true, blockDetection, ...extra });
}

const until = (check, what, timeoutMs = 20_000) => eventually(check, { what, timeoutMs, intervalMs: 50 });

/** A client with its browser and one new tab for `fn`; the connection is always closed. */
async function withBrowser(blockDetection, fn, extra = {}) {
  const client = new AluviaClient(options(blockDetection, extra));
  const connection = await client.start();
  try {
    return await fn({ client, connection, tab: await connection.browserContext.newPage() });
  } finally {
    await connection.close();
  }
}

async function visits(path) {
  const res = await fetch(new URL('/_site/visits', emu.siteUrl));
  return (await res.json()).filter((v) => v.path === path);
}

function chromiumProcessesOf(pid) {
  const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  const dir = cmdline.find((a) => a.startsWith('--user-data-dir='));
  assert.ok(dir, 'Chromium runs with its own user-data-dir');
  assert.ok(cmdline.includes('--remote-debugging-address=127.0.0.1'));
  const processes = () =>
    execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' })
      .split('\n')
      .filter((l) => l.includes(dir));
  processes.userDataDir = dir.slice('--user-data-dir='.length);
  return processes;
}

test('the whole story: blocked direct, rule added, reloaded through the gateway, clear; no Chromium left', async () => {
  const results = [];
  const client = new AluviaClient(
    options({ autoUnblock: true, onDetection: (result, p) => results.push({ result, page: p }) }),
  );
  const connection = await client.start();
  assert.match(connection.cdpUrl, /^http:\/\/127\.0\.0\.1:\d+$/);
  const pid = client._native.browserPid;
  const processes = chromiumProcessesOf(pid);
  try {
    const tab = await connection.browserContext.newPage();
    await tab.goto(emu.siteUrl);
    const first = await until(() => results.find((r) => r.result.blockStatus === 'blocked'), 'a blocked result');
    assert.equal(first.result.pass, 'fast', 'decided at DOMContentLoaded from the response alone');
    assert.equal(first.result.hostname, '127.0.0.1');
    const names = first.result.signals.map((s) => s.name);
    assert.ok(names.includes('http_status_403') && names.includes('waf_header_cf_mitigated'), names.join());
    assert.equal(first.result.persistentBlock, false);
    assert.equal(first.page, tab, 'onDetection gets the Playwright page');
    const clear = await until(() => results.find((r) => r.result.blockStatus === 'clear'), 'a clear result');
    assert.equal(clear.page, tab);
    assert.equal(await tab.title(), 'Aluvia Emulator Shop');
    const conn = await api.account.connections.get(client.connectionId);
    assert.deepEqual(conn.rules, ['127.0.0.1']);
    const served = await visits('/');
    assert.equal(served.at(-2).status, 403);
    assert.equal(served.at(-1).status, 200);
    assert.notEqual(served.at(-1).peer, '127.0.0.1', 'the reload went through the gateway');
    assert.deepEqual(client.getBlockedHostnames(), []);
  } finally {
    await connection.close();
  }
  assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' });
  await until(() => processes().length === 0, 'every Chromium process of that browser to exit', 5000);
  assert.equal(existsSync(processes.userDataDir), false, 'the profile directory is removed');
});

test('a site that blocks the gateway too ends persistently blocked after exactly one reload', async () => {
  const results = [];
  await withBrowser({ autoUnblock: true, onDetection: (r) => results.push(r) }, async ({ client, tab }) => {
    const before = (await visits('/strict')).length;
    await tab.goto(new URL('/strict', emu.siteUrl).href);
    await until(() => results.find((r) => r.persistentBlock), 'a persistent block');
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal((await visits('/strict')).length - before, 2, 'one visit and exactly one reload');
    assert.deepEqual(client.getBlockedHostnames(), ['127.0.0.1']);
    assert.ok(results.every((r) => r.blockStatus === 'blocked'));
    client.clearBlockedHostnames();
    assert.deepEqual(client.getBlockedHostnames(), []);
  });
});

test('the page corpus: each signal alone, benign look-alikes stay clear', async () => {
  const results = [];
  await withBrowser({ onDetection: (r) => results.push(r) }, async ({ tab }) => {
    for (const [path, signals, status] of CORPUS) {
      const url = `${corpus.url}${path}`;
      results.length = 0;
      await tab.goto(url).catch(() => {});
      const final = path === '/redirect' ? `${corpus.url}/cdn-cgi/challenge-platform/h/b` : url;
      const r = await until(() => results.find((x) => x.url === final), `a result for ${path}`);
      assert.deepEqual(
        r.signals.map((s) => s.name).sort(),
        [...signals].sort(),
        `${path}: ${JSON.stringify(r.signals)}`,
      );
      assert.equal(r.blockStatus, status, path);
      for (const s of r.signals)
        assert.ok(s.weight > 0 && typeof s.details === 'string' && ['fast', 'full'].includes(s.source));
      if (path === '/redirect') {
        assert.deepEqual(r.redirectChain, [{ url, statusCode: 302 }]);
      }
    }
  });
});

test('the SPA pass catches a pushState to an "Access denied" view', async () => {
  const results = [];
  await withBrowser({ onDetection: (r) => results.push(r) }, async ({ tab }) => {
    await tab.goto(`${corpus.url}/spa`);
    const r = await until(() => results.find((x) => x.url.endsWith('/spa/denied')), 'the SPA result');
    assert.ok(
      r.signals.some((s) => s.name === 'title_keyword'),
      JSON.stringify(r.signals),
    );
    assert.equal(r.blockStatus, 'blocked');
    assert.ok(
      results.some((x) => x.url.endsWith('/spa') && x.blockStatus === 'clear'),
      'the page itself was clear',
    );
  });
});

test('pages opened by another process over CDP are watched too', async () => {
  const results = [];
  const client = new AluviaClient(options({ onDetection: (r, p) => results.push({ r, p }) }));
  const connection = await client.start();
  try {
    const script = `
      const { chromium } = require('playwright-core');
      (async () => {
        const browser = await chromium.connectOverCDP(process.argv[1]);
        const context = browser.contexts()[0];
        const page = await context.newPage();
        await page.goto(process.argv[2]);
        console.log(await page.title());
        await browser.close();
      })().catch((e) => { console.error(e); process.exit(1); });
    `;
    const { code, stderr } = await runNode(['-e', script, connection.cdpUrl, `${emu.siteUrl}strict/other`]);
    assert.equal(code, 0, stderr);
    const hit = await until(
      () => results.find((x) => x.r.url.endsWith('/strict/other')),
      'a result for the other process page',
    );
    assert.equal(hit.r.blockStatus, 'blocked');
  } finally {
    await connection.close();
  }
});

test('autoUnblock false reports but changes nothing; enabled false yields only clear results', async () => {
  const results = [];
  await withBrowser({ autoUnblock: false, onDetection: (r) => results.push(r) }, async ({ client, tab }) => {
    const before = (await visits('/')).length;
    await tab.goto(emu.siteUrl);
    await until(() => results.find((r) => r.blockStatus === 'blocked'), 'a blocked result');
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal((await visits('/')).length - before, 1, 'no reload');
    assert.deepEqual((await api.account.connections.get(client.connectionId)).rules, []);
  });

  const quiet = [];
  await withBrowser({ enabled: false, onDetection: (r) => quiet.push(r) }, async ({ tab }) => {
    await tab.goto(emu.siteUrl);
    await until(() => quiet.length >= 1, 'a result');
    await tab.goto(`${corpus.url}/title`);
    await until(() => quiet.length >= 2, 'two results');
    assert.ok(quiet.every((r) => r.blockStatus === 'clear' && r.signals.length === 0 && r.score === 0));
  });
});

test('a throwing onDetection is logged, never fatal', async () => {
  let calls = 0;
  const logged = [];
  const consoleError = console.error;
  console.error = (...args) => logged.push(args.join(' '));
  try {
    await withBrowser(
      {
        onDetection: () => {
          calls++;
          throw new Error(`boom ${calls}`);
        },
      },
      async ({ tab }) => {
        await tab.goto(`${corpus.url}/short`);
        await until(() => calls >= 1, 'a callback');
        await tab.goto(`${corpus.url}/title`);
        await until(() => calls >= 2, 'two callbacks');
        assert.equal(await tab.title(), 'Access Denied');
        await until(() => logged.filter((l) => l.includes('onDetection threw')).length >= 2, 'both errors logged');
        const lines = logged.filter((l) => l.includes('onDetection threw'));
        assert.ok(lines[0].includes('Error: boom 1'), lines[0]);
        assert.ok(lines[1].includes('Error: boom 2'), lines[1]);
      },
      { logLevel: 'info' },
    );
  } finally {
    console.error = consoleError;
  }
});

test("logLevel 'debug' prints one JSON line per result", async () => {
  const script = `
    const { AluviaClient } = require(${JSON.stringify(root)} + '/lib/index.js');
    (async () => {
      let n = 0;
      const client = new AluviaClient({ ...JSON.parse(process.argv[1]), onDetection: undefined,
        blockDetection: { onDetection: () => { n++; } } });
      const c = await client.start();
      const page = await c.browserContext.newPage();
      await page.goto(process.argv[2]);
      while (n < 1) await new Promise((r) => setTimeout(r, 50));
      await c.close();
    })().catch((e) => { console.error(e); process.exit(1); });
  `;
  const opts = emulatorClientOptions(emu, { startPlaywright: true, logLevel: 'debug' });
  const { code, stderr: err } = await runNode(['-e', script, JSON.stringify(opts), `${corpus.url}/title`]);
  assert.equal(code, 0, err);
  const lines = err
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l));
  assert.equal(lines.length, 1, err);
  assert.equal(lines[0].url, `${corpus.url}/title`);
  assert.equal(lines[0].blockStatus, 'blocked');
  assert.deepEqual(
    lines[0].signals.map((s) => s.name),
    ['title_keyword'],
  );
});

test('client.stop() also ends the browser: no Chromium outlives its proxy', async () => {
  const client = new AluviaClient(options({ enabled: false }));
  await client.start();
  const pid = client._native.browserPid;
  assert.ok(pid > 0);
  process.kill(pid, 0); // alive now
  await client.stop();
  assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' });
  await client.stop(); // idempotent
});

test('nothing is left in the tmpdir: no profile, no lock file', async () => {
  const left = readdirSync(privateTmp, { recursive: true });
  assert.deepEqual(
    left.filter((p) => p !== 'aluvia-sdk'),
    [],
    left.join(', '),
  );
});

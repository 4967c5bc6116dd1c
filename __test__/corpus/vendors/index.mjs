// The vendor corpus: block and challenge pages written in the style of each
// vendor's real pages, and content pages that carry what the vendor injects
// into every page of a protected site (short 404 pages included). Shared by
// __test__/detection-vendors.test.mjs and benches/browser.mjs.
//
// Block and challenge pages are static files; the ordinary pages are built
// from ordinary.mjs with the vendor's injected snippet below. Each entry is
// served at `path` with the status and headers the vendor really uses.
// `expect` is 'caught' (blocked or suspected) or 'clear'; `marker` is the vendor_challenge details the page must produce
// once its status and headers are taken away (the page's own content alone),
// null when the page is caught otherwise (Sucuri's JS challenge only reloads).
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { contentPage, notFoundPage } from './ordinary.mjs';

const here = dirname(fileURLToPath(import.meta.url));

// What each vendor puts into every page of a protected site. Script URLs are
// local paths (the vendors' own hosts are replaced), so nothing leaves the machine.
const INJECTED = {
  imperva: {
    head: '\n  <script src="/_Incapsula_Resource?SWJIYLWA=5074a744e2e3d891814e9a2dace20bd4,719d34d31c8e3a6e6fffd425f7e032f3"></script>',
  },
  sucuri: {}, // Sucuri injects nothing; its pages are known by their headers.
  aws: {
    head: `
  <script>window.awsWafCookieDomainList = ['.example.com'];</script>
  <script type="text/javascript" src="/awswaf/3f2a6c1d/7b9e0a44/jsapi.js" defer></script>`,
    foot: `
  <script>
    window.addEventListener('load', () => {
      if (window.AwsWafIntegration) AwsWafIntegration.fetch('/api/recently-viewed').catch(() => {});
    });
  </script>`,
  },
  datadome: {
    head: `
  <script>
    window.ddjskey = '8F3C2A1B9E7D6C5B4A39281706F5E4';
    window.ddoptions = { ajaxListenerPath: true, sessionByHeader: true };
  </script>
  <script src="/datadome/tags.js" async></script>`,
  },
  perimeterx: {
    head: `
  <script>
    window._pxAppId = 'PXr4nd0m1d';
    window._pxJsClientSrc = '/r4nd0m1d/init.js';
  </script>
  <script src="/r4nd0m1d/init.js" async></script>`,
  },
  kasada: {
    head: `
  <script src="/149e9513-01fa-4fb0-aad4-566afd725d1b/2d206a39-8ed7-437e-a3be-862e0f06eea3/p.js" async></script>
  <script>
    document.addEventListener('kpsdk-load', () => {
      window.KPSDK.configure([{ protocol: 'http:', method: 'POST', domain: location.host, path: '/api/basket' }]);
    });
  </script>`,
  },
  akamai: {
    head: '\n  <script type="text/javascript" src="/akam/13/5e0a6bc6" defer></script>',
    foot: '\n  <noscript><img src="/akam/13/pixel_5e0a6bc6?a=dD0wZjNhOWMxMjRlJmpzPW9mZg==" style="visibility: hidden; position: absolute; left: -999px; top: -999px;"></noscript>',
  },
  cloudflare: {
    foot: `
  <script>(function(){function c(){var b=a.contentDocument||a.contentWindow.document;if(b){var d=b.createElement('script');d.innerHTML="window.__CF$cv$params={r:'8f3e2d1c0b9a8776',t:'MTcxODAwMDAwMC4wMDAwMDA='};var a=document.createElement('script');a.nonce='';a.src='/cdn-cgi/challenge-platform/scripts/jsd/main.js';document.getElementsByTagName('head')[0].appendChild(a);";b.getElementsByTagName('head')[0].appendChild(d)}}if(document.body){var a=document.createElement('iframe');a.height=1;a.width=1;a.style.position='absolute';a.style.top=0;a.style.left=0;a.style.border='none';a.style.visibility='hidden';document.body.appendChild(a);if('loading'!==document.readyState)c();else if(window.addEventListener)document.addEventListener('DOMContentLoaded',c);else{var e=document.onreadystatechange||function(){};document.onreadystatechange=function(b){e(b);'loading'!==document.readyState&&(document.onreadystatechange=e,c())}}}})();</script>`,
  },
};

// Comment, sign-up and newsletter forms with the widgets rendered (their
// frames point at local paths that keep the vendors' path names).
const FORMS = {
  recaptcha: `
  <section id="comments">
    <h2>Leave a comment</h2>
    <form method="post" action="/comments">
      <p><label>Name <input name="author" required></label></p>
      <p><label>Comment <textarea name="comment" rows="6" required></textarea></label></p>
      <div class="g-recaptcha" data-sitekey="6LcTestKeyForCommentsAaBbCcDdEeFfGgHhIi"><iframe title="reCAPTCHA" src="/recaptcha/api2/anchor?ar=1&amp;k=6LcTestKeyForCommentsAaBbCcDdEeFfGgHhIi&amp;size=normal" width="304" height="78"></iframe></div>
      <p class="small">This site is protected by reCAPTCHA and the Google Privacy Policy and Terms of Service apply.</p>
      <p><button>Post comment</button></p>
    </form>
  </section>`,
  hcaptcha: `
  <section id="join">
    <h2>Join the club</h2>
    <form method="post" action="/signup">
      <p><label>Email <input type="email" name="email" required></label></p>
      <p><label>Password <input type="password" name="password" required></label></p>
      <div class="h-captcha" data-sitekey="10000000-ffff-ffff-ffff-000000000001"><iframe title="Widget containing checkbox for hCaptcha security challenge" src="/hcaptcha/checkbox.html#frame=checkbox&amp;id=0x1a2b3c" width="303" height="78"></iframe></div>
      <p><button>Create account</button></p>
    </form>
  </section>`,
  turnstile: `
  <aside id="newsletter">
    <h2>Get one repair guide a week</h2>
    <form method="post" action="/newsletter">
      <p><label>Email <input type="email" name="email" required></label></p>
      <div class="cf-turnstile" data-sitekey="1x00000000000000000000AA"><iframe title="Widget containing a Cloudflare security challenge" id="cf-chl-widget-a1b2c" src="/cdn-cgi/challenge-platform/h/b/turnstile/if/ov2/av0/rcv/a1b2c/0x4AAAAAAAtest/light/fbE/new/normal/auto/" width="300" height="65"></iframe><input type="hidden" name="cf-turnstile-response" id="cf-chl-widget-a1b2c_response"></div>
      <p><button>Subscribe</button></p>
    </form>
  </aside>`,
};

const CF = { server: 'cloudflare', 'cf-ray': '8f3e2d1c0b9a8776-AMS' };
const SUCURI = { server: 'Sucuri/Cloudproxy', 'x-sucuri-id': '14013' };
const IMPERVA = { 'x-cdn': 'Imperva' };

const file = (name) => ({ file: name, path: `/${name.replace(/\.html$/, '')}`, html: readFileSync(join(here, name)) });
/** The vendor's article and short 404 page, each carrying its injected snippet. */
const ordinary = (vendor, dir, article, site, injected, headers) => [
  { vendor, path: `/${dir}/content`, html: contentPage(article, site, injected), status: 200, headers, expect: 'clear' },
  { vendor, path: `/${dir}/not-found`, html: notFoundPage(site, injected), status: 404, headers, expect: 'clear' },
];

export const VENDOR_PAGES = [
  // Imperva/Incapsula: incident pages and the JS interstitial come with 200.
  { vendor: 'Imperva/Incapsula', ...file('imperva/incident.html'), status: 200, headers: { ...IMPERVA, 'x-iinfo': '7-11223344-0 0NNN RT(1700000000000 42)' }, expect: 'caught', marker: 'Imperva/Incapsula: Incapsula incident ID' },
  { vendor: 'Imperva/Incapsula', ...file('imperva/captcha-frame.html'), status: 200, headers: IMPERVA, expect: 'caught', marker: 'Imperva/Incapsula: <iframe + /_Incapsula_Resource?CWUDNSAI=' },
  { vendor: 'Imperva/Incapsula', ...file('imperva/pardon.html'), status: 200, headers: IMPERVA, expect: 'caught', marker: 'Imperva/Incapsula: Pardon Our Interruption + made us think you were a bot' },
  { vendor: 'Imperva/Incapsula', ...file('imperva/js-interstitial.html'), status: 200, headers: IMPERVA, expect: 'caught', marker: 'Imperva/Incapsula: /_Incapsula_Resource?SWJIYLWA=' },
  ...ordinary('Imperva/Incapsula', 'imperva', 'planting', 'Green Fingers', INJECTED.imperva, IMPERVA),
  // Sucuri: the JS challenge sets a cookie and reloads (here the cookie never
  // satisfies the server, so it reloads for ever); the block page is a 403.
  { vendor: 'Sucuri', ...file('sucuri/js-challenge.html'), status: 200, headers: SUCURI, expect: 'caught', marker: null, reloads: true },
  { vendor: 'Sucuri', ...file('sucuri/block.html'), status: 403, headers: { ...SUCURI, 'x-sucuri-block': 'BNP005' }, expect: 'caught', marker: 'Sucuri: Sucuri WebSite Firewall + Access Denied' },
  ...ordinary('Sucuri', 'sucuri', 'hiking', 'Peak Walks', INJECTED.sucuri, { ...SUCURI, 'x-sucuri-cache': 'HIT' }),
  // AWS WAF: 202 for a challenge, 405 for a captcha, with x-amzn-waf-action.
  { vendor: 'AWS WAF', ...file('aws-waf/challenge.html'), status: 202, headers: { 'x-amzn-waf-action': 'challenge' }, expect: 'caught', marker: 'AWS WAF: awsWafCookieDomainList' },
  { vendor: 'AWS WAF', ...file('aws-waf/token-refresh.html'), status: 202, headers: { 'x-amzn-waf-action': 'challenge' }, expect: 'caught', marker: 'AWS WAF: AwsWafIntegration' },
  { vendor: 'AWS WAF', ...file('aws-waf/captcha.html'), status: 405, headers: { 'x-amzn-waf-action': 'captcha' }, expect: 'caught', marker: 'AWS WAF: window.gokuProps' },
  ...ordinary('AWS WAF', 'aws-waf', 'sourdough', 'Crumb & Crust', INJECTED.aws, { 'x-amz-cf-id': 'Zx1Yw2Xv3Uu4Tt5Ss6Rr7Qq8Pp9Oo0Nn' }),
  // DataDome: a 403 with x-datadome.
  { vendor: 'DataDome', ...file('datadome/block.html'), status: 403, headers: { 'x-datadome': 'protected', 'x-dd-b': '1' }, expect: 'caught', marker: 'DataDome: captcha-delivery.com + dd={' },
  ...ordinary('DataDome', 'datadome', 'bicycle', 'Two Wheels Weekly', INJECTED.datadome, { 'x-datadome': 'protected' }),
  // PerimeterX/HUMAN: a 403 "Press & Hold" page, and the older captcha page.
  { vendor: 'PerimeterX/HUMAN', ...file('perimeterx/block.html'), status: 403, headers: {}, expect: 'caught', marker: 'PerimeterX/HUMAN: px-captcha' },
  { vendor: 'PerimeterX/HUMAN', ...file('perimeterx/block-recaptcha.html'), status: 403, headers: {}, expect: 'caught', marker: 'PerimeterX/HUMAN: _pxCaptcha' },
  ...ordinary('PerimeterX/HUMAN', 'perimeterx', 'coffee', 'Daily Grind', INJECTED.perimeterx, {}),
  // Kasada: a 429 with an empty body and the KPSDK bootstrap.
  { vendor: 'Kasada', ...file('kasada/block.html'), status: 429, headers: { 'x-kpsdk-ct': '0Fz1Ya2Xb3Wc4Vd5Ue6Tf7Sg8Rh9Qi' }, expect: 'caught', marker: 'Kasada: KPSDK' },
  ...ordinary('Kasada', 'kasada', 'houseplants', 'Leaf & Root', INJECTED.kasada, {}),
  // Akamai: "Access Denied" from AkamaiGHost with a 403, and the sec-cpt challenge.
  { vendor: 'Akamai', ...file('akamai/access-denied.html'), status: 403, headers: { server: 'AkamaiGHost', 'mime-version': '1.0' }, expect: 'caught', marker: 'Akamai: Access Denied + Reference #' },
  { vendor: 'Akamai', ...file('akamai/cp-challenge.html'), status: 428, headers: { 'cache-control': 'no-cache' }, expect: 'caught', marker: 'Akamai: /_sec/cp_challenge/' },
  ...ordinary('Akamai', 'akamai', 'library', 'Town Library', INJECTED.akamai, { 'server-timing': 'ak_p; desc="1718000000000_1"' }),
  // Cloudflare: the managed challenge (403 + cf-mitigated), the WAF block
  // page, and an origin's empty page that carries only the injected script.
  { vendor: 'Cloudflare', ...file('cloudflare/challenge.html'), status: 403, headers: { ...CF, 'cf-mitigated': 'challenge' }, expect: 'caught', marker: 'Cloudflare: window._cf_chl_opt' },
  { vendor: 'Cloudflare', ...file('cloudflare/block.html'), status: 403, headers: CF, expect: 'caught', marker: 'Cloudflare: cf-error-details + you have been blocked' },
  { vendor: 'Cloudflare', path: '/cloudflare/empty', html: `<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8"><title></title></head>\n<body>${INJECTED.cloudflare.foot}\n</body>\n</html>\n`, status: 200, headers: CF, expect: 'caught', marker: 'Cloudflare: /cdn-cgi/challenge-platform/ + /jsd/' },
  ...ordinary('Cloudflare', 'cloudflare', 'tap', 'Fix It Yourself', INJECTED.cloudflare, CF),
  // Articles with captcha widgets in forms.
  { vendor: 'widgets', path: '/widgets/recaptcha-comments', html: contentPage('hiking', 'Trail Journal', { foot: FORMS.recaptcha }), status: 200, headers: {}, expect: 'clear' },
  { vendor: 'widgets', path: '/widgets/hcaptcha-signup', html: contentPage('bicycle', 'Cycle Club', { foot: FORMS.hcaptcha }), status: 200, headers: {}, expect: 'clear' },
  { vendor: 'widgets', path: '/widgets/turnstile-newsletter', html: contentPage('tap', 'Home Repairs', { foot: FORMS.turnstile + INJECTED.cloudflare.foot }), status: 200, headers: CF, expect: 'clear' },
];

/** The page at `path`, or undefined. */
export const vendorPage = (path) => VENDOR_PAGES.find((p) => p.path === path);

/**
 * A request handler for the corpus. `/bare/<path>` serves a page with 200
 * and no vendor headers. Subresources the pages ask for (vendor scripts,
 * iframes) get small local answers, so nothing leaves the machine.
 */
export function corpusHandler(req, res) {
  const url = new URL(req.url, 'http://localhost');
  const bare = url.pathname.startsWith('/bare/');
  const page = vendorPage(bare ? url.pathname.slice('/bare'.length) : url.pathname);
  if (page) {
    const headers = bare ? {} : page.headers;
    res.writeHead(bare ? 200 : page.status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', ...headers });
    res.end(page.html);
  } else if (url.pathname === '/_Incapsula_Resource' && url.searchParams.has('CWUDNSAI')) {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<html><body><p>Request unsuccessful.</p></body></html>');
  } else if (url.pathname === '/_Incapsula_Resource' || /\.js$|\/akam\/|\/init\.js/.test(url.pathname)) {
    res.writeHead(200, { 'content-type': 'application/javascript', 'cache-control': 'no-store' });
    res.end('void 0;');
  } else {
    res.writeHead(404, { 'content-type': 'text/html' });
    res.end('<!doctype html><title>Not found</title><p>Not found</p>');
  }
}

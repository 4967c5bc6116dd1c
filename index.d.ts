// The public contract of @aluvia/sdk.

import type { Agent as HttpAgent } from 'node:http';
import type { Agent as HttpsAgent } from 'node:https';

// ------------------------------------------------------------------ options

export type GatewayProtocol = 'http' | 'https';
/** Ours: which Chromium a browser session runs. */
export type BrowserKind = 'chromium' | 'headless-shell';
export type LogLevel = 'silent' | 'info' | 'debug';

/**
 * Constructor options of AluviaClient and AluviaApi: an option of the wrong
 * type throws a TypeError, a value out of its range or set a RangeError; both
 * name the option. `null` means not given.
 */
export type AluviaClientOptions = {
  /** Account API token. Trimmed; empty or whitespace throws MissingApiKeyError. */
  apiKey: string;
  /** Reuse this account connection (GET) instead of creating one (POST). Must be finite. */
  connectionId?: number;
  /** Default true: start() throws when the config cannot be loaded. False: route everything direct. */
  strict?: boolean;
  /** Default `https://api.aluvia.io/v1`. */
  apiBaseUrl?: string;
  /** Default 5000; values under 1000 become 1000. */
  pollIntervalMs?: number;
  /** API request timeout in whole milliseconds (1 to 2147483647), default 30000. */
  timeoutMs?: number;
  /** Default 'http'. */
  gatewayProtocol?: GatewayProtocol;
  /** Default 8080 for http, 8443 for https. */
  gatewayPort?: number;
  /** Default `gateway.aluvia.io`. A host name or IP address alone (no scheme, userinfo or port): else a TypeError. */
  gatewayHost?: string;
  /** Local proxy port; default OS-assigned. */
  localPort?: number;
  /** Default 'info'; 'debug' prints one JSON line per detection result. */
  logLevel?: LogLevel;
  /** Launch Chromium through the proxy and connect Playwright to it. Default false. */
  startPlaywright?: boolean;
  /** Only with startPlaywright. Default true. */
  headless?: boolean;
  /**
   * Ours, only with startPlaywright: which Chromium. `'chromium'` (default) is
   * the full browser in its new headless mode; `'headless-shell'` is
   * Chromium's headless shell (about half the start time and memory, but
   * the old headless mode, easier for fingerprinting scripts to tell apart;
   * never headful). Default: `ALUVIA_BROWSER`, else `'chromium'`.
   */
  browser?: BrowserKind;
  /**
   * Ours, only with startPlaywright: public-key pins (base64 SHA-256 of a
   * certificate's SubjectPublicKeyInfo) whose certificates Chromium accepts
   * without a trusted CA, such as the emulator's `siteSpki`. Every other
   * certificate is checked as usual. Default none.
   */
  trustSpki?: string[];
  /** With startPlaywright and no value, detection is on with defaults. */
  blockDetection?: BlockDetectionConfig;
  /**
   * Ours, only with startPlaywright: a persistent profile,
   * `~/.aluvia/profiles/<name>/` (letters, digits, `-`, `_`), kept after
   * `stop()`: cookies, local storage and logins survive to the next client or
   * CLI session with it. One browser per profile at a time: `start()` rejects
   * with `Profile '<name>' is in use by session '<s>'.` (or `… by another
   * program (pid N).`) while another holds it. Default: a private profile,
   * removed with the browser.
   */
  profile?: string;
};

export type PlaywrightProxySettings = {
  server: string;
  username?: string;
  password?: string;
  bypass?: string;
};

// ---------------------------------------------------------------- detection

export type DetectionBlockStatus = 'blocked' | 'suspected' | 'clear';

/**
 * One fired signal. `name` is one of (see the README's signal table):
 * `http_status_<code>` (403, 429, 503 or an extra status code),
 * `waf_header_cf_mitigated`, `waf_header_cloudflare`, `waf_header_aws`,
 * `self_reload_loop`, `title_keyword`, `challenge_selector` (on an
 * interstitial: visible text under 1,500 characters), `challenge_widget` (a
 * challenge selector on any other page), `vendor_challenge` (`details` names
 * the vendor and the marker), `visible_text_short`,
 * `visible_text_keyword_strong`, `visible_text_keyword_weak`,
 * `low_text_ratio`, `redirect_to_challenge`, `meta_refresh_challenge`.
 */
export type DetectionSignal = {
  name: string;
  weight: number;
  details: string;
  source: 'fast' | 'full';
};

export type RedirectHop = {
  url: string;
  statusCode: number;
};

export type BlockDetectionResult = {
  url: string;
  hostname: string;
  blockStatus: DetectionBlockStatus;
  score: number;
  signals: DetectionSignal[];
  pass: 'fast' | 'full';
  persistentBlock: boolean;
  redirectChain: RedirectHop[];
  /** Ours: the auto-unblock action taken on this result (then the page is reloaded), or null. */
  unblock: UnblockAction | null;
};

/**
 * Ours: one step of the unblock ladder. `rule` adds the hostname to the
 * rules; `rotate` PATCHes a new `session_id`, which changes the exit IP of
 * the whole connection (every gateway route, not only the blocked host's);
 * `geo` sets `target_geo` to the next geo of `unblockGeos` (also for the
 * whole connection).
 */
export type UnblockStep = 'rule' | 'rotate' | 'geo';

/** Ours: a result's `unblock`. `attempt` counts the rungs taken on the hostname since its ladder started (1 first). */
export type UnblockAction = { step: UnblockStep; attempt: number; geo?: string };

/** Ours: one entry of a session's `unblockLog` (`session get`), oldest first, the last 20 kept. */
export type UnblockLogEntry = {
  /** ISO 8601. */
  at: string;
  hostname: string;
  step: UnblockStep;
  geo?: string;
  /** `pending` until the reloaded page's verdict. */
  outcome: 'pending' | 'cleared' | 'blocked';
};

export type BlockDetectionConfig = {
  /** Default true. */
  enabled?: boolean;
  /** Replaces the 8 default selectors. */
  challengeSelectors?: string[];
  /** Appended to the title keywords and the strong text keywords. */
  extraKeywords?: string[];
  /** Appended to 403 and 429. */
  extraStatusCodes?: number[];
  /** Cap on the wait for network idle before the full pass. Default 3000. */
  networkIdleTimeoutMs?: number;
  /** Add the hostname to the rules and reload on `blocked`. Default false. */
  autoUnblock?: boolean;
  /** Also on `suspected` (needs autoUnblock). Default false. */
  autoUnblockOnSuspected?: boolean;
  /**
   * Ours: the unblock ladder, tried in order, one rung per block of a
   * hostname, each followed by one reload (needs autoUnblock). Default
   * `['rule']`: the one-rung auto-unblock above. A `clear` result ends a
   * hostname's ladder; when the rungs run out the result is
   * `persistentBlock`. Each step at most once; `geo` needs `unblockGeos`.
   * `rotate` and `geo` change the exit IP of the whole connection.
   */
  unblockSteps?: UnblockStep[];
  /** Ours: the geos the `geo` step tries, in order (one rung each); checked against `GET /geos` by start(). */
  unblockGeos?: string[];
  /** Fires for every result, `clear` too. A throw is logged, never fatal. */
  onDetection?: (result: BlockDetectionResult, page: any) => void | Promise<void>;
};

// ------------------------------------------------------------------- client

/** Requests, tunnels and bytes the local proxy carried for one hostname and route. */
export type TrafficStat = {
  hostname: string;
  route: 'direct' | 'gateway';
  requests: number;
  tunnels: number;
  /**
   * Bytes written upstream, as on the wire: a forwarded request's line,
   * headers, chunk framing and body; a tunnel's bytes towards the target.
   */
  bytesSent: number;
  /** Bytes read from upstream, as on the wire: responses, or a tunnel's bytes from the target. */
  bytesReceived: number;
};

export type AluviaClientConnection = {
  host: string;
  port: number;
  url: string;
  asPlaywright(): PlaywrightProxySettings;
  asPuppeteer(): string[];
  asSelenium(): string;
  asNodeAgents(): { http: HttpAgent; https: HttpsAgent };
  asAxiosConfig(): { proxy: false; httpAgent: HttpAgent; httpsAgent: HttpsAgent };
  asGotOptions(): { agent: { http: HttpAgent; https: HttpsAgent } };
  asUndiciDispatcher(): any;
  asUndiciFetch(): typeof fetch;
  /** Playwright Browser, with startPlaywright. */
  browser?: any;
  /** Playwright BrowserContext, with startPlaywright. */
  browserContext?: any;
  /** `http://127.0.0.1:PORT`, with startPlaywright. */
  cdpUrl?: string;
  /**
   * Ours, with startPlaywright: `'namespace'` when Chromium runs in a network
   * namespace of its own (CDP served to your user only), `'none'` when it
   * uses the host's network.
   */
  browserIsolation?: 'namespace' | 'none';
  /** Ours, with startPlaywright: which browser runs (`browser` is Playwright's Browser). */
  browserInfo?: { kind: BrowserKind; version: string };
  close(): Promise<void>;
  stop(): Promise<void>;
};

export declare class AluviaClient {
  constructor(options: AluviaClientOptions);
  readonly api: AluviaApi;
  readonly connectionId: number | undefined;
  start(): Promise<AluviaClientConnection>;
  stop(): Promise<void>;
  /** Rejects with an `Error` (nothing sent) when a rule holds a control character. */
  updateRules(rules: string[]): Promise<void>;
  updateSessionId(sessionId: string): Promise<void>;
  updateTargetGeo(targetGeo: string | null): Promise<void>;
  /** Hostnames that stayed blocked even through the gateway. */
  getBlockedHostnames(): string[];
  /** Forget persistently blocked hostnames and retried URLs. */
  clearBlockedHostnames(): void;
  /** Ours: traffic carried by the local proxy, per hostname and route. */
  getTrafficStats(): TrafficStat[];
}

// --------------------------------------------------------------------- API

export type SuccessEnvelope<T> = { success: true; data: T };
export type ErrorEnvelope = { success: false; error: { code: string; message: string; details?: unknown } };
export type Envelope<T> = SuccessEnvelope<T> | ErrorEnvelope;

export type Account = Record<string, unknown>;
export type AccountUsage = Record<string, unknown>;
export type AccountPayment = Record<string, unknown>;
export type AccountConnection = {
  id?: string | number;
  connection_id?: string | number;
  proxy_username?: string;
  proxy_password?: string;
  rules?: string[];
  session_id?: string | null;
  target_geo?: string | null;
} & Record<string, unknown>;
export type AccountConnectionDeleteResult = { connection_id: string; deleted: boolean };
export type Geo = Record<string, unknown>;

export type AluviaApiOptions = {
  apiKey: string;
  apiBaseUrl?: string;
  /** Whole milliseconds (1 to 2147483647), default 30000; checked as AluviaClient's. */
  timeoutMs?: number;
  fetch?: typeof fetch;
};

export type AluviaApiRequest = {
  method: 'GET' | 'POST' | 'PATCH' | 'DELETE' | string;
  path: string;
  query?: Record<string, string | number | boolean | null | undefined | Array<string | number | boolean>>;
  body?: unknown;
  headers?: Record<string, string>;
};

export declare class AluviaApi {
  constructor(options: AluviaApiOptions);
  account: {
    get(): Promise<Account>;
    usage: { get(params?: { start?: string; end?: string }): Promise<AccountUsage> };
    payments: { list(params?: { start?: string; end?: string }): Promise<AccountPayment[]> };
    connections: {
      list(): Promise<AccountConnection[]>;
      create(body: Record<string, unknown>): Promise<AccountConnection>;
      get(connectionId: string | number, options?: { etag?: string | null }): Promise<AccountConnection | null>;
      patch(connectionId: string | number, body: Record<string, unknown>): Promise<AccountConnection>;
      delete(connectionId: string | number): Promise<AccountConnectionDeleteResult>;
    };
  };
  geos: { list(): Promise<Geo[]> };
  request(args: AluviaApiRequest): Promise<{ status: number; etag: string | null; body: unknown | null }>;
}

// ------------------------------------------------------------------ errors

export declare class MissingApiKeyError extends Error {
  constructor(message?: string);
}
export declare class InvalidApiKeyError extends Error {
  constructor(message: string);
}
export declare class ApiError extends Error {
  constructor(message: string, statusCode?: number);
  readonly statusCode?: number;
}
export declare class ProxyStartError extends Error {
  constructor(message: string);
}
export declare class ConnectError extends Error {
  constructor(message: string);
}

// ----------------------------------------------------------------- connect

export type ConnectResult = {
  /** Playwright Browser connected over CDP to the session's Chromium. */
  browser: any;
  /** The first browser context (or a new one). */
  context: any;
  /** The first page of that context (or a new one). */
  page: any;
  sessionName: string;
  /** `http://127.0.0.1:PORT` */
  cdpUrl: string;
  connectionId: number | undefined;
  /** Closes this CDP connection only; the session keeps running. */
  disconnect(): Promise<void>;
};

/**
 * Connect to a running CLI session (`aluvia session start`): by name, or the
 * only one running. Needs `playwright` or `playwright-core`. Throws
 * `ConnectError`.
 */
export declare function connect(sessionName?: string): Promise<ConnectResult>;

// ---------------------------------------------------------------- emulator

export type EmulatorOptions = {
  /** API port; default any free port. */
  port?: number;
  /** Gateway port; default any free port. */
  gatewayPort?: number;
  /** Serve the protected demo site. Default true. */
  site?: boolean;
  sitePort?: number;
  /** The same site over HTTPS (HTTP/1.1 and h2). Default OS-assigned. */
  siteTlsPort?: number;
  /** Default: a generated key. */
  apiKey?: string;
  /** Approve every `aluvia auth` login at once (with `apiKey`). Default false. */
  autoApprove?: boolean;
  /** Seconds between `aluvia auth` polls the emulator asks for. Default 5. */
  authInterval?: number;
  /** Seconds an `aluvia auth` login code lives. Default 600. */
  authExpiresIn?: number;
  /**
   * Ours: the demo site challenges the first session id each connection
   * reaches it with (a flagged IP; a new session id clears it). Default false.
   */
  flagFirstExit?: boolean;
  /** Ours: the demo site serves only these geos (403 otherwise; setting one clears it). Default: all. */
  allowedGeos?: string[];
};

export type Emulator = {
  apiBaseUrl: string;
  apiKey: string;
  gatewayHost: string;
  gatewayPort: number;
  /** The protected demo site, when served. */
  siteUrl?: string;
  /** The same site over HTTPS (HTTP/1.1 and h2 by ALPN), when served. */
  siteHttpsUrl?: string;
  /** Its certificate (PEM), made at start: trust it in Node clients with `ca`. */
  siteCertificate?: string;
  /** base64 SHA-256 of its public key: pass it as `trustSpki` (or `ALUVIA_TRUST_SPKI` for CLI sessions). */
  siteSpki?: string;
  stop(): Promise<void>;
};

/** Ours: a local emulator of the Aluvia API and gateway on loopback. */
export declare function startEmulator(options?: EmulatorOptions): Promise<Emulator>;

#![deny(clippy::all)]
//! The napi binding: a thin layer over `aluvia-core` and `aluvia-emulator`.
//! Exported types carry a `Binding` prefix; the clean names belong to the JS
//! API in `lib/`.

use std::sync::Arc;

use aluvia_core::api::{self, ApiClient, ApiRequest, ApiResponse, Call};
use aluvia_core::client::{Client, ClientOptions, RawClientOptions, RawId};
use aluvia_core::AluviaError;
use aluvia_core::{daemon, store};
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use serde_json::Value;

pub mod auth;
pub mod rules;

/// Separator between the fields of an error reason (`SEP code SEP status SEP
/// context SEP message`); `lib/errors.js` splits on it once and builds the
/// matching JS class. The context is JSON, where the separator is escaped.
const SEP: char = '\u{1f}';

fn coded(code: &str, status: Option<u16>, context: &str, message: &str) -> Error {
    let status = status.map(|s| s.to_string()).unwrap_or_default();
    Error::new(Status::GenericFailure, format!("{SEP}{code}{SEP}{status}{SEP}{context}{SEP}{message}"))
}

pub(crate) fn to_napi(e: AluviaError) -> Error {
    coded(e.code(), e.status(), "", &e.to_string())
}

/// A session error: its code, its context fields and its message.
fn session_err(e: store::SessionError) -> Error {
    match e {
        store::SessionError::Other(e) => to_napi(e),
        e => coded(e.code(), None, &Value::Object(e.context()).to_string(), &e.to_string()),
    }
}

fn json_err(e: serde_json::Error) -> Error {
    to_napi(AluviaError::Invalid(e.to_string()))
}

/// Worker threads of the addon's runtime: `ALUVIA_WORKER_THREADS`, else 1.
/// The engine is I/O-bound; one worker avoids cross-thread wake-ups and
/// leaves the other cores to Node and Chromium.
fn worker_threads() -> usize {
    std::env::var("ALUVIA_WORKER_THREADS").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(1)
}

#[napi_derive::module_init]
fn init() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        eprintln!("[aluvia] internal error: this is a bug in aluvia, please report it");
        default_hook(info);
    }));
    if let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads())
        .enable_all()
        .thread_name("aluvia")
        .build()
    {
        create_custom_tokio_runtime(rt);
    }
}

// ---------------------------------------------------------------- REST API

#[napi(object)]
pub struct BindingPreparedRequest {
    pub url: String,
    pub method: String,
    pub headers: Vec<Vec<String>>,
    pub body: Option<String>,
}

/// `{ status, etag, body }` with `null` for what is absent.
fn raw_value(response: &ApiResponse) -> Result<Value> {
    serde_json::to_value(response).map_err(json_err)
}

#[napi]
pub struct BindingApi {
    client: ApiClient,
}

fn parse_call(spec: Value) -> Result<Call> {
    serde_json::from_value(spec).map_err(json_err)
}

fn parse_request(spec: Value) -> Result<ApiRequest> {
    serde_json::from_value(spec).map_err(json_err)
}

#[napi]
impl BindingApi {
    #[napi(constructor)]
    pub fn new(api_key: String, api_base_url: Option<String>, timeout_ms: Option<f64>) -> Result<Self> {
        let timeout = aluvia_core::client::timeout_ms(timeout_ms).map_err(to_napi)?;
        let client = ApiClient::new(&api_key, api_base_url.as_deref(), timeout).map_err(to_napi)?;
        Ok(BindingApi { client })
    }

    /// A documented helper call (`{kind: 'account.get', ...}`), unwrapped.
    #[napi]
    pub async fn call(&self, spec: Value) -> Result<Option<Value>> {
        let call = parse_call(spec)?;
        let request = call.try_request().map_err(to_napi)?;
        let response = self.client.send(&request).await.map_err(to_napi)?;
        api::finish(&call, &response).map_err(to_napi)
    }

    /// The raw escape hatch: never throws on status.
    #[napi]
    pub async fn request(&self, spec: Value) -> Result<Value> {
        let request = parse_request(spec)?;
        let response = self.client.send(&request).await.map_err(to_napi)?;
        raw_value(&response)
    }

    /// What to send for a helper call or a raw request, for a caller-supplied `fetch`.
    #[napi]
    pub fn prepare(&self, spec: Value, is_call: bool) -> Result<BindingPreparedRequest> {
        let request = if is_call { parse_call(spec)?.try_request().map_err(to_napi)? } else { parse_request(spec)? };
        let p = self.client.prepare(&request).map_err(to_napi)?;
        Ok(BindingPreparedRequest {
            url: p.url,
            method: p.method,
            headers: p.headers.into_iter().map(|(k, v)| vec![k, v]).collect(),
            body: p.body,
        })
    }

    /// Interpret what a caller-supplied `fetch` received; with a call spec,
    /// also unwrap it as the helper would.
    #[napi]
    pub fn interpret(
        &self,
        status: u32,
        content_type: Option<String>,
        etag: Option<String>,
        text: String,
        call_spec: Option<Value>,
    ) -> Result<Value> {
        let status = u16::try_from(status).map_err(|_| to_napi(AluviaError::api("invalid HTTP status", None)))?;
        let response = api::interpret(status, content_type.as_deref(), etag, &text);
        match call_spec {
            Some(spec) => Ok(api::finish(&parse_call(spec)?, &response).map_err(to_napi)?.unwrap_or(Value::Null)),
            None => raw_value(&response),
        }
    }

    #[napi(getter)]
    pub fn timeout_ms(&self) -> f64 {
        self.client.timeout_ms() as f64
    }

    /// The most body bytes read from an answer (a caller's `fetch` included).
    #[napi(getter)]
    pub fn max_body_bytes(&self) -> u32 {
        api::MAX_BODY_BYTES as u32
    }

    /// The error for an answer whose body is longer than `maxBodyBytes`.
    #[napi]
    pub fn body_too_large(&self, status: u32) -> Error {
        to_napi(api::body_too_large(u16::try_from(status).unwrap_or(0)))
    }
}

// ------------------------------------------------------------------ client

#[napi(object)]
pub struct BindingClientOptions {
    pub api_key: String,
    pub connection_id: Option<Either<f64, String>>,
    pub strict: Option<bool>,
    pub api_base_url: Option<String>,
    pub poll_interval_ms: Option<f64>,
    pub timeout_ms: Option<f64>,
    pub gateway_protocol: Option<String>,
    pub gateway_port: Option<f64>,
    pub gateway_host: Option<String>,
    pub local_port: Option<f64>,
    pub log_level: Option<String>,
    pub start_playwright: Option<bool>,
    pub headless: Option<bool>,
    pub trust_spki: Option<Vec<String>>,
    /// `blockDetection` without `onDetection`.
    pub block_detection: Option<Value>,
}

#[napi(object)]
pub struct BindingProxyInfo {
    pub host: String,
    pub port: u32,
    pub url: String,
    pub cdp_url: Option<String>,
    pub browser_isolation: Option<String>,
}

fn raw_client_options(options: BindingClientOptions) -> RawClientOptions {
    RawClientOptions {
        api_key: options.api_key,
        connection_id: options.connection_id.map(|id| match id {
            Either::A(n) => RawId::Number(n),
            Either::B(s) => RawId::Text(s),
        }),
        strict: options.strict,
        api_base_url: options.api_base_url,
        poll_interval_ms: options.poll_interval_ms,
        timeout_ms: options.timeout_ms,
        gateway_protocol: options.gateway_protocol,
        gateway_port: options.gateway_port,
        gateway_host: options.gateway_host,
        local_port: options.local_port,
        log_level: options.log_level,
        start_playwright: options.start_playwright,
        headless: options.headless,
        trust_spki: options.trust_spki,
        block_detection: options.block_detection,
    }
}

/// Called with `JSON.stringify({ targetId, result })` for every detection result.
type DetectionCallback = ThreadsafeFunction<String, (), String, Status, false, true>;

#[napi]
pub struct BindingClient {
    inner: Arc<Client>,
}

#[napi]
impl BindingClient {
    #[napi(constructor)]
    pub fn new(options: BindingClientOptions) -> Result<Self> {
        let opts = ClientOptions::validate(raw_client_options(options)).map_err(to_napi)?;
        Ok(BindingClient { inner: Arc::new(Client::new(opts).map_err(to_napi)?) })
    }

    #[napi]
    pub async fn start(&self) -> Result<BindingProxyInfo> {
        let info = self.inner.start().await.map_err(to_napi)?;
        Ok(BindingProxyInfo {
            host: info.host,
            port: info.port as u32,
            url: info.url,
            cdp_url: info.cdp_url,
            browser_isolation: info.browser_isolation.map(str::to_string),
        })
    }

    /// Where detection results go (a weak callback: it never keeps Node alive).
    #[napi]
    pub fn set_detection_callback(&self, callback: DetectionCallback) {
        let callback = Arc::new(callback);
        self.inner.set_detection_sink(Some(Arc::new(move |event: aluvia_core::browser::DetectionEvent| {
            let payload = serde_json::json!({ "targetId": event.target_id, "result": event.result });
            callback.call(payload.to_string(), ThreadsafeFunctionCallMode::NonBlocking);
        })));
    }

    #[napi]
    pub async fn close_browser(&self) -> Result<()> {
        self.inner.close_browser().await;
        Ok(())
    }

    #[napi]
    pub fn blocked_hostnames(&self) -> Vec<String> {
        self.inner.blocked_hostnames()
    }

    #[napi]
    pub fn clear_blocked_hostnames(&self) {
        self.inner.clear_blocked_hostnames()
    }

    #[napi(getter)]
    pub fn browser_pid(&self) -> Option<u32> {
        self.inner.browser().and_then(|b| b.pid())
    }

    #[napi]
    pub async fn stop(&self) -> Result<()> {
        self.inner.stop().await;
        Ok(())
    }

    /// The connection id as the API knows it (a number when numeric).
    #[napi(getter)]
    pub fn connection_id(&self) -> Option<Value> {
        self.inner.control().connection_id().map(|id| aluvia_core::api::id_value(&id))
    }

    #[napi]
    pub async fn update_rules(&self, rules: Vec<String>) -> Result<()> {
        self.inner.control().update_rules(rules).await.map(drop).map_err(to_napi)
    }

    #[napi]
    pub async fn update_session_id(&self, session_id: String) -> Result<()> {
        self.inner.control().update_session_id(session_id).await.map(drop).map_err(to_napi)
    }

    #[napi]
    pub async fn update_target_geo(&self, geo: Option<String>) -> Result<()> {
        self.inner.control().update_target_geo(geo).await.map(drop).map_err(to_napi)
    }

    /// Traffic per hostname and route.
    #[napi]
    pub fn traffic(&self) -> Result<Value> {
        serde_json::to_value(self.inner.traffic()).map_err(json_err)
    }
}

// ---------------------------------------------------------------- sessions
//
// The CLI's background sessions: lock files, names, the daemon launcher and
// process control. Their failures are the engine's `SessionError`s, each
// crossing once through `session_err` with its code and context fields;
// `connect()`'s have code `ConnectError`.

fn lock_dir() -> Result<store::LockDir> {
    store::LockDir::open_default().map_err(to_napi)
}

fn lock_json(lock: &store::LockData) -> Result<Value> {
    serde_json::to_value(lock).map_err(json_err)
}

/// Runs blocking file work (it may wait on the directory lock) off the JS thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    aluvia_core::task::off_thread(move || Ok(f())).await.map_err(to_napi)?
}

/// `{ sessions: [lock…], corrupt: [{ name, reason }] }`: the live sessions
/// sorted by name (stale lock files removed), and lock files that are not
/// valid (reported, left in place).
#[napi]
pub async fn session_list() -> Result<Value> {
    blocking(|| {
        let found = lock_dir()?.live_sessions().map_err(to_napi)?;
        let sessions = found.live.iter().map(lock_json).collect::<Result<Vec<_>>>()?;
        let corrupt: Vec<Value> = found
            .corrupt
            .into_iter()
            .map(|(name, reason)| serde_json::json!({ "name": name, "reason": reason }))
            .collect();
        Ok(serde_json::json!({ "sessions": sessions, "corrupt": corrupt }))
    })
    .await
}

/// The lock of session `name`, or of the only live one, for `purpose`
/// (`close`, `get`, `update` or `connect`); the exact CLI or `connect()`
/// error otherwise.
#[napi]
pub async fn session_resolve(name: Option<String>, purpose: String) -> Result<Value> {
    let purpose = store::Purpose::parse(&purpose)
        .ok_or_else(|| to_napi(AluviaError::Invalid(format!("unknown purpose '{purpose}'"))))?;
    blocking(move || {
        // connect() promises a ConnectError, also when the lock directory is refused.
        let dir = match store::LockDir::open_default() {
            Ok(dir) => dir,
            Err(e) if purpose == store::Purpose::Connect => return Err(to_napi(AluviaError::Connect(e.to_string()))),
            Err(e) => return Err(to_napi(e)),
        };
        store::resolve_session(&dir, name.as_deref(), purpose).map_err(session_err).and_then(|lock| lock_json(&lock))
    })
    .await
}

/// Claims a name (a custom one, or a generated one when `None`) and writes
/// its early lock file from `initial` (`pid` defaults to this process).
#[napi]
pub async fn session_claim(name: Option<String>, initial: Value) -> Result<String> {
    blocking(move || {
        let initial: store::LockData = serde_json::from_value(initial).map_err(json_err)?;
        let dir = lock_dir()?;
        dir.claim(name.as_deref(), initial).map_err(session_err)
    })
    .await
}

/// The Chromium a browser session would start (see
/// `browser::launch::find_chromium`), or the error that session would fail with.
#[napi]
pub fn chromium_path() -> Result<String> {
    aluvia_core::browser::launch::find_chromium().map(|p| p.display().to_string()).map_err(to_napi)
}

#[napi(object)]
pub struct BindingDaemonSpawn {
    /// The claimed session name: its lock's pid becomes the daemon's; the log is `cli-{name}.log`.
    pub name: String,
    pub program: String,
    pub args: Vec<String>,
    pub env: std::collections::HashMap<String, String>,
    pub cwd: String,
    /// Default 60000.
    pub ready_timeout_ms: Option<u32>,
    /// The API key, handed over on the daemon's stdin (`sessionDaemonSecret`).
    pub secret: Option<String>,
}

#[napi(object)]
pub struct BindingDaemonReady {
    pub pid: u32,
    /// The daemon's lock as it was when it became ready (camelCase lock
    /// fields), even when it has ended since (`--run`); `null` if it sent none.
    pub lock: Option<Value>,
}

/// Spawns the daemon of claimed session `name` and waits until it is ready,
/// or fails with the CLI's error and `browserSession` + `logFile`. On a
/// timeout the daemon keeps running under its lock; on any other failure
/// nothing is left running (see `daemon::spawn_daemon`).
#[napi]
pub async fn daemon_spawn(spec: BindingDaemonSpawn) -> Result<BindingDaemonReady> {
    let dir = blocking(lock_dir).await?;
    let log_path = dir.log_path(&spec.name);
    let log_file = log_path.to_string_lossy().into_owned();
    let name = spec.name.clone();
    let launch = daemon::DaemonSpawn {
        program: spec.program.into(),
        args: spec.args,
        env: spec.env.into_iter().collect(),
        cwd: spec.cwd.into(),
        log_path,
        ready_timeout: spec
            .ready_timeout_ms
            .map(|ms| std::time::Duration::from_millis(ms.into()))
            .unwrap_or(daemon::DEFAULT_READY_TIMEOUT),
        secret: spec.secret,
        claimed_lock: Some((dir.clone(), name.clone())),
    };
    let ready = daemon::spawn_daemon(launch).await.map_err(|e| session_err(e.for_session(name, log_file)))?;
    Ok(BindingDaemonReady { pid: ready.pid, lock: ready.lock.as_ref().map(lock_json).transpose()? })
}

#[napi(object)]
pub struct BindingSessionDaemon {
    /// The session; its lock names this process.
    pub name: String,
    pub url: String,
    pub headful: Option<bool>,
    pub block_detection: Option<bool>,
    pub auto_unblock: Option<bool>,
    /// The API key, API and gateway addresses and connection id; the daemon
    /// sets the browser, polling and detection options itself.
    pub client: BindingClientOptions,
}

/// Called with the CDP URL; resolves to the exit code.
type ScriptCallback = ThreadsafeFunction<String, Promise<i32>, String, Status, false>;

/// Where a stop for this process's daemon is requested.
fn daemon_stop() -> &'static daemon::DaemonStop {
    static STOP: std::sync::OnceLock<daemon::DaemonStop> = std::sync::OnceLock::new();
    STOP.get_or_init(daemon::DaemonStop::new)
}

/// The session daemon's whole life (see `daemon::run_daemon`): resolves to
/// its exit code once it has stopped and removed its lock. SIGTERM and SIGINT
/// stop it. With `runScript`, that is called with the CDP URL once the
/// session is ready, and the daemon ends with the code it resolves to.
#[napi]
pub async fn session_daemon_run(spec: BindingSessionDaemon, run_script: Option<ScriptCallback>) -> Result<i32> {
    let dir = blocking(lock_dir).await?;
    let run = daemon::DaemonRun {
        dir,
        name: spec.name,
        url: spec.url,
        headful: spec.headful.unwrap_or(false),
        block_detection: spec.block_detection.unwrap_or(true),
        auto_unblock: spec.auto_unblock.unwrap_or(false),
        client: raw_client_options(spec.client),
        handle_signals: true,
    };
    let script = run_script.map(|callback| -> daemon::Script {
        Box::new(move |cdp_url| {
            Box::pin(async move {
                match callback.call_async(cdp_url).await {
                    Ok(promise) => promise.await.unwrap_or(1),
                    Err(_) => 1,
                }
            })
        })
    });
    Ok(daemon::run_daemon(run, script, daemon_stop().clone()).await)
}

/// For the session daemon, first thing: makes it non-dumpable and reads the
/// API key `daemonSpawn` wrote to its stdin (empty when none came).
#[napi]
pub fn session_daemon_secret() -> Result<String> {
    daemon::take_secret().map_err(|e| to_napi(AluviaError::Internal(format!("could not read the API key: {e}"))))
}

/// Asks this process's session daemon to stop with `code` (the first request wins).
#[napi]
pub fn session_daemon_stop(code: i32, reason: String) {
    daemon_stop().request(code, reason);
}

/// `session close` of `name`: `{ outcome, lock }` with outcome `exited`,
/// `forceKilled` or `notRunning`, and the lock of the process stopped (null
/// when the lock went away first); see `daemon::close_session`.
#[napi]
pub async fn session_close(name: String, grace_ms: u32) -> Result<Value> {
    let dir = blocking(lock_dir).await?;
    let grace = std::time::Duration::from_millis(grace_ms.into());
    match daemon::close_session(&dir, &name, grace, daemon::HANDOVER_WAIT).await.map_err(to_napi)? {
        daemon::Closed::Stopped { termination, lock } => {
            Ok(serde_json::json!({ "outcome": termination.as_str(), "lock": lock_json(&lock)? }))
        }
        daemon::Closed::Gone => Ok(serde_json::json!({ "outcome": "notRunning", "lock": null })),
        daemon::Closed::StillStarting => Err(session_err(store::SessionError::StillStarting { name })),
    }
}

// ---------------------------------------------------------------- emulator

#[napi(object)]
pub struct BindingEmulatorOptions {
    pub port: Option<u32>,
    pub gateway_port: Option<u32>,
    pub site: Option<bool>,
    pub site_port: Option<u32>,
    pub site_tls_port: Option<u32>,
    pub api_key: Option<String>,
    /// Approve every `aluvia auth` login at once.
    pub auto_approve: Option<bool>,
    /// Seconds between login polls (default 5).
    pub auth_interval: Option<u32>,
    /// Seconds a login code lives (default 600).
    pub auth_expires_in: Option<u32>,
}

#[napi]
pub struct BindingEmulator {
    inner: Arc<aluvia_emulator::Emulator>,
}

fn port_opt(name: &str, v: Option<u32>) -> Result<u16> {
    match v {
        None => Ok(0),
        Some(p) => u16::try_from(p)
            .map_err(|_| to_napi(AluviaError::Invalid(format!("{name} must be an integer from 0 to 65535, got {p}")))),
    }
}

#[napi]
pub async fn start_emulator(options: Option<BindingEmulatorOptions>) -> Result<BindingEmulator> {
    let o = options.unwrap_or(BindingEmulatorOptions {
        port: None,
        gateway_port: None,
        site: None,
        site_port: None,
        site_tls_port: None,
        api_key: None,
        auto_approve: None,
        auth_interval: None,
        auth_expires_in: None,
    });
    let opts = aluvia_emulator::EmulatorOptions {
        api_port: port_opt("port", o.port)?,
        gateway_port: port_opt("gatewayPort", o.gateway_port)?,
        site: o.site.unwrap_or(true),
        site_port: port_opt("sitePort", o.site_port)?,
        site_tls_port: port_opt("siteTlsPort", o.site_tls_port)?,
        api_key: o.api_key,
        auto_approve: o.auto_approve.unwrap_or(false),
        auth_interval: o.auth_interval.map(u64::from),
        auth_expires_in: o.auth_expires_in.map(u64::from),
    };
    let emulator = aluvia_emulator::Emulator::start(opts)
        .await
        .map_err(|e| to_napi(AluviaError::Internal(format!("Failed to start the emulator: {e}"))))?;
    Ok(BindingEmulator { inner: Arc::new(emulator) })
}

#[napi]
impl BindingEmulator {
    #[napi(getter)]
    pub fn api_base_url(&self) -> String {
        self.inner.api_base_url()
    }

    #[napi(getter)]
    pub fn api_key(&self) -> String {
        self.inner.api_key()
    }

    #[napi(getter)]
    pub fn gateway_host(&self) -> String {
        self.inner.gateway_host()
    }

    #[napi(getter)]
    pub fn gateway_port(&self) -> u32 {
        self.inner.gateway_port() as u32
    }

    #[napi(getter)]
    pub fn site_url(&self) -> Option<String> {
        self.inner.site_url()
    }

    #[napi(getter)]
    pub fn site_https_url(&self) -> Option<String> {
        self.inner.site_https_url()
    }

    #[napi(getter)]
    pub fn site_certificate(&self) -> Option<String> {
        self.inner.site_certificate()
    }

    #[napi(getter)]
    pub fn site_spki(&self) -> Option<String> {
        self.inner.site_spki()
    }

    #[napi]
    pub async fn stop(&self) -> Result<()> {
        self.inner.stop().await;
        Ok(())
    }
}

/// For `npm run bench`: nanoseconds one same-user check of a proxy
/// connection takes (mean over `iterations`).
#[napi]
pub fn bench_same_user_check(iterations: u32) -> Result<f64> {
    aluvia_core::proxy::measure_same_user_check(iterations)
        .map(|d| d.as_nanos() as f64)
        .map_err(|e| to_napi(AluviaError::Internal(format!("same-user check bench failed: {e}"))))
}

/// The source address the emulator's gateway uses for a (session, geo) pair.
#[napi]
pub fn emulator_exit_address(session_id: Option<String>, target_geo: Option<String>) -> String {
    aluvia_emulator::exit_address(session_id.as_deref(), target_geo.as_deref()).to_string()
}

/// Text from elsewhere (a browser's error, a server's message) fit for an
/// error message: one line, no escape sequences or control characters,
/// userinfo redacted, at most 300 characters.
#[napi]
pub fn sanitize_message(text: String) -> String {
    aluvia_core::text::sanitize(&text)
}

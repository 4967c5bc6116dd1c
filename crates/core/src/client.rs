//! The engine behind `AluviaClient`: options, the control plane and the local
//! proxy, started and stopped together.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::Mutex;

use crate::api::ApiClient;
use crate::browser::launch::{BrowserKind, BROWSER_VAR};
use crate::browser::{BrowserInfo, BrowserOptions, BrowserSession, DetectionSink, UnblockAction};
use crate::config::{new_handle, port_number, port_text, GatewayConfig, GatewayProtocol};
use crate::control::ControlPlane;
use crate::detection::{self, DetectionConfig, LadderNames, Rung, UnblockStep, FLAG_NAMES, OPTION_NAMES};
use crate::error::{AluviaError, Result};
use crate::log::{Level, Logger};
use crate::proxy::{ProxyOptions, ProxyServer, TrafficEntry};
use crate::rules_edit::RulesEdit;
use crate::store::LockDir;
use crate::task::off_thread;

pub const DEFAULT_POLL_INTERVAL_MS: u64 = 5000;

/// Options as they arrive from the caller, before validation.
#[derive(Clone, Default)]
pub struct RawClientOptions {
    pub api_key: String,
    /// A number (must be finite) or a string id.
    pub connection_id: Option<RawId>,
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
    /// `chromium` or `headless-shell` (else [`BROWSER_VAR`], else `chromium`).
    pub browser: Option<String>,
    /// Public-key pins (base64 SHA-256 of a SubjectPublicKeyInfo) whose
    /// certificates the browser accepts without a trusted CA.
    pub trust_spki: Option<Vec<String>>,
    /// `blockDetection` without its callback.
    pub block_detection: Option<serde_json::Value>,
    /// Ours: the persistent profile of `~/.aluvia/profiles` the browser uses.
    pub profile: Option<String>,
    /// Whose profile: the home directory (else `HOME`) and, for a CLI
    /// session's daemon, the session that holds it.
    pub profile_home: Option<String>,
    pub profile_session: Option<String>,
}

#[derive(Debug, Clone)]
pub enum RawId {
    Number(f64),
    Text(String),
}

/// Validated options with their defaults applied.
#[derive(Clone)]
pub struct ClientOptions {
    pub api_key: String,
    pub connection_id: Option<String>,
    pub strict: bool,
    pub api_base_url: Option<String>,
    pub poll_interval_ms: u64,
    pub timeout_ms: Option<u64>,
    pub gateway: GatewayConfig,
    pub local_port: Option<u16>,
    pub log_level: Level,
    pub start_browser: bool,
    pub headless: bool,
    pub browser: BrowserKind,
    pub trust_spki: Vec<String>,
    pub detection: DetectionConfig,
    pub profile: Option<ProfileChoice>,
}

/// A persistent profile to take when the browser starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileChoice {
    pub name: String,
    pub home: std::path::PathBuf,
    /// The CLI session that holds it (`None`: this program's client).
    pub session: Option<String>,
}

// The API key stays out of every debug print.
debug_without_secrets!(RawClientOptions {
    connection_id,
    strict,
    api_base_url,
    poll_interval_ms,
    timeout_ms,
    gateway_protocol,
    gateway_port,
    gateway_host,
    local_port,
    log_level,
    start_playwright,
    headless,
    browser,
    trust_spki,
    block_detection,
    profile
});

debug_without_secrets!(ClientOptions {
    connection_id,
    strict,
    api_base_url,
    poll_interval_ms,
    timeout_ms,
    gateway,
    local_port,
    log_level,
    start_browser,
    headless,
    trust_spki,
    detection
});

/// The largest delay in milliseconds: what a JS timer can wait (2^31 - 1).
pub const MAX_MILLIS: u64 = 2_147_483_647;

/// An optional integer option within `min..=max`; anything else (NaN,
/// infinities, fractions, out of range) is an [`AluviaError::OutOfRange`]
/// naming the option.
pub fn integer_option(name: &str, value: Option<f64>, min: u64, max: u64) -> Result<Option<u64>> {
    match value {
        None => Ok(None),
        Some(v) if v.is_finite() && v.fract() == 0.0 && (min as f64..=max as f64).contains(&v) => Ok(Some(v as u64)),
        Some(v) => Err(AluviaError::OutOfRange(format!("{name} must be an integer from {min} to {max}, got {v}"))),
    }
}

/// A port option ([`port_number`]); 0 is the same as none.
fn port(name: &str, value: Option<f64>) -> Result<Option<u16>> {
    match value.map(|v| (v, port_number(v))) {
        None => Ok(None),
        Some((_, Some(port))) => Ok(Some(port).filter(|p| *p != 0)),
        Some((v, None)) => Err(AluviaError::OutOfRange(format!("{name} must be an integer from 0 to 65535, got {v}"))),
    }
}

/// The environment variables of the CLI and its session daemon that set
/// client options, in the order help lists them.
pub const ENV_API_BASE_URL: &str = "ALUVIA_API_BASE_URL";
pub const ENV_GATEWAY_HOST: &str = "ALUVIA_GATEWAY_HOST";
pub const ENV_GATEWAY_PORT: &str = "ALUVIA_GATEWAY_PORT";
pub const ENV_GATEWAY_PROTOCOL: &str = "ALUVIA_GATEWAY_PROTOCOL";
/// Comma-separated `trustSpki` pins.
pub const ENV_TRUST_SPKI: &str = "ALUVIA_TRUST_SPKI";

impl RawClientOptions {
    /// These options with what they leave unset taken from the environment
    /// (`var` reads a variable; an empty one counts as unset). A port that is
    /// not one is an [`AluviaError::OutOfRange`] naming its variable.
    pub fn with_env(self, var: impl Fn(&str) -> Option<String>) -> Result<RawClientOptions> {
        let var = |name: &str| var(name).filter(|v| !v.is_empty());
        let gateway_port = match (self.gateway_port, var(ENV_GATEWAY_PORT)) {
            (None, Some(text)) => match port_text(text.trim()) {
                Some(port) => Some(f64::from(port)),
                None => {
                    return Err(AluviaError::OutOfRange(format!(
                        "{ENV_GATEWAY_PORT} must be an integer from 0 to 65535, got '{}'",
                        crate::text::sanitize_to(&text, 40)
                    )))
                }
            },
            (port, _) => port,
        };
        // A value from the environment is checked here, so that its error
        // names the variable rather than an option the user never set.
        let api_base_url = match (self.api_base_url, var(ENV_API_BASE_URL)) {
            (None, Some(url)) => {
                crate::api::check_base_url(ENV_API_BASE_URL, url.trim())?;
                Some(url)
            }
            (url, _) => url,
        };
        let gateway_host = match (self.gateway_host, var(ENV_GATEWAY_HOST)) {
            (None, Some(host)) => Some(host_named(ENV_GATEWAY_HOST, &host)?),
            (host, _) => host,
        };
        let gateway_protocol = match (self.gateway_protocol, var(ENV_GATEWAY_PROTOCOL)) {
            (None, Some(p)) => {
                protocol_named(ENV_GATEWAY_PROTOCOL, &p)?;
                Some(p)
            }
            (p, _) => p,
        };
        let trust_spki = match (self.trust_spki, var(ENV_TRUST_SPKI)) {
            (None, Some(v)) => {
                let pins: Vec<String> = v.split(',').filter(|pin| !pin.is_empty()).map(str::to_string).collect();
                spki_pins_named(ENV_TRUST_SPKI, Some(pins.clone()))?;
                Some(pins)
            }
            (pins, _) => pins,
        };
        // ALUVIA_BROWSER is read by `ClientOptions::validate` itself (in-process
        // clients take it too).
        Ok(RawClientOptions { api_base_url, gateway_host, gateway_protocol, gateway_port, trust_spki, ..self })
    }
}

/// `timeoutMs` of both `AluviaClient` and `AluviaApi`: whole milliseconds, at
/// least 1 (a 0 ms timeout fails every call).
pub fn timeout_ms(value: Option<f64>) -> Result<Option<u64>> {
    integer_option("timeoutMs", value, 1, MAX_MILLIS)
}

/// `gatewayHost`: a bare host name, IPv4 address or IPv6 address (bracketed
/// or not); no scheme, userinfo, port, path or spaces. The value itself is
/// left out of the message: it may hold a password.
pub fn gateway_host(value: &str) -> Result<String> {
    host_named("gatewayHost", value)
}

/// [`gateway_host`], with `name` (the option or its variable) in the message.
fn host_named(name: &str, value: &str) -> Result<String> {
    let host = value.trim();
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    let ok = match bare {
        Some(inner) => inner.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            host.parse::<std::net::IpAddr>().is_ok()
                || (host.len() <= 253
                    && host.split('.').all(|label| {
                        !label.is_empty()
                            && label.len() <= 63
                            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    }))
        }
    };
    if !ok {
        return Err(AluviaError::InvalidType(format!(
            "{name} must be a host name or IP address alone (no scheme, user, password, port, path or spaces)"
        )));
    }
    Ok(host.to_string())
}

/// `gatewayProtocol` (or its variable, `name`): `http` or `https`.
fn protocol_named(name: &str, value: &str) -> Result<GatewayProtocol> {
    GatewayProtocol::parse(value).ok_or_else(|| {
        AluviaError::OutOfRange(format!(
            "{name} must be 'http' or 'https', got '{}'",
            crate::text::sanitize_to(value, 40)
        ))
    })
}

/// Each pin must be base64 of a SHA-256 digest (32 bytes): anything else
/// would silently trust nothing, or be mistaken for a flag.
fn spki_pins(value: Option<Vec<String>>) -> Result<Vec<String>> {
    spki_pins_named("trustSpki", value)
}

/// [`spki_pins`], with `name` (the option or its variable) in the message.
fn spki_pins_named(name: &str, value: Option<Vec<String>>) -> Result<Vec<String>> {
    use base64::Engine;
    let mut out = Vec::new();
    for pin in value.unwrap_or_default() {
        let pin = pin.trim().to_string();
        let decoded = base64::engine::general_purpose::STANDARD.decode(&pin);
        if !matches!(decoded, Ok(bytes) if bytes.len() == 32) {
            return Err(AluviaError::Invalid(format!(
                "{name} entries must be base64 SHA-256 public-key hashes (44 characters), got '{}'",
                crate::text::sanitize_to(&pin, 60)
            )));
        }
        out.push(pin);
    }
    Ok(out)
}

impl ClientOptions {
    pub fn validate(raw: RawClientOptions) -> Result<ClientOptions> {
        let api_key = crate::api::validate_api_key(&raw.api_key)?;
        let connection_id = match &raw.connection_id {
            None => None,
            Some(id) => {
                let (number, text) = match id {
                    RawId::Number(n) => (Some(*n), None),
                    RawId::Text(s) => (None, Some(s.as_str())),
                };
                let invalid = || AluviaError::OutOfRange("connectionId must be a finite number".into());
                Some(crate::config::connection_id(number, text).ok_or_else(invalid)?)
            }
        };
        let protocol = match raw.gateway_protocol.as_deref() {
            None => GatewayProtocol::Http,
            Some(p) => protocol_named("gatewayProtocol", p)?,
        };
        let gateway_port = port("gatewayPort", raw.gateway_port)?.unwrap_or(protocol.default_port());
        let gateway_host = match raw.gateway_host {
            None => GatewayConfig::default().host,
            Some(h) => gateway_host(&h)?,
        };
        let log_level = match raw.log_level.as_deref() {
            None => Level::Info,
            Some(l) => Level::parse(l).ok_or_else(|| {
                AluviaError::OutOfRange(format!(
                    "logLevel must be 'silent', 'info' or 'debug', got '{}'",
                    crate::text::sanitize_to(l, 40)
                ))
            })?,
        };
        // The option, else ALUVIA_BROWSER (for in-process clients too).
        let env = std::env::var(BROWSER_VAR).ok();
        let browser = crate::browser::launch::choose_kind(raw.browser.as_deref(), "browser", env.as_deref(), false)?;
        let headless = raw.headless.unwrap_or(true);
        if browser == BrowserKind::HeadlessShell && !headless {
            return Err(crate::browser::launch::headful_shell());
        }
        let start_browser = raw.start_playwright.unwrap_or(false);
        let profile = match raw.profile {
            None => None,
            Some(name) => {
                crate::profile::validate_name(&name).map_err(|e| AluviaError::Invalid(e.to_string()))?;
                if !start_browser {
                    return Err(AluviaError::Invalid(
                        "The profile option is for the browser: set startPlaywright: true with it.".into(),
                    ));
                }
                let home = crate::auth::home_dir(raw.profile_home.as_deref())?;
                Some(ProfileChoice { name, home, session: raw.profile_session })
            }
        };
        Ok(ClientOptions {
            api_key,
            connection_id,
            strict: raw.strict.unwrap_or(true),
            api_base_url: raw.api_base_url,
            poll_interval_ms: integer_option("pollIntervalMs", raw.poll_interval_ms, 0, MAX_MILLIS)?
                .unwrap_or(DEFAULT_POLL_INTERVAL_MS)
                .max(1000),
            timeout_ms: timeout_ms(raw.timeout_ms)?,
            gateway: GatewayConfig { protocol, host: gateway_host, port: gateway_port },
            local_port: port("localPort", raw.local_port)?,
            log_level,
            start_browser,
            headless,
            browser,
            trust_spki: spki_pins(raw.trust_spki)?,
            detection: detection_config(raw.block_detection)?,
            profile,
        })
    }
}

/// `blockDetection` without its callback: the defaults when absent; the
/// unblock ladder checked (its geos are checked against the API by `start()`).
fn detection_config(value: Option<serde_json::Value>) -> Result<DetectionConfig> {
    let cfg: DetectionConfig = match value {
        None | Some(serde_json::Value::Null) => return Ok(DetectionConfig::default()),
        Some(v) => serde_json::from_value(v)
            .map_err(|e| AluviaError::InvalidType(format!("Invalid blockDetection option: {e}")))?,
    };
    detection::ladder(&cfg.unblock_steps, &cfg.unblock_geos, OPTION_NAMES).map_err(AluviaError::Invalid)?;
    Ok(cfg)
}

/// What `start()` hands back.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProxyInfo {
    pub host: String,
    pub port: u16,
    pub url: String,
    /// With a browser: its CDP endpoint `http://127.0.0.1:PORT`.
    pub cdp_url: Option<String>,
    /// With a browser: `"namespace"` or `"none"` (see `BrowserSession::isolation`).
    pub browser_isolation: Option<&'static str>,
    /// With a browser: its kind and version.
    pub browser: Option<BrowserInfo>,
}

pub struct Client {
    options: ClientOptions,
    logger: Arc<Logger>,
    control: Arc<ControlPlane>,
    /// Held across start and stop, so that concurrent starts share one.
    proxy: Mutex<Option<Arc<ProxyServer>>>,
    /// The running proxy for synchronous reads (traffic figures).
    running: std::sync::Mutex<Option<Arc<ProxyServer>>>,
    browser: std::sync::Mutex<Option<Arc<BrowserSession>>>,
    sink: std::sync::Mutex<Option<DetectionSink>>,
}

impl Client {
    pub fn new(options: ClientOptions) -> Result<Client> {
        let api = ApiClient::new(&options.api_key, options.api_base_url.as_deref(), options.timeout_ms)?;
        let logger = Arc::new(Logger::new(options.log_level));
        let control =
            Arc::new(ControlPlane::new(api, new_handle(), Arc::clone(&logger), options.connection_id.clone()));
        Ok(Client {
            options,
            logger,
            control,
            proxy: Mutex::new(None),
            running: std::sync::Mutex::new(None),
            browser: std::sync::Mutex::new(None),
            sink: std::sync::Mutex::new(None),
        })
    }

    pub fn control(&self) -> &Arc<ControlPlane> {
        &self.control
    }

    /// Load the config, start polling and the proxy. Idempotent: a second
    /// call (or a concurrent one) gets the running proxy.
    pub async fn start(&self) -> Result<ProxyInfo> {
        let mut slot = self.proxy.lock().await;
        if let Some(proxy) = slot.as_ref() {
            return Ok(info(proxy, self.browser().as_deref()));
        }
        // Ours: geos the ladder cannot set are refused before anything starts.
        check_unblock_geos(self.control.api(), &self.options.detection.unblock_geos, OPTION_NAMES).await?;
        // The proxy first (a bind), holding requests until the config is
        // known; then the API's connection and Chromium's launch at once: the
        // browser's start no longer waits for the API's answer, and nothing
        // it sends is routed before the rules are in.
        let proxy = ProxyServer::start(ProxyOptions {
            port: self.options.local_port,
            gateway: self.options.gateway.clone(),
            config: Arc::clone(self.control.config()),
            logger: Arc::clone(&self.logger),
        })
        .await?;
        proxy.hold();
        self.control.set_route_listener(Some(proxy.route_listener()));
        let launch = async {
            if !self.options.start_browser {
                return Ok(None);
            }
            let profile = match self.options.profile.clone() {
                Some(p) => Some(
                    off_thread(move || {
                        crate::profile::take(&p.home, &p.name, p.session.as_deref()).map_err(AluviaError::from)
                    })
                    .await?,
                ),
                None => None,
            };
            BrowserSession::launch(BrowserOptions {
                proxy_url: format!("http://{}", proxy.local_addr()),
                headless: self.options.headless,
                kind: self.options.browser,
                trust_spki: self.options.trust_spki.clone(),
                detection: self.options.detection.clone(),
                sink: self.sink.lock().ok().and_then(|s| s.clone()),
                unblock: unblock_action(&self.control, &self.logger),
                logger: Arc::clone(&self.logger),
                profile,
            })
            .await
            .map(|b| Some(Arc::new(b)))
        };
        let (initialized, launched) = tokio::join!(self.control.init(self.options.strict), launch);
        proxy.release();
        let browser = match (initialized, launched) {
            (Ok(()), Ok(browser)) => browser,
            (initialized, launched) => {
                if let Ok(Some(browser)) = &launched {
                    browser.close().await;
                }
                self.control.set_route_listener(None);
                proxy.stop().await;
                // The API's error first, as when the two ran one after the other.
                return Err(match (initialized, launched) {
                    (Err(e), _) | (Ok(()), Err(e)) => e,
                    (Ok(()), Ok(_)) => AluviaError::Internal("start failed".into()),
                });
            }
        };
        self.control.start_polling(self.options.poll_interval_ms);
        let out = info(&proxy, browser.as_deref());
        if let Ok(mut slot) = self.browser.lock() {
            *slot = browser;
        }
        let proxy = Arc::new(proxy);
        if let Ok(mut running) = self.running.lock() {
            *running = Some(Arc::clone(&proxy));
        }
        *slot = Some(proxy);
        Ok(out)
    }

    /// Stop the browser (if any: it cannot browse without the proxy), the
    /// proxy and polling. Safe to call more than once.
    pub async fn stop(&self) {
        self.close_browser().await;
        self.control.stop_polling();
        self.control.set_route_listener(None);
        let proxy = self.proxy.lock().await.take();
        if let Ok(mut running) = self.running.lock() {
            *running = None;
        }
        if let Some(proxy) = proxy {
            proxy.stop().await;
        }
    }

    /// Where detection results go; set before start().
    pub fn set_detection_sink(&self, sink: Option<DetectionSink>) {
        if let Ok(mut s) = self.sink.lock() {
            *s = sink;
        }
    }

    pub fn browser(&self) -> Option<Arc<BrowserSession>> {
        self.browser.lock().ok().and_then(|b| b.clone())
    }

    /// Close the browser, if one was launched. Idempotent.
    pub async fn close_browser(&self) {
        let browser = self.browser.lock().ok().and_then(|mut b| b.take());
        if let Some(b) = browser {
            b.close().await;
        }
    }

    pub fn blocked_hostnames(&self) -> Vec<String> {
        self.browser().map(|b| b.detector().blocked_hostnames()).unwrap_or_default()
    }

    pub fn clear_blocked_hostnames(&self) {
        if let Some(b) = self.browser() {
            b.detector().clear_blocked_hostnames();
        }
    }

    /// The gateway's last failure since start (`lastProxyError`).
    pub fn last_proxy_failure(&self) -> Option<crate::proxy::ProxyFailure> {
        self.running.lock().ok().and_then(|r| r.as_ref().and_then(|p| p.last_failure()))
    }

    /// The traffic carried so far, per hostname and route.
    pub fn traffic(&self) -> Vec<TrafficEntry> {
        self.running.lock().ok().and_then(|r| r.as_ref().map(|p| p.traffic())).unwrap_or_default()
    }
}

fn info(proxy: &ProxyServer, browser: Option<&BrowserSession>) -> ProxyInfo {
    let port = proxy.local_addr().port();
    ProxyInfo {
        host: "127.0.0.1".into(),
        port,
        url: format!("http://127.0.0.1:{port}"),
        cdp_url: browser.map(|b| b.cdp_url().to_string()),
        browser_isolation: browser.map(BrowserSession::isolation),
        browser: browser.map(|b| b.info().clone()),
    }
}

/// Auto-unblock's levers on this client's connection: `rule` covers the
/// hostname with the rules, under the connection's lock in the lock
/// directory; `rotate` PATCHes a new session id (UUID v4); `geo` PATCHes the
/// target geo. Each returns once the proxy has closed the connections whose
/// route the change altered.
fn unblock_action(control: &Arc<ControlPlane>, logger: &Arc<Logger>) -> UnblockAction {
    let (control, logger) = (Arc::clone(control), Arc::clone(logger));
    let config = Arc::clone(control.config());
    let apply = Arc::new(move |rung: Rung, hostname: String| {
        let (control, logger) = (Arc::clone(&control), Arc::clone(&logger));
        Box::pin(async move {
            match rung.step {
                UnblockStep::Rule => cover_hostname(&control, &logger, &hostname).await,
                UnblockStep::Rotate => {
                    if let Err(e) = control.update_session_id(uuid::Uuid::new_v4().to_string()).await {
                        logger.warn(format!("auto-unblock: could not rotate the session id for {hostname}: {e}"));
                    }
                }
                UnblockStep::Geo => {
                    if let Err(e) = control.update_target_geo(rung.geo.clone()).await {
                        let geo = rung.geo.as_deref().unwrap_or_default();
                        logger.warn(format!("auto-unblock: could not set the geo {geo} for {hostname}: {e}"));
                    }
                }
            }
        }) as futures::future::BoxFuture<'static, ()>
    });
    UnblockAction { config, apply }
}

/// The `rule` lever: cover `hostname` with the rules.
async fn cover_hostname(control: &ControlPlane, logger: &Logger, hostname: &str) {
    let edit = RulesEdit::cover(hostname);
    // The lock directory serializes this edit with the CLI's and other
    // sessions'; an in-process client that cannot use it (another user's
    // directory on a shared /tmp) still edits, unserialized.
    let locks = match LockDir::open_default_async().await {
        Ok(locks) => Some(locks),
        Err(e) => {
            logger.debug(format!("auto-unblock: editing the rules without the lock directory: {e}"));
            None
        }
    };
    match control.edit_rules(locks.as_ref(), &edit).await {
        Ok(edited) if !edited.changed => logger.debug(format!("auto-unblock: the rules already cover {hostname}")),
        Ok(_) => {}
        Err(e) => logger.warn(format!("auto-unblock: could not add {hostname} to the rules: {e}")),
    }
}

/// `session start`'s `--unblock-steps` and `--unblock-geos` (comma-separated
/// lists; `None` when not given): the lists, checked as `blockDetection`'s
/// are, with errors that name the flags, and the geos against the API.
pub async fn unblock_flags(
    api: &ApiClient,
    steps: Option<&str>,
    geos: Option<&str>,
) -> Result<(Option<Vec<String>>, Option<Vec<String>>)> {
    let split = |text: &str| -> Vec<String> {
        text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
    };
    let (steps, geos) = (steps.map(split), geos.map(split));
    let default_steps = DetectionConfig::default().unblock_steps;
    let rungs =
        detection::ladder(steps.as_deref().unwrap_or(&default_steps), geos.as_deref().unwrap_or_default(), FLAG_NAMES);
    rungs.map_err(AluviaError::Invalid)?;
    check_unblock_geos(api, geos.as_deref().unwrap_or_default(), FLAG_NAMES).await?;
    Ok((steps, geos))
}

/// Rejects an `unblockGeos` entry that is not one of the API's geos
/// (`GET /geos`); nothing is asked when there are none. `names` are the
/// option names the error uses.
pub async fn check_unblock_geos(api: &ApiClient, geos: &[String], names: LadderNames) -> Result<()> {
    if geos.is_empty() {
        return Ok(());
    }
    let call = crate::api::Call::GeosList;
    let response = api.send(&call.try_request()?).await?;
    let data = crate::api::finish(&call, &response)?.unwrap_or(serde_json::Value::Null);
    let available: Vec<String> = data
        .as_array()
        .map(|list| list.iter().filter_map(|g| g.get("code")?.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    match detection::unknown_geo(geos, &available, names) {
        Some(message) => Err(AluviaError::Invalid(message)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawClientOptions {
        RawClientOptions { api_key: " k ".into(), ..Default::default() }
    }

    #[test]
    fn the_environment_fills_what_is_unset_and_a_bad_port_names_its_variable() {
        let env = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            move |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        };
        let o = raw()
            .with_env(env(&[
                ("ALUVIA_GATEWAY_PORT", "8443"),
                ("ALUVIA_GATEWAY_HOST", ""),
                (
                    "ALUVIA_TRUST_SPKI",
                    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,,BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA=",
                ),
                ("ALUVIA_API_BASE_URL", "http://env"),
            ]))
            .unwrap();
        assert_eq!(o.gateway_port, Some(8443.0));
        assert_eq!(o.gateway_host, None, "empty is unset");
        assert_eq!(
            o.trust_spki,
            Some(vec![
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_string(),
                "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA=".to_string()
            ])
        );
        assert_eq!(o.api_base_url.as_deref(), Some("http://env"));
        let given = RawClientOptions { gateway_port: Some(1.0), ..raw() };
        assert_eq!(given.with_env(env(&[("ALUVIA_GATEWAY_PORT", "x")])).unwrap().gateway_port, Some(1.0));
        let err = raw().with_env(env(&[("ALUVIA_GATEWAY_PORT", "80a")])).unwrap_err();
        assert_eq!(
            err,
            AluviaError::OutOfRange("ALUVIA_GATEWAY_PORT must be an integer from 0 to 65535, got '80a'".into())
        );
        assert!(raw().with_env(env(&[("ALUVIA_GATEWAY_PORT", "65536")])).is_err());
        // Every variable's error names the variable, not the option.
        for (var, value) in [
            ("ALUVIA_GATEWAY_HOST", "user:pw@h"),
            ("ALUVIA_GATEWAY_PROTOCOL", "ftp"),
            ("ALUVIA_TRUST_SPKI", "not-a-pin"),
            ("ALUVIA_API_BASE_URL", "ftp://h/v1"),
            ("ALUVIA_API_BASE_URL", "not a url"),
        ] {
            let err = raw().with_env(env(&[(var, value)])).unwrap_err().to_string();
            assert!(err.contains(var), "{var}={value}: {err}");
            assert!(
                !err.contains("gatewayHost") && !err.contains("gatewayProtocol") && !err.contains("apiBaseUrl"),
                "{err}"
            );
            assert!(!err.contains("pw"), "no userinfo: {err}");
        }
        // An option that is set wins, and its variable is not even read.
        let given = RawClientOptions { gateway_host: Some("h".into()), ..raw() };
        assert_eq!(
            given.with_env(env(&[("ALUVIA_GATEWAY_HOST", "bad host")])).unwrap().gateway_host.as_deref(),
            Some("h")
        );
    }

    #[test]
    fn defaults() {
        let o = ClientOptions::validate(raw()).expect("valid");
        assert_eq!(o.api_key, "k");
        assert!(o.strict);
        assert_eq!(o.poll_interval_ms, 5000);
        assert_eq!(o.gateway, GatewayConfig::default());
        assert_eq!(o.local_port, None);
        assert_eq!(o.log_level, Level::Info);
    }

    #[test]
    fn debug_prints_leave_the_api_key_out() {
        let raw = RawClientOptions { api_key: "secret-key-123".into(), ..Default::default() };
        assert!(!format!("{raw:?}").contains("secret-key-123"));
        let o = ClientOptions::validate(raw).expect("valid");
        assert!(!format!("{o:?}").contains("secret-key-123"));
        assert!(format!("{o:?}").contains("poll_interval_ms: 5000"));
    }

    #[test]
    fn validation() {
        let bad = |r: RawClientOptions| ClientOptions::validate(r).unwrap_err().to_string();
        assert_eq!(bad(RawClientOptions { api_key: "  ".into(), ..raw() }), "Aluvia apiKey is required");
        assert_eq!(
            bad(RawClientOptions { connection_id: Some(RawId::Number(f64::NAN)), ..raw() }),
            "connectionId must be a finite number"
        );
        assert_eq!(
            bad(RawClientOptions { connection_id: Some(RawId::Number(f64::INFINITY)), ..raw() }),
            "connectionId must be a finite number"
        );
        let o = ClientOptions::validate(RawClientOptions { connection_id: Some(RawId::Number(3449.0)), ..raw() })
            .expect("valid");
        assert_eq!(o.connection_id.as_deref(), Some("3449"));
        let o = ClientOptions::validate(RawClientOptions {
            poll_interval_ms: Some(10.0),
            gateway_protocol: Some("https".into()),
            ..raw()
        })
        .expect("valid");
        assert_eq!(o.poll_interval_ms, 1000);
        assert_eq!(o.gateway.port, 8443);
        assert!(bad(RawClientOptions { gateway_protocol: Some("ftp".into()), ..raw() }).contains("gatewayProtocol"));
        assert!(bad(RawClientOptions { local_port: Some(70000.0), ..raw() }).contains("localPort"));
    }

    #[test]
    fn ranges() {
        let err = |r: RawClientOptions| ClientOptions::validate(r).unwrap_err();
        for t in [f64::NAN, -1.0, f64::INFINITY, 0.5, 0.0, 2_147_483_648.0] {
            let e = err(RawClientOptions { timeout_ms: Some(t), ..raw() });
            assert_eq!(
                e,
                AluviaError::OutOfRange(format!("timeoutMs must be an integer from 1 to 2147483647, got {t}"))
            );
            assert_eq!(e.code(), "RangeError");
        }
        let o = ClientOptions::validate(RawClientOptions { timeout_ms: Some(1.0), ..raw() }).expect("valid");
        assert_eq!(o.timeout_ms, Some(1));
        assert_eq!(timeout_ms(None), Ok(None));
        for p in [f64::NAN, -1.0, 1.5, 2_147_483_648.0] {
            assert!(err(RawClientOptions { poll_interval_ms: Some(p), ..raw() })
                .to_string()
                .starts_with("pollIntervalMs"));
        }
        for p in [-1.0, 80.5, 65536.0, f64::NAN] {
            assert_eq!(err(RawClientOptions { gateway_port: Some(p), ..raw() }).code(), "RangeError");
            assert_eq!(err(RawClientOptions { local_port: Some(p), ..raw() }).code(), "RangeError");
        }
        assert_eq!(err(RawClientOptions { log_level: Some("loud".into()), ..raw() }).code(), "RangeError");
    }

    #[test]
    fn gateway_hosts() {
        for good in ["gateway.aluvia.io", "127.0.0.1", "::1", "[::1]", "localhost", " gw-1.example.com "] {
            let o = ClientOptions::validate(RawClientOptions { gateway_host: Some(good.into()), ..raw() });
            assert_eq!(o.expect(good).gateway.host, good.trim());
        }
        for bad in ["user:pass@h", "http://h", "bad host", "[::1", "", "  ", "h:8080", "h/x", "a..b", "[1.2.3.4]"] {
            let e = ClientOptions::validate(RawClientOptions { gateway_host: Some(bad.into()), ..raw() }).unwrap_err();
            assert_eq!(e.code(), "TypeError", "{bad}");
            assert!(e.to_string().starts_with("gatewayHost "), "{bad}");
            assert!(bad.trim().is_empty() || !e.to_string().contains(bad.trim()), "{bad}");
        }
    }
}

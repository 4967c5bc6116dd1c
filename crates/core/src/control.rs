//! The control plane: loads the account connection, keeps it fresh with ETag
//! polling, and PATCHes changes. The proxy reads the result lock-free through
//! the shared [`ConfigHandle`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::api::{finish, id_value, rules_of, ApiClient, Call};
use crate::config::{ConfigHandle, ConnectionConfig};
use crate::error::{AluviaError, Result};
use crate::log::{Logger, RepeatedFailure};
use crate::proxy::RouteListener;
use crate::rules::{validate_rules, RuleSet};
use crate::rules_edit::{edit_connection_rules, EditedRules, RulesEdit};
use crate::store::LockDir;

pub const MIN_POLL_INTERVAL_MS: u64 = 1000;

/// While polls keep failing, how often that is logged again after the first.
pub const POLL_FAILURE_REMINDER: Duration = Duration::from_secs(60);

const MISSING_CREDENTIALS: &str =
    "Account connection response missing proxy credentials (data.proxy_username and data.proxy_password are required)";

/// Read a connection object as the API returns it.
pub fn parse_connection(data: &Value, etag: Option<String>) -> Result<ConnectionConfig> {
    let text = |key: &str| data.get(key).and_then(Value::as_str).map(str::to_string);
    let (Some(proxy_username), Some(proxy_password)) = (text("proxy_username"), text("proxy_password")) else {
        return Err(AluviaError::api(MISSING_CREDENTIALS, None));
    };
    if proxy_username.is_empty() || proxy_password.is_empty() {
        return Err(AluviaError::api(MISSING_CREDENTIALS, None));
    }
    let raw_rules = rules_of(data);
    let connection_id = ["connection_id", "id"].iter().find_map(|key| match data.get(*key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    });
    Ok(ConnectionConfig {
        connection_id,
        proxy_username,
        proxy_password,
        rules: RuleSet::new(&raw_rules),
        raw_rules,
        session_id: text("session_id"),
        target_geo: text("target_geo"),
        etag,
    })
}

pub struct ControlPlane {
    api: ApiClient,
    config: ConfigHandle,
    logger: Arc<Logger>,
    connection_id: Mutex<Option<String>>,
    /// Bumped on every answer swapped in outside polling (a PATCH, a rule
    /// edit's fresh read), so that a poll sent before it never overwrites it.
    generation: AtomicU64,
    /// Serializes this client's rule edits, so their answers are swapped in
    /// in the order the API applied them.
    editing: tokio::sync::Mutex<()>,
    /// Stops the polling task.
    poller: Mutex<Option<CancellationToken>>,
    /// The running proxy's: closes connections on routes a change altered.
    on_change: Mutex<Option<RouteListener>>,
}

impl ControlPlane {
    pub fn new(api: ApiClient, config: ConfigHandle, logger: Arc<Logger>, connection_id: Option<String>) -> Self {
        ControlPlane {
            api,
            config,
            logger,
            connection_id: Mutex::new(connection_id),
            generation: AtomicU64::new(0),
            editing: tokio::sync::Mutex::new(()),
            poller: Mutex::new(None),
            on_change: Mutex::new(None),
        }
    }

    pub fn api(&self) -> &ApiClient {
        &self.api
    }

    pub fn config(&self) -> &ConfigHandle {
        &self.config
    }

    pub fn connection_id(&self) -> Option<String> {
        self.connection_id.lock().map(|g| g.clone()).unwrap_or(None)
    }

    fn set_connection_id(&self, id: Option<String>) {
        if let (Some(id), Ok(mut guard)) = (id, self.connection_id.lock()) {
            *guard = Some(id);
        }
    }

    /// Set (or clear) what runs after every config change.
    pub fn set_route_listener(&self, listener: Option<RouteListener>) {
        if let Ok(mut slot) = self.on_change.lock() {
            *slot = listener;
        }
    }

    /// Store `cfg`, then let the proxy close the connections whose route it
    /// changed: once this returns, the next request uses the new config.
    async fn apply(&self, mut cfg: ConnectionConfig) {
        if cfg.connection_id.is_none() {
            cfg.connection_id = self.connection_id();
        }
        self.set_connection_id(cfg.connection_id.clone());
        self.config.store(Some(Arc::new(cfg)));
        let listener = self.on_change.lock().ok().and_then(|l| l.clone());
        if let Some(listener) = listener {
            listener().await;
        }
    }

    /// Load the config: GET by id, or POST to create a connection.
    /// Non-strict: a failure is logged and the proxy routes everything direct.
    pub async fn init(&self, strict: bool) -> Result<()> {
        match self.load().await {
            Ok(cfg) => {
                self.apply(cfg).await;
                Ok(())
            }
            Err(e) if strict => Err(e),
            Err(e) => {
                self.logger.warn(format!("could not load the connection config, routing everything direct: {e}"));
                Ok(())
            }
        }
    }

    async fn load(&self) -> Result<ConnectionConfig> {
        let call = match self.connection_id() {
            Some(id) => Call::ConnectionsGet { id: id_value(&id), etag: None },
            None => Call::ConnectionsCreate { body: None },
        };
        let response = self.api.send(&call.try_request()?).await?;
        let data = finish(&call, &response)?.unwrap_or(Value::Null);
        parse_connection(&data, response.etag.clone())
    }

    /// One poll: 304 keeps, 200 swaps, errors are returned for logging.
    pub async fn poll_once(&self) -> Result<bool> {
        let Some(id) = self.connection_id() else { return Ok(false) };
        let generation = self.generation.load(Ordering::SeqCst);
        let etag = self.config.load().as_ref().and_then(|c| c.etag.clone());
        let call = Call::ConnectionsGet { id: id_value(&id), etag };
        let response = self.api.send(&call.try_request()?).await?;
        let Some(data) = finish(&call, &response)? else { return Ok(false) };
        let cfg = parse_connection(&data, response.etag.clone())?;
        if self.generation.load(Ordering::SeqCst) != generation {
            return Ok(false);
        }
        self.apply(cfg).await;
        Ok(true)
    }

    /// Poll forever, one request at a time. Idempotent.
    pub fn start_polling(self: &Arc<Self>, interval_ms: u64) {
        let Ok(mut poller) = self.poller.lock() else { return };
        if poller.is_some() || self.connection_id().is_none() {
            return;
        }
        let interval = Duration::from_millis(interval_ms.max(MIN_POLL_INTERVAL_MS));
        let weak = Arc::downgrade(self);
        let stop = CancellationToken::new();
        *poller = Some(stop.clone());
        tokio::spawn(async move {
            // An API outage is logged as it starts, then once a minute, and when it ends.
            let mut failures = RepeatedFailure::new("config poll", POLL_FAILURE_REMINDER);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(interval) => {}
                }
                let Some(me) = weak.upgrade() else { return };
                let polled = tokio::select! {
                    _ = stop.cancelled() => return,
                    polled = me.poll_once() => polled,
                };
                if polled.is_ok() {
                    if let Some(line) = failures.succeeded() {
                        me.logger.info(line);
                    }
                }
                match polled {
                    Ok(true) => me.logger.debug("connection config updated by polling"),
                    Ok(false) => {}
                    Err(e) => {
                        if let Some(line) = failures.failed(&e) {
                            me.logger.warn(format!("{line} (keeping the last config)"));
                        }
                    }
                }
            }
        });
    }

    pub fn stop_polling(&self) {
        if let Some(stop) = self.poller.lock().ok().and_then(|mut p| p.take()) {
            stop.cancel();
        }
    }

    /// Swap in a config the API answered after any poll still in flight was
    /// sent: that poll's answer is then dropped.
    async fn apply_fresh(&self, cfg: ConnectionConfig) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.apply(cfg).await;
    }

    fn require_connection_id(&self) -> Result<String> {
        self.connection_id().ok_or_else(|| AluviaError::api("No account connection ID available", None))
    }

    /// PATCH the connection and swap in the answer.
    pub async fn set_config(&self, patch: Value) -> Result<ConnectionConfig> {
        let id = self.require_connection_id()?;
        let call = Call::ConnectionsPatch { id: id_value(&id), body: Some(patch) };
        let response = self.api.send(&call.try_request()?).await?;
        let data = finish(&call, &response)?.unwrap_or(Value::Null);
        let cfg = parse_connection(&data, response.etag.clone())?;
        self.apply_fresh(cfg.clone()).await;
        Ok(cfg)
    }

    /// [`edit_connection_rules`] on this client's connection, with the lock
    /// in `locks`; the API's answer is swapped in, so the proxy routes by the
    /// new rules from the next request on.
    pub async fn edit_rules(&self, locks: Option<&LockDir>, edit: &RulesEdit) -> Result<EditedRules> {
        let id = self.require_connection_id()?;
        let _turn = self.editing.lock().await;
        let generation = self.generation.load(Ordering::SeqCst);
        let edited = edit_connection_rules(&self.api, locks, &id, edit).await?;
        // A changed list is stored at once (a page reload relies on it). An
        // unchanged one is only the GET's answer: if an update was stored
        // meanwhile, that answer may be older, and polling brings the rest.
        if edited.changed || self.generation.load(Ordering::SeqCst) == generation {
            self.apply_fresh(parse_connection(&edited.connection, edited.etag.clone())?).await;
        }
        Ok(edited)
    }

    /// PATCH the connection's rules, refused before anything is sent when
    /// [`validate_rules`] refuses them.
    pub async fn update_rules(&self, rules: Vec<String>) -> Result<ConnectionConfig> {
        validate_rules(&rules)?;
        self.set_config(json!({ "rules": rules })).await
    }

    pub async fn update_session_id(&self, session_id: String) -> Result<ConnectionConfig> {
        self.set_config(json!({ "session_id": session_id })).await
    }

    /// An empty or whitespace geo clears it.
    pub async fn update_target_geo(&self, geo: Option<String>) -> Result<ConnectionConfig> {
        let geo = geo.map(|g| g.trim().to_string()).filter(|g| !g.is_empty());
        self.set_config(json!({ "target_geo": geo })).await
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop_polling();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_connection() {
        let data = json!({
            "connection_id": 3449, "proxy_username": "u", "proxy_password": "p",
            "rules": ["a.com", 3, "*.b.com"], "session_id": "s", "target_geo": null
        });
        let cfg = parse_connection(&data, Some("\"e\"".into())).expect("config");
        assert_eq!(cfg.connection_id.as_deref(), Some("3449"));
        assert_eq!(cfg.raw_rules, vec!["a.com", "*.b.com"]);
        assert!(cfg.rules.should_proxy("x.b.com"));
        assert_eq!(cfg.session_id.as_deref(), Some("s"));
        assert_eq!(cfg.target_geo, None);
        assert_eq!(cfg.etag.as_deref(), Some("\"e\""));
        assert!(!format!("{cfg:?}").contains("\"p\""));
    }

    #[test]
    fn missing_credentials() {
        let e = parse_connection(&json!({"id": "1", "proxy_username": "u"}), None).unwrap_err();
        assert_eq!(e.to_string(), MISSING_CREDENTIALS);
        assert_eq!(e.code(), "ApiError");
    }

    /// A connection API whose GET answers `rules` of the moment, held back
    /// while `hold` is set until `release` is notified; a PATCH answers at once
    /// with the rules it sent.
    struct SlowApi {
        rules: std::sync::Mutex<Value>,
        hold: std::sync::atomic::AtomicBool,
        arrived: tokio::sync::Notify,
        release: tokio::sync::Notify,
    }

    async fn answer(api: Arc<SlowApi>, mut socket: tokio::net::TcpStream) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut request = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = socket.read(&mut chunk).await.expect("read request");
            assert!(n > 0, "request cut short");
            request.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |n| n.trim().parse().expect("content-length"));
        while request.len() < head_end + length {
            let n = socket.read(&mut chunk).await.expect("read body");
            request.extend_from_slice(&chunk[..n]);
        }
        let (rules, etag) = if head.starts_with("patch") {
            let body: Value = serde_json::from_slice(&request[head_end..]).expect("PATCH body");
            (body["rules"].clone(), "\"patched\"")
        } else {
            if api.hold.swap(false, Ordering::SeqCst) {
                api.arrived.notify_one();
                api.release.notified().await;
            }
            (api.rules.lock().expect("rules").clone(), "\"polled\"")
        };
        let body = json!({ "data": {
            "connection_id": 7, "proxy_username": "u", "proxy_password": "p", "rules": rules
        } })
        .to_string();
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\netag: {etag}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(response.as_bytes()).await.expect("write response");
    }

    fn rules_now(control: &ControlPlane) -> Vec<String> {
        control.config().load().as_ref().map(|c| c.raw_rules.clone()).unwrap_or_default()
    }

    #[tokio::test]
    async fn a_poll_sent_before_a_patch_does_not_overwrite_it() {
        let api = Arc::new(SlowApi {
            rules: std::sync::Mutex::new(json!(["initial"])),
            hold: std::sync::atomic::AtomicBool::new(false),
            arrived: tokio::sync::Notify::new(),
            release: tokio::sync::Notify::new(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}/v1", listener.local_addr().expect("addr"));
        let serving = Arc::clone(&api);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(answer(Arc::clone(&serving), socket));
            }
        });
        let client = ApiClient::new("key", Some(&base), Some(5000)).expect("api client");
        let logger = Arc::new(Logger::new(crate::log::Level::Silent));
        let control = Arc::new(ControlPlane::new(client, crate::config::new_handle(), logger, Some("7".into())));
        control.init(true).await.expect("init");
        assert_eq!(rules_now(&control), ["initial"]);

        // The poll's GET is sent, then a PATCH is answered, then the GET's
        // older answer arrives: it is dropped.
        *api.rules.lock().expect("rules") = json!(["stale"]);
        api.hold.store(true, Ordering::SeqCst);
        let polling = Arc::clone(&control);
        let poll = tokio::spawn(async move { polling.poll_once().await });
        api.arrived.notified().await;
        control.update_rules(vec!["patched".into()]).await.expect("PATCH");
        api.release.notify_one();
        assert!(!poll.await.expect("poll task").expect("poll"), "the older answer is not applied");
        assert_eq!(rules_now(&control), ["patched"]);

        // A poll sent after the PATCH is applied as usual.
        assert!(control.poll_once().await.expect("poll"), "applied");
        assert_eq!(rules_now(&control), ["stale"]);
    }
}

//! `AluviaClient`: the local proxy, its control plane and its browser.

use std::sync::Arc;

use aluvia_core::client::{Client, ClientOptions, RawClientOptions, RawId};
use aluvia_core::AluviaError;
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use serde_json::Value;

use crate::errors::{json_err, to_napi};

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
    /// `chromium` (default) or `headless-shell`.
    pub browser: Option<String>,
    pub trust_spki: Option<Vec<String>>,
    /// `blockDetection` without `onDetection`.
    pub block_detection: Option<Value>,
    /// Ours: a persistent profile of `~/.aluvia/profiles`.
    pub profile: Option<String>,
}

#[napi(object)]
pub struct BindingProxyInfo {
    pub host: String,
    pub port: u32,
    pub url: String,
    pub cdp_url: Option<String>,
    pub browser_isolation: Option<String>,
    pub browser: Option<BindingBrowserInfo>,
}

/// Which browser runs: `{ kind, version }`.
#[napi(object)]
pub struct BindingBrowserInfo {
    pub kind: String,
    pub version: String,
}

pub(crate) fn raw_client_options(options: BindingClientOptions) -> RawClientOptions {
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
        browser: options.browser,
        trust_spki: options.trust_spki,
        block_detection: options.block_detection,
        profile: options.profile,
        profile_home: None,
        profile_session: None,
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
            browser: info.browser.map(|b| BindingBrowserInfo { kind: b.kind.as_str().to_string(), version: b.version }),
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

/// For `npm run bench`: nanoseconds one same-user check of a proxy
/// connection takes (mean over `iterations`).
#[napi]
pub fn bench_same_user_check(iterations: u32) -> Result<f64> {
    aluvia_core::proxy::measure_same_user_check(iterations)
        .map(|d| d.as_nanos() as f64)
        .map_err(|e| to_napi(AluviaError::Internal(format!("same-user check bench failed: {e}"))))
}

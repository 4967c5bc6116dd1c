//! The emulator of the Aluvia API and gateway, for tests and demos.

use std::sync::Arc;

use aluvia_core::config::{port_number, port_text};
use aluvia_core::AluviaError;
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::errors::to_napi;

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
    /// Ours: the protected site challenges the first session id each
    /// connection arrives with (a flagged IP).
    pub flag_first_exit: Option<bool>,
    /// Ours: the protected site serves only these geos.
    pub allowed_geos: Option<Vec<String>>,
}

#[napi]
pub struct BindingEmulator {
    inner: Arc<aluvia_emulator::Emulator>,
}

fn port_opt(name: &str, v: Option<u32>) -> Result<u16> {
    match v {
        None => Ok(0),
        Some(p) => port_number(f64::from(p)).ok_or_else(|| {
            to_napi(AluviaError::Invalid(format!("{name} must be an integer from 0 to 65535, got {p}")))
        }),
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
        flag_first_exit: None,
        allowed_geos: None,
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
        strict_site: aluvia_emulator::StrictSite {
            flag_first_exit: o.flag_first_exit.unwrap_or(false),
            allowed_geos: o.allowed_geos,
        },
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

/// The source address the emulator's gateway uses for a (session, geo) pair.
#[napi]
pub fn emulator_exit_address(session_id: Option<String>, target_geo: Option<String>) -> String {
    aluvia_emulator::exit_address(session_id.as_deref(), target_geo.as_deref()).to_string()
}

/// A port given as text (a CLI flag's value): the port, or `null` when it is
/// not one (see `config::port_text`).
#[napi]
pub fn parse_port(text: String) -> Option<u32> {
    port_text(&text).map(u32::from)
}

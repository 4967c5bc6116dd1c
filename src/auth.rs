//! `aluvia auth`: the device-code login and the key source, from `aluvia_core::auth`.

use std::path::PathBuf;

use aluvia_core::auth;
use aluvia_core::AluviaError;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use serde_json::{json, Value};

use crate::errors::to_napi;

fn config_path(home: Option<String>) -> Result<PathBuf> {
    auth::home_dir(home.as_deref()).map(|h| auth::config_path(&h)).map_err(to_napi)
}

/// The key a command uses and where it came from.
#[napi(object)]
pub struct BindingApiKey {
    pub api_key: String,
    /// `env` or `config`.
    pub source: String,
}

/// `envKey` when it is not blank, else the config file's key under `home`
/// (default: HOME), else the no-key error.
#[napi]
pub fn auth_key(env_key: Option<String>, home: Option<String>) -> Result<BindingApiKey> {
    let path = config_path(home)?;
    let (api_key, source) = auth::resolve_key(env_key.as_deref(), &path).map_err(to_napi)?;
    let source = match source {
        auth::KeySource::Env => "env",
        auth::KeySource::Config => "config",
    };
    Ok(BindingApiKey { api_key, source: source.into() })
}

/// `aluvia auth status`: `{ authenticated, source, configFile }`.
#[napi]
pub fn auth_status(env_key: Option<String>, home: Option<String>) -> Result<Value> {
    let path = config_path(home)?;
    let status = auth::status(env_key.as_deref(), &path).map_err(to_napi)?;
    serde_json::to_value(status).map_err(|e| to_napi(AluviaError::Internal(e.to_string())))
}

/// `aluvia auth logout`: `{ status: "logged_out" | "not_logged_in", configFile }`.
#[napi]
pub fn auth_logout(home: Option<String>) -> Result<Value> {
    let path = config_path(home)?;
    let removed = auth::logout(&path).map_err(to_napi)?;
    let status = if removed { "logged_out" } else { "not_logged_in" };
    Ok(json!({ "status": status, "configFile": path.display().to_string() }))
}

/// Fails when the config file exists but is not ours (checked before a login starts).
#[napi]
pub fn auth_check_config(home: Option<String>) -> Result<()> {
    auth::read_config(&config_path(home)?).map(drop).map_err(to_napi)
}

/// `POST {apiBase}/auth/cli/init`: `{ deviceCode, userCode, verificationUriComplete, interval, expiresIn }`.
#[napi]
pub async fn auth_start(api_base_url: Option<String>) -> Result<Value> {
    let login = auth::start_login(api_base_url.as_deref()).await.map_err(to_napi)?;
    serde_json::to_value(login).map_err(|e| to_napi(AluviaError::Internal(e.to_string())))
}

/// Polls the login `authStart` began, checks the key and saves it:
/// `{ status: "logged_in", configFile }`.
#[napi]
pub async fn auth_finish(api_base_url: Option<String>, login: Value, home: Option<String>) -> Result<Value> {
    let path = config_path(home)?;
    let login: auth::DeviceLogin =
        serde_json::from_value(login).map_err(|e| to_napi(AluviaError::Invalid(format!("invalid login: {e}"))))?;
    auth::finish_login(api_base_url.as_deref(), &login, &path, auth::LOGIN_CAP).await.map_err(to_napi)?;
    Ok(json!({ "status": "logged_in", "configFile": path.display().to_string() }))
}

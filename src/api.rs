//! The REST API: `AluviaApi`'s helper calls, raw requests, and what to send
//! and how to read an answer for a caller-supplied `fetch`.

use aluvia_core::api::{self, ApiClient, ApiRequest, ApiResponse, Call};
use aluvia_core::AluviaError;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use serde_json::Value;

use crate::errors::{json_err, to_napi};

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

/// `ALUVIA_API_BASE_URL` as the CLI reads it: `null` when unset or empty,
/// else the URL, checked so that a bad one is reported under the variable's
/// name rather than as an option the user never set.
#[napi]
pub fn api_base_url_from_env(value: Option<String>) -> Result<Option<String>> {
    let Some(url) = value.filter(|v| !v.trim().is_empty()) else { return Ok(None) };
    api::check_base_url(aluvia_core::client::ENV_API_BASE_URL, url.trim()).map_err(to_napi)?;
    Ok(Some(url))
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

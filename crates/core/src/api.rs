//! The Aluvia REST client.
//!
//! Three layers, so that a caller-supplied transport (the JS `fetch` option)
//! can reuse everything but the socket:
//! - [`ApiRequest`] + [`ApiClient::prepare`]: what to send (URL, headers, body);
//! - [`interpret`]: what came back, as `{status, etag, body}`;
//! - [`Call`] + [`finish`]: the documented helpers, unwrapping envelopes and
//!   turning failures into typed errors.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{AluviaError, Result};
use crate::rules::validate_rules;
use crate::text::{redact_userinfo, sanitize};

pub const DEFAULT_API_BASE_URL: &str = "https://api.aluvia.io/v1";
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// The largest response body read (4 MiB); a longer one is an error.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// A raw request, relative to the API base URL.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiRequest {
    pub method: String,
    pub path: String,
    /// Query parameters: `null` values are left out, arrays repeat the key.
    #[serde(default)]
    pub query: Option<Map<String, Value>>,
    #[serde(default)]
    pub body: Option<Value>,
    #[serde(default)]
    pub headers: Option<Map<String, Value>>,
    /// Sent as `If-None-Match`.
    #[serde(default)]
    pub etag: Option<String>,
}

/// A request ready for any HTTP transport.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PreparedRequest {
    pub url: String,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
}

/// The raw outcome of a request. Never an error because of its status.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ApiResponse {
    pub status: u16,
    pub etag: Option<String>,
    pub body: Option<Value>,
    /// Why a JSON body could not be parsed, when it could not.
    #[serde(skip)]
    pub malformed: Option<String>,
}

/// Turn what a transport received into an [`ApiResponse`]: 204, 304 and
/// non-JSON answers have no body; JSON is parsed, and a JSON body that does
/// not parse is remembered as malformed.
pub fn interpret(status: u16, content_type: Option<&str>, etag: Option<String>, text: &str) -> ApiResponse {
    let is_json = content_type.is_some_and(|ct| ct.to_ascii_lowercase().contains("application/json"));
    let mut response = ApiResponse { status, etag, body: None, malformed: None };
    if status == 204 || status == 304 || !is_json || text.trim().is_empty() {
        return response;
    }
    match serde_json::from_str(text) {
        Ok(value) => response.body = Some(value),
        Err(e) => response.malformed = Some(e.to_string()),
    }
    response
}

#[derive(Clone)]
pub struct ApiClient {
    base_url: String,
    api_key: String,
    timeout: Duration,
    http: reqwest::Client,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient").field("base_url", &self.base_url).finish_non_exhaustive()
    }
}

/// Trim the key; an empty one is a [`AluviaError::MissingApiKey`].
pub fn validate_api_key(api_key: &str) -> Result<String> {
    let key = api_key.trim();
    if key.is_empty() {
        return Err(AluviaError::MissingApiKey);
    }
    Ok(key.to_string())
}

/// Checks `base_url` as the API's base URL (http or https); `name` is what the
/// message calls it (the option, or the environment variable it came from).
/// Userinfo is redacted from the message.
pub fn check_base_url(name: &str, base_url: &str) -> Result<()> {
    let shown = sanitize(base_url);
    let parsed =
        url::Url::parse(base_url).map_err(|e| AluviaError::api(format!("Invalid {name} '{shown}': {e}"), None))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(AluviaError::api(format!("Invalid {name} '{shown}': the scheme must be http or https"), None));
    }
    Ok(())
}

impl ApiClient {
    pub fn new(api_key: &str, base_url: Option<&str>, timeout_ms: Option<u64>) -> Result<ApiClient> {
        let api_key = validate_api_key(api_key)?;
        ApiClient::build(api_key, base_url, timeout_ms)
    }

    /// A client that sends no `Authorization` (the login endpoints).
    pub fn without_key(base_url: Option<&str>, timeout_ms: Option<u64>) -> Result<ApiClient> {
        ApiClient::build(String::new(), base_url, timeout_ms)
    }

    fn build(api_key: String, base_url: Option<&str>, timeout_ms: Option<u64>) -> Result<ApiClient> {
        let base_url = base_url.map(str::trim).filter(|s| !s.is_empty()).unwrap_or(DEFAULT_API_BASE_URL);
        check_base_url("apiBaseUrl", base_url)?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| AluviaError::Internal(format!("cannot build the HTTP client: {e}")))?;
        Ok(ApiClient {
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key,
            timeout: Duration::from_millis(timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS)),
            http,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn timeout_ms(&self) -> u64 {
        self.timeout.as_millis() as u64
    }

    /// Build the URL, headers and body of a request.
    pub fn prepare(&self, req: &ApiRequest) -> Result<PreparedRequest> {
        let method = req.method.trim().to_ascii_uppercase();
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(AluviaError::Invalid(format!("Invalid HTTP method '{}'", req.method)));
        }
        let path = if req.path.starts_with('/') { req.path.clone() } else { format!("/{}", req.path) };
        let mut url = format!("{}{}", self.base_url, path);
        let query = encode_query(req.query.as_ref());
        if !query.is_empty() {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&query);
        }
        let mut headers = vec![("Accept".to_string(), "application/json".to_string())];
        if !self.api_key.is_empty() {
            headers.push(("Authorization".to_string(), format!("Bearer {}", self.api_key)));
        }
        if let Some(extra) = &req.headers {
            for (name, value) in extra {
                let value = match value {
                    Value::String(s) => s.clone(),
                    Value::Null => continue,
                    other => other.to_string(),
                };
                headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
                headers.push((name.clone(), value));
            }
        }
        if let Some(etag) = req.etag.as_deref().filter(|e| !e.is_empty()) {
            headers.push(("If-None-Match".to_string(), etag.to_string()));
        }
        let body = match &req.body {
            None | Some(Value::Null) => None,
            Some(value) => {
                headers.retain(|(n, _)| !n.eq_ignore_ascii_case("content-type"));
                headers.push(("Content-Type".to_string(), "application/json".to_string()));
                Some(value.to_string())
            }
        };
        Ok(PreparedRequest { url, method, headers, body })
    }

    /// Send a request. Fails only when no answer arrived (network, timeout).
    pub async fn send(&self, req: &ApiRequest) -> Result<ApiResponse> {
        let prepared = self.prepare(req)?;
        let method = reqwest::Method::from_bytes(prepared.method.as_bytes())
            .map_err(|_| AluviaError::Invalid(format!("Invalid HTTP method '{}'", prepared.method)))?;
        let mut builder = self.http.request(method, &prepared.url).timeout(self.timeout);
        for (name, value) in &prepared.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        if let Some(body) = prepared.body {
            builder = builder.body(body);
        }
        let timeout_error =
            || AluviaError::api(format!("Request timed out after {}ms", self.timeout.as_millis()), Some(408));
        let response = builder.send().await.map_err(|e| {
            if e.is_timeout() {
                timeout_error()
            } else {
                network_error(&self.base_url, &e)
            }
        })?;
        let status = response.status().as_u16();
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let etag = header("etag");
        let content_type = header("content-type");
        let body = read_body(response, MAX_BODY_BYTES).await.map_err(|e| match e {
            BodyError::TooLarge => body_too_large(status),
            BodyError::Read(e) if e.is_timeout() => timeout_error(),
            BodyError::Read(e) => AluviaError::api(
                format!("API response body could not be read (HTTP {status}): {}", sanitize(&error_chain(&e))),
                Some(status),
            ),
        })?;
        Ok(interpret(status, content_type.as_deref(), etag, &String::from_utf8_lossy(&body)))
    }

    /// Run one documented helper call.
    pub async fn call(&self, call: &Call) -> Result<Option<Value>> {
        let response = self.send(&call.try_request()?).await?;
        finish(call, &response)
    }
}

/// The error for an answer whose body passes [`MAX_BODY_BYTES`].
pub fn body_too_large(status: u16) -> AluviaError {
    AluviaError::api(
        format!("API response body exceeds {} MiB (HTTP {status})", MAX_BODY_BYTES / (1024 * 1024)),
        Some(status),
    )
}

enum BodyError {
    TooLarge,
    Read(reqwest::Error),
}

/// The body, chunk by chunk, failing as soon as it passes `limit` bytes
/// (or announces that it will): nothing past the limit is held in memory.
async fn read_body(mut response: reqwest::Response, limit: usize) -> std::result::Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

fn network_error(base_url: &str, e: &reqwest::Error) -> AluviaError {
    // reqwest's Display names the full URL; keep only the base so that query
    // strings never land in messages, and say what happened underneath.
    let mut reason = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        reason = s.to_string();
        source = s.source();
    }
    if reason.is_empty() {
        reason = e.to_string();
    }
    AluviaError::api(
        format!("API request failed: cannot reach {} ({})", redact_userinfo(base_url), sanitize(&reason)),
        None,
    )
}

fn encode_query(query: Option<&Map<String, Value>>) -> String {
    let Some(query) = query else { return String::new() };
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    let scalar = |v: &Value| match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    };
    for (key, value) in query {
        match value {
            Value::Array(items) => {
                for item in items {
                    if let Some(s) = scalar(item) {
                        ser.append_pair(key, &s);
                    }
                }
            }
            other => {
                if let Some(s) = scalar(other) {
                    ser.append_pair(key, &s);
                }
            }
        }
    }
    ser.finish()
}

/// The documented helper calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Call {
    #[serde(rename = "account.get")]
    AccountGet,
    #[serde(rename = "account.usage.get")]
    UsageGet { start: Option<String>, end: Option<String> },
    #[serde(rename = "account.payments.list")]
    PaymentsList { start: Option<String>, end: Option<String> },
    #[serde(rename = "account.connections.list")]
    ConnectionsList,
    #[serde(rename = "account.connections.create")]
    ConnectionsCreate { body: Option<Value> },
    #[serde(rename = "account.connections.get")]
    ConnectionsGet { id: Value, etag: Option<String> },
    #[serde(rename = "account.connections.patch")]
    ConnectionsPatch { id: Value, body: Option<Value> },
    #[serde(rename = "account.connections.delete")]
    ConnectionsDelete { id: Value },
    #[serde(rename = "geos.list")]
    GeosList,
}

fn id_segment(id: &Value) -> Result<String> {
    let s = match id {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        other => return Err(AluviaError::Invalid(format!("connection id must be a string or a number, got {other}"))),
    };
    if s.is_empty() {
        return Err(AluviaError::Invalid("connection id must not be empty".into()));
    }
    Ok(url::form_urlencoded::byte_serialize(s.as_bytes()).collect())
}

/// The body of a connection create or patch (`{}` when there is none), its
/// `rules` checked: a string, or any string in the list, holding a control
/// character is refused.
fn connection_body(body: &Option<Value>) -> Result<Value> {
    let rules: Vec<&str> = match body.as_ref().and_then(|b| b.get("rules")) {
        Some(Value::String(rule)) => vec![rule],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    validate_rules(&rules)?;
    Ok(body.clone().unwrap_or_else(|| Value::Object(Map::new())))
}

fn range_query(start: &Option<String>, end: &Option<String>) -> Option<Map<String, Value>> {
    let mut q = Map::new();
    if let Some(s) = start {
        q.insert("start".into(), Value::String(s.clone()));
    }
    if let Some(e) = end {
        q.insert("end".into(), Value::String(e.clone()));
    }
    Some(q)
}

impl Call {
    pub fn request(&self) -> ApiRequest {
        self.try_request().unwrap_or_default()
    }

    /// The request for this call; fails on an unusable connection id, and on
    /// rules in a create or patch body that [`validate_rules`] refuses.
    pub fn try_request(&self) -> Result<ApiRequest> {
        let req = |method: &str, path: String| ApiRequest { method: method.into(), path, ..Default::default() };
        Ok(match self {
            Call::AccountGet => req("GET", "/account".into()),
            Call::UsageGet { start, end } => {
                ApiRequest { query: range_query(start, end), ..req("GET", "/account/usage".into()) }
            }
            Call::PaymentsList { start, end } => {
                ApiRequest { query: range_query(start, end), ..req("GET", "/account/payments".into()) }
            }
            Call::ConnectionsList => req("GET", "/account/connections".into()),
            Call::ConnectionsCreate { body } => {
                ApiRequest { body: Some(connection_body(body)?), ..req("POST", "/account/connections".into()) }
            }
            Call::ConnectionsGet { id, etag } => {
                ApiRequest { etag: etag.clone(), ..req("GET", format!("/account/connections/{}", id_segment(id)?)) }
            }
            Call::ConnectionsPatch { id, body } => ApiRequest {
                body: Some(connection_body(body)?),
                ..req("PATCH", format!("/account/connections/{}", id_segment(id)?))
            },
            Call::ConnectionsDelete { id } => req("DELETE", format!("/account/connections/{}", id_segment(id)?)),
            Call::GeosList => req("GET", "/geos".into()),
        })
    }
}

/// Turn a non-2xx answer into the documented error.
pub fn error_for_status(response: &ApiResponse) -> AluviaError {
    let status = response.status;
    if status == 401 || status == 403 {
        return AluviaError::InvalidApiKey(status);
    }
    if let Some(Value::Object(obj)) = &response.body {
        if obj.get("success") == Some(&Value::Bool(false)) {
            if let Some(Value::Object(err)) = obj.get("error") {
                if let (Some(Value::String(code)), Some(Value::String(message))) = (err.get("code"), err.get("message"))
                {
                    let details = match err.get("details") {
                        None | Some(Value::Null) => String::new(),
                        Some(d) => {
                            let json = d.to_string();
                            if json.chars().count() > 500 {
                                format!(" details={}…", json.chars().take(500).collect::<String>())
                            } else {
                                format!(" details={json}")
                            }
                        }
                    };
                    let (code, message) = (sanitize(code), sanitize(message));
                    return AluviaError::api(
                        format!("API request failed (HTTP {status}) code={code} message={message}{details}"),
                        Some(status),
                    );
                }
            }
        }
    }
    AluviaError::api(format!("API request failed (HTTP {status})"), Some(status))
}

/// Unwrap `{success: true, data}` or `{data}`.
pub fn unwrap_data(response: &ApiResponse) -> Result<Value> {
    if let Some(reason) = &response.malformed {
        return Err(AluviaError::api(
            format!("API response is not valid JSON (HTTP {}): {reason}", response.status),
            Some(response.status),
        ));
    }
    match &response.body {
        Some(Value::Object(obj)) if obj.contains_key("data") && obj.get("data") != Some(&Value::Null) => {
            Ok(obj.get("data").cloned().unwrap_or(Value::Null))
        }
        _ => Err(AluviaError::api("API response missing expected success envelope data", Some(response.status))),
    }
}

/// The result of a helper call from its raw response: `None` only for a 304
/// on `account.connections.get`.
pub fn finish(call: &Call, response: &ApiResponse) -> Result<Option<Value>> {
    if matches!(call, Call::ConnectionsGet { .. }) && response.status == 304 {
        return Ok(None);
    }
    if !(200..300).contains(&response.status) {
        return Err(error_for_status(response));
    }
    unwrap_data(response).map(Some)
}

/// The string rules of a connection object as the API returns it.
pub fn rules_of(data: &Value) -> Vec<String> {
    data.get("rules")
        .and_then(Value::as_array)
        .map(|rules| rules.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

/// The id as JSON: a number when it is numeric, else the string.
pub fn id_value(id: &str) -> Value {
    id.parse::<u64>().map(Value::from).unwrap_or_else(|_| Value::String(id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_values() {
        assert_eq!(id_value("3449"), serde_json::json!(3449));
        assert_eq!(id_value("abc"), serde_json::json!("abc"));
    }
    use serde_json::json;

    fn client() -> ApiClient {
        ApiClient::new(" key ", Some("http://127.0.0.1:1/v1/"), None).expect("client")
    }

    #[test]
    fn missing_key() {
        assert_eq!(ApiClient::new("   ", None, None).unwrap_err(), AluviaError::MissingApiKey);
        assert_eq!(AluviaError::MissingApiKey.to_string(), "Aluvia apiKey is required");
    }

    #[test]
    fn prepare_builds_url_query_and_headers() {
        let req: ApiRequest = serde_json::from_value(json!({
            "method": "get", "path": "account/usage",
            "query": {"start": "2026-01-01", "skip": null, "tag": ["a", "b"], "n": 3},
            "headers": {"X-Extra": "1"}
        }))
        .expect("request");
        let p = client().prepare(&req).expect("prepare");
        assert_eq!(p.url, "http://127.0.0.1:1/v1/account/usage?start=2026-01-01&tag=a&tag=b&n=3");
        assert_eq!(p.method, "GET");
        assert!(p.headers.contains(&("Authorization".into(), "Bearer key".into())));
        assert!(p.headers.contains(&("Accept".into(), "application/json".into())));
        assert!(p.headers.contains(&("X-Extra".into(), "1".into())));
        assert!(!p.headers.iter().any(|(n, _)| n == "Content-Type"));
        assert_eq!(p.body, None);
    }

    #[test]
    fn prepare_json_body_and_etag() {
        let call = Call::ConnectionsGet { id: json!(12), etag: Some("\"v1\"".into()) };
        let p = client().prepare(&call.request()).expect("prepare");
        assert_eq!(p.url, "http://127.0.0.1:1/v1/account/connections/12");
        assert!(p.headers.contains(&("If-None-Match".into(), "\"v1\"".into())));
        let call = Call::ConnectionsPatch { id: json!("7"), body: Some(json!({"rules": ["a"]})) };
        let p = client().prepare(&call.request()).expect("prepare");
        assert_eq!(p.method, "PATCH");
        assert!(p.headers.contains(&("Content-Type".into(), "application/json".into())));
        assert_eq!(p.body.as_deref(), Some(r#"{"rules":["a"]}"#));
    }

    #[tokio::test]
    async fn connection_bodies_with_control_characters_in_rules_are_refused() {
        let refused = |call: Call| match call.try_request() {
            Err(AluviaError::Invalid(message)) => message,
            other => panic!("not refused: {other:?}"),
        };
        let bad = json!({"rules": ["ok.com", "f\u{1}.com"], "target_geo": "us"});
        let message = refused(Call::ConnectionsPatch { id: json!(7), body: Some(bad.clone()) });
        assert_eq!(message, r"Invalid rule 'f\u{1}.com': rules cannot contain control characters.");
        assert_eq!(refused(Call::ConnectionsCreate { body: Some(bad) }), message);
        assert!(refused(Call::ConnectionsCreate { body: Some(json!({"rules": "x\u{85}"})) }).contains(r"'x\u{85}'"));
        // Refused before any request: nothing listens there, yet the error is not the network's.
        let call = Call::ConnectionsPatch { id: json!(7), body: Some(json!({"rules": ["\u{7f}"]})) };
        assert_eq!(client().call(&call).await.unwrap_err().code(), "InvalidArgument");

        // Everything else in a body is the API's to judge.
        for body in [None, Some(json!({})), Some(json!({"rules": ["bücher.de", 3, null]})), Some(json!({"x": "\u{7}"}))]
        {
            assert!(Call::ConnectionsCreate { body: body.clone() }.try_request().is_ok(), "{body:?}");
            assert!(Call::ConnectionsPatch { id: json!(1), body }.try_request().is_ok());
        }
    }

    #[test]
    fn interpret_bodies() {
        assert_eq!(interpret(204, Some("application/json"), None, "{}").body, None);
        assert_eq!(interpret(304, Some("application/json"), Some("e".into()), "").etag.as_deref(), Some("e"));
        assert_eq!(interpret(200, Some("text/html"), None, "<html>").body, None);
        let r = interpret(200, Some("application/json; charset=utf-8"), None, "{\"data\":1}");
        assert_eq!(r.body, Some(json!({"data": 1})));
        let r = interpret(200, Some("application/json"), None, "{oops");
        assert!(r.body.is_none() && r.malformed.is_some());
    }

    #[test]
    fn errors_from_status() {
        let r = interpret(
            422,
            Some("application/json"),
            None,
            r#"{"success":false,"error":{"code":"validation_error","message":"Validation failed.","details":{"field":["Error message"]}}}"#,
        );
        let e = error_for_status(&r);
        assert_eq!(
            e.to_string(),
            r#"API request failed (HTTP 422) code=validation_error message=Validation failed. details={"field":["Error message"]}"#
        );
        assert_eq!(e.status(), Some(422));
        let e = error_for_status(&interpret(403, None, None, ""));
        assert_eq!(e, AluviaError::InvalidApiKey(403));
        assert!(e.to_string().starts_with("Authentication failed (HTTP 403)."));
        assert_eq!(
            error_for_status(&interpret(500, Some("text/plain"), None, "x")).to_string(),
            "API request failed (HTTP 500)"
        );
    }

    #[test]
    fn server_text_is_sanitized() {
        let body = json!({"success": false, "error": {
            "code": "bad\u{1b}[2J", "message": format!("\u{1b}]0;pwned\u{7}line1\r\nline2{}", "m".repeat(5_000_000))
        }});
        let e = error_for_status(&interpret(500, Some("application/json"), None, &body.to_string()));
        let text = e.to_string();
        assert!(text.starts_with("API request failed (HTTP 500) code=bad message=line1  line2mmm"), "{}", &text[..80]);
        assert!(text.ends_with("m…"));
        assert!(text.chars().count() < 400);
        assert!(!text.contains(|c: char| c.is_control()));
    }

    #[test]
    fn base_url_userinfo_stays_out_of_messages() {
        let e = ApiClient::new("k", Some("ftp://admin:S3CRET@127.0.0.1/v1"), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Invalid apiBaseUrl 'ftp://[redacted]@127.0.0.1/v1': the scheme must be http or https"
        );
    }

    #[test]
    fn finish_unwraps() {
        let ok = interpret(200, Some("application/json"), None, r#"{"success":true,"data":{"a":1}}"#);
        assert_eq!(finish(&Call::AccountGet, &ok).expect("ok"), Some(json!({"a": 1})));
        let bare = interpret(200, Some("application/json"), None, r#"{"data":[1]}"#);
        assert_eq!(finish(&Call::GeosList, &bare).expect("ok"), Some(json!([1])));
        let not_modified = interpret(304, None, None, "");
        assert_eq!(finish(&Call::ConnectionsGet { id: json!(1), etag: None }, &not_modified).expect("ok"), None);
        let missing = interpret(200, Some("application/json"), None, r#"{"nope":1}"#);
        assert_eq!(
            finish(&Call::AccountGet, &missing).unwrap_err().to_string(),
            "API response missing expected success envelope data"
        );
        let bad = interpret(200, Some("application/json"), None, "{");
        assert!(finish(&Call::AccountGet, &bad)
            .unwrap_err()
            .to_string()
            .starts_with("API response is not valid JSON (HTTP 200)"));
    }
}

//! The REST API (`/v1/...`) and the admin endpoints (`/_emulator/...`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, ALLOW, AUTHORIZATION, ETAG, IF_NONE_MATCH};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::state::{is_geo, round_gb, Connection, Faults, BYTES_PER_GB, GEOS, STARTING_BALANCE_GB};
use crate::util::{empty, is_iso8601, json_response, now_iso, query_param, Body};
use crate::{exit_address, Inner};

/// Largest request body the API reads.
const MAX_BODY: usize = 1 << 20;

const ACCOUNT_EMAIL: &str = "developer@emulator.local";
const ACCOUNT_CREATED_AT: &str = "2026-01-12T15:04:05.000Z";

/// `(payment_id, amount_usd, gb_purchased, created_at)`
const PAYMENTS: &[(u64, f64, f64, &str)] = &[
    (90211, 49.0, 10.0, "2026-01-12T15:09:41.000Z"),
    (90587, 99.0, 25.0, "2026-02-20T09:31:07.000Z"),
    (91034, 49.0, 10.0, "2026-04-03T18:12:55.000Z"),
];

pub(crate) fn success(status: StatusCode, data: Value) -> Response<Body> {
    json_response(status, &json!({ "success": true, "data": data }))
}

pub(crate) fn error(status: StatusCode, code: &str, message: &str, details: Value) -> Response<Body> {
    json_response(
        status,
        &json!({
            "success": false,
            "error": { "code": code, "message": message, "details": details },
        }),
    )
}

pub(crate) fn not_found(message: &str) -> Response<Body> {
    error(StatusCode::NOT_FOUND, "not_found", message, Value::Null)
}

fn connection_not_found() -> Response<Body> {
    not_found("Connection not found.")
}

pub(crate) fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp = error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "Method not allowed.", Value::Null);
    resp.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    resp
}

fn validation_failed(details: Map<String, Value>) -> Response<Body> {
    error(StatusCode::UNPROCESSABLE_ENTITY, "validation_error", "Validation failed.", Value::Object(details))
}

pub(crate) fn validation_one(field: &str, message: &str) -> Response<Body> {
    let mut details = Map::new();
    details.insert(field.to_owned(), json!([message]));
    validation_failed(details)
}

fn with_etag(mut resp: Response<Body>, etag: &str) -> Response<Body> {
    if let Ok(value) = HeaderValue::from_str(etag) {
        resp.headers_mut().insert(ETAG, value);
    }
    resp
}

/// Reads the body as JSON: `Ok(None)` when it is empty.
async fn read_json(body: Incoming) -> Result<Option<Value>, Response<Body>> {
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Request body is too large.",
                Value::Null,
            ))
        }
        Err(_) => {
            return Err(error(StatusCode::BAD_REQUEST, "bad_request", "Request body could not be read.", Value::Null))
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|_| error(StatusCode::BAD_REQUEST, "invalid_json", "Request body is not valid JSON.", Value::Null))
}

/// Reads a body that must be a JSON object (an empty body counts as `{}`).
pub(crate) async fn read_object(body: Incoming) -> Result<Map<String, Value>, Response<Body>> {
    match read_json(body).await? {
        None => Ok(Map::new()),
        Some(Value::Object(obj)) => Ok(obj),
        Some(_) => Err(validation_one("body", "must be a JSON object")),
    }
}

pub(crate) async fn handle(inner: Arc<Inner>, req: Request<Incoming>) -> Response<Body> {
    let raw_path = req.uri().path().to_owned();
    let path = if raw_path.len() > 1 { raw_path.trim_end_matches('/') } else { raw_path.as_str() };
    if let Some(rest) = path.strip_prefix("/v1") {
        if rest.is_empty() || rest.starts_with('/') {
            let segments: Vec<String> = rest.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect();
            return v1(inner, req, segments).await;
        }
    }
    if let Some(rest) = path.strip_prefix("/_emulator/") {
        let segments: Vec<String> = rest.split('/').map(str::to_owned).collect();
        // The admin endpoints take the API key, as the API does; the one
        // exception is the approve link a person opens in a browser, which
        // carries the login's user code instead.
        let approve_link = req.method() == Method::GET && segments == ["auth", "approve"];
        if !approve_link && !authorized(req.headers(), &inner.api_key) {
            return error(StatusCode::UNAUTHORIZED, "unauthorized", "Invalid or missing API token", Value::Null);
        }
        return admin(inner, req, segments).await;
    }
    not_found("Not found.")
}

// ---------------------------------------------------------------- /v1

fn authorized(headers: &HeaderMap, api_key: &str) -> bool {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|token| token == api_key)
}

async fn v1(inner: Arc<Inner>, req: Request<Incoming>, segments: Vec<String>) -> Response<Body> {
    let delay = inner.state().faults.api_delay_ms;
    if let Some(ms) = delay {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let fault = inner.state().faults.take_api_fault();
    if let Some(status) = fault {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error(status, "emulated_failure", "Emulated failure.", Value::Null);
    }
    if let [auth, cli, action] = segments.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        if (*auth, *cli) == ("auth", "cli") {
            return crate::auth::v1(&inner, req, action).await;
        }
    }
    if !authorized(req.headers(), &inner.api_key) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized", "Invalid or missing API token", Value::Null);
    }
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method().clone();
    match segs.as_slice() {
        ["account"] => match method {
            Method::GET => account(&inner),
            _ => method_not_allowed("GET"),
        },
        ["account", "usage"] => match method {
            Method::GET => usage(&inner, req.uri().query()),
            _ => method_not_allowed("GET"),
        },
        ["account", "payments"] => match method {
            Method::GET => payments(req.uri().query()),
            _ => method_not_allowed("GET"),
        },
        ["account", "connections"] => match method {
            Method::GET => {
                let list: Vec<Value> = inner.state().connections.values().map(Connection::to_json).collect();
                success(StatusCode::OK, Value::Array(list))
            }
            Method::POST => create_connection(&inner, req).await,
            _ => method_not_allowed("GET, POST"),
        },
        ["account", "connections", id] => {
            let id = id.parse::<u64>().ok();
            match method {
                Method::GET => get_connection(&inner, id, req.headers()),
                Method::PATCH => patch_connection(&inner, id, req).await,
                Method::DELETE => delete_connection(&inner, id),
                _ => method_not_allowed("GET, PATCH, DELETE"),
            }
        }
        ["geos"] => match method {
            Method::GET => {
                let geos: Vec<Value> =
                    GEOS.iter().map(|(code, label)| json!({ "code": code, "label": label })).collect();
                success(StatusCode::OK, Value::Array(geos))
            }
            _ => method_not_allowed("GET"),
        },
        _ => not_found("Not found."),
    }
}

fn account(inner: &Inner) -> Response<Body> {
    let st = inner.state();
    let used_gb = st.total_bytes() as f64 / BYTES_PER_GB;
    success(
        StatusCode::OK,
        json!({
            "account_id": 1,
            "email": ACCOUNT_EMAIL,
            "balance_gb": round_gb(STARTING_BALANCE_GB - used_gb),
            "data_used_gb": round_gb(used_gb),
            "connection_count": st.connections.len(),
            "created_at": ACCOUNT_CREATED_AT,
        }),
    )
}

/// Reads and checks `start` and `end`.
#[allow(clippy::result_large_err)]
fn date_range(query: Option<&str>) -> Result<(Option<String>, Option<String>), Response<Body>> {
    let start = query_param(query, "start");
    let end = query_param(query, "end");
    let mut details = Map::new();
    for (field, value) in [("start", &start), ("end", &end)] {
        if let Some(value) = value {
            if !is_iso8601(value) {
                details.insert(field.to_owned(), json!(["must be an ISO 8601 date"]));
            }
        }
    }
    if details.is_empty() {
        Ok((start, end))
    } else {
        Err(validation_failed(details))
    }
}

fn usage(inner: &Inner, query: Option<&str>) -> Response<Body> {
    let (start, end) = match date_range(query) {
        Ok(range) => range,
        Err(resp) => return resp,
    };
    let st = inner.state();
    let ids: BTreeSet<u64> = st.connections.keys().chain(st.traffic.keys()).copied().collect();
    let mut total = (0u64, 0u64, 0u64);
    let connections: Vec<Value> = ids
        .into_iter()
        .map(|id| {
            let (bytes, requests, tunnels) = st.connection_totals(id);
            total.0 += bytes;
            total.1 += requests;
            total.2 += tunnels;
            json!({
                "connection_id": id,
                "data_used_bytes": bytes,
                "requests": requests,
                "tunnels": tunnels,
            })
        })
        .collect();
    success(
        StatusCode::OK,
        json!({
            "start": start,
            "end": end,
            "data_used_bytes": total.0,
            "data_used_gb": round_gb(total.0 as f64 / BYTES_PER_GB),
            "requests": total.1,
            "tunnels": total.2,
            "connections": connections,
        }),
    )
}

fn payments(query: Option<&str>) -> Response<Body> {
    let (start, end) = match date_range(query) {
        Ok(range) => range,
        Err(resp) => return resp,
    };
    let day = |s: &str| s.chars().take(10).collect::<String>();
    let start = start.as_deref().map(day);
    let end = end.as_deref().map(day);
    let list: Vec<Value> = PAYMENTS
        .iter()
        .filter(|(_, _, _, created)| {
            let created = day(created);
            start.as_ref().is_none_or(|s| created >= *s) && end.as_ref().is_none_or(|e| created <= *e)
        })
        .map(|(id, usd, gb, created)| {
            json!({
                "payment_id": id,
                "amount_usd": usd,
                "gb_purchased": gb,
                "status": "succeeded",
                "created_at": created,
            })
        })
        .collect();
    success(StatusCode::OK, Value::Array(list))
}

/// Fields of a POST or PATCH body; the outer `Option` is "present".
#[derive(Default)]
struct ConnectionUpdate {
    rules: Option<Vec<String>>,
    session_id: Option<Option<String>>,
    target_geo: Option<Option<String>>,
    description: Option<Option<String>>,
}

impl ConnectionUpdate {
    #[allow(clippy::result_large_err)]
    fn parse(body: &Map<String, Value>) -> Result<Self, Response<Body>> {
        let mut details = Map::new();
        let mut update = ConnectionUpdate::default();
        let mut fail = |field: &str, message: &str| {
            details.insert(field.to_owned(), json!([message]));
        };
        if let Some(value) = body.get("rules") {
            let rules = value.as_array().and_then(|items| {
                items.iter().map(|item| item.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>()
            });
            match rules {
                Some(rules) => update.rules = Some(rules),
                None => fail("rules", "must be an array of strings"),
            }
        }
        match body.get("session_id") {
            None => {}
            Some(Value::Null) => update.session_id = Some(None),
            Some(Value::String(s)) => update.session_id = Some(Some(s.clone())),
            Some(_) => fail("session_id", "must be a string or null"),
        }
        match body.get("target_geo") {
            None => {}
            Some(Value::Null) => update.target_geo = Some(None),
            Some(Value::String(s)) if is_geo(s) => update.target_geo = Some(Some(s.clone())),
            Some(_) => fail("target_geo", "is not a supported geo code"),
        }
        match body.get("description") {
            None => {}
            Some(Value::Null) => update.description = Some(None),
            Some(Value::String(s)) => update.description = Some(Some(s.clone())),
            Some(_) => fail("description", "must be a string or null"),
        }
        if details.is_empty() {
            Ok(update)
        } else {
            Err(validation_failed(details))
        }
    }

    fn apply(self, conn: &mut Connection) {
        if let Some(rules) = self.rules {
            conn.rules = rules;
        }
        if let Some(session_id) = self.session_id {
            conn.session_id = session_id;
        }
        if let Some(target_geo) = self.target_geo {
            conn.target_geo = target_geo;
        }
        if let Some(description) = self.description {
            conn.description = description;
        }
    }
}

async fn create_connection(inner: &Inner, req: Request<Incoming>) -> Response<Body> {
    let body = match read_object(req.into_body()).await {
        Ok(body) => body,
        Err(resp) => return resp,
    };
    let update = match ConnectionUpdate::parse(&body) {
        Ok(update) => update,
        Err(resp) => return resp,
    };
    let mut st = inner.state();
    let id = st.next_id;
    st.next_id += 1;
    let mut conn = Connection::new(id, now_iso());
    update.apply(&mut conn);
    let resp = with_etag(success(StatusCode::CREATED, conn.to_json()), &conn.etag());
    st.connections.insert(id, conn);
    resp
}

fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

fn get_connection(inner: &Inner, id: Option<u64>, headers: &HeaderMap) -> Response<Body> {
    let st = inner.state();
    let Some(conn) = id.and_then(|id| st.connections.get(&id)) else {
        return connection_not_found();
    };
    let etag = conn.etag();
    if if_none_match(headers, &etag) {
        let mut resp = Response::new(empty());
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        return with_etag(resp, &etag);
    }
    with_etag(success(StatusCode::OK, conn.to_json()), &etag)
}

async fn patch_connection(inner: &Inner, id: Option<u64>, req: Request<Incoming>) -> Response<Body> {
    let exists = id.is_some_and(|id| inner.state().connections.contains_key(&id));
    let (Some(id), true) = (id, exists) else {
        return connection_not_found();
    };
    let body = match read_object(req.into_body()).await {
        Ok(body) => body,
        Err(resp) => return resp,
    };
    let update = match ConnectionUpdate::parse(&body) {
        Ok(update) => update,
        Err(resp) => return resp,
    };
    let mut st = inner.state();
    // It may have been deleted while the body was read.
    let Some(conn) = st.connections.get_mut(&id) else {
        return connection_not_found();
    };
    update.apply(conn);
    conn.version += 1;
    with_etag(success(StatusCode::OK, conn.to_json()), &conn.etag())
}

fn delete_connection(inner: &Inner, id: Option<u64>) -> Response<Body> {
    let removed = id.and_then(|id| inner.state().connections.remove(&id));
    match removed {
        Some(conn) => success(StatusCode::OK, json!({ "connection_id": conn.id.to_string(), "deleted": true })),
        None => connection_not_found(),
    }
}

// ---------------------------------------------------------- /_emulator

async fn admin(inner: Arc<Inner>, req: Request<Incoming>, segments: Vec<String>) -> Response<Body> {
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method().clone();
    match segs.as_slice() {
        ["faults"] => match method {
            Method::GET => {
                let faults = inner.state().faults.to_json();
                json_response(StatusCode::OK, &faults)
            }
            Method::POST => set_faults(&inner, req).await,
            Method::DELETE => clear_faults(&inner).await,
            _ => method_not_allowed("GET, POST, DELETE"),
        },
        ["auth"] => crate::auth::admin(&inner, req, None).await,
        ["auth", action] => crate::auth::admin(&inner, req, Some(*action)).await,
        ["site"] => match method {
            Method::GET => {
                let policy = inner.state().site_policy.to_json();
                json_response(StatusCode::OK, &policy)
            }
            Method::PUT => set_site_policy(&inner, req).await,
            _ => method_not_allowed("GET, PUT"),
        },
        ["site", "verdict"] => match method {
            Method::GET => site_verdict(&inner, req.uri().query()),
            _ => method_not_allowed("GET"),
        },
        ["traffic"] => match method {
            Method::GET => traffic(&inner),
            _ => method_not_allowed("GET"),
        },
        ["connections", id] => match method {
            Method::GET => {
                let st = inner.state();
                let Some(conn) = id.parse::<u64>().ok().and_then(|id| st.connections.get(&id)) else {
                    return connection_not_found();
                };
                let mut data = conn.to_json();
                let exit = exit_address(conn.session_id.as_deref(), conn.target_geo.as_deref());
                data["exit_address"] = json!(exit.to_string());
                success(StatusCode::OK, data)
            }
            _ => method_not_allowed("GET"),
        },
        _ => not_found("Not found."),
    }
}

/// `PUT /_emulator/site`: the protected site's stricter rules,
/// `{flagFirstExit?: boolean, allowedGeos?: string[] | null}`; what is left
/// out is kept. Every connection's first exit is forgotten: the next one a
/// connection arrives from is the flagged one.
async fn set_site_policy(inner: &Arc<Inner>, req: Request<Incoming>) -> Response<Body> {
    let body = match read_object(req.into_body()).await {
        Ok(body) => body,
        Err(resp) => return resp,
    };
    let mut strict = {
        let st = inner.state();
        crate::StrictSite {
            flag_first_exit: st.site_policy.flag_first_exit,
            allowed_geos: st.site_policy.allowed_geos.clone(),
        }
    };
    let mut details = Map::new();
    match body.get("flagFirstExit") {
        None => {}
        Some(Value::Bool(flag)) => strict.flag_first_exit = *flag,
        Some(_) => {
            details.insert("flagFirstExit".into(), json!(["must be a boolean"]));
        }
    }
    match body.get("allowedGeos") {
        None => {}
        Some(Value::Null) => strict.allowed_geos = None,
        Some(Value::Array(list)) if list.iter().all(|g| g.as_str().is_some_and(is_geo)) => {
            strict.allowed_geos = Some(list.iter().filter_map(|g| g.as_str().map(str::to_owned)).collect());
        }
        Some(_) => {
            details.insert("allowedGeos".into(), json!(["must be null or an array of geo codes from GET /v1/geos"]));
        }
    }
    if let Some(unknown) = body.keys().find(|k| !["flagFirstExit", "allowedGeos"].contains(&k.as_str())) {
        details.insert(unknown.clone(), json!(["is not a setting of the site"]));
    }
    if !details.is_empty() {
        return validation_failed(details);
    }
    let mut st = inner.state();
    st.site_policy = crate::state::SitePolicy::new(strict);
    json_response(StatusCode::OK, &st.site_policy.to_json())
}

/// `GET /_emulator/site/verdict?peer=ADDR:PORT`: what the site's policy says
/// of a visitor arriving from that address and port (another server can
/// apply the same rules): `{refused: null | "flagged" | "geo"}`.
fn site_verdict(inner: &Inner, query: Option<&str>) -> Response<Body> {
    let Some(peer) = query_param(query, "peer").and_then(|p| p.parse::<std::net::SocketAddr>().ok()) else {
        return validation_one("peer", "must be an address and port, e.g. 127.0.0.9:41000");
    };
    let refused = match crate::site::refusal(inner, peer) {
        Some(crate::state::Refusal::Flagged) => json!("flagged"),
        Some(crate::state::Refusal::Geo) => json!("geo"),
        None => Value::Null,
    };
    json_response(StatusCode::OK, &json!({ "refused": refused }))
}

fn gateway_error(err: crate::EmulatorError) -> Response<Body> {
    error(StatusCode::INTERNAL_SERVER_ERROR, "gateway_unavailable", &err.to_string(), Value::Null)
}

async fn set_faults(inner: &Arc<Inner>, req: Request<Incoming>) -> Response<Body> {
    let body = match read_object(req.into_body()).await {
        Ok(body) => body,
        Err(resp) => return resp,
    };
    let mut details = Map::new();
    let mut gateway_down = None;
    {
        let mut st = inner.state();
        let mut faults = st.faults.clone();
        match body.get("apiStatus") {
            None => {}
            Some(Value::Null) => {
                faults.api_status = None;
                faults.api_fault_count = None;
            }
            Some(v) => match v.as_u64().filter(|s| (400..=599).contains(s)) {
                Some(status) => {
                    faults.api_status = u16::try_from(status).ok();
                    faults.api_fault_count = None;
                }
                None => {
                    details.insert("apiStatus".into(), json!(["must be an HTTP status from 400 to 599 or null"]));
                }
            },
        }
        match body.get("apiFaultCount") {
            None => {}
            Some(Value::Null) => faults.api_fault_count = None,
            Some(v) => match v.as_u64() {
                Some(count) => faults.api_fault_count = Some(count),
                None => {
                    details.insert("apiFaultCount".into(), json!(["must be a non-negative integer or null"]));
                }
            },
        }
        match body.get("apiDelayMs") {
            None => {}
            Some(Value::Null) => faults.api_delay_ms = None,
            Some(v) => match v.as_u64() {
                Some(0) => faults.api_delay_ms = None,
                Some(ms) => faults.api_delay_ms = Some(ms),
                None => {
                    details.insert("apiDelayMs".into(), json!(["must be a non-negative integer or null"]));
                }
            },
        }
        match body.get("gatewayDown") {
            None => {}
            Some(Value::Null) => gateway_down = Some(false),
            Some(Value::Bool(down)) => gateway_down = Some(*down),
            Some(_) => {
                details.insert("gatewayDown".into(), json!(["must be a boolean"]));
            }
        }
        if !details.is_empty() {
            return validation_failed(details);
        }
        st.faults = faults;
    }
    if let Some(down) = gateway_down {
        if let Err(err) = inner.set_gateway_down(down).await {
            return gateway_error(err);
        }
        inner.state().faults.gateway_down = down;
    }
    let faults = inner.state().faults.to_json();
    json_response(StatusCode::OK, &faults)
}

async fn clear_faults(inner: &Arc<Inner>) -> Response<Body> {
    {
        // Keep `gateway_down` true until the gateway really listens again.
        let mut st = inner.state();
        let down = st.faults.gateway_down;
        st.faults = Faults { gateway_down: down, ..Faults::default() };
    }
    if let Err(err) = inner.set_gateway_down(false).await {
        return gateway_error(err);
    }
    inner.state().faults.gateway_down = false;
    let faults = inner.state().faults.to_json();
    json_response(StatusCode::OK, &faults)
}

fn traffic(inner: &Inner) -> Response<Body> {
    let st = inner.state();
    let connections: Vec<Value> = st
        .traffic
        .iter()
        .map(|(id, hosts)| {
            let hosts: Vec<Value> = hosts
                .iter()
                .map(|(host, stats)| {
                    let (requests, tunnels, up, down) = stats.snapshot();
                    json!({
                        "host": host,
                        "requests": requests,
                        "tunnels": tunnels,
                        "bytes_up": up,
                        "bytes_down": down,
                    })
                })
                .collect();
            json!({ "connection_id": id, "hosts": hosts })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "connections": connections }))
}

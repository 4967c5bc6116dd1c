//! The device-code login of `aluvia auth`: `POST /v1/auth/cli/init` and
//! `POST /v1/auth/cli/poll`, and the admin endpoints that approve, deny,
//! expire or slow down a login (`/_emulator/auth...`).

use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use rand::Rng;
use serde_json::{json, Map, Value};

use crate::api::{error, method_not_allowed, not_found, read_object, success, validation_one};
use crate::util::{json_response, query_param, Body};
use crate::Inner;

/// Seconds between polls the API asks for, unless set otherwise.
pub(crate) const DEFAULT_INTERVAL: u64 = 5;
/// Seconds a login code lives, unless set otherwise.
pub(crate) const DEFAULT_EXPIRES_IN: u64 = 600;
/// What a `slow_down` adds to a login's interval.
const SLOW_DOWN_STEP: u64 = 5;
/// A poll this much earlier than the interval allows still counts as on time.
const POLL_TOLERANCE: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Pending,
    Approved(String),
    Denied,
    /// Approved and the key handed out: the code is used up.
    Done,
}

#[derive(Debug, Clone)]
struct Login {
    device_code: String,
    user_code: String,
    created: Instant,
    expires_in: Duration,
    expired: bool,
    interval: u64,
    outcome: Outcome,
    last_poll: Option<Instant>,
    /// When each poll came, in ms after the login started.
    polls: Vec<u64>,
    /// How many more polls answer `slow_down` whatever their timing.
    forced_slow_downs: u64,
}

impl Login {
    fn status(&self) -> &'static str {
        match self.outcome {
            _ if self.is_expired() => "expired",
            Outcome::Pending => "pending",
            Outcome::Approved(_) => "approved",
            Outcome::Denied => "denied",
            Outcome::Done => "done",
        }
    }

    fn is_expired(&self) -> bool {
        self.outcome != Outcome::Done && (self.expired || self.created.elapsed() >= self.expires_in)
    }

    fn to_json(&self) -> Value {
        json!({
            "userCode": self.user_code,
            "status": self.status(),
            "interval": self.interval,
            "polls": self.polls,
        })
    }
}

/// The logins and the settings new ones get.
#[derive(Debug)]
pub(crate) struct AuthState {
    pub auto_approve: bool,
    pub interval: u64,
    pub expires_in: u64,
    logins: Vec<Login>,
}

impl AuthState {
    pub(crate) fn new(auto_approve: bool, interval: Option<u64>, expires_in: Option<u64>) -> Self {
        AuthState {
            auto_approve,
            interval: interval.unwrap_or(DEFAULT_INTERVAL),
            expires_in: expires_in.unwrap_or(DEFAULT_EXPIRES_IN),
            logins: Vec::new(),
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "autoApprove": self.auto_approve,
            "interval": self.interval,
            "expiresIn": self.expires_in,
            "logins": self.logins.iter().map(Login::to_json).collect::<Vec<_>>(),
        })
    }

    /// The login a user code names, or the newest one.
    fn find(&mut self, user_code: Option<&str>) -> Option<&mut Login> {
        match user_code {
            Some(code) => self.logins.iter_mut().find(|l| l.user_code.eq_ignore_ascii_case(code)),
            None => self.logins.last_mut(),
        }
    }
}

/// `ABCD-2345`: letters and digits that cannot be mistaken for each other.
fn user_code() -> String {
    const ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ23456789";
    let mut rng = rand::thread_rng();
    let mut pick = || char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]);
    let a: String = (0..4).map(|_| pick()).collect();
    let b: String = (0..4).map(|_| pick()).collect();
    format!("{a}-{b}")
}

fn login_error(code: &str, message: &str) -> Response<Body> {
    error(StatusCode::BAD_REQUEST, code, message, Value::Null)
}

/// `/v1/auth/cli/...` (no API key needed).
pub(crate) async fn v1(inner: &Inner, req: Request<Incoming>, action: &str) -> Response<Body> {
    if req.method() != Method::POST {
        return method_not_allowed("POST");
    }
    let host = req.headers().get(hyper::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1").to_owned();
    let body = match read_object(req.into_body()).await {
        Ok(body) => body,
        Err(resp) => return resp,
    };
    match action {
        "init" => init(inner, &host),
        "poll" => poll(inner, &body),
        _ => not_found("Not found."),
    }
}

fn init(inner: &Inner, host: &str) -> Response<Body> {
    let mut st = inner.state();
    let auth = &mut st.auth;
    let login = Login {
        device_code: uuid::Uuid::new_v4().simple().to_string(),
        user_code: user_code(),
        created: Instant::now(),
        expires_in: Duration::from_secs(auth.expires_in),
        expired: false,
        interval: auth.interval,
        outcome: if auth.auto_approve { Outcome::Approved(inner.api_key.clone()) } else { Outcome::Pending },
        last_poll: None,
        polls: Vec::new(),
        forced_slow_downs: 0,
    };
    let data = json!({
        "device_code": login.device_code,
        "user_code": login.user_code,
        "verification_uri": format!("http://{host}/_emulator/auth/approve"),
        "verification_uri_complete": format!("http://{host}/_emulator/auth/approve?user_code={}", login.user_code),
        "interval": login.interval,
        "expires_in": auth.expires_in,
    });
    auth.logins.push(login);
    success(StatusCode::OK, data)
}

fn poll(inner: &Inner, body: &Map<String, Value>) -> Response<Body> {
    let Some(device_code) = body.get("device_code").and_then(Value::as_str) else {
        return validation_one("device_code", "is required");
    };
    let mut st = inner.state();
    let Some(login) = st.auth.logins.iter_mut().find(|l| l.device_code == device_code) else {
        return login_error("invalid", "Unknown device code.");
    };
    let now = Instant::now();
    login.polls.push(u64::try_from(now.duration_since(login.created).as_millis()).unwrap_or(u64::MAX));
    let too_soon = login
        .last_poll
        .is_some_and(|last| now.duration_since(last) + POLL_TOLERANCE < Duration::from_secs(login.interval));
    login.last_poll = Some(now);
    if login.outcome == Outcome::Done {
        return login_error("invalid", "This device code was already used.");
    }
    if login.is_expired() {
        return login_error("expired", "The device code expired.");
    }
    if login.forced_slow_downs > 0 || too_soon {
        login.forced_slow_downs = login.forced_slow_downs.saturating_sub(1);
        login.interval += SLOW_DOWN_STEP;
        return login_error("slow_down", "Polling too fast; wait longer between polls.");
    }
    match login.outcome.clone() {
        Outcome::Pending => login_error("authorization_pending", "Waiting for approval."),
        Outcome::Denied => login_error("denied", "The login was denied."),
        Outcome::Approved(key) => {
            login.outcome = Outcome::Done;
            success(StatusCode::OK, json!({ "api_key": key }))
        }
        Outcome::Done => login_error("invalid", "This device code was already used."),
    }
}

/// `/_emulator/auth[/action]`.
pub(crate) async fn admin(inner: &Inner, req: Request<Incoming>, action: Option<&str>) -> Response<Body> {
    let method = req.method().clone();
    // A browser opening `verification_uri_complete` approves at once.
    if action == Some("approve") && method == Method::GET {
        let code = query_param(req.uri().query(), "user_code");
        return match approve(inner, code.as_deref(), None) {
            Ok(()) => html(StatusCode::OK, "Approved. You can close this page and return to the terminal."),
            Err(resp) => resp,
        };
    }
    if method != Method::POST && !(action.is_none() && method == Method::GET) {
        return method_not_allowed(if action.is_none() { "GET, POST" } else { "POST" });
    }
    if method == Method::GET {
        return json_response(StatusCode::OK, &inner.state().auth.to_json());
    }
    let body = match read_object(req.into_body()).await {
        Ok(body) => body,
        Err(resp) => return resp,
    };
    let user_code = match body.get("userCode") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return validation_one("userCode", "must be a string"),
    };
    let result = match action {
        None => settings(inner, &body),
        Some("approve") => {
            let key = match body.get("apiKey") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(_) => return validation_one("apiKey", "must be a non-empty string"),
            };
            approve(inner, user_code, key)
        }
        Some("deny") => change(inner, user_code, |l| l.outcome = Outcome::Denied),
        Some("expire") => change(inner, user_code, |l| l.expired = true),
        Some("slow-down") => {
            let count = match body.get("count") {
                None => 1,
                Some(v) => match v.as_u64() {
                    Some(n) => n,
                    None => return validation_one("count", "must be a non-negative integer"),
                },
            };
            change(inner, user_code, |l| l.forced_slow_downs = count)
        }
        Some(_) => return not_found("Not found."),
    };
    match result {
        Ok(()) => json_response(StatusCode::OK, &inner.state().auth.to_json()),
        Err(resp) => resp,
    }
}

fn html(status: StatusCode, text: &str) -> Response<Body> {
    crate::util::respond(
        status,
        "text/html; charset=utf-8",
        format!("<!doctype html><title>Aluvia login</title><p>{text}</p>\n"),
    )
}

#[allow(clippy::result_large_err)]
fn change(inner: &Inner, user_code: Option<&str>, f: impl FnOnce(&mut Login)) -> Result<(), Response<Body>> {
    let mut st = inner.state();
    let login = st.auth.find(user_code).ok_or_else(|| not_found("No such login."))?;
    f(login);
    Ok(())
}

/// Approves a login with the emulator's key, or with `key` (one the API will not accept, for tests).
#[allow(clippy::result_large_err)]
fn approve(inner: &Inner, user_code: Option<&str>, key: Option<String>) -> Result<(), Response<Body>> {
    let key = key.unwrap_or_else(|| inner.api_key.clone());
    change(inner, user_code, |l| {
        if l.outcome == Outcome::Pending {
            l.outcome = Outcome::Approved(key);
        }
    })
}

#[allow(clippy::result_large_err)]
fn settings(inner: &Inner, body: &Map<String, Value>) -> Result<(), Response<Body>> {
    let mut st = inner.state();
    let auth = &mut st.auth;
    let mut next = (auth.auto_approve, auth.interval, auth.expires_in);
    match body.get("autoApprove") {
        None => {}
        Some(Value::Bool(b)) => next.0 = *b,
        Some(_) => return Err(validation_one("autoApprove", "must be a boolean")),
    }
    for (field, slot) in [("interval", &mut next.1), ("expiresIn", &mut next.2)] {
        match body.get(field) {
            None => {}
            Some(v) => match v.as_u64() {
                Some(n) => *slot = n,
                None => return Err(validation_one(field, "must be a non-negative integer (seconds)")),
            },
        }
    }
    (auth.auto_approve, auth.interval, auth.expires_in) = next;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_readable() {
        for _ in 0..200 {
            let code = user_code();
            assert_eq!(code.len(), 9);
            assert_eq!(&code[4..5], "-");
            assert!(code.chars().all(|c| c == '-' || c.is_ascii_uppercase() || c.is_ascii_digit()), "{code}");
            assert!(!code.contains(['0', 'O', '1', 'I']), "{code}");
        }
    }

    #[test]
    fn expiry_and_status() {
        let mut login = Login {
            device_code: "d".into(),
            user_code: "u".into(),
            created: Instant::now(),
            expires_in: Duration::from_secs(60),
            expired: false,
            interval: 0,
            outcome: Outcome::Pending,
            last_poll: None,
            polls: Vec::new(),
            forced_slow_downs: 0,
        };
        assert_eq!(login.status(), "pending");
        login.expires_in = Duration::ZERO;
        assert_eq!(login.status(), "expired");
        login.outcome = Outcome::Done;
        assert_eq!(login.status(), "done");
    }
}

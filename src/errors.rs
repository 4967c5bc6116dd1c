//! How the engine's errors cross into JavaScript: one reason string per
//! error, which `lib/errors.js` turns into the matching class.

use aluvia_core::{store, AluviaError};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use serde_json::Value;

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
pub(crate) fn session_err(e: store::SessionError) -> Error {
    match e {
        store::SessionError::Other(e) => to_napi(e),
        e => coded(e.code(), None, &Value::Object(e.context()).to_string(), &e.to_string()),
    }
}

pub(crate) fn json_err(e: serde_json::Error) -> Error {
    to_napi(AluviaError::Invalid(e.to_string()))
}

/// Text from elsewhere (a browser's error, a server's message) fit for an
/// error message: one line, no escape sequences or control characters,
/// userinfo redacted, at most 300 characters.
#[napi]
pub fn sanitize_message(text: String) -> String {
    aluvia_core::text::sanitize(&text)
}

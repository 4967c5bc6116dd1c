//! Small helpers shared by the servers: body types, JSON answers, time, query
//! strings and the ISO 8601 checker.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::Value;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type every server of the emulator answers with.
pub(crate) type Body = BoxBody<Bytes, BoxError>;

pub(crate) fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).map_err(|never| match never {}).boxed()
}

pub(crate) fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|never| match never {}).boxed()
}

/// A response with the given status, content type and body.
pub(crate) fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub(crate) fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    // Serializing a `Value` cannot fail.
    let text = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
    respond(status, "application/json", text)
}

pub(crate) fn text_response(status: StatusCode, text: impl Into<String>) -> Response<Body> {
    let mut text = text.into();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    respond(status, "text/plain; charset=utf-8", text)
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for the current time.
pub(crate) fn now_iso() -> String {
    format_iso_ms(now_ms())
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for a Unix time in milliseconds.
pub(crate) fn format_iso_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let millis = ms % 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

/// Parses exactly `n` ASCII digits at the start of `s`.
fn digits(s: &[u8], n: usize) -> Option<u32> {
    if s.len() < n {
        return None;
    }
    s[..n].iter().try_fold(0u32, |acc, &b| b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0')))
}

/// `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)`, with real ranges.
pub(crate) fn is_iso8601(s: &str) -> bool {
    let b = s.as_bytes();
    let date_ok = (|| {
        let year = digits(b, 4)?;
        (b.get(4) == Some(&b'-')).then_some(())?;
        let month = digits(&b[5..], 2)?;
        (b.get(7) == Some(&b'-')).then_some(())?;
        let day = digits(&b[8..], 2)?;
        ((1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month)).then_some(())
    })()
    .is_some();
    if !date_ok {
        return false;
    }
    if b.len() == 10 {
        return true;
    }
    let time = &b[10..];
    let time_ok = (|| {
        matches!(time.first(), Some(b'T') | Some(b't')).then_some(())?;
        let hh = digits(&time[1..], 2)?;
        (time.get(3) == Some(&b':')).then_some(())?;
        let mm = digits(&time[4..], 2)?;
        (time.get(6) == Some(&b':')).then_some(())?;
        let ss = digits(&time[7..], 2)?;
        (hh <= 23 && mm <= 59 && ss <= 60).then_some(())?;
        let mut rest = &time[9..];
        if rest.first() == Some(&b'.') {
            let n = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
            (1..=9).contains(&n).then_some(())?;
            rest = &rest[1 + n..];
        }
        match rest {
            [b'Z'] | [b'z'] => Some(()),
            [sign, h1, h2, b':', m1, m2] if *sign == b'+' || *sign == b'-' => {
                let oh = digits(&[*h1, *h2], 2)?;
                let om = digits(&[*m1, *m2], 2)?;
                (oh <= 23 && om <= 59).then_some(())
            }
            _ => None,
        }
    })()
    .is_some();
    time_ok
}

/// Percent-decodes a query component. `+` is kept as is (a literal plus is
/// common in ISO 8601 offsets sent without encoding).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first value of `key` in a query string.
pub(crate) fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_checker() {
        for ok in [
            "2026-01-01",
            "2024-02-29",
            "2026-01-01T00:00:00Z",
            "2026-12-31T23:59:59.123Z",
            "2026-06-15T10:20:30+02:00",
            "2026-06-15T10:20:30.5-05:30",
        ] {
            assert!(is_iso8601(ok), "{ok}");
        }
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-02-30",
            "2025-02-29",
            "2026-1-01",
            "2026-01-01T",
            "2026-01-01T25:00:00Z",
            "2026-01-01T10:00:00",
            "2026-01-01T10:00:00.Z",
            "2026-01-01T10:00:00+0200",
            "2026-01-01 10:00:00Z",
            "2026-01-01X",
        ] {
            assert!(!is_iso8601(bad), "{bad}");
        }
    }

    #[test]
    fn time_format() {
        assert_eq!(format_iso_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_iso_ms(1_772_409_600_123), "2026-03-02T00:00:00.123Z");
    }

    #[test]
    fn query() {
        let q = Some("start=2026-01-01T00%3A00%3A00%2B01:00&end=&x");
        assert_eq!(query_param(q, "start").as_deref(), Some("2026-01-01T00:00:00+01:00"));
        assert_eq!(query_param(q, "end").as_deref(), Some(""));
        assert_eq!(query_param(q, "x").as_deref(), Some(""));
        assert_eq!(query_param(q, "y"), None);
        assert_eq!(query_param(Some("a=%zz%4"), "a").as_deref(), Some("%zz%4"));
    }
}

//! Block detection: weighted signals, a score and a status for each page
//! result, and the auto-unblock bookkeeping.
//!
//! No browser lives here. The browser layer collects facts over CDP (the
//! main-frame document response, one page evaluation built by
//! [`collect_script`]) and calls the passes:
//!
//! 1. [`fast_pass`] at DOMContentLoaded: status and header signals only.
//!    [`fast_pass_is_decisive`] says whether to act now and skip the full pass.
//! 2. [`full_pass`] once the page is loaded and the network is idle (or
//!    [`DetectionConfig::network_idle_timeout_ms`] has passed). When it asks for
//!    it, the caller evaluates `collect_script(cfg, true)` and calls
//!    [`rescore_with_inner_text`].
//! 3. [`spa_pass`] on a same-document navigation, at most once per
//!    [`SPA_PASS_MIN_INTERVAL_MS`] per page.
//!
//! [`Unblocker`] then decides, one result at a time, whether to add the
//! hostname to the rules (or, ours, take the next rung of its unblock
//! ladder) and reload, or to mark it persistently blocked.
//!
//! The contract is `spec/04-detection.md`; signal names, weights and
//! thresholds are the spec's.

mod reload;
mod script;
mod signals;
mod unblock;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use reload::{ReloadLoop, SELF_RELOAD_MIN_COUNT, SELF_RELOAD_WINDOW_MS};
pub use script::collect_script;
pub use signals::{
    collapsed_len, content_signals, fast_signals, is_interstitial, self_reload_signal, vendor_marker, VendorMarker,
    CHALLENGE_URL_PATTERNS, DEFAULT_CHALLENGE_SELECTORS, INTERSTITIAL_MAX_CHARS, STRONG_TEXT_KEYWORDS, TITLE_KEYWORDS,
    VENDOR_MARKERS, WEAK_TEXT_KEYWORDS,
};
pub use unblock::{
    cleared_line, ladder, rung_in_effect, runs_ladder, unknown_geo, Handled, LadderNames, Rung, UnblockDecision,
    UnblockLogEntry, UnblockNote, UnblockOutcome, UnblockStep, Unblocker, FLAG_NAMES, OPTION_NAMES, RETRIED_URLS_LIMIT,
    UNBLOCK_LOG_LIMIT, UNBLOCK_STEPS,
};

/// A score at or above this is `blocked`.
pub const BLOCKED_THRESHOLD: f64 = 0.7;
/// A score at or above this (and below [`BLOCKED_THRESHOLD`]) is `suspected`.
pub const SUSPECTED_THRESHOLD: f64 = 0.4;
/// A fast-pass score at or above this is acted on at once; the full pass is
/// skipped for that navigation.
pub const DECISIVE_FAST_SCORE: f64 = 0.9;
/// The SPA pass runs at most once per this many milliseconds per page.
pub const SPA_PASS_MIN_INTERVAL_MS: u64 = 200;

/// Slack for threshold comparisons, so that float noise in `1 - Π(1 - w)`
/// (a lone 0.7 signal, a lone 0.9 header) never lands just below a threshold.
const THRESHOLD_EPSILON: f64 = 1e-9;

/// `blockDetection` as JavaScript passes it (camelCase). Missing fields take
/// the spec's defaults; unknown fields (`onDetection`, which stays in JS) are
/// ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DetectionConfig {
    /// `false`: every pass returns `clear`, score 0, no signals.
    pub enabled: bool,
    /// A given list replaces [`DEFAULT_CHALLENGE_SELECTORS`].
    pub challenge_selectors: Vec<String>,
    /// Appended to the title keywords and to the strong text keywords.
    pub extra_keywords: Vec<String>,
    /// Appended to 403 and 429 (weight 0.85).
    pub extra_status_codes: Vec<u16>,
    /// Cap on the wait for network idle before the full pass.
    pub network_idle_timeout_ms: u64,
    /// Add the hostname to the rules and reload on `blocked`.
    pub auto_unblock: bool,
    /// Also on `suspected` (needs `auto_unblock`).
    pub auto_unblock_on_suspected: bool,
    /// Ours: the unblock ladder's steps, in order (`rule`, `rotate`, `geo`);
    /// `["rule"]` is the documented one-rung auto-unblock. Checked by [`ladder`].
    pub unblock_steps: Vec<String>,
    /// Ours: the geos the `geo` step tries, in order.
    pub unblock_geos: Vec<String>,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        DetectionConfig {
            enabled: true,
            challenge_selectors: DEFAULT_CHALLENGE_SELECTORS.iter().map(|s| s.to_string()).collect(),
            extra_keywords: Vec::new(),
            extra_status_codes: Vec::new(),
            network_idle_timeout_ms: 3000,
            auto_unblock: false,
            auto_unblock_on_suspected: false,
            unblock_steps: vec![UnblockStep::Rule.name().to_string()],
            unblock_geos: Vec::new(),
        }
    }
}

/// The main-frame document response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseFacts {
    pub status: u16,
    /// Header names in any case; a name may repeat.
    pub headers: Vec<(String, String)>,
}

impl ResponseFacts {
    /// The values of header `name`, compared case-insensitively.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter(move |(n, _)| n.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// What an evaluation of [`collect_script`] returns (with `returnByValue`).
/// Lengths are JavaScript string lengths (UTF-16 code units).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PageFacts {
    /// `document.title`.
    pub title: String,
    /// `document.body.textContent` ("" without a body).
    pub text: String,
    /// `document.documentElement.outerHTML.length`.
    pub html_length: usize,
    /// The configured challenge selectors that match in the main frame.
    pub matched_selectors: Vec<String>,
    /// The `url=` part of each `<meta http-equiv="refresh">`.
    pub meta_refresh_urls: Vec<String>,
    /// `document.body.innerText`, only when asked for.
    pub inner_text: Option<String>,
    /// `document.documentElement.outerHTML`, only with `inner_text` and only
    /// on an interstitial (where the vendor markers are looked for).
    pub html: Option<String>,
}

/// Which pass produced a signal or a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pass {
    Fast,
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockStatus {
    Blocked,
    Suspected,
    Clear,
}

/// One fired signal.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Signal {
    pub name: String,
    pub weight: f64,
    /// A short human explanation (`HTTP 403`, `title contains "just a moment"`).
    pub details: String,
    pub source: Pass,
}

impl Signal {
    pub(crate) fn new(name: impl Into<String>, weight: f64, details: impl Into<String>, source: Pass) -> Signal {
        Signal { name: name.into(), weight, details: details.into(), source }
    }
}

/// One hop of a main-frame redirect chain: the URL that answered with a
/// redirect, and its status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedirectHop {
    pub url: String,
    pub status_code: u16,
}

/// A detection result, serialized as the spec's result object.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DetectionResult {
    pub url: String,
    pub hostname: String,
    pub block_status: BlockStatus,
    /// Rounded to 4 decimals; the status was decided on the unrounded value.
    pub score: f64,
    pub signals: Vec<Signal>,
    pub pass: Pass,
    /// Set by the caller from [`UnblockDecision::PersistentBlock`].
    pub persistent_block: bool,
    /// Chronological.
    pub redirect_chain: Vec<RedirectHop>,
    /// Ours: the auto-unblock action taken on this result, if any.
    pub unblock: Option<UnblockNote>,
}

impl DetectionResult {
    fn build(url: &str, pass: Pass, signals: Vec<Signal>, chain: &[RedirectHop]) -> DetectionResult {
        let raw = score(&signals);
        DetectionResult {
            url: url.to_string(),
            hostname: hostname_of(url),
            block_status: status_for(raw),
            score: round4(raw),
            signals,
            pass,
            persistent_block: false,
            redirect_chain: chain.to_vec(),
            unblock: None,
        }
    }

    /// The names of the fired signals, in order.
    pub fn signal_names(&self) -> Vec<&str> {
        self.signals.iter().map(|s| s.name.as_str()).collect()
    }

    /// This result with one more signal (in table order), scored again.
    pub fn with_signal(&self, signal: Signal) -> DetectionResult {
        let mut signals = self.signals.clone();
        signals.push(signal);
        signals::sort_signals(&mut signals);
        let mut result = DetectionResult::build(&self.url, self.pass, signals, &self.redirect_chain);
        result.persistent_block = self.persistent_block;
        result
    }
}

/// `1 - Π(1 - weight)` over the signals; 0 when there are none. Unrounded.
pub fn score(signals: &[Signal]) -> f64 {
    if signals.is_empty() {
        return 0.0;
    }
    1.0 - signals.iter().map(|s| 1.0 - s.weight).product::<f64>()
}

/// `blocked` at ≥ 0.7, `suspected` at ≥ 0.4, else `clear`.
pub fn status_for(score: f64) -> BlockStatus {
    if reaches(score, BLOCKED_THRESHOLD) {
        BlockStatus::Blocked
    } else if reaches(score, SUSPECTED_THRESHOLD) {
        BlockStatus::Suspected
    } else {
        BlockStatus::Clear
    }
}

fn reaches(score: f64, threshold: f64) -> bool {
    score + THRESHOLD_EPSILON >= threshold
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// The fast pass: status and header signals of the main-frame document response.
pub fn fast_pass(url: &str, resp: &ResponseFacts, chain: &[RedirectHop], cfg: &DetectionConfig) -> DetectionResult {
    let signals = if cfg.enabled { fast_signals(resp, cfg) } else { Vec::new() };
    DetectionResult::build(url, Pass::Fast, signals, chain)
}

/// Whether a fast-pass result scores ≥ 0.9: act on it now and skip the full
/// pass for that navigation. Decided on the unrounded score.
pub fn fast_pass_is_decisive(result: &DetectionResult) -> bool {
    reaches(score(&result.signals), DECISIVE_FAST_SCORE)
}

/// The full pass: the fast signals (when the document response is known) and
/// the content signals.
///
/// The flag is true when the score landed in [0.4, 0.7): the caller evaluates
/// `collect_script(cfg, true)` and calls [`rescore_with_inner_text`]. When
/// `page` already carries `inner_text`, that re-evaluation happens here and the
/// flag is false.
pub fn full_pass(
    url: &str,
    resp: Option<&ResponseFacts>,
    page: &PageFacts,
    chain: &[RedirectHop],
    cfg: &DetectionConfig,
) -> (DetectionResult, bool) {
    if !cfg.enabled {
        return (DetectionResult::build(url, Pass::Full, Vec::new(), chain), false);
    }
    let mut signals = resp.map(|r| fast_signals(r, cfg)).unwrap_or_default();
    signals.extend(content_signals(page, url, chain, cfg));
    let result = DetectionResult::build(url, Pass::Full, signals, chain);
    if !needs_inner_text(&result) {
        (result, false)
    } else if page.inner_text.is_some() {
        (rescore_with_inner_text(&result, page, url, chain, cfg), false)
    } else {
        (result, true)
    }
}

/// Whether a result is `suspected`, the range where the spec re-evaluates the
/// visible text with `innerText`.
pub fn needs_inner_text(result: &DetectionResult) -> bool {
    result.block_status == BlockStatus::Suspected
}

/// Drops the `visible_text_*` signals of `first`, recomputes them (length
/// checks included) from `page_with_inner.inner_text`, and scores again. The
/// other signals, the pass and `persistent_block` are kept; `url` and `chain`
/// describe the result as before. Without `inner_text`, `first` is returned
/// unchanged.
pub fn rescore_with_inner_text(
    first: &DetectionResult,
    page_with_inner: &PageFacts,
    url: &str,
    chain: &[RedirectHop],
    cfg: &DetectionConfig,
) -> DetectionResult {
    if !cfg.enabled {
        return DetectionResult::build(url, first.pass, Vec::new(), chain);
    }
    let Some(inner) = page_with_inner.inner_text.as_deref() else {
        return first.clone();
    };
    let mut signals: Vec<Signal> =
        first.signals.iter().filter(|s| !s.name.starts_with(signals::VISIBLE_TEXT_PREFIX)).cloned().collect();
    signals.extend(signals::text_signals(inner, cfg));
    signals::sort_signals(&mut signals);
    let mut result = DetectionResult::build(url, first.pass, signals, chain);
    result.persistent_block = first.persistent_block;
    result
}

/// The SPA pass: the content detectors only (no document response, no
/// redirect chain; a challenge URL as the new location still counts), pass
/// `full`. Like the full pass, a `suspected` result may be re-evaluated: see
/// [`needs_inner_text`] and [`rescore_with_inner_text`].
pub fn spa_pass(url: &str, page: &PageFacts, cfg: &DetectionConfig) -> DetectionResult {
    let signals = if cfg.enabled { content_signals(page, url, &[], cfg) } else { Vec::new() };
    DetectionResult::build(url, Pass::Full, signals, &[])
}

/// The lower-case host of `url` without port (IPv6 in brackets, as
/// JavaScript's `URL.hostname`); "" when it has none or does not parse.
pub fn hostname_of(url: &str) -> String {
    url::Url::parse(url.trim()).ok().and_then(|u| u.host_str().map(|h| h.to_ascii_lowercase())).unwrap_or_default()
}

/// The lock file's `lastDetection`: `{ hostname, lastUrl, blockStatus, score,
/// signals: [names], pass, persistentBlock, timestamp }`.
pub fn last_detection_json(result: &DetectionResult, timestamp_ms: u64) -> serde_json::Value {
    serde_json::json!({
        "hostname": result.hostname,
        "lastUrl": result.url,
        "blockStatus": result.block_status,
        "score": result.score,
        "signals": result.signal_names(),
        "pass": result.pass,
        "persistentBlock": result.persistent_block,
        "timestamp": timestamp_ms,
    })
}

//! The signal detectors: pure functions from collected facts to fired signals.
//! They ignore `enabled`; the passes handle it.

use super::{DetectionConfig, PageFacts, Pass, RedirectHop, ResponseFacts, Signal};

/// The challenge selectors used when `challengeSelectors` is not given.
pub const DEFAULT_CHALLENGE_SELECTORS: [&str; 8] = [
    "#challenge-form",
    "#challenge-running",
    ".cf-browser-verification",
    "iframe[src*=\"recaptcha\"]",
    ".g-recaptcha",
    "#px-captcha",
    "iframe[src*=\"hcaptcha\"]",
    ".h-captcha",
];

/// Matched as substrings of the lower-cased title (then `extraKeywords`).
pub const TITLE_KEYWORDS: [&str; 6] =
    ["access denied", "blocked", "forbidden", "security check", "attention required", "just a moment"];

/// Matched case-insensitively as substrings of a short body text (then `extraKeywords`).
pub const STRONG_TEXT_KEYWORDS: [&str; 4] = ["captcha", "access denied", "verify you are human", "bot detection"];

/// Matched case-insensitively as whole words of the body text.
pub const WEAK_TEXT_KEYWORDS: [&str; 5] = ["blocked", "forbidden", "cloudflare", "please verify", "unusual activity"];

/// A redirect hop, the final URL or a meta refresh target containing one of
/// these is a challenge.
pub const CHALLENGE_URL_PATTERNS: [&str; 3] =
    ["/cdn-cgi/challenge-platform/", "challenges.cloudflare.com", "geo.captcha-delivery.com"];

pub(super) const VISIBLE_TEXT_PREFIX: &str = "visible_text_";

/// A page whose visible text (`innerText` of the body, white space collapsed)
/// is shorter than this many characters is an *interstitial*: a challenge or
/// block page, or a short page (a 404), but not a content page that merely
/// embeds a widget.
pub const INTERSTITIAL_MAX_CHARS: usize = 1500;

/// One vendor's block or challenge page marker: every needle occurs in the
/// page's HTML (compared case-insensitively). Markers count on interstitials
/// only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VendorMarker {
    pub vendor: &'static str,
    pub all_of: &'static [&'static str],
    /// What the vendor injects into every page of a protected site (short
    /// 404 pages included): counts only on a page with no visible text at all.
    pub injected: bool,
}

const fn own(vendor: &'static str, all_of: &'static [&'static str]) -> VendorMarker {
    VendorMarker { vendor, all_of, injected: false }
}

const fn injected(vendor: &'static str, all_of: &'static [&'static str]) -> VendorMarker {
    VendorMarker { vendor, all_of, injected: true }
}

/// The vendor markers of `vendor_challenge`, first match wins. Each entry has
/// a block or challenge page in the test corpus that it must catch, and a
/// content page carrying the vendor's injected script that must stay clear.
pub const VENDOR_MARKERS: &[VendorMarker] = &[
    // Imperva/Incapsula: the incident page (an iframe to the incident
    // resource, with the incident ID as its fallback text) and the empty JS
    // interstitial, which is nothing but the script every protected page gets.
    own("Imperva/Incapsula", &["Incapsula incident ID"]),
    own("Imperva/Incapsula", &["<iframe", "/_Incapsula_Resource?CWUDNSAI="]),
    own("Imperva/Incapsula", &["Pardon Our Interruption", "made us think you were a bot"]),
    injected("Imperva/Incapsula", &["/_Incapsula_Resource?SWJIYLWA="]),
    // Sucuri: the JS challenge (sets a cookie and reloads) and the firewall's block page.
    own("Sucuri", &["sucuri_cloudproxy_js"]),
    own("Sucuri", &["Sucuri WebSite Firewall", "Access Denied"]),
    // AWS WAF: the SDK globals of the challenge interstitial also appear on
    // pages that integrate the SDK; the captcha page, which has text of its
    // own, is known by its token props.
    injected("AWS WAF", &["awsWafCookieDomainList"]),
    injected("AWS WAF", &["AwsWafIntegration"]),
    own("AWS WAF", &["window.gokuProps"]),
    // DataDome: the block page's `dd` object names its captcha host on
    // captcha-delivery.com (the tag on normal pages comes from
    // js.datadome.co; a bare meta refresh there is meta_refresh_challenge).
    own("DataDome", &["captcha-delivery.com", "dd={"]),
    // PerimeterX/HUMAN: the "Press & Hold" block page.
    own("PerimeterX/HUMAN", &["_pxCaptcha"]),
    own("PerimeterX/HUMAN", &["px-captcha"]),
    // Kasada: the block page is an empty body with the KPSDK bootstrap; the
    // SDK is also configured on every protected page.
    injected("Kasada", &["KPSDK"]),
    // Akamai: "Access Denied" with a "Reference #", and the sec-cpt challenge.
    own("Akamai", &["Access Denied", "Reference #"]),
    own("Akamai", &["/_sec/cp_challenge/"]),
    // Cloudflare: the challenge page's options, the WAF block page, and the
    // JS detection script every proxied page gets.
    own("Cloudflare", &["window._cf_chl_opt"]),
    own("Cloudflare", &["cf-error-details", "you have been blocked"]),
    injected("Cloudflare", &["/cdn-cgi/challenge-platform/", "/jsd/"]),
];

const BLOCK_STATUS_WEIGHT: f64 = 0.85;
const STATUS_503_WEIGHT: f64 = 0.6;
const CF_MITIGATED_WEIGHT: f64 = 0.9;
const CLOUDFLARE_SERVER_WEIGHT: f64 = 0.1;
const TITLE_WEIGHT: f64 = 0.8;
const SELECTOR_WEIGHT: f64 = 0.8;
const SHORT_TEXT_WEIGHT: f64 = 0.2;
const STRONG_TEXT_WEIGHT: f64 = 0.6;
const WEAK_TEXT_WEIGHT: f64 = 0.15;
const LOW_RATIO_WEIGHT: f64 = 0.2;
const REDIRECT_WEIGHT: f64 = 0.7;
const META_REFRESH_WEIGHT: f64 = 0.65;
const AWS_WAF_WEIGHT: f64 = 0.9;
const WIDGET_WEIGHT: f64 = 0.15;
const VENDOR_WEIGHT: f64 = 0.85;
const SELF_RELOAD_WEIGHT: f64 = 0.5;

const SHORT_TEXT_LEN: usize = 50;
const STRONG_TEXT_MAX_LEN: usize = 500;
const RATIO_MIN_HTML_LEN: usize = 1000;
const LOW_RATIO: f64 = 0.03;

/// Longest piece of page- or network-provided text quoted in `details`.
const DETAILS_QUOTE_MAX: usize = 200;

/// Status and header signals of the main-frame document response, source `fast`.
pub fn fast_signals(resp: &ResponseFacts, cfg: &DetectionConfig) -> Vec<Signal> {
    let mut out = Vec::new();
    let status = resp.status;
    if status != 0 && (status == 403 || status == 429 || cfg.extra_status_codes.contains(&status)) {
        out.push(Signal::new(
            format!("http_status_{status}"),
            BLOCK_STATUS_WEIGHT,
            format!("HTTP {status}"),
            Pass::Fast,
        ));
    } else if status == 503 {
        out.push(Signal::new("http_status_503", STATUS_503_WEIGHT, "HTTP 503", Pass::Fast));
    }
    if let Some(v) = resp.header_values("cf-mitigated").find(|v| v.to_lowercase().contains("challenge")) {
        out.push(Signal::new(
            "waf_header_cf_mitigated",
            CF_MITIGATED_WEIGHT,
            format!("cf-mitigated: {}", quote(v.trim())),
            Pass::Fast,
        ));
    }
    if let Some(v) = resp.header_values("server").find(|v| v.to_lowercase().contains("cloudflare")) {
        out.push(Signal::new(
            "waf_header_cloudflare",
            CLOUDFLARE_SERVER_WEIGHT,
            format!("server: {}", quote(v.trim())),
            Pass::Fast,
        ));
    }
    let aws = resp.header_values("x-amzn-waf-action").map(str::trim).find(|v| {
        let v = v.to_ascii_lowercase();
        v == "challenge" || v == "captcha"
    });
    if let Some(v) = aws {
        out.push(Signal::new("waf_header_aws", AWS_WAF_WEIGHT, format!("x-amzn-waf-action: {}", quote(v)), Pass::Fast));
    }
    out
}

/// `self_reload_loop`, source `fast`: the page asked for `count` navigations
/// of its own URL within the window.
pub fn self_reload_signal(count: usize) -> Signal {
    Signal::new(
        "self_reload_loop",
        SELF_RELOAD_WEIGHT,
        format!("{count} reloads of the same URL that no client asked for"),
        Pass::Fast,
    )
}

/// The visible text of a page: `innerText` when collected, else `textContent`.
fn visible_text(page: &PageFacts) -> &str {
    page.inner_text.as_deref().unwrap_or(&page.text)
}

/// Length of `text` with white space collapsed (runs become one space, ends
/// trimmed), in JavaScript string units.
pub fn collapsed_len(text: &str) -> usize {
    let mut len = 0;
    for (i, word) in text.split_whitespace().enumerate() {
        len += usize::from(i > 0) + js_len(word);
    }
    len
}

/// Whether the page is an interstitial (see [`INTERSTITIAL_MAX_CHARS`]).
pub fn is_interstitial(page: &PageFacts) -> bool {
    collapsed_len(visible_text(page)) < INTERSTITIAL_MAX_CHARS
}

/// The first marker of [`VENDOR_MARKERS`] that counts on this page: the page
/// is an interstitial, every needle occurs in its HTML, and an injected
/// marker only on a page with no visible text.
pub fn vendor_marker(page: &PageFacts) -> Option<&'static VendorMarker> {
    let html = page.html.as_deref()?;
    if !is_interstitial(page) {
        return None;
    }
    let html = html.to_lowercase();
    let blank = collapsed_len(visible_text(page)) == 0;
    VENDOR_MARKERS
        .iter()
        .filter(|m| blank || !m.injected)
        .find(|m| m.all_of.iter().all(|needle| html.contains(&needle.to_lowercase())))
}

/// The content signals, source `full`, in the spec's order: title, challenge
/// selectors (`challenge_selector` on an interstitial, `challenge_widget`
/// elsewhere), vendor markers, visible text and text/HTML ratio (both from `text`, the body's
/// `textContent`; `innerText` only enters through a re-score), redirect chain
/// and final `url`, meta refresh.
pub fn content_signals(page: &PageFacts, url: &str, chain: &[RedirectHop], cfg: &DetectionConfig) -> Vec<Signal> {
    let mut out = Vec::new();

    let title = page.title.to_lowercase();
    let title_hit =
        TITLE_KEYWORDS.iter().copied().map(str::to_string).chain(extra_keywords(cfg)).find(|k| title.contains(k));
    if let Some(k) = title_hit {
        out.push(Signal::new("title_keyword", TITLE_WEIGHT, format!("title contains \"{}\"", quote(&k)), Pass::Full));
    }

    let matched: Vec<&str> = page.matched_selectors.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect();
    if !matched.is_empty() {
        let details = format!("matched {}", quote(&matched.join(", ")));
        if is_interstitial(page) {
            out.push(Signal::new("challenge_selector", SELECTOR_WEIGHT, details, Pass::Full));
        } else {
            let details = format!("{details} on a page with content");
            out.push(Signal::new("challenge_widget", WIDGET_WEIGHT, details, Pass::Full));
        }
    }

    if let Some(m) = vendor_marker(page) {
        let details = format!("{}: {}", m.vendor, quote(&m.all_of.join(" + ")));
        out.push(Signal::new("vendor_challenge", VENDOR_WEIGHT, details, Pass::Full));
    }

    out.extend(text_signals(&page.text, cfg));

    let text_len = js_len(trim_js(&page.text));
    if page.html_length >= RATIO_MIN_HTML_LEN && (text_len as f64) / (page.html_length as f64) < LOW_RATIO {
        out.push(Signal::new(
            "low_text_ratio",
            LOW_RATIO_WEIGHT,
            format!("text/HTML {text_len}/{}", page.html_length),
            Pass::Full,
        ));
    }

    let hop = chain.iter().find(|h| is_challenge_url(&h.url));
    let details = match hop {
        Some(h) => Some(format!("redirect through {}", quote(&h.url))),
        None if is_challenge_url(url) => Some(format!("final URL {}", quote(url))),
        None => None,
    };
    if let Some(details) = details {
        out.push(Signal::new("redirect_to_challenge", REDIRECT_WEIGHT, details, Pass::Full));
    }

    if let Some(u) = page.meta_refresh_urls.iter().find(|u| is_challenge_url(u)) {
        out.push(Signal::new(
            "meta_refresh_challenge",
            META_REFRESH_WEIGHT,
            format!("meta refresh to {}", quote(u.trim())),
            Pass::Full,
        ));
    }
    out
}

/// The `visible_text_*` signals of one body text.
pub(super) fn text_signals(text: &str, cfg: &DetectionConfig) -> Vec<Signal> {
    let mut out = Vec::new();
    let len = js_len(trim_js(text));
    let lower = text.to_lowercase();
    if len < SHORT_TEXT_LEN {
        out.push(Signal::new(
            "visible_text_short",
            SHORT_TEXT_WEIGHT,
            format!("visible text is {len} characters"),
            Pass::Full,
        ));
    }
    if len < STRONG_TEXT_MAX_LEN {
        let hit = STRONG_TEXT_KEYWORDS
            .iter()
            .copied()
            .map(str::to_string)
            .chain(extra_keywords(cfg))
            .find(|k| lower.contains(k));
        if let Some(k) = hit {
            out.push(Signal::new(
                "visible_text_keyword_strong",
                STRONG_TEXT_WEIGHT,
                format!("\"{}\" on a short page ({len} characters)", quote(&k)),
                Pass::Full,
            ));
        }
    }
    if let Some(k) = WEAK_TEXT_KEYWORDS.iter().find(|k| contains_words(&lower, k)) {
        out.push(Signal::new("visible_text_keyword_weak", WEAK_TEXT_WEIGHT, format!("whole word \"{k}\""), Pass::Full));
    }
    out
}

/// Puts signals in the stable order: fast ones first, then the spec table's
/// order. Stable, so equal ranks keep their order.
pub(super) fn sort_signals(signals: &mut [Signal]) {
    signals.sort_by_key(|s| rank(&s.name));
}

fn rank(name: &str) -> u8 {
    match name {
        n if n.starts_with("http_status_") => 0,
        "waf_header_cf_mitigated" => 1,
        "waf_header_cloudflare" => 2,
        "waf_header_aws" => 3,
        "self_reload_loop" => 4,
        "title_keyword" => 5,
        "challenge_selector" | "challenge_widget" => 6,
        "vendor_challenge" => 7,
        "visible_text_short" => 8,
        "visible_text_keyword_strong" => 9,
        "visible_text_keyword_weak" => 10,
        "low_text_ratio" => 11,
        "redirect_to_challenge" => 12,
        "meta_refresh_challenge" => 13,
        _ => 14,
    }
}

/// `extraKeywords`, lower-cased; blank ones are skipped (they would match everything).
fn extra_keywords(cfg: &DetectionConfig) -> impl Iterator<Item = String> + '_ {
    cfg.extra_keywords.iter().filter(|k| !k.trim().is_empty()).map(|k| k.to_lowercase())
}

fn is_challenge_url(url: &str) -> bool {
    CHALLENGE_URL_PATTERNS.iter().any(|p| url.contains(p))
}

/// JavaScript's `String.prototype.trim`: white space, line terminators and the BOM.
fn trim_js(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
}

/// JavaScript's `length` (UTF-16 code units), the unit of `html_length`.
fn js_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// Clips page- or network-provided text quoted in `details`.
fn quote(s: &str) -> String {
    match s.char_indices().nth(DETAILS_QUOTE_MAX) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

/// Whether `phrase` (lower-case words) occurs in `hay` (lower-cased) as whole
/// words: a non-alphanumeric character or the string's edge on both sides,
/// and any run of white space between the words.
pub(super) fn contains_words(hay: &str, phrase: &str) -> bool {
    let words: Vec<&str> = phrase.split_whitespace().collect();
    let Some(first) = words.first() else {
        return false;
    };
    let step = first.chars().next().map_or(1, char::len_utf8);
    let mut from = 0;
    while let Some(pos) = hay[from..].find(first) {
        let start = from + pos;
        let at_edge = hay[..start].chars().next_back().is_none_or(|c| !c.is_alphanumeric());
        if at_edge {
            if let Some(end) = match_following(hay, start + first.len(), &words[1..]) {
                if hay[end..].chars().next().is_none_or(|c| !c.is_alphanumeric()) {
                    return true;
                }
            }
        }
        from = start + step;
    }
    false
}

/// Matches `words`, each after at least one white-space character, from byte
/// `at`; the end of the match.
fn match_following(hay: &str, mut at: usize, words: &[&str]) -> Option<usize> {
    for word in words {
        let gap: usize = hay[at..].chars().take_while(|c| c.is_whitespace()).map(char::len_utf8).sum();
        if gap == 0 {
            return None;
        }
        at += gap;
        if !hay[at..].starts_with(word) {
            return None;
        }
        at += word.len();
    }
    Some(at)
}

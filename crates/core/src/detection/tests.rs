use super::signals::contains_words;
use super::*;

/// Neutral prose: no keyword of any list, 61 characters.
const PROSE: &str = "The river runs past the old mill and the garden is in bloom. ";

/// A long benign text (> 500 characters).
fn article() -> String {
    PROSE.repeat(10)
}

/// A normal page: neutral title, HTML five times the text (ratio 0.2, or no ratio under 1000).
fn page_with(text: &str) -> PageFacts {
    PageFacts {
        title: "The Mill".into(),
        text: text.into(),
        html_length: (text.len() * 5).max(300),
        ..PageFacts::default()
    }
}

fn normal_page() -> PageFacts {
    page_with(&article())
}

fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseFacts {
    ResponseFacts { status, headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect() }
}

fn cfg() -> DetectionConfig {
    DetectionConfig::default()
}

const URL: &str = "https://shop.example.com/item/1";

fn full(page: &PageFacts) -> DetectionResult {
    full_pass(URL, None, page, &[], &cfg()).0
}

fn names(r: &DetectionResult) -> Vec<&str> {
    r.signal_names()
}

fn hop(url: &str, status_code: u16) -> RedirectHop {
    RedirectHop { url: url.into(), status_code }
}

// ---------- config ----------

#[test]
fn config_defaults_and_camel_case() {
    let d = DetectionConfig::default();
    assert!(d.enabled);
    assert_eq!(d.challenge_selectors, DEFAULT_CHALLENGE_SELECTORS.to_vec());
    assert_eq!(d.challenge_selectors.len(), 8);
    assert!(d.extra_keywords.is_empty() && d.extra_status_codes.is_empty());
    assert_eq!(d.network_idle_timeout_ms, 3000);
    assert!(!d.auto_unblock && !d.auto_unblock_on_suspected);

    let empty: DetectionConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(empty, d);

    let given: DetectionConfig = serde_json::from_value(serde_json::json!({
        "enabled": false,
        "challengeSelectors": [".wall"],
        "extraKeywords": ["Pardon Our Interruption"],
        "extraStatusCodes": [418],
        "networkIdleTimeoutMs": 500,
        "autoUnblock": true,
        "autoUnblockOnSuspected": true,
        "onDetection": {},
    }))
    .unwrap();
    assert!(!given.enabled);
    assert_eq!(given.challenge_selectors, vec![".wall"], "a given list replaces the defaults");
    assert_eq!(given.extra_keywords, vec!["Pardon Our Interruption"]);
    assert_eq!(given.extra_status_codes, vec![418]);
    assert_eq!(given.network_idle_timeout_ms, 500);
    assert!(given.auto_unblock && given.auto_unblock_on_suspected);
}

// ---------- scoring ----------

#[test]
fn score_and_thresholds() {
    assert_eq!(score(&[]), 0.0);
    assert_eq!(status_for(0.0), BlockStatus::Clear);
    assert_eq!(status_for(0.3999), BlockStatus::Clear);
    assert_eq!(status_for(0.4), BlockStatus::Suspected);
    assert_eq!(status_for(0.6999), BlockStatus::Suspected);
    assert_eq!(status_for(0.7), BlockStatus::Blocked);
    let s = |w: f64| Signal::new("x", w, "", Pass::Full);
    // A lone 0.7 signal is blocked despite float noise in 1 - (1 - 0.7).
    assert_eq!(status_for(score(&[s(0.7)])), BlockStatus::Blocked);
    assert!((score(&[s(0.2), s(0.2), s(0.15)]) - 0.456).abs() < 1e-12);
}

#[test]
fn score_output_is_rounded() {
    // 1 - 0.85 * 0.8 and 1 - 0.4 * 0.9 carry float noise; the output does not.
    let page = PageFacts {
        title: "x".into(),
        text: "You are blocked. ".to_string() + &PROSE.repeat(10),
        html_length: 100_000,
        ..PageFacts::default()
    };
    let r = full(&page);
    assert_eq!(names(&r), ["visible_text_keyword_weak", "low_text_ratio"]);
    assert_eq!(r.score, 0.32);
    let r = fast_pass(URL, &resp(503, &[("server", "cloudflare")]), &[], &cfg());
    assert_eq!(r.score, 0.64);
    assert_eq!(r.block_status, BlockStatus::Suspected);
}

// ---------- one case per signal ----------

#[test]
fn http_status_signals() {
    for code in [403u16, 429] {
        let r = fast_pass(URL, &resp(code, &[]), &[], &cfg());
        assert_eq!(names(&r), [format!("http_status_{code}")]);
        assert_eq!(r.signals[0].weight, 0.85);
        assert_eq!(r.signals[0].details, format!("HTTP {code}"));
        assert_eq!(r.signals[0].source, Pass::Fast);
        assert_eq!(r.block_status, BlockStatus::Blocked);
        assert_eq!(r.score, 0.85);
        assert!(!fast_pass_is_decisive(&r), "0.85 < 0.9: wait for the full pass");
    }
    for code in [200u16, 0, 301, 404, 500] {
        let r = fast_pass(URL, &resp(code, &[]), &[], &cfg());
        assert!(r.signals.is_empty(), "{code}");
        assert_eq!(r.block_status, BlockStatus::Clear);
    }
}

#[test]
fn http_503_alone_is_suspected() {
    let r = fast_pass(URL, &resp(503, &[]), &[], &cfg());
    assert_eq!(names(&r), ["http_status_503"]);
    assert_eq!(r.signals[0].weight, 0.6);
    assert_eq!(r.score, 0.6);
    assert_eq!(r.block_status, BlockStatus::Suspected);
}

#[test]
fn extra_status_codes_append_and_promote_503() {
    let c = DetectionConfig { extra_status_codes: vec![418, 503], ..cfg() };
    let r = fast_pass(URL, &resp(418, &[]), &[], &c);
    assert_eq!(names(&r), ["http_status_418"]);
    assert_eq!(r.signals[0].weight, 0.85);
    let r = fast_pass(URL, &resp(503, &[]), &[], &c);
    assert_eq!(names(&r), ["http_status_503"]);
    assert_eq!(r.signals[0].weight, 0.85);
    assert_eq!(r.block_status, BlockStatus::Blocked);
    // Appended, not replacing: 403 and 429 still count.
    assert_eq!(names(&fast_pass(URL, &resp(403, &[]), &[], &c)), ["http_status_403"]);
    assert_eq!(names(&fast_pass(URL, &resp(429, &[]), &[], &c)), ["http_status_429"]);
    // Without the extra list, 418 is nothing.
    assert!(fast_pass(URL, &resp(418, &[]), &[], &cfg()).signals.is_empty());
}

#[test]
fn cf_mitigated_header_any_case() {
    let r = fast_pass(URL, &resp(200, &[("CF-Mitigated", "Challenge")]), &[], &cfg());
    assert_eq!(names(&r), ["waf_header_cf_mitigated"]);
    assert_eq!(r.signals[0].weight, 0.9);
    assert_eq!(r.signals[0].details, "cf-mitigated: Challenge");
    assert_eq!(r.block_status, BlockStatus::Blocked);
    assert!(fast_pass_is_decisive(&r));
    let r = fast_pass(URL, &resp(200, &[("cf-mitigated", "managed-challenge")]), &[], &cfg());
    assert_eq!(names(&r), ["waf_header_cf_mitigated"]);
    let r = fast_pass(URL, &resp(200, &[("cf-mitigated", "none")]), &[], &cfg());
    assert!(r.signals.is_empty());
}

#[test]
fn cloudflare_server_header_alone_is_clear() {
    let r = fast_pass(URL, &resp(200, &[("Server", "cloudflare")]), &[], &cfg());
    assert_eq!(names(&r), ["waf_header_cloudflare"]);
    assert_eq!(r.signals[0].weight, 0.1);
    assert_eq!(r.signals[0].details, "server: cloudflare");
    assert_eq!(r.block_status, BlockStatus::Clear);
    assert!(fast_pass(URL, &resp(200, &[("server", "nginx")]), &[], &cfg()).signals.is_empty());
}

#[test]
fn status_403_with_cf_challenge_is_decisive() {
    let headers = [("server", "cloudflare"), ("cf-mitigated", "challenge")];
    let r = fast_pass(URL, &resp(403, &headers), &[], &cfg());
    assert_eq!(names(&r), ["http_status_403", "waf_header_cf_mitigated", "waf_header_cloudflare"]);
    assert_eq!(r.pass, Pass::Fast);
    assert_eq!(r.block_status, BlockStatus::Blocked);
    assert!(r.score >= 0.9);
    assert_eq!(r.score, 0.9865);
    assert!(fast_pass_is_decisive(&r));
    let r = fast_pass(URL, &resp(403, &[("cf-mitigated", "challenge")]), &[], &cfg());
    assert_eq!(r.score, 0.985);
}

#[test]
fn title_keywords() {
    for k in TITLE_KEYWORDS {
        let mut page = normal_page();
        page.title = format!("Site | {}", k.to_uppercase());
        let r = full(&page);
        assert_eq!(names(&r), ["title_keyword"], "{k}");
        assert_eq!(r.signals[0].weight, 0.8);
        assert_eq!(r.signals[0].details, format!("title contains \"{k}\""));
        assert_eq!(r.signals[0].source, Pass::Full);
        assert_eq!(r.block_status, BlockStatus::Blocked);
    }
    let mut page = normal_page();
    page.title = "Just a moment...".into();
    assert_eq!(full(&page).signals[0].details, "title contains \"just a moment\"");
}

#[test]
fn challenge_selector_names_the_matches() {
    let mut page = normal_page();
    page.matched_selectors = vec!["#challenge-form".into()];
    let r = full(&page);
    assert_eq!(names(&r), ["challenge_selector"]);
    assert_eq!(r.signals[0].weight, 0.8);
    assert_eq!(r.signals[0].details, "matched #challenge-form");
    assert_eq!(r.block_status, BlockStatus::Blocked);
    page.matched_selectors = vec![".g-recaptcha".into(), "#px-captcha".into()];
    assert_eq!(full(&page).signals[0].details, "matched .g-recaptcha, #px-captcha");
}

#[test]
fn visible_text_short() {
    let page =
        PageFacts { title: "Home".into(), text: "\n   Loading   \n".into(), html_length: 300, ..Default::default() };
    let r = full(&page);
    assert_eq!(names(&r), ["visible_text_short"]);
    assert_eq!(r.signals[0].weight, 0.2);
    assert_eq!(r.signals[0].details, "visible text is 7 characters");
    assert_eq!(r.block_status, BlockStatus::Clear);
    // 49 vs 50 characters (after trimming).
    assert_eq!(names(&full(&page_with(&format!("  {}  ", "a".repeat(49))))), ["visible_text_short"]);
    assert!(full(&page_with(&format!("  {}  ", "a".repeat(50)))).signals.is_empty());
}

#[test]
fn visible_text_keyword_strong() {
    for k in STRONG_TEXT_KEYWORDS {
        let text = format!("{} Please complete the check below to continue to the site.", k.to_uppercase());
        let (r, again) = full_pass(URL, None, &page_with(&text), &[], &cfg());
        assert_eq!(names(&r), ["visible_text_keyword_strong"], "{k}");
        assert_eq!(r.signals[0].weight, 0.6);
        assert_eq!(r.block_status, BlockStatus::Suspected);
        assert!(again, "suspected: re-collect with innerText");
    }
    // At most once, first keyword of the list named.
    let r = full(&page_with("captcha, access denied, verify you are human and bot detection everywhere here"));
    assert_eq!(names(&r), ["visible_text_keyword_strong"]);
    assert!(r.signals[0].details.starts_with("\"captcha\""), "{}", r.signals[0].details);
    // Only on short pages: < 500 characters.
    let long = format!("captcha {}", "x".repeat(491));
    assert_eq!(long.len(), 499);
    assert_eq!(names(&full(&page_with(&long))), ["visible_text_keyword_strong"]);
    let long = format!("captcha {}", "x".repeat(492));
    assert!(full(&page_with(&long)).signals.is_empty());
}

#[test]
fn visible_text_keyword_weak() {
    for k in WEAK_TEXT_KEYWORDS {
        let text = format!("{} {} {}", article(), k.to_uppercase(), article());
        let r = full(&page_with(&text));
        assert_eq!(names(&r), ["visible_text_keyword_weak"], "{k}");
        assert_eq!(r.signals[0].weight, 0.15);
        assert_eq!(r.signals[0].details, format!("whole word \"{k}\""));
        assert_eq!(r.block_status, BlockStatus::Clear);
    }
    // At most once.
    let r = full(&page_with(&format!("{} blocked forbidden cloudflare", article())));
    assert_eq!(names(&r), ["visible_text_keyword_weak"]);
}

#[test]
fn weak_keywords_are_whole_words() {
    for hay in ["unblocked", "forbiddenfruit", "cloudflared", "blocked2", "xblocked", "pleaseverify", "please verifyx"]
    {
        assert!(!WEAK_TEXT_KEYWORDS.iter().any(|k| contains_words(hay, k)), "{hay}");
        let r = full(&page_with(&format!("{} {hay} {}", article(), article())));
        assert!(r.signals.is_empty(), "{hay}: {:?}", names(&r));
    }
    for hay in
        ["blocked", "(blocked)", "you were blocked.", "x-forbidden-y", "please\n\t  verify", "unusual  activity!"]
    {
        assert!(WEAK_TEXT_KEYWORDS.iter().any(|k| contains_words(hay, k)), "{hay}");
    }
    // A rejected first occurrence does not hide a later whole-word one.
    assert!(contains_words("unblocked, then blocked", "blocked"));
    assert!(contains_words("please please verify", "please verify"));
    assert!(!contains_words("please", "please verify"));
    assert!(!contains_words("éblocked", "blocked"), "a non-ASCII letter is alphanumeric");
}

#[test]
fn low_text_ratio() {
    // 121 characters after trim / 5000 = 0.024
    let page = PageFacts { html_length: 5000, ..page_with(&PROSE.repeat(2)) };
    let r = full(&page);
    assert_eq!(names(&r), ["low_text_ratio"]);
    assert_eq!(r.signals[0].weight, 0.2);
    assert_eq!(r.signals[0].details, "text/HTML 121/5000");
    assert_eq!(r.block_status, BlockStatus::Clear);
    // Ratio ≥ 0.03: nothing.
    assert!(full(&PageFacts { html_length: 4000, ..page.clone() }).signals.is_empty());
    // HTML under 1000 characters: no ratio.
    let tiny = PageFacts { html_length: 999, text: "a".repeat(60), ..page.clone() };
    assert!(full(&tiny).signals.is_empty());
    let at_limit = PageFacts { html_length: 1000, text: "a".repeat(29), ..page };
    assert_eq!(names(&full(&at_limit)), ["visible_text_short", "low_text_ratio"]);
}

#[test]
fn redirect_to_challenge() {
    let chain = [
        hop("https://shop.example.com/item/1", 302),
        hop("https://challenges.cloudflare.com/turnstile?x=1", 302),
        hop("https://shop.example.com/back", 301),
    ];
    let (r, _) = full_pass(URL, None, &normal_page(), &chain, &cfg());
    assert_eq!(names(&r), ["redirect_to_challenge"]);
    assert_eq!(r.signals[0].weight, 0.7);
    assert_eq!(r.signals[0].details, "redirect through https://challenges.cloudflare.com/turnstile?x=1");
    assert_eq!(r.block_status, BlockStatus::Blocked);
    assert_eq!(r.redirect_chain, chain.to_vec(), "chronological order kept");

    let final_url = "https://shop.example.com/cdn-cgi/challenge-platform/h/b/orchestrate";
    let (r, _) = full_pass(final_url, None, &normal_page(), &[], &cfg());
    assert_eq!(names(&r), ["redirect_to_challenge"]);
    assert_eq!(r.signals[0].details, format!("final URL {final_url}"));

    let chain = [hop("https://geo.captcha-delivery.com/captcha/?initialCid=1", 302)];
    assert_eq!(names(&full_pass(URL, None, &normal_page(), &chain, &cfg()).0), ["redirect_to_challenge"]);

    let benign = [hop("http://shop.example.com/", 301)];
    assert!(full_pass(URL, None, &normal_page(), &benign, &cfg()).0.signals.is_empty());
}

#[test]
fn meta_refresh_challenge() {
    let mut page = normal_page();
    page.meta_refresh_urls = vec!["/next".into(), "https://geo.captcha-delivery.com/captcha/?x=1".into()];
    let r = full(&page);
    assert_eq!(names(&r), ["meta_refresh_challenge"]);
    assert_eq!(r.signals[0].weight, 0.65);
    assert_eq!(r.signals[0].details, "meta refresh to https://geo.captcha-delivery.com/captcha/?x=1");
    assert_eq!(r.block_status, BlockStatus::Suspected);
    page.meta_refresh_urls = vec!["https://shop.example.com/next".into()];
    assert!(full(&page).signals.is_empty());
}

#[test]
fn all_signals_in_table_order() {
    let page = PageFacts {
        title: "Attention Required! | Cloudflare".into(),
        text: "Verify you are human. Blocked.".into(),
        html_length: 40_000,
        matched_selectors: vec!["#challenge-running".into()],
        meta_refresh_urls: vec!["https://challenges.cloudflare.com/x".into()],
        inner_text: None,
        html: None,
    };
    let chain = [hop("https://challenges.cloudflare.com/a", 302)];
    let headers = [("server", "cloudflare"), ("cf-mitigated", "challenge")];
    let (r, again) = full_pass(URL, Some(&resp(403, &headers)), &page, &chain, &cfg());
    assert!(!again);
    assert_eq!(
        names(&r),
        [
            "http_status_403",
            "waf_header_cf_mitigated",
            "waf_header_cloudflare",
            "title_keyword",
            "challenge_selector",
            "visible_text_short",
            "visible_text_keyword_strong",
            "visible_text_keyword_weak",
            "low_text_ratio",
            "redirect_to_challenge",
            "meta_refresh_challenge",
        ]
    );
    let sources: Vec<Pass> = r.signals.iter().map(|s| s.source).collect();
    assert_eq!(&sources[..3], [Pass::Fast; 3]);
    assert!(sources[3..].iter().all(|s| *s == Pass::Full));
    assert_eq!(r.pass, Pass::Full);
    assert_eq!(r.score, 1.0);
    assert_eq!(r.block_status, BlockStatus::Blocked);
}

// ---------- benign look-alikes ----------

#[test]
fn benign_article_mentioning_blocked_and_cloudflare_stays_clear() {
    let text = format!(
        "{} Last week the road was blocked by a fallen tree, and our host, Cloudflare, kept the site up. {}",
        article(),
        article()
    );
    let page = PageFacts { title: "News from the mill".into(), text, html_length: 5000, ..Default::default() };
    let (r, again) = full_pass(URL, Some(&resp(200, &[])), &page, &[], &cfg());
    assert_eq!(names(&r), ["visible_text_keyword_weak"]);
    assert_eq!(r.score, 0.15);
    assert_eq!(r.block_status, BlockStatus::Clear);
    assert!(!again);
}

// ---------- extraKeywords ----------

#[test]
fn extra_keywords_append_to_title_and_strong_text() {
    let c =
        DetectionConfig { extra_keywords: vec!["Pardon Our Interruption".into(), "  ".into(), String::new()], ..cfg() };
    let mut page = normal_page();
    page.title = "PARDON OUR INTERRUPTION".into();
    let r = full_pass(URL, None, &page, &[], &c).0;
    assert_eq!(names(&r), ["title_keyword"]);
    assert_eq!(r.signals[0].details, "title contains \"pardon our interruption\"");
    // The defaults still apply.
    page.title = "Access Denied".into();
    assert_eq!(names(&full_pass(URL, None, &page, &[], &c).0), ["title_keyword"]);

    let short = page_with("We noticed something. Pardon our interruption while we check your browser.");
    assert_eq!(names(&full_pass(URL, None, &short, &[], &c).0), ["visible_text_keyword_strong"]);
    assert!(full(&short).signals.is_empty(), "not a keyword without the config");
    // Not a weak keyword, and blank keywords match nothing.
    let long = page_with(&format!("{} pardon our interruption {}", article(), article()));
    assert!(full_pass(URL, None, &long, &[], &c).0.signals.is_empty());
}

// ---------- enabled: false ----------

#[test]
fn disabled_is_always_clear() {
    let c = DetectionConfig { enabled: false, auto_unblock: true, ..cfg() };
    let headers = [("cf-mitigated", "challenge")];
    let r = fast_pass(URL, &resp(403, &headers), &[], &c);
    assert_eq!((r.block_status, r.score, r.signals.len()), (BlockStatus::Clear, 0.0, 0));
    let page = PageFacts {
        title: "Just a moment...".into(),
        text: "captcha".into(),
        matched_selectors: vec!["#challenge-form".into()],
        ..Default::default()
    };
    let (r, again) = full_pass(URL, Some(&resp(403, &headers)), &page, &[], &c);
    assert_eq!((r.block_status, r.score, r.signals.len(), again), (BlockStatus::Clear, 0.0, 0, false));
    let r = spa_pass(URL, &page, &c);
    assert_eq!((r.block_status, r.score, r.signals.len()), (BlockStatus::Clear, 0.0, 0));
    let blocked = fast_pass(URL, &resp(403, &[]), &[], &cfg());
    let with_inner = PageFacts { inner_text: Some("captcha".into()), ..page };
    let r = rescore_with_inner_text(&blocked, &with_inner, URL, &[], &c);
    assert_eq!((r.block_status, r.signals.len()), (BlockStatus::Clear, 0));
    assert_eq!(Unblocker::new().decide(&blocked, &c), UnblockDecision::Nothing);
}

// ---------- innerText re-evaluation ----------

/// textContent includes a long inline script that innerText leaves out.
fn page_with_hidden_script() -> PageFacts {
    let script = format!("window.__CONFIG__ = {{\"k\": \"{}\"}};", "v".repeat(1000));
    PageFacts {
        title: "One moment".into(),
        text: format!("Verify you are human{script}"),
        html_length: 60_000,
        ..Default::default()
    }
}

#[test]
fn inner_text_rescore_changes_the_result() {
    let page = page_with_hidden_script();
    // 503 (0.6) + low ratio (1033/60000, 0.2) = 0.68: suspected; the long
    // textContent hides both the short-text and the strong-keyword signals.
    let (first, again) = full_pass(URL, Some(&resp(503, &[])), &page, &[], &cfg());
    assert_eq!(names(&first), ["http_status_503", "low_text_ratio"]);
    assert_eq!(first.block_status, BlockStatus::Suspected);
    assert!(again);
    assert!(needs_inner_text(&first));

    let with_inner = PageFacts { inner_text: Some("Verify you are human".into()), ..page.clone() };
    let r = rescore_with_inner_text(&first, &with_inner, URL, &[], &cfg());
    assert_eq!(
        names(&r),
        ["http_status_503", "visible_text_short", "visible_text_keyword_strong", "low_text_ratio"],
        "visible text signals come back in table order"
    );
    assert_eq!(r.block_status, BlockStatus::Blocked);
    assert_eq!(r.score, 0.8976); // 1 - 0.4 * 0.8 * 0.4 * 0.8
    assert_eq!(r.pass, Pass::Full);

    // Collected up front: full_pass re-evaluates itself.
    let (direct, again) = full_pass(URL, Some(&resp(503, &[])), &with_inner, &[], &cfg());
    assert!(!again);
    assert_eq!(direct, r);

    // Without innerText the first result stands.
    assert_eq!(rescore_with_inner_text(&first, &page, URL, &[], &cfg()), first);
}

#[test]
fn inner_text_rescore_drops_text_signals_of_text_content() {
    // textContent short with a strong keyword (0.2 + 0.6 → 0.68, suspected);
    // innerText is a long, ordinary text: both text signals go away.
    let page =
        PageFacts { title: "Shop".into(), text: "captcha-solver.js".into(), html_length: 500, ..Default::default() };
    let (first, again) = full_pass(URL, None, &page, &[], &cfg());
    assert_eq!(names(&first), ["visible_text_short", "visible_text_keyword_strong"]);
    assert!(again);
    let with_inner = PageFacts { inner_text: Some(article()), ..page };
    let r = rescore_with_inner_text(&first, &with_inner, URL, &[], &cfg());
    assert!(r.signals.is_empty());
    assert_eq!((r.block_status, r.score), (BlockStatus::Clear, 0.0));
}

#[test]
fn no_re_collection_outside_suspected() {
    let (_, again) = full_pass(URL, Some(&resp(403, &[])), &normal_page(), &[], &cfg());
    assert!(!again, "blocked");
    let (_, again) = full_pass(URL, Some(&resp(200, &[])), &normal_page(), &[], &cfg());
    assert!(!again, "clear");
}

// ---------- SPA pass ----------

#[test]
fn spa_pass_uses_content_detectors_only() {
    let mut page = normal_page();
    page.matched_selectors = vec![".h-captcha".into()];
    let r = spa_pass("https://app.example.com/#/checkout", &page, &cfg());
    assert_eq!(names(&r), ["challenge_selector"]);
    assert_eq!(r.pass, Pass::Full);
    assert_eq!(r.hostname, "app.example.com");
    assert!(r.redirect_chain.is_empty());
    assert_eq!(r.block_status, BlockStatus::Blocked);

    let r = spa_pass("https://app.example.com/#/home", &normal_page(), &cfg());
    assert!(r.signals.is_empty());
    assert_eq!(r.block_status, BlockStatus::Clear);

    let r = spa_pass("https://app.example.com/cdn-cgi/challenge-platform/x", &normal_page(), &cfg());
    assert_eq!(names(&r), ["redirect_to_challenge"]);
}

// ---------- result shape ----------

#[test]
fn result_serializes_as_the_spec_object() {
    let chain = [hop("http://Shop.Example.com/item/1", 301), hop("https://shop.example.com/item/1/", 302)];
    let (r, _) = full_pass(URL, Some(&resp(429, &[])), &normal_page(), &chain, &cfg());
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "url": URL,
            "hostname": "shop.example.com",
            "blockStatus": "blocked",
            "score": 0.85,
            "signals": [{ "name": "http_status_429", "weight": 0.85, "details": "HTTP 429", "source": "fast" }],
            "pass": "full",
            "persistentBlock": false,
            "redirectChain": [
                { "url": "http://Shop.Example.com/item/1", "statusCode": 301 },
                { "url": "https://shop.example.com/item/1/", "statusCode": 302 },
            ],
            "unblock": null,
        })
    );
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["url", "hostname", "blockStatus", "score", "signals", "pass", "persistentBlock", "redirectChain", "unblock"]
    );
}

#[test]
fn last_detection_lock_file_form() {
    let mut r = fast_pass(URL, &resp(403, &[("cf-mitigated", "challenge")]), &[], &cfg());
    r.persistent_block = true;
    let v = last_detection_json(&r, 1_700_000_000_123);
    assert_eq!(
        v,
        serde_json::json!({
            "hostname": "shop.example.com",
            "lastUrl": URL,
            "blockStatus": "blocked",
            "score": 0.985,
            "signals": ["http_status_403", "waf_header_cf_mitigated"],
            "pass": "fast",
            "persistentBlock": true,
            "timestamp": 1_700_000_000_123u64,
        })
    );
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["hostname", "lastUrl", "blockStatus", "score", "signals", "pass", "persistentBlock", "timestamp"]
    );
}

#[test]
fn hostnames() {
    assert_eq!(hostname_of("https://Sub.Example.COM:8443/a?b#c"), "sub.example.com");
    assert_eq!(hostname_of("http://user:pw@example.com/"), "example.com");
    assert_eq!(hostname_of("http://[::1]:8080/"), "[::1]");
    assert_eq!(hostname_of("http://127.0.0.1:3000"), "127.0.0.1");
    assert_eq!(hostname_of("about:blank"), "");
    assert_eq!(hostname_of("data:text/html,hi"), "");
    assert_eq!(hostname_of("not a url"), "");
    assert_eq!(hostname_of(""), "");
}

// ---------- auto-unblock ----------

fn unblock_cfg() -> DetectionConfig {
    DetectionConfig { auto_unblock: true, ..cfg() }
}

fn blocked_at(url: &str) -> DetectionResult {
    fast_pass(url, &resp(403, &[]), &[], &cfg())
}

fn suspected_at(url: &str) -> DetectionResult {
    fast_pass(url, &resp(503, &[]), &[], &cfg())
}

#[test]
fn unblocker_retries_once_then_marks_persistent() {
    let c = unblock_cfg();
    let mut u = Unblocker::new();
    let first = "https://shop.example.com/a";
    assert_eq!(
        u.decide(&blocked_at(first), &c),
        UnblockDecision::AddRuleAndReload { hostname: "shop.example.com".into() }
    );
    assert!(u.blocked_hostnames().is_empty());

    let mut again = blocked_at(first);
    assert_eq!(u.decide_and_mark(&mut again, &c), UnblockDecision::PersistentBlock);
    assert!(again.persistent_block);
    assert_eq!(u.blocked_hostnames(), ["shop.example.com"]);
    assert!(u.is_persistently_blocked("shop.example.com"));

    // Any later URL on that host: persistent at once, no reload.
    let mut other = blocked_at("https://shop.example.com/b");
    let d = u.decide(&other, &c);
    assert_eq!(d, UnblockDecision::PersistentBlock);
    d.apply(&mut other);
    assert!(other.persistent_block);

    // Other hosts are unaffected; the list is sorted.
    assert!(matches!(u.decide(&blocked_at("https://b.example.org/"), &c), UnblockDecision::AddRuleAndReload { .. }));
    assert_eq!(u.decide(&blocked_at("https://b.example.org/"), &c), UnblockDecision::PersistentBlock);
    assert_eq!(u.blocked_hostnames(), ["b.example.org", "shop.example.com"]);

    // Clear results never act, and never consult the sets.
    let clear = fast_pass("https://shop.example.com/c", &resp(200, &[]), &[], &cfg());
    let mut clear_mut = clear.clone();
    assert_eq!(u.decide_and_mark(&mut clear_mut, &c), UnblockDecision::Nothing);
    assert!(!clear_mut.persistent_block);

    u.clear();
    assert!(u.blocked_hostnames().is_empty());
    assert_eq!(u.retried_len(), 0);
    assert!(matches!(u.decide(&blocked_at(first), &c), UnblockDecision::AddRuleAndReload { .. }));
}

#[test]
fn unblocker_respects_the_switches() {
    let mut u = Unblocker::new();
    let url = "https://shop.example.com/a";
    // autoUnblock off: nothing, and nothing remembered.
    assert_eq!(u.decide(&blocked_at(url), &cfg()), UnblockDecision::Nothing);
    assert_eq!(u.decide(&blocked_at(url), &cfg()), UnblockDecision::Nothing);
    assert_eq!(u.retried_len(), 0);
    // onSuspected without autoUnblock: still nothing.
    let only_suspected = DetectionConfig { auto_unblock_on_suspected: true, ..cfg() };
    assert_eq!(u.decide(&blocked_at(url), &only_suspected), UnblockDecision::Nothing);
    assert_eq!(u.decide(&suspected_at(url), &only_suspected), UnblockDecision::Nothing);

    // Suspected only with autoUnblockOnSuspected.
    assert_eq!(u.decide(&suspected_at(url), &unblock_cfg()), UnblockDecision::Nothing);
    assert_eq!(u.retried_len(), 0);
    let both = DetectionConfig { auto_unblock: true, auto_unblock_on_suspected: true, ..cfg() };
    assert_eq!(
        u.decide(&suspected_at(url), &both),
        UnblockDecision::AddRuleAndReload { hostname: "shop.example.com".into() }
    );
    assert_eq!(u.decide(&suspected_at(url), &both), UnblockDecision::PersistentBlock);

    // No hostname: nothing to add to the rules.
    assert_eq!(Unblocker::new().decide(&blocked_at("about:blank"), &both), UnblockDecision::Nothing);
}

#[test]
fn unblocker_forgets_retried_urls_at_ten_thousand() {
    let c = unblock_cfg();
    let mut u = Unblocker::new();
    for i in 0..RETRIED_URLS_LIMIT {
        let d = u.decide(&blocked_at(&format!("https://shop.example.com/p/{i}")), &c);
        assert!(matches!(d, UnblockDecision::AddRuleAndReload { .. }));
    }
    assert_eq!(u.retried_len(), 10_000);
    // The next new URL clears the set first.
    let d = u.decide(&blocked_at("https://shop.example.com/new"), &c);
    assert!(matches!(d, UnblockDecision::AddRuleAndReload { .. }));
    assert_eq!(u.retried_len(), 1);
    // So an old URL counts as new again rather than as a second retry.
    let d = u.decide(&blocked_at("https://shop.example.com/p/0"), &c);
    assert!(matches!(d, UnblockDecision::AddRuleAndReload { .. }));
    assert!(u.blocked_hostnames().is_empty());
}

// ---------- the unblock ladder (ours) ----------

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn ladder_cfg(steps: &[&str], geos: &[&str]) -> DetectionConfig {
    DetectionConfig { unblock_steps: strings(steps), unblock_geos: strings(geos), ..unblock_cfg() }
}

fn clear_at(url: &str) -> DetectionResult {
    fast_pass(url, &resp(200, &[]), &[], &cfg())
}

fn rung(step: UnblockStep, geo: Option<&str>) -> Rung {
    Rung { step, geo: geo.map(str::to_string) }
}

#[test]
fn ladder_expands_geo_into_one_rung_per_geo_in_order() {
    let rungs = ladder(&strings(&[" Rule", "geo", "rotate "]), &strings(&["us_ca", " us_ny "]), OPTION_NAMES);
    assert_eq!(
        rungs.unwrap(),
        [
            rung(UnblockStep::Rule, None),
            rung(UnblockStep::Geo, Some("us_ca")),
            rung(UnblockStep::Geo, Some("us_ny")),
            rung(UnblockStep::Rotate, None),
        ]
    );
    assert_eq!(ladder(&strings(&["rotate"]), &[], OPTION_NAMES).unwrap(), [rung(UnblockStep::Rotate, None)]);
    // The default is the documented one-rung auto-unblock.
    let default = DetectionConfig::default();
    assert_eq!(default.unblock_steps, ["rule"]);
    assert!(!runs_ladder(&default));
    assert!(runs_ladder(&ladder_cfg(&["rule", "rotate"], &[])));
    assert!(runs_ladder(&ladder_cfg(&["rotate"], &[])));
}

#[test]
fn ladder_errors_name_the_option_and_the_bad_value() {
    let err = |steps: &[&str], geos: &[&str]| ladder(&strings(steps), &strings(geos), OPTION_NAMES).unwrap_err();
    assert_eq!(err(&[], &[]), "Invalid unblockSteps: it is empty. Use rule, rotate or geo.");
    assert_eq!(err(&["rule", "retry"], &[]), "Invalid unblockSteps: unknown step 'retry'. Use rule, rotate or geo.");
    assert_eq!(err(&["rule", "Rule"], &[]), "Invalid unblockSteps: 'rule' is listed twice.");
    assert_eq!(err(&["geo"], &[]), "Invalid unblockSteps: the 'geo' step needs unblockGeos, the geo codes to try.");
    assert_eq!(err(&["rule"], &["us_ca"]), "Invalid unblockGeos: unblockSteps has no 'geo' step to use them.");
    assert_eq!(err(&["geo"], &["us_ca", "us_ca"]), "Invalid unblockGeos: 'us_ca' is listed twice.");
    assert_eq!(err(&["geo"], &[" "]), "Invalid unblockGeos: a geo code is empty.");
    let flags = ladder(&strings(&["rule", "nope"]), &[], FLAG_NAMES).unwrap_err();
    assert_eq!(flags, "Invalid --unblock-steps: unknown step 'nope'. Use rule, rotate or geo.");
    let available = strings(&["us", "us_ca"]);
    assert_eq!(unknown_geo(&strings(&["us_ca"]), &available, OPTION_NAMES), None);
    assert_eq!(
        unknown_geo(&strings(&["us_ca", "mars"]), &available, FLAG_NAMES).as_deref(),
        Some("Invalid --unblock-geos: 'mars' is not one of the API's geos (GET /geos).")
    );
}

#[test]
fn ladder_takes_each_rung_once_then_marks_the_host_persistent() {
    let c = ladder_cfg(&["rule", "rotate", "geo"], &["us_ca", "us_ny"]);
    let mut u = Unblocker::new();
    let url = "https://shop.example.com/a";
    let mut taken = Vec::new();
    for _ in 0..4 {
        let mut r = blocked_at(url);
        let handled = u.handle("page-1", &mut r, &c, |_| false);
        let UnblockDecision::TakeRung { hostname, rung, attempt } = handled.decision else {
            panic!("{:?}", handled.decision)
        };
        assert_eq!(hostname, "shop.example.com");
        assert!(!r.persistent_block);
        assert_eq!(r.unblock, Some(UnblockNote { step: rung.step, attempt, geo: rung.geo.clone() }));
        taken.push((rung.describe(), attempt));
    }
    assert_eq!(taken, [("rule".into(), 1), ("rotate".into(), 2), ("geo us_ca".into(), 3), ("geo us_ny".into(), 4)]);
    // The rungs ran out: persistent, no reload, and so it stays.
    let mut r = blocked_at(url);
    assert_eq!(u.handle("page-1", &mut r, &c, |_| false).decision, UnblockDecision::PersistentBlock);
    assert!(r.persistent_block);
    assert_eq!(r.unblock, None);
    assert_eq!(u.blocked_hostnames(), ["shop.example.com"]);
    assert_eq!(u.decide(&blocked_at("https://shop.example.com/b"), &c), UnblockDecision::PersistentBlock);
    let log = u.log();
    let outcomes: Vec<UnblockOutcome> = log.iter().map(|e| e.outcome).collect();
    assert_eq!(outcomes, [UnblockOutcome::Blocked; 4]);
    assert_eq!(log[2].geo.as_deref(), Some("us_ca"));
    // clearBlockedHostnames() resets every ladder.
    u.clear();
    let d = u.decide(&blocked_at(url), &c);
    assert!(matches!(d, UnblockDecision::TakeRung { attempt: 1, .. }), "{d:?}");
}

#[test]
fn ladder_skips_rungs_in_effect_and_a_clear_ends_it_as_a_success() {
    let c = ladder_cfg(&["rule", "rotate", "geo"], &["us_ca", "us_ny"]);
    let mut u = Unblocker::new();
    let url = "https://shop.example.com/a";
    // The host goes through the gateway already and us_ca is the geo: rule
    // and geo us_ca are skipped.
    let in_effect = |r: &Rung| r.step == UnblockStep::Rule || r.geo.as_deref() == Some("us_ca");
    let mut r = blocked_at(url);
    let d = u.handle("p", &mut r, &c, in_effect).decision;
    assert_eq!(
        d,
        UnblockDecision::TakeRung {
            hostname: "shop.example.com".into(),
            rung: rung(UnblockStep::Rotate, None),
            attempt: 1
        }
    );
    let mut r = blocked_at(url);
    let d = u.handle("p", &mut r, &c, in_effect).decision;
    assert!(matches!(&d, UnblockDecision::TakeRung { rung, attempt: 2, .. } if rung.geo.as_deref() == Some("us_ny")));
    // The reloaded page is clear: a success, named by its rung.
    let mut clear = clear_at(url);
    let handled = u.handle("p", &mut clear, &c, in_effect);
    assert_eq!(handled.decision, UnblockDecision::Nothing);
    let cleared = handled.cleared.expect("a success");
    assert_eq!(cleared.outcome, UnblockOutcome::Cleared);
    assert_eq!(cleared.geo.as_deref(), Some("us_ny"));
    assert_eq!(cleared_line(&cleared), "auto-unblock: shop.example.com is clear after the geo us_ny rung");
    assert!(handled.log_changed);
    assert_eq!(clear.unblock, None);
    // A later block starts again from the first rung not in effect.
    let now_in_effect = |r: &Rung| r.step == UnblockStep::Rule || r.geo.as_deref() == Some("us_ny");
    let d = u.handle("p", &mut blocked_at(url), &c, now_in_effect).decision;
    assert!(matches!(&d, UnblockDecision::TakeRung { rung, attempt: 1, .. } if rung.step == UnblockStep::Rotate));
    let outcomes: Vec<UnblockOutcome> = u.log().iter().map(|e| e.outcome).collect();
    use UnblockOutcome::{Blocked, Cleared, Pending};
    assert_eq!(outcomes, [Blocked, Cleared, Pending]);
}

#[test]
fn ladder_rungs_of_two_hosts_wait_for_the_other_page_verdict() {
    let c = ladder_cfg(&["rule", "rotate"], &[]);
    let mut u = Unblocker::new();
    let a = blocked_at("https://a.example.com/");
    let b = blocked_at("https://b.example.com/");
    assert!(!u.must_wait("page-b", &b, &c));
    assert!(matches!(u.handle("page-a", &mut a.clone(), &c, |_| false).decision, UnblockDecision::TakeRung { .. }));
    // Page a's reload has no verdict yet: page b waits, page a does not.
    assert!(u.must_wait("page-b", &b, &c));
    assert!(!u.must_wait("page-a", &a, &c));
    assert!(!u.must_wait("page-b", &clear_at("https://b.example.com/"), &c), "a clear result never waits");
    // Page a's verdict (any result of that page) lets page b go on.
    u.handle("page-a", &mut clear_at("https://a.example.com/"), &c, |_| false);
    assert!(!u.must_wait("page-b", &b, &c));
    let d = u.handle("page-b", &mut b.clone(), &c, |_| false).decision;
    assert!(matches!(&d, UnblockDecision::TakeRung { hostname, attempt: 1, .. } if hostname == "b.example.com"));
    // A verdict that never comes can be given up on.
    assert!(u.must_wait("page-a", &a, &c));
    u.stop_waiting();
    assert!(!u.must_wait("page-a", &a, &c));
    // The documented one-rung auto-unblock never waits.
    let mut legacy = Unblocker::new();
    legacy.decide(&a, &unblock_cfg());
    assert!(!legacy.must_wait("page-b", &b, &unblock_cfg()));
}

#[test]
fn unblock_log_keeps_the_last_twenty_actions_with_their_outcomes() {
    let c = unblock_cfg();
    let mut u = Unblocker::new();
    for i in 0..25 {
        let mut r = blocked_at(&format!("https://h{i}.example.com/"));
        let d = u.handle("p", &mut r, &c, |_| false).decision;
        assert_eq!(d, UnblockDecision::AddRuleAndReload { hostname: format!("h{i}.example.com") });
        assert_eq!(r.unblock, Some(UnblockNote { step: UnblockStep::Rule, attempt: 1, geo: None }));
    }
    let mut clear = clear_at("https://h24.example.com/");
    assert!(u.handle("p", &mut clear, &c, |_| false).cleared.is_some());
    let log = u.log();
    assert_eq!(log.len(), UNBLOCK_LOG_LIMIT);
    assert_eq!(log[0].hostname, "h5.example.com");
    assert_eq!(log[19].outcome, UnblockOutcome::Cleared);
    assert_eq!(log[18].outcome, UnblockOutcome::Pending);
    let v = serde_json::to_value(&log[19]).unwrap();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["at", "hostname", "step", "outcome"]);
    assert_eq!(v["step"], "rule");
    assert_eq!(v["outcome"], "cleared");
}

// ---------- the page evaluation ----------

#[test]
fn collect_script_embeds_configured_selectors_as_json() {
    let c = DetectionConfig { challenge_selectors: vec![".wall".into(), "a[title=\"x\"]".into()], ..cfg() };
    let s = collect_script(&c, false);
    assert!(s.contains(r#"[".wall","a[title=\"x\"]"]"#), "{s}");
    assert!(!s.contains("#challenge-form"), "a given list replaces the defaults");
    assert!(!s.contains("innerText ="));
    assert!(collect_script(&c, true).contains("innerText ="));
    assert!(collect_script(&cfg(), false).contains(r#""iframe[src*=\"recaptcha\"]""#));
    let odd = DetectionConfig { challenge_selectors: vec!["a\u{2028}".into()], ..cfg() };
    assert!(collect_script(&odd, false).contains(r#"["a\u2028"]"#));
}

#[test]
fn page_facts_from_evaluation_json() {
    let p: PageFacts = serde_json::from_value(serde_json::json!({
        "title": "T", "text": "x", "htmlLength": 12, "matchedSelectors": ["#a"],
        "metaRefreshUrls": ["/n"], "innerText": null,
    }))
    .unwrap();
    assert_eq!(p.inner_text, None);
    assert_eq!((p.html_length, p.matched_selectors.len()), (12, 1));
    let p: PageFacts = serde_json::from_value(serde_json::json!({ "title": "T", "innerText": "i" })).unwrap();
    assert_eq!(p.inner_text.as_deref(), Some("i"));
    assert_eq!(p.text, "");
}

/// Runs `collect_script` under node against a fake `document`; None when
/// node is not installed.
fn run_in_node(document_js: &str, script: &str) -> Option<serde_json::Value> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child =
        match Command::new("node").arg("-").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()
        {
            Ok(child) => child,
            Err(e) => {
                eprintln!("node not available ({e}); skipping");
                return None;
            }
        };
    let program = format!("{document_js}\nconst __r = {script};\nprocess.stdout.write(JSON.stringify(__r));\n");
    child.stdin.take().unwrap().write_all(program.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "node failed: {}\n{program}", String::from_utf8_lossy(&out.stderr));
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn collect_script_runs_in_a_fake_document() {
    let weird = "div[data-x=\"a'b\\c\"]</script>";
    let selectors = vec![
        "#challenge-form".to_string(),
        "bad[[".to_string(),
        weird.to_string(),
        "\u{2028}odd".to_string(),
        "   ".to_string(),
        ".absent".to_string(),
    ];
    let present = serde_json::to_string(&["#challenge-form", weird, "\u{2028}odd", "   "]).unwrap();
    let document_js = format!(
        r#"
const present = new Set({present});
function meta(h, c) {{ return {{ getAttribute(n) {{ return n === "http-equiv" ? h : n === "content" ? c : null; }} }}; }}
const document = {{
  title: "Just a moment...",
  body: {{ textContent: "  Checking your browser  ", innerText: "Checking" }},
  documentElement: {{ outerHTML: "x".repeat(1234) }},
  querySelector(s) {{
    if (s.trim() === "" || s === "bad[[") throw new SyntaxError("'" + s + "' is not a valid selector");
    return present.has(s) ? {{}} : null;
  }},
  querySelectorAll(s) {{
    if (s !== "meta[http-equiv]") throw new Error("unexpected " + s);
    return [
      meta("Refresh", "0; URL='https://challenges.cloudflare.com/x?url=1'"),
      meta("content-type", "text/html"),
      meta("refresh", "5"),
      meta(" REFRESH ", "3;url=/next"),
    ];
  }},
}};
"#
    );
    let c = DetectionConfig { challenge_selectors: selectors, ..cfg() };
    let Some(v) = run_in_node(&document_js, &collect_script(&c, false)) else {
        return;
    };
    assert_eq!(
        v,
        serde_json::json!({
            "title": "Just a moment...",
            "text": "  Checking your browser  ",
            "htmlLength": 1234,
            "matchedSelectors": ["#challenge-form", weird, "\u{2028}odd"],
            "metaRefreshUrls": ["https://challenges.cloudflare.com/x?url=1", "/next"],
            "innerText": null,
            "html": null,
        })
    );
    let page: PageFacts = serde_json::from_value(v).unwrap();
    let (r, _) = full_pass(URL, None, &page, &[], &c);
    assert_eq!(
        names(&r),
        ["title_keyword", "challenge_selector", "visible_text_short", "low_text_ratio", "meta_refresh_challenge"]
    );
    assert_eq!(r.block_status, BlockStatus::Blocked);

    let v = run_in_node(&document_js, &collect_script(&c, true)).unwrap();
    assert_eq!(v["innerText"], "Checking");
    assert_eq!(v["html"], "x".repeat(1234), "an interstitial hands its HTML over");

    // Not an interstitial: no HTML.
    let long = document_js.replace(r#"innerText: "Checking""#, r#"innerText: "word ".repeat(400)"#);
    let v = run_in_node(&long, &collect_script(&c, true)).unwrap();
    assert_eq!(v["html"], serde_json::Value::Null);
    // White space is collapsed before counting: 1499 characters of words and single spaces.
    let spaced = document_js.replace(r#"innerText: "Checking""#, r#"innerText: "ab \n\t  ".repeat(500).slice(0, -1)"#);
    let v = run_in_node(&spaced, &collect_script(&c, true)).unwrap();
    assert_eq!(v["html"], "x".repeat(1234));
}

#[test]
fn collect_script_never_throws() {
    let bare = r#"
const document = {
  title: undefined,
  body: null,
  documentElement: null,
  querySelector() { return null; },
  querySelectorAll() { return []; },
};
"#;
    let Some(v) = run_in_node(bare, &collect_script(&cfg(), true)) else {
        return;
    };
    assert_eq!(
        v,
        serde_json::json!({
            "title": "", "text": "", "htmlLength": 0, "matchedSelectors": [], "metaRefreshUrls": [], "innerText": "",
            "html": null,
        })
    );
    let page: PageFacts = serde_json::from_value(v).unwrap();
    assert_eq!(page.inner_text.as_deref(), Some(""));

    // Every property read throws.
    let hostile = r#"const document = new Proxy({}, { get() { throw new Error("hostile"); } });"#;
    let v = run_in_node(hostile, &collect_script(&cfg(), true)).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "title": "", "text": "", "htmlLength": 0, "matchedSelectors": [], "metaRefreshUrls": [], "innerText": null,
            "html": null,
        })
    );
}

// ---------- interstitials, widgets and vendor markers ----------

/// A page whose visible text is `inner` and whose HTML is `html`.
fn shown(inner: &str, html: &str) -> PageFacts {
    PageFacts {
        title: "The Mill".into(),
        text: inner.into(),
        html_length: html.len().max(inner.len() * 5),
        inner_text: Some(inner.into()),
        html: Some(html.into()),
        ..PageFacts::default()
    }
}

#[test]
fn interstitial_is_visible_text_under_1500_collapsed() {
    assert_eq!(INTERSTITIAL_MAX_CHARS, 1500);
    assert_eq!(collapsed_len("  a \n\t b  "), 3);
    assert_eq!(collapsed_len(""), 0);
    assert_eq!(collapsed_len("é€😀"), 4, "JavaScript string units");
    let words = |n: usize| "ab ".repeat(n); // 3n characters before trimming
    assert!(is_interstitial(&shown(&words(500), ""))); // 1499
    assert!(!is_interstitial(&shown(&format!("{}abb", words(499)), ""))); // 1500
                                                                          // Runs of white space count as one.
    assert!(is_interstitial(&shown(&"ab \n\n\t ".repeat(500), "")));
    // innerText decides when collected, textContent otherwise.
    let hidden = PageFacts { text: "x".repeat(5000), inner_text: Some("Checking".into()), ..PageFacts::default() };
    assert!(is_interstitial(&hidden));
    let legacy = PageFacts { text: "x ".repeat(1000), ..PageFacts::default() };
    assert!(!is_interstitial(&legacy));
}

#[test]
fn challenge_selector_on_a_content_page_is_a_widget() {
    let long = PROSE.repeat(30); // 1830 characters
    let mut page = page_with(&long);
    page.inner_text = Some(long.clone());
    page.matched_selectors = vec![".g-recaptcha".into()];
    let r = full(&page);
    assert_eq!(names(&r), ["challenge_widget"]);
    assert_eq!(r.signals[0].weight, 0.15);
    assert_eq!(r.signals[0].details, "matched .g-recaptcha on a page with content");
    assert_eq!(r.block_status, BlockStatus::Clear);

    // The same widget alone on an interstitial is the challenge.
    let mut short = shown("Please complete the security check to access the site.", "");
    short.matched_selectors = vec![".g-recaptcha".into()];
    let r = full(&short);
    assert!(names(&r).contains(&"challenge_selector"), "{:?}", names(&r));
    assert_eq!(r.block_status, BlockStatus::Blocked);
}

#[test]
fn every_vendor_marker_fires_on_an_interstitial_and_names_the_vendor() {
    for m in VENDOR_MARKERS {
        let html = format!("<html><body><div>{}</div></body></html>", m.all_of.join(" | "));
        // Own markers with a little text, injected ones on a blank page.
        let text = if m.injected { "" } else { "One moment, please." };
        let r = full(&shown(text, &html));
        let v = r.signals.iter().find(|s| s.name == "vendor_challenge").unwrap_or_else(|| panic!("{m:?}"));
        assert_eq!(v.weight, 0.85);
        assert!(v.details.starts_with(&format!("{}: ", m.vendor)), "{}", v.details);
        assert_ne!(r.block_status, BlockStatus::Clear, "{m:?}");
        // Case does not matter.
        let r = full(&shown(text, &html.to_uppercase()));
        assert!(names(&r).contains(&"vendor_challenge"), "{m:?}");
        // Every needle is needed.
        if m.all_of.len() > 1 {
            let partial = format!("<html><body>{}</body></html>", m.all_of[0]);
            let r = full(&shown(text, &partial));
            assert!(!names(&r).contains(&"vendor_challenge"), "{m:?}");
        }
    }
    let vendors: std::collections::BTreeSet<&str> = VENDOR_MARKERS.iter().map(|m| m.vendor).collect();
    for v in
        ["Imperva/Incapsula", "Sucuri", "AWS WAF", "DataDome", "PerimeterX/HUMAN", "Kasada", "Akamai", "Cloudflare"]
    {
        assert!(vendors.contains(v), "{v}");
    }
}

#[test]
fn injected_vendor_scripts_count_only_without_visible_content() {
    let injected_html = [
        r#"<script src="/_Incapsula_Resource?SWJIYLWA=719d34d31c8e3a6e6fffd425f7e032f3"></script>"#,
        r#"<script>a.src='/cdn-cgi/challenge-platform/scripts/jsd/main.js';</script>"#,
        r#"<script>KPSDK.configure([{ domain: 'api.example.com', path: '/cart' }]);</script>"#,
        r#"<script>window.awsWafCookieDomainList = ['.example.com'];</script>"#,
        r#"<script>AwsWafIntegration.fetch('/api/cart');</script>"#,
    ];
    for script in injected_html {
        let html = format!("<html><head>{script}</head><body><h1>404 Not Found</h1></body></html>");
        let r = full(&shown("404 Not Found", &html));
        assert!(!names(&r).contains(&"vendor_challenge"), "{script}");
        assert_eq!(r.block_status, BlockStatus::Clear, "{script}: a short 404 stays clear");
        let blank = format!("<html><head>{script}</head><body></body></html>");
        let r = full(&shown(" \n ", &blank));
        assert!(names(&r).contains(&"vendor_challenge"), "{script}: the empty interstitial");
        assert_eq!(r.block_status, BlockStatus::Blocked, "{script}");
    }
}

#[test]
fn vendor_markers_need_an_interstitial_and_its_html() {
    let long = PROSE.repeat(30);
    let html = "<p>Request unsuccessful. Incapsula incident ID: 1-2</p>";
    let r = full(&shown(&long, html));
    assert!(!names(&r).contains(&"vendor_challenge"), "a content page quoting a marker");
    let without_html = PageFacts { html: None, ..shown("", html) };
    assert!(!names(&full(&without_html)).contains(&"vendor_challenge"));
    assert_eq!(vendor_marker(&shown("", html)).map(|m| m.vendor), Some("Imperva/Incapsula"));
}

#[test]
fn aws_waf_action_header() {
    for (status, value) in [(202, "challenge"), (405, "captcha"), (200, " Challenge ")] {
        let r = fast_pass(URL, &resp(status, &[("X-Amzn-Waf-Action", value)]), &[], &cfg());
        assert_eq!(names(&r), ["waf_header_aws"], "{status} {value}");
        assert_eq!(r.signals[0].weight, 0.9);
        assert_eq!(r.signals[0].source, Pass::Fast);
        assert_eq!(r.signals[0].details, format!("x-amzn-waf-action: {}", value.trim()));
        assert!(fast_pass_is_decisive(&r));
        assert_eq!(r.block_status, BlockStatus::Blocked);
    }
    for value in ["block", "allow", "challenged", ""] {
        let r = fast_pass(URL, &resp(202, &[("x-amzn-waf-action", value)]), &[], &cfg());
        assert!(r.signals.is_empty(), "{value}");
    }
}

#[test]
fn reload_loop_counts_self_requested_navigations_of_one_url() {
    assert_eq!((SELF_RELOAD_MIN_COUNT, SELF_RELOAD_WINDOW_MS), (3, 10_000));
    let u = "https://shop.example.com/";
    let mut l = ReloadLoop::default();
    assert_eq!(l.record(u, 0, false), None, "the client's own navigation");
    assert_eq!(l.record(u, 100, true), None);
    assert_eq!(l.record(&format!("{u}#x"), 200, true), None, "the fragment does not matter");
    assert_eq!(l.record(u, 300, true), Some(3));
    assert_eq!(l.record(u, 400, true), Some(4));
    // Older than the window drops out.
    assert_eq!(l.record(u, 10_250, true), Some(3));
    assert_eq!(l.record(u, 30_000, true), None);

    // A client navigation, or another URL, starts over.
    let mut l = ReloadLoop::default();
    l.record(u, 0, true);
    l.record(u, 1, true);
    assert_eq!(l.record(u, 2, false), None);
    assert_eq!(l.record(u, 3, true), None);
    assert_eq!(l.record("https://shop.example.com/other", 4, true), None);
    assert_eq!(l.record(u, 5, true), None);
    assert_eq!(l.record(u, 6, true), None);
    assert_eq!(l.record(u, 7, true), Some(3));

    // Slower than three in ten seconds is no loop.
    let mut l = ReloadLoop::default();
    assert!((0..10u64).all(|i| l.record(u, i * 6_000, true).is_none()));
}

#[test]
fn self_reload_loop_joins_a_result_in_table_order() {
    let first = fast_pass(URL, &resp(200, &[("server", "Sucuri/Cloudproxy")]), &[], &cfg());
    assert!(first.signals.is_empty());
    let r = first.with_signal(self_reload_signal(3));
    assert_eq!(names(&r), ["self_reload_loop"]);
    assert_eq!(r.signals[0].weight, 0.5);
    assert_eq!(r.signals[0].source, Pass::Fast);
    assert_eq!(r.signals[0].details, "3 reloads of the same URL that no client asked for");
    assert_eq!((r.block_status, r.score, r.pass), (BlockStatus::Suspected, 0.5, Pass::Fast));
    let (full_result, _) = full_pass(URL, Some(&resp(503, &[])), &normal_page(), &[], &cfg());
    let r = full_result.with_signal(self_reload_signal(4));
    assert_eq!(names(&r), ["http_status_503", "self_reload_loop"]);
    assert_eq!(r.block_status, BlockStatus::Blocked); // 1 - 0.4 * 0.5
}

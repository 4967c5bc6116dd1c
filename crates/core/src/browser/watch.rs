//! Block detection on every page target: pages we open, pages a script opens
//! through Playwright, and pages another process opens over CDP.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Notify};

use super::cdp::{Attached, Cdp, Event};
use super::{DetectionEvent, DetectionSink, UnblockAction};
use crate::detection::{
    self, DetectionConfig, DetectionResult, PageFacts, RedirectHop, ReloadLoop, ResponseFacts, Rung, UnblockDecision,
    UnblockStep, Unblocker,
};
use crate::log::Logger;

const SPA_MIN_INTERVAL: Duration = Duration::from_millis(detection::SPA_PASS_MIN_INTERVAL_MS);

/// Shared by every page of one browser: the config, auto-unblock state and
/// where results go.
pub struct Detector {
    cfg: DetectionConfig,
    unblock: UnblockAction,
    sink: Option<DetectionSink>,
    logger: Arc<Logger>,
    unblocker: Mutex<Unblocker>,
    /// Serializes auto-unblock actions across pages.
    acting: tokio::sync::Mutex<()>,
    /// Woken whenever a result has been handled (a verdict may have come).
    handled: Notify,
}

/// How long a ladder's result waits for another page's verdict (beyond the
/// network-idle cap of that page's full pass) before it goes ahead anyway.
const VERDICT_WAIT: Duration = Duration::from_secs(15);

impl Detector {
    pub fn new(cfg: DetectionConfig, unblock: UnblockAction, sink: Option<DetectionSink>, logger: Arc<Logger>) -> Self {
        Detector {
            cfg,
            unblock,
            sink,
            logger,
            unblocker: Mutex::new(Unblocker::default()),
            acting: tokio::sync::Mutex::new(()),
            handled: Notify::new(),
        }
    }

    pub fn blocked_hostnames(&self) -> Vec<String> {
        self.unblocker.lock().map(|u| u.blocked_hostnames()).unwrap_or_default()
    }

    pub fn clear_blocked_hostnames(&self) {
        if let Ok(mut u) = self.unblocker.lock() {
            u.clear();
        }
        self.handled.notify_waiters();
    }

    /// Takes the turn to handle `result`: with a ladder, a result that would
    /// act waits while a rung taken on another page has no verdict yet (up to
    /// the page's network-idle cap and [`VERDICT_WAIT`]).
    async fn turn(&self, result: &DetectionResult, page: &PageRef) -> tokio::sync::MutexGuard<'_, ()> {
        let deadline = Instant::now() + VERDICT_WAIT + Duration::from_millis(self.cfg.network_idle_timeout_ms);
        loop {
            let handled = self.handled.notified();
            let turn = self.acting.lock().await;
            let waits = self.unblocker.lock().is_ok_and(|u| u.must_wait(&page.target_id, result, &self.cfg));
            if !waits {
                return turn;
            }
            if Instant::now() >= deadline {
                if let Ok(mut u) = self.unblocker.lock() {
                    u.stop_waiting();
                }
                return turn;
            }
            drop(turn);
            let _ = tokio::time::timeout_at(deadline.into(), handled).await;
        }
    }

    /// Deliver one result: decide on auto-unblock, tell the sink, then act.
    async fn emit(&self, mut result: DetectionResult, page: &PageRef) {
        let _turn = self.turn(&result, page).await;
        let config = self.unblock.config.load_full();
        let handled = match self.unblocker.lock() {
            Ok(mut u) => {
                let host = result.hostname.clone();
                let in_effect = |rung: &Rung| detection::rung_in_effect(rung, &host, config.as_deref());
                let handled = u.handle(&page.target_id, &mut result, &self.cfg, in_effect);
                let log = handled.log_changed.then(|| u.log());
                Some((handled, log))
            }
            Err(_) => None,
        };
        self.handled.notify_waiters();
        let (handled, unblock_log) = match handled {
            Some((h, log)) => (h, log),
            None => return,
        };
        if let Ok(line) = serde_json::to_string(&result) {
            self.logger.debug_line(line);
        }
        if let Some(entry) = &handled.cleared {
            self.logger.info(detection::cleared_line(entry));
        }
        if let Some(sink) = &self.sink {
            sink(DetectionEvent { target_id: page.target_id.clone(), result: result.clone(), unblock_log });
        }
        let (hostname, rung) = match handled.decision {
            UnblockDecision::AddRuleAndReload { hostname } => (hostname, Rung { step: UnblockStep::Rule, geo: None }),
            UnblockDecision::TakeRung { hostname, rung, .. } => (hostname, rung),
            _ => return,
        };
        (self.unblock.apply)(rung.clone(), hostname.clone()).await;
        if let Err(e) = page.call("Page.reload", json!({})).await {
            self.logger.warn(format!("auto-unblock: could not reload the page on {hostname}: {e}"));
            // No verdict will come: other pages need not wait for one.
            if let Ok(mut u) = self.unblocker.lock() {
                u.stop_waiting();
            }
            self.handled.notify_waiters();
        } else if rung.step == UnblockStep::Rule {
            self.logger.info(format!("auto-unblock: {hostname} now goes through the gateway; page reloaded"));
        } else {
            self.logger.info(format!("auto-unblock: {} rung for {hostname}; page reloaded", rung.describe()));
        }
    }
}

/// A page target as our CDP session sees it.
#[derive(Clone)]
pub(super) struct PageRef {
    cdp: Cdp,
    session: String,
    target_id: String,
}

impl PageRef {
    async fn call(&self, method: &str, params: Value) -> Result<Value, String> {
        self.cdp.call(method, Some(&self.session), params).await
    }

    /// Evaluate an expression in the main frame, returning its value.
    async fn evaluate<T: serde::de::DeserializeOwned>(&self, expression: &str) -> Option<T> {
        let out =
            self.call("Runtime.evaluate", json!({ "expression": expression, "returnByValue": true })).await.ok()?;
        if out.get("exceptionDetails").is_some() {
            return None;
        }
        serde_json::from_value(out.get("result")?.get("value")?.clone()).ok()
    }

    async fn collect(&self, cfg: &DetectionConfig, with_inner_text: bool) -> Option<PageFacts> {
        self.evaluate(&detection::collect_script(cfg, with_inner_text)).await
    }
}

/// Called by the CDP I/O task for every page attached: subscribe first (the
/// receiver is already ours), then enable what we need and let the page run.
pub(super) fn on_attach(cdp: Cdp, detector: Arc<Detector>, attached: Attached, events: mpsc::UnboundedReceiver<Event>) {
    let page = PageRef { cdp, session: attached.session_id.clone(), target_id: attached.target_id.clone() };
    tokio::spawn(async move {
        for (method, params) in [
            ("Page.enable", json!({})),
            ("Network.enable", json!({})),
            ("Page.setLifecycleEventsEnabled", json!({ "enabled": true })),
        ] {
            if let Err(e) = page.call(method, params).await {
                detector.logger.debug(format!("page {}: {method} failed: {e}", page.target_id));
            }
        }
        if attached.waiting {
            let _ = page.call("Runtime.runIfWaitingForDebugger", json!({})).await;
        }
        detector.logger.debug(format!("watching page {}", page.target_id));
        watch_page(page, detector, events, !attached.waiting).await;
    });
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn status_of(v: &Value) -> u16 {
    v.get("status").and_then(Value::as_f64).map(|s| s as u16).unwrap_or(0)
}

fn response_facts(resp: &Value) -> ResponseFacts {
    let headers = resp
        .get("headers")
        .and_then(Value::as_object)
        .map(|h| {
            h.iter()
                .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    ResponseFacts { status: status_of(resp), headers }
}

/// What one page navigation has seen so far.
#[derive(Default)]
struct Navigation {
    url: String,
    response: Option<ResponseFacts>,
    chain: Vec<RedirectHop>,
    loader: String,
    fast_done: bool,
    skip_full: bool,
    /// Set by whichever result of this navigation is delivered first.
    reported: Arc<AtomicBool>,
    /// `Some(n)`: the page asked for this URL n times in a row (`self_reload_loop`).
    reload_loop: Option<usize>,
}

impl Navigation {
    /// The fast-pass result of this navigation, `self_reload_loop` included.
    fn fast_result(&self, cfg: &DetectionConfig) -> Option<DetectionResult> {
        let result = detection::fast_pass(&self.url, self.response.as_ref()?, &self.chain, cfg);
        Some(with_reload_loop(result, self.reload_loop, cfg))
    }
}

fn with_reload_loop(result: DetectionResult, reload_loop: Option<usize>, cfg: &DetectionConfig) -> DetectionResult {
    match reload_loop {
        Some(n) if cfg.enabled => result.with_signal(detection::self_reload_signal(n)),
        _ => result,
    }
}

/// The URL without its fragment.
fn document_url(url: &str) -> &str {
    url.split('#').next().unwrap_or_default()
}

async fn watch_page(
    page: PageRef,
    detector: Arc<Detector>,
    mut events: mpsc::UnboundedReceiver<Event>,
    maybe_loaded: bool,
) {
    let page = Arc::new(page);
    let main_frame = page.target_id.clone();
    let generation = Arc::new(AtomicU64::new(0));
    let (idle_tx, idle_rx) = watch::channel(String::new());
    let mut nav = Navigation::default();
    let mut pending_chain: Vec<RedirectHop> = Vec::new();
    let mut last_spa: Option<Instant> = None;
    // The last main-frame navigation the page asked for itself (script, meta
    // refresh), and whether the document request in flight is that one.
    let mut requested_by_page: Option<String> = None;
    let mut pending_by_page = false;
    let mut reloads = ReloadLoop::default();
    let started = Instant::now();
    let full_pass = |nav: &Navigation| FullPass {
        page: Arc::clone(&page),
        detector: Arc::clone(&detector),
        generation: Arc::clone(&generation),
        expected: generation.load(Ordering::SeqCst),
        url: nav.url.clone(),
        response: nav.response.clone(),
        chain: nav.chain.clone(),
        loader: nav.loader.clone(),
        idle: idle_rx.clone(),
        reported: Arc::clone(&nav.reported),
        reload_loop: nav.reload_loop,
    };
    // A page that existed before we attached may be loaded already.
    if maybe_loaded
        && page.evaluate::<bool>("document.readyState === 'complete' && location.href !== 'about:blank'").await
            == Some(true)
    {
        nav.skip_full = true;
        tokio::spawn(full_pass(&nav).run());
    }
    while let Some((method, p)) = events.recv().await {
        let main_document = || str_of(&p, "type") == "Document" && str_of(&p, "frameId") == main_frame;
        match method.as_str() {
            "Page.frameRequestedNavigation" if str_of(&p, "frameId") == main_frame => {
                requested_by_page = Some(document_url(str_of(&p, "url")).to_string());
            }
            "Network.requestWillBeSent" if main_document() => match p.get("redirectResponse") {
                Some(r) => {
                    pending_chain.push(RedirectHop { url: str_of(r, "url").to_string(), status_code: status_of(r) })
                }
                None => {
                    pending_chain.clear();
                    let url = p.get("request").map(|r| document_url(str_of(r, "url"))).unwrap_or_default();
                    pending_by_page = requested_by_page.take().is_some_and(|u| u == url);
                }
            },
            "Network.responseReceived" if main_document() => {
                generation.fetch_add(1, Ordering::SeqCst);
                // A navigation that ends before its full pass (a page that
                // reloads itself) still reports its fast pass.
                if !nav.reported.swap(true, Ordering::SeqCst) {
                    if let Some(result) = nav.fast_result(&detector.cfg) {
                        detector.emit(result, &page).await;
                    }
                }
                let resp = p.get("response").cloned().unwrap_or(Value::Null);
                let url = str_of(&resp, "url").to_string();
                let now_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                let reload_loop = reloads.record(&url, now_ms, std::mem::take(&mut pending_by_page));
                nav = Navigation {
                    url,
                    response: Some(response_facts(&resp)),
                    chain: std::mem::take(&mut pending_chain),
                    loader: str_of(&p, "loaderId").to_string(),
                    reload_loop,
                    ..Navigation::default()
                };
            }
            "Page.domContentEventFired" if !nav.fast_done => {
                if let Some(result) = nav.fast_result(&detector.cfg) {
                    nav.fast_done = true;
                    if detection::fast_pass_is_decisive(&result) {
                        nav.skip_full = true;
                        if !nav.reported.swap(true, Ordering::SeqCst) {
                            detector.emit(result, &page).await;
                        }
                    }
                }
            }
            "Page.loadEventFired" if !nav.skip_full => {
                nav.skip_full = true;
                tokio::spawn(full_pass(&nav).run());
            }
            "Page.lifecycleEvent" if str_of(&p, "frameId") == main_frame && str_of(&p, "name") == "networkIdle" => {
                let _ = idle_tx.send(str_of(&p, "loaderId").to_string());
            }
            "Page.navigatedWithinDocument" => {
                if str_of(&p, "frameId") != main_frame {
                    continue;
                }
                let now = Instant::now();
                if last_spa.is_some_and(|t| now.duration_since(t) < SPA_MIN_INTERVAL) {
                    continue;
                }
                last_spa = Some(now);
                let page = Arc::clone(&page);
                let detector = Arc::clone(&detector);
                let url = str_of(&p, "url").to_string();
                tokio::spawn(async move {
                    // Let the view render before reading it.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if let Some(facts) = page.collect(&detector.cfg, true).await {
                        let cfg = &detector.cfg;
                        let first = detection::spa_pass(&url, &facts, cfg);
                        let result = if detection::needs_inner_text(&first) {
                            detection::rescore_with_inner_text(&first, &facts, &url, &[], cfg)
                        } else {
                            first
                        };
                        detector.emit(result, &page).await;
                    }
                });
            }
            _ => {}
        }
    }
}

struct FullPass {
    page: Arc<PageRef>,
    detector: Arc<Detector>,
    generation: Arc<AtomicU64>,
    expected: u64,
    url: String,
    response: Option<ResponseFacts>,
    chain: Vec<RedirectHop>,
    loader: String,
    idle: watch::Receiver<String>,
    reported: Arc<AtomicBool>,
    reload_loop: Option<usize>,
}

impl FullPass {
    fn current(&self) -> bool {
        self.generation.load(Ordering::SeqCst) == self.expected
    }

    async fn run(mut self) {
        if self.response.is_none() {
            // We attached after the document response: recover what the page knows.
            let script = "({ href: location.href, status: ((performance.getEntriesByType('navigation')[0]) || {}).responseStatus || 0 })";
            let Some(info) = self.page.evaluate::<Value>(script).await else { return };
            self.url = str_of(&info, "href").to_string();
            let status = status_of(&json!({ "status": info.get("status").cloned().unwrap_or(Value::Null) }));
            if status > 0 {
                self.response = Some(ResponseFacts { status, headers: Vec::new() });
            }
        }
        let cap = Duration::from_millis(self.detector.cfg.network_idle_timeout_ms);
        let loader = self.loader.clone();
        if !loader.is_empty() {
            let _ = tokio::time::timeout(cap, self.idle.wait_for(|l| *l == loader)).await;
        }
        if !self.current() {
            return;
        }
        let cfg = &self.detector.cfg;
        // innerText up front: it decides whether the page is an interstitial,
        // and full_pass re-scores with it by itself when the score asks for it.
        let Some(facts) = self.page.collect(cfg, true).await else { return };
        let (result, _) = detection::full_pass(&self.url, self.response.as_ref(), &facts, &self.chain, cfg);
        let result = with_reload_loop(result, self.reload_loop, cfg);
        if self.current() && !self.reported.swap(true, Ordering::SeqCst) {
            self.detector.emit(result, &self.page).await;
        }
    }
}

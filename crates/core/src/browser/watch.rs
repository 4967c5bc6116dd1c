//! Block detection on every page target: pages we open, pages a script opens
//! through Playwright, and pages another process opens over CDP.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chromiumoxide::cdp::browser_protocol::network::{EventRequestWillBeSent, EventResponseReceived, ResourceType};
use chromiumoxide::cdp::browser_protocol::page::{
    EventDomContentEventFired, EventLifecycleEvent, EventLoadEventFired, EventNavigatedWithinDocument, ReloadParams,
};
use chromiumoxide::cdp::browser_protocol::target::{EventTargetCreated, TargetId};
use chromiumoxide::cdp::js_protocol::runtime::EvaluateParams;
use chromiumoxide::{Browser, Page};
use futures::StreamExt;
use tokio::sync::watch;

use super::{DetectionEvent, DetectionSink};
use crate::control::ControlPlane;
use crate::detection::{
    self, DetectionConfig, DetectionResult, PageFacts, RedirectHop, ResponseFacts, UnblockDecision, Unblocker,
};
use crate::log::Logger;

const SPA_MIN_INTERVAL: Duration = Duration::from_millis(200);

/// Shared by every page of one browser: the config, auto-unblock state and
/// where results go.
pub struct Detector {
    cfg: DetectionConfig,
    control: Arc<ControlPlane>,
    sink: Option<DetectionSink>,
    logger: Arc<Logger>,
    unblocker: Mutex<Unblocker>,
    /// Serializes auto-unblock actions across pages.
    acting: tokio::sync::Mutex<()>,
}

impl Detector {
    pub fn new(
        cfg: DetectionConfig,
        control: Arc<ControlPlane>,
        sink: Option<DetectionSink>,
        logger: Arc<Logger>,
    ) -> Self {
        Detector {
            cfg,
            control,
            sink,
            logger,
            unblocker: Mutex::new(Unblocker::default()),
            acting: tokio::sync::Mutex::new(()),
        }
    }

    pub fn config(&self) -> &DetectionConfig {
        &self.cfg
    }

    pub fn blocked_hostnames(&self) -> Vec<String> {
        self.unblocker.lock().map(|u| u.blocked_hostnames()).unwrap_or_default()
    }

    pub fn clear_blocked_hostnames(&self) {
        if let Ok(mut u) = self.unblocker.lock() {
            u.clear();
        }
    }

    /// Deliver one result: decide on auto-unblock, tell the sink, then act.
    async fn emit(&self, mut result: DetectionResult, page: &Page) {
        let _turn = self.acting.lock().await;
        let decision = match self.unblocker.lock() {
            Ok(mut u) => u.decide(&result, &self.cfg),
            Err(_) => UnblockDecision::Nothing,
        };
        if matches!(decision, UnblockDecision::PersistentBlock) {
            result.persistent_block = true;
        }
        if let Ok(line) = serde_json::to_string(&result) {
            self.logger.debug_line(line);
        }
        if let Some(sink) = &self.sink {
            sink(DetectionEvent { target_id: page.target_id().inner().clone(), result: result.clone() });
        }
        if let UnblockDecision::AddRuleAndReload { hostname } = decision {
            let current = self.control.config().load().as_ref().map(|c| c.raw_rules.clone()).unwrap_or_default();
            if !current.iter().any(|r| r.trim().eq_ignore_ascii_case(&hostname)) {
                let mut rules = current;
                rules.push(hostname.clone());
                if let Err(e) = self.control.update_rules(rules).await {
                    self.logger.warn(format!("auto-unblock: could not add {hostname} to the rules: {e}"));
                }
            }
            if let Err(e) = page.execute(ReloadParams::default()).await {
                self.logger.warn(format!("auto-unblock: could not reload the page on {hostname}: {e}"));
            } else {
                self.logger.info(format!("auto-unblock: {hostname} now goes through the gateway; page reloaded"));
            }
        }
    }
}

/// Watch every page target of the browser, now and later.
pub(super) async fn watch_browser(browser: Arc<Browser>, detector: Arc<Detector>) {
    let seen: Arc<Mutex<HashSet<String>>> = Arc::new(Mutex::new(HashSet::new()));
    let created = browser.event_listener::<EventTargetCreated>().await;
    for page in browser.pages().await.unwrap_or_default() {
        spawn_page(&seen, page.target_id().clone(), Some(page), &browser, &detector);
    }
    let Ok(mut created) = created else { return };
    while let Some(ev) = created.next().await {
        if ev.target_info.r#type == "page" {
            spawn_page(&seen, ev.target_info.target_id.clone(), None, &browser, &detector);
        }
    }
}

fn spawn_page(
    seen: &Arc<Mutex<HashSet<String>>>,
    target_id: TargetId,
    page: Option<Page>,
    browser: &Arc<Browser>,
    detector: &Arc<Detector>,
) {
    let fresh = seen.lock().map(|mut s| s.insert(target_id.inner().clone())).unwrap_or(false);
    if !fresh {
        return;
    }
    let browser = Arc::clone(browser);
    let detector = Arc::clone(detector);
    tokio::spawn(async move {
        let t0 = Instant::now();
        let page = match page {
            Some(p) => Some(p),
            None => get_page(&browser, &target_id).await,
        };
        match page {
            Some(page) => {
                detector.logger.debug(format!("watching page {} (attached in {:?})", target_id.inner(), t0.elapsed()));
                watch_page(page, detector).await;
            }
            None => detector.logger.debug(format!("page {} could not be attached", target_id.inner())),
        }
    });
}

async fn get_page(browser: &Browser, target_id: &TargetId) -> Option<Page> {
    for _ in 0..200 {
        if let Ok(page) = browser.get_page(target_id.clone()).await {
            return Some(page);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

fn is_main_document(page: &Page, kind: Option<&ResourceType>, frame: Option<&str>) -> bool {
    matches!(kind, Some(ResourceType::Document)) && frame == Some(page.target_id().inner().as_str())
}

fn response_facts(resp: &chromiumoxide::cdp::browser_protocol::network::Response) -> ResponseFacts {
    let headers = resp
        .headers
        .inner()
        .as_object()
        .map(|h| {
            h.iter()
                .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    ResponseFacts { status: u16::try_from(resp.status).unwrap_or(0), headers }
}

/// Evaluate an expression in the page's main frame, returning its value.
async fn evaluate<T: serde::de::DeserializeOwned>(page: &Page, expression: &str) -> Option<T> {
    let params = EvaluateParams::builder().expression(expression).return_by_value(true).build().ok()?;
    let out = tokio::time::timeout(Duration::from_secs(10), page.execute(params)).await.ok()?.ok()?;
    if out.result.exception_details.is_some() {
        return None;
    }
    serde_json::from_value(out.result.result.value.clone()?).ok()
}

/// Evaluate the collection script in the page's main frame.
async fn collect(page: &Page, cfg: &DetectionConfig, with_inner_text: bool) -> Option<PageFacts> {
    evaluate(page, &detection::collect_script(cfg, with_inner_text)).await
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
}

async fn watch_page(page: Page, detector: Arc<Detector>) {
    let (Ok(mut requests), Ok(mut responses), Ok(mut dcl), Ok(mut load), Ok(mut lifecycle), Ok(mut within)) = (
        page.event_listener::<EventRequestWillBeSent>().await,
        page.event_listener::<EventResponseReceived>().await,
        page.event_listener::<EventDomContentEventFired>().await,
        page.event_listener::<EventLoadEventFired>().await,
        page.event_listener::<EventLifecycleEvent>().await,
        page.event_listener::<EventNavigatedWithinDocument>().await,
    ) else {
        return;
    };
    let page = Arc::new(page);
    let main_frame = page.target_id().inner().clone();
    let generation = Arc::new(AtomicU64::new(0));
    let (idle_tx, idle_rx) = watch::channel(String::new());
    let mut nav = Navigation::default();
    let mut pending_chain: Vec<RedirectHop> = Vec::new();
    let mut last_spa: Option<Instant> = None;
    // A page may have loaded before we got to it (another client opened and
    // navigated it at once): give it a full pass now.
    if evaluate::<bool>(&page, "document.readyState === 'complete' && location.href !== 'about:blank'").await
        == Some(true)
    {
        nav.skip_full = true;
        tokio::spawn(
            FullPass {
                page: Arc::clone(&page),
                detector: Arc::clone(&detector),
                generation: Arc::clone(&generation),
                expected: generation.load(Ordering::SeqCst),
                url: String::new(),
                response: None,
                chain: Vec::new(),
                loader: String::new(),
                idle: idle_rx.clone(),
            }
            .run(),
        );
    }
    loop {
        tokio::select! {
            Some(ev) = requests.next() => {
                if is_main_document(&page, ev.r#type.as_ref(), ev.frame_id.as_ref().map(|f| f.inner().as_str())) {
                    match &ev.redirect_response {
                        Some(r) => pending_chain.push(RedirectHop { url: r.url.clone(), status_code: u16::try_from(r.status).unwrap_or(0) }),
                        None => pending_chain.clear(),
                    }
                }
            }
            Some(ev) = responses.next() => {
                if is_main_document(&page, Some(&ev.r#type), ev.frame_id.as_ref().map(|f| f.inner().as_str())) {
                    generation.fetch_add(1, Ordering::SeqCst);
                    nav = Navigation {
                        url: ev.response.url.clone(),
                        response: Some(response_facts(&ev.response)),
                        chain: std::mem::take(&mut pending_chain),
                        loader: ev.loader_id.inner().clone(),
                        ..Navigation::default()
                    };
                }
            }
            Some(_) = dcl.next() => {
                if let (false, Some(resp)) = (nav.fast_done, nav.response.as_ref()) {
                    nav.fast_done = true;
                    let result = detection::fast_pass(&nav.url, resp, &nav.chain, &detector.cfg);
                    if result.score >= 0.9 {
                        nav.skip_full = true;
                        detector.emit(result, &page).await;
                    }
                }
            }
            Some(_) = load.next() => {
                if nav.skip_full {
                    continue;
                }
                nav.skip_full = true;
                let task = FullPass {
                    page: Arc::clone(&page),
                    detector: Arc::clone(&detector),
                    generation: Arc::clone(&generation),
                    expected: generation.load(Ordering::SeqCst),
                    url: nav.url.clone(),
                    response: nav.response.clone(),
                    chain: nav.chain.clone(),
                    loader: nav.loader.clone(),
                    idle: idle_rx.clone(),
                };
                tokio::spawn(task.run());
            }
            Some(ev) = lifecycle.next() => {
                if ev.frame_id.inner() == &main_frame && ev.name == "networkIdle" {
                    let _ = idle_tx.send(ev.loader_id.inner().clone());
                }
            }
            Some(ev) = within.next() => {
                if ev.frame_id.inner() != &main_frame {
                    continue;
                }
                let now = Instant::now();
                if last_spa.is_some_and(|t| now.duration_since(t) < SPA_MIN_INTERVAL) {
                    continue;
                }
                last_spa = Some(now);
                let page = Arc::clone(&page);
                let detector = Arc::clone(&detector);
                let url = ev.url.clone();
                tokio::spawn(async move {
                    // Let the view render before reading it.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if let Some(facts) = collect(&page, &detector.cfg, false).await {
                        let result = detection::spa_pass(&url, &facts, &detector.cfg);
                        detector.emit(result, &page).await;
                    }
                });
            }
            else => break,
        }
    }
}

struct FullPass {
    page: Arc<Page>,
    detector: Arc<Detector>,
    generation: Arc<AtomicU64>,
    expected: u64,
    url: String,
    response: Option<ResponseFacts>,
    chain: Vec<RedirectHop>,
    loader: String,
    idle: watch::Receiver<String>,
}

impl FullPass {
    fn current(&self) -> bool {
        self.generation.load(Ordering::SeqCst) == self.expected
    }

    async fn run(mut self) {
        if self.response.is_none() {
            // We attached after the document response: recover what the page knows.
            let script = "({ href: location.href, status: ((performance.getEntriesByType('navigation')[0]) || {}).responseStatus || 0 })";
            let Some(info) = evaluate::<serde_json::Value>(&self.page, script).await else { return };
            if let Some(href) = info.get("href").and_then(|h| h.as_str()) {
                self.url = href.to_string();
            }
            let status = info.get("status").and_then(|s| s.as_u64()).and_then(|s| u16::try_from(s).ok()).unwrap_or(0);
            if status > 0 {
                self.response = Some(ResponseFacts { status, headers: Vec::new() });
            }
        }
        let cap = Duration::from_millis(self.detector.cfg.network_idle_timeout_ms);
        let loader = self.loader.clone();
        let _ = tokio::time::timeout(cap, self.idle.wait_for(|l| *l == loader)).await;
        if !self.current() {
            return;
        }
        let cfg = &self.detector.cfg;
        let Some(facts) = collect(&self.page, cfg, false).await else { return };
        let (mut result, recheck) = detection::full_pass(&self.url, self.response.as_ref(), &facts, &self.chain, cfg);
        if recheck {
            if let Some(inner) = collect(&self.page, cfg, true).await {
                result = detection::rescore_with_inner_text(&result, &inner, &self.url, &self.chain, cfg);
            }
        }
        if self.current() {
            self.detector.emit(result, &self.page).await;
        }
    }
}

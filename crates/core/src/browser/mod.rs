//! Chromium through the local proxy, driven over CDP with chromiumoxide, with
//! block detection on every page target.

mod cdp;
mod gate;
#[cfg(target_os = "linux")]
mod isolated;
pub mod launch;
#[cfg(target_os = "linux")]
mod netns;
mod watch;

use std::path::PathBuf;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use self::cdp::Cdp;

use crate::config::ConfigHandle;
use crate::detection::{DetectionConfig, DetectionResult, Rung, UnblockLogEntry};
use crate::error::{AluviaError, Result};
use crate::log::Logger;
use crate::task::off_thread;

pub use gate::{touch, Activity};
pub use watch::Detector;

/// One detection result and the CDP target (page) it is about.
#[derive(Debug, Clone)]
pub struct DetectionEvent {
    pub target_id: String,
    pub result: DetectionResult,
    /// Ours: the unblock log (last actions, oldest first) when this result
    /// changed it.
    pub unblock_log: Option<Vec<UnblockLogEntry>>,
}

pub type DetectionSink = Arc<dyn Fn(DetectionEvent) + Send + Sync>;

/// Auto-unblock's levers, supplied by the browser's owner.
#[derive(Clone)]
pub struct UnblockAction {
    /// The connection config the levers change: what is in effect already.
    pub config: ConfigHandle,
    /// Apply a rung for a hostname (`rule`: send it through the gateway;
    /// `rotate`: a new session id; `geo`: that target geo) and log how that
    /// went. It resolves once the change has reached open connections; the
    /// page is reloaded then.
    pub apply: Arc<dyn Fn(Rung, String) -> futures::future::BoxFuture<'static, ()> + Send + Sync>,
}

/// A page attached before the connection was published, with its events.
type EarlyPage = (cdp::Attached, tokio::sync::mpsc::UnboundedReceiver<cdp::Event>);

pub struct BrowserOptions {
    pub proxy_url: String,
    pub headless: bool,
    /// Which Chromium.
    pub kind: launch::BrowserKind,
    /// Certificates with these public keys are accepted without a trusted
    /// CA (the emulator's HTTPS site); empty for the real web.
    pub trust_spki: Vec<String>,
    pub detection: DetectionConfig,
    pub sink: Option<DetectionSink>,
    pub unblock: UnblockAction,
    pub logger: Arc<Logger>,
    /// A persistent profile (ours), taken by the owner; `None` for a private
    /// profile made for this browser and removed with it.
    pub profile: Option<crate::profile::ProfileLock>,
}

pub struct BrowserSession {
    cdp: Cdp,
    child: Mutex<Option<Child>>,
    /// The relays of Chromium's network namespace, when it runs in one.
    isolation: Option<launch::Isolation>,
    cdp_url: String,
    user_data_dir: PathBuf,
    detector: Arc<Detector>,
    /// The gate's relays on the host's network (when not isolated).
    relays: Option<gate::Relays>,
    /// Clients of `cdp_url`: the idle clock.
    activity: Arc<Activity>,
    /// Proxied requests to the DevTools endpoints are refused while it runs.
    _control_ports: Vec<crate::proxy::ControlPort>,
    info: BrowserInfo,
    /// The persistent profile, held until Chromium is gone; kept on close.
    profile: Mutex<Option<crate::profile::ProfileLock>>,
    /// Whether `user_data_dir` is a persistent profile (kept) or private.
    persistent: bool,
}

/// Which browser a session runs, as `session get` and the connection say.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BrowserInfo {
    pub kind: launch::BrowserKind,
    /// As the browser reports it (`Browser.getVersion`), e.g. `156.0.8078.129`.
    pub version: String,
}

pub use crate::store::PROFILE_DIR_PREFIX;

/// The profile's preferences at the start.
const PREFERENCES: &str = r#"{"webrtc":{"ip_handling_policy":"disable_non_proxied_udp","multiple_routes_enabled":false,"nonproxied_udp_enabled":false}}"#;

/// Sets the profile's WebRTC policy in `Default/Preferences` (keeping the
/// rest of what a persistent profile's preferences hold), and clears what a
/// Chromium that was killed leaves in a profile it used: its singleton
/// files (the profile is ours alone now) and its temp folder.
fn prepare_profile(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    for leftover in ["SingletonLock", "SingletonSocket", "SingletonCookie"] {
        let _ = std::fs::remove_file(dir.join(leftover));
    }
    let _ = std::fs::remove_dir_all(dir.join("t"));
    let default = dir.join("Default");
    std::fs::DirBuilder::new().mode(0o700).recursive(true).create(&default)?;
    let path = default.join("Preferences");
    let mut prefs = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| json!({}));
    let ours: serde_json::Value = serde_json::from_str(PREFERENCES).unwrap_or_default();
    prefs["webrtc"] = ours["webrtc"].clone();
    std::fs::write(path, serde_json::to_vec(&prefs).unwrap_or_default())
}

fn make_user_data_dir() -> Result<PathBuf> {
    // Named after this process, so that a sweep can tell it was left behind
    // by a killed owner before any lock file recorded it; short, as
    // Chromium's singleton socket lives under it (in the `TMPDIR` it gets),
    // and a socket's path has room for about 107 bytes.
    let dir = crate::store::create_owned_dir(PROFILE_DIR_PREFIX).map_err(|e| {
        AluviaError::Internal(format!(
            "cannot create a Chromium profile directory in {}: {e}",
            std::env::temp_dir().display()
        ))
    })?;
    // WebRTC may use UDP only through a proxy, which an HTTP proxy cannot
    // carry: no STUN or media packet goes around the proxy to reveal the
    // machine's own address. (Chromium takes this from the profile; the
    // command-line switch alone leaves UDP on.)
    prepare_profile(&dir).map_err(|e| {
        let _ = std::fs::remove_dir_all(&dir);
        AluviaError::Internal(format!("cannot create a Chromium profile directory {}: {e}", dir.display()))
    })?;
    Ok(dir)
}

impl BrowserSession {
    /// Launch Chromium through the proxy, connect over CDP and start watching
    /// every page.
    pub async fn launch(opts: BrowserOptions) -> Result<BrowserSession> {
        let executable = launch::find_chromium(opts.kind)?;
        let isolate = launch::isolation_wanted()?;
        let user_data_dir = match &opts.profile {
            Some(profile) => {
                let dir = profile.path().to_path_buf();
                prepare_profile(&dir)
                    .map_err(|e| AluviaError::Internal(format!("cannot prepare the profile {}: {e}", dir.display())))?;
                dir
            }
            None => make_user_data_dir()?,
        };
        let keep_profile = opts.profile.is_some();
        // A private profile goes with a failed launch; a persistent one stays.
        let discard = |dir: &std::path::Path| {
            if !keep_profile {
                let _ = std::fs::remove_dir_all(dir);
            }
        };
        let launched = match launch::spawn(
            &launch::LaunchOptions {
                executable,
                isolate,
                proxy_url: opts.proxy_url.clone(),
                headless: opts.headless,
                kind: opts.kind,
                trust_spki: opts.trust_spki.clone(),
                user_data_dir: user_data_dir.clone(),
                profile_lock: opts.profile.as_ref().map(crate::profile::ProfileLock::lock_fd),
            },
            &opts.logger,
        )
        .await
        {
            Ok(l) => l,
            Err(e) => {
                discard(&user_data_dir);
                return Err(e);
            }
        };
        let mut child = launched.child;
        let isolation = launched.isolation;
        if let Some(why) = &launched.not_isolated {
            if isolate {
                opts.logger.warn(format!("browser: not isolated, Chromium uses the host's network: {why}"));
            }
        }
        let detector = Arc::new(Detector::new(opts.detection, opts.unblock, opts.sink, opts.logger));
        let watcher = Arc::clone(&detector);
        let cdp_slot: Arc<Mutex<Option<Cdp>>> = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&cdp_slot);
        // Pages attached before `connect` returns wait (paused) in this queue.
        let early: Arc<Mutex<Vec<EarlyPage>>> = Arc::new(Mutex::new(Vec::new()));
        let early_in = Arc::clone(&early);
        let connected = Cdp::connect(&launched.ws_url, move |attached, events| {
            // The queue's lock first, as the publisher below takes it: a page
            // either finds the connection published or is queued before the
            // queue is drained, never after.
            let Ok(mut q) = early_in.lock() else { return };
            match slot.lock().ok().and_then(|s| s.clone()) {
                Some(cdp) => {
                    drop(q);
                    watch::on_attach(cdp, Arc::clone(&watcher), attached, events)
                }
                None => q.push((attached, events)),
            }
        })
        .await;
        let cdp = match connected {
            Ok(cdp) => cdp,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                if let Some(iso) = &isolation {
                    iso.stop().await;
                }
                discard(&user_data_dir);
                return Err(AluviaError::Internal(format!("Failed to connect to Chromium over CDP: {e}")));
            }
        };
        {
            // Hold the queue while publishing the connection, so that no page
            // is attached in between and left behind.
            let mut q = early.lock().map_err(|_| AluviaError::Internal("poisoned lock".into()))?;
            if let Ok(mut s) = cdp_slot.lock() {
                *s = Some(cdp.clone());
            }
            for (attached, events) in q.drain(..) {
                watch::on_attach(cdp.clone(), Arc::clone(&detector), attached, events);
            }
        }
        // "Chrome/156.0.8078.129" or "HeadlessChrome/…": the number.
        let product = cdp.call("Browser.getVersion", None, serde_json::json!({})).await.ok();
        let version = product
            .as_ref()
            .and_then(|v| v.get("product"))
            .and_then(|p| p.as_str())
            .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
            .unwrap_or_default();
        Ok(BrowserSession {
            info: BrowserInfo { kind: opts.kind, version },
            cdp,
            child: Mutex::new(Some(child)),
            isolation,
            cdp_url: format!("http://127.0.0.1:{}", launched.cdp_port),
            user_data_dir,
            detector,
            relays: launched.relays,
            activity: launched.activity,
            _control_ports: launched.control_ports,
            profile: Mutex::new(opts.profile),
            persistent: keep_profile,
        })
    }

    pub fn cdp_url(&self) -> &str {
        &self.cdp_url
    }

    /// The clients of [`Self::cdp_url`]: whether one is connected, and since
    /// when none has been (the idle clock).
    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    /// The browser's kind and version.
    pub fn info(&self) -> &BrowserInfo {
        &self.info
    }

    /// How Chromium is kept apart: `"namespace"` (a network namespace of its
    /// own, CDP served to the owner only) or `"none"` (the host's network).
    pub fn isolation(&self) -> &'static str {
        if self.isolation.is_some() {
            "namespace"
        } else {
            "none"
        }
    }

    pub fn user_data_dir(&self) -> &std::path::Path {
        &self.user_data_dir
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.lock().ok().and_then(|c| c.as_ref().map(Child::id))
    }

    pub fn detector(&self) -> &Arc<Detector> {
        &self.detector
    }

    /// The first attached page's session, waiting up to `wait` for one.
    async fn first_page(&self, wait: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(s) = self.cdp.page_sessions().into_iter().next() {
                return Some(s);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Navigate the first page (opening one if there is none) and wait until
    /// the navigation is done.
    pub async fn goto_first(&self, url: &str) -> Result<()> {
        let fail = |e: String| AluviaError::Internal(format!("Navigation to {url} failed: {e}"));
        // Chromium starts with one tab; its attach may still be on the way.
        let session = match self.first_page(Duration::from_secs(3)).await {
            Some(s) => s,
            None => {
                self.cdp.call("Target.createTarget", None, json!({ "url": "about:blank" })).await.map_err(fail)?;
                self.first_page(Duration::from_secs(2)).await.ok_or_else(|| fail("no page could be opened".into()))?
            }
        };
        let mut events = self.cdp.subscribe(&session).ok_or_else(|| fail("the page went away".into()))?;
        // The watcher enables these too, maybe not yet: both calls are idempotent.
        for (method, params) in
            [("Page.enable", json!({})), ("Page.setLifecycleEventsEnabled", json!({ "enabled": true }))]
        {
            self.cdp.call(method, Some(&session), params).await.map_err(fail)?;
        }
        let nav = self.cdp.call("Page.navigate", Some(&session), json!({ "url": url })).await.map_err(fail)?;
        if let Some(err) = nav.get("errorText").and_then(|e| e.as_str()).filter(|e| !e.is_empty()) {
            return Err(fail(err.to_string()));
        }
        // The load of this navigation (not of whatever the tab was loading
        // before). A navigation that supersedes it (an auto-unblock reload,
        // a script redirect) starts a new loader in the same frame: follow it.
        let frame = nav.get("frameId").and_then(|f| f.as_str()).unwrap_or_default().to_string();
        let mut loader = nav.get("loaderId").and_then(|l| l.as_str()).unwrap_or_default().to_string();
        let loaded = async {
            while let Some((method, p)) = events.recv().await {
                match method.as_str() {
                    "Page.lifecycleEvent" if p["frameId"].as_str() == Some(frame.as_str()) => {
                        let this = p["loaderId"].as_str().unwrap_or_default();
                        match p["name"].as_str() {
                            Some("init") if !this.is_empty() && this != loader => loader = this.to_string(),
                            Some("load") if loader.is_empty() || this == loader => return true,
                            _ => {}
                        }
                    }
                    "Page.loadEventFired" if loader.is_empty() => return true,
                    _ => {}
                }
            }
            false
        };
        match tokio::time::timeout(Duration::from_secs(60), loaded).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(fail("the page went away".into())),
            Err(_) => Err(fail("no load event within 60 s".into())),
        }
    }

    /// Resolves when the CDP connection to Chromium is gone (crash, window
    /// closed by the user, or close()).
    pub async fn wait_disconnected(&self) {
        self.cdp.wait_gone().await;
    }

    /// Close the browser: a persistent profile's politely (it saves its
    /// state), then kill; a private profile's at once, and remove the profile.
    pub async fn close(&self) {
        let child = self.child.lock().ok().and_then(|mut c| c.take());
        let Some(mut child) = child else { return };
        // A persistent profile is saved by a graceful close; a private one is
        // removed right after, so Chromium is simply ended (tens of ms sooner).
        let deadline = if self.persistent {
            let _ = tokio::time::timeout(Duration::from_secs(2), self.cdp.call("Browser.close", None, json!({}))).await;
            tokio::time::Instant::now() + Duration::from_secs(3)
        } else {
            tokio::time::Instant::now()
        };
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                _ => {
                    let _ = child.kill();
                    let _ = off_thread(move || {
                        let _ = child.wait();
                        Ok(())
                    })
                    .await;
                    break;
                }
            }
        }
        if let Some(iso) = &self.isolation {
            iso.stop().await;
        }
        if let Some(relays) = &self.relays {
            relays.stop().await;
        }
        // A persistent profile is kept, and let go now that Chromium is gone.
        if self.persistent {
            drop(self.profile.lock().ok().and_then(|mut p| p.take()));
            return;
        }
        let dir = self.user_data_dir.clone();
        let _ = off_thread(move || {
            let _ = std::fs::remove_dir_all(dir);
            Ok(())
        })
        .await;
    }

    /// The persistent profile's name, when the browser runs with one.
    pub fn profile(&self) -> Option<String> {
        self.profile.lock().ok().and_then(|p| p.as_ref().map(|p| p.name().to_string()))
    }
}

impl Drop for BrowserSession {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().ok().and_then(|mut c| c.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !self.persistent {
            let _ = std::fs::remove_dir_all(&self.user_data_dir);
        }
    }
}

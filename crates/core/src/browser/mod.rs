//! Chromium through the local proxy, driven over CDP with chromiumoxide, with
//! block detection on every page target.

pub mod launch;
mod watch;

use std::path::PathBuf;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::target::CreateTargetParams;
use chromiumoxide::handler::HandlerConfig;
use chromiumoxide::Browser;
use futures::StreamExt;
use tokio::sync::watch as tokio_watch;
use tokio::task::JoinHandle;

use crate::control::ControlPlane;
use crate::detection::{DetectionConfig, DetectionResult};
use crate::error::{AluviaError, Result};
use crate::log::Logger;

pub use watch::Detector;

/// One detection result and the CDP target (page) it is about.
#[derive(Debug, Clone)]
pub struct DetectionEvent {
    pub target_id: String,
    pub result: DetectionResult,
}

pub type DetectionSink = Arc<dyn Fn(DetectionEvent) + Send + Sync>;

pub struct BrowserOptions {
    pub proxy_url: String,
    pub headless: bool,
    pub detection: DetectionConfig,
    pub sink: Option<DetectionSink>,
    pub control: Arc<ControlPlane>,
    pub logger: Arc<Logger>,
}

pub struct BrowserSession {
    browser: Arc<Browser>,
    child: Mutex<Option<Child>>,
    cdp_url: String,
    user_data_dir: PathBuf,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    disconnected: tokio_watch::Receiver<bool>,
    detector: Arc<Detector>,
}

fn make_user_data_dir() -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = std::env::temp_dir().join(format!("aluvia-chromium-{}", uuid::Uuid::new_v4().simple()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir).map_err(|e| {
        AluviaError::Internal(format!("cannot create a Chromium profile directory {}: {e}", dir.display()))
    })?;
    Ok(dir)
}

impl BrowserSession {
    /// Launch Chromium through the proxy, connect over CDP and start watching
    /// every page.
    pub async fn launch(opts: BrowserOptions) -> Result<BrowserSession> {
        let executable = launch::find_chromium()?;
        let user_data_dir = make_user_data_dir()?;
        let launched = match launch::spawn(&launch::LaunchOptions {
            executable,
            proxy_url: opts.proxy_url.clone(),
            headless: opts.headless,
            user_data_dir: user_data_dir.clone(),
        }) {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&user_data_dir);
                return Err(e);
            }
        };
        let mut child = launched.child;
        let config = HandlerConfig {
            ignore_https_errors: false,
            // Surfacing (and logging) messages chromiumoxide cannot parse keeps
            // the page events flowing with newer Chromium releases.
            ignore_invalid_messages: false,
            viewport: None,
            cache_enabled: true,
            request_intercept: false,
            request_timeout: Duration::from_secs(30),
            ..HandlerConfig::default()
        };
        let (browser, mut handler) = match Browser::connect_with_config(launched.ws_url.clone(), config).await {
            Ok(pair) => pair,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_dir_all(&user_data_dir);
                return Err(AluviaError::Internal(format!("Failed to connect to Chromium over CDP: {e}")));
            }
        };
        let (gone_tx, gone_rx) = tokio_watch::channel(false);
        let logger = Arc::clone(&opts.logger);
        let handler_task = tokio::spawn(async move {
            while let Some(event) = handler.next().await {
                if let Err(e) = event {
                    let text = match &e {
                        chromiumoxide::error::CdpError::InvalidMessage(t, err) => {
                            format!("{err}: {}", t.chars().take(300).collect::<String>())
                        }
                        other => other.to_string(),
                    };
                    logger.debug(format!("cdp: {text}"));
                }
            }
            let _ = gone_tx.send(true);
        });
        let browser = Arc::new(browser);
        let detector = Arc::new(Detector::new(opts.detection, opts.control, opts.sink, opts.logger));
        let watch_task = tokio::spawn(watch::watch_browser(Arc::clone(&browser), Arc::clone(&detector)));
        Ok(BrowserSession {
            browser,
            child: Mutex::new(Some(child)),
            cdp_url: format!("http://127.0.0.1:{}", launched.cdp_port),
            user_data_dir,
            tasks: Mutex::new(vec![handler_task, watch_task]),
            disconnected: gone_rx,
            detector,
        })
    }

    pub fn cdp_url(&self) -> &str {
        &self.cdp_url
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.lock().ok().and_then(|c| c.as_ref().map(Child::id))
    }

    pub fn detector(&self) -> &Arc<Detector> {
        &self.detector
    }

    /// Navigate the first page (opening one if there is none) and wait until
    /// the navigation is done.
    pub async fn goto_first(&self, url: &str) -> Result<()> {
        let pages = self.browser.pages().await.unwrap_or_default();
        let nav = |e: chromiumoxide::error::CdpError| AluviaError::Internal(format!("Navigation to {url} failed: {e}"));
        match pages.into_iter().next() {
            Some(page) => {
                page.goto(url).await.map_err(nav)?;
            }
            None => {
                self.browser.new_page(CreateTargetParams::new(url)).await.map_err(nav)?;
            }
        }
        Ok(())
    }

    /// Resolves when the CDP connection to Chromium is gone (crash, window
    /// closed by the user, or close()).
    pub async fn wait_disconnected(&self) {
        let mut rx = self.disconnected.clone();
        let _ = rx.wait_for(|gone| *gone).await;
    }

    pub fn is_disconnected(&self) -> bool {
        *self.disconnected.borrow()
    }

    /// Close the browser: ask politely, then kill; remove the profile.
    pub async fn close(&self) {
        let child = self.child.lock().ok().and_then(|mut c| c.take());
        let Some(mut child) = child else { return };
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.browser.execute(chromiumoxide::cdp::browser_protocol::browser::CloseParams::default()),
        )
        .await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(25)).await
                }
                _ => {
                    let _ = child.kill();
                    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
                    break;
                }
            }
        }
        if let Ok(mut tasks) = self.tasks.lock() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
        let dir = self.user_data_dir.clone();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
    }
}

impl Drop for BrowserSession {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().ok().and_then(|mut c| c.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Ok(mut tasks) = self.tasks.lock() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
        let _ = std::fs::remove_dir_all(&self.user_data_dir);
    }
}

//! The life of a session daemon, the process `session start` spawns: the
//! engine (proxy, Chromium, detection) kept under its lock file from the early
//! write to the lock's removal, the ready signal, and the ways it ends
//! (SIGTERM/SIGINT, the browser going away, a `--run` script finishing, a
//! stop requested by the host).
//!
//! Its log lines go to stderr, which is the session's log file.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::watch;

use super::ready::{prepare_ready_fd, signal_failed, signal_ready};
use super::script::{ScriptChild, ScriptRun};
use super::sync::{start_lock_sync, LockSync, Status, TRAFFIC_INTERVAL};
use crate::api::id_value;
use crate::client::{Client, ClientOptions, ProxyInfo, RawClientOptions};
use crate::error::{AluviaError, Result};
use crate::store::LockData;
use crate::store::LockDir;
use crate::task::off_thread;

/// The daemon's client polls its connection's config this often (ms), so that
/// `rotate-ip`, `set-geo` and `set-rules` reach it within about a second.
pub const DAEMON_POLL_INTERVAL_MS: f64 = 1000.0;

/// What a daemon runs.
#[derive(Debug, Clone)]
pub struct DaemonRun {
    pub dir: LockDir,
    /// The session; its lock names this process.
    pub name: String,
    /// The first page.
    pub url: String,
    pub headful: bool,
    pub block_detection: bool,
    pub auto_unblock: bool,
    /// Ours: `unblockSteps` and `unblockGeos` (the defaults when `None`).
    pub unblock_steps: Option<Vec<String>>,
    pub unblock_geos: Option<Vec<String>>,
    /// The API key and the connection id, and the API and gateway addresses
    /// where the daemon's environment does not set them
    /// ([`RawClientOptions::with_env`]); the daemon sets the rest (browser,
    /// polling, detection).
    pub client: RawClientOptions,
    /// Whether SIGTERM and SIGINT stop it ([`stop_on_signals`]).
    pub handle_signals: bool,
    /// Ours: it closes itself once its CDP endpoint has had no client for
    /// this long (`None`: never).
    pub idle_timeout: Option<std::time::Duration>,
    /// Ours: the persistent profile, and the home directory it lives in.
    pub profile: Option<String>,
    pub home: Option<String>,
}

impl DaemonRun {
    /// `blockDetection` of the daemon's client.
    fn detection_options(&self) -> Value {
        let mut options = serde_json::json!({ "enabled": self.block_detection, "autoUnblock": self.auto_unblock });
        if let Some(steps) = &self.unblock_steps {
            options["unblockSteps"] = serde_json::json!(steps);
        }
        if let Some(geos) = &self.unblock_geos {
            options["unblockGeos"] = serde_json::json!(geos);
        }
        options
    }

    fn client_options(&self) -> Result<ClientOptions> {
        ClientOptions::validate(RawClientOptions {
            poll_interval_ms: Some(DAEMON_POLL_INTERVAL_MS),
            start_playwright: Some(true),
            headless: Some(!self.headful),
            block_detection: Some(self.detection_options()),
            profile: self.profile.clone(),
            profile_home: self.home.clone(),
            profile_session: Some(self.name.clone()),
            ..self.client.clone().with_env(|name| std::env::var(name).ok())?
        })
    }
}

/// How a daemon ends: its exit code, and why (for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonExit {
    pub code: i32,
    pub reason: String,
}

impl DaemonExit {
    pub fn new(code: i32, reason: impl Into<String>) -> DaemonExit {
        DaemonExit { code, reason: reason.into() }
    }
}

/// Asks a running daemon to stop; the first request wins.
#[derive(Debug, Clone)]
pub struct DaemonStop {
    tx: Arc<watch::Sender<Option<DaemonExit>>>,
}

impl Default for DaemonStop {
    fn default() -> Self {
        DaemonStop { tx: Arc::new(watch::channel(None).0) }
    }
}

impl DaemonStop {
    pub fn new() -> DaemonStop {
        DaemonStop::default()
    }

    pub fn request(&self, code: i32, reason: impl Into<String>) {
        let exit = DaemonExit::new(code, reason);
        self.tx.send_if_modified(|slot| slot.is_none() && slot.replace(exit).is_none());
    }

    /// The stop requested so far, if any.
    pub fn current(&self) -> Option<DaemonExit> {
        self.tx.borrow().clone()
    }

    /// Resolves once a stop is requested.
    pub async fn requested(&self) -> DaemonExit {
        let mut rx = self.tx.subscribe();
        loop {
            if let Some(exit) = rx.borrow_and_update().clone() {
                return exit;
            }
            if rx.changed().await.is_err() {
                // Unreachable while `self` holds the sender.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Makes SIGTERM and SIGINT request `stop` (exit 0) instead of ending the
/// process. Must be called within a tokio runtime.
///
/// A handler the host installed earlier is replaced rather than chained: the
/// one Node installs to restore the terminal re-raises the signal, which
/// would end the process before a graceful stop.
pub fn stop_on_signals(stop: &DaemonStop) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    static DEFAULTS_RESTORED: AtomicBool = AtomicBool::new(false);
    let signals =
        [(SignalKind::terminate(), libc::SIGTERM, "SIGTERM"), (SignalKind::interrupt(), libc::SIGINT, "SIGINT")];
    if !DEFAULTS_RESTORED.swap(true, Ordering::SeqCst) {
        for (_, number, _) in signals {
            // SAFETY: setting a standard disposition has no preconditions. It
            // happens before tokio installs its handler, which then has no
            // earlier handler to call.
            unsafe { libc::signal(number, libc::SIG_DFL) };
        }
    }
    for (kind, _, name) in signals {
        let mut stream = signal(kind)?;
        let stop = stop.clone();
        tokio::spawn(async move {
            if stream.recv().await.is_some() {
                stop.request(0, name);
            }
        });
    }
    Ok(())
}

/// One line of the daemon's log. The environment holds the API key: never log it.
fn log(msg: std::fmt::Arguments<'_>) {
    crate::log::write_line(&msg.to_string());
}

/// Why a start failed, as `session start` shows it (`reason`): the error's
/// message with the secrets (API key, gateway password) taken out.
fn failure_reason(e: &AluviaError, secrets: &[&str]) -> String {
    let mut reason = e.to_string();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        reason = reason.replace(secret, "[redacted]");
    }
    reason
}

/// Logs why the daemon could not start and tells `session start` (the ready pipe).
fn report_failure(reason: &str) {
    log(format_args!("failed to start: {reason}"));
    if let Err(e) = signal_failed(reason) {
        log(format_args!("warning: could not report the failure: {e}"));
    }
}

/// A headful browser on Linux needs a display: the error when there is none.
fn missing_display(headful: bool) -> Option<AluviaError> {
    let has = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    (headful && cfg!(target_os = "linux") && !has("DISPLAY") && !has("WAYLAND_DISPLAY")).then(|| {
        AluviaError::Invalid(
            "A headful browser needs a display, and neither DISPLAY nor WAYLAND_DISPLAY is set. Start it headless, or run it where a display is available."
                .into(),
        )
    })
}

/// Removes the lock of `name` while it names `pid`.
async fn release(dir: &LockDir, name: &str, pid: u32) {
    let (dir, name) = (dir.clone(), name.to_string());
    if let Err(e) = off_thread(move || dir.remove_if_owned(&name, pid)).await {
        log(format_args!("could not remove the lock file: {e}"));
    }
}

/// A started daemon: its engine and the task that keeps its lock current.
struct Daemon {
    dir: LockDir,
    name: String,
    pid: u32,
    client: Arc<Client>,
    sync: LockSync,
    idle_timeout: Option<std::time::Duration>,
}

impl Daemon {
    /// Edits this daemon's lock; an error when it is gone or names another
    /// process (then it is no longer this session's).
    async fn write(&self, f: impl FnOnce(&mut LockData) + Send + 'static) -> Result<LockData> {
        let (dir, name, pid) = (self.dir.clone(), self.name.clone(), self.pid);
        off_thread(move || dir.update_owned(&name, pid, f)).await?.ok_or_else(|| {
            AluviaError::Internal(format!("the lock file of session '{}' was removed or taken over", self.name))
        })
    }

    /// `session start` claims the name under its own pid and hands the lock
    /// to the daemon right after spawning it: a daemon that gets this far
    /// first waits for that (10 s at most) rather than take the lock for
    /// someone else's.
    async fn await_handover(&self) {
        // SAFETY: getppid has no preconditions and cannot fail.
        let parent = unsafe { libc::getppid() } as u32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (dir, name) = (self.dir.clone(), self.name.clone());
            let holder = off_thread(move || dir.read(&name)).await.ok().flatten().and_then(|read| match read {
                crate::store::LockRead::Valid(lock) => Some(lock.pid),
                crate::store::LockRead::Corrupt { .. } => None,
            });
            if holder != Some(parent) || std::time::Instant::now() > deadline {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Proxy and browser, the early write, the first navigation, the final
    /// write: the lock as written, or how it ended when a stop came first.
    /// The engine's start is not cut short (a half-launched Chromium would be
    /// left behind); the navigation is.
    async fn start(
        &self,
        url: &str,
        stop: &DaemonStop,
    ) -> Result<std::result::Result<(ProxyInfo, LockData), DaemonExit>> {
        // Where a start spends its time, in the log (one line once ready).
        let began = std::time::Instant::now();
        let info = self.client.start().await?;
        let engine_ms = began.elapsed().as_millis();
        if let Some(exit) = stop.current() {
            return Ok(Err(exit));
        }
        self.await_handover().await;
        // Early write: the proxy is up (no `ready` yet). `profileDir` (ours)
        // lets stale cleanup remove the profile of a killed daemon.
        let proxy_url = info.url.clone();
        let profile = self.client.browser().map(|b| b.user_data_dir().display().to_string());
        // `browserIsolation` (ours): `session get` says how the browser is kept apart.
        let isolation = self.client.browser().map(|b| b.isolation());
        // `browser` (ours): its kind and version.
        let browser = self.client.browser().and_then(|b| serde_json::to_value(b.info()).ok());
        // Ours: the idle timeout (null: never) and the persistent profile.
        let idle_timeout = self.idle_timeout.map_or(Value::Null, |d| Value::from(d.as_millis() as u64));
        let profile_name = self.client.browser().and_then(|b| b.profile()).map_or(Value::Null, Value::from);
        // Ours: the browser's process, which stale cleanup ends if it outlives a killed daemon.
        let browser_pid = self.client.browser().and_then(|b| b.pid());
        let browser_start = browser_pid.and_then(crate::store::process_start);
        self.write(move |lock| {
            if let (Some(pid), Some(start)) = (browser_pid, browser_start) {
                lock.extra.insert("browserPid".into(), Value::from(pid));
                lock.extra.insert("browserStart".into(), Value::from(start));
            }
            lock.extra.insert("idleTimeoutMs".into(), idle_timeout);
            lock.extra.insert("profile".into(), profile_name);
            lock.proxy_url = Some(proxy_url);
            lock.profile_dir = profile;
            match isolation {
                Some(i) => lock.extra.insert("browserIsolation".into(), Value::from(i)),
                None => lock.extra.remove("browserIsolation"),
            };
            match browser {
                Some(b) => lock.extra.insert("browser".into(), b),
                None => lock.extra.remove("browser"),
            };
        })
        .await?;

        let navigate = async {
            match self.client.browser() {
                Some(browser) => browser.goto_first(url).await,
                None => Err(AluviaError::Internal("no browser was started".into())),
            }
        };
        let navigation_began = std::time::Instant::now();
        tokio::select! {
            navigated = navigate => if let Err(e) = navigated {
                // The session stays usable: a page that failed to load is the user's to handle.
                log(format_args!("navigation to {url} failed: {e}"));
            },
            exit = stop.requested() => return Ok(Err(exit)),
        }

        let navigation_ms = navigation_began.elapsed().as_millis();
        let connection_id = self.client.control().connection_id().map(|id| id_value(&id));
        let (cdp_url, url) = (info.cdp_url.clone(), url.to_string());
        // The idle clock starts now that the session is ready.
        let activity = self.client.browser().map(|b| Arc::clone(b.activity()));
        if let Some(activity) = &activity {
            activity.touch();
        }
        let idle_since = activity.and_then(|a| a.idle_since()).map(crate::log::iso_time);
        let lock = self
            .write(move |lock| {
                lock.extra.insert("idleSince".into(), idle_since.map_or(Value::Null, Value::from));
                lock.connection_id = connection_id;
                lock.cdp_url = cdp_url;
                lock.url = Some(url);
                lock.ready = Some(true);
            })
            .await?;
        log(format_args!(
            "started in {} ms: proxy, the API's connection and Chromium (at once) {engine_ms} ms, first navigation {navigation_ms} ms",
            began.elapsed().as_millis()
        ));
        Ok(Ok((info, lock)))
    }

    /// Browser, lock sync, proxy and polling stopped, lock removed: the exit code.
    async fn shutdown(self, exit: DaemonExit) -> i32 {
        log(format_args!("stopping ({})", exit.reason));
        self.client.close_browser().await;
        self.sync.stop().await;
        self.client.stop().await;
        release(&self.dir, &self.name, self.pid).await;
        log(format_args!("stopped, exit {}", exit.code));
        exit.code
    }
}

/// Runs the daemon of session `spec.name` (whose lock names this process)
/// until it ends, and returns its exit code: 0 after SIGTERM/SIGINT or a stop
/// request with code 0, when the browser goes away, or when the script
/// succeeded; 1 when it could not start (the ready signal is never sent then)
/// or the script failed. Its lock file is removed on the way out.
///
/// Lifecycle of the lock: the early write (`proxyUrl`) once the proxy and
/// the browser are up; the final write (`connectionId`, `cdpUrl`, `url`,
/// `ready: true`) after the first navigation, then the ready signal (with
/// that lock) to `session start`; `lastDetection` and `traffic` meanwhile.
///
/// Without `script` it stays until a stop or until the browser disconnects;
/// with one it runs the script once ready, in a child process of its own
/// ([`ScriptRun`]), and ends with it: 0 when it finished, 1 when it failed.
/// A stop ends the script (SIGTERM, then SIGKILL) before the browser is
/// closed, whatever the script does with its signals.
pub async fn run_daemon(spec: DaemonRun, script: Option<ScriptRun>, stop: DaemonStop) -> i32 {
    crate::log::stamp_lines();
    if let Err(e) = prepare_ready_fd() {
        log(format_args!("warning: {e}"));
    }
    if spec.handle_signals {
        if let Err(e) = stop_on_signals(&stop) {
            log(format_args!("warning: SIGTERM and SIGINT will not stop the session gracefully: {e}"));
        }
    }
    let pid = std::process::id();
    log(format_args!("starting session '{}' (pid {pid}) for {}", spec.name, spec.url));
    let client = match missing_display(spec.headful).map_or_else(|| spec.client_options().and_then(Client::new), Err) {
        Ok(client) => Arc::new(client),
        Err(e) => {
            report_failure(&failure_reason(&e, &[&spec.client.api_key]));
            release(&spec.dir, &spec.name, pid).await;
            log(format_args!("stopped, exit 1"));
            return 1;
        }
    };
    let weak = Arc::downgrade(&client);
    let (sink, sync) = start_lock_sync(spec.dir.clone(), spec.name.clone(), pid, TRAFFIC_INTERVAL, move || {
        let client = weak.upgrade()?;
        Some(Status {
            traffic: serde_json::to_value(client.traffic()).ok()?,
            last_proxy_error: client.last_proxy_failure().and_then(|f| serde_json::to_value(f).ok()),
            idle_since: client.browser()?.activity().idle_since().map(crate::log::iso_time),
        })
    });
    client.set_detection_sink(Some(sink));
    let daemon =
        Daemon { dir: spec.dir.clone(), name: spec.name.clone(), pid, client, sync, idle_timeout: spec.idle_timeout };

    let (info, lock) = match daemon.start(&spec.url, &stop).await {
        Ok(Ok(started)) => started,
        // Stopped while starting: never report ready.
        Ok(Err(exit)) => return daemon.shutdown(exit).await,
        Err(e) => {
            let password = daemon.client.control().config().load_full().map(|c| c.proxy_password.clone());
            report_failure(&failure_reason(&e, &[&spec.client.api_key, password.as_deref().unwrap_or("")]));
            return daemon.shutdown(DaemonExit::new(1, "start failed")).await;
        }
    };
    if let Some(exit) = stop.current() {
        return daemon.shutdown(exit).await;
    }
    if let Err(e) = signal_ready(Some(&LockData { traffic: None, ..lock })) {
        log(format_args!("warning: could not report ready: {e}"));
    }
    let connection = daemon.client.control().connection_id().unwrap_or_else(|| "none".into());
    let cdp_url = info.cdp_url.clone().unwrap_or_default();
    log(format_args!("ready: cdp {cdp_url}, proxy {}, connection {connection}", info.url));

    // Ours: a session nobody uses closes itself (its clock started at ready).
    let activity = daemon.client.browser().map(|b| Arc::clone(b.activity()));
    let idle = async move {
        match (activity, spec.idle_timeout) {
            (Some(activity), Some(timeout)) => super::idle::expired(activity, timeout).await,
            _ => std::future::pending().await,
        }
    };
    tokio::pin!(idle);
    let exit = match script {
        Some(script) => match ScriptChild::start(&script, &cdp_url) {
            Ok(mut child) => {
                log(format_args!("running {}", script.script));
                let exit = tokio::select! {
                    exit = child.wait() => exit,
                    exit = stop.requested() => exit,
                    exit = &mut idle => exit,
                };
                child.stop().await;
                exit
            }
            Err(e) => {
                log(format_args!("script failed: could not start its process: {e}"));
                DaemonExit::new(1, "script failed")
            }
        },
        None => {
            let browser = daemon.client.browser();
            let gone = async {
                if let Some(b) = browser {
                    b.wait_disconnected().await;
                }
            };
            tokio::select! {
                () = gone => DaemonExit::new(0, "browser disconnected"),
                exit = stop.requested() => exit,
                exit = &mut idle => exit,
            }
        }
    };
    daemon.shutdown(exit).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::TempDir;
    use crate::store::LockRead;
    use std::time::Duration;

    fn run_spec(dir: &LockDir, name: &str, client: RawClientOptions) -> DaemonRun {
        DaemonRun {
            dir: dir.clone(),
            name: name.into(),
            url: "http://127.0.0.1:9/".into(),
            headful: false,
            block_detection: true,
            auto_unblock: false,
            unblock_steps: None,
            unblock_geos: None,
            client,
            handle_signals: false,
            idle_timeout: None,
            profile: None,
            home: None,
        }
    }

    #[tokio::test]
    async fn session_daemon_run_that_cannot_start_exits_1_and_releases_its_lock() {
        let tmp = TempDir::new("run-fail");
        let dir = tmp.lock_dir();
        let me = std::process::id();
        // No API behind the address, and an invalid key: both fail the start.
        let unreachable = RawClientOptions {
            api_key: "key".into(),
            api_base_url: Some("http://127.0.0.1:1/v1".into()),
            timeout_ms: Some(2000.0),
            ..RawClientOptions::default()
        };
        for (name, client) in [("unreachable", unreachable), ("keyless", RawClientOptions::default())] {
            dir.claim(Some(name), LockData { pid: me, ..LockData::default() }).unwrap();
            let code = run_daemon(run_spec(&dir, name, client), None, DaemonStop::new()).await;
            assert_eq!(code, 1, "{name}");
            assert_eq!(dir.read(name).unwrap(), None, "{name}: lock released");
        }
        // A lock that names another process is left alone.
        let theirs = LockData { pid: 1, session: Some("theirs".into()), ..LockData::default() };
        dir.write("theirs", &theirs).unwrap();
        let code = run_daemon(run_spec(&dir, "theirs", RawClientOptions::default()), None, DaemonStop::new()).await;
        assert_eq!(code, 1);
        assert_eq!(dir.read("theirs").unwrap(), Some(LockRead::Valid(theirs)));
    }

    #[tokio::test]
    async fn session_daemon_stop_first_request_wins() {
        let stop = DaemonStop::new();
        assert_eq!(stop.current(), None);
        let waiter = tokio::spawn({
            let stop = stop.clone();
            async move { stop.requested().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        stop.request(1, "uncaught exception");
        stop.request(0, "SIGTERM");
        assert_eq!(waiter.await.unwrap(), DaemonExit::new(1, "uncaught exception"));
        assert_eq!(stop.requested().await, DaemonExit::new(1, "uncaught exception"));
        assert_eq!(stop.current(), Some(DaemonExit::new(1, "uncaught exception")));
    }

    const SIGNAL_CHILD_ENV: &str = "ALUVIA_TEST_SIGNAL_CHILD";

    /// A handler like Node's: restore the default and re-raise (the process ends).
    extern "C" fn reraise(sig: libc::c_int) {
        // SAFETY: async-signal-safe calls.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }

    /// The child process of `session_daemon_signals_request_a_stop`.
    fn stop_on_signal_in_child() {
        // SAFETY: installing a plain handler.
        unsafe { libc::signal(libc::SIGTERM, reraise as extern "C" fn(libc::c_int) as libc::sighandler_t) };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let stop = DaemonStop::new();
            stop_on_signals(&stop).unwrap();
            println!("armed");
            let exit = stop.requested().await;
            println!("stop: {} {}", exit.code, exit.reason);
        });
    }

    #[test]
    fn session_daemon_signals_request_a_stop() {
        if std::env::var_os(SIGNAL_CHILD_ENV).is_some() {
            return stop_on_signal_in_child();
        }
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "daemon::run::tests::session_daemon_signals_request_a_stop",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(SIGNAL_CHILD_ENV, "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let armed = lines.by_ref().map_while(std::result::Result::ok).find(|l| l.contains("armed"));
        assert!(armed.is_some());
        // SAFETY: plain syscall.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
        let rest: Vec<String> = lines.map_while(std::result::Result::ok).collect();
        let status = child.wait().unwrap();
        assert!(rest.iter().any(|l| l.contains("stop: 0 SIGTERM")), "{rest:?} {status:?}");
        assert!(status.success(), "{status:?}");
    }
}

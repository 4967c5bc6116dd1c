//! Finding and starting Chromium. We start the process ourselves (not through
//! chromiumoxide's launcher) so that it dies with us, listens on 127.0.0.1
//! only, and uses a user-data-dir of its own that is removed on close.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use std::sync::Arc;

use super::gate::{serve_host_cdp, Activity, Relays};
#[cfg(target_os = "linux")]
pub use super::isolated::Isolation;
#[cfg(target_os = "linux")]
use super::netns::Prepared;
use crate::error::{AluviaError, Result};
use crate::log::Logger;
use crate::proxy::ControlPort;

/// Which Chromium runs a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BrowserKind {
    /// The full browser in its new headless mode: what sites see as Chrome.
    #[default]
    Chromium,
    /// Chromium's headless shell (the old headless mode): half the start
    /// time and memory, told apart more easily by fingerprinting scripts.
    HeadlessShell,
}

/// The variable that chooses the kind where no option does.
pub const BROWSER_VAR: &str = "ALUVIA_BROWSER";

impl BrowserKind {
    /// `chromium` or `headless-shell`.
    pub fn parse(text: &str) -> Option<BrowserKind> {
        match text.trim() {
            "chromium" => Some(BrowserKind::Chromium),
            "headless-shell" => Some(BrowserKind::HeadlessShell),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BrowserKind::Chromium => "chromium",
            BrowserKind::HeadlessShell => "headless-shell",
        }
    }

    /// The error for a value that names no kind; `name` is the option, flag
    /// or variable it came from.
    pub fn invalid(name: &str, text: &str) -> AluviaError {
        AluviaError::OutOfRange(format!(
            "{name} must be 'chromium' or 'headless-shell', got '{}'",
            crate::text::sanitize_to(text, 40)
        ))
    }
}

/// The kind a session asks for: `flag` (named `flag_name` in errors), else
/// the value of [`BROWSER_VAR`], else `chromium`; refused with `headful` for
/// the headless shell.
pub fn choose_kind(flag: Option<&str>, flag_name: &str, env: Option<&str>, headful: bool) -> Result<BrowserKind> {
    let kind = match (flag, env.filter(|v| !v.is_empty())) {
        (Some(text), _) => BrowserKind::parse(text).ok_or_else(|| BrowserKind::invalid(flag_name, text))?,
        (None, Some(text)) => BrowserKind::parse(text).ok_or_else(|| BrowserKind::invalid(BROWSER_VAR, text))?,
        (None, None) => BrowserKind::default(),
    };
    if kind == BrowserKind::HeadlessShell && headful {
        return Err(headful_shell());
    }
    Ok(kind)
}

/// The headless shell with a window asked for.
pub fn headful_shell() -> AluviaError {
    AluviaError::Invalid(
        "The headless-shell browser has no window: it cannot run headful. Use browser 'chromium' for a visible browser."
            .into(),
    )
}

/// Where we look for a browser of `kind`, in order. Each entry names the
/// place as the error message will show it. `ALUVIA_CHROMIUM_PATH` overrides
/// either kind.
pub fn candidates(kind: BrowserKind) -> Vec<(String, Option<PathBuf>)> {
    let mut out = Vec::new();
    let env = std::env::var_os("ALUVIA_CHROMIUM_PATH").filter(|v| !v.is_empty());
    out.push(("ALUVIA_CHROMIUM_PATH".to_string(), env.map(PathBuf::from)));
    let pw_root = std::env::var_os("PLAYWRIGHT_BROWSERS_PATH")
        .filter(|v| !v.is_empty() && v != "0")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ms-playwright")));
    match kind {
        BrowserKind::Chromium => {
            if let Some(root) = pw_root {
                out.push((format!("Playwright's Chromium in {}", root.display()), playwright_chromium(&root)));
            }
            out.push(("/usr/bin/chromium".to_string(), Some(PathBuf::from("/usr/bin/chromium"))));
            for name in ["chromium-browser", "google-chrome"] {
                out.push((format!("{name} on PATH"), which(name)));
            }
        }
        BrowserKind::HeadlessShell => {
            if let Some(root) = pw_root {
                out.push((format!("Playwright's headless shell in {}", root.display()), playwright_shell(&root)));
            }
            let debian = "/usr/lib/chromium/chromium-headless-shell";
            out.push((debian.to_string(), Some(PathBuf::from(debian))));
            for name in ["chromium-headless-shell", "chrome-headless-shell"] {
                out.push((format!("{name} on PATH"), which(name)));
            }
        }
    }
    out
}

/// The newest `{prefix}*` folder under `root` holding one of `paths`.
fn playwright_browser(root: &Path, prefix: &str, paths: &[&str]) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix)))
        .collect();
    dirs.sort();
    dirs.into_iter().rev().find_map(|d| paths.iter().map(|rel| d.join(rel)).find(|p| is_executable(p)))
}

fn playwright_chromium(root: &Path) -> Option<PathBuf> {
    playwright_browser(
        root,
        "chromium-",
        &["chrome-linux/chrome", "chrome-linux64/chrome", "chrome-mac/Chromium.app/Contents/MacOS/Chromium"],
    )
}

fn playwright_shell(root: &Path) -> Option<PathBuf> {
    playwright_browser(
        root,
        "chromium_headless_shell-",
        &[
            "chrome-headless-shell-linux64/chrome-headless-shell",
            "chrome-linux/headless_shell",
            "chrome-headless-shell-mac-x64/chrome-headless-shell",
            "chrome-headless-shell-mac-arm64/chrome-headless-shell",
        ],
    )
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// The first browser of `kind` found, or one error naming every place looked
/// at. An `ALUVIA_CHROMIUM_PATH` that is set must name an executable file: a
/// wrong one is an error, never a silent fall-back to another Chromium.
pub fn find_chromium(kind: BrowserKind) -> Result<PathBuf> {
    let list = candidates(kind);
    if let Some((_, Some(p))) = list.first() {
        if !is_executable(p) {
            let what = if p.exists() { "is not an executable file" } else { "does not exist" };
            return Err(AluviaError::Invalid(format!(
                "ALUVIA_CHROMIUM_PATH is set to '{}', which {what}. Point it at a Chromium executable, or unset it to use the first one found.",
                p.display()
            )));
        }
    }
    for (_, path) in &list {
        if let Some(p) = path {
            if is_executable(p) {
                return Ok(p.clone());
            }
        }
    }
    let looked: Vec<String> = list.into_iter().map(|(name, _)| name).collect();
    Err(AluviaError::Internal(match kind {
        BrowserKind::Chromium => format!(
            "Chromium was not found. Looked at: {}. Install Chromium (on Debian: apt-get install chromium) or set ALUVIA_CHROMIUM_PATH.",
            looked.join(", ")
        ),
        BrowserKind::HeadlessShell => format!(
            "Chromium's headless shell was not found. Looked at: {}. Install it (on Debian: apt-get install chromium-headless-shell) or set ALUVIA_CHROMIUM_PATH.",
            looked.join(", ")
        ),
    }))
}

pub struct LaunchOptions {
    pub executable: PathBuf,
    /// Run Chromium in a network namespace of its own where the system allows
    /// it (see [`super::netns`]).
    pub isolate: bool,
    /// `http://127.0.0.1:PORT` of the local proxy.
    pub proxy_url: String,
    pub headless: bool,
    pub kind: BrowserKind,
    /// base64 SHA-256 public-key pins whose certificates are accepted.
    pub trust_spki: Vec<String>,
    pub user_data_dir: PathBuf,
    /// A persistent profile's lock, which Chromium inherits (the profile
    /// stays held while Chromium lives); Chromium then gets SIGTERM rather
    /// than SIGKILL when its parent dies, so that it saves the profile.
    pub profile_lock: Option<std::os::fd::RawFd>,
}

pub struct Launched {
    pub child: Child,
    /// The browser's DevTools WebSocket, as the engine connects to it.
    pub ws_url: String,
    /// The DevTools port users are given (the engine's gate when isolated).
    pub cdp_port: u16,
    /// The namespace's relays, when Chromium runs in one.
    pub isolation: Option<Isolation>,
    /// Why Chromium runs on the host's network, when it does.
    pub not_isolated: Option<String>,
    /// The gate's relays on the host's network (when not isolated).
    pub(super) relays: Option<Relays>,
    /// Clients of the published gate (`cdp_port`).
    pub activity: Arc<Activity>,
    /// Proxied requests to the DevTools ports (the gate's, the engine's,
    /// Chromium's own) are refused while these live.
    pub control_ports: Vec<ControlPort>,
}

/// The variable that turns the namespace off (`none`); `namespace`, the
/// default, asks for it.
pub const ISOLATION_VAR: &str = "ALUVIA_BROWSER_ISOLATION";

/// Whether the environment asks for a namespace (an unknown value is an error
/// naming the variable).
pub fn isolation_wanted() -> Result<bool> {
    match std::env::var(ISOLATION_VAR).ok().as_deref().map(str::trim) {
        None | Some("") | Some("namespace") => Ok(true),
        Some("none") => Ok(false),
        Some(other) => Err(AluviaError::Invalid(format!(
            "{ISOLATION_VAR} must be 'namespace' or 'none', got '{}'",
            other.chars().take(40).collect::<String>()
        ))),
    }
}

/// Variables Chromium gets from ours: what it needs to find the display,
/// fonts, locale and home, and nothing else (no API key, no proxy password).
const PASSED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "TZ",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "XAUTHORITY",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "XDG_CACHE_HOME",
    "XDG_DATA_HOME",
    "XDG_DATA_DIRS",
    "XDG_CONFIG_DIRS",
    "DBUS_SESSION_BUS_ADDRESS",
    "FONTCONFIG_PATH",
    "FONTCONFIG_FILE",
];

fn passed_env() -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    std::env::vars_os()
        .filter(|(k, _)| {
            k.to_str().is_some_and(|k| PASSED_ENV.contains(&k) || (k.starts_with("LC_") && !k.contains('=')))
        })
        .collect()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Start Chromium and wait (without blocking the runtime) for its DevTools
/// address: in a network namespace when asked and possible, else on the
/// host's network with the reason in [`Launched::not_isolated`].
pub async fn spawn(opts: &LaunchOptions, logger: &Arc<Logger>) -> Result<Launched> {
    let args = chromium_args(opts);
    let not_isolated = if !opts.isolate {
        format!("{ISOLATION_VAR}=none")
    } else if !cfg!(target_os = "linux") {
        "network namespaces exist only on Linux".to_string()
    } else {
        match spawn_isolated(opts, &args, logger).await {
            Ok(launched) => return Ok(launched),
            Err(why) => why,
        }
    };
    let (child, ready) = start_process(opts, &args, None)?;
    let (mut child, ws_url, chromium_port) = wait_devtools(child, ready).await.map_err(AluviaError::Internal)?;
    // Clients get a gate in front of Chromium's port, which keeps the idle
    // clock (and serves the owner only); the engine uses the port itself.
    let relays = Relays::new(Arc::clone(logger));
    let activity = Activity::new();
    let gate = match serve_host_cdp(&relays, chromium_port, Arc::clone(&activity)).await {
        Ok(port) => port,
        Err(e) => {
            kill(&mut child);
            return Err(AluviaError::Internal(format!("cannot serve Chromium's DevTools port: {e}")));
        }
    };
    Ok(Launched {
        child,
        ws_url,
        cdp_port: gate,
        isolation: None,
        not_isolated: Some(not_isolated),
        relays: Some(relays),
        activity,
        control_ports: vec![ControlPort::register(gate), ControlPort::register(chromium_port)],
    })
}

/// Chromium in a namespace of its own, with the engine's relays; or why it
/// cannot be had (Chromium's own failures in there included, so that the
/// caller tries the host's network before giving up).
#[cfg(target_os = "linux")]
async fn spawn_isolated(
    opts: &LaunchOptions,
    args: &[String],
    logger: &Arc<Logger>,
) -> std::result::Result<Launched, String> {
    let prepared = Prepared::new().map_err(|e| format!("cannot prepare a network namespace: {e}"))?;
    let (mut child, ready) = start_process(opts, args, Some(&prepared))
        .map_err(|e| format!("cannot create a network namespace for Chromium: {e}"))?;
    // The relay to the proxy listens before anything can ask Chromium to load
    // a page (nobody has its DevTools address yet).
    let proxy_port = url::Url::parse(&opts.proxy_url).ok().and_then(|u| u.port()).unwrap_or(0);
    let iso = match Isolation::start(prepared.into_netns(), proxy_port, Arc::clone(logger)) {
        Ok(iso) => iso,
        Err(e) => {
            kill(&mut child);
            return Err(format!("cannot relay the proxy into Chromium's network namespace: {e}"));
        }
    };
    let (mut child, ws_url, inner_port) =
        wait_devtools(child, ready).await.map_err(|e| format!("Chromium did not start in a network namespace: {e}"))?;
    // The clients' gate keeps the idle clock; the engine has a relay of its
    // own, which does not count.
    let activity = Activity::new();
    let served = async {
        let gate = iso.serve_cdp(inner_port, Some(Arc::clone(&activity))).await?;
        let engine = iso.serve_cdp(inner_port, None).await?;
        Ok::<_, std::io::Error>((gate, engine))
    };
    let (gate, engine) = match served.await {
        Ok(ports) => ports,
        Err(e) => {
            kill(&mut child);
            return Err(format!("cannot serve Chromium's DevTools port: {e}"));
        }
    };
    let ws_url = ws_url.replacen(&format!("127.0.0.1:{inner_port}/"), &format!("127.0.0.1:{engine}/"), 1);
    Ok(Launched {
        child,
        ws_url,
        cdp_port: gate,
        isolation: Some(iso),
        not_isolated: None,
        relays: None,
        activity,
        control_ports: vec![ControlPort::register(gate), ControlPort::register(engine)],
    })
}

#[cfg(not(target_os = "linux"))]
async fn spawn_isolated(_: &LaunchOptions, _: &[String], _: &Arc<Logger>) -> std::result::Result<Launched, String> {
    Err("network namespaces exist only on Linux".into())
}

/// Nothing to relay where there are no namespaces.
#[cfg(not(target_os = "linux"))]
pub struct Isolation;

#[cfg(not(target_os = "linux"))]
impl Isolation {
    pub async fn stop(&self) {}
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn chromium_args(opts: &LaunchOptions) -> Vec<String> {
    let proxy = opts.proxy_url.trim_start_matches("http://");
    let mut args: Vec<String> = vec![
        "--remote-debugging-port=0".into(),
        "--remote-debugging-address=127.0.0.1".into(),
        format!("--user-data-dir={}", opts.user_data_dir.display()),
        format!("--proxy-server=http://{proxy}"),
        // Without this, loopback hosts bypass the proxy.
        "--proxy-bypass-list=<-loopback>".into(),
        "--no-first-run".into(),
        "--no-default-browser-check".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--disable-quic".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        // One list: Chromium takes only the last of repeated feature switches.
        // SpareRendererForSitePerProcess: no renderer kept warm for a next
        // site (-1 process, -7 MiB PSS idle).
        "--disable-features=Translate,MediaRouter,DialMediaRouteProvider,OptimizationHints,AutofillServerCommunication,CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions,PrivacySandboxSettings4,NetworkTimeServiceQuerying,SpareRendererForSitePerProcess".into(),
        // The network service in the browser process (-1 process; -17 MiB
        // PSS idle for chromium, -10 MiB for the shell). It runs inside the
        // same namespace and through the same proxy settings.
        "--enable-features=NetworkServiceInProcess2".into(),
        // No crash handler processes (-1 process, -37 MiB PSS idle):
        // nothing would upload their reports anyway.
        "--disable-crashpad-for-testing".into(),
        "--disable-client-side-phishing-detection".into(),
        "--disable-default-apps".into(),
        "--disable-domain-reliability".into(),
        "--disable-breakpad".into(),
        "--no-pings".into(),
        "--disable-extensions".into(),
        "--disable-component-extensions-with-background-pages".into(),
        "--disable-field-trial-config".into(),
        "--no-service-autorun".into(),
        "--disable-search-engine-choice-screen".into(),
        "--metrics-recording-only".into(),
        "--password-store=basic".into(),
        "--use-mock-keychain".into(),
        "--mute-audio".into(),
    ];
    if opts.headless {
        args.push("--headless".into());
        args.push("--hide-scrollbars".into());
    }
    if opts.kind == BrowserKind::HeadlessShell {
        // The shell reads no profile preferences, so the WebRTC policy the
        // full browser takes from its profile is a switch here.
        args.push("--force-webrtc-ip-handling-policy=disable_non_proxied_udp".into());
    }
    if is_root() {
        args.push("--no-sandbox".into());
    }
    if !opts.trust_spki.is_empty() {
        // Only certificates with these exact keys; every other certificate
        // is checked as usual.
        args.push(format!("--ignore-certificate-errors-spki-list={}", opts.trust_spki.join(",")));
    }
    args.push("about:blank".into());
    args
}

/// The longest `TMPDIR` under which Chromium's singleton socket
/// (`org.chromium.Chromium.XXXXXX/SingletonSocket`, 45 bytes) still fits in a
/// socket address (107 bytes and a NUL).
const MAX_TMPDIR: usize = 107 - 45;

/// Chromium's own temp files (`org.chromium.Chromium.*`) go under the
/// profile, so that they go with it even when Chromium is killed; `None`
/// leaves Chromium the inherited `TMPDIR` when the profile's is too long.
fn chromium_tmpdir(profile: &Path) -> Result<Option<PathBuf>> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::DirBuilderExt;
    let tmp = profile.join("t");
    if tmp.as_os_str().as_bytes().len() > MAX_TMPDIR {
        return Ok(None);
    }
    match std::fs::DirBuilder::new().mode(0o700).create(&tmp) {
        Ok(()) => Ok(Some(tmp)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Some(tmp)),
        Err(e) => Err(AluviaError::Internal(format!("cannot create {}: {e}", tmp.display()))),
    }
}

/// What Chromium's stderr said: its DevTools address, or its last lines.
type Ready = tokio::sync::oneshot::Receiver<std::result::Result<String, String>>;

/// Start the process (in the namespace `ns` prepares, if any) with a clean
/// environment and its temp files under the profile.
fn start_process(opts: &LaunchOptions, args: &[String], ns: Option<&Prepared>) -> Result<(Child, Ready)> {
    let mut cmd = Command::new(&opts.executable);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    cmd.env_clear().envs(passed_env());
    if let Some(tmp) = chromium_tmpdir(&opts.user_data_dir)? {
        cmd.env("TMPDIR", tmp);
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        if let Some(ns) = ns {
            // SAFETY: the closure makes async-signal-safe calls only (see
            // `Prepared::entry`); it runs before the one below, so that the
            // parent-death signal is set with the namespace's credentials.
            unsafe {
                cmd.pre_exec(ns.entry());
            }
        }
        // Chromium dies with the thread that started it (a runtime worker,
        // alive as long as the process).
        let death = if opts.profile_lock.is_some() { libc::SIGTERM } else { libc::SIGKILL };
        // SAFETY: the closure is async-signal-safe (see `die_with_parent_by`).
        unsafe {
            cmd.pre_exec(crate::store::die_with_parent_by(death));
        }
        if let Some(fd) = opts.profile_lock {
            // SAFETY: fcntl is async-signal-safe; `fd` stays open in the
            // parent for the spawn, and the child's copy is its own.
            unsafe {
                cmd.pre_exec(move || {
                    let flags = libc::fcntl(fd, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = ns;
    let mut child = cmd.spawn().map_err(|e| {
        AluviaError::Internal(format!("Failed to start Chromium at {}: {e}", opts.executable.display()))
    })?;

    let Some(stderr) = child.stderr.take() else {
        let _ = child.kill();
        return Err(AluviaError::Internal("Chromium's stderr is not available".into()));
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<std::result::Result<String, String>>();
    let mut tx = Some(tx);
    std::thread::Builder::new()
        .name("aluvia-chromium-stderr".into())
        .spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = String::new();
            let mut tail: Vec<String> = Vec::new();
            let mut sent = false;
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if !sent {
                            if let Some(idx) = line.find("ws://") {
                                if let Some(tx) = tx.take() {
                                    let _ = tx.send(Ok(line[idx..].trim().to_string()));
                                }
                                sent = true;
                            } else {
                                tail.push(line.trim_end().to_string());
                                if tail.len() > 5 {
                                    tail.remove(0);
                                }
                            }
                        }
                    }
                }
            }
            if !sent {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(Err(tail.join(" | ")));
                }
            }
        })
        .map_err(|e| AluviaError::Internal(format!("cannot start a thread: {e}")))?;

    Ok((child, rx))
}

/// Wait for Chromium's DevTools address: `(child, ws_url, port)`, or the
/// reason it did not come (the process is killed then).
async fn wait_devtools(mut child: Child, ready: Ready) -> std::result::Result<(Child, String, u16), String> {
    let fail = |child: &mut Child, msg: String| {
        kill(child);
        msg
    };
    let ws_url = match tokio::time::timeout(Duration::from_secs(30), ready).await {
        Ok(Ok(Ok(url))) => url,
        Ok(Ok(Err(tail))) => {
            return Err(fail(&mut child, format!("Chromium exited before it was ready: {tail}")));
        }
        Ok(Err(_)) => return Err(fail(&mut child, "Chromium exited before it was ready".into())),
        Err(_) => return Err(fail(&mut child, "Chromium did not report its DevTools address within 30 s".into())),
    };
    let port = url::Url::parse(&ws_url).ok().and_then(|u| u.port()).unwrap_or(0);
    if port == 0 {
        return Err(fail(&mut child, format!("unexpected DevTools address from Chromium: {ws_url}")));
    }
    Ok((child, ws_url, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_in_documented_order() {
        let names: Vec<String> = candidates(BrowserKind::Chromium).into_iter().map(|(n, _)| n).collect();
        // Playwright's cache is a candidate only when HOME or
        // PLAYWRIGHT_BROWSERS_PATH says where it is.
        let playwright = names.iter().filter(|n| n.starts_with("Playwright's Chromium")).count();
        let pw_known = std::env::var_os("HOME").is_some()
            || std::env::var_os("PLAYWRIGHT_BROWSERS_PATH").is_some_and(|v| !v.is_empty() && v != "0");
        assert_eq!(playwright, usize::from(pw_known), "{names:?}");
        let rest: Vec<&str> =
            names.iter().map(String::as_str).filter(|n| !n.starts_with("Playwright's Chromium")).collect();
        assert_eq!(
            rest,
            ["ALUVIA_CHROMIUM_PATH", "/usr/bin/chromium", "chromium-browser on PATH", "google-chrome on PATH"]
        );
        if pw_known {
            assert!(names[1].starts_with("Playwright's Chromium"), "{names:?}");
        }
    }

    #[test]
    fn the_headless_shell_is_looked_for_where_its_packages_put_it() {
        let names: Vec<String> = candidates(BrowserKind::HeadlessShell).into_iter().map(|(n, _)| n).collect();
        let rest: Vec<&str> = names.iter().map(String::as_str).filter(|n| !n.starts_with("Playwright's")).collect();
        assert_eq!(
            rest,
            [
                "ALUVIA_CHROMIUM_PATH",
                "/usr/lib/chromium/chromium-headless-shell",
                "chromium-headless-shell on PATH",
                "chrome-headless-shell on PATH"
            ]
        );
        assert_eq!(BrowserKind::parse("headless-shell"), Some(BrowserKind::HeadlessShell));
        assert_eq!(BrowserKind::parse("chromium"), Some(BrowserKind::Chromium));
        assert_eq!(BrowserKind::parse("chrome"), None);
        assert_eq!(
            BrowserKind::invalid("browser", "chrome").to_string(),
            "browser must be 'chromium' or 'headless-shell', got 'chrome'"
        );
    }
}

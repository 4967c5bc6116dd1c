//! `aluvia auth`: the device-code login, the private config file it saves the
//! API key in, and where every command finds its key (the environment first,
//! then that file).
//!
//! The file is `~/.aluvia/config.json`: a JSON object with `apiKey`. Its
//! directory is 0700 and the file 0600, both re-applied on every write, and
//! every write is a temp file + rename in the same directory. A file that is
//! not JSON, or JSON that is not ours, is never read as a key nor overwritten.
//!
//! The folder and the file are opened without following a link (the file
//! relative to the folder's descriptor, and without blocking), and both open
//! descriptors must show a directory and a regular file owned by the
//! effective user with no group/other write bit; modes are set through the
//! descriptors. Otherwise every use (reading the key, status, logout, login)
//! fails with one line naming the path and what is wrong, having changed
//! nothing: run as root with another user's HOME, a link planted there
//! redirects nothing, and a FIFO in place of the file fails at once.

use std::ffi::{CStr, CString};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::api::{error_for_status, ApiClient, ApiRequest, ApiResponse, Call};
use crate::error::{AluviaError, Result};

/// The error when neither the environment nor the config file has a key.
pub const NO_KEY_MESSAGE: &str = "No API key found. Run `aluvia auth` to log in, or set ALUVIA_API_KEY.";

/// The longest a login waits for its approval, whatever `expires_in` says.
pub const LOGIN_CAP: Duration = Duration::from_secs(600);

/// What a `slow_down` answer adds to the polling interval.
pub const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);

pub(crate) const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// `{home}/.aluvia/config.json`.
pub fn config_path(home: &Path) -> PathBuf {
    home.join(".aluvia").join("config.json")
}

/// The home directory: the given one, else `HOME`.
pub fn home_dir(home: Option<&str>) -> Result<PathBuf> {
    home.filter(|h| !h.trim().is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from))
        .ok_or_else(|| AluviaError::Invalid("Cannot find the home directory: HOME is not set.".into()))
}

/// What the config file holds.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigFile {
    Missing,
    /// Ours: the whole object (other fields are kept on rewrite) and its key.
    Ours {
        object: Map<String, Value>,
        api_key: String,
    },
}

fn refused(path: &Path, why: &str) -> AluviaError {
    AluviaError::Invalid(format!(
        "The config file {} {why}; it was left untouched. Move it away and run `aluvia auth` again.",
        path.display()
    ))
}

/// The one-line error for a config folder or file that is not safe to use.
pub(crate) fn unsafe_path(path: &Path, why: &str) -> AluviaError {
    AluviaError::Invalid(format!("Refusing to use {}: {why}", path.display()))
}

pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn kind_name(file_type: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_dir() {
        "a directory"
    } else if file_type.is_symlink() {
        "a symlink"
    } else {
        "a regular file"
    }
}

/// Checks what an open descriptor (or `lstat`) shows: the right type, owned
/// by us, no group/other write bit. `dir` tells which type is wanted.
pub(crate) fn check(path: &Path, meta: &fs::Metadata, dir: bool) -> Result<()> {
    let file_type = meta.file_type();
    if file_type.is_symlink() {
        return Err(unsafe_path(path, "it is a symlink."));
    }
    if dir && !file_type.is_dir() {
        return Err(unsafe_path(path, &format!("it is not a directory ({}).", kind_name(file_type))));
    }
    if !dir && !file_type.is_file() {
        return Err(unsafe_path(path, &format!("it is not a regular file ({}).", kind_name(file_type))));
    }
    let me = euid();
    if meta.uid() != me {
        return Err(unsafe_path(path, &format!("it is owned by uid {}, not by you (uid {me}).", meta.uid())));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        let fix = if dir { DIR_MODE } else { FILE_MODE };
        return Err(unsafe_path(
            path,
            &format!("it is writable by group or others (mode {mode:04o}). Run chmod {fix:o} {}.", path.display()),
        ));
    }
    Ok(())
}

/// The config folder and file name of `path`.
fn split(path: &Path) -> Result<(&Path, CString)> {
    let bad = || AluviaError::Internal(format!("the config path {} has no folder or name", path.display()));
    let dir = path.parent().ok_or_else(bad)?;
    let name = CString::new(path.file_name().ok_or_else(bad)?.as_bytes()).map_err(|_| bad())?;
    Ok((dir, name))
}

/// Opens the config folder without following a link (`None` when it does
/// not exist) and checks the open folder: a directory, ours, not writable
/// by group or others.
pub(crate) fn open_dir(dir: &Path) -> Result<Option<File>> {
    let opened = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(dir);
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        // ENOTDIR is also what a link gives with O_DIRECTORY: look at it to say which.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) => {
            return match fs::symlink_metadata(dir) {
                Ok(meta) => {
                    check(dir, &meta, true)?;
                    Err(unsafe_path(dir, &format!("it cannot be opened ({e}).")))
                }
                // A component above it is not a folder: there is no config.
                Err(_) => Ok(None),
            };
        }
        Err(e) => return Err(unsafe_path(dir, &format!("it cannot be opened ({e})."))),
    };
    let meta = file.metadata().map_err(|e| unsafe_path(dir, &format!("it cannot be inspected ({e}).")))?;
    check(dir, &meta, true)?;
    Ok(Some(file))
}

/// `openat(dir, name, flags | O_CLOEXEC, mode)`.
pub(crate) fn open_at(dir: &File, name: &CStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<File> {
    // SAFETY: `dir` is an open descriptor and `name` a NUL-terminated string,
    // both alive for the call.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC, libc::c_uint::from(mode)) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn rename_at(dir: &File, from: &CStr, to: &CStr) -> io::Result<()> {
    // SAFETY: `dir` is an open descriptor; both names are NUL-terminated and alive for the call.
    if unsafe { libc::renameat(dir.as_raw_fd(), from.as_ptr(), dir.as_raw_fd(), to.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn unlink_at(dir: &File, name: &CStr) -> io::Result<()> {
    // SAFETY: `dir` is an open descriptor; `name` is NUL-terminated and alive for the call.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads `name` in the open folder `dir` (`path` is only for messages): the
/// file is opened without following a link and without blocking (a FIFO
/// does not hang), and checked before anything is read from it.
fn read_in(dir: &File, name: &CStr, path: &Path) -> Result<ConfigFile> {
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
    let mut file = match open_at(dir, name, flags, 0) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ConfigFile::Missing),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(unsafe_path(path, "it is a symlink.")),
        // A socket cannot be opened at all.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            return Err(unsafe_path(path, "it is not a regular file (a socket)."));
        }
        Err(e) => return Err(refused(path, &format!("cannot be read ({e})"))),
    };
    let meta = file.metadata().map_err(|e| refused(path, &format!("cannot be read ({e})")))?;
    check(path, &meta, false)?;
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(|e| refused(path, &format!("cannot be read ({e})")))?;
    parse_config(path, &text)
}

fn parse_config(path: &Path, text: &str) -> Result<ConfigFile> {
    let value: Value = serde_json::from_str(text).map_err(|_| refused(path, "is not valid JSON"))?;
    let Value::Object(object) = value else {
        return Err(refused(path, "is not an Aluvia config (not a JSON object)"));
    };
    match object.get("apiKey") {
        Some(Value::String(key)) if !key.trim().is_empty() => {
            let api_key = key.trim().to_string();
            Ok(ConfigFile::Ours { object, api_key })
        }
        _ => Err(refused(path, "is not an Aluvia config (no apiKey)")),
    }
}

/// Reads the config file: missing, ours, or an error that names the file
/// (not JSON, not an object with a string `apiKey`, unreadable) or says why
/// the folder or file is not safe to use (a symlink, not a directory or
/// regular file, another user's, writable by group or others).
pub fn read_config(path: &Path) -> Result<ConfigFile> {
    let (dir_path, name) = split(path)?;
    match open_dir(dir_path)? {
        None => Ok(ConfigFile::Missing),
        Some(dir) => read_in(&dir, &name, path),
    }
}

/// [`open_dir`], creating the folder (0700, and its parents) when it does
/// not exist; `cannot_create` words a failure to create it.
pub(crate) fn open_or_create_dir(dir_path: &Path, cannot_create: impl Fn(io::Error) -> AluviaError) -> Result<File> {
    if let Some(dir) = open_dir(dir_path)? {
        return Ok(dir);
    }
    if let Some(home) = dir_path.parent() {
        fs::create_dir_all(home).map_err(&cannot_create)?;
    }
    match fs::DirBuilder::new().mode(DIR_MODE).create(dir_path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(cannot_create(e)),
    }
    open_dir(dir_path)?.ok_or_else(|| cannot_create(io::ErrorKind::NotFound.into()))
}

/// Saves `api_key` in the config file (keeping other fields of ours),
/// atomically, with the directory at 0700 and the file at 0600. Refuses a
/// file that is not ours, and a folder or file that is not safe to use,
/// before it changes anything.
pub fn save_key(path: &Path, api_key: &str) -> Result<()> {
    let (dir_path, name) = split(path)?;
    let cannot_write =
        |e: io::Error| AluviaError::Invalid(format!("Cannot write the config file {}: {e}", path.display()));
    let dir = open_or_create_dir(dir_path, cannot_write)?;
    let mut object = match read_in(&dir, &name, path)? {
        ConfigFile::Missing => Map::new(),
        ConfigFile::Ours { object, .. } => object,
    };
    object.insert("apiKey".into(), Value::String(api_key.to_string()));
    let mut text = serde_json::to_string_pretty(&Value::Object(object))
        .map_err(|e| AluviaError::Internal(format!("cannot encode the config: {e}")))?;
    text.push('\n');
    write_private(&dir, &name, text.as_bytes()).map_err(cannot_write)
}

/// Writes `bytes` to `name` in the open folder `dir`: the folder set to 0700
/// and a new temp file at 0600 (both through their descriptors), renamed
/// over `name`.
fn write_private(dir: &File, name: &CStr, bytes: &[u8]) -> io::Result<()> {
    dir.set_permissions(fs::Permissions::from_mode(DIR_MODE))?;
    let tmp = format!(".{}.{}.{}.tmp", name.to_string_lossy(), std::process::id(), uuid::Uuid::new_v4().simple());
    let tmp = CString::new(tmp).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
    let mut file = open_at(dir, &tmp, flags, FILE_MODE as libc::mode_t)?;
    let result = (|| {
        // The mode given to openat() is filtered by the umask: set it exactly.
        file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        rename_at(dir, &tmp, name)
    })();
    if result.is_err() {
        let _ = unlink_at(dir, &tmp);
    } else {
        // The rename is durable once the folder is synced; a failure here loses nothing written.
        let _ = dir.sync_all();
    }
    result
}

/// Where a key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeySource {
    Env,
    Config,
}

/// The key for a command: `env_key` when it is not blank, else the config
/// file's, else [`NO_KEY_MESSAGE`]. A config file that is not ours is an
/// error only when it is needed.
pub fn resolve_key(env_key: Option<&str>, path: &Path) -> Result<(String, KeySource)> {
    if let Some(key) = env_key.map(str::trim).filter(|k| !k.is_empty()) {
        return Ok((key.to_string(), KeySource::Env));
    }
    match read_config(path)? {
        ConfigFile::Ours { api_key, .. } => Ok((api_key, KeySource::Config)),
        ConfigFile::Missing => Err(AluviaError::Invalid(NO_KEY_MESSAGE.into())),
    }
}

/// `aluvia auth status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub authenticated: bool,
    pub source: Option<KeySource>,
    pub config_file: String,
}

pub fn status(env_key: Option<&str>, path: &Path) -> Result<Status> {
    let config_file = path.display().to_string();
    match resolve_key(env_key, path) {
        Ok((_, source)) => Ok(Status { authenticated: true, source: Some(source), config_file }),
        Err(AluviaError::Invalid(m)) if m == NO_KEY_MESSAGE => {
            Ok(Status { authenticated: false, source: None, config_file })
        }
        Err(e) => Err(e),
    }
}

/// `aluvia auth logout`: removes the file when it is ours. `true` when there was one.
pub fn logout(path: &Path) -> Result<bool> {
    let (dir_path, name) = split(path)?;
    let Some(dir) = open_dir(dir_path)? else { return Ok(false) };
    match read_in(&dir, &name, path)? {
        ConfigFile::Missing => Ok(false),
        ConfigFile::Ours { .. } => match unlink_at(&dir, &name) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(AluviaError::Invalid(format!("Cannot remove the config file {}: {e}", path.display()))),
        },
    }
}

// ------------------------------------------------------------ device login

/// What `POST /auth/cli/init` returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceLogin {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri_complete: String,
    /// Seconds between polls.
    pub interval: u64,
    /// Seconds the code lives.
    pub expires_in: u64,
}

/// One answer of `POST /auth/cli/poll`.
#[derive(Debug, Clone, PartialEq)]
pub enum Poll {
    Pending,
    SlowDown,
    Denied,
    Expired,
    Invalid,
    Approved(String),
}

fn data_object(response: &ApiResponse) -> Option<&Map<String, Value>> {
    match &response.body {
        Some(Value::Object(obj)) => match obj.get("data") {
            Some(Value::Object(data)) => Some(data),
            _ => Some(obj),
        },
        _ => None,
    }
}

/// The error code of an answer: `error.code` of the envelope, or an OAuth-style `error` string.
fn error_code(response: &ApiResponse) -> Option<&str> {
    match &response.body {
        Some(Value::Object(obj)) => match obj.get("error") {
            Some(Value::Object(err)) => err.get("code").and_then(Value::as_str),
            Some(Value::String(code)) => Some(code),
            _ => None,
        },
        _ => None,
    }
}

/// Reads an init answer.
pub fn parse_init(response: &ApiResponse) -> Result<DeviceLogin> {
    if !(200..300).contains(&response.status) {
        return Err(error_for_status(response));
    }
    let bad =
        || AluviaError::api("The login could not start: the API's answer is missing fields.", Some(response.status));
    let data = data_object(response).ok_or_else(bad)?;
    let text = |k: &str| data.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    let secs = |k: &str| data.get(k).and_then(Value::as_u64);
    Ok(DeviceLogin {
        device_code: text("device_code").ok_or_else(bad)?,
        // Both are shown in the terminal: no escape sequences from the server.
        user_code: text("user_code").map(|s| crate::text::sanitize(&s)).ok_or_else(bad)?,
        verification_uri_complete: text("verification_uri_complete")
            .map(|s| crate::text::sanitize(&s))
            .ok_or_else(bad)?,
        interval: secs("interval").unwrap_or(5),
        expires_in: secs("expires_in").ok_or_else(bad)?,
    })
}

/// Reads a poll answer.
pub fn parse_poll(response: &ApiResponse) -> Result<Poll> {
    if (200..300).contains(&response.status) {
        if let Some(key) = data_object(response).and_then(|d| d.get("api_key")).and_then(Value::as_str) {
            if !key.trim().is_empty() {
                return Ok(Poll::Approved(key.trim().to_string()));
            }
        }
    }
    match error_code(response) {
        Some("authorization_pending") => Ok(Poll::Pending),
        Some("slow_down") => Ok(Poll::SlowDown),
        Some("denied" | "access_denied") => Ok(Poll::Denied),
        Some("expired" | "expired_token") => Ok(Poll::Expired),
        Some("invalid" | "invalid_grant") => Ok(Poll::Invalid),
        _ if (200..300).contains(&response.status) => {
            Err(AluviaError::api("The login failed: the API's answer has no API key.", Some(response.status)))
        }
        _ => Err(error_for_status(response)),
    }
}

pub const DENIED: &str = "The login was denied.";
pub const EXPIRED: &str = "The login code expired. Run `aluvia auth` again.";
pub const INVALID: &str = "The login code is not valid. Run `aluvia auth` again.";

/// A client for the two unauthenticated auth endpoints.
fn anonymous(base_url: Option<&str>) -> Result<ApiClient> {
    ApiClient::without_key(base_url, None)
}

fn post(path: &str, body: Option<Value>) -> ApiRequest {
    ApiRequest {
        method: "POST".into(),
        path: path.into(),
        body: Some(body.unwrap_or_else(|| Value::Object(Map::new()))),
        ..Default::default()
    }
}

/// `POST {apiBase}/auth/cli/init`.
pub async fn start_login(base_url: Option<&str>) -> Result<DeviceLogin> {
    let client = anonymous(base_url)?;
    parse_init(&client.send(&post("/auth/cli/init", None)).await?)
}

/// Polls (at once, then every `interval` s, 5 s more after each `slow_down`) until the login is approved (or denied, expired, invalid, or
/// `min(expires_in, cap)` has passed), checks the key with `GET /account`,
/// and saves it to `path`. Nothing is saved when the check fails.
pub async fn finish_login(base_url: Option<&str>, login: &DeviceLogin, path: &Path, cap: Duration) -> Result<()> {
    let client = anonymous(base_url)?;
    let limit = cap.min(Duration::from_secs(login.expires_in));
    let deadline = tokio::time::Instant::now() + limit;
    let mut interval = Duration::from_secs(login.interval);
    let body = serde_json::json!({ "device_code": login.device_code });
    // The first poll goes at once (an approval may already be there), then one every `interval`.
    let mut wake = tokio::time::Instant::now();
    let key = loop {
        if wake > deadline {
            // Past `expires_in` the code is dead; past the cap we gave up.
            let expired = limit == Duration::from_secs(login.expires_in);
            return Err(if expired { AluviaError::Invalid(EXPIRED.into()) } else { timed_out(limit) });
        }
        tokio::time::sleep_until(wake).await;
        match parse_poll(&client.send(&post("/auth/cli/poll", Some(body.clone()))).await?)? {
            Poll::Pending => {}
            Poll::SlowDown => interval += SLOW_DOWN_STEP,
            Poll::Denied => return Err(AluviaError::Invalid(DENIED.into())),
            Poll::Expired => return Err(AluviaError::Invalid(EXPIRED.into())),
            Poll::Invalid => return Err(AluviaError::Invalid(INVALID.into())),
            Poll::Approved(key) => break key,
        }
        wake = tokio::time::Instant::now() + interval;
    };
    let checked = ApiClient::new(&key, base_url, None)?;
    if let Err(e) = checked.call(&Call::AccountGet).await {
        return Err(AluviaError::Invalid(format!("The API key from the login did not work ({e}); nothing was saved.")));
    }
    save_key(path, &key)
}

fn timed_out(limit: Duration) -> AluviaError {
    let secs = limit.as_secs();
    let span =
        if secs >= 60 && secs.is_multiple_of(60) { format!("{} minutes", secs / 60) } else { format!("{secs} s") };
    AluviaError::Invalid(format!("The login timed out after {span} without approval. Run `aluvia auth` again."))
}

#[cfg(test)]
mod tests;

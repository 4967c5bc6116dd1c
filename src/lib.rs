#![deny(clippy::all)]
//! The napi binding: a thin layer over `aluvia-core` and `aluvia-emulator`.
//! Exported types carry a `Binding` prefix; the clean names belong to the JS
//! API in `lib/`. One file per area: `api`, `client`, `session` (the CLI's
//! background sessions), `auth`, `rules`, `unblock` (the ladder's flags),
//! `emulator`; `errors` is how the engine's errors cross.

use napi::bindgen_prelude::*;

pub mod api;
pub mod auth;
pub mod client;
pub mod emulator;
pub mod errors;
pub mod rules;
pub mod session;
pub mod unblock;

use errors::to_napi;

/// Worker threads of the addon's runtime: `ALUVIA_WORKER_THREADS`, else 1.
/// The engine is I/O-bound; one worker avoids cross-thread wake-ups and
/// leaves the other cores to Node and Chromium.
fn worker_threads() -> usize {
    std::env::var("ALUVIA_WORKER_THREADS").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(1)
}

#[napi_derive::module_init]
fn init() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        eprintln!("[aluvia] internal error: this is a bug in aluvia, please report it");
        default_hook(info);
    }));
    if let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads())
        .enable_all()
        .thread_name("aluvia")
        .build()
    {
        create_custom_tokio_runtime(rt);
    }
}

/// Runs blocking file work (it may wait on the directory lock) off the JS thread.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    aluvia_core::task::off_thread(move || Ok(f())).await.map_err(to_napi)?
}

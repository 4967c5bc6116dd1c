//! `self_reload_loop`: a page that keeps navigating to its own URL without
//! any client asking for it (a JS challenge that sets a cookie and reloads,
//! and never gets past itself).

use std::collections::VecDeque;

/// This many self-requested navigations of one URL within the window is a loop.
pub const SELF_RELOAD_MIN_COUNT: usize = 3;
/// The window, in milliseconds.
pub const SELF_RELOAD_WINDOW_MS: u64 = 10_000;

/// The main-frame navigations of one page, as far as a loop is concerned.
#[derive(Debug, Default, Clone)]
pub struct ReloadLoop {
    url: String,
    /// When the page itself asked for a navigation to `url`, oldest first.
    times: VecDeque<u64>,
}

impl ReloadLoop {
    /// Records a main-frame navigation to `url` at `now_ms`. `by_page` is true
    /// when the page asked for it itself (script, meta refresh) rather than a
    /// client (CDP `Page.navigate`/`Page.reload`, the address bar). Returns the
    /// number of self-requested navigations of that URL within the window when
    /// it reaches [`SELF_RELOAD_MIN_COUNT`].
    ///
    /// A navigation elsewhere, or one a client asked for, starts over. The
    /// fragment is not part of the URL compared.
    pub fn record(&mut self, url: &str, now_ms: u64, by_page: bool) -> Option<usize> {
        let url = url.split('#').next().unwrap_or_default();
        if !by_page || url != self.url {
            self.url = url.to_string();
            self.times.clear();
            if !by_page {
                return None;
            }
        }
        self.times.push_back(now_ms);
        while self.times.front().is_some_and(|t| now_ms.saturating_sub(*t) > SELF_RELOAD_WINDOW_MS) {
            self.times.pop_front();
        }
        // The count only matters up to the window; keep the queue bounded.
        if self.times.len() > SELF_RELOAD_MIN_COUNT * 100 {
            self.times.pop_front();
        }
        (self.times.len() >= SELF_RELOAD_MIN_COUNT).then_some(self.times.len())
    }
}

//! A tiny leveled logger writing to stderr. Messages never carry secrets: call
//! sites pass only hostnames, statuses and reasons.

use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Silent = 0,
    Info = 1,
    Debug = 2,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "silent" => Some(Level::Silent),
            "info" => Some(Level::Info),
            "debug" => Some(Level::Debug),
            _ => None,
        }
    }
}

/// A per-client log level, shared by everything a client starts.
#[derive(Debug)]
pub struct Logger {
    level: AtomicU8,
}

impl Default for Logger {
    fn default() -> Self {
        Logger::new(Level::Info)
    }
}

impl Logger {
    pub fn new(level: Level) -> Self {
        Logger { level: AtomicU8::new(level as u8) }
    }

    pub fn enabled(&self, level: Level) -> bool {
        level != Level::Silent && self.level.load(Ordering::Relaxed) >= level as u8
    }

    pub fn warn(&self, msg: impl AsRef<str>) {
        if self.enabled(Level::Info) {
            eprintln!("[aluvia] warn: {}", msg.as_ref());
        }
    }

    pub fn info(&self, msg: impl AsRef<str>) {
        if self.enabled(Level::Info) {
            eprintln!("[aluvia] {}", msg.as_ref());
        }
    }

    pub fn debug(&self, msg: impl AsRef<str>) {
        if self.enabled(Level::Debug) {
            eprintln!("[aluvia] debug: {}", msg.as_ref());
        }
    }

    /// A raw line at debug level (for machine-readable JSON lines).
    pub fn debug_line(&self, line: impl AsRef<str>) {
        if self.enabled(Level::Debug) {
            eprintln!("{}", line.as_ref());
        }
    }
}

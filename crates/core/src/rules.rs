//! The routing rules: which hostnames go through the gateway.
//!
//! Rules are normalized once per config change; `should_proxy` is then a
//! handful of string comparisons per request.

use crate::error::{AluviaError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    /// `*.example.com`: stored as `.example.com`, matches strict subdomains.
    Suffix(String),
    /// `google.*`: stored as `google.`, matches `google.` + anything without a further label before it.
    Prefix(String),
}

impl Pattern {
    fn parse(p: &str) -> Pattern {
        if let Some(rest) = p.strip_prefix("*.") {
            Pattern::Suffix(format!(".{rest}"))
        } else if let Some(rest) = p.strip_suffix(".*") {
            Pattern::Prefix(format!("{rest}."))
        } else {
            Pattern::Exact(p.to_string())
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            Pattern::Exact(p) => host == p,
            Pattern::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
            Pattern::Prefix(p) => host.len() > p.len() && host.starts_with(p.as_str()),
        }
    }
}

/// A normalized rule set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    all: bool,
    include: Vec<Pattern>,
    exclude: Vec<Pattern>,
}

impl RuleSet {
    /// Normalize raw rules: trim, drop empty, lower-case. `AUTO` is a
    /// placeholder and proxies nothing.
    pub fn new<S: AsRef<str>>(rules: &[S]) -> RuleSet {
        let mut set = RuleSet::default();
        for raw in rules {
            let rule = raw.as_ref().trim().to_ascii_lowercase();
            if rule.is_empty() || rule == "auto" {
                continue;
            }
            if let Some(ex) = rule.strip_prefix('-') {
                let ex = ex.trim();
                if !ex.is_empty() {
                    set.exclude.push(Pattern::parse(ex));
                }
            } else if rule == "*" {
                set.all = true;
            } else {
                set.include.push(Pattern::parse(&rule));
            }
        }
        set
    }

    /// True when requests to `hostname` go through the gateway.
    pub fn should_proxy(&self, hostname: &str) -> bool {
        if !self.all && self.include.is_empty() {
            return false;
        }
        let host = normalize_host(hostname);
        if host.is_empty() {
            return false;
        }
        if self.exclude.iter().any(|p| p.matches(&host)) {
            return false;
        }
        self.all || self.include.iter().any(|p| p.matches(&host))
    }

    pub fn is_empty(&self) -> bool {
        !self.all && self.include.is_empty()
    }
}

/// Lower-case, strip IPv6 brackets, a port and a trailing dot.
pub fn normalize_host(hostname: &str) -> String {
    let h = hostname.trim();
    let h = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if h.matches(':').count() == 1 {
        h.split(':').next().unwrap_or(h)
    } else {
        h
    };
    h.trim_end_matches('.').to_ascii_lowercase()
}

/// The most characters of an offending rule an error message shows.
const SHOWN_RULE_CHARS: usize = 100;

/// Refuses rules that hold a control character (C0, DEL or C1, tab and
/// newlines included): the first such rule is an [`AluviaError::Invalid`]
/// whose one-line message shows it escaped, cut after
/// [`SHOWN_RULE_CHARS`] characters. Every way of setting rules (the API
/// client, `updateRules`, `session set-rules`) checks with this before
/// anything is sent or changed.
pub fn validate_rules<S: AsRef<str>>(rules: &[S]) -> Result<()> {
    let Some(rule) = rules.iter().map(AsRef::as_ref).find(|r| r.chars().any(char::is_control)) else {
        return Ok(());
    };
    let mut shown: String = rule.chars().take(SHOWN_RULE_CHARS).flat_map(char::escape_debug).collect();
    if rule.chars().nth(SHOWN_RULE_CHARS).is_some() {
        shown.push('…');
    }
    Err(AluviaError::Invalid(format!("Invalid rule '{shown}': rules cannot contain control characters.")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxied(rules: &[&str], host: &str) -> bool {
        RuleSet::new(rules).should_proxy(host)
    }

    #[test]
    fn spec_table() {
        assert!(proxied(&["*"], "anything.org"));
        assert!(proxied(&["example.com"], "EXAMPLE.com"));
        assert!(!proxied(&["example.com"], "www.example.com"));
        assert!(proxied(&["*.example.com"], "www.example.com"));
        assert!(proxied(&["*.example.com"], "a.b.example.com"));
        assert!(!proxied(&["*.example.com"], "example.com"));
        assert!(proxied(&["google.*"], "google.com"));
        assert!(proxied(&["google.*"], "google.co.uk"));
        assert!(!proxied(&["google.*"], "www.google.com"));
        assert!(!proxied(&["*", "-example.com"], "example.com"));
        assert!(proxied(&["*", "-example.com"], "other.com"));
        assert!(!proxied(&["example.com", "-example.com"], "example.com"));
    }

    #[test]
    fn empty_and_auto_proxy_nothing() {
        assert!(!proxied(&[], "example.com"));
        assert!(!proxied(&["AUTO"], "example.com"));
        assert!(!proxied(&["  ", ""], "example.com"));
    }

    #[test]
    fn normalization() {
        assert!(proxied(&["  Example.COM  "], "example.com"));
        assert!(proxied(&["example.com"], "example.com."));
        assert!(proxied(&["example.com"], "example.com:8443"));
        assert!(proxied(&["127.0.0.1"], "127.0.0.1:8080"));
        assert!(proxied(&["::1"], "[::1]:8080"));
        assert!(proxied(&["::1"], "::1"));
        assert!(!proxied(&["*"], ""));
    }

    fn refusal(rules: &[&str]) -> String {
        match validate_rules(rules) {
            Err(AluviaError::Invalid(message)) => message,
            other => panic!("{rules:?} not refused as invalid: {other:?}"),
        }
    }

    #[test]
    fn validate_rules_refuses_control_characters() {
        let cases = [
            ("\u{7}bad.com", r"\u{7}bad.com"),
            ("a\tb.com", r"a\tb.com"),
            ("a.com\n", r"a.com\n"),
            ("\ra.com", r"\ra.com"),
            ("\u{0}", r"\0"),
            ("\u{1b}[31mred.com", r"\u{1b}[31mred.com"),
            ("del\u{7f}.com", r"del\u{7f}.com"),
            ("nel\u{85}.com", r"nel\u{85}.com"),
            ("csi\u{9b}31m.com", r"csi\u{9b}31m.com"),
            ("\u{1f}", r"\u{1f}"),
            ("\u{9f}", r"\u{9f}"),
        ];
        for (rule, shown) in cases {
            let message = refusal(&["ok.com", rule, "\u{7}later.com"]);
            assert_eq!(message, format!("Invalid rule '{shown}': rules cannot contain control characters."));
            assert!(!message.chars().any(char::is_control), "{message:?}");
        }
        // A quote in the rule cannot end the quoted part early.
        assert_eq!(refusal(&["it's\u{7}"]), r"Invalid rule 'it\'s\u{7}': rules cannot contain control characters.");
        // A long rule is shown cut.
        let long = format!("\u{7}{}", "a".repeat(500));
        let message = refusal(&[long.as_str()]);
        assert!(message.starts_with(&format!(r"Invalid rule '\u{{7}}{}…': ", "a".repeat(99))), "{message}");
    }

    #[test]
    fn validate_rules_allows_ordinary_rules() {
        let ok: [&str; 0] = [];
        assert_eq!(validate_rules(&ok), Ok(()));
        let rules = [
            "*",
            "-example.com",
            "*.example.com",
            "google.*",
            "AUTO",
            "",
            "  spaced.com  ",
            "bücher.de",
            "*.例え.jp",
            "::1",
            "a\u{a0}b",
            "🙂.ws",
            r"back\slash",
        ];
        assert_eq!(validate_rules(&rules), Ok(()));
        assert_eq!(validate_rules(&rules.map(String::from)), Ok(()));
    }
}

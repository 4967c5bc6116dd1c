//! The routing rules: which hostnames go through the gateway.
//!
//! Rules are normalized once per config change; `should_proxy` is then a
//! handful of string comparisons per request.

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
}

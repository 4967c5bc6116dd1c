//! Text that comes from elsewhere (an API server, a browser, a caller's URL)
//! made fit for an error message or a log line.

/// The longest sanitized text, in characters, the ellipsis included.
pub const MAX_MESSAGE_CHARS: usize = 300;

const ESC: char = '\u{1b}';
const BEL: char = '\u{7}';

/// One line of at most [`MAX_MESSAGE_CHARS`] characters: ANSI escape
/// sequences removed, CR, LF and tab turned into a space, every other control
/// or bidirectional-formatting character removed, userinfo in URLs redacted
/// (see [`redact_userinfo`]), and an ellipsis where the text was cut.
pub fn sanitize(text: &str) -> String {
    sanitize_to(text, MAX_MESSAGE_CHARS)
}

/// [`sanitize`] with another length cap (at least 1).
pub fn sanitize_to(text: &str, max_chars: usize) -> String {
    let max_chars = max_chars.max(1);
    // Clean a little more than fits, so that userinfo just past the cap is
    // still seen (and redacted) before the text is cut.
    let (cleaned, more) = clean(text, max_chars + 256);
    let redacted = redact_userinfo(cleaned.trim());
    let count = redacted.chars().count();
    if count <= max_chars && !more {
        return redacted;
    }
    let mut out: String = redacted.chars().take(max_chars - 1).collect();
    // An authority cut in the middle may hold userinfo whose `@` was cut off.
    if let Some(i) = out.rfind("://") {
        if !out[i + 3..].contains(|c: char| matches!(c, '/' | '?' | '#' | '@') || c.is_whitespace()) {
            out.truncate(i + 3);
        }
    }
    out.push('…');
    out
}

/// `text` without escape sequences and control characters, at most `limit`
/// characters of it, and whether there was more.
fn clean(text: &str, limit: usize) -> (String, bool) {
    let mut out = String::new();
    let mut count = 0;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let keep = match c {
            ESC => {
                skip_escape(&mut chars);
                None
            }
            // C1 CSI: the 8-bit form of `ESC [`.
            '\u{9b}' => {
                skip_csi(&mut chars);
                None
            }
            // C1 OSC, DCS, SOS, PM and APC: control strings.
            '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => {
                skip_string(&mut chars);
                None
            }
            '\r' | '\n' | '\t' => Some(' '),
            c if c.is_control() || is_bidi_control(c) => None,
            c => Some(c),
        };
        if let Some(c) = keep {
            if count == limit {
                return (out, true);
            }
            out.push(c);
            count += 1;
        }
    }
    (out, false)
}

/// The characters that reorder how text displays (U+202A–U+202E, U+2066–U+2069).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

/// After an ESC: skip the rest of the sequence it starts.
fn skip_escape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    match chars.next() {
        Some('[') => skip_csi(chars),
        Some(']' | 'P' | 'X' | '^' | '_') => skip_string(chars),
        // nF sequences: intermediates (0x20–0x2F), then one final byte.
        Some(c) if ('\u{20}'..='\u{2f}').contains(&c) => {
            while chars.next_if(|c| ('\u{20}'..='\u{2f}').contains(c)).is_some() {}
            chars.next();
        }
        // Any other two-character sequence (`ESC 7`, `ESC c`, ...).
        _ => {}
    }
}

/// Control sequence: parameter and intermediate bytes, then one final byte.
fn skip_csi(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while chars.next_if(|c| ('\u{20}'..='\u{3f}').contains(c)).is_some() {}
    chars.next_if(|c| ('\u{40}'..='\u{7e}').contains(c));
}

/// Control string (OSC, DCS, ...): up to BEL or ST (`ESC \` or U+009C).
fn skip_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while let Some(c) = chars.next() {
        match c {
            BEL | '\u{9c}' => return,
            ESC => {
                chars.next_if_eq(&'\\');
                return;
            }
            _ => {}
        }
    }
}

/// Every `scheme://user:password@host` in `text` as `scheme://[redacted]@host`.
pub fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let authority_end =
            tail.find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace()).unwrap_or(tail.len());
        match tail[..authority_end].rfind('@') {
            Some(at) => {
                out.push_str("[redacted]");
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_escape_sequences_and_controls() {
        assert_eq!(sanitize("\u{1b}[31mred\u{1b}[0m text"), "red text");
        assert_eq!(sanitize("a\u{1b}]0;title\u{7}b"), "ab");
        assert_eq!(sanitize("a\u{1b}]8;;http://x\u{1b}\\link\u{1b}]8;;\u{1b}\\b"), "alinkb");
        assert_eq!(sanitize("a\u{1b}Pq#0\u{1b}\\b"), "ab");
        assert_eq!(sanitize("a\u{1b}(Bb\u{1b}7c"), "abc");
        assert_eq!(sanitize("a\u{9b}2Jb"), "ab");
        assert_eq!(sanitize("line one\r\nline two\tend"), "line one  line two end");
        assert_eq!(sanitize("bell\u{7}del\u{7f}nul\u{0}"), "belldelnul");
        assert_eq!(sanitize("evil\u{202e}txt.exe"), "eviltxt.exe");
        assert_eq!(sanitize("trailing ESC\u{1b}"), "trailing ESC");
        assert_eq!(sanitize("ünïcødé ✓"), "ünïcødé ✓");
    }

    #[test]
    fn caps_the_length_with_an_ellipsis() {
        let long = "x".repeat(5_000_000);
        let s = sanitize(&long);
        assert_eq!(s.chars().count(), MAX_MESSAGE_CHARS);
        assert!(s.ends_with("x…"));
        let exact = "y".repeat(MAX_MESSAGE_CHARS);
        assert_eq!(sanitize(&exact), exact);
        // Removed characters do not count.
        let padded = format!("{}{}", "\u{1b}[0m".repeat(1000), "z".repeat(10));
        assert_eq!(sanitize(&padded), "z".repeat(10));
        assert_eq!(sanitize_to("abcdef", 4), "abc…");
    }

    #[test]
    fn redacts_userinfo() {
        assert_eq!(
            redact_userinfo("cannot reach http://admin:S3CRET@127.0.0.1:9/v1 (refused)"),
            "cannot reach http://[redacted]@127.0.0.1:9/v1 (refused)"
        );
        assert_eq!(redact_userinfo("https://u@h and http://h/p@x"), "https://[redacted]@h and http://h/p@x");
        assert_eq!(redact_userinfo("http://a:b@c@host:1"), "http://[redacted]@host:1");
        assert_eq!(redact_userinfo("no urls, mail me@example.com"), "no urls, mail me@example.com");
        assert_eq!(sanitize("at http://k:S3CRET@h"), "at http://[redacted]@h");
        // Cut inside the userinfo: the part before the `@` never shows.
        let cut = format!("{} http://admin:{}@host", "a".repeat(280), "S".repeat(600));
        let s = sanitize(&cut);
        assert!(!s.contains("admin") && !s.contains('S'), "{s}");
    }
}

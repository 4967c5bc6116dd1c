//! Session names: validation of custom names and the auto-naming algorithm.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::seq::SliceRandom;

/// The adjective pool, exactly as the reference CLI has it.
pub const ADJECTIVES: [&str; 20] = [
    "swift", "bold", "calm", "keen", "warm", "bright", "silent", "rapid", "steady", "clever", "vivid", "agile",
    "noble", "lucid", "crisp", "gentle", "fierce", "nimble", "sturdy", "witty",
];

/// The noun pool, exactly as the reference CLI has it.
pub const NOUNS: [&str; 20] = [
    "falcon", "tiger", "river", "maple", "coral", "cedar", "orbit", "prism", "flint", "spark", "ridge", "ember",
    "crane", "grove", "stone", "brook", "drift", "crest", "sage", "lynx",
];

/// Candidates tried (`base`, `base-1`, … `base-9`) before falling back to
/// `session-{timestamp_ms}`.
pub const MAX_NAME_ATTEMPTS: u32 = 10;

/// What a lock file says about a candidate name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameState {
    /// No lock file.
    Free,
    /// A lock file whose process is alive (or that cannot be judged).
    Taken,
    /// A lock file whose process is dead: the caller cleans it up and reuses the name.
    Stale,
}

/// The error for a custom name that [`validate_session_name`] refuses, exactly
/// as the CLI prints it.
pub const INVALID_NAME_MESSAGE: &str = "Invalid session name. Use only letters, numbers, hyphens, and underscores.";

/// The longest session name: `cli-{name}.lock` and its temp files must fit
/// in a file name.
pub const MAX_NAME_LEN: usize = 64;

/// Custom names: `^[a-zA-Z0-9_-]+$` (ASCII only, non-empty), at most
/// [`MAX_NAME_LEN`] characters.
pub fn validate_session_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The auto-naming algorithm: a random `adjective-noun`; when `state` says it
/// is taken by a live process try `-1`, `-2`, … ; a free or stale candidate is
/// returned as is (the caller cleans a stale lock up). After
/// [`MAX_NAME_ATTEMPTS`] candidates: `session-{timestamp_ms}` (not checked).
pub fn generate_name(mut state: impl FnMut(&str) -> NameState) -> String {
    let mut rng = rand::thread_rng();
    let adjective = ADJECTIVES.choose(&mut rng).copied().unwrap_or(ADJECTIVES[0]);
    let noun = NOUNS.choose(&mut rng).copied().unwrap_or(NOUNS[0]);
    let base = format!("{adjective}-{noun}");
    for attempt in 0..MAX_NAME_ATTEMPTS {
        let candidate = if attempt == 0 { base.clone() } else { format!("{base}-{attempt}") };
        match state(&candidate) {
            NameState::Free | NameState::Stale => return candidate,
            NameState::Taken => {}
        }
    }
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    format!("session-{millis}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn session_name_validation() {
        for ok in ["a", "my-scraper-v2", "A_b-9", "session-1739290800000", "___", "-"] {
            assert!(validate_session_name(ok), "{ok}");
        }
        for bad in ["", "a b", "a/b", "../x", "a.b", "naïve", "a\n", "x;rm", "é"] {
            assert!(!validate_session_name(bad), "{bad:?}");
        }
        assert!(validate_session_name(&"a".repeat(MAX_NAME_LEN)));
        assert!(!validate_session_name(&"a".repeat(MAX_NAME_LEN + 1)));
        assert!(!validate_session_name(&"a".repeat(300)), "longer than a file name");
        assert_eq!(INVALID_NAME_MESSAGE, "Invalid session name. Use only letters, numbers, hyphens, and underscores.");
    }

    #[test]
    fn session_word_pools_are_the_spec_ones() {
        assert_eq!(
            ADJECTIVES.join(" "),
            "swift bold calm keen warm bright silent rapid steady clever vivid agile noble lucid crisp gentle fierce \
             nimble sturdy witty"
        );
        assert_eq!(
            NOUNS.join(" "),
            "falcon tiger river maple coral cedar orbit prism flint spark ridge ember crane grove stone brook drift \
             crest sage lynx"
        );
    }

    fn split(name: &str) -> (&str, &str) {
        name.split_once('-').expect("adjective-noun")
    }

    #[test]
    fn session_generated_names_follow_the_pattern() {
        let mut seen = HashSet::new();
        for _ in 0..400 {
            let mut calls = 0;
            let name = generate_name(|_| {
                calls += 1;
                NameState::Free
            });
            assert_eq!(calls, 1);
            let (adjective, noun) = split(&name);
            assert!(ADJECTIVES.contains(&adjective), "{name}");
            assert!(NOUNS.contains(&noun), "{name}");
            assert!(validate_session_name(&name));
            seen.insert(name);
        }
        // 400 draws from 400 combinations: random, not fixed.
        assert!(seen.len() > 100, "{}", seen.len());
    }

    #[test]
    fn session_taken_names_get_a_suffix_and_stale_ones_are_reused() {
        let mut asked = Vec::new();
        let name = generate_name(|candidate| {
            asked.push(candidate.to_string());
            if asked.len() < 3 {
                NameState::Taken
            } else {
                NameState::Free
            }
        });
        assert_eq!(asked.len(), 3);
        assert_eq!(asked[1], format!("{}-1", asked[0]));
        assert_eq!(asked[2], format!("{}-2", asked[0]));
        assert_eq!(name, asked[2]);

        let mut asked = Vec::new();
        let name = generate_name(|candidate| {
            asked.push(candidate.to_string());
            NameState::Stale
        });
        assert_eq!(asked, vec![name.clone()]);
        assert!(!name.ends_with("-1"));
    }

    #[test]
    fn session_falls_back_to_timestamp_after_ten_attempts() {
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();
        let mut asked = Vec::new();
        let name = generate_name(|candidate| {
            asked.push(candidate.to_string());
            NameState::Taken
        });
        let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();
        assert_eq!(asked.len(), MAX_NAME_ATTEMPTS as usize);
        for (i, candidate) in asked.iter().enumerate().skip(1) {
            assert_eq!(*candidate, format!("{}-{i}", asked[0]));
        }
        let ts: u128 = name.strip_prefix("session-").expect(&name).parse().expect(&name);
        assert!(before <= ts && ts <= after, "{before} {ts} {after}");
        assert!(validate_session_name(&name));
    }
}

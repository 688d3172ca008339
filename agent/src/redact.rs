//! Redaction of secrets in command lines.
//!
//! Command lines are read once, where process details are read, and
//! redacted there, so every surface (API, `who`, timeline, JSON export,
//! alerts) only ever holds the redacted text. The active patterns are
//! process-wide: set from the configuration at start and on reload.

use std::sync::{LazyLock, RwLock};

use regex::Regex;

/// What replaces a secret.
pub const MASK: &str = "***";

/// Patterns applied unless `redact.builtin = false`. In each, the group
/// named `secret` is masked (or the whole match when there is none).
pub const BUILTIN: &[&str] = &[
    // --password=x, token=x, DB_PASSWORD=x, api-key:x
    r"(?i)[\w.-]*(?:password|passwd|pwd|secret|token|api[-_]?key|access[-_]?key|auth)[\w.-]*[=:](?P<secret>[^\s]+)",
    // --password x, -token x
    r"(?i)(?:^|\s)--?[\w-]*(?:password|passwd|secret|token|api[-_]?key)\s+(?P<secret>[^-\s]\S*)",
    // scheme://user:password@host
    r"://[^/\s:@]+:(?P<secret>[^@\s/]+)@",
];

/// A compiled set of patterns.
#[derive(Clone, Debug)]
pub struct Redactor {
    patterns: Vec<Regex>,
}

/// A pattern that does not compile, named with why.
#[derive(Debug, thiserror::Error)]
#[error("redact pattern {pattern:?}: {source}")]
pub struct PatternError {
    pub pattern: String,
    #[source]
    pub source: regex::Error,
}

impl Redactor {
    pub fn new(builtin: bool, extra: &[String]) -> Result<Self, PatternError> {
        let builtin: &[&str] = if builtin { BUILTIN } else { &[] };
        let all = builtin
            .iter()
            .map(|s| s.to_string())
            .chain(extra.iter().cloned());
        let patterns = all
            .map(|p| {
                // Bounded: a pathological pattern cannot make each command
                // line cost more than this much automaton.
                regex::RegexBuilder::new(&p)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|source| PatternError { pattern: p, source })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { patterns })
    }

    /// `text` with every secret masked.
    pub fn apply(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for re in &self.patterns {
            if !re.is_match(&out) {
                continue;
            }
            let mut next = String::with_capacity(out.len());
            let mut last = 0;
            for caps in re.captures_iter(&out) {
                let m = caps
                    .name("secret")
                    .unwrap_or_else(|| caps.get(0).expect("group 0 always matches"));
                next.push_str(&out[last..m.start()]);
                next.push_str(MASK);
                last = m.end();
            }
            next.push_str(&out[last..]);
            out = next;
        }
        out
    }
}

impl Default for Redactor {
    fn default() -> Self {
        Self::new(true, &[]).expect("the builtin patterns compile")
    }
}

static ACTIVE: LazyLock<RwLock<Redactor>> = LazyLock::new(|| RwLock::new(Redactor::default()));

/// Makes `r` the process-wide redactor (start-up, reload).
pub fn set_active(r: Redactor) {
    *ACTIVE.write().unwrap_or_else(|e| e.into_inner()) = r;
}

/// Redacts with the process-wide patterns.
pub fn redact(text: &str) -> String {
    ACTIVE.read().unwrap_or_else(|e| e.into_inner()).apply(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_patterns_mask_common_secret_forms() {
        let r = Redactor::default();
        let cases = [
            (
                "app --password=hunter2 --port 80",
                "app --password=*** --port 80",
            ),
            ("app --password hunter2 -v", "app --password *** -v"),
            ("worker token=abc123 x", "worker token=*** x"),
            ("env DB_PASSWORD=s3cret run", "env DB_PASSWORD=*** run"),
            (
                "cli --api-key=K1 --api_key K2",
                "cli --api-key=*** --api_key ***",
            ),
            (
                "psql postgres://alice:pw@db:5432/x",
                "psql postgres://alice:***@db:5432/x",
            ),
            (
                "nginx: master process nginx -c /etc/nginx.conf",
                "nginx: master process nginx -c /etc/nginx.conf",
            ),
            ("socat TCP-LISTEN:80,fork -", "socat TCP-LISTEN:80,fork -"),
        ];
        for (input, want) in cases {
            assert_eq!(r.apply(input), want, "{input}");
        }
    }

    #[test]
    fn extra_patterns_add_to_or_replace_the_builtin_ones() {
        let r = Redactor::new(true, &[r"--license (?P<secret>\S+)".into()]).unwrap();
        assert_eq!(
            r.apply("x --license L --token=T"),
            "x --license *** --token=***"
        );
        let only = Redactor::new(false, &[r"sk_live_\w+".into()]).unwrap();
        assert_eq!(only.apply("pay sk_live_abc --token=T"), "pay *** --token=T");
    }

    #[test]
    fn a_bad_pattern_is_named() {
        let e = Redactor::new(true, &["(unclosed".into()]).unwrap_err();
        assert!(e.to_string().contains("(unclosed"), "{e}");
    }
}

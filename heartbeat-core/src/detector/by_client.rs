//! Detector settings per client: ordered rules from a client id (or a glob pattern of ids) to a
//! detector configuration, the first match wins. A client no rule matches gets the server's
//! detector. What `heartbeat-server --client-settings FILE` reads, and `heartbeat-sim tune`
//! advises per class of clients. A rule may also carry the interval the server advises the
//! clients it matches (to those that negotiated advice: `PROTOCOL.md`, "Advice").

use std::time::Duration;

use super::DetectorConfig;

/// One rule: clients whose id matches `pattern` get `config` (none: the server's detector), and
/// are advised to send every `advise` (if given).
#[derive(Clone, Debug, PartialEq)]
pub struct ClientRule {
    pattern: String,
    config: Option<DetectorConfig>,
    advise: Option<Duration>,
}

impl ClientRule {
    /// Clients whose id matches `pattern` (an exact id, or a glob: `*` any run of characters,
    /// `?` any one) get `config`.
    pub fn new(pattern: impl Into<String>, config: DetectorConfig) -> Self {
        Self {
            pattern: pattern.into(),
            config: Some(config),
            advise: None,
        }
    }

    /// Clients whose id matches `pattern` keep the server's detector and are advised to send
    /// every `interval`.
    pub fn advice_only(pattern: impl Into<String>, interval: Duration) -> Self {
        Self {
            pattern: pattern.into(),
            config: None,
            advise: Some(interval),
        }
    }

    /// The same rule, advising its clients to send every `interval`.
    #[must_use]
    pub fn with_advice(mut self, interval: Duration) -> Self {
        self.advise = Some(interval);
        self
    }

    /// The pattern.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The detector configuration; `None`: the server's.
    pub fn config(&self) -> Option<&DetectorConfig> {
        self.config.as_ref()
    }

    /// The interval advised to its clients, if any.
    pub fn advice(&self) -> Option<Duration> {
        self.advise
    }

    /// Whether client `id` matches the pattern.
    pub fn matches(&self, id: &str) -> bool {
        glob_matches(&self.pattern, id)
    }
}

/// Ordered rules: the first whose pattern matches a client's id gives its detector.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientDetectors {
    rules: Vec<ClientRule>,
}

impl ClientDetectors {
    /// These rules, in order.
    pub fn new(rules: Vec<ClientRule>) -> Self {
        Self { rules }
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[ClientRule] {
        &self.rules
    }

    /// Whether there is no rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The configuration of the first rule that matches client `id`; `None` when none does,
    /// or that rule gives only advice (the server's detector applies).
    pub fn config_for(&self, id: &str) -> Option<&DetectorConfig> {
        self.rules
            .iter()
            .find(|r| r.matches(id))
            .and_then(ClientRule::config)
    }

    /// The interval the first rule that matches client `id` advises; `None` when none does or
    /// it advises nothing.
    pub fn advice_for(&self, id: &str) -> Option<Duration> {
        self.rules
            .iter()
            .find(|r| r.matches(id))
            .and_then(ClientRule::advice)
    }
}

/// Whether `text` matches the glob `pattern`: `*` matches any run of characters (none
/// included), `?` any one character, anything else itself. Linear backtracking over the last
/// `*` only, so a pattern can never make it slow.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut i, mut j) = (0, 0);
    // The last `*` seen, and the text position it is tried at.
    let mut star: Option<(usize, usize)> = None;
    while j < t.len() {
        match p.get(i) {
            Some('*') => {
                star = Some((i, j));
                i += 1;
            }
            Some(&c) if c == '?' || c == t[j] => {
                i += 1;
                j += 1;
            }
            _ => match star {
                Some((si, sj)) => {
                    // Let the `*` take one more character.
                    star = Some((si, sj + 1));
                    i = si + 1;
                    j = sj + 1;
                }
                None => return false,
            },
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detector::{DetectorKind, FixedConfig, Span};

    #[test]
    fn globs_match_as_the_shell_does() {
        for (pattern, text, hit) in [
            ("web-1", "web-1", true),
            ("web-1", "web-10", false),
            ("web-*", "web-", true),
            ("web-*", "web-east-1", true),
            ("web-*", "api-1", false),
            ("*-1", "web-1", true),
            ("*", "", true),
            ("", "", true),
            ("", "a", false),
            ("w?b", "web", true),
            ("w?b", "wb", false),
            ("*a*b", "xaxxb", true),
            ("*a*b", "xaxxbc", false),
            ("a**b", "ab", true),
            ("é?", "éa", true),
        ] {
            assert_eq!(glob_matches(pattern, text), hit, "{pattern:?} {text:?}");
        }
        // Many stars against a long text that does not match: still quick.
        let text = "a".repeat(10_000);
        assert!(!glob_matches(&"*a".repeat(50).replace("a", "a*b"), &text));
    }

    #[test]
    fn the_first_matching_rule_wins() {
        let grace = |s| -> DetectorConfig {
            FixedConfig::default()
                .grace(Span::Intervals(s))
                .unwrap()
                .into()
        };
        let rules = ClientDetectors::new(vec![
            ClientRule::new("web-1", grace(1.0)),
            ClientRule::new("web-*", grace(5.0)),
            ClientRule::new("*", DetectorConfig::new(DetectorKind::Chen)),
        ]);
        assert_eq!(rules.config_for("web-1"), Some(&grace(1.0)));
        assert_eq!(rules.config_for("web-2"), Some(&grace(5.0)));
        assert_eq!(
            rules.config_for("db").map(DetectorConfig::kind),
            Some(DetectorKind::Chen)
        );
        assert_eq!(ClientDetectors::default().config_for("web-1"), None);
    }
}

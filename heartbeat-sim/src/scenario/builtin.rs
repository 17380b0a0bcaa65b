//! The built-in scenarios: scenario files embedded in the binary (`heartbeat-sim/scenarios/`),
//! in the order `heartbeat-sim list` prints them. `heartbeat-sim show NAME` prints one as a
//! starting point for a file of one's own.

use super::file::Spec;
use super::{Params, Scenario, Source};

/// The built-in scenarios: name and file text.
pub const BUILTIN: &[(&str, &str)] = &[
    ("steady", include_str!("../../scenarios/steady.toml")),
    ("jitter", include_str!("../../scenarios/jitter.toml")),
    ("partition", include_str!("../../scenarios/partition.toml")),
    ("firewall", include_str!("../../scenarios/firewall.toml")),
    (
        "competing-clients",
        include_str!("../../scenarios/competing-clients.toml"),
    ),
    (
        "server-restart",
        include_str!("../../scenarios/server-restart.toml"),
    ),
    (
        "client-crash",
        include_str!("../../scenarios/client-crash.toml"),
    ),
    ("swizzle", include_str!("../../scenarios/swizzle.toml")),
];

impl Scenario {
    /// Expands built-in scenario `name` with `params`; `Err` names the known scenarios.
    pub fn build(name: &str, params: &Params) -> Result<Self, String> {
        spec(name)?.expand(params)
    }
}

/// The names of the built-in scenarios, in order.
pub fn names() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|(n, _)| *n)
}

/// The file of built-in scenario `name`; `Err` names the known ones.
pub fn text(name: &str) -> Result<&'static str, String> {
    BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            format!(
                "unknown scenario {name:?}; known: {}",
                names().collect::<Vec<_>>().join(", ")
            )
        })
}

/// Built-in scenario `name`, read.
pub fn spec(name: &str) -> Result<Spec, String> {
    let text = text(name)?;
    Spec::parse(&format!("{name}.toml"), name, text, Source::Builtin)
}

/// Every built-in scenario's name and summary, in order.
pub fn summaries() -> Vec<(&'static str, String)> {
    names()
        .map(|n| {
            let summary = spec(n).map_or_else(|e| format!("(unreadable: {e})"), |s| s.summary);
            (n, summary)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::scenario::Action;

    #[test]
    fn every_listed_scenario_builds_and_is_sorted() {
        for name in names() {
            let s = Scenario::build(name, &Params::seed(1)).unwrap();
            assert!(s.actions.windows(2).all(|w| w[0].at <= w[1].at), "{name}");
            assert!(s.actions.iter().all(|t| t.at < s.duration), "{name}");
            assert_eq!(s, Scenario::build(name, &Params::seed(1)).unwrap());
        }
        assert!(Scenario::build("nope", &Params::seed(1)).is_err());
    }

    #[test]
    fn swizzle_holds_stay_between_burst_and_idle_timeout() {
        for seed in 0..200 {
            let s = Scenario::build("swizzle", &Params::seed(seed)).unwrap();
            for t in &s.actions {
                if let Action::Hold(i) = t.action {
                    let release = s
                        .actions
                        .iter()
                        .find(|r| r.action == Action::Release(i))
                        .unwrap();
                    let len = release.at - t.at;
                    assert!(len >= Duration::from_millis(2500), "{seed}: {len:?}");
                    assert!(len < Duration::from_secs(9), "{seed}: {len:?}");
                }
            }
        }
    }
}

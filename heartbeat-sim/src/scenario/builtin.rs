//! The built-in scenarios: scenario files embedded in the binary (`heartbeat-sim/scenarios/`),
//! in the order `heartbeat-sim list` prints them. `heartbeat-sim show NAME` prints one as a
//! starting point for a file of one's own.

use super::Source;
use super::file::Spec;

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

//! What every built-in scenario expands to, for seeds 0..200 at several durations and client
//! counts, kept as a digest (and seed 1's expansion in full, to read). The built-in scenarios
//! are files now; this snapshot was first recorded from the Rust schedules they replaced, so it
//! keeps proving that the files draw exactly what those did.

use std::fmt::Write as _;
use std::time::Duration;

use heartbeat_sim::scenario::{Params, Scenario, builtin};

/// The expansion as text: clients, actions, expectations and the drain.
fn canonical(s: &Scenario) -> String {
    let mut o = String::new();
    for c in &s.clients {
        let _ = writeln!(
            o,
            "  client {} interval {:?} latency {} ack {:?} reconnect {:?} legacy {} late {}",
            c.id,
            c.interval,
            c.latency.to_ms_text(),
            c.ack_timeout,
            c.reconnect,
            c.legacy,
            c.starts_late
        );
    }
    for t in &s.actions {
        let _ = writeln!(o, "  {:>8}ms {}", t.at.as_millis(), t.action);
    }
    let expect: Vec<String> = s.expect.iter().map(|e| e.name()).collect();
    let _ = writeln!(o, "  expect [{}] drain {:?}", expect.join(", "), s.drain);
    o
}

/// FNV-1a, 64 bits: a digest that does not depend on the Rust release.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[test]
fn every_builtin_expands_as_recorded() {
    let durations = [20_000, 37_777, 60_000, 123_456, 600_000].map(Duration::from_millis);
    let mut o = String::new();
    for name in builtin::names() {
        let min = match name {
            "competing-clients" | "client-crash" => 2,
            _ => 1,
        };
        let mut all = String::new();
        let mut count = 0;
        for seed in 0..200 {
            for &duration in &durations {
                for clients in [None, Some(min), Some(5), Some(64)] {
                    let params = Params {
                        duration: Some(duration),
                        clients,
                        ..Params::seed(seed)
                    };
                    let s = Scenario::build(name, &params).unwrap();
                    // Spelled out as `Params`' Debug read before it had a tick (always the
                    // default here), so the digest still proves the same expansions.
                    let _ = writeln!(
                        all,
                        "Params {{ seed: {}, duration: {:?}, clients: {:?}, latency: {:?} }}",
                        params.seed, params.duration, params.clients, params.latency
                    );
                    all.push_str(&canonical(&s));
                    count += 1;
                }
            }
        }
        let seed1 = Scenario::build(name, &Params::seed(1)).unwrap();
        let _ = writeln!(
            o,
            "{name}: {count} expansions, fnv1a {:016x}; seed 1:\n{}",
            fnv1a(all.as_bytes()),
            canonical(&seed1)
        );
    }
    insta::assert_snapshot!("expansions", o);
}

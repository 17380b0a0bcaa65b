//! Many clients at once, each counted on its own (the seed heard only the first).

use crate::util::{Proc, assert_sent_all_counted, client_summary, skipped_by};

fn concurrent_clients(n: usize, interval: &str, count: u64) {
    let (mut server, port) = Proc::json_server(&[]);
    let count_arg = count.to_string();
    let mut clients: Vec<Proc> = (0..n)
        .map(|i| {
            let id = format!("c{i:02}");
            Proc::client(
                port,
                &id,
                &["-i", interval, "--count", &count_arg, "--id", &id],
            )
        })
        .collect();
    for c in &mut clients {
        c.expect_exit(0);
    }
    let summary = server.summary();
    assert_eq!(summary.len(), n);
    for (i, client) in clients.iter().enumerate() {
        let c = client_summary(&summary, &format!("c{i:02}"));
        // A slot a client woke too late for on a loaded machine is skipped, not sent late, and
        // counted missed: everything sent is received, nothing else is missed.
        assert_sent_all_counted(c, count);
        assert_eq!(c["missed"].as_u64(), Some(skipped_by(client)), "{c:#}");
        assert_eq!(c["duplicates"].as_u64(), Some(0), "{c:#}");
        assert_eq!(c["state"], "left", "{c:#}");
    }
}

#[test]
fn two_clients_are_both_fully_counted() {
    concurrent_clients(2, "50", 10);
}

#[test]
fn fifty_clients_are_all_fully_counted() {
    // 100 ms leaves room for 50 processes starting at once on a small machine: a client that
    // wakes later than a whole interval skips a slot (by design), which would count as missed.
    concurrent_clients(50, "100", 10);
}

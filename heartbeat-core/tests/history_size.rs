//! What a server's status-page history adds per client, beyond the detector's state that
//! `record_size.rs` holds to 2 KB, measured with dhat's counting allocator: every byte
//! [`History`] holds for a client with a full hour of heartbeats (every second) and the most
//! happenings it keeps.
//!
//! `cargo test -p heartbeat-core --release --test history_size -- --nocapture` prints the size.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use heartbeat_core::analysis::SeqRange;
use heartbeat_core::frame::Protocol;
use heartbeat_core::server::Event;
use heartbeat_core::timeline::history::{History, MAX_HAPPENINGS, WINDOW};
use heartbeat_core::{ClientId, ClientKey, ConnId, Now, Seq, UnixTime};

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

/// Bytes on the heap now.
fn live() -> isize {
    dhat::HeapStats::get().curr_bytes as isize
}

/// A full hour of `clients` clients (beats every second, then `happenings` connects and
/// missed gaps in turn): heap bytes per client.
fn per_client(clients: u64, happenings: usize) -> isize {
    #[allow(clippy::disallowed_methods)] // an arbitrary origin; only offsets from it matter
    let origin = Now {
        mono: Instant::now(),
        unix: UnixTime::from_nanos(1_700_000_000_000_000_000),
    };
    let keys: Vec<ClientKey> = (0..clients)
        .map(|i| ClientKey::Id(ClientId::new(&format!("client-{i:05}")).unwrap()))
        .collect();
    let before = live();
    let mut history = History::new();
    let secs = WINDOW.as_secs() + 60;
    for s in 0..secs {
        let now = origin.advanced(Duration::from_secs(s));
        for (i, client) in keys.iter().enumerate() {
            let e = Event::Heartbeat {
                conn: ConnId(i as u64),
                client: client.clone(),
                seq: Seq(s + 1),
                sent: now.unix,
                received: now.unix,
                delay_ns: 1_500_000,
                inter_arrival: Some(Duration::from_secs(1)),
                recovered: false,
            };
            history.handle_event(&e, now);
        }
    }
    let now = origin.advanced(Duration::from_secs(secs));
    for (i, client) in keys.iter().enumerate() {
        for k in 0..happenings as u64 {
            let e = if k % 2 == 0 {
                Event::Connected {
                    conn: ConnId(i as u64),
                    client: client.clone(),
                    peer: SocketAddr::from(([10, 0, 0, 1], 4000)),
                    protocol: Protocol::V1,
                    interval: Some(Duration::from_secs(1)),
                    resumed: true,
                }
            } else {
                Event::Missed {
                    conn: ConnId(i as u64),
                    client: client.clone(),
                    range: SeqRange {
                        first: Seq(k),
                        last: Seq(k),
                    },
                }
            };
            history.handle_event(&e, now);
        }
    }
    assert_eq!(history.len(), clients as usize);
    let per = (live() - before) / clients as isize;
    drop(history);
    per
}

/// An hour of history costs at most 2 KB per client, on top of the detector's state.
#[test]
fn an_hour_of_history_costs_at_most_2_kb() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let per = per_client(100, MAX_HAPPENINGS);
    let quiet = per_client(100, 1);
    println!(
        "history heap bytes per client: {per} (an hour, {MAX_HAPPENINGS} happenings kept), \
         {quiet} (an hour, one connect)"
    );
    assert!(per <= 2048, "{per} bytes per client");
}

//! What one client costs the server state machine, measured with dhat's counting allocator: every
//! byte the server holds for a client with a full detector window and a year of typical
//! jitter in its statistics, across the whole core (record, key, index, liveness watch and
//! detector, connection state).
//!
//! `cargo test -p heartbeat-core --release --test record_size -- --nocapture` prints the sizes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use heartbeat_core::config::ServerConfig;
use heartbeat_core::detector::{DEFAULT_WINDOW, DetectorConfig, DetectorKind};
use heartbeat_core::server::Server;
use heartbeat_core::{Now, UnixTime};

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

/// Bytes on the heap now.
fn live() -> isize {
    dhat::HeapStats::get().curr_bytes as isize
}

/// A small deterministic jitter in `0..range` for round `i` of client `c`.
fn jitter(i: u64, c: u64, range: u64) -> u64 {
    (i.wrapping_mul(2_654_435_761) ^ c.wrapping_mul(40_503)) % range
}

/// One client's life: `HELLO`, more heartbeats than the window holds (every second ± 20 ms,
/// one-way delays of 0.1 to 5 ms), and if `close`, end of stream. Returns the time after it.
fn live_client(server: &mut Server, mut now: Now, i: u64, close: bool) -> Now {
    let drain = |server: &mut Server| while server.poll_output().is_some() {};
    let peer = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 40_000));
    let conn = server.accept(now, peer);
    server.handle_input(now, conn, format!("HELLO 1 client-{i} 1000\n").as_bytes());
    drain(server);
    for seq in 1..=DEFAULT_WINDOW as u64 + 50 {
        now = now.advanced(Duration::from_millis(980));
        let arrival = now.advanced(Duration::from_micros(jitter(seq, i, 40_000)));
        let delay = Duration::from_micros(100 + jitter(seq, i + 7, 4_900));
        let sent = UnixTime::from_nanos(arrival.unix.as_nanos() - delay.as_nanos() as u64);
        server.handle_input(arrival, conn, format!("BEAT {seq} {sent}\n").as_bytes());
        drain(server);
        now = now.advanced(Duration::from_millis(40));
        server.handle_timeout(now);
        drain(server);
    }
    if close {
        server.handle_eof(now, conn);
        drain(server);
    }
    now
}

/// Heap bytes per client of `clients` clients that each had a full window: remembered (each
/// connected, sent and left in turn, so the connection table stays small) and connected (all
/// connected at once, each with its connection's state).
fn per_client(kind: DetectorKind, clients: u64) -> (isize, isize) {
    #[allow(clippy::disallowed_methods)] // an arbitrary origin; only offsets from it matter
    let origin = Now {
        mono: Instant::now(),
        unix: UnixTime::from_nanos(1_700_000_000_000_000_000),
    };
    let config = Arc::new(ServerConfig::default().detector(DetectorConfig::new(kind)));
    let n = clients as isize;

    let mut server = Server::new(config.clone());
    let before = live();
    let mut now = origin;
    for i in 0..clients {
        now = live_client(&mut server, now, i, true);
    }
    let remembered = (live() - before) / n;
    drop(server);

    let mut server = Server::new(config);
    let before = live();
    for i in 0..clients {
        live_client(&mut server, origin, i, false);
    }
    let connected = (live() - before) / n;
    drop(server);
    (remembered, connected)
}

/// A client with a full detector window costs at most 2 KB, for every detector (issue 11:
/// 100,000 remembered clients in 256 MB). Connected clients also hold their connection's state
/// (printed, not asserted: the decoder and the connection table).
#[test]
fn a_client_with_a_full_window_costs_at_most_2_kb() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let sizes: Vec<_> = DetectorKind::ALL
        .into_iter()
        .map(|kind| (kind, per_client(kind, 200)))
        .collect();
    for &(kind, (remembered, connected)) in &sizes {
        println!(
            "{kind:8} heap bytes per client: remembered {remembered}, connected {connected} \
             (window {DEFAULT_WINDOW})"
        );
    }
    for (kind, (remembered, _)) in sizes {
        assert!(remembered <= 2048, "{kind}: {remembered} bytes remembered");
    }
}

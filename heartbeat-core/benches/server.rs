//! Throughput of the server state machine alone: decoding, analysis, ack encoding; and what a
//! driver with a state directory asks of it: a wake's changes (`persist_changes`, in its loop)
//! and a full copy (`persist`, once at start: the driver's writer keeps the full state itself
//! from the changes, since a full copy of 100 000 clients would hold the loop for ~100 ms).
//!
//! `cargo bench -p heartbeat-core --bench server`

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use heartbeat_core::config::ServerConfig;
use heartbeat_core::server::Server;
use heartbeat_core::{ConnId, Now, UnixTime};

/// A server with `clients` identified v1 connections, and the time.
fn setup(clients: usize) -> (Server, Vec<ConnId>, Now) {
    #[allow(clippy::disallowed_methods)] // an arbitrary origin; only offsets from it matter
    let now = Now {
        mono: Instant::now(),
        unix: UnixTime::from_nanos(1_700_000_000_000_000_000),
    };
    let mut server = Server::new(Arc::new(ServerConfig::default()));
    let conns = (0..clients)
        .map(|i| {
            let peer = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 40_000));
            let conn = server.accept(now, peer);
            server.handle_input(now, conn, format!("HELLO 1 client-{i} 1000\n").as_bytes());
            conn
        })
        .collect();
    while server.poll_output().is_some() {}
    (server, conns, now)
}

fn beats(c: &mut Criterion) {
    let mut group = c.benchmark_group("server_heartbeat");
    for clients in [1usize, 1_000, 10_000] {
        group.throughput(Throughput::Elements(clients as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(clients),
            &clients,
            |b, &clients| {
                let (mut server, conns, mut now) = setup(clients);
                let mut seq = 0u64;
                b.iter(|| {
                    // One round: every client sends its next heartbeat, in its own read.
                    seq += 1;
                    now = now.advanced(Duration::from_millis(1000));
                    let line = format!("BEAT {seq} {}\n", now.unix);
                    for &conn in &conns {
                        server.handle_input(now, conn, line.as_bytes());
                        while let Some(out) = server.poll_output() {
                            let _ = black_box(out);
                        }
                    }
                });
            },
        );
    }
    group.finish();
}

fn persist(c: &mut Criterion) {
    let mut group = c.benchmark_group("server_persist");
    for clients in [1_000usize, 100_000] {
        let (mut server, conns, now) = setup(clients);
        for &conn in &conns {
            server.handle_input(now, conn, format!("BEAT 1 {}\n", now.unix).as_bytes());
        }
        while server.poll_output().is_some() {}
        group.throughput(Throughput::Elements(clients as u64));
        group.bench_with_input(BenchmarkId::new("full", clients), &server, |b, server| {
            b.iter(|| black_box(server.persist()));
        });
        // One client's heartbeat, then its change taken: the journal's cost per arrival.
        let mut seq = 1u64;
        let mut now = now;
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("one_change", clients), |b| {
            b.iter(|| {
                seq += 1;
                now = now.advanced(Duration::from_millis(1000));
                let line = format!("BEAT {seq} {}\n", now.unix);
                server.handle_input(now, conns[0], line.as_bytes());
                while server.poll_output().is_some() {}
                black_box(server.persist_changes())
            });
        });
    }
    group.finish();
}

criterion_group!(benches, beats, persist);
criterion_main!(benches);

//! The embedding API under turmoil: a client from `heartbeat_net::embed::Builder::build_with`
//! over the simulator's connector, spawned with `spawn_local` on its host's `LocalSet` (no
//! `Send` needed), against the real server loop. Simulated time: no sleeping, same run every
//! time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use heartbeat_core::config::ServerConfig;
use heartbeat_core::detector::{DetectorConfig, DetectorKind};
use heartbeat_core::frame::Protocol;
use heartbeat_core::server::{self, Server};
use heartbeat_core::{UnixTime, fmt_ms};
use heartbeat_net::ServerOptions;
use heartbeat_net::driver::run_server;
use heartbeat_net::embed::{Backoff, Builder, ClientConfig, ClientId, Exit, Stats};
use heartbeat_sim::log::Log;
use heartbeat_sim::net::{PORT, SERVER, SimConnector, SimListener};

fn unix_now() -> UnixTime {
    UnixTime::from_duration(turmoil::since_epoch().expect("inside a simulated host"))
}

#[test]
fn an_embedded_client_pauses_resumes_and_leaves_under_turmoil() {
    let mut sim = turmoil::Builder::new()
        .epoch(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .simulation_duration(Duration::from_secs(60))
        .min_message_latency(Duration::from_millis(5))
        .max_message_latency(Duration::from_millis(5))
        .build();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let record = lines.clone();
    sim.host(SERVER, move || {
        let record = record.clone();
        async move {
            let config = ServerConfig::default().detector(DetectorConfig::new(DetectorKind::Fixed));
            let on_event = move |e: &server::Event, _| {
                if !matches!(e, server::Event::Heartbeat { .. }) {
                    let at = turmoil::sim_elapsed().unwrap_or_default();
                    record.lock().unwrap().push(format!("t+{} {e}", fmt_ms(at)));
                }
            };
            let listener = SimListener::bind(PORT).await?;
            let server = Server::new(Arc::new(config));
            let stop = std::future::pending();
            run_server(
                listener,
                server,
                ServerOptions::default(),
                unix_now,
                stop,
                on_event,
            )
            .await?;
            Ok(())
        }
    });
    let outcome = Arc::new(Mutex::new(None));
    let report = outcome.clone();
    sim.client("app", async move {
        let config = ClientConfig::new(ClientId::new("app").unwrap(), Duration::from_millis(100))?
            .reconnect(Some(Backoff::default()))
            .session(7)
            .rng_seed(7);
        let log = Arc::new(Mutex::new(Log::default()));
        let connector = SimConnector::new(0, 0, Protocol::V1, log);
        let (heartbeat, task) = Builder::new(config, SERVER, PORT).build_with(connector, unix_now);
        let task = tokio::task::spawn_local(task);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        heartbeat.pause();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let paused = heartbeat.stats();
        heartbeat.resume();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let exit = heartbeat.shutdown().await;
        let output = task.await?;
        // Time for the goodbye to reach the server before the simulation ends with this client.
        tokio::time::sleep(Duration::from_millis(100)).await;
        *report.lock().unwrap() = Some((paused, heartbeat.stats(), exit, output.ok()));
        Ok(())
    });
    sim.run().unwrap();

    let (paused, last, exit, output) = outcome.lock().unwrap().take().unwrap();
    assert!(paused.paused && paused.connected, "{paused:?}");
    assert_eq!(exit, Some(Exit::Closed));
    assert_eq!(output, Some(Exit::Closed));
    let summary = |s: &Stats| (s.sent, s.acked, s.skipped, s.reconnects, s.connected);
    // The schedule starts at the connect, 5 ms in: heartbeats 1-10 go before the pause at 1 s,
    // 11-19 are skipped in it, 20 goes at the resume at 2 s, and 21-25 after it.
    assert_eq!(summary(&paused), (10, 10, 0, 0, true));
    assert_eq!(summary(&last), (16, 16, 9, 0, false));
    insta::assert_snapshot!(lines.lock().unwrap().join("\n"));
}

//! The metrics of `--metrics-addr`: a [`Snapshot`] copied out of the server task on request,
//! and its Prometheus text exposition ([`encode`]), built with `prometheus-client`.
//!
//! Nothing is counted per heartbeat for Prometheus: the core counts what it counts anyway
//! (per client, and server-wide in [`ServerStats`]), a scrape asks the server task for a
//! snapshot of those numbers (a few per client, see [`Snapshot::of`]), and the exposition is
//! written from the snapshot on the metrics thread, off the monitor's loop.
//!
//! # The metrics
//! Per client, labelled `client` (the client's id, or `legacy@ADDR` for a legacy client):
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `heartbeat_client_state{client,state}` | gauge | 1 for the client's liveness (`up`, `suspect`, `down`, `left`, or `unknown`: expected by `--expect`, not heard from yet, within its grace), 0 for the other four |
//! | `heartbeat_client_expected{client}` | gauge | 1 when the client is expected (listed by `--expect`), 0 otherwise. An expected client that was never heard from has state `down` and no `heartbeat_client_last_heartbeat_timestamp_seconds` series: the `HeartbeatClientNeverSeen` alert |
//! | `heartbeat_client_silenced{client}` | gauge | 1 while the client is silenced (`heartbeat-server ctl silence`: a maintenance window), 0 otherwise; the shipped alert rules leave a silenced client alone |
//! | `heartbeat_client_last_heartbeat_timestamp_seconds{client}` | gauge | server time of its last heartbeat, Unix seconds; absent before its first |
//! | `heartbeat_client_suspicion{client}` | gauge | the failure detector's value now (phi, or silence over timeout); absent before the client's interval is known |
//! | `heartbeat_client_heartbeats_received_total{client}` | counter | heartbeats received (duplicates excluded) |
//! | `heartbeat_client_heartbeats_missed_total{client}` | counter | heartbeats reported missed (sequence gaps), ever: a counter only grows |
//! | `heartbeat_client_heartbeats_recovered_total{client}` | counter | of those, heartbeats that arrived late after all: missed now is the difference (the report's `missed`) |
//! | `heartbeat_client_duplicates_total{client}` | counter | heartbeats received twice |
//! | `heartbeat_client_restarts_total{client}` | counter | restarts of the client process |
//! | `heartbeat_client_connections_total{client}` | counter | connections the client made |
//!
//! A client gone (disconnected, not heard from) longer than `--forget-after` is forgotten by
//! the server, and its series disappear: the number of series stays bounded.
//!
//! Server-wide: `heartbeat_clients{state}` (clients per liveness), `heartbeat_connections_open`,
//! `heartbeat_server_threads` (`--threads`) and `heartbeat_server_thread_connections{thread}`
//! (connections open per server thread, `thread` from 0),
//! `heartbeat_connections_accepted_total`, `heartbeat_connections_rejected_total{reason}`
//! (closed at accept: `max_connections`, `max_connections_per_ip`),
//! `heartbeat_disconnects_total{reason}` (every connection's end, by
//! [`DisconnectReason::label`](heartbeat_core::DisconnectReason::label)),
//! `heartbeat_frames_rejected_total{reason}` (connections dropped for what they sent: decode
//! errors by kind, broken limits, failed authentication; see
//! [`DisconnectReason::rejection`](heartbeat_core::DisconnectReason::rejection)),
//! `heartbeat_clients_forgotten_total`, `heartbeat_clients_evicted_total`,
//! `heartbeat_delay_seconds` (a histogram of every heartbeat's one-way delay) and
//! `heartbeat_build_info{version}`.
//!
//! The application's side channels ([`AppCounts`], read off the loop when the scrape is
//! encoded): `heartbeat_hook_runs_total{result}` (`ok`, `failed`, `timeout`: one run per
//! `--on-transition` command and per `--webhook` call), `heartbeat_hook_dropped_total` (alerts
//! dropped because `--hook-queue` was full) and `heartbeat_output_dropped_lines_total{stream}`
//! (`stderr`, `stdout`: lines dropped because the stream's reader did not keep up).
//!
//! The process's own, with the names Prometheus' client libraries use (read from `/proc` at
//! scrape time, on Linux): `process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_open_fds` and `process_max_fds`. `prometheus-client` has no such collector.

use std::fmt;

use heartbeat_core::server::{DELAY_BUCKETS, DelayHistogram, Server, ServerStats};
use heartbeat_core::{Liveness, Now};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet, prometheus_text,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::AppCounts;
use heartbeat_net::DriverStats;
use heartbeat_net::process::ProcSample;

/// The `Content-Type` of [`encode`]'s output: the Prometheus text format, version 0.0.4.
pub(crate) const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The liveness states, in the order their series are written.
const STATES: [Liveness; 5] = [
    Liveness::Up,
    Liveness::Suspect,
    Liveness::Down,
    Liveness::Left,
    Liveness::Unknown,
];

/// What one scrape shows, copied out of the server task.
#[derive(Clone, Debug, Default)]
pub(crate) struct Snapshot {
    /// Every client the server remembers, sorted by key.
    pub(crate) clients: Vec<ClientRow>,
    /// Open connections (accepted, not yet closed).
    pub(crate) connections_open: usize,
    /// The core's server-wide counters.
    pub(crate) stats: ServerStats,
    /// What only the driver counts.
    pub(crate) driver: DriverStats,
    /// What the hooks and the output streams did (not the server task's: read on the metrics
    /// thread, see [`AppCounters`](super::AppCounters)).
    pub(crate) app: AppCounts,
}

/// One client's numbers in a [`Snapshot`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ClientRow {
    /// The client's key, as text (the `client` label).
    pub(crate) client: String,
    /// Its liveness.
    pub(crate) state: Liveness,
    /// True when the client is expected (`--expect`); see the module docs.
    pub(crate) expected: bool,
    /// True while the client is silenced (filled in off the loop, see `silence.rs`).
    pub(crate) silenced: bool,
    /// Server time of its last heartbeat, Unix seconds.
    pub(crate) last_heartbeat: Option<f64>,
    /// The detector's suspicion now.
    pub(crate) suspicion: Option<f64>,
    /// Heartbeats received.
    pub(crate) received: u64,
    /// Heartbeats reported missed, ever (the core's missed plus recovered).
    pub(crate) missed: u64,
    /// Heartbeats reported missed that came late after all.
    pub(crate) recovered: u64,
    /// Duplicates.
    pub(crate) duplicates: u64,
    /// Restarts.
    pub(crate) restarts: u64,
    /// Connections made.
    pub(crate) connections: u64,
    /// Under a QoS target (`--target-detection`): what it decided for the client.
    pub(crate) target: Option<heartbeat_core::detector::Configured>,
}

impl Snapshot {
    /// The snapshot of `server` at `now`. Runs on the server task: a few numbers and the key
    /// per client, no percentiles, no encoding.
    pub(crate) fn of(server: &Server, driver: &DriverStats, now: Now) -> Self {
        let clients = server
            .clients()
            .map(|c| ClientRow {
                client: c.client().to_string(),
                state: c.state(),
                expected: c.is_expected(),
                silenced: false,
                last_heartbeat: c.last_seen().map(|t| t.as_nanos() as f64 / 1e9),
                suspicion: c.suspicion(now.mono),
                received: c.received(),
                missed: c.missed() + c.recovered(),
                recovered: c.recovered(),
                duplicates: c.duplicates(),
                target: c.target(),
                restarts: c.restarts(),
                connections: c.connections(),
            })
            .collect();
        Self {
            clients,
            connections_open: server.connection_count(),
            stats: server.stats().clone(),
            driver: driver.clone(),
            // Not the server task's: the metrics thread fills it in.
            app: AppCounts::default(),
        }
    }
}

/// Writes `snapshot` (and the build info) to `out` in the Prometheus text format
/// ([`CONTENT_TYPE`]).
pub(crate) fn encode(snapshot: Snapshot, out: &mut String) -> fmt::Result {
    let mut registry = Registry::default();
    registry.register(
        "heartbeat_build",
        "The heartbeat-server build: its version",
        Info::new([("version", env!("CARGO_PKG_VERSION"))]),
    );
    registry.register_collector(Box::new(snapshot));
    registry.register_collector(Box::new(ProcessMetrics));
    prometheus_text::encode(out, &registry)
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> fmt::Result {
        self.encode_clients(&mut e)?;
        self.encode_server(&mut e)?;
        self.encode_app(&mut e)
    }
}

impl Snapshot {
    /// The per-client families (`heartbeat_client_*`).
    fn encode_clients(&self, e: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let clients = &self.clients;
        {
            let mut m = e.encode_descriptor(
                "heartbeat_client_state",
                "The client's liveness: 1 for its state (up, suspect, down, left, unknown), 0 for the others",
                None,
                MetricType::Gauge,
            )?;
            for c in clients {
                for state in STATES {
                    let labels = [("client", c.client.as_str()), ("state", state.as_str())];
                    let value = i64::from(c.state == state);
                    ConstGauge::new(value).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut m = e.encode_descriptor(
                "heartbeat_client_expected",
                "1 when the client is expected (--expect), 0 otherwise",
                None,
                MetricType::Gauge,
            )?;
            for c in clients {
                let labels = [("client", c.client.as_str())];
                ConstGauge::new(i64::from(c.expected)).encode(m.encode_family(&labels)?)?;
            }
        }
        {
            let mut m = e.encode_descriptor(
                "heartbeat_client_silenced",
                "1 while the client is silenced (heartbeat-server ctl silence), 0 otherwise",
                None,
                MetricType::Gauge,
            )?;
            for c in clients {
                let labels = [("client", c.client.as_str())];
                ConstGauge::new(i64::from(c.silenced)).encode(m.encode_family(&labels)?)?;
            }
        }
        gauges(
            e,
            "heartbeat_client_last_heartbeat_timestamp_seconds",
            "Server time of the client's last heartbeat, Unix seconds (absent before its first)",
            clients.iter().map(|c| (c, c.last_heartbeat)),
        )?;
        gauges(
            e,
            "heartbeat_client_suspicion",
            "The failure detector's suspicion of the client now (phi, or silence over timeout)",
            clients.iter().map(|c| (c, c.suspicion)),
        )?;
        if clients.iter().any(|c| c.target.is_some()) {
            let target = |f: fn(&heartbeat_core::detector::Configured) -> Option<f64>| {
                clients
                    .iter()
                    .map(move |c| (c, c.target.as_ref().and_then(f)))
            };
            gauges(
                e,
                "heartbeat_client_target_reachable",
                "1 when the QoS target (--target-detection, --target-mistake-every) is reachable at the client's interval with its measured loss and delay variance, 0 when not",
                target(|t| Some(f64::from(u8::from(t.reachable)))),
            )?;
            gauges(
                e,
                "heartbeat_client_advised_interval_seconds",
                "When the QoS target is not reachable: the longest heartbeat interval that would reach it (absent when reachable, or when no interval would)",
                target(|t| t.advised_interval.map(|d| d.as_secs_f64())),
            )?;
            gauges(
                e,
                "heartbeat_client_safety_margin_seconds",
                "Under a QoS target: the margin in use, the client being declared down this long after a heartbeat is due",
                target(|t| Some(t.alpha.as_secs_f64())),
            )?;
        }
        type Count = fn(&ClientRow) -> u64;
        let per_client: [(&str, &str, Count); 6] = [
            (
                "heartbeat_client_heartbeats_received",
                "Heartbeats received from the client (duplicates excluded)",
                |c| c.received,
            ),
            (
                "heartbeat_client_heartbeats_missed",
                "Heartbeats of the client reported missed (sequence gaps), ever",
                |c| c.missed,
            ),
            (
                "heartbeat_client_heartbeats_recovered",
                "Heartbeats of the client reported missed that arrived late after all",
                |c| c.recovered,
            ),
            (
                "heartbeat_client_duplicates",
                "Heartbeats of the client received more than once",
                |c| c.duplicates,
            ),
            (
                "heartbeat_client_restarts",
                "Restarts of the client process (a new session, or sequence 1 again)",
                |c| c.restarts,
            ),
            (
                "heartbeat_client_connections",
                "Connections the client made",
                |c| c.connections,
            ),
        ];
        for (name, help, value) in per_client {
            let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            for c in clients {
                let labels = [("client", c.client.as_str())];
                ConstCounter::new(value(c)).encode(m.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    /// The server-wide families: clients by state, connections, refusals, delays.
    fn encode_server(&self, e: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let clients = &self.clients;
        {
            let mut m = e.encode_descriptor(
                "heartbeat_clients",
                "Clients remembered, by liveness",
                None,
                MetricType::Gauge,
            )?;
            for state in STATES {
                let n = clients.iter().filter(|c| c.state == state).count();
                let labels = [("state", state.as_str())];
                ConstGauge::new(n as i64).encode(m.encode_family(&labels)?)?;
            }
        }
        let open = e.encode_descriptor(
            "heartbeat_connections_open",
            "Connections open now",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.connections_open as i64).encode(open)?;
        let threads = &self.driver.thread_connections;
        let m = e.encode_descriptor(
            "heartbeat_server_threads",
            "Server threads serving connections (--threads)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(threads.len() as i64).encode(m)?;
        let mut m = e.encode_descriptor(
            "heartbeat_server_thread_connections",
            "Connections open now, by the server thread serving them",
            None,
            MetricType::Gauge,
        )?;
        for (thread, n) in threads.iter().enumerate() {
            let thread = thread.to_string();
            ConstGauge::new(*n as i64).encode(m.encode_family(&[("thread", thread.as_str())])?)?;
        }
        let s = &self.stats;
        let totals = [
            (
                "heartbeat_connections_accepted",
                "Connections accepted",
                s.connections_accepted,
            ),
            (
                "heartbeat_clients_forgotten",
                "Clients forgotten after --forget-after without a connection",
                s.clients_forgotten,
            ),
            (
                "heartbeat_clients_evicted",
                "Clients evicted to make room under --max-clients",
                s.clients_evicted,
            ),
        ];
        for (name, help, n) in totals {
            let m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(n).encode(m)?;
        }
        let rejected = [
            ("max_connections", self.driver.rejected_max_connections),
            ("max_connections_per_ip", self.driver.rejected_per_ip),
        ];
        counters_by(
            e,
            "heartbeat_connections_rejected",
            "Connections closed at accept, by the limit that was reached",
            rejected.into_iter(),
        )?;
        counters_by(
            e,
            "heartbeat_disconnects",
            "Connections ended, by reason",
            s.disconnects.iter().map(|(k, n)| (*k, *n)),
        )?;
        counters_by(
            e,
            "heartbeat_frames_rejected",
            "Connections dropped for what they sent, by kind: decode errors, broken limits, \
             failed authentication, refused legacy connections, ids in use",
            s.frames_rejected.iter().map(|(k, n)| (*k, *n)),
        )?;
        let m = e.encode_descriptor(
            "heartbeat_delay_seconds",
            "One-way delay of every heartbeat counted (receive time minus send time)",
            None,
            MetricType::Histogram,
        )?;
        Delays(&s.delay).encode(m)
    }

    /// The application's families: hooks and output.
    fn encode_app(&self, e: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let app = &self.app;
        let mut m = e.encode_descriptor(
            "heartbeat_hook_runs",
            "Hook runs (--on-transition commands, --webhook calls), by result",
            None,
            MetricType::Counter,
        )?;
        for (result, n) in [
            ("ok", app.hooks.ok),
            ("failed", app.hooks.failed),
            ("timeout", app.hooks.timed_out),
        ] {
            ConstCounter::new(n).encode(m.encode_family(&[("result", result)])?)?;
        }
        let m = e.encode_descriptor(
            "heartbeat_hook_dropped",
            "Alerts dropped for the hooks because --hook-queue was full",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(app.hooks.dropped).encode(m)?;
        let mut m = e.encode_descriptor(
            "heartbeat_output_dropped_lines",
            "Log (stderr) and --json (stdout) lines dropped because the reader did not keep up",
            None,
            MetricType::Counter,
        )?;
        for (stream, n) in [
            ("stderr", app.stderr.dropped),
            ("stdout", app.stdout.dropped),
        ] {
            ConstCounter::new(n).encode(m.encode_family(&[("stream", stream)])?)?;
        }
        Ok(())
    }
}

/// One gauge per client, skipping those without a value.
fn gauges<'c>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    values: impl Iterator<Item = (&'c ClientRow, Option<f64>)>,
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (c, value) in values {
        if let Some(v) = value {
            let labels = [("client", c.client.as_str())];
            ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// One counter per `reason`.
fn counters_by<'a>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    values: impl Iterator<Item = (&'a str, u64)>,
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (reason, n) in values {
        let labels = [("reason", reason)];
        ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// The `process_*` metrics of this process, read from `/proc` when encoded (the load
/// generator's reading of a process, [`ProcSample`]); none where it cannot be read.
#[derive(Debug)]
struct ProcessMetrics;

impl Collector for ProcessMetrics {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> fmt::Result {
        let Ok(p) = ProcSample::read(std::process::id()) else {
            return Ok(());
        };
        let m = e.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(p.cpu.as_secs_f64()).encode(m)?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(Iterator::count);
        let max_fds = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                Some(p.rss_kib.saturating_mul(1024) as f64),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                open_fds.map(|n| n as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                max_fds.map(|n| n as f64),
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
                ConstGauge::new(v).encode(m)?;
            }
        }
        Ok(())
    }
}

/// The core's delay histogram as a Prometheus histogram.
struct Delays<'a>(&'a DelayHistogram);

impl EncodeMetric for Delays<'_> {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> fmt::Result {
        let h = self.0;
        let bounds = DELAY_BUCKETS.iter().copied().chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds.zip(h.buckets.iter().copied()).collect();
        encoder.encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use heartbeat_core::UnixTime;
    use heartbeat_core::config::ServerConfig;

    use super::*;

    fn row(client: &str, state: Liveness) -> ClientRow {
        ClientRow {
            client: client.to_owned(),
            state,
            expected: false,
            silenced: false,
            last_heartbeat: Some(1_700_000_000.25),
            suspicion: Some(0.5),
            received: 10,
            missed: 2,
            recovered: 0,
            duplicates: 1,
            restarts: 0,
            connections: 3,
            target: None,
        }
    }

    /// The exposition parses, and says what the snapshot says.
    #[test]
    fn the_exposition_is_the_snapshot() {
        let mut snapshot = Snapshot {
            clients: vec![
                row("a", Liveness::Up),
                row("legacy@[::1]:5000", Liveness::Down),
            ],
            connections_open: 1,
            ..Snapshot::default()
        };
        snapshot.clients[1].last_heartbeat = None;
        snapshot.clients[1].suspicion = Some(f64::INFINITY);
        snapshot.driver.rejected_per_ip = 7;
        snapshot.app.hooks.timed_out = 2;
        snapshot.app.hooks.dropped = 19;
        snapshot.app.stderr.dropped = 5;
        snapshot.stats.frames_rejected.insert("too_fast", 4);
        snapshot.stats.delay.buckets[2] = 5;
        snapshot.stats.delay.count = 5;
        snapshot.stats.delay.sum_seconds = 0.004;
        let mut text = String::new();
        encode(snapshot, &mut text).unwrap();
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
        let value = |name: &str, labels: &[(&str, &str)]| {
            let s = scrape
                .samples
                .iter()
                .find(|s| {
                    s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
                })
                .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"));
            match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                ref other => panic!("{other:?}"),
            }
        };
        let a = [("client", "a")];
        assert_eq!(
            value(
                "heartbeat_client_state",
                &[("client", "a"), ("state", "up")]
            ),
            1.0
        );
        assert_eq!(
            value(
                "heartbeat_client_state",
                &[("client", "a"), ("state", "down")]
            ),
            0.0
        );
        let b = [("client", "legacy@[::1]:5000"), ("state", "down")];
        assert_eq!(
            value("heartbeat_client_state", &b),
            1.0,
            "a legacy key is a label value too"
        );
        assert_eq!(
            value("heartbeat_client_heartbeats_received_total", &a),
            10.0
        );
        assert_eq!(value("heartbeat_client_heartbeats_missed_total", &a), 2.0);
        assert_eq!(value("heartbeat_client_connections_total", &a), 3.0);
        assert_eq!(
            value("heartbeat_client_last_heartbeat_timestamp_seconds", &a),
            1_700_000_000.25
        );
        assert_eq!(
            value(
                "heartbeat_client_suspicion",
                &[("client", "legacy@[::1]:5000")]
            ),
            f64::INFINITY
        );
        let last_of_b = scrape.samples.iter().any(|s| {
            s.metric == "heartbeat_client_last_heartbeat_timestamp_seconds"
                && s.labels.get("client") == Some("legacy@[::1]:5000")
        });
        assert!(!last_of_b, "absent before the first heartbeat");
        assert_eq!(value("heartbeat_clients", &[("state", "down")]), 1.0);
        assert_eq!(value("heartbeat_clients", &[("state", "left")]), 0.0);
        assert_eq!(value("heartbeat_connections_open", &[]), 1.0);
        let hook_runs = |result| value("heartbeat_hook_runs_total", &[("result", result)]);
        assert_eq!(
            [hook_runs("ok"), hook_runs("failed"), hook_runs("timeout")],
            [0.0, 0.0, 2.0]
        );
        assert_eq!(value("heartbeat_hook_dropped_total", &[]), 19.0);
        let dropped = |stream| {
            value(
                "heartbeat_output_dropped_lines_total",
                &[("stream", stream)],
            )
        };
        assert_eq!([dropped("stderr"), dropped("stdout")], [5.0, 0.0]);
        assert_eq!(value("heartbeat_clients", &[("state", "unknown")]), 0.0);
        let per_ip = [("reason", "max_connections_per_ip")];
        assert_eq!(value("heartbeat_connections_rejected_total", &per_ip), 7.0);
        assert_eq!(
            value("heartbeat_frames_rejected_total", &[("reason", "too_fast")]),
            4.0
        );
        assert_eq!(
            value(
                "heartbeat_build_info",
                &[("version", env!("CARGO_PKG_VERSION"))]
            ),
            1.0
        );
        assert!(value("process_resident_memory_bytes", &[]) > 0.0);
        assert!(value("process_open_fds", &[]) >= 3.0);
        assert!(value("process_cpu_seconds_total", &[]) >= 0.0);
        let histogram = scrape
            .samples
            .iter()
            .find(|s| s.metric == "heartbeat_delay_seconds")
            .unwrap();
        let prometheus_parse::Value::Histogram(buckets) = &histogram.value else {
            panic!("{:?}", histogram.value);
        };
        let at = |le: f64| buckets.iter().find(|b| b.less_than == le).unwrap().count;
        assert_eq!((at(0.0005), at(0.001), at(f64::INFINITY)), (0.0, 5.0, 5.0));
        assert_eq!(buckets.len(), DELAY_BUCKETS.len() + 1);
    }

    /// A server core with `n` clients, each connected and 10 heartbeats in.
    fn server_with(n: usize) -> (Server, Now) {
        #[allow(clippy::disallowed_methods)] // an arbitrary origin; only offsets matter
        let mut now = Now {
            mono: std::time::Instant::now(),
            unix: UnixTime::from_duration(Duration::from_secs(1_700_000_000)),
        };
        let mut server = Server::new(Arc::new(ServerConfig::default().max_clients(n)));
        let conns: Vec<_> = (0..n)
            .map(|i| {
                let peer = std::net::SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 4000));
                let conn = server.accept(now, peer);
                server.handle_input(
                    now,
                    conn,
                    format!("HELLO 1 client-{i:05} 1000\n").as_bytes(),
                );
                conn
            })
            .collect();
        for seq in 1..=10 {
            now = now.advanced(Duration::from_secs(1));
            server.handle_timeout(now);
            for &conn in &conns {
                let beat = format!("BEAT {seq} {}\n", now.unix.display_secs(6));
                server.handle_input(now, conn, beat.as_bytes());
            }
            while server.poll_output().is_some() {}
        }
        (server, now)
    }

    /// The cost of one scrape of 10,000 clients, by part: the snapshot (on the server task:
    /// what a scrape costs the monitor's loop), the encoding (on the metrics thread), and the
    /// report behind /clients (on the server task). A measurement for BENCHMARKS.md, not a
    /// timed test: run it in release mode.
    #[test]
    #[ignore = "a measurement: cargo test --release -p heartbeat-net --lib scrape_of_10000_clients -- --ignored --nocapture"]
    fn scrape_of_10000_clients() {
        let (server, now) = server_with(10_000);
        let driver = DriverStats::default();
        #[allow(clippy::disallowed_methods)] // timing a measurement
        let timed = |f: &mut dyn FnMut()| {
            let runs = 20;
            let mut each: Vec<Duration> = (0..runs)
                .map(|_| {
                    let t = std::time::Instant::now();
                    f();
                    t.elapsed()
                })
                .collect();
            each.sort();
            (each[runs / 2], each[runs - 1])
        };
        let mut snapshot = Snapshot::default();
        let snap = timed(&mut || snapshot = Snapshot::of(&server, &driver, now));
        let mut text = String::new();
        let enc = timed(&mut || {
            text.clear();
            encode(snapshot.clone(), &mut text).unwrap();
        });
        // /clients: the report a page at a time on the server task (the cost of one page is
        // what the loop waits), then serialised on the metrics thread.
        let page = timed(&mut || {
            let p: Vec<_> = server.clients().take(256).map(|c| c.summary()).collect();
            assert_eq!(p.len(), 256);
        });
        let report = server.report();
        let mut json = String::new();
        let ser = timed(&mut || json = serde_json::to_string(&report).unwrap());
        let series = text.lines().filter(|l| !l.starts_with('#')).count();
        println!(
            "10,000 clients: snapshot {:?} (max {:?}), encode {:?} (max {:?}): {} series, {} bytes; \
             report page of 256 {:?} (max {:?}), JSON {:?} (max {:?}): {} bytes",
            snap.0,
            snap.1,
            enc.0,
            enc.1,
            series,
            text.len(),
            page.0,
            page.1,
            ser.0,
            ser.1,
            json.len()
        );
        assert_eq!(snapshot.clients.len(), 10_000);
        assert!(series > 10 * 10_000, "{series}");
    }
}

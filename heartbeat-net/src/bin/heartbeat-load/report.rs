//! What a load run measured: one value, rendered as JSON (derived) or as text (by hand).

use std::fmt;

use hdrhistogram::Histogram;
use serde::Serialize;

use heartbeat_net::process::ProcSample;

/// The result of one run of the load generator. Rates are per second of the measured window.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct LoadReport {
    /// `v1` or `legacy`.
    pub(crate) protocol: &'static str,
    /// The server's address.
    pub(crate) target: String,
    /// Connections asked for.
    pub(crate) clients: u64,
    /// Time between one client's heartbeats, ms.
    pub(crate) interval_ms: f64,
    /// The ramp over which connections were opened, s.
    pub(crate) ramp_s: f64,
    /// From the start until the window opened (the ramp, then the last connect attempts), s.
    pub(crate) setup_s: f64,
    /// The measured window as it ran, s (shorter than asked when interrupted).
    pub(crate) duration_s: f64,
    /// Source addresses the connections were spread over.
    pub(crate) source_addrs: u64,
    /// Stopped (Ctrl-C) before the run was over.
    pub(crate) interrupted: bool,
    /// Connections opened.
    pub(crate) connected: u64,
    /// Connect attempts that failed or timed out.
    pub(crate) connect_failures: u64,
    /// Connections that ended before their run was over (closed by the server, reset, a
    /// failed write).
    pub(crate) disconnects: u64,
    /// I/O errors, `ERROR` lines from the server, undecodable input and acks that match no
    /// heartbeat. `first_error` shows the first.
    pub(crate) errors: u64,
    /// Heartbeats the schedule had for the window, over all clients.
    pub(crate) offered: u64,
    /// Heartbeats written.
    pub(crate) sent: u64,
    /// Heartbeats not sent: the generator woke up more than an interval late for them, or
    /// their socket could not take them (the server had not read for a long while). The server
    /// counts them as missed.
    pub(crate) skipped: u64,
    /// `offered` per second.
    pub(crate) offered_per_s: f64,
    /// `sent` per second.
    pub(crate) achieved_per_s: f64,
    /// Acks received (v1).
    pub(crate) acks: u64,
    /// Ack round trips (v1), from writing a heartbeat to reading its ack; `null` without acks.
    pub(crate) rtt_us: Option<RttSummary>,
    /// This process over the window.
    pub(crate) generator: ProcUsage,
    /// Each `--watch-pid` process over the window.
    pub(crate) watched: Vec<ProcUsage>,
    /// The first connect error, if any.
    pub(crate) first_connect_error: Option<String>,
    /// The first error counted in `errors`, if any.
    pub(crate) first_error: Option<String>,
}

/// Ack round-trip percentiles, µs (hdrhistogram, 3 significant digits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct RttSummary {
    /// Round trips recorded.
    pub(crate) count: u64,
    /// Median.
    pub(crate) p50: u64,
    /// 99th percentile.
    pub(crate) p99: u64,
    /// 99.9th percentile.
    pub(crate) p999: u64,
    /// Largest.
    pub(crate) max: u64,
}

impl RttSummary {
    /// The summary of `h`, `None` when it is empty.
    pub(crate) fn new(h: &Histogram<u64>) -> Option<Self> {
        (!h.is_empty()).then(|| Self {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        })
    }
}

/// One process's CPU time and memory over the measured window.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub(crate) struct ProcUsage {
    /// The process id.
    pub(crate) pid: u32,
    /// CPU time (user + system) it used during the window, s; `null` if it could not be read
    /// at both ends (it exited).
    pub(crate) cpu_s: Option<f64>,
    /// `cpu_s` per heartbeat sent in the window, µs.
    pub(crate) cpu_us_per_heartbeat: Option<f64>,
    /// Resident memory at the window's end, KiB.
    pub(crate) rss_kib: Option<u64>,
    /// Peak resident memory since the process started (`VmHWM`), at the window's end, KiB.
    pub(crate) peak_rss_kib: Option<u64>,
}

impl ProcUsage {
    /// The usage between two samples, per `heartbeats`.
    pub(crate) fn new(
        pid: u32,
        before: Option<ProcSample>,
        after: Option<ProcSample>,
        heartbeats: u64,
    ) -> Self {
        let cpu = before
            .zip(after)
            .map(|(b, a)| a.cpu.saturating_sub(b.cpu).as_secs_f64());
        Self {
            pid,
            cpu_s: cpu.map(|c| round(c, 3)),
            cpu_us_per_heartbeat: cpu
                .filter(|_| heartbeats > 0)
                .map(|c| round(c * 1e6 / heartbeats as f64, 3)),
            rss_kib: after.map(|a| a.rss_kib),
            peak_rss_kib: after.map(|a| a.peak_rss_kib),
        }
    }
}

/// `x` rounded to `decimals` places, so JSON carries no false precision.
fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

impl LoadReport {
    /// The report as one JSON object.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("a load report is always serialisable");
        for key in ["offered_per_s", "achieved_per_s", "duration_s", "setup_s"] {
            if let Some(x) = v[key].as_f64() {
                v[key] = serde_json::json!(round(x, 3));
            }
        }
        v
    }
}

fn fmt_us(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1e3)
}

fn fmt_usage(f: &mut fmt::Formatter<'_>, label: &str, u: &ProcUsage) -> fmt::Result {
    write!(f, "{label:<11}  pid {}: ", u.pid)?;
    match (u.cpu_s, u.cpu_us_per_heartbeat) {
        (Some(cpu), Some(per)) => write!(f, "cpu {cpu:.2} s = {per:.2} us/heartbeat")?,
        (Some(cpu), None) => write!(f, "cpu {cpu:.2} s")?,
        _ => write!(f, "cpu unknown (exited?)")?,
    }
    match (u.rss_kib, u.peak_rss_kib) {
        (Some(rss), Some(peak)) => writeln!(
            f,
            ", rss {:.1} MiB (peak {:.1} MiB)",
            rss as f64 / 1024.0,
            peak as f64 / 1024.0
        ),
        _ => writeln!(f),
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "heartbeat-load: {} {} clients x {} ms for {:.1} s against {} (ramp {:.1} s, {} \
             source address{}){}",
            self.clients,
            self.protocol,
            self.interval_ms,
            self.duration_s,
            self.target,
            self.ramp_s,
            self.source_addrs,
            if self.source_addrs == 1 { "" } else { "es" },
            if self.interrupted {
                " - INTERRUPTED"
            } else {
                ""
            },
        )?;
        writeln!(
            f,
            "connections  {} connected in {:.1} s, {} failed to connect, {} disconnected early, {} \
             errors",
            self.connected, self.setup_s, self.connect_failures, self.disconnects, self.errors
        )?;
        writeln!(
            f,
            "heartbeats   offered {} ({:.1}/s), sent {} ({:.1}/s), {} skipped",
            self.offered, self.offered_per_s, self.sent, self.achieved_per_s, self.skipped
        )?;
        match &self.rtt_us {
            Some(r) => writeln!(
                f,
                "acks         {}, rtt p50 {}  p99 {}  p99.9 {}  max {}",
                self.acks,
                fmt_us(r.p50),
                fmt_us(r.p99),
                fmt_us(r.p999),
                fmt_us(r.max)
            )?,
            None => writeln!(f, "acks         {}", self.acks)?,
        }
        fmt_usage(f, "generator", &self.generator)?;
        for w in &self.watched {
            fmt_usage(f, "watched", w)?;
        }
        if let Some(e) = &self.first_connect_error {
            writeln!(f, "first connect error: {e}")?;
        }
        if let Some(e) = &self.first_error {
            writeln!(f, "first error: {e}")?;
        }
        Ok(())
    }
}

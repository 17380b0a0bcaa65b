//! A synthetic server log for benchmarks: one client's heartbeats as `heartbeat-server --json`
//! prints them, over days, made in seconds and the same for the same seed.
//!
//! The model: client `c1` declares `interval` and sends on a drift-free grid; each heartbeat
//! takes one of the simulator's latencies (1 to 50 ms, `Latency::default()`, drawn as the
//! simulator draws them); TCP keeps them in order; and now and then (every 5 to 60 minutes)
//! the link stalls for 0.2 to 1.5 s, after which the held heartbeats arrive at once (a `burst`).
//! So a tight detector makes mistakes and a loose one does not: something to tune.

use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use heartbeat_core::frame::Protocol;
use heartbeat_core::server::Event;
use heartbeat_core::{ClientId, ClientKey, ConnId, Seq, UnixTime};

use crate::scenario::EPOCH_SECS;
use heartbeat_memnet::Latency;

/// What to generate: `DURATION@RATE`, e.g. `7d@10Hz` or `1h@250ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    /// How long the client runs.
    pub duration: Duration,
    /// Its heartbeat interval.
    pub interval: Duration,
}

impl Spec {
    /// Parses `DURATION@RATE`: a duration as `qos --duration` takes it (`90s`, `10m`, `1h`,
    /// `7d`) and a rate in Hz (`10Hz`) or an interval with a unit (`100ms`, `1s`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid synthetic trace {s:?}: expected DURATION@RATE, e.g. 7d@10Hz");
        let (d, r) = s.split_once('@').ok_or_else(bad)?;
        let duration = crate::flags::parse_duration(d)?;
        let interval = if let Some(hz) = r.strip_suffix("Hz").or_else(|| r.strip_suffix("hz")) {
            let hz: f64 = hz.parse().map_err(|_| bad())?;
            if !(hz.is_finite() && hz > 0.0 && hz <= 1000.0) {
                return Err(format!("rate {r:?} out of range: 1000 Hz at most"));
            }
            Duration::from_secs_f64(1.0 / hz)
        } else {
            crate::flags::parse_duration(r)?
        };
        if interval < Duration::from_millis(1) || interval > duration {
            return Err(format!(
                "interval {interval:?} out of range: 1 ms up to the duration"
            ));
        }
        Ok(Self { duration, interval })
    }

    /// Heartbeats in the trace.
    pub fn heartbeats(&self) -> u64 {
        (self.duration.as_nanos() / self.interval.as_nanos()) as u64
    }
}

/// Writes the trace of `spec` with `seed` to `out`: a `connected` line, every `burst` and
/// `heartbeat`, and a `summary` line.
pub fn write(spec: Spec, seed: u64, out: &mut impl Write) -> io::Result<()> {
    let client = ClientKey::Id(ClientId::new("c1").expect("a valid id"));
    let conn = ConnId(1);
    let t0 = Duration::from_secs(EPOCH_SECS);
    let mut latency_rng = SmallRng::seed_from_u64(seed);
    let mut stall_rng = SmallRng::seed_from_u64(seed ^ 0x57a1_1000_0000_0000);
    let latency = Latency::default();
    let line = |out: &mut dyn Write, e: &Event| -> io::Result<()> {
        serde_json::to_writer(&mut *out, e)?;
        out.write_all(b"\n")
    };
    line(
        out,
        &Event::Connected {
            conn,
            client: client.clone(),
            peer: SocketAddr::from((Ipv4Addr::new(192, 168, 0, 2), 49152)),
            protocol: Protocol::V1,
            interval: Some(spec.interval),
            resumed: false,
        },
    )?;
    let stall_gap = |rng: &mut SmallRng| Duration::from_secs(rng.random_range(300..=3600));
    let stall_len = |rng: &mut SmallRng| Duration::from_millis(rng.random_range(200..=1500));
    let mut stall_from = stall_gap(&mut stall_rng);
    let mut stall_to = stall_from + stall_len(&mut stall_rng);
    let n = spec.heartbeats();
    // Each heartbeat's arrival; those of a stall all arrive with the first after it.
    let mut prev: Option<Duration> = None;
    let mut pending: Vec<(u64, Duration, Duration)> = Vec::new();
    let mut latest = Duration::ZERO;
    for k in 0..n {
        let sent = Duration::from_nanos((spec.interval.as_nanos() as u64).saturating_mul(k));
        while sent >= stall_to {
            stall_from = stall_to + stall_gap(&mut stall_rng);
            stall_to = stall_from + stall_len(&mut stall_rng);
        }
        let leaves = if sent >= stall_from { stall_to } else { sent };
        let arrives = (leaves + latency.sample(&mut latency_rng)).max(latest);
        latest = arrives;
        if pending.first().is_some_and(|&(_, _, at)| at != arrives) {
            flush(out, &client, conn, &mut pending, &mut prev, t0, &line)?;
        }
        pending.push((k + 1, sent, arrives));
    }
    flush(out, &client, conn, &mut pending, &mut prev, t0, &line)?;
    out.write_all(b"{\"event\":\"summary\",\"clients\":[]}\n")
}

/// Writes the heartbeats of one arrival (a burst if several), as the server does.
fn flush(
    out: &mut impl Write,
    client: &ClientKey,
    conn: ConnId,
    pending: &mut Vec<(u64, Duration, Duration)>,
    prev: &mut Option<Duration>,
    t0: Duration,
    line: &dyn Fn(&mut dyn Write, &Event) -> io::Result<()>,
) -> io::Result<()> {
    let Some(&(first, _, at)) = pending.first() else {
        return Ok(());
    };
    let silence = prev.map(|p| at - p);
    if pending.len() > 1 {
        let last = pending[pending.len() - 1].0;
        line(
            out,
            &Event::Burst {
                conn,
                client: client.clone(),
                first: Seq(first),
                last: Seq(last),
                count: pending.len() as u64,
                silence,
            },
        )?;
    }
    for (i, &(seq, sent, at)) in pending.iter().enumerate() {
        let (sent, received) = (
            UnixTime::from_duration(t0 + sent),
            UnixTime::from_duration(t0 + at),
        );
        line(
            out,
            &Event::Heartbeat {
                conn,
                client: client.clone(),
                seq: Seq(seq),
                sent,
                received,
                delay_ns: received.signed_nanos_since(sent),
                inter_arrival: if i == 0 {
                    silence
                } else {
                    Some(Duration::ZERO)
                },
                recovered: false,
            },
        )?;
    }
    *prev = Some(at);
    pending.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serverlog::ServerLog;

    #[test]
    fn specs_parse() {
        let s = Spec::parse("7d@10Hz").unwrap();
        assert_eq!(s.duration, Duration::from_secs(7 * 86_400));
        assert_eq!(s.interval, Duration::from_millis(100));
        assert_eq!(s.heartbeats(), 6_048_000);
        assert_eq!(
            Spec::parse("1h@250ms").unwrap().interval,
            Duration::from_millis(250)
        );
        for bad in [
            "7d",
            "7d@",
            "@10Hz",
            "7d@0Hz",
            "7d@xHz",
            "1s@2s",
            "7d@2000Hz",
        ] {
            assert!(Spec::parse(bad).is_err(), "{bad}");
        }
    }

    /// The trace reads back as a server log: every heartbeat in order, stalls as bursts, the
    /// same bytes for the same seed.
    #[test]
    fn the_trace_is_a_server_log() {
        let spec = Spec::parse("2h@10Hz").unwrap();
        let mut a = Vec::new();
        write(spec, 7, &mut a).unwrap();
        let mut b = Vec::new();
        write(spec, 7, &mut b).unwrap();
        assert!(a == b, "same seed, same bytes");
        let log = ServerLog::from_text(std::str::from_utf8(&a).unwrap());
        assert_eq!((log.stats.malformed, log.stats.skipped), (0, 0));
        assert_eq!(log.clients[0].interval, Some(Duration::from_millis(100)));
        let seqs: Vec<u64> = log
            .items
            .iter()
            .filter_map(|s| match s.item {
                crate::serverlog::Item::Beat { seq, .. } => Some(seq),
                _ => None,
            })
            .collect();
        assert_eq!(seqs, (1..=72_000).collect::<Vec<_>>());
        let bursts = log
            .items
            .iter()
            .filter(|s| matches!(s.item, crate::serverlog::Item::Burst { .. }))
            .count();
        assert!(bursts >= 2, "{bursts} bursts in 2 h");
    }
}

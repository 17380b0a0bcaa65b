//! The status page of `--metrics-addr`: `GET /` serves one HTML file (its CSS and script
//! inside, compiled into the binary: no CDN, works offline) that polls `GET /status.json` every
//! two seconds and redraws itself without reloading.
//!
//! `/status.json?page=N&q=TEXT` answers the counts by state, then one page ([`PER_PAGE`], 50)
//! of the clients whose id contains `TEXT`, problems first: down, suspect, never seen
//! (expected, not heard from yet), left, then up; by id within each. Each row has its state
//! and how long it has been in it, its last heartbeat's age, interval, heartbeats received and
//! missed, delay p99, and the detector's value against its levels; the page's timeline is one
//! SVG of the last hour, a lane per row, drawn by [`heartbeat_core::timeline::svg`] (the
//! simulator's renderer) from the [`History`] the server loop keeps.
//!
//! What it costs the monitor's loop: one pass over the clients to rank them (a byte and a key
//! each), then the page's fifty rows; the history's lock is held only to build the page's
//! fifty lanes, never while drawing or writing. At ten thousand clients the page stays the
//! same size (BENCHMARKS.md, "Status page").

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;

use heartbeat_core::ClientKey;
use heartbeat_core::liveness::Liveness;
use heartbeat_core::server::{ClientView, Server};
use heartbeat_core::timeline::history::{History, WINDOW};
use heartbeat_core::timeline::{Lane, Timeline, svg};

use heartbeat_net::ServerControl;

/// The page itself.
pub(crate) const HTML: &str = include_str!("statuspage.html");

/// Clients per page: as many as a timeline draws.
pub(crate) const PER_PAGE: usize = heartbeat_core::timeline::MAX_LANES;

/// The longest filter kept, in characters (a client id is at most this long too).
const MAX_FILTER: usize = 256;

/// The history the loop keeps and the page reads. Clones share it.
#[derive(Clone, Debug, Default)]
pub(crate) struct SharedHistory(Arc<Mutex<History>>);

impl SharedHistory {
    /// The history, locked. Only counts and small records are behind the lock: a panic while
    /// holding it leaves them usable.
    pub(crate) fn lock(&self) -> MutexGuard<'_, History> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where a client goes on the page: problems first, in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Category {
    /// Declared dead.
    Down,
    /// Late beyond the suspect level.
    Suspect,
    /// Expected (`--expect`) and never heard from: down, or its grace still running.
    NeverSeen,
    /// Said goodbye.
    Left,
    // Silenced clients (`ctl silence`) will get a category of their own here.
    /// Heard from in time.
    Up,
}

impl Category {
    fn of(c: &ClientView<'_>) -> Self {
        match c.state() {
            Liveness::Down | Liveness::Unknown if c.is_never_heard() => Self::NeverSeen,
            Liveness::Down => Self::Down,
            Liveness::Suspect => Self::Suspect,
            Liveness::Left => Self::Left,
            Liveness::Unknown | Liveness::Up => Self::Up,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Down => "down",
            Self::Suspect => "suspect",
            Self::NeverSeen => "never_seen",
            Self::Left => "left",
            Self::Up => "up",
        }
    }
}

/// What `/status.json` was asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Query {
    /// The page, from 0.
    pub(crate) page: usize,
    /// Only clients whose id contains this.
    pub(crate) filter: String,
}

impl Query {
    /// The query of a request's URI query string (`page=2&q=web`); what cannot be read is
    /// left at its default.
    pub(crate) fn parse(query: Option<&str>) -> Self {
        let mut q = Self::default();
        for pair in query.unwrap_or("").split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "page" => q.page = v.parse().unwrap_or(0),
                "q" => q.filter = decode(v).chars().take(MAX_FILTER).collect(),
                _ => {}
            }
        }
        q
    }
}

/// `s` percent-decoded (and `+` as a space); bytes that are not UTF-8 replaced.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One client's row.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Row {
    #[serde(skip)]
    key: ClientKey,
    client: String,
    category: Category,
    state: Liveness,
    expected: bool,
    connected: bool,
    /// Seconds in its state, as far as the history knows (since the server started at most).
    state_for_s: Option<f64>,
    /// Seconds since its last heartbeat.
    last_heartbeat_age_s: Option<f64>,
    interval_ms: Option<f64>,
    received: u64,
    missed: u64,
    delay_p99_ms: Option<f64>,
    /// The detector's suspicion now.
    value: Option<f64>,
}

/// The detector's levels, for every row.
#[derive(Clone, Debug, Serialize)]
struct Levels {
    suspect: f64,
    down: f64,
    /// The detector and its settings, e.g. `fixed grace=2x`.
    detector: String,
}

/// The answer of `/status.json`.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Status {
    /// Clients per category, over every client (the filter aside).
    counts: BTreeMap<&'static str, usize>,
    total: usize,
    /// Clients the filter kept.
    matched: usize,
    page: usize,
    pages: usize,
    per_page: usize,
    levels: Levels,
    rows: Vec<Row>,
    /// The page's timeline (SVG), one lane per row in the rows' order.
    timeline: String,
}

/// The status of `query`: ranks every client on the server task, takes the page's rows there
/// too, then builds the page's lanes from `history` and draws them here.
pub(crate) async fn status(
    control: &ServerControl,
    history: &SharedHistory,
    query: Query,
    timeout: Duration,
) -> Result<Status, heartbeat_net::ControlError> {
    let ranked = control
        .inspect(timeout, |s: &Server, _, _| {
            s.clients()
                .map(|c| (Category::of(&c), c.client().clone()))
                .collect::<Vec<_>>()
        })
        .await?;
    let mut counts: BTreeMap<&'static str, usize> = [
        Category::Down,
        Category::Suspect,
        Category::NeverSeen,
        Category::Left,
        Category::Up,
    ]
    .into_iter()
    .map(|c| (c.as_str(), 0))
    .collect();
    for (c, _) in &ranked {
        *counts.entry(c.as_str()).or_default() += 1;
    }
    let total = ranked.len();
    let mut kept: Vec<(Category, ClientKey)> = if query.filter.is_empty() {
        ranked
    } else {
        ranked
            .into_iter()
            .filter(|(_, k)| k.to_string().contains(&query.filter))
            .collect()
    };
    kept.sort_unstable();
    let matched = kept.len();
    let pages = matched.div_ceil(PER_PAGE).max(1);
    let page = query.page.min(pages - 1);
    let keys: Vec<ClientKey> = kept
        .into_iter()
        .skip(page * PER_PAGE)
        .take(PER_PAGE)
        .map(|(_, k)| k)
        .collect();
    let shared = history.clone();
    let (rows, levels, now) = control
        .inspect(timeout, move |s: &Server, _, now| {
            let config = s.config().detector_config();
            let l = config.levels();
            let levels = Levels {
                suspect: l.suspect,
                down: l.down,
                detector: config.to_string(),
            };
            let history = shared.lock();
            let rows: Vec<Row> = keys
                .iter()
                .filter_map(|k| s.client(k))
                .map(|c| {
                    let standing = history.standing(c.client(), now.mono);
                    let summary = c.summary();
                    Row {
                        key: c.client().clone(),
                        client: c.client().to_string(),
                        category: Category::of(&c),
                        state: c.state(),
                        expected: c.is_expected(),
                        connected: c.is_connected(),
                        state_for_s: standing.map(|s| s.held.as_secs_f64()),
                        last_heartbeat_age_s: c
                            .last_seen()
                            .map(|t| now.unix.as_nanos().saturating_sub(t.as_nanos()) as f64 / 1e9),
                        interval_ms: standing
                            .and_then(|s| s.interval)
                            .map(|d| d.as_secs_f64() * 1e3),
                        received: c.received(),
                        missed: c.missed() + c.recovered(),
                        delay_p99_ms: summary.delay_ms.map(|d| d.p99_ms),
                        value: c.suspicion(now.mono).filter(|v| v.is_finite()),
                    }
                })
                .collect();
            (rows, levels, now)
        })
        .await?;
    let (lanes, reach) = {
        let history = history.lock();
        // A server younger than an hour draws its life so far, not a mostly empty hour.
        let reach = history.reach(now.mono).max(Duration::from_secs(1));
        let lanes: Vec<Lane> = rows
            .iter()
            .map(|r| {
                history
                    .lane(&r.key, &r.client, now.mono, reach)
                    .unwrap_or_else(|| Lane {
                        name: r.client.clone(),
                        ..Lane::default()
                    })
            })
            .collect();
        (lanes, reach)
    };
    let first = page * PER_PAGE + 1;
    let mut title = String::new();
    let _ = write!(
        title,
        "The last {}: clients {first}-{} of {matched}",
        if reach >= WINDOW {
            "hour".to_owned()
        } else {
            format!("{} s (since the server started)", reach.as_secs())
        },
        first + rows.len().saturating_sub(1)
    );
    let subtitle = format!(
        "detector {}; suspect at {}, down at {}",
        levels.detector, levels.suspect, levels.down
    );
    let timeline = svg::render(&Timeline::of_lanes(&title, &subtitle, lanes, reach));
    Ok(Status {
        counts,
        total,
        matched,
        page,
        pages,
        per_page: PER_PAGE,
        levels,
        rows,
        timeline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_read_leniently() {
        assert_eq!(Query::parse(None), Query::default());
        let q = Query::parse(Some("page=3&q=web%2D0+1&x=y"));
        assert_eq!((q.page, q.filter.as_str()), (3, "web-0 1"));
        let q = Query::parse(Some("page=-1&q=%zz%4"));
        assert_eq!((q.page, q.filter.as_str()), (0, "%zz%4"));
        let q = Query::parse(Some(&format!("q={}", "a".repeat(1000))));
        assert_eq!(q.filter.len(), MAX_FILTER);
        assert_eq!(decode("%ff%fe"), "\u{fffd}\u{fffd}");
    }

    #[test]
    fn problems_come_first() {
        let mut c = [
            Category::Up,
            Category::Left,
            Category::NeverSeen,
            Category::Suspect,
            Category::Down,
        ];
        c.sort();
        assert_eq!(
            c.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            ["down", "suspect", "never_seen", "left", "up"]
        );
    }
}

//! The status page of `--metrics-addr`: `GET /` serves one HTML file (its CSS and script
//! inside, compiled into the binary: no CDN, works offline) that polls `GET /status.json` every
//! two seconds and redraws itself without reloading.
//!
//! `/status.json?page=N&q=TEXT` answers the counts by state, then one page ([`PER_PAGE`], 50)
//! of the clients whose id contains `TEXT`, problems first: down, suspect, never seen
//! (expected, not heard from yet), silenced (`heartbeat-server ctl silence`, whatever their
//! state), left, then up; by id within each. Each row has its state
//! and how long it has been in it, its last heartbeat's age, interval, heartbeats received and
//! missed, delay p99, and the detector's value against its levels; the page's timeline is one
//! SVG of the last hour, a lane per row, drawn by [`heartbeat_core::timeline::svg`] (the
//! simulator's renderer) from the [`History`] the server loop keeps.
//!
//! What it costs the monitor's loop: one request to the server task, two passes over the
//! clients (sorted by key already: count them by category, then find the page's fifty) that
//! clone only the page's keys, and the page's fifty rows; the history's lock is held by this
//! thread only to build the page's fifty lanes, never while drawing or writing. At ten
//! thousand clients the page stays the same size (BENCHMARKS.md, "Status page").

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;

use heartbeat_core::liveness::Liveness;
use heartbeat_core::server::{ClientView, Server};
use heartbeat_core::timeline::history::{History, WINDOW};
use heartbeat_core::timeline::{Lane, Timeline, svg};
use heartbeat_core::{ClientKey, Now};

use heartbeat_net::ServerControl;

use super::silence::Silences;

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
    /// In a maintenance window (`heartbeat-server ctl silence`), whatever its state: watched
    /// and shown, paging nobody.
    Silenced,
    /// Said goodbye.
    Left,
    /// Heard from in time.
    Up,
}

/// How many categories there are.
const CATEGORIES: usize = 6;

impl Category {
    /// Every category, in the page's order.
    const ALL: [Self; CATEGORIES] = [
        Self::Down,
        Self::Suspect,
        Self::NeverSeen,
        Self::Silenced,
        Self::Left,
        Self::Up,
    ];

    fn of(c: &ClientView<'_>, silences: &Silences) -> Self {
        if silences.until(c.client()).is_some() {
            return Self::Silenced;
        }
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
            Self::Silenced => "silenced",
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

/// The row of client `c`, in category `category`, at `now`.
fn row(
    c: &ClientView<'_>,
    category: Category,
    history: &History,
    silences: &Silences,
    now: Now,
) -> Row {
    let standing = history.standing(c.client(), now.mono);
    Row {
        silenced_until: silences.until(c.client()).map(super::silence::secs),
        key: c.client().clone(),
        client: c.client().to_string(),
        category,
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
        delay_p99_ms: c.summary().delay_ms.map(|d| d.p99_ms),
        value: c.suspicion(now.mono).filter(|v| v.is_finite()),
    }
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
    /// When its silence ends (Unix seconds), while silenced.
    silenced_until: Option<f64>,
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

/// The status of `query`: on the server task, counts every client and takes the page's rows
/// (two passes over the clients, sorted by key already, cloning only the page's keys); then
/// builds the page's lanes from `history` and draws them here.
pub(crate) async fn status(
    control: &ServerControl,
    history: &SharedHistory,
    silences: &Silences,
    query: Query,
    timeout: Duration,
) -> Result<Status, heartbeat_net::ControlError> {
    let shared = history.clone();
    let silences = silences.clone();
    let (all, matched, page, rows, levels, now) = control
        .inspect(timeout, move |s: &Server, _, now| {
            let filter = query.filter;
            let mut name = String::new();
            let mut matches = |k: &ClientKey| {
                if filter.is_empty() {
                    return true;
                }
                name.clear();
                let _ = write!(name, "{k}");
                name.contains(filter.as_str())
            };
            // Clients per category: all of them, and those the filter keeps.
            let (mut all, mut kept) = ([0usize; CATEGORIES], [0usize; CATEGORIES]);
            for c in s.clients() {
                let cat = Category::of(&c, &silences) as usize;
                all[cat] += 1;
                if matches(c.client()) {
                    kept[cat] += 1;
                }
            }
            let matched: usize = kept.iter().sum();
            let pages = matched.div_ceil(PER_PAGE).max(1);
            let page = query.page.min(pages - 1);
            let range = page * PER_PAGE..(page + 1) * PER_PAGE;
            // Where each category starts in the page order (problems first, by key within).
            let mut next = [0usize; CATEGORIES];
            for k in 1..CATEGORIES {
                next[k] = next[k - 1] + kept[k - 1];
            }
            let config = s.config().detector_config();
            let l = config.levels();
            let levels = Levels {
                suspect: l.suspect,
                down: l.down,
                detector: config.to_string(),
            };
            let history = shared.lock();
            let mut rows: Vec<(usize, Row)> = Vec::with_capacity(PER_PAGE);
            for c in s.clients() {
                let cat = Category::of(&c, &silences);
                if !matches(c.client()) {
                    continue;
                }
                let at = next[cat as usize];
                next[cat as usize] += 1;
                if range.contains(&at) {
                    rows.push((at, row(&c, cat, &history, &silences, now)));
                }
            }
            rows.sort_by_key(|(at, _)| *at);
            let rows: Vec<Row> = rows.into_iter().map(|(_, r)| r).collect();
            (all, matched, page, rows, levels, now)
        })
        .await?;
    let counts: BTreeMap<&'static str, usize> = Category::ALL
        .iter()
        .map(|c| (c.as_str(), all[*c as usize]))
        .collect();
    let total: usize = all.iter().sum();
    let pages = matched.div_ceil(PER_PAGE).max(1);
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
        "the detector's suspect level {}, down level {}",
        levels.suspect, levels.down
    );
    let mut picture = Timeline::of_lanes(&title, &subtitle, lanes, reach);
    picture.detector = levels.detector.clone();
    let timeline = svg::render(&picture);
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

    /// Pages of 50 in the page's order, problems first and by key within each category,
    /// across a page boundary; the filter; a page past the last.
    #[tokio::test]
    async fn pages_hold_problems_first_then_the_rest_by_key() {
        use std::net::SocketAddr;
        use std::sync::Arc;

        use heartbeat_core::config::ServerConfig;
        use heartbeat_core::server::Expected;
        use heartbeat_core::{ClientId, UnixTime};
        use heartbeat_net::driver::{Control, DriverStats};

        #[allow(clippy::disallowed_methods)] // an arbitrary origin; only offsets matter
        let now = Now {
            mono: std::time::Instant::now(),
            unix: UnixTime::from_duration(Duration::from_secs(1_700_000_000)),
        };
        let mut server = Server::new(Arc::new(ServerConfig::default()));
        for i in 0..60 {
            let peer = SocketAddr::from(([10, 0, 0, i as u8], 4000));
            let conn = server.accept(now, peer);
            server.handle_input(now, conn, format!("HELLO 1 c{i:03} 1000\n").as_bytes());
        }
        let ghosts: Vec<Expected> = ["x0", "x1", "x2"]
            .iter()
            .map(|id| Expected {
                client: ClientId::new(id).unwrap(),
                interval: Duration::from_secs(1),
                grace: None,
            })
            .collect();
        let _ = server.set_expected(now, &ghosts);
        let server = std::rc::Rc::new(server);
        let (control, mut rx) = ServerControl::channel();
        let local = tokio::task::LocalSet::new();
        local.spawn_local({
            let server = server.clone();
            async move {
                loop {
                    if let Control::Inspect(f) = rx.recv().await {
                        f(&server, &DriverStats::default(), now);
                    }
                }
            }
        });
        let history = SharedHistory::default();
        // Two clients in a maintenance window: after the never-seen ones, before the rest.
        let silences = Silences::new(None);
        let until = UnixTime::from_duration(Duration::from_secs(1_700_003_600));
        for id in ["c010", "c011"] {
            silences.silence(ClientId::new(id).unwrap(), until, now);
        }
        let ask = |page: usize, filter: &str| {
            let query = Query {
                page,
                filter: filter.to_owned(),
            };
            status(&control, &history, &silences, query, Duration::from_secs(5))
        };
        let names = |s: &Status| s.rows.iter().map(|r| r.client.clone()).collect::<Vec<_>>();
        let first = local.run_until(ask(0, "")).await.unwrap();
        let never = Category::NeverSeen.as_str();
        let silenced = Category::Silenced.as_str();
        assert_eq!(
            (
                first.total,
                first.pages,
                first.counts[never],
                first.counts[silenced]
            ),
            (63, 2, 3, 2)
        );
        let mut want: Vec<String> = ["x0", "x1", "x2", "c010", "c011"].map(String::from).into();
        want.extend(
            (0..47)
                .filter(|i| !(10..12).contains(i))
                .map(|i| format!("c{i:03}")),
        );
        assert_eq!(names(&first), want);
        assert_eq!(first.rows[3].silenced_until, Some(1_700_003_600.0));
        assert_eq!(first.rows[5].silenced_until, None);
        let second = local.run_until(ask(1, "")).await.unwrap();
        assert_eq!(
            names(&second),
            (47..60).map(|i| format!("c{i:03}")).collect::<Vec<_>>()
        );
        assert!(second.timeline.contains("clients 51-63 of 63"));
        let past = local.run_until(ask(9, "")).await.unwrap();
        assert_eq!(past.page, 1);
        let some = local.run_until(ask(0, "c05")).await.unwrap();
        assert_eq!((some.matched, some.total), (10, 63));
        let held = local.run_until(ask(0, "c01")).await.unwrap();
        assert_eq!(names(&held)[..3], ["c010", "c011", "c012"]);
        assert_eq!(
            names(&some),
            (50..60).map(|i| format!("c{i:03}")).collect::<Vec<_>>()
        );
    }

    #[test]
    fn problems_come_first() {
        let mut c = [
            Category::Up,
            Category::Left,
            Category::NeverSeen,
            Category::Silenced,
            Category::Suspect,
            Category::Down,
        ];
        c.sort();
        assert_eq!(
            c.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            ["down", "suspect", "never_seen", "silenced", "left", "up"]
        );
        assert_eq!(c, Category::ALL);
    }
}

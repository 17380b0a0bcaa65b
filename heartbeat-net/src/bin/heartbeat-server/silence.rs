//! Maintenance windows: a silenced client is still monitored and shown, but its transitions
//! run no hook and no webhook until its silence ends (`heartbeat-server ctl silence ID --until
//! WHEN`, see [`ctl`](super::ctl)).
//!
//! - Its transitions still go to the log and to `--json`, marked `"silenced_until"`; `/clients`
//!   shows `silenced_until` and `/metrics` `heartbeat_client_silenced{client} 1`, which the
//!   shipped alert rules use to stay quiet.
//! - When a silence ends (its time passes, `ctl unsilence`, or it passed while no server ran)
//!   and the client is down then, that is announced once, as a `transition` from `down` to
//!   `down` with `"silence_ended":true`: nobody was paged while it was silenced. A client that
//!   came back meanwhile is not announced.
//! - With `--state-dir`, the silences are kept in `DIR/silences` (one JSON object, replaced
//!   atomically on each change, off the server's loop), restored at start; the ones whose end
//!   passed are dropped then (and announced as above). Without it they last until the server
//!   stops.
//! - A forgotten client's silence goes with it.
//!
//! The loop reads the silences on each transition, the control socket changes them inside a
//! request to the loop ([`ServerControl::update`](heartbeat_net::ServerControl::update)), and
//! the metrics thread reads them per scrape: a mutex held for a lookup or a copy, never across
//! I/O.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Local, TimeZone as _};
use heartbeat_core::Report;
use heartbeat_core::server::{Event, Server};
use heartbeat_core::units::fmt_duration;
use heartbeat_core::{ClientId, ClientKey, DetectorKind, Liveness, Now, UnixTime, fmt_ms};
use serde::{Deserialize, Serialize};
use tracing::Level;

use super::metrics::ClientRow;
use super::state::SideFile;
use heartbeat_net::logsummary::PeerLine;
use heartbeat_net::{Clock as _, LogSummary, SystemClock};

/// The name of the silences' file in the state directory.
pub(crate) const FILE: &str = "silences";

/// The version of that file's layout.
const VERSION: u32 = 1;

/// The silences of one server, and where they are kept; clones share them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Silences(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    book: Mutex<Book>,
    /// Where they are kept (`--state-dir`).
    file: Option<SideFile>,
    /// One save at a time, each of the silences as they are then.
    saving: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Book {
    /// By client: when its silence ends.
    entries: BTreeMap<ClientId, Entry>,
    /// Clients whose silence ended and that the loop has not looked at yet.
    ended: Vec<ClientId>,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// The end, on the wall clock (shown, kept).
    until: UnixTime,
    /// The same end on the loop's monotonic clock (what ends it).
    ends: Instant,
}

/// The silences' file: `{"version":1,"silences":[{"client":"web-2","until":1765000000.0}]}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedSilences {
    version: u32,
    silences: Vec<Saved>,
}

/// One silence, as kept and as listed by `ctl list`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Saved {
    /// The client's id.
    pub(crate) client: String,
    /// When its silence ends, Unix seconds.
    pub(crate) until: f64,
}

/// Unix seconds of `t`, for JSON.
pub(crate) fn secs(t: UnixTime) -> f64 {
    t.as_nanos() as f64 / 1e9
}

/// `s` Unix seconds as a time, if it is one (finite, positive, representable).
pub(crate) fn from_secs(s: f64) -> Option<UnixTime> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| u64::try_from(d.as_nanos()).is_ok())
        .map(UnixTime::from_duration)
}

impl Silences {
    /// No silences yet, kept in `file` (none: they last until the server stops).
    pub(crate) fn new(file: Option<SideFile>) -> Self {
        Self(Arc::new(Shared {
            file,
            ..Shared::default()
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.0.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the silences as they are now to their file (with `--state-dir`), on a thread of
    /// the blocking pool: never on the server's loop. `Err` says why it failed.
    pub(crate) async fn save(&self) -> Result<(), String> {
        let Some(file) = &self.0.file else {
            return Ok(());
        };
        let _one = self.0.saving.lock().await;
        let bytes = self.to_file();
        let this = self.clone();
        let written = tokio::task::spawn_blocking(move || {
            let file = this
                .0
                .file
                .as_ref()
                .map(|f| f.replace(&bytes, SystemClock.unix()));
            file.unwrap_or(Ok(()))
        })
        .await;
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("{}: {e}", file.show())),
            Err(e) => Err(format!("{}: {e}", file.show())),
        }
    }

    /// [`save`](Self::save) on a task of its own, the failure logged: from the loop, once
    /// silences ended (so a restart does not announce them again).
    pub(crate) fn save_soon(&self) {
        if self.0.file.is_none() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.save().await {
                // not caused by a peer: the server's own directory
                tracing::error!(
                    "Cannot save the silences: {e}; a restart would announce the ended ones again"
                );
            }
        });
    }

    /// Silences `client` until `until` (replacing an earlier end).
    pub(crate) fn silence(&self, client: ClientId, until: UnixTime, now: Now) {
        let ends = mono_at(until, now);
        self.lock().entries.insert(client, Entry { until, ends });
    }

    /// Ends `client`'s silence now, if it has one (the loop then announces it if it is down);
    /// the end it had.
    pub(crate) fn unsilence(&self, client: &ClientId) -> Option<UnixTime> {
        let mut book = self.lock();
        let entry = book.entries.remove(client)?;
        book.ended.push(client.clone());
        Some(entry.until)
    }

    /// Drops `client`'s silence without an announcement: it was forgotten.
    pub(crate) fn forget(&self, client: &ClientKey) {
        if let ClientKey::Id(id) = client {
            self.lock().entries.remove(id);
        }
    }

    /// Drops the silences of clients `server` no longer knows (forgotten without an event: an
    /// expected client never heard from, taken off the list by a reload).
    pub(crate) fn retain_known(&self, server: &Server) {
        self.lock()
            .entries
            .retain(|id, _| server.client(&ClientKey::Id(id.clone())).is_some());
    }

    /// When `client`'s silence ends, if it is silenced.
    pub(crate) fn until(&self, client: &ClientKey) -> Option<UnixTime> {
        let ClientKey::Id(id) = client else {
            return None;
        };
        self.lock().entries.get(id).map(|e| e.until)
    }

    /// Every silence, by client id.
    pub(crate) fn list(&self) -> Vec<Saved> {
        self.lock()
            .entries
            .iter()
            .map(|(client, e)| Saved {
                client: client.to_string(),
                until: secs(e.until),
            })
            .collect()
    }

    /// The earliest end of a silence, for the loop to wake at.
    pub(crate) fn next_end(&self) -> Option<Instant> {
        // Ended ones are taken at the loop's next wake: each is ended inside a request to the
        // loop, or before it starts.
        self.lock().entries.values().map(|e| e.ends).min()
    }

    /// Ends the silences due at `now`, and returns every client whose silence ended since the
    /// last call (due now, unsilenced, or ended while no server ran), in order.
    pub(crate) fn take_ended(&self, now: Now) -> Vec<ClientId> {
        let mut book = self.lock();
        let due: Vec<ClientId> = book
            .entries
            .iter()
            .filter(|(_, e)| e.ends <= now.mono)
            .map(|(c, _)| c.clone())
            .collect();
        for client in &due {
            book.entries.remove(client);
        }
        let mut ended = std::mem::take(&mut book.ended);
        ended.extend(due);
        ended
    }

    /// Marks the silenced clients' rows of a `/metrics` snapshot.
    pub(crate) fn mark(&self, rows: &mut [ClientRow]) {
        let book = self.lock();
        if book.entries.is_empty() {
            return;
        }
        for row in rows {
            row.silenced =
                ClientId::new(&row.client).is_ok_and(|id| book.entries.contains_key(&id));
        }
    }

    /// `/clients`: the report as JSON, with `silenced_until` (Unix seconds) on each silenced
    /// client. Straight from the report's serialisation when no client is silenced.
    pub(crate) fn report_json(&self, report: &Report) -> serde_json::Result<String> {
        let list: BTreeMap<String, f64> = self
            .list()
            .into_iter()
            .map(|s| (s.client, s.until))
            .collect();
        if list.is_empty() {
            return serde_json::to_string(report);
        }
        let mut json = serde_json::to_value(report)?;
        if let Some(clients) = json["clients"].as_array_mut() {
            for c in clients {
                let until = c["client"].as_str().and_then(|id| list.get(id));
                if let Some(&until) = until {
                    c["silenced_until"] = until.into();
                }
            }
        }
        serde_json::to_string(&json)
    }

    /// The silences as their file holds them.
    pub(crate) fn to_file(&self) -> Vec<u8> {
        let saved = SavedSilences {
            version: VERSION,
            silences: self.list(),
        };
        let mut bytes = serde_json::to_vec(&saved).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// The silences of `file` at `now` (none when it has none, or cannot be used: then it is
    /// set aside, with a warning). Those whose end passed are to be announced if their client
    /// is down ([`take_ended`](Self::take_ended)); those of clients `server` does not know (it
    /// was restored first) are dropped.
    pub(crate) fn restore(&self, server: &Server, now: Now) {
        let this = self;
        let Some(file) = &self.0.file else {
            return;
        };
        let bytes = match file.read(now.unix) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return,
            Err(e) => {
                // not caused by a peer: the server's own directory, at start
                tracing::warn!(
                    "Cannot read {}: {e}; starting with no silences",
                    file.show()
                );
                return;
            }
        };
        let saved = match parse(&bytes) {
            Ok(saved) => saved,
            Err(why) => {
                file.set_aside(now.unix, &why);
                return;
            }
        };
        let mut book = this.lock();
        let mut kept = 0;
        for (client, until) in saved {
            if server.client(&ClientKey::Id(client.clone())).is_none() {
                continue;
            }
            if until <= now.unix {
                book.ended.push(client);
            } else {
                let ends = mono_at(until, now);
                book.entries.insert(client, Entry { until, ends });
                kept += 1;
            }
        }
        drop(book);
        // not caused by a peer: the server's own directory, at start
        tracing::info!("Silences: {kept} restored from {}", file.show());
    }
}

/// The log line of event `e` of a client silenced until `until`: its hooks did not run.
pub(crate) fn log_silenced(log: &LogSummary, e: &Event, until: UnixTime, now: Now) {
    if let Event::Transition { client, to, .. } = e {
        log.peer(
            now.mono,
            Level::INFO,
            PeerLine::Silenced,
            format_args!(
                "Client {client} is silenced until {} (heartbeat-server ctl): no hook or webhook \
                 for its transition to {to}",
                fmt_local(until)
            ),
        );
    }
}

/// The end of `client`'s silence at `now`: if it is down, the `transition` (from `down` to
/// `down`, with `"silence_ended":true`) to announce now, logged; else a line in the log.
pub(crate) fn ended(
    server: &Server,
    client: &ClientId,
    detector: DetectorKind,
    log: &LogSummary,
    now: Now,
) -> Option<serde_json::Value> {
    let key = ClientKey::Id(client.clone());
    let view = server.client(&key)?;
    let state = view.state();
    if state != Liveness::Down {
        log.peer(
            now.mono,
            Level::INFO,
            PeerLine::Silenced,
            format_args!("Client {client}'s silence ended; it is {state}"),
        );
        return None;
    }
    let since_last = view
        .last_seen()
        .map(|seen| now.unix.as_duration().saturating_sub(seen.as_duration()));
    log.peer(
        now.mono,
        Level::ERROR,
        PeerLine::Silenced,
        format_args!(
            "Client {client} is down and its silence ended (last heartbeat {} ago): announced now",
            since_last.map_or_else(|| "never".to_owned(), fmt_ms)
        ),
    );
    let e = Event::Transition {
        client: key,
        peer: None,
        from: Liveness::Down,
        to: Liveness::Down,
        since_last,
        suspicion: view.suspicion(now.mono).unwrap_or(f64::INFINITY),
        detector,
    };
    let mut json = e.to_json_at(now.unix);
    json["silence_ended"] = true.into();
    Some(json)
}

/// The silences of a file's bytes, or why they cannot be used.
fn parse(bytes: &[u8]) -> Result<Vec<(ClientId, UnixTime)>, String> {
    let saved: SavedSilences =
        serde_json::from_slice(bytes).map_err(|e| format!("it does not parse: {e}"))?;
    if saved.version != VERSION {
        return Err(format!(
            "a silences file of version {}; this server reads version {VERSION}",
            saved.version
        ));
    }
    saved
        .silences
        .into_iter()
        .map(|s| {
            let client =
                ClientId::new(&s.client).map_err(|e| format!("client id {:?}: {e}", s.client))?;
            let until =
                from_secs(s.until).ok_or_else(|| format!("until {}: not a time", s.until))?;
            Ok((client, until))
        })
        .collect()
}

/// The longest silence: a year and a day (`ctl silence` refuses a longer one).
pub(crate) const MAX_SILENCE: Duration = Duration::from_secs(366 * 86_400);

/// The instant of the monotonic clock at wall-clock time `until`, seen from `now` (at most
/// [`MAX_SILENCE`] ahead).
fn mono_at(until: UnixTime, now: Now) -> Instant {
    let ahead = until.as_duration().saturating_sub(now.unix.as_duration());
    let ahead = ahead.min(MAX_SILENCE);
    now.mono.checked_add(ahead).unwrap_or(now.mono)
}

// ---- times for people ----

/// `t` in the local time zone.
pub(crate) fn local(t: UnixTime) -> Option<DateTime<Local>> {
    let d = t.as_duration();
    let secs = i64::try_from(d.as_secs()).ok()?;
    Local.timestamp_opt(secs, d.subsec_nanos()).single()
}

/// `t` for people: local time with its offset (`2026-12-05 14:00:00+01:00`).
pub(crate) fn fmt_local(t: UnixTime) -> String {
    local(t).map_or_else(
        || format!("{} (Unix seconds)", t.display_secs(0)),
        |l| l.format("%Y-%m-%d %H:%M:%S%:z").to_string(),
    )
}

/// `t` for people: [`fmt_local`], and how far from `now` (`in 89m`).
pub(crate) fn fmt_time(t: UnixTime, now: UnixTime) -> String {
    let at = fmt_local(t);
    let ahead = t.as_duration().saturating_sub(now.as_duration()).as_secs();
    let ahead = if ahead >= 60 { ahead / 60 * 60 } else { ahead };
    format!("{at} (in {})", fmt_duration(Duration::from_secs(ahead)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Now {
        Now {
            mono: heartbeat_net::mono_now(),
            unix: UnixTime::from_duration(Duration::from_secs(1_765_000_000)),
        }
    }

    fn id(s: &str) -> ClientId {
        ClientId::new(s).unwrap()
    }

    /// A silence ends at its time on the loop's clock, an unsilence at once; each end is taken
    /// once; a forgotten client's silence goes without an end to announce.
    #[test]
    fn silences_end_once_at_their_time_or_on_request() {
        let t0 = now();
        let s = Silences::default();
        let hour = Duration::from_secs(3600);
        s.silence(id("a"), t0.unix.saturating_add(hour), t0);
        s.silence(id("b"), t0.unix.saturating_add(2 * hour), t0);
        s.silence(id("c"), t0.unix.saturating_add(2 * hour), t0);
        assert_eq!(s.next_end(), Some(t0.mono + hour));
        assert_eq!(
            s.until(&ClientKey::Id(id("a"))),
            Some(t0.unix.saturating_add(hour))
        );
        assert!(s.take_ended(t0).is_empty());
        assert_eq!(s.take_ended(t0.advanced(hour)), [id("a")]);
        assert!(s.take_ended(t0.advanced(hour)).is_empty(), "taken once");
        assert!(s.unsilence(&id("b")).is_some());
        assert!(s.unsilence(&id("b")).is_none());
        s.forget(&ClientKey::Id(id("c")));
        assert_eq!(s.take_ended(t0.advanced(hour)), [id("b")]);
        assert!(s.list().is_empty());
        assert_eq!(s.next_end(), None);
    }

    /// The file reads back as written; another version, a bad id or a time that is none is
    /// refused as a whole.
    #[test]
    fn the_file_reads_back_and_refuses_what_no_server_writes() {
        let t0 = now();
        let s = Silences::default();
        s.silence(
            id("web-2"),
            t0.unix.saturating_add(Duration::from_secs(90)),
            t0,
        );
        let bytes = s.to_file();
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            "{\"version\":1,\"silences\":[{\"client\":\"web-2\",\"until\":1765000090.0}]}\n"
        );
        assert_eq!(
            parse(&bytes),
            Ok(vec![(
                id("web-2"),
                t0.unix.saturating_add(Duration::from_secs(90))
            )])
        );
        for bad in [
            r#"{"version":2,"silences":[]}"#,
            r#"{"version":1,"silences":[{"client":"a b","until":1}]}"#,
            r#"{"version":1,"silences":[{"client":"a","until":-1}]}"#,
            r#"{"version":1,"silences":[{"client":"a","until":1,"extra":0}]}"#,
            "garbage",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}

//! Reading a file into a [`Spec`]: the top-level fields, `[detector]`, `[clients]` and the
//! `[[client]]` entries, and the references between them.

use std::collections::BTreeMap;

use toml::Spanned;

use heartbeat_core::ClientId;
use heartbeat_core::config::{Backoff, ClientConfig};
use heartbeat_core::detector::DetectorConfig;
use heartbeat_net::cli::DetectorArgs;

use super::entries::{action, expect};
use super::error::Doc;
use super::raw::{RawClient, RawFile};
use super::{Entry, ExpectSpec, MAX_CLIENTS, Settings, Spec, Target};
use crate::scenario::time::{fmt_duration, parse_duration};
use crate::scenario::{Latency, Source};

impl Spec {
    /// Reads the scenario file at `path`.
    pub fn from_file(path: &str) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        let stem = std::path::Path::new(path)
            .file_stem()
            .map_or_else(|| path.to_owned(), |s| s.to_string_lossy().into_owned());
        Self::parse(path, &stem, &text, Source::File(path.to_owned()))
    }

    /// Reads a scenario file's `text`; `path` names it in errors, `stem` is its name when it
    /// has no `name` field.
    pub fn parse(path: &str, stem: &str, text: &str, source: Source) -> Result<Self, String> {
        let doc = Doc { path, text };
        let raw: RawFile = toml::from_str(text).map_err(|e| doc.toml_error(&e))?;
        let name = raw
            .name
            .map_or_else(|| stem.to_owned(), Spanned::into_inner);
        let duration = match raw.duration {
            Some(d) if d.get_ref().0.0.is_zero() => {
                return Err(doc.error(&d.span(), "duration", "expected more than 0s"));
            }
            Some(d) => d.into_inner().0.0,
            None => crate::scenario::DURATION,
        };
        let mut spec = Self {
            path: path.to_owned(),
            text: text.to_owned(),
            source,
            name,
            summary: raw.summary.unwrap_or_default(),
            seeds: raw.seeds.map_or(1..5, |s| s.0.0),
            duration,
            min_duration: raw.min_duration.map(|d| d.into_inner().0.0),
            latency: raw.latency.map_or_else(Latency::default, |l| l.0.0),
            detector: None,
            count: 1,
            min_clients: 1,
            max_clients: 64,
            defaults: Settings::default(),
            clients: Vec::new(),
            actions: Vec::new(),
            expect: Vec::new(),
        };
        if let Some(table) = raw.detector {
            spec.detector = Some(detector(&doc, &table)?);
        }
        spec.read_clients(&doc, raw.clients, raw.client)?;
        for (index, a) in raw.action.into_iter().enumerate() {
            let a = action(&doc, index, a)?;
            spec.actions.push(a);
        }
        for (index, e) in raw.expect.into_iter().enumerate() {
            spec.expect.push(expect(&doc, index, e)?);
        }
        spec.check_references(&doc)?;
        Ok(spec)
    }

    /// `[clients]` and the `[[client]]` entries.
    fn read_clients(
        &mut self,
        doc: &Doc<'_>,
        defaults: Option<RawClient>,
        entries: Vec<RawClient>,
    ) -> Result<(), String> {
        let mut count = None;
        if let Some(d) = defaults {
            if let Some(id) = &d.id {
                return Err(doc.error(
                    &id.span(),
                    "clients.id",
                    "ids belong in [[client]] entries; [clients] holds what they share",
                ));
            }
            let bound = |v: &Option<Spanned<usize>>, field: &str| match v {
                Some(n) if *n.get_ref() == 0 || *n.get_ref() > MAX_CLIENTS => Err(doc.error(
                    &n.span(),
                    field,
                    format!("expected 1 to {MAX_CLIENTS} clients, got {}", n.get_ref()),
                )),
                Some(n) => Ok(Some((*n.get_ref(), n.span()))),
                None => Ok(None),
            };
            count = bound(&d.count, "clients.count")?;
            let min = bound(&d.min, "clients.min")?;
            let max = bound(&d.max, "clients.max")?;
            self.min_clients = min.as_ref().map_or(1, |m| m.0);
            self.max_clients = max.as_ref().map_or(64.max(self.min_clients), |m| m.0);
            if self.min_clients > self.max_clients {
                let span = max.map_or(0..0, |m| m.1);
                return Err(doc.error(&span, "clients.max", "max is below min"));
            }
            self.defaults = settings(doc, "clients", &d)?;
        }
        self.count = match count {
            Some((n, span)) => {
                if !(self.min_clients..=self.max_clients).contains(&n) {
                    return Err(doc.error(
                        &span,
                        "clients.count",
                        format!(
                            "expected {} to {} (min to max), got {n}",
                            self.min_clients, self.max_clients
                        ),
                    ));
                }
                n
            }
            None => self.min_clients.max(entries.len()).max(1),
        };
        for (i, e) in entries.into_iter().enumerate() {
            let field = format!("client[{i}]");
            for (v, name) in [(&e.count, "count"), (&e.min, "min"), (&e.max, "max")] {
                if let Some(v) = v {
                    return Err(doc.error(
                        &v.span(),
                        &format!("{field}.{name}"),
                        "the number of clients belongs in [clients]",
                    ));
                }
            }
            let settings = settings(doc, &field, &e)?;
            let id = match &e.id {
                Some(id) => {
                    client_id(doc, &format!("{field}.id"), id)?;
                    Some((id.get_ref().clone(), id.span()))
                }
                None => None,
            };
            self.clients.push(Entry { id, settings });
        }
        // Each client's settings together must make a valid client (an ack timeout from
        // [clients] against the interval of one [[client]]).
        for i in 0..self.count.max(self.clients.len()) {
            let own = self
                .clients
                .get(i)
                .map(|e| e.settings.clone())
                .unwrap_or_default();
            let merged = own.over(&self.defaults);
            let interval = merged
                .interval
                .as_ref()
                .map_or(crate::scenario::INTERVAL, |iv| iv.0);
            if let Some((t, span)) = merged.ack_timeout.filter(|(t, _)| *t <= interval) {
                let field = if own.ack_timeout.is_some() {
                    format!("client[{i}].ack-timeout")
                } else {
                    "clients.ack-timeout".to_owned()
                };
                return Err(doc.error(
                    &span,
                    &field,
                    format!(
                        "{}'s ack timeout ({}) must exceed its interval ({})",
                        self.id_of(i),
                        fmt_duration(t),
                        fmt_duration(interval)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Every client id an action or expectation names must be one of the clients the file can
    /// have: a `[[client]]` id, or `cK` for a client without an entry, K up to `max`.
    fn check_references(&self, doc: &Doc<'_>) -> Result<(), String> {
        let ids: Vec<String> = (0..self.max_clients).map(|i| self.id_of(i)).collect();
        let mut seen = BTreeMap::new();
        for (i, id) in ids.iter().enumerate() {
            if let Some(j) = seen.insert(id.clone(), i) {
                let span = [i, j]
                    .into_iter()
                    .find_map(|k| self.clients.get(k).and_then(|e| e.id.as_ref()))
                    .map_or(0..0, |(_, span)| span.clone());
                return Err(doc.error(
                    &span,
                    "client.id",
                    format!(
                        "clients {} and {} would both be named {id:?} (a client without an \
                         entry is cK, K its place)",
                        j + 1,
                        i + 1
                    ),
                ));
            }
        }
        let targets = self
            .actions
            .iter()
            .map(|a| (format!("action[{}].on", a.index), &a.on, &a.on_span))
            .chain(self.expect.iter().enumerate().filter_map(|(k, e)| match e {
                ExpectSpec::Client { on, on_span, .. } => {
                    Some((format!("expect[{k}].on"), on, on_span))
                }
                ExpectSpec::Named(_) => None,
            }));
        for (field, on, span) in targets {
            if let Target::Ids(list) = on {
                for id in list {
                    if !ids.contains(id) {
                        return Err(doc.error(
                            span,
                            &field,
                            format!(
                                "no client is named {id:?}; the clients are {}",
                                self.names_for_error()
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn names_for_error(&self) -> String {
        let n = self.count.max(self.clients.len());
        let mut names: Vec<String> = (0..n.min(8)).map(|i| self.id_of(i)).collect();
        if n > 8 {
            names.push(format!("... up to {}", self.id_of(self.max_clients - 1)));
        }
        names.join(", ")
    }
}

/// The settings of `[clients]` or of one `[[client]]` (`field` names it in errors).
pub(super) fn settings(doc: &Doc<'_>, field: &str, c: &RawClient) -> Result<Settings, String> {
    let mut s = Settings::default();
    if let Some(iv) = &c.interval {
        let d = iv.get_ref().0.0;
        // The core's own rule for intervals, so the file and the client agree.
        ClientConfig::new(ClientId::new("x").expect("a valid id"), d)
            .map_err(|e| doc.error(&iv.span(), &format!("{field}.interval"), e))?;
        s.interval = Some((d, iv.span()));
    }
    s.latency = c.latency.as_ref().map(|l| l.0.0);
    s.ack_timeout = c.ack_timeout.as_ref().map(|t| (t.get_ref().0.0, t.span()));
    if let Some(p) = &c.protocol {
        s.legacy = Some(match p.get_ref().as_str() {
            "v1" => false,
            "legacy" => true,
            other => {
                return Err(doc.error(
                    &p.span(),
                    &format!("{field}.protocol"),
                    format!("expected \"v1\" or \"legacy\", got {other:?}"),
                ));
            }
        });
    }
    if let Some(r) = &c.reconnect {
        s.reconnect = Some(reconnect(doc, &format!("{field}.reconnect"), r)?);
    }
    Ok(s)
}

/// `reconnect = true | false | { initial = "100ms", max = "10s" }`.
pub(super) fn reconnect(
    doc: &Doc<'_>,
    field: &str,
    v: &Spanned<toml::Value>,
) -> Result<Option<Backoff>, String> {
    let bad = |why: String| doc.error(&v.span(), field, why);
    match v.get_ref() {
        toml::Value::Boolean(true) => Ok(Some(Backoff::default())),
        toml::Value::Boolean(false) => Ok(None),
        toml::Value::Table(t) => {
            let mut initial = Backoff::default().initial();
            let mut max = Backoff::default().max();
            for (k, val) in t {
                let d = val
                    .as_str()
                    .ok_or_else(|| format!("{k}: expected a duration string"))
                    .and_then(parse_duration)
                    .map_err(&bad)?;
                match k.as_str() {
                    "initial" => initial = d,
                    "max" => max = d,
                    other => {
                        return Err(bad(format!(
                            "unknown key {other:?}: expected `initial` or `max`"
                        )));
                    }
                }
            }
            Backoff::new(initial, max)
                .map(Some)
                .map_err(|e| bad(e.to_string()))
        }
        other => Err(bad(format!(
            "expected true, false or {{ initial = \"100ms\", max = \"10s\" }}, got {other}"
        ))),
    }
}

/// A client id: valid for the core, and not one of the words `on` reserves.
pub(super) fn client_id(doc: &Doc<'_>, field: &str, id: &Spanned<String>) -> Result<(), String> {
    let s = id.get_ref();
    if ["each", "last", "server", "random"].contains(&s.as_str()) {
        return Err(doc.error(
            &id.span(),
            field,
            format!("{s:?} is a reserved word of `on`; pick another id"),
        ));
    }
    ClientId::new(s).map_err(|e| doc.error(&id.span(), field, e))?;
    Ok(())
}

/// The `[detector]` table, read by the very flags `heartbeat-server` takes (one parser for
/// both): `kind` is `--detector`, every other key is the flag of that name.
pub(super) fn detector(
    doc: &Doc<'_>,
    table: &Spanned<BTreeMap<String, Spanned<toml::Value>>>,
) -> Result<DetectorConfig, String> {
    use clap::{Args, FromArgMatches};
    let command =
        || DetectorArgs::augment_args(clap::Command::new("detector").no_binary_name(true));
    let known: Vec<String> = command()
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| *l != "detector")
        .map(str::to_owned)
        .collect();
    let text = |v: &Spanned<toml::Value>, field: &str| -> Result<String, String> {
        match v.get_ref() {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            other => Err(doc.error(
                &v.span(),
                field,
                format!("expected a number or a string such as \"250ms\", got {other}"),
            )),
        }
    };
    let parse = |argv: &[String]| -> Result<DetectorConfig, String> {
        let matches = command()
            .try_get_matches_from(argv)
            .map_err(|e| e.kind().to_string())?;
        let args = DetectorArgs::from_arg_matches(&matches).map_err(|e| e.to_string())?;
        args.config().map_err(|e| e.to_string())
    };
    let mut argv = Vec::new();
    if let Some(kind) = table.get_ref().get("kind") {
        argv.push("--detector".to_owned());
        argv.push(text(kind, "detector.kind")?);
        parse(&argv).map_err(|e| {
            doc.error(
                &kind.span(),
                "detector.kind",
                format!("{e}: expected fixed, phi, phi-exp or chen"),
            )
        })?;
    }
    for (key, v) in table.get_ref().iter().filter(|(k, _)| *k != "kind") {
        let field = format!("detector.{key}");
        if !known.contains(key) {
            return Err(doc.error(
                &v.span(),
                &field,
                format!(
                    "unknown detector parameter {key:?}; known: kind, {}",
                    known.join(", ")
                ),
            ));
        }
        // Each parameter alone with the kind first, so an error points at its own line.
        let mut one = argv.clone();
        one.push(format!("--{key}"));
        one.push(text(v, &field)?);
        parse(&one).map_err(|e| doc.error(&v.span(), &field, e))?;
    }
    for (key, v) in table.get_ref().iter().filter(|(k, _)| *k != "kind") {
        argv.push(format!("--{key}"));
        argv.push(text(v, key)?);
    }
    parse(&argv).map_err(|e| doc.error(&table.span(), "detector", e))
}

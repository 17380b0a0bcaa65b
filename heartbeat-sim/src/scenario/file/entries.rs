//! Reading the `[[action]]` and `[[expect]]` entries, and their `on` targets.

use std::time::Duration;

use toml::Spanned;

use heartbeat_core::liveness::Liveness;

use super::error::Doc;
use super::raw::{RawAction, RawExpect, Text};
use super::{ActionSpec, ExpectSpec, Kind, Span, Target, TimeField};
use crate::scenario::time::{Point, Time, fmt_duration};
use crate::scenario::{ClientRule, Cmp, Counter, Expectation};

/// `on`: `"server"`, `"each"`, `"last"`, a client id, a list of ids, or `{ random = "50%" }`.
pub(super) fn target(
    doc: &Doc<'_>,
    field: &str,
    v: &Spanned<toml::Value>,
) -> Result<Target, String> {
    let bad = |why: String| doc.error(&v.span(), field, why);
    let expected = "expected \"server\", \"each\", \"last\", a client id, a list of ids, or \
                    { random = \"50%..100%\" }";
    match v.get_ref() {
        toml::Value::String(s) => Ok(match s.as_str() {
            "server" => Target::Server,
            "each" => Target::Each,
            "last" => Target::Last,
            id => Target::Ids(vec![id.to_owned()]),
        }),
        toml::Value::Array(items) => {
            let ids = items
                .iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect::<Option<Vec<String>>>()
                .filter(|ids| !ids.is_empty())
                .ok_or_else(|| bad(format!("a list of client ids: {expected}")))?;
            Ok(Target::Ids(ids))
        }
        toml::Value::Table(t) => match (t.len(), t.get("random").and_then(|r| r.as_str())) {
            (1, Some(r)) => r.parse().map(Target::Random).map_err(bad),
            _ => Err(bad(expected.to_owned())),
        },
        _ => Err(bad(expected.to_owned())),
    }
}

/// One `[[action]]`, validated on its own.
pub(super) fn action(doc: &Doc<'_>, index: usize, a: RawAction) -> Result<ActionSpec, String> {
    let field = |name: &str| format!("action[{index}].{name}");
    let what = a.what.get_ref().as_str();
    let kind = Kind::ALL
        .iter()
        .find(|(n, _)| *n == what)
        .map(|(_, k)| *k)
        .ok_or_else(|| {
            let names: Vec<&str> = Kind::ALL.iter().map(|(n, _)| *n).collect();
            doc.error(
                &a.what.span(),
                &field("do"),
                format!(
                    "unknown action {what:?}; expected one of {}",
                    names.join(", ")
                ),
            )
        })?;
    let time = |v: Spanned<Text<Time>>, name: &str, length: bool| -> Result<TimeField, String> {
        let span = v.span();
        let time = v.into_inner().0;
        if length && time.is_end_relative() {
            return Err(doc.error(
                &span,
                &field(name),
                "expected a length (\"3s\", \"10%\", \"3s..15s\"), not a time relative to the end",
            ));
        }
        Ok(TimeField { time, span })
    };
    let forbid = |present: Option<Span>, name: &str, why: &str| match present {
        Some(span) => Err(doc.error(&span, &field(name), why)),
        None => Ok(()),
    };
    let on_span = a.on.as_ref().map_or(a.what.span(), Spanned::span);
    let on = match &a.on {
        Some(v) => target(doc, &field("on"), v)?,
        None => {
            return Err(doc.error(
                &a.what.span(),
                &field("on"),
                "missing `on`: say which clients (or the server) it applies to",
            ));
        }
    };
    if on == Target::Server && !matches!(kind, Kind::Crash | Kind::Restart) {
        return Err(doc.error(
            &on_span,
            &field("on"),
            format!("only crash and restart apply to the server, not {what}"),
        ));
    }
    let with_length = matches!(
        kind,
        Kind::Crash | Kind::Hold | Kind::Partition | Kind::Swizzle
    );
    let length_why = "only crash, hold, partition and swizzle take `for`";
    if !with_length {
        forbid(a.length.as_ref().map(Spanned::span), "for", length_why)?;
    }
    if kind == Kind::Swizzle && a.length.is_none() {
        return Err(doc.error(
            &a.what.span(),
            &field("for"),
            "a swizzle needs `for`: how long after the last clog the releases begin",
        ));
    }
    if kind != Kind::Latency {
        forbid(
            a.to.as_ref().map(Spanned::span),
            "to",
            "only latency takes `to`",
        )?;
    } else if a.to.is_none() {
        return Err(doc.error(
            &a.what.span(),
            &field("to"),
            "a latency action needs `to`: the new latency (\"200ms\" or \"1ms..400ms\")",
        ));
    }
    if kind != Kind::Crash {
        forbid(
            a.silent.as_ref().map(Spanned::span),
            "silent",
            "only crash takes `silent`",
        )?;
    }
    if kind != Kind::Swizzle {
        let why = "only swizzle takes the spreads";
        forbid(
            a.clog_spread.as_ref().map(Spanned::span),
            "clog-spread",
            why,
        )?;
        forbid(
            a.release_spread.as_ref().map(Spanned::span),
            "release-spread",
            why,
        )?;
    } else {
        forbid(
            a.every.as_ref().map(Spanned::span),
            "every",
            "a swizzle does not repeat",
        )?;
    }
    if a.every.is_none() {
        forbid(
            a.until.as_ref().map(Spanned::span),
            "until",
            "`until` ends a repetition: give `every` too",
        )?;
    }
    let until = a.until.map(|u| time(u, "until", false)).transpose()?;
    if let Some(u) = &until {
        if u.time.is_range() {
            return Err(doc.error(&u.span, &field("until"), "expected a time, not a range"));
        }
    }
    let spread = |v: Option<Spanned<Text<Time>>>, name: &str, default: u64| {
        v.map(|v| time(v, name, true)).transpose().map(|t| {
            t.map_or(
                Time::fixed(Point::Fixed(Duration::from_millis(default))),
                |t| t.time,
            )
        })
    };
    Ok(ActionSpec {
        index,
        kind,
        on,
        on_span,
        at: time(a.at, "at", false)?,
        length: a.length.map(|l| time(l, "for", true)).transpose()?,
        every: a.every.map(|e| time(e, "every", true)).transpose()?,
        until,
        to: a.to.map(|t| time(t, "to", true)).transpose()?,
        silent: a.silent.is_some_and(|s| *s.get_ref()),
        clog_spread: spread(a.clog_spread, "clog-spread", 3000)?,
        release_spread: spread(a.release_spread, "release-spread", 2500)?,
    })
}

/// One `[[expect]]`: a named check, or exactly one rule on some clients.
pub(super) fn expect(
    doc: &Doc<'_>,
    index: usize,
    e: Spanned<RawExpect>,
) -> Result<ExpectSpec, String> {
    let entry = e.span();
    let e = e.into_inner();
    let field = |name: &str| format!("expect[{index}].{name}");
    let counters = [
        (Counter::Bursts, &e.bursts),
        (Counter::Connections, &e.connections),
        (Counter::Duplicates, &e.duplicates),
        (Counter::Missed, &e.missed),
        (Counter::Received, &e.received),
        (Counter::Restarts, &e.restarts),
    ];
    let mut rules: Vec<(String, Span, ClientRule, String)> = Vec::new();
    if let Some(s) = &e.state {
        let state = [
            Liveness::Down,
            Liveness::Left,
            Liveness::Suspect,
            Liveness::Up,
        ]
        .into_iter()
        .find(|l| l.as_str() == s.get_ref())
        .ok_or_else(|| {
            doc.error(
                &s.span(),
                &field("state"),
                format!(
                    "expected \"up\", \"suspect\", \"down\" or \"left\", got {:?}",
                    s.get_ref()
                ),
            )
        })?;
        rules.push((
            "state".into(),
            s.span(),
            ClientRule::State(state),
            format!("{} at the end", state.as_str()),
        ));
    }
    if let Some(d) = &e.down_within {
        let within = d.get_ref().0.0;
        rules.push((
            "down-within".into(),
            d.span(),
            ClientRule::DownWithin(within),
            format!("down within {} of a crash", fmt_duration(within)),
        ));
    }
    for (counter, v) in counters {
        let Some(v) = v else { continue };
        let name = counter.as_str();
        let (cmp, value) = comparison(doc, &field(name), v)?;
        rules.push((
            name.to_owned(),
            v.span(),
            ClientRule::Count {
                counter,
                cmp,
                value,
            },
            format!("{name} {} {value}", cmp.as_str()),
        ));
    }
    if let Some(check) = &e.check {
        let named = Expectation::NAMED
            .iter()
            .find(|(n, _)| *n == check.get_ref())
            .map(|(_, x)| x.clone())
            .ok_or_else(|| {
                let names: Vec<&str> = Expectation::NAMED.iter().map(|(n, _)| *n).collect();
                doc.error(
                    &check.span(),
                    &field("check"),
                    format!(
                        "unknown check {:?}; expected one of {}",
                        check.get_ref(),
                        names.join(", ")
                    ),
                )
            })?;
        if let Some(on) = &e.on {
            return Err(doc.error(
                &on.span(),
                &field("on"),
                "a named check covers every client",
            ));
        }
        if let Some((name, span, ..)) = rules.first() {
            return Err(doc.error(span, &field(name), "give a named check or a rule, not both"));
        }
        return Ok(ExpectSpec::Named(named));
    }
    let (on, on_span) = match &e.on {
        Some(v) => (target(doc, &field("on"), v)?, v.span()),
        None => (Target::Each, entry),
    };
    if matches!(on, Target::Server | Target::Random(_)) {
        return Err(doc.error(
            &on_span,
            &field("on"),
            "expected clients: \"each\", \"last\", an id or a list of ids",
        ));
    }
    match rules.len() {
        1 => {
            let (_, _, rule, text) = rules.remove(0);
            Ok(ExpectSpec::Client {
                on,
                on_span,
                rule,
                text,
            })
        }
        0 => Err(doc.error(
            &on_span,
            &format!("expect[{index}]"),
            "expected `check = NAME`, or one rule: state, down-within, or a counter (bursts, \
             connections, duplicates, missed, received, restarts)",
        )),
        _ => Err(doc.error(
            &rules[1].1,
            &field(&rules[1].0),
            format!(
                "one rule per [[expect]] entry; this one already has {}",
                rules[0].0
            ),
        )),
    }
}

/// A counter rule's value (`field` names it in errors): a count (`== N`) or a comparison such
/// as `">= 1"`.
fn comparison(doc: &Doc<'_>, field: &str, v: &Spanned<toml::Value>) -> Result<(Cmp, u64), String> {
    let bad = |why: String| doc.error(&v.span(), field, why);
    match v.get_ref() {
        toml::Value::Integer(i) => Ok((
            Cmp::Eq,
            u64::try_from(*i).map_err(|_| bad(format!("expected a count, got {i}")))?,
        )),
        toml::Value::String(s) => {
            let t = s.trim();
            let (cmp, rest) = Cmp::ALL
                .iter()
                .find_map(|(op, c)| t.strip_prefix(op).map(|r| (*c, r)))
                .ok_or_else(|| {
                    bad(format!(
                        "expected \">= 1\", \"<= 3\", \"== 0\", ... got {s:?}"
                    ))
                })?;
            let value = rest.trim().parse().map_err(|_| {
                bad(format!(
                    "expected a count after {}, got {s:?}",
                    cmp.as_str()
                ))
            })?;
            Ok((cmp, value))
        }
        other => Err(bad(format!(
            "expected a count or a comparison such as \">= 1\", got {other}"
        ))),
    }
}

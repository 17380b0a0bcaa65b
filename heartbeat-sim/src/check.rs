//! `heartbeat-sim check`: snapshot review of your own scenarios, usable from any CI.
//!
//! `check my.toml` runs the scenario file over its seeds (its `seeds` field, or `--seeds`) and
//! compares the report (per seed: the text rendering, the verdict included) with the snapshot
//! kept beside it, `my.snap`. The snapshot is in insta's file format, so that
//! `cargo insta review` can review it where cargo-insta is installed and the file sits inside a
//! Cargo workspace: a YAML header between `---` lines (`source`, `expression`), then the
//! contents. On a difference, `check` prints a unified diff, writes the new report as
//! `my.snap.new` (the pending file `cargo insta review` picks up) and exits 1; `--accept`
//! records the new report as `my.snap`. A missing snapshot is written as `my.snap.new` and
//! fails, as insta does under `INSTA_UPDATE=no`, unless `--accept`.
//!
//! Contents compare as insta compares them: trailing whitespace at the end and `\r\n` line ends
//! do not count.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::harness::world;
use crate::scenario::file::Spec;
use crate::scenario::{Params, Source};
use crate::sweep::{per_seed, unpanic};
use crate::{oracle, render};

/// What `heartbeat-sim check` is asked: a scenario file, and how to check it.
#[derive(Clone, Debug)]
pub struct CheckArgs {
    /// The scenario file; its snapshot is the file beside it, `.snap` instead of `.toml`.
    pub file: String,
    /// Seeds to run; `None` for the file's `seeds`, else 1..5.
    pub seeds: Option<Range<u64>>,
    /// Record the reports as the snapshot (and remove a pending `.snap.new`).
    pub accept: bool,
    /// Threads; `None` for the available parallelism.
    pub jobs: Option<usize>,
}

/// A snapshot file: its header fields and its contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The header fields, in file order (`source`, `expression`, ...).
    pub metadata: Vec<(String, String)>,
    /// The contents, as insta reads them: the lines after the header, joined with `\n`.
    pub contents: String,
}

impl Snapshot {
    /// A header field's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Reads a snapshot file as insta's `Snapshot::from_file` does: a first line `---`, header
    /// lines up to the next `---`, then the contents. (A file without the leading `---` is in
    /// insta's legacy format: `key: value` lines up to an empty line.)
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut lines = text.split_inclusive('\n');
        let first = lines.next().unwrap_or("");
        let mut metadata = Vec::new();
        let header_line = |line: &str| -> Option<(String, String)> {
            let (k, v) = line.split_once(':')?;
            Some((k.trim().to_owned(), unquote(v.trim())))
        };
        if first.trim_end() == "---" {
            let mut closed = false;
            for line in lines.by_ref() {
                if line.trim_end() == "---" {
                    closed = true;
                    break;
                }
                metadata.extend(header_line(line));
            }
            if !closed {
                return Err("the header has no closing `---`".into());
            }
        } else {
            let mut line = Some(first);
            while let Some(l) = line.filter(|l| !l.trim_end().is_empty()) {
                metadata.extend(header_line(l));
                line = lines.next();
            }
        }
        let rest: String = lines.collect();
        let contents = rest.lines().collect::<Vec<&str>>().join("\n");
        Ok(Self { metadata, contents })
    }

    /// The file: the header as insta's YAML emitter writes it, then the contents and a newline.
    pub fn render(&self) -> String {
        let mut o = String::from("---\n");
        for (k, v) in &self.metadata {
            o.push_str(k);
            o.push_str(": ");
            o.push_str(&yaml_scalar(v));
            o.push('\n');
        }
        o.push_str("---\n");
        o.push_str(&self.contents);
        o.push('\n');
        o
    }

    /// True when the contents match as insta matches them (trailing whitespace and `\r\n`
    /// aside).
    pub fn matches(&self, other: &Self) -> bool {
        normalize(&self.contents) == normalize(&other.contents)
    }
}

/// Contents as insta compares them.
fn normalize(s: &str) -> String {
    s.trim_end().replace("\r\n", "\n")
}

/// A YAML string scalar as insta's emitter writes one: plain, or double-quoted with escapes when
/// plain would be read back as something else.
pub fn yaml_scalar(s: &str) -> String {
    let special_start = |c: char| "&*?|-<>=!%@".contains(c);
    let special_inside = |c: char| {
        ":{}[],#`\"'\\\t\n\r".contains(c)
            || matches!(c, '\0'..='\x06' | '\x0e'..='\x1a' | '\x1c'..='\x1f')
    };
    let words = [
        "yes", "Yes", "YES", "no", "No", "NO", "True", "TRUE", "true", "False", "FALSE", "false",
        "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL", "~",
    ];
    let quote = s.is_empty()
        || s.starts_with(' ')
        || s.ends_with(' ')
        || s.starts_with(special_start)
        || s.contains(special_inside)
        || words.contains(&s)
        || s.starts_with('.')
        || s.starts_with("0x")
        || s.parse::<i64>().is_ok()
        || s.parse::<f64>().is_ok();
    if !quote {
        return s.to_owned();
    }
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\x08' => o.push_str("\\b"),
            '\t' => o.push_str("\\t"),
            '\n' => o.push_str("\\n"),
            '\x0c' => o.push_str("\\f"),
            '\r' => o.push_str("\\r"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// A header value as written: unquoted and unescaped.
fn unquote(v: &str) -> String {
    let Some(inner) = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return v.to_owned();
    };
    let mut o = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            o.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => o.push('\n'),
            Some('t') => o.push('\t'),
            Some('r') => o.push('\r'),
            Some('b') => o.push('\x08'),
            Some('f') => o.push('\x0c'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                o.extend(u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32));
            }
            Some(other) => o.push(other),
            None => {}
        }
    }
    o
}

/// The snapshot of `file` (`my.toml` → `my.snap`) and its pending file (`my.snap.new`).
pub fn snapshot_paths(file: &Path) -> (PathBuf, PathBuf) {
    let snap = file.with_extension("snap");
    let pending = snap.with_extension("snap.new");
    (snap, pending)
}

/// One seed's report: the text rendering (verdict included) and whether every oracle held.
fn report_seed(spec: &Spec, seed: u64) -> (String, bool) {
    let params = Params::seed(seed);
    let scenario = match spec.expand(&params) {
        Ok(s) => s,
        Err(e) => return (format!("seed {seed}: {e}\n"), false),
    };
    match unpanic(|| world::run(&scenario)) {
        Ok(Ok(out)) => {
            let verdict = oracle::check(&out);
            (render::text(&out, &verdict), verdict.ok())
        }
        Ok(Err(e)) => (
            format!(
                "seed {seed}: the simulation failed: {e}\nreplay: {}\n",
                scenario.replay_command()
            ),
            false,
        ),
        Err(e) => (
            format!(
                "seed {seed}: the simulation panicked: {e}\nreplay: {}\n",
                scenario.replay_command()
            ),
            false,
        ),
    }
}

/// Runs `heartbeat-sim check`: 0 when the reports match the snapshot (or were accepted) and
/// every oracle held, 1 when they differ, the snapshot is missing or an oracle failed, 2 on a
/// bad file or an I/O error.
pub fn main(args: &CheckArgs) -> ExitCode {
    match check(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `Ok(true)` when everything passed.
fn check(args: &CheckArgs) -> Result<bool, String> {
    let path = Path::new(&args.file);
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", args.file))?;
    let name = path
        .file_name()
        .map_or_else(|| args.file.clone(), |n| n.to_string_lossy().into_owned());
    let stem = path
        .file_stem()
        .map_or_else(|| name.clone(), |s| s.to_string_lossy().into_owned());
    // Replay commands in the snapshot name the file as it sits beside its snapshot, so the
    // snapshot does not depend on the directory `check` ran from.
    let spec = Spec::parse(&args.file, &stem, &text, Source::File(name.clone()))?;
    let seeds = args.seeds.clone().unwrap_or_else(|| spec.seeds.clone());
    // Expand every seed before starting threads: a file that is wrong for this run (too few
    // clients, too short, a fault drawn past the end of the fault phase, which no run would
    // apply) fails at once, exit 2.
    for seed in seeds.clone() {
        let late = spec.expand(&Params::seed(seed))?.late_warnings();
        if let Some(first) = late.first() {
            return Err(format!(
                "{}: seed {seed}: {first}{}; move it into the fault phase or lengthen \
                 `duration`",
                args.file,
                match late.len() {
                    1 => String::new(),
                    n => format!(" (and {} more)", n - 1),
                }
            ));
        }
    }
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get));
    let reports = per_seed(seeds.clone(), jobs, |seed| report_seed(&spec, seed), |_| {});
    let failed: Vec<u64> = seeds
        .clone()
        .zip(&reports)
        .filter(|(_, (_, ok))| !ok)
        .map(|(seed, _)| seed)
        .collect();
    let contents = reports
        .iter()
        .map(|(t, _)| t.as_str())
        .collect::<Vec<&str>>()
        .join("\n");
    let new = Snapshot {
        metadata: vec![
            ("source".into(), name.clone()),
            (
                "expression".into(),
                format!(
                    "heartbeat-sim check {name} --seeds {}..{}",
                    seeds.start, seeds.end
                ),
            ),
        ],
        contents: normalize(&contents),
    };
    let (snap, pending) = snapshot_paths(path);
    let shown = |p: &Path| p.display().to_string();
    let write = |p: &Path, s: &Snapshot| {
        std::fs::write(p, s.render()).map_err(|e| format!("{}: {e}", shown(p)))
    };
    let remove_pending = || match std::fs::remove_file(&pending) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", shown(&pending))),
    };
    let old = match std::fs::read_to_string(&snap) {
        Ok(t) => Some(Snapshot::parse(&t).map_err(|e| format!("{}: {e}", shown(&snap)))?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("{}: {e}", shown(&snap))),
    };
    let runs = seeds.end - seeds.start;
    let matched = match &old {
        Some(old) if old.matches(&new) => {
            remove_pending()?;
            eprintln!(
                "check {name}: seeds {}..{} ({runs} runs) match {}",
                seeds.start,
                seeds.end,
                shown(&snap)
            );
            true
        }
        _ if args.accept => {
            write(&snap, &new)?;
            remove_pending()?;
            eprintln!(
                "check {name}: seeds {}..{} ({runs} runs) recorded in {}",
                seeds.start,
                seeds.end,
                shown(&snap)
            );
            true
        }
        Some(old) => {
            write(&pending, &new)?;
            let diff = similar::TextDiff::from_lines(&old.contents, &new.contents);
            print!(
                "{}",
                diff.unified_diff()
                    .context_radius(3)
                    .header(&shown(&snap), &shown(&pending))
            );
            eprintln!(
                "check {name}: the reports differ from {}; the new ones are in {}. Review the \
                 diff above, then `heartbeat-sim check {} --accept` (or `cargo insta review`) \
                 to record them.",
                shown(&snap),
                shown(&pending),
                args.file
            );
            false
        }
        None => {
            write(&pending, &new)?;
            eprintln!(
                "check {name}: no snapshot yet ({}); the reports are in {}. Review them, then \
                 `heartbeat-sim check {} --accept` to record them.",
                shown(&snap),
                shown(&pending),
                args.file
            );
            false
        }
    };
    if !failed.is_empty() {
        let list: Vec<String> = failed.iter().map(u64::to_string).collect();
        eprintln!(
            "check {name}: the verdict FAILED for seed(s) {} (see the reports; each ends with \
             the command that replays it)",
            list.join(", ")
        );
    }
    Ok(matched && failed.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_quoted_as_insta_quotes_them() {
        assert_eq!(
            yaml_scalar("tests/tests/sim/main.rs"),
            "tests/tests/sim/main.rs"
        );
        assert_eq!(yaml_scalar("text"), "text");
        assert_eq!(yaml_scalar("a: b"), "\"a: b\"");
        assert_eq!(yaml_scalar("-x"), "\"-x\"");
        assert_eq!(yaml_scalar("true"), "\"true\"");
        assert_eq!(yaml_scalar("12"), "\"12\"");
        assert_eq!(yaml_scalar("1.5"), "\"1.5\"");
        assert_eq!(yaml_scalar(""), "\"\"");
        assert_eq!(yaml_scalar("say \"hi\"\n"), "\"say \\\"hi\\\"\\n\"");
        for s in [
            "a: b",
            "say \"hi\"\n",
            "tab\there",
            "x\u{1}y",
            "plain words",
        ] {
            assert_eq!(unquote(&yaml_scalar(s)), s);
        }
    }

    #[test]
    fn a_snapshot_reads_back_what_it_wrote() {
        let s = Snapshot {
            metadata: vec![
                ("source".into(), "my.toml".into()),
                (
                    "expression".into(),
                    "heartbeat-sim check my.toml --seeds 1..3".into(),
                ),
            ],
            contents: "line 1\n\nline 3".into(),
        };
        let text = s.render();
        assert_eq!(Snapshot::parse(&text).unwrap(), s);
        assert!(s.matches(&Snapshot::parse(&text.replace('\n', "\r\n")).unwrap()));
        let legacy = Snapshot::parse("Created: today\nSource: x.rs\n\nbody\n").unwrap();
        assert_eq!(legacy.contents, "body");
        assert_eq!(legacy.get("Source"), Some("x.rs"));
        assert!(Snapshot::parse("---\nsource: x\nbody").is_err());
    }

    #[test]
    fn the_snapshot_sits_beside_the_file() {
        let (snap, pending) = snapshot_paths(Path::new("dir/my.toml"));
        assert_eq!(snap, Path::new("dir/my.snap"));
        assert_eq!(pending, Path::new("dir/my.snap.new"));
    }
}

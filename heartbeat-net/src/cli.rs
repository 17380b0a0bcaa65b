//! Command-line pieces shared by the binaries (`heartbeat-server`, `heartbeat-client`,
//! `heartbeat-load`) and `heartbeat-sim`: the detector flags, and the one way every numeric flag
//! is read ([`int`], [`float`], [`secs`]), and the hidden `--generate` flag that prints a
//! binary's man page or shell completions ([`Generate`], [`print_generated`]).

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use heartbeat_core::ConfigError;
use heartbeat_core::detector::{DetectorConfig, DetectorKind, Param, ParamValues, QosTarget, Span};

/// The failure detector and its parameters, as flags.
///
/// Durations are a number with a unit (`ns`, `us`, `ms`, `s`) or a multiple of the client's
/// interval (`2x`). A parameter that the chosen detector does not have is an error.
#[derive(Clone, Debug, clap::Args)]
pub struct DetectorArgs {
    /// Failure detector: fixed (dead after interval + grace of silence), phi (phi accrual, Akka's
    /// defaults), phi-exp (Cassandra's exponential phi) or chen (Chen-Toueg-Aguilera expected
    /// arrival + alpha). A client is "suspect" at half the detector's down level and "down" at it.
    #[arg(long, default_value = "phi", value_parser = parse_kind)]
    pub detector: DetectorKind,

    /// The detector's parameters.
    #[command(flatten)]
    pub params: DetectorParams,
}

impl DetectorArgs {
    /// The validated detector configuration.
    pub fn config(&self) -> Result<DetectorConfig, ConfigError> {
        self.params.config(self.detector)
    }

    /// The configuration that `settings` select, each a flag's name without `--` (`detector`
    /// or a parameter, e.g. `acceptable-pause`) and its value as on the command line
    /// (`2800ms`): read and validated by these flags' own parsers, so a settings file and the
    /// command line accept the same values with the same error sentences. Without `detector`,
    /// the flag's default (phi). An unknown name is an error.
    pub fn from_settings<'a>(
        settings: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<DetectorConfig, String> {
        #[derive(clap::Parser)]
        #[command(no_binary_name = true)]
        struct Settings {
            #[command(flatten)]
            detector: DetectorArgs,
        }
        let mut args = Vec::new();
        for (name, value) in settings {
            if name != "detector" && !Param::ALL.iter().any(|p| p.name() == name) {
                let known: Vec<&str> = Param::ALL.iter().map(|p| p.name()).collect();
                return Err(format!(
                    "unknown setting {name:?}: detector or one of {}",
                    known.join(", ")
                ));
            }
            args.push(format!("--{name}={value}"));
        }
        let parsed = <Settings as clap::Parser>::try_parse_from(args).map_err(|e| {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            first.strip_prefix("error: ").unwrap_or(first).to_owned()
        })?;
        parsed.detector.config().map_err(|e| e.to_string())
    }
}

/// A quality-of-service target for every client's detection, as flags (Chen, Toueg and
/// Aguilera's configuration procedure: [`heartbeat_core::detector::target`]). With them the
/// detector is `chen`, each client's margin set from its own measured loss and delay variance,
/// so they conflict with `--detector` and the detector parameters.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TargetArgs {
    /// Configure each client's detector by the quality of service wanted: declare a crashed
    /// client down within this time (Chen's T_D upper bound), counted from its expected next
    /// heartbeat's schedule; with --target-mistake-every. The server says per client whether
    /// the target is reachable at its interval, and if not, the longest interval that would
    /// reach it (log, /clients, metrics). A duration: 250ms, 1.5s, 10m, 2h, 7d.
    #[arg(
        long,
        value_name = "TIME",
        value_parser = duration,
        requires = "target_mistake_every",
        conflicts_with_all = [
            "detector", "threshold", "min_std_deviation", "acceptable_pause",
            "first_heartbeat_estimate", "initial_interval", "alpha", "grace", "window",
        ],
    )]
    pub target_detection: Option<Duration>,

    /// With --target-detection: a live client wrongly declared down at most this often on
    /// average (Chen's lower bound on the mean mistake recurrence time), e.g. 30d.
    #[arg(long, value_name = "TIME", value_parser = duration, requires = "target_detection")]
    pub target_mistake_every: Option<Duration>,

    /// With --target-detection: optionally, a mistake corrected within this time on average
    /// (Chen's upper bound on the mean mistake duration) [default: none].
    #[arg(long, value_name = "TIME", value_parser = duration, requires = "target_detection")]
    pub target_mistake_duration: Option<Duration>,
}

impl TargetArgs {
    /// The validated target, `None` without `--target-detection`.
    pub fn target(&self) -> Result<Option<QosTarget>, ConfigError> {
        match (self.target_detection, self.target_mistake_every) {
            (Some(detection), Some(every)) => {
                QosTarget::new(detection, every, self.target_mistake_duration).map(Some)
            }
            _ => Ok(None),
        }
    }
}

/// The parameters of all detectors, as flags; each applies to the detectors that have it.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct DetectorParams {
    /// phi, phi-exp: the phi value at which a client is declared down [default: 8]. Suspect at
    /// half of it.
    #[arg(long, allow_negative_numbers = true, value_parser = float)]
    pub threshold: Option<f64>,

    /// phi: lower bound of the inter-arrival standard deviation [default: 100ms].
    #[arg(long, value_parser = parse_span)]
    pub min_std_deviation: Option<Span>,

    /// phi: pause tolerated on top of the mean interval (GC, network hiccups) [default: 3s].
    #[arg(long, value_parser = parse_span)]
    pub acceptable_pause: Option<Span>,

    /// phi: the interval assumed before any was measured [default: 1x, the declared interval].
    #[arg(long, value_parser = parse_span)]
    pub first_heartbeat_estimate: Option<Span>,

    /// phi-exp: initial and largest learned interval [default: 2x].
    #[arg(long, value_parser = parse_span)]
    pub initial_interval: Option<Span>,

    /// chen: safety margin added to the expected arrival [default: 1x]. Suspect at the
    /// expected arrival + alpha, down one alpha later.
    #[arg(long, value_parser = parse_span)]
    pub alpha: Option<Span>,

    /// fixed: silence tolerated after a missed interval [default: 2x]. Suspect halfway.
    #[arg(long, value_parser = parse_span)]
    pub grace: Option<Span>,

    /// phi, phi-exp, chen: inter-arrival samples kept per client [default: 128].
    #[arg(long, allow_negative_numbers = true, value_parser = int::<usize>(1, u32::MAX.into()))]
    pub window: Option<usize>,
}

fn parse_kind(s: &str) -> Result<DetectorKind, String> {
    s.parse().map_err(|e: ConfigError| e.to_string())
}

fn parse_span(s: &str) -> Result<Span, String> {
    s.parse().map_err(|e: ConfigError| e.to_string())
}

impl DetectorParams {
    /// The values given, for the core's per-detector table ([`ParamValues`]).
    pub fn values(&self) -> ParamValues {
        ParamValues {
            threshold: self.threshold,
            min_std_deviation: self.min_std_deviation,
            acceptable_pause: self.acceptable_pause,
            first_heartbeat_estimate: self.first_heartbeat_estimate,
            initial_interval: self.initial_interval,
            alpha: self.alpha,
            grace: self.grace,
            window: self.window,
        }
    }

    /// The flag (without `--`) of the first parameter given that none of `kinds` takes.
    pub fn unused_by(&self, kinds: &[DetectorKind]) -> Option<&'static str> {
        self.values().unused_by(kinds).map(Param::name)
    }

    /// Only the parameters that detector `kind` takes.
    pub fn for_kind(&self, kind: DetectorKind) -> Self {
        let v = self.values().for_kind(kind);
        Self {
            threshold: v.threshold,
            min_std_deviation: v.min_std_deviation,
            acceptable_pause: v.acceptable_pause,
            first_heartbeat_estimate: v.first_heartbeat_estimate,
            initial_interval: v.initial_interval,
            alpha: v.alpha,
            grace: v.grace,
            window: v.window,
        }
    }

    /// The validated configuration of detector `kind` with these parameters; a parameter
    /// `kind` does not take is an error.
    pub fn config(&self, kind: DetectorKind) -> Result<DetectorConfig, ConfigError> {
        self.values().config(kind)
    }
}

/// The warning a server listening on `addr` logs at start when it does not authenticate
/// clients and can be reached from other machines: client ids are then taken on trust.
pub fn trust_warning(addr: SocketAddr, authenticated: bool) -> Option<String> {
    (!authenticated && !addr.ip().is_loopback()).then(|| {
        format!(
            "Listening on {addr} without --auth-keys: client ids are taken on trust, so anyone \
             who can reach this port can pose as any client or hide its death (see the README, \
             \"Running on an untrusted network\")"
        )
    })
}

/// Reads a number the way the original project's flags were read (argparse with `type=int`,
/// that is Python's `int()`, and `float()`): surrounding whitespace is ignored (`" 10"`), a
/// leading `+` or `-` is allowed, and single underscores may group digits (`1_000`). Only ASCII
/// digits (Python also takes other scripts' decimal digits). Returns the sign and the digits
/// (with their `.` and exponent, for a float) without underscores.
fn python_number(s: &str, float: bool) -> Result<(bool, String), String> {
    let t = s.trim();
    let (negative, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let bad = || {
        Err(if float {
            "not a number".to_owned()
        } else {
            "not a whole number (digits, with an optional sign, spaces around and _ between \
             digits allowed)"
                .to_owned()
        })
    };
    let mut out = String::with_capacity(body.len());
    let mut prev: Option<char> = None;
    for (i, c) in body.char_indices() {
        let next = body[i + c.len_utf8()..].chars().next();
        let ok = match c {
            '0'..='9' => true,
            // Between two digits only, as Python allows.
            '_' => {
                prev.is_some_and(|p| p.is_ascii_digit()) && next.is_some_and(|n| n.is_ascii_digit())
            }
            '.' | 'e' | 'E' if float => true,
            '+' | '-' if float => matches!(prev, Some('e' | 'E')),
            _ => false,
        };
        if !ok {
            return bad();
        }
        if c != '_' {
            out.push(c);
        }
        prev = Some(c);
    }
    if !out.bytes().any(|b| b.is_ascii_digit()) {
        return bad();
    }
    Ok((negative, out))
}

/// The parser of a whole-number flag of type `T` from `min` to `max`, read as Python's `int()`
/// reads it: spaces around it, a leading `+` and single underscores between digits (`1_000`)
/// are accepted, ASCII digits only. Give the flag `allow_negative_numbers = true`, so that a
/// negative value reaches this parser and gets a clear message instead of clap's "unexpected
/// argument".
pub fn int<T>(min: i128, max: i128) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync
where
    T: TryFrom<i128>,
{
    move |s: &str| {
        let (negative, digits) = python_number(s, false)?;
        let magnitude: i128 = digits
            .parse()
            .map_err(|_| format!("must be at most {max}"))?;
        let n = if negative { -magnitude } else { magnitude };
        if n < min {
            return Err(below(n, min, max));
        }
        if n > max {
            return Err(format!("must be at most {max}"));
        }
        T::try_from(n).map_err(|_| format!("must be from {min} to {max}"))
    }
}

/// The message for `n` below `min`.
fn below(n: i128, min: i128, max: i128) -> String {
    match min {
        1 => "must be positive".to_owned(),
        0 => format!("must not be negative (0 to {max})"),
        _ if n < 0 => format!("must not be negative (at least {min})"),
        _ => format!("must be at least {min}"),
    }
}

/// A positive number (`threshold`), read as Python's `float()` reads it (spaces around it, a
/// leading `+`, single underscores between digits); finite, and more than 0.
pub fn float(s: &str) -> Result<f64, String> {
    let (negative, digits) = python_number(s, true)?;
    let v: f64 = digits.parse().map_err(|_| "not a number".to_owned())?;
    if !v.is_finite() {
        return Err("not a finite number".to_owned());
    }
    if negative || v == 0.0 {
        return Err("must be positive".to_owned());
    }
    Ok(v)
}

/// A duration flag of `heartbeat-server` (`--forget-after 10m`, `--hook-timeout 5s`): the one
/// grammar ([`heartbeat_core::parse_duration`]: `250ms`, `1.5s`, `10m`, `10min`, `2h`, `7d`),
/// more than 0 and below 30,000 years.
pub fn duration(s: &str) -> Result<Duration, String> {
    let d = heartbeat_core::parse_duration(s).map_err(|e| e.to_string())?;
    positive_and_bounded(s, d, false)
}

/// A duration flag of `heartbeat-load` (`--duration 30s`), which always took a bare number of
/// seconds: the one grammar, and a bare number as seconds
/// ([`heartbeat_core::parse_duration_or_secs`]); 0 only when `zero` allows it.
pub fn secs(zero: bool) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync {
    move |s: &str| {
        let d = heartbeat_core::parse_duration_or_secs(s).map_err(|e| e.to_string())?;
        positive_and_bounded(s, d, zero)
    }
}

/// A duration read from `s`: not zero unless `zero`, and below 10^12 s (a deadline past it
/// would overflow an `Instant`).
fn positive_and_bounded(s: &str, d: Duration, zero: bool) -> Result<Duration, String> {
    if d.is_zero() && !zero {
        return Err(format!("invalid duration {s:?}: must be more than 0"));
    }
    if d >= Duration::from_secs(1_000_000_000_000) {
        return Err(format!(
            "invalid duration {s:?}: must be below 10^12 seconds"
        ));
    }
    Ok(d)
}

/// What the hidden `--generate` flag of each binary prints to stdout, from the binary's own
/// clap definition: what the Debian package installs (deploy/debian/build.sh).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[non_exhaustive]
pub enum Generate {
    /// The bash completion script.
    Bash,
    /// The fish completion script.
    Fish,
    /// The man page (roff), section 1.
    Man,
    /// The zsh completion script.
    Zsh,
}

/// Renders `what` for the command `cmd` (a binary's `Opt::command()`); hidden flags stay out
/// of the man page (the completion scripts offer them all the same). The man page holds the
/// subcommands too (`heartbeat-server ctl silence`...), each a section of its own, so one page
/// is the whole manual.
pub fn generate(mut cmd: clap::Command, what: Generate) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let shell = match what {
        Generate::Man => {
            let mut cmd = cmd.disable_help_subcommand(true);
            cmd.build();
            clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
            man_subcommands(&cmd, cmd.get_name(), &mut out)?;
            return Ok(out);
        }
        Generate::Bash => clap_complete::Shell::Bash,
        Generate::Fish => clap_complete::Shell::Fish,
        Generate::Zsh => clap_complete::Shell::Zsh,
    };
    let name = cmd.get_name().to_owned();
    clap_complete::generate(shell, &mut cmd, name, &mut out);
    Ok(out)
}

/// Appends to a man page the sections of `cmd`'s subcommands, depth first: a `.SH` heading
/// naming the command (`HEARTBEAT-SERVER CTL SILENCE`), then its synopsis, description and
/// options as `.SS` subsections.
fn man_subcommands(cmd: &clap::Command, prefix: &str, out: &mut Vec<u8>) -> io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("{prefix} {}", sub.get_name());
        writeln!(out, ".SH \"{}\"", name.to_uppercase())?;
        let man = clap_mangen::Man::new(sub.clone());
        let mut body = Vec::new();
        man.render_synopsis_section(&mut body)?;
        man.render_description_section(&mut body)?;
        if sub.get_arguments().any(|a| !a.is_hide_set()) {
            man.render_options_section(&mut body)?;
        }
        let body = String::from_utf8_lossy(&body).replace("\n.SH ", "\n.SS ");
        let body = body
            .strip_prefix(".SH ")
            .map_or_else(|| body.to_string(), |rest| format!(".SS {rest}"));
        out.extend_from_slice(body.as_bytes());
        man_subcommands(sub, &name, out)?;
    }
    Ok(())
}

/// Prints [`generate`]'s output to stdout: the whole of a binary's `main` for `--generate`.
/// Exit 0, or 1 with a message when stdout cannot be written.
pub fn print_generated(cmd: clap::Command, what: Generate) -> ExitCode {
    let name = cmd.get_name().to_owned();
    let written = generate(cmd, what).and_then(|bytes| {
        let mut stdout = io::stdout().lock();
        stdout.write_all(&bytes)?;
        stdout.flush()
    });
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: cannot write the generated {what:?} output: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        d: DetectorArgs,
    }

    /// A settings file's entries go through the flags' parsers: the same values, the same
    /// errors.
    #[test]
    fn settings_are_read_as_the_flags_are() {
        let from = |pairs: &[(&str, &str)]| {
            DetectorArgs::from_settings(pairs.iter().copied()).map(|c| c.to_string())
        };
        assert_eq!(
            from(&[("detector", "fixed"), ("grace", "3200ms")]).unwrap(),
            "fixed grace=3200ms"
        );
        assert_eq!(
            from(&[("acceptable-pause", "2800ms")]).unwrap(),
            config(&["--acceptable-pause", "2800ms"]).unwrap()
        );
        assert_eq!(
            from(&[("detector", "phi-exp"), ("threshold", "12")]).unwrap(),
            config(&["--detector", "phi-exp", "--threshold", "12"]).unwrap()
        );
        let bad = from(&[("detector", "fixed"), ("grace", "3 parsecs")]).unwrap_err();
        assert!(bad.contains("--grace") && !bad.contains('\n'), "{bad}");
        let unused = from(&[("detector", "fixed"), ("threshold", "3")]).unwrap_err();
        assert_eq!(
            unused,
            config(&["--detector", "fixed", "--threshold", "3"]).unwrap_err()
        );
        assert!(
            from(&[("help", "")])
                .unwrap_err()
                .contains("unknown setting")
        );
        assert!(from(&[("detector", "nope")]).is_err());
    }

    fn config(args: &[&str]) -> Result<String, String> {
        let t = T::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        t.d.config()
            .map(|c| c.to_string())
            .map_err(|e| e.to_string())
    }

    #[derive(Debug, Parser)]
    struct Targeted {
        #[command(flatten)]
        d: DetectorArgs,
        #[command(flatten)]
        t: TargetArgs,
    }

    /// The targets need each other, conflict with an explicit detector or parameter, and
    /// read durations in the one grammar.
    #[test]
    fn targets_conflict_with_explicit_detector_flags() {
        let parse = |args: &[&str]| {
            Targeted::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
                .map_err(|e| e.kind())
        };
        let t = parse(&["--target-detection", "3s", "--target-mistake-every", "30d"]).unwrap();
        assert_eq!(
            t.t.target().unwrap(),
            Some(
                QosTarget::new(
                    Duration::from_secs(3),
                    Duration::from_secs(30 * 86_400),
                    None
                )
                .unwrap()
            )
        );
        assert_eq!(
            t.d.detector,
            DetectorKind::Phi,
            "the default is not a conflict"
        );
        use clap::error::ErrorKind::{ArgumentConflict, MissingRequiredArgument, ValueValidation};
        let both = ["--target-detection", "3s", "--target-mistake-every", "30d"];
        for extra in [
            &["--detector", "chen"][..],
            &["--alpha", "100ms"],
            &["--threshold", "8"],
        ] {
            let args: Vec<&str> = both.iter().chain(extra).copied().collect();
            assert_eq!(parse(&args).unwrap_err(), ArgumentConflict, "{args:?}");
        }
        assert_eq!(
            parse(&["--target-detection", "3s"]).unwrap_err(),
            MissingRequiredArgument
        );
        assert_eq!(
            parse(&["--target-mistake-duration", "1s"]).unwrap_err(),
            MissingRequiredArgument
        );
        assert_eq!(
            parse(&["--target-detection", "3", "--target-mistake-every", "30d"]).unwrap_err(),
            ValueValidation,
            "a unit is required"
        );
    }

    #[test]
    fn ids_are_taken_on_trust_only_off_loopback_and_without_keys() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        for addr in ["0.0.0.0:6510", "[::]:6510", "192.0.2.1:6510"] {
            let w = trust_warning(at(addr), false).unwrap();
            assert!(w.contains("taken on trust") && w.contains(addr), "{w}");
            assert_eq!(trust_warning(at(addr), true), None);
        }
        for addr in ["127.0.0.1:6510", "[::1]:6510", "127.0.0.2:1"] {
            assert_eq!(trust_warning(at(addr), false), None);
        }
    }

    #[test]
    fn defaults_and_parameters() {
        assert!(config(&[]).unwrap().starts_with("phi threshold=8"));
        assert!(
            config(&["--detector", "chen", "--alpha", "250ms"])
                .unwrap()
                .contains("alpha=250ms")
        );
        assert!(
            config(&["--detector", "fixed", "--grace", "3x"])
                .unwrap()
                .contains("grace=3x")
        );
        assert!(
            config(&["--detector", "phi-exp", "--threshold", "12"])
                .unwrap()
                .contains("threshold=12")
        );
        assert!(
            config(&["--detector", "fixed", "--threshold", "3"])
                .unwrap_err()
                .contains("threshold")
        );
        assert!(config(&["--detector", "nope"]).is_err());
        assert!(config(&["--alpha", "1s"]).is_err());
        assert!(config(&["--threshold", "-1"]).is_err());
    }

    #[test]
    fn numbers_read_as_pythons_int_reads_them() {
        let port = int::<u16>(0, 65_535);
        for (text, value) in [
            ("10", 10),
            (" 10", 10),
            ("10\t\n", 10),
            ("+10", 10),
            ("1_000", 1000),
            ("0_0", 0),
            ("007", 7),
            ("-0", 0),
        ] {
            assert_eq!(port(text), Ok(value), "{text:?}");
        }
        for text in [
            "", " ", "+", "_1", "1_", "1__0", "1 0", "0x10", "1.0", "1e3", "١٠", "--1",
        ] {
            assert!(
                port(text).unwrap_err().contains("not a whole number"),
                "{text:?}"
            );
        }
        assert_eq!(port("-1"), Err("must not be negative (0 to 65535)".into()));
        assert_eq!(port("70_000"), Err("must be at most 65535".into()));
        let interval = int::<u64>(1, 86_400_000);
        assert_eq!(interval("-5"), Err("must be positive".into()));
        assert_eq!(interval("0"), Err("must be positive".into()));
        assert_eq!(
            interval(&"9".repeat(60)),
            Err("must be at most 86400000".into())
        );
    }

    #[test]
    fn floats_and_seconds_take_the_same_spellings() {
        assert_eq!(float(" +8.5 "), Ok(8.5));
        assert_eq!(float("1_0"), Ok(10.0));
        assert_eq!(float("1e1"), Ok(10.0));
        assert!(float("-1").unwrap_err().contains("must be positive"));
        assert!(float("inf").is_err());
        assert!(float("nan").is_err());
        assert!(float("1e999").unwrap_err().contains("finite"));
    }

    /// Every duration flag reads the one grammar, with its one error sentence.
    #[test]
    fn durations_read_the_one_grammar() {
        let positive = secs(false);
        assert_eq!(positive(" 2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(positive("10m"), Ok(Duration::from_secs(600)));
        assert!(positive("0").unwrap_err().contains("must be more than 0"));
        assert_eq!(secs(true)("0"), Ok(Duration::ZERO));
        type Flag<'a> = &'a dyn Fn(&str) -> Result<Duration, String>;
        let flags: [Flag<'_>; 2] = [&duration, &positive];
        for flag in flags {
            assert_eq!(flag("10min"), Ok(Duration::from_secs(600)));
            assert_eq!(flag("1.5s"), Ok(Duration::from_millis(1500)));
            assert_eq!(flag("7d"), Ok(Duration::from_secs(604_800)));
            assert!(
                flag("-1s")
                    .unwrap_err()
                    .starts_with("invalid duration \"-1s\": expected")
            );
        }
        assert!(
            duration("90")
                .unwrap_err()
                .starts_with("invalid duration \"90\": expected")
        );
        assert!(duration("0s").unwrap_err().contains("must be more than 0"));
    }

    #[test]
    fn a_negative_number_reaches_the_parser() {
        let err = config(&["--window", "-3"]).unwrap_err();
        assert!(err.contains("must be positive"), "{err}");
        let err = config(&["--threshold", "-1"]).unwrap_err();
        assert!(err.contains("must be positive"), "{err}");
        assert!(
            config(&["--window", " 1_000"])
                .unwrap()
                .contains("window=1000")
        );
    }

    #[test]
    fn every_flag_reaches_its_parameter() {
        let phi = [
            "--threshold",
            "9",
            "--min-std-deviation",
            "7ms",
            "--acceptable-pause",
            "4s",
            "--first-heartbeat-estimate",
            "3x",
            "--window",
            "17",
        ];
        assert_eq!(
            config(&phi).unwrap(),
            "phi threshold=9 min-std-deviation=7ms acceptable-pause=4s window=17 \
             first-heartbeat-estimate=3x"
        );
        assert_eq!(
            config(&[
                "--detector",
                "phi-exp",
                "--threshold",
                "11",
                "--initial-interval",
                "5x",
                "--window",
                "19"
            ])
            .unwrap(),
            "phi-exp threshold=11 window=19 initial-interval=5x"
        );
        assert_eq!(
            config(&["--detector", "chen", "--alpha", "6ms", "--window", "23"]).unwrap(),
            "chen alpha=6ms window=23"
        );
        assert_eq!(
            config(&["--detector", "fixed", "--grace", "8ms"]).unwrap(),
            "fixed grace=8ms"
        );
    }

    #[test]
    fn generated_man_page_and_completions_show_the_flags_and_the_man_page_hides_hidden_ones() {
        let cmd = || {
            clap::Command::new("hb-test")
                .arg(clap::Arg::new("port").long("port").help("The port"))
                .arg(clap::Arg::new("generate").long("generate").hide(true))
        };
        for what in [Generate::Man, Generate::Bash, Generate::Zsh, Generate::Fish] {
            let text = String::from_utf8(generate(cmd(), what).unwrap()).unwrap();
            assert!(
                text.contains("hb") && text.contains("port"),
                "{what:?}: {text}"
            );
        }
        let man = String::from_utf8(generate(cmd(), Generate::Man).unwrap()).unwrap();
        assert!(man.contains(".TH hb-test 1"), "{man}");
        assert!(
            !man.contains("generate"),
            "the man page shows the hidden flag: {man}"
        );
    }
}

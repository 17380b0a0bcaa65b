//! The `heartbeat-sim` command as a user runs it: scenario files, `show`, `check` and their
//! exit codes. Short runs (20 s of simulated faults, two clients), so this stays quick.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use heartbeat_sim::check::Snapshot;

/// A scratch directory of its own, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("heartbeat-sim-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `heartbeat-sim ARGS` in `dir`.
fn sim(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_heartbeat-sim"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const SCENARIO: &str = r#"summary = "web and a database; the database dies silently"
seeds = "1..3"
duration = "20s"
latency = "10ms"

[detector]
kind = "phi"
threshold = 8

[[client]]
id = "web"
interval = "500ms"

[[client]]
id = "db"
latency = "20ms"

[[action]]
do = "crash"
silent = true
on = "db"
at = "8s"

[[expect]]
on = "db"
down-within = "6s"

[[expect]]
on = "web"
missed = 0
"#;

#[test]
fn list_and_show_give_the_builtin_files() {
    let dir = Scratch::new("show");
    let list = sim(&dir.0, &["list"]);
    assert!(list.status.success());
    let names: Vec<String> = stdout(&list)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect();
    // The built-in scenarios, in their order (the catalogue itself is pinned, name by name, by
    // heartbeat-tests' `every_scenario_has_tests`).
    let builtin: Vec<&str> = heartbeat_sim::scenario::builtin::names().collect();
    assert_eq!(names, builtin);
    let show = sim(&dir.0, &["show", "firewall"]);
    assert!(show.status.success());
    let on_disk = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/firewall.toml"
    ))
    .unwrap();
    assert_eq!(stdout(&show), on_disk);
    // What `show` prints runs as a file, exactly as the built-in does.
    std::fs::write(dir.path("firewall.toml"), &on_disk).unwrap();
    let args = ["--seed", "4", "--latency", "10", "--duration", "20"];
    let builtin = sim(&dir.0, &[&["run", "firewall"][..], &args].concat());
    let file = sim(
        &dir.0,
        &[&["run", "--file", "firewall.toml"][..], &args].concat(),
    );
    assert!(builtin.status.success() && file.status.success());
    let body = |o: &Output| {
        stdout(o)
            .lines()
            .filter(|l| !l.starts_with("replay: "))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(body(&builtin), body(&file));
    assert!(stdout(&file).contains("replay: heartbeat-sim run --file firewall.toml --seed 4"));
    let unknown = sim(&dir.0, &["show", "nope"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(stderr(&unknown).contains("known: steady, jitter"));
}

#[test]
fn a_file_runs_the_same_twice_and_its_expectations_are_checked() {
    let dir = Scratch::new("run");
    std::fs::write(dir.path("db.toml"), SCENARIO).unwrap();
    let first = sim(&dir.0, &["run", "--file", "db.toml", "--seed", "2"]);
    let second = sim(&dir.0, &["run", "--file", "db.toml", "--seed", "2"]);
    assert!(first.status.success(), "{}", stdout(&first));
    assert_eq!(
        first.stdout, second.stdout,
        "same seed, same file: same bytes"
    );
    let text = stdout(&first);
    assert!(
        text.contains("  ok    db down within 6s of a crash"),
        "{text}"
    );
    assert!(text.contains("  ok    web missed == 0"), "{text}");
    assert!(text.contains("fault   silent crash db"), "{text}");
    // Each client's own interval and latency reach the network and the report.
    let row = |id: &str| {
        text.lines()
            .find(|l| l.starts_with(id) && l.contains(" v1 "))
            .unwrap()
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    // client proto state received missed dup rst burst p50 p99 max gap-p99
    assert_eq!(row("web")[8], "10.000");
    assert_eq!(row("web")[11], "500.000");
    assert_eq!(row("db")[8], "20.000");
    let json = sim(
        &dir.0,
        &["run", "--file", "db.toml", "--seed", "2", "--json"],
    );
    assert!(stdout(&json).contains(r#""action":"silent crash db""#));

    // An expectation that cannot hold fails the run, exit 1.
    let strict = SCENARIO.replace("down-within = \"6s\"", "down-within = \"1s\"");
    std::fs::write(dir.path("strict.toml"), strict).unwrap();
    let failed = sim(&dir.0, &["run", "--file", "strict.toml", "--seed", "2"]);
    assert_eq!(failed.status.code(), Some(1));
    let text = stdout(&failed);
    assert!(
        text.contains("  FAIL  db down within 1s of a crash"),
        "{text}"
    );
    assert!(
        text.contains("db crashed at 8.000s, not down within 1.000s (down at"),
        "{text}"
    );
}

#[test]
fn a_bad_file_names_file_line_and_field_and_exits_2() {
    let dir = Scratch::new("bad");
    let bad = SCENARIO.replace("interval = \"500ms\"", "interval = \"500\"");
    std::fs::write(dir.path("bad.toml"), bad).unwrap();
    let o = sim(&dir.0, &["run", "--file", "bad.toml"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.starts_with(
            "error: bad.toml:12:12: `client[0].interval`: invalid duration \"500\": expected a \
             number and a unit"
        ),
        "{e}"
    );
    let o = sim(
        &dir.0,
        &["sweep", "--file", "missing.toml", "--seeds", "1..2"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("missing.toml"));
    let o = sim(&dir.0, &["check", "bad.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bad.toml:12:12"));
}

#[test]
fn check_records_passes_and_fails_with_a_diff_and_a_pending_snapshot() {
    let dir = Scratch::new("check");
    let toml = dir.path("db.toml");
    let (snap, pending) = (dir.path("db.snap"), dir.path("db.snap.new"));
    std::fs::write(&toml, SCENARIO).unwrap();

    // No snapshot yet: the reports are written as pending, and that fails (as insta does
    // under INSTA_UPDATE=no).
    let o = sim(&dir.0, &["check", "db.toml"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!snap.exists() && pending.exists());

    let o = sim(&dir.0, &["check", "db.toml", "--accept"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(snap.exists() && !pending.exists());
    let recorded = std::fs::read_to_string(&snap).unwrap();
    assert!(recorded.contains("\nseed 1, latency 10ms") && recorded.contains("\nseed 2, "));
    assert!(!recorded.contains("\nseed 3, "), "seeds 1..3 leaves 3 out");

    let o = sim(&dir.0, &["check", "db.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&snap).unwrap(), recorded);

    // A detector parameter changes: the diff names the changed lines.
    std::fs::write(&toml, SCENARIO.replace("threshold = 8", "threshold = 12")).unwrap();
    let o = sim(&dir.0, &["check", "db.toml"]);
    assert_eq!(o.status.code(), Some(1));
    let diff = stdout(&o);
    assert!(diff.starts_with("--- "), "{diff}");
    assert!(diff.contains("\n+++ "), "{diff}");
    assert!(diff.contains("\n@@ "), "{diff}");
    assert!(diff.contains("\n-detector phi threshold=8 "), "{diff}");
    assert!(diff.contains("\n+detector phi threshold=12 "), "{diff}");
    assert!(diff.contains("\n-") && diff.contains("transition client=db up->suspect"));
    assert_eq!(std::fs::read_to_string(&snap).unwrap(), recorded, "kept");

    // The pending file is in insta's format: read it as insta does.
    let new = Snapshot::parse(&std::fs::read_to_string(&pending).unwrap()).unwrap();
    assert_eq!(new.get("source"), Some("db.toml"));
    assert_eq!(
        new.get("expression"),
        Some("heartbeat-sim check db.toml --seeds 1..3")
    );
    assert!(new.contents.starts_with("scenario db: web and a database"));
    assert!(new.contents.contains("threshold=12"));

    // --seeds overrides the file's; accepting records the new reports.
    let o = sim(&dir.0, &["check", "db.toml", "--accept", "--seeds", "5..6"]);
    assert!(o.status.success());
    assert!(!pending.exists());
    let now = Snapshot::parse(&std::fs::read_to_string(&snap).unwrap()).unwrap();
    assert!(now.contents.contains("\nseed 5, ") && !now.contents.contains("\nseed 1, "));
}

/// A fault drawn past the end of the fault phase is never applied: `run` says so on stderr
/// (the report is unchanged), and `check` refuses the file, exit 2, naming the fault and the
/// seed. Its end past the phase (the repair of a partition) is no fault and says nothing.
#[test]
fn a_fault_past_the_fault_phase_is_a_warning_in_run_and_an_error_in_check() {
    let dir = Scratch::new("late");
    let late = SCENARIO.replace("at = \"8s\"", "at = \"25s\"");
    std::fs::write(dir.path("late.toml"), &late).unwrap();
    let o = sim(&dir.0, &["run", "--file", "late.toml", "--seed", "1"]);
    let e = stderr(&o);
    assert!(
        e.contains(
            "warning: silent crash db at 25.000s is at or after the end of the fault phase \
             (20.000s): not applied"
        ),
        "{e}"
    );
    let o = sim(&dir.0, &["check", "late.toml"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("late.toml: seed 1: silent crash db at 25.000s"),
        "{}",
        stderr(&o)
    );

    let ends_late = SCENARIO.replace("at = \"8s\"", "at = \"15s\"\nfor = \"10s\"");
    std::fs::write(dir.path("ends.toml"), &ends_late).unwrap();
    let o = sim(&dir.0, &["run", "--file", "ends.toml", "--seed", "1"]);
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
}

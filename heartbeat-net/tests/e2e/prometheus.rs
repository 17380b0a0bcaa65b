//! The deployment's Prometheus set-up, for real: Debian's `prometheus` scrapes a live
//! `heartbeat-server` with the repository's scrape configuration and alert rules: a killed
//! client's `HeartbeatClientDown` fires in time, and rides out a server restart.

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::metrics::{http, metrics_addr};
use crate::util::{Proc, WAIT, arg, free_port};

/// The scrape and evaluation interval of the test's Prometheus.
const SCRAPE: Duration = Duration::from_secs(1);

/// Real time, for waiting on real processes.
#[allow(clippy::disallowed_methods)]
fn real_now() -> Instant {
    Instant::now()
}

/// `deploy/prometheus/NAME` in the repository.
fn deployed(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/prometheus")
        .join(name)
}

/// `text` with `from` replaced by `to`, which must occur exactly once: a changed repository
/// file fails here instead of silently testing something else.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} once in\n{text}");
    text.replacen(from, to, 1)
}

/// The `for:` of alert `name` in the rules file.
fn rule_for(rules: &str, name: &str) -> Duration {
    let rule = rules
        .split("- alert: ")
        .find(|r| r.starts_with(name))
        .unwrap_or_else(|| panic!("no alert {name}"));
    let value = rule
        .lines()
        .find_map(|l| l.trim().strip_prefix("for: "))
        .unwrap_or_else(|| panic!("{name} has no for:"));
    match value.split_at(value.len() - 1) {
        (n, "s") => Duration::from_secs(n.parse().unwrap()),
        (n, "m") => Duration::from_secs(60 * n.parse::<u64>().unwrap()),
        _ => panic!("for: {value}"),
    }
}

/// `GET path` of the Prometheus at `addr`, as JSON.
fn api(addr: &str, path: &str) -> Value {
    let (status, body) = http(addr, "GET", path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls until `f` gives something, at most `wait`.
fn poll<T>(what: &str, wait: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = real_now() + wait;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(real_now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// Debian's Prometheus with the repository's configuration, scraping `target` every second
/// and evaluating the repository's rules file, without Alertmanager; its web address, and the
/// `for:` of `HeartbeatClientDown`. Killed when the returned `Proc` is dropped.
fn start_prometheus(target: &str, dir: &Path) -> (Proc, String, Duration) {
    let rules_path = deployed("heartbeat.rules.yml");
    let rules = std::fs::read_to_string(&rules_path).unwrap();
    let firing_after = rule_for(&rules, "HeartbeatClientDown");
    let mut config = std::fs::read_to_string(deployed("prometheus.yml")).unwrap();
    config = replace_once(&config, "scrape_interval: 15s", "scrape_interval: 1s");
    config = replace_once(
        &config,
        "evaluation_interval: 15s",
        "evaluation_interval: 1s",
    );
    config = replace_once(
        &config,
        "- heartbeat.rules.yml",
        &format!("- {}", arg(&rules_path)),
    );
    config = replace_once(&config, "\"localhost:9464\"", &format!("\"{target}\""));
    let alerting = config.find("alerting:").unwrap();
    let scrapes = config.find("scrape_configs:").unwrap();
    config.replace_range(alerting..scrapes, "");
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, &config).unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let prometheus = Proc::spawn(
        "prometheus",
        "prometheus",
        &[
            "--config.file",
            arg(&config_path),
            "--web.listen-address",
            &web,
            "--storage.tsdb.path",
            arg(&dir.join("data")),
            "--log.level",
            "warn",
        ],
    );
    poll("prometheus ready", WAIT, || {
        let ready =
            std::net::TcpStream::connect(&web).is_ok() && http(&web, "GET", "/-/ready").0 == 200;
        ready.then_some(())
    });
    (prometheus, web, firing_after)
}

/// The state of alert `name` for `client` in the Prometheus at `web`: `firing`, `pending`, or
/// `None` when there is no such alert.
fn alert_state(web: &str, name: &str, client: &str) -> Option<String> {
    let alerts = api(web, "/api/v1/alerts");
    alerts["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["labels"]["alertname"] == name && a["labels"]["client"] == client)
        .and_then(|a| a["state"].as_str().map(str::to_owned))
}

/// Waits until Prometheus at `web` has scraped its target successfully.
fn wait_scraped(web: &str) {
    poll("the target scraped", WAIT, || {
        let targets = api(web, "/api/v1/targets");
        let health = &targets["data"]["activeTargets"][0]["health"];
        (health == "up").then_some(())
    });
}

#[test]
#[ignore = "needs Debian's prometheus; .ci/run installs it and runs this test"]
fn a_killed_client_fires_heartbeat_client_down_in_a_real_prometheus() {
    let (mut server, port) = Proc::json_server(&["--metrics-addr", "127.0.0.1:0"]);
    let target = metrics_addr(&mut server);
    let dir = tempfile::tempdir().unwrap();
    let (_prometheus, web, firing_after) = start_prometheus(&target, dir.path());

    let mut victim = Proc::client(port, "victim", &["--id", "victim", "--interval", "100"]);
    server.wait_beat("victim", 1);
    // Prometheus has seen it up (the target scraped, the client's series there).
    wait_scraped(&web);
    thread::sleep(2 * SCRAPE);
    let alerts = api(&web, "/api/v1/alerts");
    assert_eq!(
        alerts["data"]["alerts"],
        serde_json::json!([]),
        "nothing before the kill"
    );

    victim.kill();
    server.wait_transition("down");
    let declared = real_now();
    let fired = poll("HeartbeatClientDown firing", firing_after + WAIT, || {
        let state = alert_state(&web, "HeartbeatClientDown", "victim");
        (state.as_deref() == Some("firing")).then(real_now)
    });
    // Down is scraped within one interval, the rule sees it at its next evaluation (one more)
    // and fires `for` later; half a second for this test's polling and a loaded machine.
    let bound = firing_after + 2 * SCRAPE + Duration::from_millis(500);
    let took = fired - declared;
    eprintln!("HeartbeatClientDown fired {took:?} after the server declared the client down");
    assert!(
        took <= bound,
        "fired {took:?} after the server declared the client down; at most {bound:?}"
    );
    // Not before its `for` (less the time this test took to read that the client was down).
    let early = Duration::from_millis(500);
    assert!(
        took + early >= firing_after,
        "fired before its for: {took:?}"
    );
}

/// A server restart is no resolve and no second page: with `--state-dir`, a client down and
/// paged before the restart stays `HeartbeatClientDown` firing while the server is away (10 s,
/// ten failed scrapes) and after it restored the state, without going back to pending; the
/// client coming back resolves it.
#[test]
#[ignore = "needs Debian's prometheus; .ci/run installs it and runs this test"]
fn a_firing_alert_rides_out_a_server_restart_and_resolves_when_the_client_returns() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (port, metrics) = (free_port(), format!("127.0.0.1:{}", free_port()));
    let args = [
        "--metrics-addr",
        metrics.as_str(),
        "--state-dir",
        arg(&state),
        "--detector",
        "fixed",
    ];
    let mut server = Proc::json_server_on_with(port, &args);
    let (_prometheus, web, firing_after) = start_prometheus(&metrics, dir.path());
    let mut victim = Proc::client(port, "victim", &["--id", "victim", "--interval", "100"]);
    server.wait_beat("victim", 1);
    wait_scraped(&web);
    victim.kill();
    server.wait_transition("down");
    poll("HeartbeatClientDown firing", firing_after + WAIT, || {
        let state = alert_state(&web, "HeartbeatClientDown", "victim");
        (state.as_deref() == Some("firing")).then_some(())
    });

    // The restart: ten seconds without a server, then the same server on the same ports.
    server.signal("TERM");
    server.wait_exit();
    let still_firing = |during: &str| {
        let state = alert_state(&web, "HeartbeatClientDown", "victim");
        assert_eq!(state.as_deref(), Some("firing"), "{during}");
    };
    let away = real_now();
    while real_now() - away < Duration::from_secs(10) {
        still_firing("while the server is away");
        thread::sleep(Duration::from_millis(500));
    }
    let mut again = Proc::json_server_on_with(port, &args);
    again.wait_stderr("State: 1 client(s) restored from ");
    wait_scraped(&web);
    let back = real_now();
    while real_now() - back < firing_after + 5 * SCRAPE {
        still_firing("after the restart");
        thread::sleep(Duration::from_millis(500));
    }

    // The client returns: the alert resolves within a few scrapes.
    let _victim = Proc::client(port, "victim", &["--id", "victim", "--interval", "100"]);
    again.wait_transition("up");
    poll("HeartbeatClientDown resolved", WAIT, || {
        alert_state(&web, "HeartbeatClientDown", "victim")
            .is_none()
            .then_some(())
    });
}

/// A maintenance window, for real: a silenced client that dies raises no alert, not even a
/// pending one, for longer than the alert's `for`; unsilenced while still down, its
/// `HeartbeatClientDown` fires after its `for`.
#[test]
#[ignore = "needs Debian's prometheus; .ci/run installs it and runs this test"]
fn a_silenced_client_raises_no_alert_until_its_silence_ends() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let (mut server, port) = Proc::json_server(&[
        "--metrics-addr",
        "127.0.0.1:0",
        "--control-socket",
        arg(&socket),
        "--detector",
        "fixed",
    ]);
    let target = metrics_addr(&mut server);
    let (_prometheus, web, firing_after) = start_prometheus(&target, dir.path());
    let mut victim = Proc::client(port, "victim", &["--id", "victim", "--interval", "100"]);
    server.wait_beat("victim", 1);
    wait_scraped(&web);
    let ctl = |args: &[&str]| {
        let out = std::process::Command::new(crate::util::SERVER)
            .args(["ctl", "--socket", arg(&socket)])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "ctl {args:?}: {out:?}");
    };
    ctl(&["silence", "victim", "--until", "1h"]);
    victim.kill();
    server.wait_transition("down");
    let down = real_now();
    while real_now() - down < firing_after + 5 * SCRAPE {
        let state = alert_state(&web, "HeartbeatClientDown", "victim");
        assert_eq!(state, None, "silenced");
        thread::sleep(Duration::from_millis(500));
    }
    ctl(&["unsilence", "victim"]);
    let ended = real_now();
    poll("HeartbeatClientDown firing", firing_after + WAIT, || {
        let state = alert_state(&web, "HeartbeatClientDown", "victim");
        (state.as_deref() == Some("firing")).then_some(())
    });
    assert!(real_now() - ended + Duration::from_millis(500) >= firing_after);
}

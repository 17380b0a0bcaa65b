//! `heartbeat-sim real` on the kernel: a short steady run in network namespaces passes its
//! oracles and leaves no namespace behind, even when interrupted by SIGINT mid-run. Needs root
//! and the heartbeat-server and heartbeat-client binaries beside heartbeat-sim (cargo builds
//! them there with the workspace): ignored by the plain test command, run by name in `.ci/run`,
//! which runs as root.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// One client every 200 ms that does not reconnect (so the drain is short), 3 s of faults.
const STEADY: &str = r#"summary = "short steady run for the real-run test"
duration = "3s"

[[client]]
id = "c1"
interval = "200ms"
reconnect = false

[[expect]]
check = "none-missed"

[[expect]]
check = "all-live"
"#;

fn scenario(name: &str, duration: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("hbsim-test-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, STEADY.replace("\"3s\"", &format!("\"{duration}\""))).unwrap();
    path
}

/// The namespaces of the run with process id `pid`.
fn namespaces_of(pid: u32) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("hbsim-{pid}-")))
        .map(str::to_owned)
        .collect()
}

fn must_be_root() {
    let uid = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "needs root"
    );
}

#[test]
#[ignore = "needs root (network namespaces) and the server and client binaries; .ci/run runs it"]
fn a_real_steady_run_passes_its_oracles_and_leaves_no_namespace_of_its_own_or_a_dead_run() {
    must_be_root();
    // What a run killed by SIGKILL leaves: the next run's start-up sweep removes it (no
    // process has this pid: it is above any pid_max).
    let stale = "hbsim-999999999-rtr";
    let _ = Command::new("ip").args(["netns", "add", stale]).status();
    assert_eq!(namespaces_of(999_999_999), vec![stale.to_owned()]);
    let file = scenario("steady", "3s");
    let child = Command::new(env!("CARGO_BIN_EXE_heartbeat-sim"))
        .args(["real", "--file"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_file(&file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("real run on kernel TCP"), "{stdout}");
    assert!(stdout.contains("verdict: ok"), "{stdout}");
    // The report's row: c1 up, about 5 heartbeats a second for the run.
    let row = stdout
        .lines()
        .find(|l| l.starts_with("c1 ") && l.contains(" up "))
        .unwrap_or_else(|| panic!("no report row for c1 up: {stdout}"));
    let received: u64 = row.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!(received >= 15, "{row}");
    assert!(stderr.contains("not realised: latency"), "{stderr}");
    assert_eq!(namespaces_of(pid), Vec::<String>::new());
    assert_eq!(namespaces_of(999_999_999), Vec::<String>::new());
}

#[test]
#[ignore = "needs root (network namespaces) and the server and client binaries; .ci/run runs it"]
fn sigint_mid_run_removes_the_namespaces_and_exits_130() {
    must_be_root();
    let file = scenario("sigint", "30s");
    let child = Command::new(env!("CARGO_BIN_EXE_heartbeat-sim"))
        .args(["real", "--file"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Up to 10 s for the namespaces to appear.
    let mut polls = 0;
    while namespaces_of(pid).len() < 3 {
        polls += 1;
        assert!(polls < 200, "the run made no namespaces");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Mid-run: the server and the client are running.
    std::thread::sleep(Duration::from_secs(2));
    let ns = namespaces_of(pid);
    let srv = ns.iter().find(|n| n.ends_with("-srv")).unwrap().clone();
    let pids = Command::new("ip")
        .args(["netns", "pids", &srv])
        .output()
        .unwrap();
    let server_pids = String::from_utf8_lossy(&pids.stdout).trim().to_owned();
    assert!(!server_pids.is_empty(), "no server running in {srv}");
    Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_file(&file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_eq!(namespaces_of(pid), Vec::<String>::new());
    for p in server_pids.lines() {
        assert!(
            !std::path::Path::new(&format!("/proc/{}", p.trim())).exists(),
            "server process {p} left running"
        );
    }
}

#[test]
#[ignore = "needs root and setpriv (drops to nobody); .ci/run runs it"]
fn without_root_a_real_run_exits_2_with_one_line() {
    use std::os::unix::fs::PermissionsExt as _;
    must_be_root();
    // The build directory may not be reachable by `nobody`: copy the binary.
    let copy = std::env::temp_dir().join(format!("hbsim-test-{}-bin", std::process::id()));
    std::fs::copy(env!("CARGO_BIN_EXE_heartbeat-sim"), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&copy)
        .args(["real", "steady"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&copy);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("needs root"), "{stderr}");
}

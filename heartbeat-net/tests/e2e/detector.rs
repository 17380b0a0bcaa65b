//! Failure detection through the real binaries: a killed client is declared down, then back up.

use crate::util::Proc;

#[test]
fn a_killed_client_is_declared_suspect_then_down_then_up_again() {
    // fixed: suspect after interval + grace/2 of silence, down after interval + grace.
    let (mut server, port) = Proc::json_server(&["--detector", "fixed", "--grace", "2x"]);
    let mut client = Proc::client(port, "victim", &["-i", "50", "--id", "victim"]);
    server.wait_beat("victim", 3);
    client.kill();
    let suspect = server.wait_transition("suspect");
    assert_eq!(
        (suspect["client"].as_str(), suspect["from"].as_str()),
        (Some("victim"), Some("up"))
    );
    assert_eq!(suspect["detector"], "fixed");
    let down = server.wait_transition("down");
    // Interval 50 ms + grace 100 ms = 150 ms after the last heartbeat (the check fires on time).
    let since = down["since_last_ms"].as_f64().unwrap();
    assert!((150.0..400.0).contains(&since), "{down}");

    let mut again = Proc::client(
        port,
        "victim again",
        &["-i", "50", "--id", "victim", "--count", "3"],
    );
    let up = server.wait_transition("up");
    assert_eq!(up["from"], "down");
    again.expect_exit(0);
    let left = server.wait_transition("left");
    assert_eq!(left["client"], "victim");
}

#[test]
fn detector_flags_are_validated_as_usage_errors() {
    for args in [
        &["--detector", "bogus"][..],
        &["--detector", "fixed", "--threshold", "3"],
        &["--threshold", "-2"],
    ] {
        let out = std::process::Command::new(crate::util::SERVER)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

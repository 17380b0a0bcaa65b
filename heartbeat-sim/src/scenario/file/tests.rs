use std::time::Duration;

use super::*;
use crate::scenario::{ClientRule, Cmp, Counter, Expectation, Latency, Params, Scenario, Source};

fn spec(text: &str) -> Result<Spec, String> {
    Spec::parse("t.toml", "t", text, Source::File("t.toml".into()))
}

fn expand(text: &str, seed: u64) -> Scenario {
    spec(text).unwrap().expand(&Params::seed(seed)).unwrap()
}

fn actions(s: &Scenario) -> Vec<String> {
    s.actions
        .iter()
        .map(|t| format!("{} {}", t.at.as_millis(), s.describe(&t.action)))
        .collect()
}

#[test]
fn an_empty_file_is_one_steady_client() {
    let s = expand("", 1);
    assert_eq!(s.name, "t");
    assert_eq!(s.clients.len(), 1);
    assert_eq!(s.clients[0].id, "c1");
    assert_eq!(s.clients[0].interval, Duration::from_secs(1));
    assert_eq!(s.latency, Latency::default());
    assert_eq!(s.duration, Duration::from_secs(60));
    assert!(s.actions.is_empty() && s.expect.is_empty() && s.detector.is_none());
    assert_eq!(spec("").unwrap().seeds, 1..5);
}

#[test]
fn clients_take_defaults_then_their_own_settings() {
    let s = expand(
        r#"
        latency = "5ms"
        [clients]
        count = 3
        interval = "200ms"
        ack-timeout = "3s"
        reconnect = { initial = "50ms", max = "2s" }
        [[client]]
        id = "web"
        latency = "1ms..80ms"
        protocol = "legacy"
        reconnect = false
        [[client]]
        interval = "1s"
        "#,
        1,
    );
    let ids: Vec<&str> = s.clients.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["web", "c2", "c3"]);
    let web = &s.clients[0];
    assert_eq!(
        web.latency,
        Latency::Range {
            min: Duration::from_millis(1),
            max: Duration::from_millis(80)
        }
    );
    assert!(web.legacy && web.reconnect.is_none());
    assert_eq!(web.interval, Duration::from_millis(200));
    assert_eq!(s.clients[1].interval, Duration::from_secs(1));
    assert_eq!(
        s.clients[2].latency,
        Latency::Fixed(Duration::from_millis(5))
    );
    let backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2)).unwrap();
    assert_eq!(s.clients[2].reconnect, Some(backoff));
    assert_eq!(s.clients[2].ack_timeout, Some(Duration::from_secs(3)));
    // --clients and --latency override the file; a client's own latency stays.
    let p = Params {
        clients: Some(4),
        latency: Some(Latency::Fixed(Duration::from_millis(9))),
        ..Params::seed(1)
    };
    let s = spec("latency = \"5ms\"\n[[client]]\nlatency = \"7ms\"")
        .unwrap()
        .expand(&p)
        .unwrap();
    assert_eq!(s.clients.len(), 4);
    assert_eq!(
        s.clients[0].latency,
        Latency::Fixed(Duration::from_millis(7))
    );
    assert_eq!(
        s.clients[3].latency,
        Latency::Fixed(Duration::from_millis(9))
    );
}

#[test]
fn actions_expand_on_each_a_list_the_last_and_the_server() {
    let s = expand(
        r#"
        duration = "100s"
        [clients]
        count = 3
        [[action]]
        do = "partition"
        on = ["c1", "c3"]
        at = "10s"
        for = "5s"
        [[action]]
        do = "crash"
        on = "server"
        at = "50%"
        for = "2s"
        [[action]]
        do = "hold"
        on = "last"
        at = "end-10s"
        [[action]]
        do = "latency"
        on = "c2"
        at = "20s"
        to = "300ms"
        every = "30s"
        until = "80s"
        [[action]]
        do = "crash"
        silent = true
        on = "c2"
        at = "85s"
        "#,
        1,
    );
    assert_eq!(
        actions(&s),
        [
            "10000 partition c1 <-> server",
            "10000 partition c3 <-> server",
            "15000 repair c1 <-> server",
            "15000 repair c3 <-> server",
            "20000 latency c2 <-> server = 300ms",
            "50000 crash server",
            "50000 latency c2 <-> server = 300ms",
            "52000 restart server",
            "85000 silent crash c2",
            "90000 hold c3 <-> server",
        ]
    );
}

#[test]
fn a_start_makes_a_client_start_late() {
    let s = expand(
        "[clients]\ncount = 2\n[[action]]\ndo = \"start\"\non = \"c2\"\nat = \"5s\"",
        1,
    );
    assert!(!s.clients[0].starts_late && s.clients[1].starts_late);
}

#[test]
fn a_random_subset_is_drawn_per_seed_within_its_bounds() {
    let text = r#"
        [clients]
        count = 8
        [[action]]
        do = "partition"
        on = { random = "2..3" }
        at = "10s"
    "#;
    let mut sizes = std::collections::BTreeSet::new();
    for seed in 0..50 {
        let s = expand(text, seed);
        sizes.insert(s.actions.len());
        assert_eq!(s, expand(text, seed));
    }
    assert_eq!(sizes.into_iter().collect::<Vec<_>>(), [2, 3]);
}

#[test]
fn expectations_keep_their_order_and_name_their_clients() {
    let s = expand(
        r#"
        [clients]
        count = 2
        [[expect]]
        check = "none-missed"
        [[expect]]
        on = "c2"
        down-within = "5s"
        [[expect]]
        missed = 0
        [[expect]]
        on = ["c1"]
        bursts = ">= 1"
        [[expect]]
        on = "last"
        state = "down"
        "#,
        1,
    );
    let names: Vec<String> = s.expect.iter().map(Expectation::name).collect();
    assert_eq!(
        names,
        [
            "none-missed",
            "c2 down within 5s of a crash",
            "each missed == 0",
            "c1 bursts >= 1",
            "last down at the end"
        ]
    );
    assert_eq!(
        s.expect[3],
        Expectation::Client {
            clients: vec![0],
            label: "c1 bursts >= 1".into(),
            rule: ClientRule::Count {
                counter: Counter::Bursts,
                cmp: Cmp::Ge,
                value: 1
            }
        }
    );
}

#[test]
fn the_detector_is_read_by_the_servers_own_flags() {
    let s = expand(
        "[detector]\nkind = \"chen\"\nalpha = \"250ms\"\nwindow = 20",
        1,
    );
    assert_eq!(
        s.detector.unwrap().to_string(),
        "chen alpha=250ms window=20"
    );
    let s = expand("[detector]\nthreshold = 12.5", 1);
    assert!(
        s.detector
            .unwrap()
            .to_string()
            .starts_with("phi threshold=12.5")
    );
}

/// Each error names the file, the line and column, the field, and what was expected.
#[test]
fn errors_point_at_the_field() {
    let cases: &[(&str, &str)] = &[
        ("seeds = \"5..1\"", "t.toml:1:9: `seeds`: empty seed range"),
        (
            "duration = \"0s\"",
            "t.toml:1:12: `duration`: expected more than 0s",
        ),
        (
            "[clients]\nintervl = \"1s\"",
            "t.toml:2:1: `clients`: unknown field `intervl`",
        ),
        (
            "[[client]]\nid = \"each\"",
            "t.toml:2:6: `client[0].id`: \"each\" is a reserved word",
        ),
        (
            "[[client]]\nid = \"a b\"",
            "t.toml:2:6: `client[0].id`: client id may only contain",
        ),
        (
            "[clients]\ncount = 2\n[[client]]\nid = \"c2\"",
            "t.toml:4:6: `client.id`: clients 1 and 2 would both be named \"c2\"",
        ),
        (
            "[[client]]\nreconnect = 3",
            "t.toml:2:13: `client[0].reconnect`: expected true, false or",
        ),
        (
            "[[action]]\ndo = \"hold\"\non = \"c9\"\nat = \"1s\"",
            "t.toml:3:6: `action[0].on`: no client \"c9\" in a run of 1 clients",
        ),
        (
            "[[action]]\ndo = \"stop\"\non = \"server\"\nat = \"1s\"",
            "t.toml:3:6: `action[0].on`: only crash and restart apply to the server",
        ),
        (
            "[[action]]\ndo = \"stop\"\non = \"c1\"\nat = \"1s\"\nfor = \"2s\"",
            "t.toml:5:7: `action[0].for`: only crash, hold, partition and swizzle take",
        ),
        (
            "[[action]]\ndo = \"hold\"\non = \"c1\"\nat = \"9s..2s\"",
            "t.toml:4:6: `action[0].at`: the range \"9s..2s\" ends before it starts",
        ),
        (
            "[[action]]\ndo = \"hold\"\non = \"c1\"",
            "t.toml:1:1: `action[0]`: missing field `at`",
        ),
        (
            "[[action]]\ndo = \"latency\"\non = \"c1\"\nat = \"1s\"",
            "`action[0].to`: a latency action needs `to`",
        ),
        (
            "[[expect]]\ncheck = \"all-good\"",
            "t.toml:2:9: `expect[0].check`: unknown check \"all-good\"",
        ),
        (
            "[[expect]]\nstate = \"up\"\nmissed = 0",
            "t.toml:3:10: `expect[0].missed`: one rule per [[expect]] entry",
        ),
        (
            "[[expect]]\nstate = \"dead\"",
            "t.toml:2:9: `expect[0].state`: expected \"up\", \"suspect\", \"down\" or \"left\"",
        ),
        ("x = 1\n[[expect]]\n", "t.toml:1:1: unknown field `x`"),
        (
            "[[expect]]\n\n[[expect]]\n",
            "t.toml:1:1: `expect[0]`: expected `check = NAME`, or one rule",
        ),
        (
            "[[action]]\ndo = \"hold\"\non = \"c1\"\nat = \"1s\"\nevery = \"0%..1%\"",
            "t.toml:5:9: `action[0].every`: a repetition must be longer than 0 ms",
        ),
        (
            "[[action]]\ndo = \"hold\"\non = \"c1\"\nat = \"1s\"\nevery = \"1ms\"\n\
             [[action]]\ndo = \"hold\"\non = \"c1\"\nat = \"1s\"\nevery = \"1ms\"",
            "more than 100000 actions",
        ),
        (
            "[[action]]\ndo = \"hold\"\non = \"c1\"\nat = \"1s\"\nfor = \"50%..10s\"",
            "t.toml:5:7: `action[0].for`: the range 50%..10s ends before it starts",
        ),
        (
            "[detector]\nkind = \"psychic\"",
            "t.toml:2:8: `detector.kind`: ",
        ),
    ];
    for (text, want) in cases {
        let e = spec(text)
            .and_then(|s| s.expand(&Params::seed(1)))
            .unwrap_err();
        assert!(e.contains(want), "{text:?}:\n{e}\nwanted {want:?}");
    }
    // The offending line, underlined.
    let e = spec("[[client]]\ninterval = \"0ms\"").unwrap_err();
    assert!(
        e.ends_with("2 | interval = \"0ms\"\n  |            ^^^^^"),
        "{e}"
    );
}

#[test]
fn run_parameters_the_file_cannot_take_are_plain_errors() {
    let s = spec("min-duration = \"20s\"\n[clients]\ncount = 2\nmin = 2\nmax = 3").unwrap();
    let p = |duration: u64, clients: usize| Params {
        duration: Some(Duration::from_secs(duration)),
        clients: Some(clients),
        ..Params::seed(1)
    };
    assert!(s.expand(&p(19, 2)).unwrap_err().contains("too short"));
    assert!(
        s.expand(&p(20, 1))
            .unwrap_err()
            .contains("needs 2 to 3 clients")
    );
    assert!(s.expand(&p(20, 4)).is_err());
    assert!(s.expand(&p(20, 3)).is_ok());
}

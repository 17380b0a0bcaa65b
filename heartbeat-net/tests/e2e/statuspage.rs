//! The status page (`GET /` and `/status.json` on `--metrics-addr`) of a live server whose
//! clients are in every state: up, suspect (a client stopped with SIGSTOP), down (killed), left
//! (said goodbye) and never seen (`--expect`). Read as JSON, and loaded in a real browser:
//! Debian's `chromium`, headless, its DOM after the page's script ran and a screenshot.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::metrics::{http, metrics_addr};
use crate::util::{Proc, arg, wait_until, write_file};

/// A server with a client in every state, and the address of its page.
struct Fleet {
    /// Killed first (fields drop in order), then the clients.
    _server: Proc,
    /// Kept running (one of them stopped) until the test ends; each `Proc`'s drop kills it
    /// with SIGKILL, which a stopped process obeys too. (Signalling every client's pid here
    /// once reached clients already reaped: a pid the kernel may have given to anyone.)
    _clients: Vec<Proc>,
    addr: String,
}

/// `up-1` and `up-2` heartbeat every 100 ms; `sus-1` (every 600 ms) is stopped, suspect from
/// 6.3 s of silence and down only at 12.6 s (fixed detector, grace 20 intervals); `down-1`
/// (every 50 ms) is killed, down after 1.05 s; `left-1` sent three heartbeats and said goodbye;
/// `ghost` is expected and never heard from. Returns once every state is reached, with
/// at least five seconds before `sus-1` goes down.
fn fleet(dir: &Path) -> Fleet {
    let expect = write_file(dir, "expect.txt", "ghost\n", 0o644);
    let (mut server, port) = Proc::json_server(&[
        "--detector",
        "fixed",
        "--grace",
        "20x",
        "--expect",
        arg(&expect),
        "--expect-grace",
        "1s",
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let addr = metrics_addr(&mut server);
    let client = |name: &str, every: &str, more: &[&str]| {
        let mut args = vec!["-i", every, "--id", name];
        args.extend_from_slice(more);
        Proc::client(port, name, &args)
    };
    let up = [client("up-1", "100", &[]), client("up-2", "100", &[])];
    let suspect = client("sus-1", "600", &[]);
    let mut down = client("down-1", "50", &[]);
    let mut left = client("left-1", "100", &["--count", "3"]);
    for name in ["up-1", "up-2", "down-1"] {
        server.wait_beat(name, 3);
    }
    server.wait_beat("sus-1", 2);
    left.expect_exit(0);
    suspect.signal("STOP");
    down.kill();
    server.wait_event("down-1 down", |v| {
        v["event"] == "transition" && v["client"] == "down-1" && v["to"] == "down"
    });
    server.wait_event("sus-1 suspect", |v| {
        v["event"] == "transition" && v["client"] == "sus-1" && v["to"] == "suspect"
    });
    let mut clients = up.into_iter().collect::<Vec<_>>();
    clients.extend([suspect, down, left]);
    let fleet = Fleet {
        _server: server,
        _clients: clients,
        addr,
    };
    wait_until("every state on the page", || {
        let status = status(&fleet.addr, "");
        ["down", "suspect", "never_seen", "left"]
            .iter()
            .all(|k| status["counts"][k] == 1)
            && status["counts"]["up"] == 2
    });
    fleet
}

/// `/status.json?QUERY`.
fn status(addr: &str, query: &str) -> Value {
    let (code, body) = http(addr, "GET", &format!("/status.json?{query}"));
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The clients of the timeline's lanes, in order.
fn lanes(svg: &str) -> Vec<String> {
    svg.split("<g class=\"lane\" data-client=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().to_owned())
        .collect()
}

/// The page and its JSON: problems first in their order, each row's fields, a lane per row
/// in the same order with what the client did (heartbeats, the killed one's down period and
/// its detection, the goodbye's left period), the filter and the paging.
#[test]
fn the_status_page_shows_every_state_problems_first() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = fleet(dir.path());
    let (code, html) = http(&fleet.addr, "GET", "/");
    assert_eq!(code, 200);
    assert!(
        html.contains("<title>heartbeat-server status</title>"),
        "{html}"
    );
    assert!(html.contains("status.json"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing from elsewhere"
    );

    let s = status(&fleet.addr, "");
    let rows = s["rows"].as_array().unwrap();
    let order: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["client"].as_str().unwrap(),
                r["category"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            ("down-1", "down"),
            ("sus-1", "suspect"),
            ("ghost", "never_seen"),
            ("left-1", "left"),
            ("up-1", "up"),
            ("up-2", "up"),
        ]
    );
    assert_eq!(
        (s["total"].as_u64(), s["pages"].as_u64()),
        (Some(6), Some(1))
    );
    assert_eq!(s["levels"]["down"], 1.0);
    assert_eq!(s["levels"]["detector"], "fixed grace=20x");
    let row = |name: &str| rows.iter().find(|r| r["client"] == name).unwrap();
    let up = row("up-1");
    assert_eq!(up["interval_ms"], 100.0);
    assert!(up["received"].as_u64().unwrap() >= 3, "{up}");
    assert!(up["last_heartbeat_age_s"].as_f64().unwrap() < 5.0, "{up}");
    assert!(up["delay_p99_ms"].as_f64().is_some(), "{up}");
    let sus = row("sus-1");
    let value = sus["value"].as_f64().unwrap();
    assert!((0.5..1.0).contains(&value), "{sus}");
    assert!(sus["state_for_s"].as_f64().unwrap() < 10.0, "{sus}");
    assert_eq!(row("ghost")["last_heartbeat_age_s"], Value::Null);
    assert_eq!(row("ghost")["expected"], true);

    let svg = s["timeline"].as_str().unwrap();
    assert_eq!(
        lanes(svg),
        ["down-1", "sus-1", "ghost", "left-1", "up-1", "up-2"]
    );
    let lane = |name: &str| {
        let from = svg.find(&format!("data-client=\"{name}\"")).unwrap();
        let to = svg[from..].find("</g>").unwrap();
        svg[from..from + to].to_owned()
    };
    assert!(lane("up-1").contains("class=\"counted\""));
    assert!(lane("up-1").contains("class=\"connect\""));
    assert!(lane("down-1").contains("class=\"down\""));
    assert!(lane("down-1").contains("class=\"disconnect\""));
    assert!(lane("sus-1").contains("class=\"suspect\""));
    assert!(lane("left-1").contains("class=\"left\""));
    assert!(!lane("ghost").contains("class=\"counted\""));

    let only = status(&fleet.addr, "q=up-");
    assert_eq!(only["matched"], 2);
    assert_eq!(only["counts"]["down"], 1, "the counts are of every client");
    assert_eq!(lanes(only["timeline"].as_str().unwrap()), ["up-1", "up-2"]);
    let beyond = status(&fleet.addr, "page=7");
    assert_eq!(beyond["page"], 0, "past the last page: the last page");
    let (code, _) = http(&fleet.addr, "POST", "/status.json");
    assert_eq!(code, 405);
}

/// Debian's `chromium`, or why not.
fn chromium() -> &'static str {
    let ok = Command::new("chromium")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "chromium is not installed (apt-get install chromium; .ci/run does)"
    );
    "chromium"
}

/// `chromium --headless` on `url` with `more` arguments and a profile of its own in `dir`;
/// its standard output.
fn headless(dir: &Path, url: &str, more: &[&str]) -> String {
    let profile = dir.join("profile");
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1280,1100",
            // Long enough for the page's first polls, in virtual time.
            "--virtual-time-budget=5000",
            &format!("--user-data-dir={}", profile.display()),
        ])
        .args(more)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The page in a real browser: after its script ran, the DOM holds the counts, a row per client
/// with its state, problems first, and the timeline's lanes; the screenshot is a picture,
/// not a blank page. With `HEARTBEAT_STATUS_PNG=PATH` the screenshot is also copied there
/// (how `docs/status-page.png` is made: `docs/status-page.sh`).
#[test]
#[ignore = "needs Debian's chromium; .ci/run installs it and runs this test by name"]
fn chromium_renders_the_status_page() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = fleet(dir.path());
    let url = format!("http://{}/", fleet.addr);
    let dom = headless(dir.path(), &url, &["--dump-dom"]);
    for (client, state) in [
        ("down-1", "down"),
        ("sus-1", "suspect"),
        ("ghost", "never_seen"),
        ("left-1", "left"),
        ("up-1", "up"),
        ("up-2", "up"),
    ] {
        let row = format!("<tr class=\"st-row st-{state}\" data-client=\"{client}\"");
        assert!(dom.contains(&row), "no row {row} in\n{dom}");
        let lane = format!("<g class=\"lane\" data-client=\"{client}\">");
        assert!(dom.contains(&lane), "no lane {lane} in\n{dom}");
    }
    let at = |needle: &str| dom.find(needle).unwrap();
    assert!(
        at("data-client=\"down-1\"") < at("data-client=\"up-1\""),
        "problems first"
    );
    assert!(
        dom.contains("class=\"st-count st-down\" data-state=\"down\"><b>1</b>"),
        "{dom}"
    );
    assert!(dom.contains("class=\"counted\""), "heartbeats drawn");
    assert!(
        dom.contains("<div class=\"st-error\" id=\"error\" style=\"display: none;\"></div>"),
        "the page could not update: {dom}"
    );

    let png = dir.path().join("page.png");
    headless(
        dir.path(),
        &url,
        &[&format!("--screenshot={}", png.display())],
    );
    let bytes = std::fs::read(&png).expect("the screenshot");
    let (width, height, colours) = png_colours(&bytes);
    assert_eq!((width, height), (1280, 1100));
    assert!(colours >= 8, "a blank page: {colours} colours");
    if let Some(keep) = std::env::var_os("HEARTBEAT_STATUS_PNG") {
        std::fs::copy(&png, keep).expect("copy the screenshot");
    }
}

/// A PNG's width, height and number of distinct colours (up to 1000), decoded by hand: 8-bit
/// RGB or RGBA, not interlaced (what chromium writes), its IDAT inflated with `miniz_oxide`.
fn png_colours(png: &[u8]) -> (u32, u32, usize) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let (mut at, mut idat) = (8, Vec::new());
    let (mut width, mut height, mut bpp) = (0, 0, 0);
    while at + 8 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        let kind = &png[at + 4..at + 8];
        let data = &png[at + 8..at + 8 + len];
        match kind {
            b"IHDR" => {
                width = u32::from_be_bytes(data[0..4].try_into().unwrap());
                height = u32::from_be_bytes(data[4..8].try_into().unwrap());
                assert_eq!((data[8], data[12]), (8, 0), "8-bit, not interlaced");
                bpp = match data[9] {
                    2 => 3,
                    6 => 4,
                    other => panic!("colour type {other}"),
                };
            }
            b"IDAT" => idat.extend_from_slice(data),
            _ => {}
        }
        at += 12 + len;
    }
    let raw = miniz_oxide::inflate::decompress_to_vec_zlib(&idat).expect("inflate IDAT");
    let stride = width as usize * bpp;
    let mut prev = vec![0u8; stride];
    let mut colours = std::collections::BTreeSet::new();
    for row in raw.chunks(stride + 1).take(height as usize) {
        let (filter, line) = (row[0], &row[1..]);
        let mut cur = vec![0u8; stride];
        for i in 0..stride {
            let a = if i >= bpp { cur[i - bpp] } else { 0 };
            let (b, c) = (prev[i], if i >= bpp { prev[i - bpp] } else { 0 });
            let predicted = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
                4 => {
                    let p = i16::from(a) + i16::from(b) - i16::from(c);
                    let (pa, pb, pc) = (
                        (p - i16::from(a)).abs(),
                        (p - i16::from(b)).abs(),
                        (p - i16::from(c)).abs(),
                    );
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                other => panic!("filter {other}"),
            };
            cur[i] = line[i].wrapping_add(predicted);
        }
        for px in cur.chunks(bpp) {
            if colours.len() < 1000 {
                colours.insert(px[..3].to_vec());
            }
        }
        prev = cur;
    }
    (width, height, colours.len())
}

//! `--threads N`: connections spread across server threads by the kernel (SO_REUSEPORT), one
//! core behind them: every heartbeat counted in one report, the identity rule across threads,
//! a client of thread 1 judged by the timers of thread 0 (its connection closed through the
//! mail), one /metrics and /clients, one state directory, hooks. Which thread a connection
//! landed on is read from `heartbeat_server_thread_connections{thread}`.

use std::io::Write as _;
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use serde_json::Value;

use crate::metrics::{http, metrics_addr, scrape, value};
use crate::util::{
    Proc, WAIT, arg, client_summary, read_again, read_to_close, real_now, unix_stamp,
};

/// Open connections per server thread, as `/metrics` shows them now.
fn per_thread(addr: &str, threads: usize) -> Vec<u64> {
    let s = scrape(addr);
    (0..threads)
        .map(|t| {
            let t = t.to_string();
            let v = value(&s, "heartbeat_server_thread_connections", &[("thread", &t)]);
            v.unwrap_or_else(|| panic!("no series for thread {t}")) as u64
        })
        .collect()
}

/// Waits until `/metrics` shows `total` open connections, then returns them per thread.
fn per_thread_when(addr: &str, threads: usize, total: u64) -> Vec<u64> {
    let deadline = real_now() + WAIT;
    loop {
        let now = per_thread(addr, threads);
        if now.iter().sum::<u64>() == total {
            return now;
        }
        assert!(real_now() < deadline, "never {total} open: {now:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// A raw v1 client: connects, says HELLO as `id` with a 10 ms interval and `session`.
fn hello(port: u16, id: &str, interval_ms: u32, session: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_nodelay(true).unwrap();
    writeln!(s, "HELLO 1 {id} {interval_ms} {session}").unwrap();
    s
}

/// Waits for the `connected` event of the connection `s` (by its address).
fn wait_connected(server: &mut Proc, s: &TcpStream) -> Value {
    let peer = s.local_addr().unwrap().port().to_string();
    server.wait_event("connected", |v| {
        v["event"] == "connected"
            && v["peer"]
                .as_str()
                .is_some_and(|p| p.ends_with(&format!(":{peer}")))
    })
}

#[test]
fn forty_clients_on_two_threads_are_all_counted_reported_and_restored() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, port) = Proc::json_server(&[
        "--threads",
        "2",
        "--metrics-addr",
        "127.0.0.1:0",
        "--state-dir",
        arg(dir.path()),
    ]);
    let addr = metrics_addr(&mut server);
    const CLIENTS: usize = 40;
    const BEATS: u64 = 20;
    let mut conns: Vec<TcpStream> = (0..CLIENTS)
        .map(|i| hello(port, &format!("c{i:02}"), 10, &format!("{:016x}", i + 1)))
        .collect();
    for seq in 1..=BEATS {
        for s in &mut conns {
            writeln!(s, "BEAT {seq} {}", unix_stamp(6)).unwrap();
        }
        // Slower than the 10 ms declared: never refused as too fast on a loaded machine.
        thread::sleep(Duration::from_millis(25));
    }
    // Every heartbeat acknowledged: the acks of each thread's connections reach them.
    for s in &mut conns {
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut got = String::new();
        let mut buf = [0u8; 4096];
        while got.matches("ACK ").count() < BEATS as usize {
            let n = read_again(s, &mut buf).unwrap();
            assert!(n > 0, "closed early: {got:?}");
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    // Both threads serve some of them, and one /metrics shows them all.
    let threads = per_thread_when(&addr, 2, CLIENTS as u64);
    assert!(threads.iter().all(|&n| n > 0), "{threads:?}");
    let live = scrape(&addr);
    assert_eq!(value(&live, "heartbeat_server_threads", &[]), Some(2.0));
    assert_eq!(value(&live, "heartbeat_connections_open", &[]), Some(40.0));
    let (status, body) = http(&addr, "GET", "/clients");
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["clients"].as_array().unwrap().len(), CLIENTS);

    for mut s in conns {
        s.write_all(b"BYE\n").unwrap();
        read_to_close(&mut s);
    }
    let clients = server.summary();
    assert_eq!(clients.len(), CLIENTS);
    for i in 0..CLIENTS {
        let c = client_summary(&clients, &format!("c{i:02}"));
        assert_eq!(c["received"].as_u64(), Some(BEATS), "{c:#}");
        assert_eq!(c["missed"].as_u64(), Some(0), "{c:#}");
    }

    // One state directory: a restart (on two threads again) restores every client.
    let (mut second, _) = Proc::json_server(&["--threads", "2", "--state-dir", arg(dir.path())]);
    second.wait_stderr("State: 40 client(s) restored");
    let clients = second.summary();
    assert_eq!(clients.len(), CLIENTS);
    for c in &clients {
        assert_eq!(c["received"].as_u64(), Some(BEATS), "{c:#}");
    }
}

#[test]
fn the_identity_rule_holds_across_threads() {
    let (mut server, port) =
        Proc::json_server(&["--threads", "2", "--metrics-addr", "127.0.0.1:0"]);
    let addr = metrics_addr(&mut server);
    // The same client (id and session) reconnecting: each newer connection replaces the
    // live one, wherever either landed, until a replacement crossed threads.
    let session = "00000000000000aa";
    let mut live = hello(port, "twin", 1000, session);
    wait_connected(&mut server, &live);
    let mut live_thread = thread_of(&addr);
    let mut crossed = 0;
    for _ in 0..40 {
        let newer = hello(port, "twin", 1000, session);
        wait_connected(&mut server, &newer);
        let newer_thread = thread_of(&addr);
        // The older is closed, by its own thread, whichever thread ran the rule.
        read_to_close(&mut live);
        if newer_thread != live_thread {
            crossed += 1;
        }
        live = newer;
        live_thread = newer_thread;
        if crossed >= 2 {
            break;
        }
    }
    assert!(crossed >= 2, "never landed on another thread");
    // The newest is the client: its heartbeat is acknowledged.
    writeln!(live, "BEAT 1 {}", unix_stamp(6)).unwrap();
    live.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 256];
    let mut got = String::new();
    while !got.contains("ACK 1") {
        let n = read_again(&mut live, &mut buf).unwrap();
        assert!(n > 0, "closed: {got:?}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let clients = server.summary();
    let c = client_summary(&clients, "twin");
    assert_eq!(c["received"].as_u64(), Some(1), "{c:#}");
    assert_eq!(c["restarts"].as_u64(), Some(0), "{c:#}");
}

/// The thread serving the one open connection (called after its `connected` event).
fn thread_of(addr: &str) -> usize {
    // An exposition is served again for 100 ms whatever changed: wait for a fresh one.
    thread::sleep(Duration::from_millis(150));
    let counts = per_thread_when(addr, 2, 1);
    counts.iter().position(|&n| n == 1).unwrap()
}

#[test]
fn a_silent_client_of_thread_1_is_judged_and_closed_from_thread_0_and_its_hook_runs() {
    let dir = tempfile::tempdir().unwrap();
    let hooked = dir.path().join("hooked");
    let hook = format!(
        "echo \"$HEARTBEAT_CLIENT $HEARTBEAT_TO\" >> {}",
        hooked.display()
    );
    let (mut server, port) = Proc::json_server(&[
        "--threads",
        "2",
        "--metrics-addr",
        "127.0.0.1:0",
        "--max-idle",
        "2s",
        "--detector",
        "fixed",
        "--on-transition",
        &hook,
    ]);
    let addr = metrics_addr(&mut server);
    // Connect until one lands on thread 1 (those on thread 0 say goodbye).
    let mut on_one = None;
    for i in 0..40 {
        let id = format!("quiet{i}");
        let mut s = hello(port, &id, 100, "00000000000000bb");
        wait_connected(&mut server, &s);
        if thread_of(&addr) == 1 {
            on_one = Some((s, id));
            break;
        }
        s.write_all(b"BYE\n").unwrap();
        read_to_close(&mut s);
        per_thread_when(&addr, 2, 0);
    }
    let (mut s, id) = on_one.expect("no connection landed on thread 1");
    for seq in 1..=3 {
        writeln!(s, "BEAT {seq} {}", unix_stamp(6)).unwrap();
        thread::sleep(Duration::from_millis(100));
    }
    server.wait_beat(&id, 3);
    // Then silence, the socket left open (a hung process): only thread 0's timers can tell.
    server.wait_event("down", |v| {
        v["event"] == "transition" && v["client"] == id.as_str() && v["to"] == "down"
    });
    // The idle timeout, on thread 0, closes the connection that thread 1 owns.
    read_to_close(&mut s);
    server.wait_event("disconnected", |v| {
        v["event"] == "disconnected" && v["client"] == id.as_str()
    });
    assert_eq!(per_thread_when(&addr, 2, 0), [0, 0]);
    let deadline = real_now() + WAIT;
    loop {
        let text = std::fs::read_to_string(&hooked).unwrap_or_default();
        if text.lines().any(|l| l == format!("{id} down")) {
            break;
        }
        assert!(
            real_now() < deadline,
            "no hook for the down transition: {text:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    server.summary();
}

#[test]
fn with_tls_a_reload_reaches_the_listener_of_every_thread() {
    let p = crate::tls::pki();
    let d = p.dir.path();
    let mut args = vec!["--threads", "2", "--metrics-addr", "127.0.0.1:0"];
    args.extend_from_slice(&p.server_args());
    let (mut server, port) = Proc::json_server(&args);
    let addr = metrics_addr(&mut server);
    // A new certificate for the same name, from the other CA, in the same files.
    crate::tls::openssl(
        d,
        &format!(
            "{} -keyout next.key -out next.csr -subj /CN=localhost",
            crate::tls::NEW_KEY
        ),
    );
    crate::tls::openssl(
        d,
        "x509 -req -in next.csr -CA other-ca.pem -CAkey other-ca.key -CAcreateserial \
         -out next.pem -days 2 -extfile server.ext",
    );
    std::fs::rename(d.join("next.pem"), &p.cert).unwrap();
    std::fs::rename(d.join("next.key"), &p.key).unwrap();
    std::fs::set_permissions(&p.key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    server.signal("HUP");
    server.wait_stderr("Reloaded --tls-cert");
    // Clients that trust only the new CA, until both threads serve some: each handshake
    // used the reloaded certificate, whichever listener took it.
    const CLIENTS: usize = 12;
    let names: Vec<String> = (0..CLIENTS).map(|i| format!("tls{i}")).collect();
    let _clients: Vec<Proc> = names
        .iter()
        .map(|id| {
            let args = crate::tls::tls_client(&p.other_ca, &["-i", "100", "--id", id]);
            Proc::client(port, id, &args)
        })
        .collect();
    for id in &names {
        server.wait_beat(id, 2);
    }
    let threads = per_thread_when(&addr, 2, CLIENTS as u64);
    assert!(threads.iter().all(|&n| n > 0), "{threads:?}");
}

#[test]
fn by_default_one_thread_serves_every_connection() {
    let (mut server, port) = Proc::json_server(&["--metrics-addr", "127.0.0.1:0"]);
    let addr = metrics_addr(&mut server);
    let s = hello(port, "solo", 1000, "00000000000000cc");
    wait_connected(&mut server, &s);
    assert_eq!(per_thread_when(&addr, 1, 1), [1]);
    let live = scrape(&addr);
    assert_eq!(value(&live, "heartbeat_server_threads", &[]), Some(1.0));
    assert_eq!(
        value(
            &live,
            "heartbeat_server_thread_connections",
            &[("thread", "1")]
        ),
        None
    );
    drop(s);
    server.summary();
}

//! `heartbeat-sim check` writes insta's snapshot format: checked against the files insta itself
//! wrote for this suite.

use heartbeat_sim::check::Snapshot;

#[test]
fn check_reads_and_writes_snapshots_as_insta_does() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sim/snapshots");
    let mut read = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "snap") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let snap = Snapshot::parse(&text).unwrap();
        assert!(
            snap.get("source")
                .is_some_and(|s| s.starts_with("tests/tests/sim/"))
        );
        assert!(snap.get("expression").is_some(), "{}", path.display());
        assert!(!snap.contents.is_empty());
        // Written back, byte for byte what insta wrote.
        assert_eq!(snap.render(), text, "{}", path.display());
        read += 1;
    }
    assert!(read >= 9, "only {read} snapshots read");
}

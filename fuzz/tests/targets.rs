//! The fuzz targets in the normal test suite: the committed corpus replayed (every input the
//! fuzzer kept, and every crash it found, now fixed), and a proptest budget of random inputs.
//! `PROPTEST_CASES=2000000 cargo test -p heartbeat-fuzz --release` runs a large budget.

use std::path::Path;

use proptest::prelude::*;

/// Runs `target` on every file in `fuzz/corpus/<name>`; returns how many.
fn replay(name: &str, target: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(name);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in &files {
        let data = std::fs::read(f).unwrap();
        let result = std::panic::catch_unwind(|| target(&data));
        assert!(result.is_ok(), "{name} fails on {}", f.display());
    }
    files.len()
}

#[test]
fn the_corpus_replays_clean() {
    for (name, target) in heartbeat_fuzz::TARGETS {
        let n = replay(name, target);
        assert!(n > 0, "no corpus for {name}");
    }
}

proptest! {
    // The default configuration: 256 cases, or PROPTEST_CASES.
    #[test]
    fn v1_decoder_on_random_bytes(data in prop::collection::vec(any::<u8>(), 0..600)) {
        heartbeat_fuzz::v1_decoder(&data);
    }

    #[test]
    fn legacy_decoder_on_random_bytes(data in prop::collection::vec(any::<u8>(), 0..600)) {
        heartbeat_fuzz::legacy_decoder(&data);
    }

    #[test]
    fn server_machine_on_random_programs(data in prop::collection::vec(any::<u8>(), 0..2000)) {
        heartbeat_fuzz::server_machine(&data);
    }
}

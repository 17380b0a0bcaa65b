//! AFL++ target: `heartbeat_fuzz::legacy_decoder` (see fuzz/README.md).

fn main() {
    afl::fuzz!(|data: &[u8]| heartbeat_fuzz::legacy_decoder(data));
}

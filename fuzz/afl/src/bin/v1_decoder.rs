//! AFL++ target: `heartbeat_fuzz::v1_decoder` (see fuzz/README.md).

fn main() {
    afl::fuzz!(|data: &[u8]| heartbeat_fuzz::v1_decoder(data));
}

//! AFL++ target: `heartbeat_fuzz::server_machine` (see fuzz/README.md).

fn main() {
    afl::fuzz!(|data: &[u8]| heartbeat_fuzz::server_machine(data));
}

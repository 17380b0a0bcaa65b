//! Seeds: one run seed mixed into an independent seed per use, so adding a client or a process
//! moves no other draw. Every stream a simulation draws from is named here, once; the turmoil
//! world and the QoS engine take a client process's seeds from [`client_seeds`], so both give a
//! client the same session nonce and backoff jitter for the same run seed.

/// A client's session nonce, per process.
const SESSION: u64 = 1;
/// A client's backoff and jitter RNG, per process.
const CLIENT_RNG: u64 = 1001;
/// A client link's latency RNG, client to server.
const LINK_UP: u64 = 3001;
/// A client link's latency RNG, server to client.
const LINK_DOWN: u64 = 4001;
/// A client's fault schedule (the QoS lab's generated scenarios).
const SCHEDULE: u64 = 5001;

/// Mixes the run seed with a stream and an index into an independent seed (splitmix64).
pub fn derive_seed(seed: u64, stream: u64, index: u64) -> u64 {
    let mut z = seed
        .wrapping_add(stream.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .wrapping_add(index.wrapping_mul(0xbf58_476d_1ce4_e5b9));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seeds of one client process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientSeeds {
    /// Its session nonce (`ClientConfig::session`).
    pub session: u64,
    /// Its backoff jitter RNG (`ClientConfig::rng_seed`).
    pub rng: u64,
}

/// The seeds of process `process` (0 for the first, 1 after a restart, ...) of client `client`
/// in the run seeded with `seed`.
pub fn client_seeds(seed: u64, client: usize, process: u64) -> ClientSeeds {
    let i = client as u64;
    ClientSeeds {
        session: derive_seed(seed, SESSION + i, process),
        rng: derive_seed(seed, CLIENT_RNG + i, process),
    }
}

/// The latency RNG seeds of client `client`'s link, client to server and back.
pub fn link_seeds(seed: u64, client: usize) -> (u64, u64) {
    let i = client as u64;
    (
        derive_seed(seed, LINK_UP + i, 0),
        derive_seed(seed, LINK_DOWN + i, 0),
    )
}

/// The seed of client `client`'s fault schedule.
pub fn schedule_seed(seed: u64, client: usize) -> u64 {
    derive_seed(seed, SCHEDULE + client as u64, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The streams are the numbers the simulator always used: a seed replays as before.
    #[test]
    fn the_streams_are_pinned() {
        assert_eq!(
            client_seeds(7, 2, 1),
            ClientSeeds {
                session: derive_seed(7, 3, 1),
                rng: derive_seed(7, 1003, 1),
            }
        );
        assert_eq!(
            link_seeds(7, 2),
            (derive_seed(7, 3003, 0), derive_seed(7, 4003, 0))
        );
        assert_eq!(schedule_seed(7, 2), derive_seed(7, 5003, 0));
        assert_eq!(derive_seed(0, 0, 0), 0);
    }
}

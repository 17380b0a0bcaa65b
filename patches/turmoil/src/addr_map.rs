//! A map keyed by addresses with a cheap, fixed hasher.

use std::hash::{BuildHasherDefault, Hasher};

use indexmap::IndexMap;

/// An [`IndexMap`] with [`AddrHasher`], for the maps the simulation looks up on every step
/// (hosts, links, runtimes, deliverable messages).
///
/// Their keys are addresses the simulation assigns, not input an adversary chooses, so the
/// default SipHash with a random key buys nothing; it was about a fifth of a step's
/// instructions with two hosts. An `IndexMap` iterates in insertion order whatever its
/// hasher, so the simulation is the same with either.
pub(crate) type AddrMap<K, V> = IndexMap<K, V, BuildHasherDefault<AddrHasher>>;

/// The multiply-rotate hash of rustc's `FxHasher`: a few instructions per word.
#[derive(Default, Clone, Copy)]
pub(crate) struct AddrHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl AddrHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for AddrHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        for &byte in chunks.remainder() {
            self.add(u64::from(byte));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

//! The CPU yardstick: a fixed integer workload whose rate defines node speed.
//!
//! One *round* is a xorshift step folded into a multiply-add chain: every round depends on the
//! previous one, so the loop measures the latency of simple integer operations on one core and
//! neither vectorises nor runs in parallel. The standard CPU (speed 10000) runs
//! [`STD_ROUNDS_PER_SEC`] rounds per second; a core twice as fast has speed 20000. The timing
//! is done by the caller (the node service, `tune`), so this module stays pure.

use std::hint::black_box;

use crate::node::STD_SPEED;

/// Rounds per second of the standard CPU (speed 10000).
pub const STD_ROUNDS_PER_SEC: u64 = 500_000_000;

/// Runs `rounds` rounds of the yardstick and returns a value that depends on all of them.
pub fn run(rounds: u64) -> u64 {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut acc: u64 = 1;
    for i in 0..black_box(rounds) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        acc = acc.wrapping_mul(x | 1).wrapping_add(i);
    }
    black_box(acc ^ x)
}

/// The speed of a CPU that ran `rounds` rounds in `nanos` nanoseconds.
pub fn speed_from(rounds: u64, nanos: u64) -> u32 {
    let nanos = u128::from(nanos.max(1));
    let s = u128::from(rounds) * 1_000_000_000 * u128::from(STD_SPEED)
        / (u128::from(STD_ROUNDS_PER_SEC) * nanos);
    u32::try_from(s).unwrap_or(u32::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_rate_is_speed_10000() {
        assert_eq!(speed_from(STD_ROUNDS_PER_SEC, 1_000_000_000), 10_000);
        assert_eq!(speed_from(STD_ROUNDS_PER_SEC, 500_000_000), 20_000);
        assert_eq!(speed_from(0, 0), 1);
    }

    #[test]
    fn the_workload_is_deterministic() {
        assert_eq!(run(1000), run(1000));
        assert_ne!(run(1000), run(1001));
    }
}

//! Retry backoff: exponential, capped, and jittered by a hash so every replica computes the same
//! delay, in integers only.

use serde::{Deserialize, Serialize};

use crate::state_machine::coordination::TaskId;

/// Retry backoff after a failed attempt (tasks.proto, `Backoff`). The wire's `multiplier` and
/// `jitter` are doubles; validation rounds them once to whole thousandths (`grpc/validation.rs`),
/// so the state, the log and apply hold integers only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    pub initial_ms: u64,
    pub maximum_ms: u64,
    /// Growth per attempt in thousandths: 1000 (1.0) ..= 10000 (10.0). Below 1000 counts as 1000.
    pub multiplier_permille: u32,
    /// 0 ..= 1000: the delay is reduced by up to this many thousandths of itself. Above 1000
    /// counts as 1000.
    pub jitter_permille: u32,
}

/// Fractional bits of the fixed-point delay `delay_ms` grows in: a delay below the maximum is
/// carried to 2^-64 ms, so rounding it down at each step costs far less than a millisecond.
const FRACTION_BITS: u32 = 64;

impl Backoff {
    /// The delay before retry number `attempt` (1 for the first retry):
    /// `min(maximum, initial * (multiplier/1000)^(attempt-1))`, reduced by
    /// `jitter/1000 * X / 2^53` of itself, where `X` in [0, 2^53) is a hash of (task id,
    /// attempt), so every replica computes the same time; rounded down to a millisecond.
    ///
    /// Integer arithmetic only. The growth runs in fixed point (FRACTION_BITS fractional bits,
    /// rounded down at each step, at most 1024 steps: less than 2^-32 ms lost in all for values
    /// the wire allows) and the jitter is applied exactly, so the result is the exact real value
    /// rounded down, unless that value lies within 2^-32 ms above a whole millisecond.
    ///
    /// Before, this was double-precision floating point on the same formula. For the thousandths
    /// the wire now yields, the two agree except where the exact delay is a whole number of
    /// milliseconds that the doubles' rounding missed from below (1.501 is not a binary fraction,
    /// so 5000 * 1.501 came out as 7504.999...): there the old code answered 1 ms less.
    /// `grpc/validation.rs` tests this against the old code for every multiplier the wire allows.
    pub fn delay_ms(&self, task_id: TaskId, attempt: u32) -> u64 {
        let exponent = attempt.saturating_sub(1).min(1024);
        let multiplier = u128::from(self.multiplier_permille.max(1000));
        let cap = u128::from(self.maximum_ms) << FRACTION_BITS;
        let mut delay = u128::from(self.initial_ms) << FRACTION_BITS;
        if delay >= cap {
            delay = cap;
        } else if multiplier > 1000 {
            for _ in 0..exponent {
                // Below the cap (< 2^128 in all, < 2^86 for what the wire allows), so the
                // product only overflows for maxima far beyond the wire's; those cap.
                delay = match delay.checked_mul(multiplier) {
                    Some(grown) => (grown / 1000).min(cap),
                    None => cap,
                };
                if delay == cap {
                    break;
                }
            }
        }
        apply_jitter(
            delay,
            self.jitter_permille.min(1000),
            jitter_fraction(task_id, attempt),
        )
    }
}

/// `floor(delay * (1 - jitter/1000 * fraction/2^53))` in milliseconds, exactly, for a
/// fixed-point `delay` (FRACTION_BITS fractional bits), `jitter` <= 1000 and `fraction` < 2^53.
fn apply_jitter(delay: u128, jitter: u32, fraction: u64) -> u64 {
    // delay * keep / (1000 * 2^53) / 2^64, with keep = 1000 * 2^53 - jitter * fraction < 2^63:
    // the 192-bit product is split at bit 64 of `delay`, and floors nest, so no bit is lost.
    let whole = 1000u128 << 53;
    let keep = whole - u128::from(jitter) * u128::from(fraction);
    let high = delay >> FRACTION_BITS;
    let low = delay & u128::from(u64::MAX);
    let shifted = high * keep + ((low * keep) >> FRACTION_BITS);
    let millis = (shifted >> 53) / 1000;
    // At most `delay`'s whole part, a u64 maximum: the conversion cannot fail.
    u64::try_from(millis).unwrap_or(u64::MAX)
}

/// A deterministic fraction in [0, 1), in units of 2^-53, from (task id, attempt): splitmix64,
/// top 53 bits.
pub fn jitter_fraction(task_id: TaskId, attempt: u32) -> u64 {
    let mut x = task_id ^ (u64::from(attempt)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    x >> 11
}

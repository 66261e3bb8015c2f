//! A small seeded random number generator (xoshiro256**, seeded through SplitMix64), so that
//! training is reproducible for a given seed without `std`.

use alloc::vec::Vec;

/// A deterministic pseudo-random generator: the same seed gives the same stream on every
/// platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator seeded from `seed` (any value, 0 included).
    pub fn new(seed: u64) -> Self {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        Rng { s: [next(), next(), next(), next()] }
    }

    /// The full internal state, to checkpoint the generator.
    pub fn state(&self) -> [u64; 4] {
        self.s
    }

    /// A generator continuing from a state saved with [`state`](Self::state); an all-zero
    /// state (which xoshiro cannot leave) is replaced by the state of seed 0.
    pub fn from_state(s: [u64; 4]) -> Self {
        if s == [0; 4] {
            Rng::new(0)
        } else {
            Rng { s }
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `0..n` (`n > 0`), without modulo bias.
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "Rng::below(0)");
        let n = n as u64;
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let r = self.next_u64();
            if r < zone {
                return (r % n) as usize;
            }
        }
    }

    /// A standard normal sample (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        libm::sqrt(-2.0 * libm::log(u1)) * libm::cos(core::f64::consts::TAU * u2)
    }

    /// A vector drawn uniformly from the unit sphere in `dim` dimensions.
    pub fn unit_vector(&mut self, dim: usize) -> Vec<f64> {
        loop {
            let v: Vec<f64> = (0..dim).map(|_| self.normal()).collect();
            let n = libm::sqrt(v.iter().map(|x| x * x).sum::<f64>());
            if n > 1e-12 {
                return v.into_iter().map(|x| x / n).collect();
            }
        }
    }

    /// Shuffles `items` in place (Fisher–Yates).
    pub fn shuffle<X>(&mut self, items: &mut [X]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

/// A 32-bit integer finaliser (xor-shift / multiply rounds), the mixing step of
/// [`counter_bits`].
fn mix32(v: u32) -> u32 {
    let mut x = v;
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// 32 random bits for value `index` of dropout site `site` at training step `step` of a run
/// seeded with `seed`: a counter-based generator (a hash of the four numbers), so any value can
/// be drawn independently of the others, in any order. The GPU trainer's `dropout` kernel
/// computes the same bits, so CPU and GPU can draw identical masks.
pub fn counter_bits(seed: u64, step: u64, site: u32, index: u32) -> u32 {
    let mut h = mix32(seed as u32 ^ 0x9e37_79b9);
    h = mix32(h ^ (seed >> 32) as u32);
    h = mix32(h ^ step as u32);
    h = mix32(h ^ (step >> 32) as u32);
    h = mix32(h ^ site);
    mix32(h ^ index)
}

/// The [`counter_bits`] threshold of dropout rate `rate` in `[0, 1)`: a value is dropped when
/// its bits are below `round(rate·2³²)`.
pub fn dropout_threshold(rate: f64) -> u32 {
    libm::round(rate * 4_294_967_296.0).clamp(0.0, u32::MAX as f64) as u32
}

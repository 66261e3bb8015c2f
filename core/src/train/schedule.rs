//! Learning-rate schedules: the learning rate of each step of a run of known length.
//!
//! A schedule is a pure function of `(step, total)`, so a run resumed from a checkpoint at step
//! `s` continues with exactly the rates the uninterrupted run would have used.

/// How the learning rate changes over a run of `total` steps, from the base rate at step 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LrSchedule {
    /// The base rate at every step.
    Constant,
    /// Straight down from the base rate at step 0 to `min` at the last step.
    Linear {
        /// The rate of the last step.
        min: f64,
    },
    /// Half a cosine from the base rate at step 0 to `min` at the last step:
    /// `min + (base − min)·(1 + cos(π·step/(total − 1)))/2`.
    Cosine {
        /// The rate of the last step.
        min: f64,
    },
}

impl LrSchedule {
    /// The learning rate of `step` (0-based) of a run of `total` steps that starts at `base`.
    ///
    /// Contract: equals `base` at step 0 and for [`Constant`](Self::Constant); equals `min` at
    /// step `total − 1` for the decaying schedules (a one-step run uses `base`); never leaves
    /// the interval between `base` and `min`; steps at or past the end use the last step's rate.
    pub fn at(&self, base: f64, step: u64, total: u64) -> f64 {
        let (min, shape): (f64, fn(f64) -> f64) = match *self {
            LrSchedule::Constant => return base,
            LrSchedule::Linear { min } => (min, |t| 1.0 - t),
            LrSchedule::Cosine { min } => (min, |t| 0.5 * (1.0 + libm::cos(core::f64::consts::PI * t))),
        };
        if total <= 1 {
            return base;
        }
        let t = step.min(total - 1) as f64 / (total - 1) as f64;
        min + (base - min) * shape(t)
    }
}

#[cfg(test)]
mod tests {
    use super::LrSchedule;

    #[test]
    fn ends_and_midpoints() {
        let cos = LrSchedule::Cosine { min: 1e-5 };
        assert_eq!(cos.at(1e-4, 0, 101), 1e-4);
        assert!((cos.at(1e-4, 100, 101) - 1e-5).abs() < 1e-18);
        assert!((cos.at(1e-4, 50, 101) - 5.5e-5).abs() < 1e-15);
        assert!(
            (cos.at(1e-4, 25, 101) - (1e-5 + 9e-5 * (0.5 + 0.5 * (0.25 * std::f64::consts::PI).cos()))).abs() < 1e-15
        );
        let lin = LrSchedule::Linear { min: 0.0 };
        assert!((lin.at(2.0, 1, 5) - 1.5).abs() < 1e-15);
        assert_eq!(lin.at(2.0, 4, 5), 0.0);
        assert_eq!(lin.at(2.0, 9, 5), 0.0, "past the end: the last rate");
        assert_eq!(LrSchedule::Constant.at(3.0, 7, 10), 3.0);
        assert_eq!(cos.at(1e-4, 0, 1), 1e-4, "a one-step run uses the base rate");
    }

    #[test]
    fn monotone_between_base_and_min() {
        for s in [LrSchedule::Cosine { min: 0.1 }, LrSchedule::Linear { min: 0.1 }] {
            let rates: Vec<f64> = (0..57).map(|i| s.at(1.0, i, 57)).collect();
            assert!(rates.windows(2).all(|w| w[1] <= w[0]), "{s:?} increases: {rates:?}");
            assert!(rates.iter().all(|&r| (0.1..=1.0).contains(&r)));
        }
    }
}

//! Closed-form ages of the gossip of [`crate::gossip`], after Amar, Barak, Drezner & Okun,
//! "Randomized gossip algorithms for maintaining a distributed bulletin board with guaranteed age
//! properties" (Concurrency & Computation 21(15), 2009), in the form gossimon's `gossiplib.c`
//! evaluates them.
//!
//! Time is in gossip steps (intervals). With N nodes and a window of W entries per message:
//!
//! * `T = ((N−1)/N)·ln(W(N−1)/(N−W))` is the age below which, in expectation, W entries lie;
//! * `A_w = T − ((N−1)/W)·(ln(N−1+e^{NT/(N−1)}) − ln N)` is the mean age inside that window;
//! * `A_v = 1/(1−(1−1/(N−1))^W) + A_w` is the mean age of a whole vector;
//! * `M = (ln N + γ)/(−W·ln(1−1/(N−1)))` is the expected maximal age in a vector.
//!
//! The approximations need W < N and are poor for N ≤ 8; small clusters should send the whole
//! vector and measure.

/// The Euler–Mascheroni constant, as gossimon rounds it.
const GAMMA: f64 = 0.577;

/// The expected ages for one (N, W), in gossip steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ages {
    /// The window age horizon T.
    pub horizon: f64,
    /// Mean age of the entries younger than the horizon.
    pub window_age: f64,
    /// Mean age of all entries of a vector.
    pub avg_age: f64,
    /// Expected maximal age in a vector.
    pub max_age: f64,
}

/// Evaluates the closed forms for `nodes` nodes and a window of `window` entries. Returns NaNs
/// where they do not apply (W ≥ N or N < 3).
pub fn closed_form(nodes: usize, window: usize) -> Ages {
    let n = nodes as f64;
    let w = window as f64;
    if nodes < 3 || window >= nodes || window == 0 {
        return Ages {
            horizon: f64::NAN,
            window_age: f64::NAN,
            avg_age: f64::NAN,
            max_age: f64::NAN,
        };
    }
    let t = ((n - 1.0) / n) * (w * (n - 1.0) / (n - w)).ln();
    let e = (n * t / (n - 1.0)).exp();
    // X_T, the expected number of entries younger than T; equal to W by the choice of T.
    let x = n * e / (n - 1.0 + e);
    let window_age = t - ((n - 1.0) / x) * ((n - 1.0 + e).ln() - n.ln());
    let p = 1.0 - 1.0 / (n - 1.0);
    let avg_age = 1.0 / (1.0 - p.powf(x)) + window_age;
    let max_age = (n.ln() + GAMMA) / (-x * p.ln());
    Ages {
        horizon: t,
        window_age,
        avg_age,
        max_age,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 0.01 * b.abs().max(1.0)
    }

    #[test]
    fn matches_the_published_table() {
        // balancing-anchors §2.2, computed from the same formulas.
        for (n, w, av, m) in [
            (16, 8, 3.72, 6.1),
            (64, 8, 9.56, 37.0),
            (64, 16, 6.35, 18.5),
            (64, 32, 5.24, 9.3),
            (256, 16, 18.3, 97.4),
            (1024, 8, 130.0, 960.0),
            (4096, 32, 131.0, 1138.0),
        ] {
            let a = closed_form(n, w);
            assert!(
                close(a.avg_age, av),
                "N={n} W={w}: A_v {} vs {av}",
                a.avg_age
            );
            assert!(close(a.max_age, m), "N={n} W={w}: M {} vs {m}", a.max_age);
        }
    }

    #[test]
    fn undefined_outside_its_domain() {
        assert!(closed_form(4, 16).avg_age.is_nan());
        assert!(closed_form(2, 1).avg_age.is_nan());
    }
}

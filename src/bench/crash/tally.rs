//! What a shape of the crash loop counts, and the seeded randomness that picks its kill
//! moments.

use std::fmt;
use std::time::Duration;

/// The counts of one shape: each effect is keyed by its identity in the shape (a request
/// path, a numbered line), so an effect received twice is a repeat, whatever its body.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// SIGKILLs of a host.
    pub kills: usize,
    /// Effects a host acknowledged (reported done to its caller).
    pub acknowledged: usize,
    /// Acknowledged effects the world never received.
    pub lost: usize,
    /// Effects the world received more than once.
    pub repeated: usize,
    /// Effects left waiting on a human decision (an `uncertain` intent, a divergence).
    pub pending: usize,
    /// Calls a replay stopped as non-deterministic (their caller got `NonDeterminism`).
    pub nondeterministic: usize,
    /// Checks where a budget was found exceeded.
    pub overruns: usize,
    /// Other broken promises (an audit chain that does not verify, a stolen invocation).
    pub broken: usize,
}

impl Tally {
    pub fn add(&mut self, other: &Tally) {
        self.kills += other.kills;
        self.acknowledged += other.acknowledged;
        self.lost += other.lost;
        self.repeated += other.repeated;
        self.pending += other.pending;
        self.nondeterministic += other.nondeterministic;
        self.overruns += other.overruns;
        self.broken += other.broken;
    }

    pub fn failed(&self) -> bool {
        self.lost + self.repeated + self.overruns + self.broken > 0
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kills {:>4} | acknowledged {:>4} | lost {} | repeated {} | pending human {:>3} | NonDeterminism {:>3} | budget overruns {} | broken {}",
            self.kills,
            self.acknowledged,
            self.lost,
            self.repeated,
            self.pending,
            self.nondeterministic,
            self.overruns,
            self.broken
        )
    }
}

/// A small xorshift generator: kill moments differ between runs, and the seed printed at
/// the start fixes the random choices (not the timing of the hosts they race).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A duration in `[min, max)`.
    pub fn between(&mut self, min: Duration, max: Duration) -> Duration {
        let span = (max.as_micros() - min.as_micros()).max(1) as u64;
        min + Duration::from_micros(self.next() % span)
    }

    /// True one time in `n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n.max(1))
    }
}

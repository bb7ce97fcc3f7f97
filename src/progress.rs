//! How long runs report progress, without tying the library to a terminal: the library calls a [`Progress`];
//! the `kcirc` binary implements it with an `indicatif` bar on stderr, library users with whatever they like.

/// Receives progress and user-facing lines from a long run. Every method does nothing by default.
pub trait Progress {
    /// A phase of `total` steps begins (edges tested, integration steps); the count restarts at 0.
    fn start(&self, _total: u64) {}
    /// `n` more steps of the current phase are done.
    fn advance(&self, _n: u64) {}
    /// What the run is doing now (the receiver under test, the phase).
    fn message(&self, _msg: &str) {}
    /// A line about the run for the user (the split, what was kept): informative, may be hidden.
    fn info(&self, _line: &str) {}
    /// A line the user must see even when hiding information: it changes how the results read (facts
    /// skipped, an evaluation not run, a metric that cannot separate a circuit from chance).
    fn warn(&self, _line: &str) {}
}

/// Reports nothing.
pub struct Silent;
impl Progress for Silent {}

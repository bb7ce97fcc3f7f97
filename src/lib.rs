//! kcirc: find the knowledge circuit of a transformer language model and prove it with numbers.
//!
//! The library holds everything; the `kcirc` binary only parses flags and prints.
//! - [`model`]: one canonical transformer, read and written through named hook points ([`model::hooks`]), and
//!   the family adapters that fill it.
//! - [`graph`]: the computation graph (senders, receivers, edges), its sender blocks and edge selection.
//! - [`intervene`]: edge interventions (removed edges carry ablated values) as hook clients.
//! - [`discover`]: discovery methods behind one trait; [`eval`]: held-out scoring.
//! - [`pipeline`]: facts → split → task → discovery → evaluation → circuit file, what every command runs.
//! - [`batch`]: many relations into one folder, in shards across machines, resumed, merged.
pub mod analysis;
pub mod batch;
pub mod circuit;
pub mod curve;
pub mod data;
pub mod discover;
pub mod edit;
pub mod erase;
pub mod error;
pub mod eval;
pub mod gate;
pub mod gradient;
pub mod graph;
pub mod intervene;
pub mod metric;
pub mod model;
pub mod parallel;
pub mod pipeline;
pub mod predict;
pub mod progress;
pub mod rank;
pub mod report;
pub mod scores;
pub mod split;
pub mod tokenizer;

pub use error::{Error, Result};

/// This kcirc's version, recorded in every circuit file.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

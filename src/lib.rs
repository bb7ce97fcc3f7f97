//! kcirc: find the knowledge circuit of a transformer language model and prove it with numbers.
//!
//! The library holds everything; the `kcirc` binary only parses flags and prints.
//! - [`model`]: one canonical transformer with hookable receivers, and the family adapters that fill it.
//! - [`tokenizer`]: text ↔ token ids.
pub mod circuit;
pub mod data;
pub mod discover;
pub mod error;
pub mod eval;
pub mod graph;
pub mod intervene;
pub mod metric;
pub mod model;
pub mod parallel;
pub mod predict;
pub mod scores;
pub mod tokenizer;

pub use error::{Error, Result};

//! Typed errors of the library. The binary maps every one of them to exit code 2 (bad input).
use std::path::PathBuf;

/// Everything that can go wrong inside kcirc's library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model name is neither a local path nor reachable on the hub.
    #[error("cannot resolve model `{name}`: {reason}")]
    ModelNotFound { name: String, reason: String },
    /// A checkpoint file exists but cannot be read (truncated, corrupt, missing tensor).
    #[error("bad checkpoint {path}: {reason}")]
    BadCheckpoint { path: PathBuf, reason: String },
    /// `config.json` describes an architecture kcirc has no adapter for.
    #[error("unsupported architecture `{0}` (supported: GPT-2 family, Llama family)")]
    UnsupportedArchitecture(String),
    /// A configuration value is missing or inconsistent.
    #[error("bad model configuration: {0}")]
    BadConfig(String),
    /// Tokenizer could not be built or failed on a text.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The user's input data (triples, circuit files, flags) is malformed.
    #[error("{0}")]
    Input(String),
    /// I/O on a named path.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A tensor operation failed (shape mismatch and the like: a bug or an inconsistent checkpoint).
    #[error("tensor: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn input(msg: impl Into<String>) -> Self {
        Error::Input(msg.into())
    }
    pub fn config(msg: impl Into<String>) -> Self {
        Error::BadConfig(msg.into())
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

//! Typed errors of the library. The binary maps bad input (everything but [`Error::is_bug`]) to exit code 2 and
//! internal errors to exit code 70, saying they are a bug.
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
    #[error("unsupported architecture `{0}` (supported: GPT-2 family, Llama family, Qwen2 family)")]
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
    /// I/O on a named path. (The OS error is part of the message, not a separate cause, so that it is said once.)
    #[error("{}: {cause}", path.display())]
    Io { path: PathBuf, cause: std::io::Error },
    /// A tensor operation failed (shape mismatch and the like): checkpoints are checked when they load, so this
    /// is a bug.
    #[error("tensor: {0}")]
    Candle(#[from] candle_core::Error),
    /// A broken invariant inside kcirc (a caller asked for something the library promised never to happen).
    #[error("{0}")]
    Bug(String),
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
        Error::Io { path: path.into(), cause: source }
    }
    pub fn bug(msg: impl Into<String>) -> Self {
        Error::Bug(msg.into())
    }
    /// Whether this is an internal error (a bug in kcirc), not bad input.
    pub fn is_bug(&self) -> bool {
        matches!(self, Error::Bug(_) | Error::Candle(_))
    }
}

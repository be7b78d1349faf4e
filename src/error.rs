//! The crate's error type. Every variant names the input it concerns.

use std::path::PathBuf;

use crate::model::LoadError;
use crate::preprocess::PreprocessError;
use crate::text::TokenizerError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The checkpoint could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The tokenizer file is unusable.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// An image could not be read, decoded or preprocessed.
    #[error("{input}: {source}")]
    Image { input: String, source: PreprocessError },
    /// A file could not be read.
    #[error("{}: {msg}", path.display())]
    Io { path: PathBuf, msg: String },
    /// No weights were given and none were found.
    #[error("{0}")]
    NoModel(String),
    /// A GPU was requested (or failed) and no fallback applies.
    #[error("GPU: {0}")]
    Gpu(String),
    /// Bad arguments or options.
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

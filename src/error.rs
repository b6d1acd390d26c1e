//! Library errors. Each names the file (and row, where there is one) and what is wrong with it.

use std::path::PathBuf;

/// What went wrong, grouped by who must act: the user's invocation, the input data, or a
/// verification that found a damaged bag. `main` maps these to distinct exit codes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The invocation itself is wrong (conflicting flags, a bad value).
    #[error("{0}")]
    Usage(String),

    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: {reason}")]
    BadInput { path: PathBuf, reason: String },

    #[error("{path}, row {row}: {reason}")]
    BadRow {
        path: PathBuf,
        row: u64,
        reason: String,
    },

    #[error("{path}: missing required column {column:?} (columns present: {present})")]
    MissingColumn {
        path: PathBuf,
        column: String,
        present: String,
    },

    #[error("{path}: cannot parse CSV")]
    Csv {
        path: PathBuf,
        #[source]
        source: csv::Error,
    },

    #[error("{path}: not a valid source description")]
    SourceDescription {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },

    #[error("output {path} exists and is not empty; pass --force to replace it")]
    OutputExists { path: PathBuf },

    /// A bag failed verification; `problems` lists each damaged file by name.
    #[error("{path}: bag verification failed ({} problem{})", problems.len(), if problems.len() == 1 { "" } else { "s" })]
    Verification {
        path: PathBuf,
        problems: Vec<String>,
    },

    /// A pipeline stage (a child prep process) failed; it printed its own error.
    #[error("stage {stage} failed ({status}): prep {argv}")]
    StageFailed {
        stage: String,
        status: String,
        argv: String,
    },

    #[cfg(feature = "train")]
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl Error {
    pub fn read(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Read {
            path: path.into(),
            source,
        }
    }
    pub fn write(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Write {
            path: path.into(),
            source,
        }
    }
    pub fn bad_input(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::BadInput {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

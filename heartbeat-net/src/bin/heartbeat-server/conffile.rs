//! The operator's files the server reads at start and again on SIGHUP (`--expect`,
//! `--client-settings`): read with a size cap, parsed by the file's own parser, and an error
//! that names the file, and the line where the parser found one.

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The most bytes such a file may have; reading stops there.
const MAX_FILE: u64 = 16 << 20;

/// A file that cannot be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub(crate) enum FileError {
    /// It could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// It is not what the format says.
    #[error("{path}:{line}: {why}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong.
        why: String,
    },
}

/// Reads the file at `path` (at most [`MAX_FILE`] bytes) and parses its text with `parse`,
/// whose error is a line number (from 1) and what is wrong.
pub(crate) fn load<T>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, (usize, String)>,
) -> Result<T, FileError> {
    let read = |source| FileError::Read {
        path: path.to_owned(),
        source,
    };
    let mut text = String::new();
    fs::File::open(path)
        .map_err(read)?
        .take(MAX_FILE)
        .read_to_string(&mut text)
        .map_err(read)?;
    parse(&text).map_err(|(line, why)| FileError::Syntax {
        path: path.to_owned(),
        line,
        why,
    })
}

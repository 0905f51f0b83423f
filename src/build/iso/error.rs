//! Why the ISO could not be built: one error type for every step below `IsoBuilder`.

use std::io;
use std::path::PathBuf;

use crate::build::esp::EspError;
use crate::build::hybrid::HybridError;

/// Why the ISO could not be built.
#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    #[error(
        "volume label {0:?} is not 1 to 32 characters of A-Z, 0-9 and _ (ISO 9660 d-characters)"
    )]
    Label(String),
    #[error("cannot read the {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the {what} {} is not usable: {why}", path.display())]
    BadInput {
        what: &'static str,
        path: PathBuf,
        why: &'static str,
    },
    #[error("cannot write the ISO {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("kernel arguments {0:?} contain a control character (a newline would break the menus)")]
    BadArgs(String),
    #[error("two ISO files map to the same ISO 9660 name {0}")]
    NameClash(String),
    #[error("the ISO would be too large ({0})")]
    TooLarge(&'static str),
    #[error(transparent)]
    Esp(#[from] EspError),
    #[error(transparent)]
    Hybrid(#[from] HybridError),
}

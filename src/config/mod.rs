//! Config text -> validated model. Depends on nothing else in the crate, so that `check`,
//! startup and reloads share one definition of "valid".

pub mod model;
pub mod origin;
pub mod raw;
mod shadow;
pub mod source;
pub mod tls_files;
pub mod validate;

pub use model::Config;
pub use source::{Diagnostic, Diagnostics, Location, Severity, SourceFile};
pub use validate::{load, Loaded};

/// The shipped default, embedded so the binary runs with no file at all.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/edgegate.toml");

/// Name under which the embedded default is reported in diagnostics and `/config`.
pub const DEFAULT_CONFIG_NAME: &str = "<embedded default>";

//! Where the config comes from (a file, or the embedded default), reading it, and the
//! files a config depends on. Shared by `run`, `check`, `route` and reloads.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{Config, Loaded, SourceFile};

const SYSTEM_CONFIG: &str = "/etc/edgegate/edgegate.toml";

/// Where the config text comes from.
#[derive(Debug, Clone)]
pub enum ConfigOrigin {
    File(PathBuf),
    Embedded,
}

impl ConfigOrigin {
    pub fn read(&self) -> std::io::Result<SourceFile> {
        match self {
            ConfigOrigin::File(path) => SourceFile::read(path),
            ConfigOrigin::Embedded => Ok(SourceFile::new(
                super::DEFAULT_CONFIG_NAME,
                super::DEFAULT_CONFIG,
            )),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            ConfigOrigin::File(path) => path.display().to_string(),
            ConfigOrigin::Embedded => super::DEFAULT_CONFIG_NAME.to_string(),
        }
    }
}

/// `--config`, else `$EDGEGATE_CONFIG`, else the system path, else the embedded default.
pub fn resolve_config(explicit: Option<&Path>) -> ConfigOrigin {
    if let Some(path) = explicit {
        return ConfigOrigin::File(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os("EDGEGATE_CONFIG").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if path.exists() {
            return ConfigOrigin::File(path);
        }
    }
    if Path::new(SYSTEM_CONFIG).exists() {
        return ConfigOrigin::File(PathBuf::from(SYSTEM_CONFIG));
    }
    ConfigOrigin::Embedded
}

/// Where a command reports a config it cannot use: `check` and `route` print their
/// report on stdout; `run` keeps stdout for the access log and reports on stderr.
#[derive(Clone, Copy)]
pub enum Report {
    Stdout,
    Stderr,
}

/// Reads and validates, printing one `error: PATH:LINE:COL: message` line per problem.
pub fn load_or_report(
    origin: &ConfigOrigin,
    report: Report,
) -> Result<(SourceFile, Loaded), ExitCode> {
    let say = |line: String| match report {
        Report::Stdout => println!("{line}"),
        Report::Stderr => eprintln!("{line}"),
    };
    let source = match origin.read() {
        Ok(source) => source,
        Err(e) => {
            say(format!("error: {}: cannot read: {e}", origin.describe()));
            return Err(ExitCode::FAILURE);
        }
    };
    match super::load(&source) {
        Ok(loaded) => Ok((source, loaded)),
        Err(diagnostics) => {
            for d in &diagnostics.0 {
                say(d.to_string());
            }
            Err(ExitCode::FAILURE)
        }
    }
}

/// The files whose change means a reload: the config, every TLS file it names
/// (certificates, keys, client and upstream CAs) and the authenticators' users and JWKS
/// files.
pub fn watched_files(origin: &ConfigOrigin, config: &Config) -> Vec<PathBuf> {
    let mut files = match origin {
        ConfigOrigin::File(path) => vec![path.clone()],
        ConfigOrigin::Embedded => Vec::new(),
    };
    files.extend(config.tls_files().map(|f| f.path.clone()));
    files.extend(config.auth_files().map(|f| f.path.clone()));
    files
}

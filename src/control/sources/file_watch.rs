//! Watches the config file and the TLS files it names, and asks for a reload when one of
//! them changes.
//!
//! The watch is on their directories, not the files: editors replace files by rename, and a
//! Kubernetes ConfigMap volume swaps its `..data` symlink, and a watch on the old inode
//! would miss both. Events are then filtered to the names that matter (each file, and the
//! first step of its symlink target, such as `..data`), so a log written steadily in the
//! same directory neither triggers reloads nor holds them back. A burst of events (an
//! editor's save, a symlink swap) becomes one reload after a short quiet period, and never
//! later than `MAX_DELAY` (500 ms) after its first event (spec: applied within 2 seconds).

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::config::origin::{watched_files, ConfigOrigin};
use crate::config::Config;
use crate::control::update::Update;

/// Events closer together than this are one change (an editor's save, a symlink swap).
const QUIET_PERIOD: Duration = Duration::from_millis(150);
/// However the events keep coming, a reload is asked for this long after the first.
const MAX_DELAY: Duration = Duration::from_millis(500);

/// Per watched directory (canonical), the entry names whose change matters.
type Interest = HashMap<PathBuf, HashSet<OsString>>;

fn matters(interest: &Interest, path: &Path) -> bool {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return false;
    };
    interest.get(dir).is_some_and(|names| names.contains(name))
}

pub struct FileWatch {
    watcher: Mutex<notify::RecommendedWatcher>,
    interest: Arc<Mutex<Interest>>,
}

impl FileWatch {
    /// Starts the watcher; reloads are requested on `updates`.
    pub fn start(updates: mpsc::Sender<Update>) -> notify::Result<Arc<Self>> {
        let (events_tx, events_rx) = mpsc::unbounded_channel::<()>();
        let interest = Arc::new(Mutex::new(Interest::new()));
        let filter = interest.clone();
        let watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
                Ok(event) if !event.kind.is_access() => {
                    let interest = filter.lock().unwrap_or_else(|e| e.into_inner());
                    if event.paths.iter().any(|p| matters(&interest, p)) {
                        let _ = events_tx.send(());
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "file watch error"),
            })?;
        tokio::spawn(debounce(events_rx, updates));
        Ok(Arc::new(Self {
            watcher: Mutex::new(watcher),
            interest,
        }))
    }

    /// Watches the files of every config the publisher applies from now on.
    pub async fn follow(
        self: Arc<Self>,
        origin: ConfigOrigin,
        mut configs: watch::Receiver<Arc<Config>>,
    ) {
        while configs.changed().await.is_ok() {
            let config = configs.borrow_and_update().clone();
            self.watch_files(&watched_files(&origin, &config));
        }
    }

    /// Watches exactly the directories holding `files`, for changes to those files.
    pub fn watch_files(&self, files: &[PathBuf]) {
        let mut wanted = Interest::new();
        for file in files {
            let dir = match file.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            // Event paths are the watched directory joined with an entry name: watching
            // the canonical directory makes them comparable whatever form the config used.
            let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
            let Some(name) = file.file_name() else {
                continue;
            };
            let names = wanted.entry(dir).or_default();
            names.insert(name.to_os_string());
            // `edgegate.toml -> ..data/edgegate.toml`: the swap happens on `..data`.
            if let Ok(target) = std::fs::read_link(file) {
                if let Some(Component::Normal(first)) = target.components().next() {
                    names.insert(first.to_os_string());
                }
            }
        }
        let mut interest = self.interest.lock().unwrap_or_else(|e| e.into_inner());
        let mut watcher = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
        for dir in interest.keys().filter(|d| !wanted.contains_key(*d)) {
            let _ = watcher.unwatch(dir);
        }
        for dir in wanted.keys().filter(|d| !interest.contains_key(*d)) {
            if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(directory = %dir.display(), error = %e, "cannot watch directory");
            }
        }
        *interest = wanted;
    }
}

/// One reload per burst: after [`QUIET_PERIOD`] without events, or [`MAX_DELAY`] after
/// the burst began, whichever comes first.
async fn debounce(mut events: mpsc::UnboundedReceiver<()>, updates: mpsc::Sender<Update>) {
    while events.recv().await.is_some() {
        let latest = Instant::now() + MAX_DELAY;
        loop {
            let quiet = (Instant::now() + QUIET_PERIOD).min(latest);
            match tokio::time::timeout_at(quiet, events.recv()).await {
                Ok(Some(())) if Instant::now() < latest => continue,
                Ok(Some(())) | Err(_) => break,
                Ok(None) => return,
            }
        }
        let reload = Update::Reload {
            cause: "file change",
            force: false,
        };
        if updates.send(reload).await.is_err() {
            return;
        }
    }
}

//! Watches the directories of the config file and of the TLS files it names.
//!
//! Directories, not files: editors replace files by rename, and a Kubernetes ConfigMap
//! volume swaps its `..data` symlink, and a watch on the old inode would miss both. Any
//! event in a watched directory starts a short quiet period; when it ends, one reload is
//! requested. The publisher compares content fingerprints, so events that changed nothing
//! (an access log written beside the config, a touch) cost a read, not a reload.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::publish::Update;

/// Events closer together than this are one change (an editor's save, a symlink swap).
const QUIET_PERIOD: Duration = Duration::from_millis(150);

pub struct FileWatch {
    watcher: Mutex<notify::RecommendedWatcher>,
    watched: Mutex<HashSet<PathBuf>>,
}

impl FileWatch {
    /// Starts the watcher; reloads are requested on `updates`.
    pub fn start(updates: mpsc::Sender<Update>) -> notify::Result<Arc<Self>> {
        let (events_tx, mut events_rx) = mpsc::unbounded_channel::<()>();
        let watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
                Ok(event) if !event.kind.is_access() => {
                    let _ = events_tx.send(());
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "file watch error"),
            })?;
        tokio::spawn(async move {
            while events_rx.recv().await.is_some() {
                // Debounce: wait until the directory has been quiet for a moment.
                loop {
                    match tokio::time::timeout(QUIET_PERIOD, events_rx.recv()).await {
                        Ok(Some(())) => continue,
                        Ok(None) => return,
                        Err(_) => break,
                    }
                }
                if updates
                    .send(Update::Reload {
                        cause: "file change",
                        force: false,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Arc::new(Self {
            watcher: Mutex::new(watcher),
            watched: Mutex::new(HashSet::new()),
        }))
    }

    /// Watches exactly the directories holding `files` (the config and its TLS files).
    pub fn watch_files<'a>(&self, files: impl IntoIterator<Item = &'a Path>) {
        let wanted: HashSet<PathBuf> = files
            .into_iter()
            .map(|f| match f.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                _ => PathBuf::from("."),
            })
            .collect();
        let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        let mut watcher = self.watcher.lock().unwrap_or_else(|e| e.into_inner());
        for dir in watched.difference(&wanted) {
            let _ = watcher.unwatch(dir);
        }
        for dir in wanted.difference(&watched) {
            if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(directory = %dir.display(), error = %e, "cannot watch directory");
            }
        }
        *watched = wanted;
    }
}

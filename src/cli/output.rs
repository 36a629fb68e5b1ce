//! Where exports go: stdout, or a file that only ever appears complete
//! (written to `FILE.partial` beside it, synced, then renamed over it) and
//! that only its owner may read, mode 0600: exports hold leads' personal
//! data and the audit trail.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use tokio::fs::File;

use crate::snapshot::store::StoreError;

/// Why an export failed; a target file is never touched then.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read the audit trail")]
    Query(#[from] sqlx::Error),
    #[error("cannot create {}", .path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot flush {} to disk", .path.display())]
    Sync {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot rename {} to {}", .from.display(), .to.display())]
    Rename {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An export in progress: [`Sink::commit`] on success, [`Sink::abandon`]
/// on failure.
pub struct Sink {
    file: File,
    /// `(FILE.partial, FILE)` when writing to a file.
    target: Option<(PathBuf, PathBuf)>,
}

impl Sink {
    /// Stdout, or a temporary file beside `path`.
    pub async fn create(path: Option<&Path>) -> Result<Sink, ExportError> {
        match path {
            None => Ok(Sink {
                file: async_stdout().map_err(|source| ExportError::Create {
                    path: PathBuf::from("stdout"),
                    source,
                })?,
                target: None,
            }),
            Some(path) => {
                let temp = partial_path(path);
                let file = create_private(&temp)
                    .await
                    .map_err(|source| ExportError::Create {
                        path: temp.clone(),
                        source,
                    })?;
                Ok(Sink {
                    file,
                    target: Some((temp, path.to_path_buf())),
                })
            }
        }
    }

    /// What to write to.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// The path being written, for error messages (`stdout` for stdout).
    pub fn written_path(&self) -> PathBuf {
        match &self.target {
            Some((temp, _)) => temp.clone(),
            None => PathBuf::from("stdout"),
        }
    }

    /// Flushes; for a file, syncs it to disk and renames it into place, so a
    /// crash cannot leave the target short.
    pub async fn commit(mut self) -> Result<(), ExportError> {
        use tokio::io::AsyncWriteExt;
        let written = self.written_path();
        self.file
            .flush()
            .await
            .map_err(|source| ExportError::Write {
                path: written.clone(),
                source,
            })?;
        let Some((temp, path)) = self.target.take() else {
            return Ok(());
        };
        let synced = self.file.sync_all().await;
        drop(self.file);
        let result = match synced {
            Err(source) => Err(ExportError::Sync {
                path: temp.clone(),
                source,
            }),
            Ok(()) => tokio::fs::rename(&temp, &path)
                .await
                .map_err(|source| ExportError::Rename {
                    from: temp.clone(),
                    to: path,
                    source,
                }),
        };
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        result
    }

    /// Removes the temporary file (best effort: the export's own error is
    /// what the operator needs to see).
    pub async fn abandon(self) {
        drop(self.file);
        if let Some((temp, _)) = self.target {
            let _ = tokio::fs::remove_file(&temp).await;
        }
    }
}

/// Mode of exported files.
const FILE_MODE: u32 = 0o600;

/// Creates (or truncates) `path` 0600. The mode is set again on the open
/// file because `mode` applies only when the file is new, and a
/// `FILE.partial` left by a crash may have any mode.
async fn create_private(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::PermissionsExt;
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
        .await?;
    file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
        .await?;
    Ok(file)
}

/// `FILE.partial`, in the same directory so the final rename stays on one
/// filesystem (and so is atomic).
fn partial_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".partial");
    PathBuf::from(name)
}

/// Stdout as an async file: a duplicate of descriptor 1, written from tokio's
/// blocking pool. Nothing else writes to stdout during an export, so std's
/// buffer is never interleaved.
fn async_stdout() -> std::io::Result<File> {
    use std::os::fd::AsFd;
    let fd = std::io::stdout().as_fd().try_clone_to_owned()?;
    Ok(File::from_std(std::fs::File::from(fd)))
}

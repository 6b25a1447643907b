//! `tget verify`: hash-check a torrent's data on disk, on all cores, and
//! say which files have bad or missing pieces. The binary shows progress and
//! prints the [`Report`] (text or JSON, see `report`).

use std::path::{Path, PathBuf};

use crate::layout::Layout;
use crate::metainfo::Metainfo;
use crate::storage::{Storage, StorageError};

/// What a check found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The torrent's name.
    pub name: String,
    /// The info-hash, 40 hex digits.
    pub info_hash: String,
    /// Pieces in the torrent.
    pub pieces: u32,
    /// Pieces whose SHA-1 matched.
    pub pieces_good: u32,
    /// Bytes in the torrent.
    pub bytes: u64,
    /// Bytes in the pieces that matched.
    pub bytes_good: u64,
    /// Each file's path and how many of its pieces are bad or missing.
    pub files: Vec<(PathBuf, usize)>,
}

impl Report {
    /// Whether every piece matched.
    pub fn complete(&self) -> bool {
        self.pieces_good == self.pieces
    }
}

/// Why a check could not run.
#[derive(Debug)]
pub enum VerifyError {
    /// A file of the torrent is not there.
    Missing(PathBuf),
    /// Reading failed.
    Storage(StorageError),
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VerifyError::Missing(p) => write!(f, "missing file {}", p.display()),
            VerifyError::Storage(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for VerifyError {}

/// Checks `meta`'s data under `dir` with `threads` threads, calling
/// `progress` once per piece checked.
pub fn check(
    meta: &Metainfo,
    dir: &Path,
    threads: usize,
    progress: &(dyn Fn(u32) + Sync),
) -> Result<Report, VerifyError> {
    let i = &meta.info;
    let layout = Layout::new(i.piece_length, i.files.lengths());
    let paths: Vec<PathBuf> = (0..i.files.len()).map(|n| i.file_path(dir, n)).collect();
    if let Some(p) = paths.iter().find(|p| !p.exists()) {
        return Err(VerifyError::Missing(p.clone()));
    }
    let st = Storage::open(layout.clone(), paths.clone()).map_err(VerifyError::Storage)?;
    let have = st
        .check_all(&i.pieces, threads, progress)
        .map_err(VerifyError::Storage)?;
    let bytes_good = have.ones().map(|p| layout.piece_len(p) as u64).sum();
    let files = paths
        .into_iter()
        .enumerate()
        .map(|(n, p)| {
            let bad = layout.file_pieces(n).filter(|&x| !have.get(x)).count();
            (p, bad)
        })
        .collect();
    Ok(Report {
        name: i.name.clone(),
        info_hash: meta.info_hash_hex(),
        pieces: have.len(),
        pieces_good: have.count(),
        bytes: layout.total_length(),
        bytes_good,
        files,
    })
}

//! `tget verify`: hash-check a torrent's data on disk, on all cores, and
//! say which files have bad or missing pieces. The binary shows progress and
//! prints the [`Report`] (text or JSON, see `report`).

use std::path::{Path, PathBuf};

use crate::layout::Layout;
use crate::metainfo::Metainfo;
use crate::storage::{Slot, Storage, StorageError};
use crate::wire::Bitfield;

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
    /// Each file's path and how many of its pieces are bad or missing
    /// (the chosen files only, for a selection).
    pub files: Vec<(PathBuf, usize)>,
    /// Whether only some files were checked (`pieces` and `bytes` are then
    /// those of the pieces the chosen files touch).
    pub selection: bool,
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
    check_selected(meta, dir, None, threads, progress)
}

/// Like [`check`], for the files `selected` marks (all when `None`): the
/// pieces they touch are checked, reading the parts of other files that
/// share them from the side files a download with that selection keeps
/// (`DIR/.tget/<info-hash>.parts/`); a piece whose other part is not there
/// counts as bad. Nothing is created.
pub fn check_selected(
    meta: &Metainfo,
    dir: &Path,
    selected: Option<&[bool]>,
    threads: usize,
    progress: &(dyn Fn(u32) + Sync),
) -> Result<Report, VerifyError> {
    let i = &meta.info;
    let layout = Layout::new(i.piece_length, i.files.lengths());
    let n = i.files.len();
    let chosen = |f: usize| selected.is_none_or(|s| s.get(f).copied().unwrap_or(false));
    let mut wanted = Bitfield::new(layout.num_pieces());
    for f in (0..n).filter(|&f| chosen(f)) {
        for p in layout.file_pieces(f) {
            wanted.set(p);
        }
    }
    let side_dir = dir
        .join(crate::statedir::NAME)
        .join(format!("{}.parts", meta.info_hash_hex()));
    let mut slots = Vec::with_capacity(n);
    // Pieces that cannot be read whole (a shared part is not there).
    let mut unreadable = Bitfield::new(layout.num_pieces());
    for f in 0..n {
        if chosen(f) {
            let p = i.file_path(dir, f);
            if !p.exists() {
                return Err(VerifyError::Missing(p));
            }
            slots.push(Slot::File(p));
        } else if layout.file_pieces(f).any(|p| wanted.get(p)) {
            let side = side_dir.join(f.to_string());
            if side.is_file() {
                slots.push(Slot::Side(side));
            } else {
                slots.push(Slot::Skip);
                for p in layout.file_pieces(f) {
                    unreadable.set(p);
                }
            }
        } else {
            slots.push(Slot::Skip);
        }
    }
    let to_check: Vec<u32> = wanted.ones().filter(|&p| !unreadable.get(p)).collect();
    let st = Storage::open_slots(layout.clone(), slots).map_err(VerifyError::Storage)?;
    let have = st
        .check_pieces(&i.pieces, &to_check, threads, progress)
        .map_err(VerifyError::Storage)?;
    let bytes_good = have.ones().map(|p| layout.piece_len(p) as u64).sum();
    let files = (0..n)
        .filter(|&f| chosen(f))
        .map(|f| {
            let bad = layout.file_pieces(f).filter(|&x| !have.get(x)).count();
            (i.file_path(dir, f), bad)
        })
        .collect();
    Ok(Report {
        name: i.name.clone(),
        info_hash: meta.info_hash_hex(),
        pieces: wanted.count(),
        pieces_good: have.count(),
        bytes: wanted.ones().map(|p| layout.piece_len(p) as u64).sum(),
        bytes_good,
        files,
        selection: selected.is_some(),
    })
}

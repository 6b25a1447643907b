//! Storage: the torrent's files on disk.
//!
//! Files are created at their final length (never written full of zeros),
//! with their disk blocks allocated at once where the filesystem can
//! ([`Allocation::Full`]) or sparse: the first [`MAX_OPEN_FILES`] when the
//! storage is opened, the others when first written, so a torrent of
//! 100 000 files starts at once. At most [`MAX_OPEN_FILES`] files are open
//! at a time; the least recently used is closed when another is needed, and
//! reopened (its path checked again for links) when used again. A verified
//! piece is written through a memory map: the one 2 MiB region window
//! ([`REGION`]) where the piece lies in a whole region of a file, else a map
//! of exactly its byte range, unmapped at once. The process never keeps
//! more than that mapped, so its resident memory stays bounded however
//! large the torrent (a map of the whole file would make RSS grow to the
//! file's size). Reads for uploading and checking
//! use positioned reads (`pread`) into the caller's buffer; uploads may
//! instead map a window of the torrent read-only ([`UploadWindow`]) and hand
//! its pages to the kernel, which copies them straight into the socket.
//!
//! The parts, one concern each: `files.rs` opens the storage and creates,
//! sizes and allocates the files; `cache.rs` keeps at most
//! [`MAX_OPEN_FILES`] of them open; `links.rs` refuses paths through
//! symbolic links; `paths.rs` keeps every file's path; `memory.rs` holds
//! the `--no-save` file; `write.rs` writes pieces and syncs them; `gate.rs` says who may write
//! a piece before it is verified, and seals it once it is;
//! `upload.rs` makes upload windows; `check.rs` hash-checks pieces on
//! several threads; `space.rs` counts the room the files still need.
//! `map.rs` holds the memory maps and the few system calls the standard
//! library lacks, and is the one module of the crate allowed `unsafe`.

mod cache;
mod check;
mod files;
mod gate;
mod links;
mod map;
mod memory;
mod paths;
mod space;
mod upload;
mod write;

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::layout::Layout;

pub use cache::MAX_OPEN_FILES;
pub use map::REGION;
pub use paths::file_paths;
pub use upload::UploadWindow;

// Crate-wide as `storage::free_space`, for a free-space check made before
// any storage is opened.
pub(crate) use map::free_space;

use cache::OpenFiles;
use map::RegionWindow;
use paths::PathTable;

/// A disk operation that failed, with the file it failed on.
#[derive(Debug)]
pub struct StorageError {
    /// What we were doing ("create", "open", "write", "read", ...).
    pub op: &'static str,
    /// The file or folder.
    pub path: PathBuf,
    /// The operating system's error.
    pub source: io::Error,
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "disk error: cannot {} {}: {}",
            self.op,
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for StorageError {}

/// What identifies a file's contents cheaply: its length and modification
/// time (nanoseconds since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    /// Length in bytes.
    pub length: u64,
    /// Modification time in nanoseconds since the Unix epoch.
    pub mtime_ns: u64,
}

/// The pieces' SHA-1 hashes, by piece index: a slice of them, or the
/// torrent's own [`crate::metainfo::PieceHashes`].
pub type Hashes = dyn std::ops::Index<usize, Output = [u8; 20]> + Sync;

/// Where one of the torrent's files is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// At its real path (a selected file).
    File(PathBuf),
    /// In a side file under `DIR/.tget/`: an unselected file that shares a
    /// piece with a selected one; only that piece's part is ever written.
    Side(PathBuf),
    /// Not stored at all (an unselected file no wanted piece touches).
    Skip,
    /// Kept in memory only, until released (`--no-save` streaming): the
    /// caller bounds how much is held by fetching within a window.
    Memory,
}

/// How a new file gets its disk blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// All at once when the file is created (`fallocate`), where the
    /// filesystem can: the room is the download's from the start (another
    /// program filling the disk cannot take it midway), the file lies in a
    /// few long extents, and each piece written costs less, since its
    /// blocks need no allocation of their own (measured on ext4: 0.1 to 0.2
    /// CPU-s less per GiB, docs/PERFORMANCE.md). On a filesystem without
    /// `fallocate` (FAT, NFSv3) or when there is no room, the file is left
    /// sparse, as with [`Allocation::Sparse`].
    Full,
    /// As pieces are written: the file is sparse until it is complete.
    Sparse,
}

/// How one file is kept, as far as opening it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kept {
    /// On disk, at its path (a real file or a side file).
    Disk,
    /// Not stored (`Slot::Skip`) or held in memory (`Slot::Memory`).
    Elsewhere,
}

/// The files of one torrent.
pub struct Storage {
    layout: Layout,
    /// Each file's path on disk (for a skipped file, where it would be).
    paths: PathTable,
    /// How each file is kept.
    kept: Vec<Kept>,
    /// Whether each file exists on disk (files beyond the first
    /// [`MAX_OPEN_FILES`] are created when first written).
    on_disk: Vec<AtomicBool>,
    /// The files open at the moment (at most [`MAX_OPEN_FILES`]).
    open: Mutex<OpenFiles>,
    /// The download folder, when no path below it may pass through a
    /// symbolic link ([`Storage::open_in`]); files reopened later are
    /// checked again.
    root: Option<PathBuf>,
    /// Files written since the last sync.
    dirty: Vec<AtomicBool>,
    /// Whether any file already held data when opened (so a check is due).
    preexisting: bool,
    /// Bytes the files still need on disk (length minus what is allocated);
    /// less each time a new file is allocated whole.
    unallocated: AtomicU64,
    /// How new files get their blocks.
    allocation: Allocation,
    /// The in-memory file's bytes, by offset in that file (one entry per
    /// piece span written). Only `Slot::Memory` uses it.
    memory: Mutex<std::collections::BTreeMap<u64, Vec<u8>>>,
    /// Which file is in memory, if any.
    memory_file: Option<usize>,
    /// Whether each file is a side file (only ever written at piece
    /// edges, so never a whole region at a time).
    side: Vec<bool>,
    /// Where whole regions are mapped for writing, one at a time (`None`
    /// where the address space could not be reserved).
    window: Mutex<Option<RegionWindow>>,
    /// Which writer may write which piece before it is verified, and which
    /// pieces are sealed (`gate.rs`).
    gate: Mutex<gate::Gate>,
}

impl Storage {
    /// The torrent's layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Whether some file held data before we opened it.
    pub fn had_data(&self) -> bool {
        self.preexisting
    }

    /// Whether every file piece `piece` touches is stored on disk.
    pub fn stores_piece(&self, piece: u32) -> bool {
        self.layout
            .piece_spans(piece)
            .all(|span| self.kept.get(span.file) == Some(&Kept::Disk))
    }

    /// Reads `buf.len()` bytes from `offset` inside piece `piece`.
    pub fn read(&self, piece: u32, offset: u32, buf: &mut [u8]) -> Result<(), StorageError> {
        let start = self.layout.piece_offset(piece) + offset as u64;
        let mut at = 0usize;
        for span in self.layout.spans(start, buf.len() as u64) {
            let len = span.len as usize;
            self.read_file(span.file, span.offset, &mut buf[at..at + len])?;
            at += len;
        }
        if at != buf.len() {
            return Err(StorageError {
                op: "read",
                path: self.paths.get(0),
                source: io::Error::new(io::ErrorKind::UnexpectedEof, "range past the end"),
            });
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `offset` of file `file` (on disk or in memory).
    pub fn read_file(&self, file: usize, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        if self.memory_file == Some(file) {
            return self.read_memory(file, offset, buf);
        }
        self.file(file)?
            .read_exact_at(buf, offset)
            .map_err(|e| self.error("read", file, e))
    }

    /// Each file's length and modification time, as the resume state
    /// records; a file not stored, or gone from the disk, has a zero stamp.
    pub fn stamps(&self) -> io::Result<Vec<FileStamp>> {
        let none = FileStamp {
            length: 0,
            mtime_ns: 0,
        };
        // Sized once: collecting `Result`s would grow it by doubling.
        let mut stamps = Vec::with_capacity(self.kept.len());
        for (i, k) in self.kept.iter().enumerate() {
            stamps.push(
                if *k != Kept::Disk || !self.on_disk[i].load(Ordering::Relaxed) {
                    none
                } else {
                    match fs::metadata(self.paths.get(i)) {
                        Ok(m) => FileStamp {
                            length: m.len(),
                            mtime_ns: (m.mtime().max(0) as u64)
                                .saturating_mul(1_000_000_000)
                                .saturating_add(m.mtime_nsec().max(0) as u64),
                        },
                        Err(e) if e.kind() == io::ErrorKind::NotFound => none,
                        Err(e) => return Err(e),
                    }
                },
            );
        }
        Ok(stamps)
    }

    fn error(&self, op: &'static str, file: usize, source: io::Error) -> StorageError {
        StorageError {
            op,
            path: self.paths.get(file),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha1::{Digest, Sha1};
    use std::fs::OpenOptions;

    pub(super) fn as_files(paths: &[PathBuf]) -> Vec<Slot> {
        paths.iter().cloned().map(Slot::File).collect()
    }

    pub(super) fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tget-storage-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn pieces_spanning_files_round_trip_and_check() {
        let dir = tmp("span");
        let lens = [10u64, 0, 5, 40];
        let layout = Layout::new(16, &lens);
        let files: Vec<Vec<String>> = (0..4).map(|i| vec![format!("f{i}")]).collect();
        let paths = file_paths(&dir, "t", true, &files);
        let st = Storage::open(layout.clone(), paths.clone()).unwrap();
        assert!(!st.had_data());
        let content: Vec<u8> = (0..55u8).collect();
        let mut hashes = Vec::new();
        for p in 0..layout.num_pieces() {
            let s = layout.piece_offset(p) as usize;
            let e = s + layout.piece_len(p) as usize;
            st.write_piece(p, &content[s..e]).unwrap();
            hashes.push(<[u8; 20]>::from(Sha1::digest(&content[s..e])));
        }
        st.sync().unwrap();
        assert_eq!(fs::read(&paths[0]).unwrap(), &content[..10]);
        assert_eq!(fs::read(&paths[1]).unwrap(), b"");
        assert_eq!(fs::read(&paths[2]).unwrap(), &content[10..15]);
        assert_eq!(fs::read(&paths[3]).unwrap(), &content[15..]);
        let mut buf = [0u8; 7];
        st.read(0, 8, &mut buf).unwrap();
        assert_eq!(&buf, &content[8..15]);
        drop(st);
        // Reopen: the data is there, the check finds every piece.
        let st = Storage::open(layout.clone(), paths.clone()).unwrap();
        assert!(st.had_data());
        let have = st.check_all(&hashes, 2, &|_| {}).unwrap();
        assert!(have.is_full());
        // Corrupt one byte of piece 1: only it fails.
        let f = OpenOptions::new().write(true).open(&paths[3]).unwrap();
        // Torrent offset 15 + 5 = 20 lies in piece 1 (bytes 16..32).
        f.write_all_at(b"X", 5).unwrap();
        let have = st.check_all(&hashes, 1, &|_| {}).unwrap();
        assert!(have.get(0) && !have.get(1) && have.get(2));
        fs::remove_dir_all(&dir).unwrap();
    }
}

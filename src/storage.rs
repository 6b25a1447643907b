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
//! This is the one module allowed `unsafe`: creating a memory map.

#![allow(unsafe_code)]

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use memmap2::{Mmap, MmapOptions};
use sha1::{Digest, Sha1};

use crate::layout::Layout;
use crate::wire::Bitfield;

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

/// At most this many of the torrent's files are open at once; the least
/// recently used is closed when another is needed. A torrent of 100 000
/// files must not need 100 000 descriptors (the usual limit is 1 024).
pub const MAX_OPEN_FILES: usize = 128;

/// How one file is kept, as far as opening it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kept {
    /// On disk, at its path (a real file or a side file).
    Disk,
    /// Not stored (`Slot::Skip`) or held in memory (`Slot::Memory`).
    Elsewhere,
}

/// The open files: a small cache keyed by file index, least recently used
/// evicted. Handles are shared, so a file evicted while a read or write
/// still uses it closes when that finishes.
#[derive(Default)]
struct OpenFiles {
    /// Bumped on every use; an entry's stamp says when it was last used.
    tick: u64,
    entries: Vec<(usize, u64, Arc<File>)>,
}

impl OpenFiles {
    fn get(&mut self, file: usize) -> Option<Arc<File>> {
        self.tick += 1;
        let tick = self.tick;
        let e = self.entries.iter_mut().find(|e| e.0 == file)?;
        e.1 = tick;
        Some(e.2.clone())
    }

    fn insert(&mut self, file: usize, f: Arc<File>) {
        self.tick += 1;
        if let Some(e) = self.entries.iter_mut().find(|e| e.0 == file) {
            *e = (file, self.tick, f);
            return;
        }
        if self.entries.len() >= MAX_OPEN_FILES {
            if let Some(oldest) = (0..self.entries.len()).min_by_key(|&i| self.entries[i].1) {
                self.entries.swap_remove(oldest);
            }
        }
        self.entries.push((file, self.tick, f));
    }
}

/// Every file's path, in one buffer: a torrent may have hundreds of
/// thousands of files, and a `PathBuf` each would cost some 70 bytes.
/// Paths below `base` are kept relative to it.
#[derive(Default)]
struct PathTable {
    base: PathBuf,
    /// The paths' bytes, one after another; a path not below `base` is
    /// kept whole, after a NUL (which no path holds).
    bytes: Vec<u8>,
    /// Where each path ends in `bytes`.
    ends: Vec<u32>,
}

impl PathTable {
    fn new(base: PathBuf, files: usize) -> PathTable {
        PathTable {
            base,
            bytes: Vec::new(),
            ends: Vec::with_capacity(files),
        }
    }

    /// Adds `path`; an error past 4 GiB of paths (a million files of a
    /// 4 KiB path each).
    fn push(&mut self, path: &Path) -> Result<(), StorageError> {
        match path.strip_prefix(&self.base) {
            Ok(rel) => self.bytes.extend_from_slice(rel.as_os_str().as_bytes()),
            Err(_) => {
                self.bytes.push(0);
                self.bytes.extend_from_slice(path.as_os_str().as_bytes());
            }
        }
        let end = u32::try_from(self.bytes.len()).map_err(|_| StorageError {
            op: "keep the path of",
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::OutOfMemory, "over 4 GiB of file paths"),
        })?;
        self.ends.push(end);
        Ok(())
    }

    /// Path `i`; empty past the end.
    fn get(&self, i: usize) -> PathBuf {
        let Some(&end) = self.ends.get(i) else {
            return PathBuf::new();
        };
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        match &self.bytes[start..end as usize] {
            [0, whole @ ..] => PathBuf::from(OsStr::from_bytes(whole)),
            rel => self.base.join(OsStr::from_bytes(rel)),
        }
    }
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
}

impl Storage {
    /// Opens (creating where missing) every file at `paths`, with the lengths
    /// given by `layout`, growing shorter files sparsely. Never truncates.
    pub fn open(layout: Layout, paths: Vec<PathBuf>) -> Result<Storage, StorageError> {
        Storage::open_slots(layout, paths.into_iter().map(Slot::File).collect())
    }

    /// Like [`Storage::open`], with each file kept as its [`Slot`] says.
    pub fn open_slots(layout: Layout, slots: Vec<Slot>) -> Result<Storage, StorageError> {
        Storage::create(layout, slots, None, Allocation::Sparse)
    }

    /// Looks at every file of `slots` (refusing links below `root`, if
    /// given) before creating anything, then creates the first
    /// [`MAX_OPEN_FILES`] stored files (and every empty one) at their
    /// length, keeping them open. The others are created, or grown to
    /// their length, when first used: creating 100 000 files up front
    /// would take seconds.
    fn create(
        layout: Layout,
        slots: impl IntoIterator<Item = Slot>,
        root: Option<PathBuf>,
        allocation: Allocation,
    ) -> Result<Storage, StorageError> {
        let files = layout.num_files();
        let mut kept = Vec::with_capacity(files);
        let mut paths = PathTable::new(root.clone().unwrap_or_default(), files);
        let mut on_disk = Vec::with_capacity(files);
        let mut folders = Folders::default();
        let mut preexisting = false;
        let mut unallocated = 0u64;
        let mut memory_file = None;
        let mut sides = Vec::with_capacity(files);
        for (i, slot) in slots.into_iter().enumerate() {
            sides.push(matches!(slot, Slot::Side(_)));
            let (path, side) = match slot {
                Slot::File(p) => (p, false),
                Slot::Side(p) => (p, true),
                Slot::Memory | Slot::Skip => {
                    let what = if slot == Slot::Memory {
                        memory_file = Some(i);
                        "in memory"
                    } else {
                        "not selected"
                    };
                    paths.push(Path::new(&format!("<file {i}, {what}>")))?;
                    kept.push(Kept::Elsewhere);
                    on_disk.push(AtomicBool::new(false));
                    continue;
                }
            };
            let meta = match &root {
                Some(root) => refuse_symlinks_below(root, &path, &mut folders)?,
                None => look_at(&path)?,
            };
            let want = layout.file_length(i);
            let mut allocated = 0;
            if let Some(meta) = &meta {
                if !meta.is_file() {
                    return Err(StorageError {
                        op: "use",
                        path,
                        source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
                    });
                }
                preexisting |= meta.len() > 0;
                allocated = meta.blocks() * 512;
            }
            if !side {
                // A side file only ever holds the edge of one or two pieces.
                unallocated += want.saturating_sub(allocated);
            }
            kept.push(Kept::Disk);
            paths.push(&path)?;
            on_disk.push(AtomicBool::new(meta.is_some()));
        }
        paths.bytes.shrink_to_fit();
        let dirty = kept.iter().map(|_| AtomicBool::new(false)).collect();
        let storage = Storage {
            layout,
            paths,
            kept,
            on_disk,
            open: Mutex::new(OpenFiles::default()),
            root,
            dirty,
            preexisting,
            unallocated: AtomicU64::new(unallocated),
            allocation,
            memory: Default::default(),
            memory_file,
            side: sides,
            window: Mutex::new(RegionWindow::reserve()),
        };
        let mut opened = 0;
        for i in 0..storage.kept.len() {
            if storage.kept[i] == Kept::Disk
                && (opened < MAX_OPEN_FILES || storage.layout.file_length(i) == 0)
            {
                storage.file(i)?;
                opened += 1;
            }
        }
        Ok(storage)
    }

    /// File `i`, opened again if it was closed (created at its length if it
    /// was never created), or an error if it is not stored on disk.
    fn file(&self, i: usize) -> Result<Arc<File>, StorageError> {
        if self.kept.get(i) != Some(&Kept::Disk) {
            return Err(self.error(
                "use",
                i,
                io::Error::new(io::ErrorKind::NotFound, "file not selected"),
            ));
        }
        if let Some(f) = self.open_files().get(i) {
            return Ok(f);
        }
        // Opened outside the lock: other threads' files stay usable meanwhile.
        let path = &self.paths.get(i);
        let no_follow = match &self.root {
            Some(root) if path.starts_with(root) => {
                refuse_symlinks_below(root, path, &mut Folders::default())?;
                true
            }
            _ => false,
        };
        let err = |op, e| self.error(op, i, e);
        let create = !self.on_disk[i].load(Ordering::Relaxed);
        if create {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(|e| err("create folder for", e))?;
            }
        }
        let f = open_file(path, create, no_follow).map_err(|e| err("open", e))?;
        let meta = f.metadata().map_err(|e| err("stat", e))?;
        if !meta.is_file() {
            return Err(err(
                "use",
                io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
            ));
        }
        let want = self.layout.file_length(i);
        let mut len = meta.len();
        // Only a new (empty) file is allocated: one that holds data keeps
        // its time stamp, which the resume state compares.
        if len == 0 && want > 0 && self.allocation == Allocation::Full && !self.side[i] {
            len = self.allocate(i, &f, want, meta.blocks() * 512);
        }
        if len < want {
            // Sparse: set_len allocates no blocks. Never truncates.
            f.set_len(want).map_err(|e| err("size", e))?;
        }
        self.on_disk[i].store(true, Ordering::Relaxed);
        let f = Arc::new(f);
        self.open_files().insert(i, f.clone());
        Ok(f)
    }

    /// Gives the new, empty file `i` (open as `f`, with `allocated` bytes
    /// of blocks) all `want` bytes of its blocks at once, growing it to
    /// that length. Returns its length after: `want`, or 0 where the
    /// filesystem cannot allocate (no `fallocate`, no room), leaving the
    /// file empty, to be grown sparsely; [`Storage::check_space`] then says
    /// what room is missing.
    fn allocate(&self, i: usize, f: &File, want: u64, allocated: u64) -> u64 {
        let Ok(len) = i64::try_from(want) else {
            return 0;
        };
        // SAFETY: fallocate only reads its integer arguments; the descriptor
        // is owned by `f`, which outlives the call.
        if unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len) } != 0 {
            log::debug!(
                "{}: not allocated at once ({}); it is grown sparsely",
                self.paths.get(i).display(),
                io::Error::last_os_error()
            );
            // Out of room, ext4 keeps what it did allocate (and the length
            // that covers it): give it back, so a download refused for lack
            // of room leaves no full file behind. The file held nothing.
            let _ = f.set_len(0);
            return 0;
        }
        let need = want.saturating_sub(allocated);
        let _ = self
            .unallocated
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(need))
            });
        want
    }

    fn open_files(&self) -> std::sync::MutexGuard<'_, OpenFiles> {
        // The cache holds no invariant a panic elsewhere could break.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether every file piece `piece` touches has been created on disk.
    fn piece_on_disk(&self, piece: u32) -> bool {
        self.layout
            .piece_spans(piece)
            .all(|span| self.on_disk[span.file].load(Ordering::Relaxed))
    }

    /// Whether every file piece `piece` touches is stored on disk.
    pub fn stores_piece(&self, piece: u32) -> bool {
        self.layout
            .piece_spans(piece)
            .all(|span| self.kept.get(span.file) == Some(&Kept::Disk))
    }

    /// Copies `buf.len()` bytes at `offset` of the in-memory file out of the
    /// chunks written there; an error if some are not (or no longer) held.
    fn read_memory(&self, file: usize, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        let missing = || {
            self.error(
                "read",
                file,
                io::Error::new(io::ErrorKind::NotFound, "bytes not in memory"),
            )
        };
        let mem = self.memory.lock().map_err(|_| missing())?;
        let mut at = 0usize;
        while at < buf.len() {
            let pos = offset + at as u64;
            let (&start, chunk) = mem.range(..=pos).next_back().ok_or_else(missing)?;
            let skip = (pos - start) as usize;
            if skip >= chunk.len() {
                return Err(missing());
            }
            let n = (chunk.len() - skip).min(buf.len() - at);
            buf[at..at + n].copy_from_slice(&chunk[skip..skip + n]);
            at += n;
        }
        Ok(())
    }

    /// Forgets the in-memory file's bytes before `offset` (they were passed on).
    pub fn release_memory(&self, offset: u64) {
        if let Ok(mut mem) = self.memory.lock() {
            while let Some((&start, chunk)) = mem.first_key_value() {
                if start + chunk.len() as u64 > offset {
                    break;
                }
                mem.remove(&start);
            }
        }
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

    /// Fails with a `StorageFull` error naming how much is missing when the
    /// filesystem says it has less free space than the files still need.
    /// Filesystems that cannot tell are given the benefit of the doubt.
    pub fn check_space(&self) -> Result<(), StorageError> {
        let Some(first_path) = self.kept.iter().position(|k| *k == Kept::Disk) else {
            return Ok(());
        };
        let Some(free) = free_space(&*self.file(first_path)?) else {
            return Ok(());
        };
        let unallocated = self.unallocated.load(Ordering::Relaxed);
        if free >= unallocated {
            return Ok(());
        }
        let dir = self
            .paths
            .get(first_path)
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf();
        Err(StorageError {
            op: "store the download in",
            path: dir,
            source: io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "not enough free space: {} bytes needed, {} free, {} missing",
                    unallocated,
                    free,
                    unallocated - free
                ),
            ),
        })
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

    /// Like [`Storage::open`], but first refuses every path that passes
    /// through a symbolic link below `dir` (the file itself or a folder
    /// between `dir` and it), so a link planted in the download folder cannot
    /// send writes outside it. `dir` itself may be a link.
    ///
    /// Files closed for lack of descriptors (see [`MAX_OPEN_FILES`]) are
    /// checked the same way when opened again, and a file is never opened
    /// through a link at its own name.
    pub fn open_in(
        dir: &Path,
        layout: Layout,
        slots: impl IntoIterator<Item = Slot>,
        allocation: Allocation,
    ) -> Result<Storage, StorageError> {
        // `create` checks each path before it creates any file.
        Storage::create(layout, slots, Some(dir.to_path_buf()), allocation)
    }

    /// The torrent's layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Whether some file held data before we opened it.
    pub fn had_data(&self) -> bool {
        self.preexisting
    }

    fn error(&self, op: &'static str, file: usize, source: io::Error) -> StorageError {
        StorageError {
            op,
            path: self.paths.get(file),
            source,
        }
    }

    /// Writes a whole verified piece through a short-lived memory map of each
    /// file range it covers.
    pub fn write_piece(&self, piece: u32, data: &[u8]) -> Result<(), StorageError> {
        debug_assert_eq!(data.len(), self.layout.piece_len(piece) as usize);
        self.write_at(piece, 0, data)
    }

    /// Writes `data` at `offset` inside piece `piece`. Whole verified
    /// pieces come through [`Storage::write_piece`]; streamed (large)
    /// pieces come here a group of blocks at a time, before the whole
    /// piece is verified (it counts only once it is).
    pub fn write_at(&self, piece: u32, offset: u32, data: &[u8]) -> Result<(), StorageError> {
        let start = self.layout.piece_offset(piece) + offset as u64;
        let mut at = 0usize;
        for span in self.layout.spans(start, data.len() as u64) {
            let len = span.len as usize;
            let chunk = &data[at..at + len];
            at += len;
            if self.memory_file == Some(span.file) {
                if let Ok(mut mem) = self.memory.lock() {
                    mem.insert(span.offset, chunk.to_vec());
                }
                continue;
            }
            let file = self.file(span.file)?;
            self.dirty[span.file].store(true, Ordering::Relaxed);
            // Region by region: a part that fills no whole region of a
            // real file inside its length goes through a map of its own.
            let mut pos = span.offset;
            while pos < span.offset + span.len {
                let region = pos - pos % REGION;
                let upto = (span.offset + span.len).min(region + REGION);
                let part = &chunk[(pos - span.offset) as usize..(upto - span.offset) as usize];
                let whole_region =
                    !self.side[span.file] && region + REGION <= self.layout.file_length(span.file);
                if !(whole_region && self.write_in_region(span.file, &file, region, pos, part)?) {
                    self.write_mapped(span.file, &file, pos, part)?;
                }
                pos = upto;
            }
        }
        Ok(())
    }

    /// Copies `data` to `offset` of file `file` through a map of just that
    /// range, which lives only for the copy.
    fn write_mapped(
        &self,
        file: usize,
        f: &File,
        offset: u64,
        data: &[u8],
    ) -> Result<(), StorageError> {
        // SAFETY: the map covers a range inside the file (the file was
        // sized to its full length at open). Nothing else in this process
        // maps the same range for writing at the same time, except endgame
        // copies of a small piece, which write the same verified bytes (a
        // streamed piece is handed to one worker at a time, and pieces do
        // not overlap). Nothing touches the map before `populated` has made
        // every page of it present and writable, with its disk space
        // reserved, so neither a shortened file nor a full disk turns the
        // copy into SIGBUS; only another process truncating the file in the
        // instant between that and the copy still could, a risk every mmap
        // user shares.
        let mut map = unsafe { MmapOptions::new().offset(offset).len(data.len()).map_mut(f) }
            .map_err(|e| self.error("map", file, e))?;
        // No read-ahead (MADV_RANDOM): the range is about to be overwritten
        // whole, and reading (zero-filling) the pages around it is wasted
        // work that also makes each page's write fault walk a large folio.
        let _ = map.advise(memmap2::Advice::Random);
        let populate = map.advise(memmap2::Advice::PopulateWrite);
        self.populated(file, f, offset, data.len() as u64, populate)?;
        map.copy_from_slice(data);
        Ok(())
    }

    /// Copies `data` to `offset` of file `file`, which lies in the whole
    /// [`REGION`] starting at `region`, through a map of that region at the
    /// reserved, aligned window, so the kernel can back it with one huge
    /// page: one fault, one page-cache entry and one dirty mark per 2 MiB
    /// instead of per 4 KiB (measured: about 0.5 instead of 1.5 to 2 CPU-s
    /// per GiB written). Where the filesystem or kernel gives no huge pages
    /// this costs what a map of the range alone would. Returns `false`,
    /// having written nothing, when there is no window.
    fn write_in_region(
        &self,
        file: usize,
        f: &Arc<File>,
        region: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<bool, StorageError> {
        let Ok(mut guard) = self.window.lock() else {
            return Ok(false);
        };
        let Some(window) = guard.as_mut() else {
            return Ok(false);
        };
        let base = window
            .map(file, f, region)
            .map_err(|e| self.error("map", file, e))?;
        let page = page_size();
        let inside = (offset - region) as usize;
        let first = inside - inside % page;
        let last = (inside + data.len()).div_ceil(page) * page;
        // Only the pages written are made present: with huge pages that is
        // the whole region in one fault (none at all while the region stays
        // mapped and dirty), without them no page outside `data`.
        // SAFETY: `first..last` lies inside the region mapped.
        let populate = advise(
            unsafe { base.add(first) },
            last - first,
            libc::MADV_POPULATE_WRITE,
        );
        let outcome = self
            .populated(
                file,
                f,
                region + first as u64,
                (last - first) as u64,
                populate,
            )
            .map(|()| {
                // SAFETY: `base` maps REGION bytes of the file, inside its
                // length (the caller checked), readable and writable, and
                // `inside + data.len() <= REGION`. The window's lock is held,
                // so no other thread maps over it during the copy; the pages
                // were made present and writable with their disk space
                // reserved, as in `write_mapped` (same caveat about another
                // process truncating the file). The copy's source is a
                // buffer of ours, which cannot overlap a file map.
                unsafe {
                    std::ptr::copy_nonoverlapping(data.as_ptr(), base.add(inside), data.len())
                };
                // A write through a map already writable takes no fault, and
                // the kernel updates the modification time only on a fault:
                // set it, so a resume state stamped before this write no
                // longer matches the file (docs/ARCHITECTURE.md, resume).
                touch(f);
                true
            });
        if outcome.is_err() && window.unmap().is_err() {
            // The file's map stays until the window is dropped here; the
            // range is never mapped over again.
            guard.take();
        }
        outcome
    }

    /// Turns the result of `MADV_POPULATE_WRITE` on `len` bytes at `offset`
    /// of file `file` into the go-ahead for copying into them. The advice
    /// (Linux 5.14+) makes every page present and writable before anything
    /// touches it, so the copy cannot fault, and it reports what would have
    /// been SIGBUS (a full disk, a shortened file) as EFAULT, which becomes
    /// an error naming the cause. In a sparse file it also reserves the
    /// blocks (delayed allocation), far cheaper than a `fallocate` call per
    /// write, each a journal transaction (a file allocated whole at its
    /// creation, [`Allocation::Full`], needs neither). Kernels without the
    /// advice fall back to [`Storage::reserve`].
    fn populated(
        &self,
        file: usize,
        f: &File,
        offset: u64,
        len: u64,
        populate: io::Result<()>,
    ) -> Result<(), StorageError> {
        match populate {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EFAULT) => {
                self.reserve(file, f, offset, len)?;
                // The file is long enough and fallocate found the space, yet
                // the pages could not be made writable.
                Err(self.error("write", file, e))
            }
            // EINVAL: a kernel older than the advice; anything else
            // (ENOMEM, EINTR): take the slow, safe way.
            Err(_) => self.reserve(file, f, offset, len),
        }
    }

    /// Makes sure `len` bytes at `offset` of file `file` exist and have disk
    /// blocks, so writing them through a map cannot fault: the file must not
    /// have been shortened, and the blocks are allocated up front (a full
    /// disk becomes an error here instead of SIGBUS in the copy).
    fn reserve(&self, file: usize, f: &File, offset: u64, len: u64) -> Result<(), StorageError> {
        let size = f.metadata().map_err(|e| self.error("stat", file, e))?.len();
        if size < offset + len {
            return Err(self.error(
                "write",
                file,
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("file was shortened to {size} bytes underneath us"),
                ),
            ));
        }
        // SAFETY: fallocate only reads its integer arguments; the descriptor
        // is owned by `f`, which outlives the call.
        let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, offset as i64, len as i64) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            // Filesystems without fallocate: write through the map anyway.
            if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
                return Err(self.error("allocate space in", file, e));
            }
        }
        Ok(())
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

    /// Maps `len` bytes at torrent offset `start` read-only, file by file,
    /// for uploading (see [`UploadWindow`]). The pages are read in at once
    /// (`MAP_POPULATE`). A file shortened underneath us is an error here.
    pub fn map_upload_window(&self, start: u64, len: u64) -> Result<UploadWindow, StorageError> {
        let mut maps = Vec::new();
        let mut at = start;
        for span in self.layout.spans(start, len) {
            let file = self.file(span.file)?;
            let size = file
                .metadata()
                .map_err(|e| self.error("stat", span.file, e))?
                .len();
            if size < span.offset + span.len {
                return Err(self.error(
                    "read",
                    span.file,
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("file was shortened to {size} bytes underneath us"),
                    ),
                ));
            }
            // SAFETY: a read-only map of a range inside the file (just
            // checked). Its bytes are never read by this process, only
            // handed to the kernel by `UploadWindow::slices` callers for
            // `write`/`writev` on a socket: should another process shorten
            // the file meanwhile, the kernel's copy fails with EFAULT
            // instead of this process taking SIGBUS. Our own writes to the
            // same file go through the page cache the map shares.
            let map = unsafe {
                MmapOptions::new()
                    .offset(span.offset)
                    .len(span.len as usize)
                    .populate()
                    .map(&*file)
            }
            .map_err(|e| self.error("map", span.file, e))?;
            maps.push((at, map));
            at += span.len;
        }
        Ok(UploadWindow {
            start,
            len: at - start,
            maps,
        })
    }

    /// Whether piece `piece` on disk hashes to `expected`. `buf` is scratch.
    pub fn check_piece(
        &self,
        piece: u32,
        expected: &[u8; 20],
        buf: &mut Vec<u8>,
    ) -> Result<bool, StorageError> {
        // A file not created yet holds nothing.
        if !self.stores_piece(piece) || !self.piece_on_disk(piece) {
            return Ok(false);
        }
        let len = self.layout.piece_len(piece) as usize;
        buf.resize(len, 0);
        self.read(piece, 0, &mut buf[..len])?;
        Ok(Sha1::digest(&buf[..len]).as_slice() == expected)
    }

    /// Hash-checks every piece on `threads` threads. `progress` is called with
    /// each piece checked (from several threads).
    pub fn check_all(
        &self,
        hashes: &Hashes,
        threads: usize,
        progress: &(dyn Fn(u32) + Sync),
    ) -> Result<Bitfield, StorageError> {
        self.check_each(hashes, self.layout.num_pieces(), &|k| k, threads, progress)
    }

    /// Like [`Storage::check_all`], for the pieces in `pieces` alone.
    pub fn check_pieces(
        &self,
        hashes: &Hashes,
        pieces: &[u32],
        threads: usize,
        progress: &(dyn Fn(u32) + Sync),
    ) -> Result<Bitfield, StorageError> {
        let count = pieces.len() as u32;
        self.check_each(hashes, count, &|k| pieces[k as usize], threads, progress)
    }

    /// Checks piece `piece(k)` for every `k` below `count`, on `threads`
    /// threads that take the next `k` in turn.
    fn check_each(
        &self,
        hashes: &Hashes,
        count: u32,
        piece: &(dyn Fn(u32) -> u32 + Sync),
        threads: usize,
        progress: &(dyn Fn(u32) + Sync),
    ) -> Result<Bitfield, StorageError> {
        let next = std::sync::atomic::AtomicU32::new(0);
        let threads = threads.clamp(1, 64);
        let results: Vec<Result<Vec<u32>, StorageError>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let mut good = Vec::new();
                        let mut buf = Vec::new();
                        loop {
                            let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if k >= count {
                                return Ok(good);
                            }
                            let i = piece(k);
                            if self.check_piece(i, &hashes[i as usize], &mut buf)? {
                                good.push(i);
                            }
                            progress(i);
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        let mut have = Bitfield::new(self.layout.num_pieces());
        for r in results {
            for i in r? {
                have.set(i);
            }
        }
        Ok(have)
    }

    /// Flushes the data of every file written since the last sync to the
    /// disk (the pages written through maps are in the page cache, which
    /// `fdatasync` writes out).
    pub fn sync(&self) -> Result<(), StorageError> {
        for i in 0..self.kept.len() {
            if self.dirty[i].swap(false, Ordering::Relaxed) {
                // A file closed since it was written still has its pages in
                // the page cache: syncing it through a new descriptor
                // writes them out.
                let f = match self.file(i) {
                    Ok(f) => f,
                    Err(e) => {
                        self.dirty[i].store(true, Ordering::Relaxed);
                        return Err(e);
                    }
                };
                if let Err(e) = f.sync_data() {
                    self.dirty[i].store(true, Ordering::Relaxed);
                    return Err(self.error("sync", i, e));
                }
            }
        }
        Ok(())
    }
}

/// A read-only map of a byte range of the torrent, file by file, made by
/// [`Storage::map_upload_window`] for uploads.
///
/// Its bytes are meant for the kernel only: pass [`UploadWindow::slices`] to
/// `write`/`writev` on a socket and never read them in this process, so a
/// file shortened underneath the map costs an EFAULT on the write, not a
/// SIGBUS. The map (and its resident pages) goes when the window is dropped.
pub struct UploadWindow {
    start: u64,
    len: u64,
    /// Each map with the torrent offset of its first byte.
    maps: Vec<(u64, Mmap)>,
}

impl UploadWindow {
    /// Whether the window holds the `len` bytes at torrent offset `start`.
    pub fn covers(&self, start: u64, len: u64) -> bool {
        start >= self.start && start.saturating_add(len) <= self.start + self.len
    }

    /// The mapped slices holding the `len` bytes at torrent offset `start`
    /// (one per file they touch; nothing for parts the window lacks).
    pub fn slices(&self, start: u64, len: u64) -> impl Iterator<Item = &[u8]> + '_ {
        let end = start.saturating_add(len);
        self.maps.iter().filter_map(move |(at, map)| {
            let from = start.max(*at);
            let to = end.min(at + map.len() as u64);
            (from < to).then(|| &map[(from - at) as usize..(to - at) as usize])
        })
    }
}

/// How much of a file is mapped at once for writing: the size of a huge
/// page (a PMD on x86-64, and on arm64 with 4 KiB pages).
pub const REGION: u64 = 2 << 20;

/// [`REGION`] bytes of address space, aligned to their size, reserved once
/// (inaccessible) so that a region of a file can be mapped exactly there for
/// writing: a huge-page mapping needs that alignment, and a map placed
/// wherever the kernel likes rarely has it. One window per storage, used
/// under its lock, keeps the bytes mapped at once (and so resident) to one
/// region.
struct RegionWindow {
    addr: *mut libc::c_void,
    /// What is mapped there now: file index, region offset, and the open
    /// file it was mapped from (a file closed and opened again since is
    /// mapped again). The map stays between writes, so the next piece of
    /// the same region (the picker keeps workers on one extent) costs no
    /// map, no fault and no dirty mark.
    mapped: Option<(usize, u64, Arc<File>)>,
}

// SAFETY: the window is a range of address space owned by this value alone;
// it holds no thread-bound state, and `Storage` only uses it under a mutex.
unsafe impl Send for RegionWindow {}

impl RegionWindow {
    /// Reserves an aligned window, or `None` if the address space is
    /// refused (writes then map each range on its own).
    fn reserve() -> Option<RegionWindow> {
        let size = 2 * REGION as usize;
        // SAFETY: an anonymous, inaccessible mapping at an address of the
        // kernel's choice touches no existing memory.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return None;
        }
        let start = raw as usize;
        let aligned = start.next_multiple_of(REGION as usize);
        let end = start + size;
        let keep_end = aligned + REGION as usize;
        // SAFETY: both trimmed pieces lie inside the reservation just made,
        // which nothing else uses; the aligned middle stays reserved.
        unsafe {
            if aligned > start {
                libc::munmap(raw, aligned - start);
            }
            if end > keep_end {
                libc::munmap(keep_end as *mut libc::c_void, end - keep_end);
            }
        }
        Some(RegionWindow {
            addr: aligned as *mut libc::c_void,
            mapped: None,
        })
    }

    /// The window with the [`REGION`] bytes of file `file` (open as `f`)
    /// from `offset` (a multiple of the region size) mapped there, readable
    /// and writable, shared: mapped now unless it already was.
    fn map(&mut self, file: usize, f: &Arc<File>, offset: u64) -> io::Result<*mut u8> {
        if let Some((i, at, open)) = &self.mapped {
            if *i == file && *at == offset && Arc::ptr_eq(open, f) {
                return Ok(self.addr as *mut u8);
            }
        }
        self.mapped = None;
        // SAFETY: MAP_FIXED replaces only the window (and whatever file
        // region was mapped there), which this value owns (its holder has
        // the lock); the descriptor is open for the call.
        let p = unsafe {
            libc::mmap(
                self.addr,
                REGION as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                f.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            // A failed MAP_FIXED may have unmapped the old region: put the
            // reservation back (if that fails too, the next map fails).
            let _ = self.unmap();
            return Err(e);
        }
        let base = p as *mut u8;
        // Huge pages where the kernel has them (ignored where not), and no
        // read-ahead beyond this region: it is about to be overwritten.
        let _ = advise(base, REGION as usize, libc::MADV_HUGEPAGE);
        let _ = advise(base, REGION as usize, libc::MADV_RANDOM);
        self.mapped = Some((file, offset, f.clone()));
        Ok(base)
    }

    /// Puts the inaccessible reservation back over the window, unmapping
    /// the file region mapped there (its dirty pages stay in the page
    /// cache, as after any `munmap`).
    fn unmap(&mut self) -> io::Result<()> {
        self.mapped = None;
        // SAFETY: as in `map`: only the window is replaced.
        let p = unsafe {
            libc::mmap(
                self.addr,
                REGION as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for RegionWindow {
    fn drop(&mut self) {
        // SAFETY: the window is ours and nothing refers into it once its
        // owner is dropped.
        unsafe { libc::munmap(self.addr, REGION as usize) };
    }
}

/// Sets `f`'s modification time to now (its access time untouched).
fn touch(f: &File) {
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
    ];
    // SAFETY: futimens reads the two timespecs, which outlive the call; the
    // descriptor is owned by `f`.
    unsafe { libc::futimens(f.as_raw_fd(), times.as_ptr()) };
}

/// The size of a memory page.
fn page_size() -> usize {
    // SAFETY: sysconf only reads a system constant.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

/// `madvise` on `len` bytes at `addr`.
fn advise(addr: *mut u8, len: usize, advice: libc::c_int) -> io::Result<()> {
    // SAFETY: madvise only changes how the kernel handles the range (the
    // advice given here never discards data); callers pass ranges of their
    // own live maps.
    if unsafe { libc::madvise(addr as *mut libc::c_void, len, advice) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Free bytes for unprivileged users on the filesystem holding `f`, if the
/// filesystem can tell.
pub(crate) fn free_space(f: &File) -> Option<u64> {
    // SAFETY: statvfs is plain old data; zeroed is a valid value for it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable statvfs; the descriptor is owned by `f`.
    let rc = unsafe { libc::fstatvfs(f.as_raw_fd(), &mut st) };
    if rc != 0 || st.f_frsize == 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Fails if any component of `path` below `dir` is a symbolic link (looked
/// at with `symlink_metadata`, which does not follow links). Components that
/// do not exist yet are fine: we create them as real folders and files.
/// Returns what is at `path` itself, if anything (followed as `stat` does
/// for a path not below `dir`).
///
/// `folders` remembers the folders already looked at, so the files of one
/// folder cost one look at it, not one each.
fn refuse_symlinks_below(
    dir: &Path,
    path: &Path,
    folders: &mut Folders,
) -> Result<Option<fs::Metadata>, StorageError> {
    let Ok(rel) = path.strip_prefix(dir) else {
        return look_at(path);
    };
    let mut at = dir.to_path_buf();
    let mut components = rel.components().peekable();
    let mut last = None;
    while let Some(component) = components.next() {
        at.push(component);
        let is_folder = components.peek().is_some();
        if is_folder {
            match folders.seen.get(&at) {
                Some(true) => continue,
                // Missing: nothing below it exists either.
                Some(false) => return Ok(None),
                None => {}
            }
        }
        let found = fs::symlink_metadata(&at);
        if is_folder {
            let exists = !matches!(&found, Err(e) if e.kind() == io::ErrorKind::NotFound);
            if found.as_ref().is_ok_and(|m| !m.file_type().is_symlink()) || !exists {
                folders.seen.insert(at.clone(), exists);
            }
        }
        match found {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(StorageError {
                    op: "write through",
                    path: at,
                    source: io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "it is a symbolic link, which could lead outside the download folder",
                    ),
                })
            }
            Ok(meta) => last = Some(meta),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StorageError {
                    op: "inspect",
                    path: at,
                    source,
                })
            }
        }
    }
    Ok(last)
}

/// What is at `path` (links followed), if anything.
fn look_at(path: &Path) -> Result<Option<fs::Metadata>, StorageError> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StorageError {
            op: "inspect",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Folders below the download folder already looked at by
/// [`refuse_symlinks_below`]: `true` for a real folder, `false` for one
/// that does not exist.
#[derive(Default)]
struct Folders {
    seen: std::collections::HashMap<PathBuf, bool>,
}

/// Opens `path` for reading and writing, creating it if `create`; with
/// `no_follow`, a symbolic link at `path` itself is an error (`ELOOP`)
/// instead of being followed.
fn open_file(path: &Path, create: bool, no_follow: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(create).truncate(false);
    if no_follow {
        o.custom_flags(libc::O_NOFOLLOW);
    }
    o.open(path)
}

/// The on-disk path of every file of a torrent rooted at `dir`: `dir/name`
/// for a single-file torrent, `dir/name/<path...>` for a multi-file one.
/// Components were validated by the metainfo parser (no `..`, no separators).
pub fn file_paths(dir: &Path, name: &str, multi_file: bool, files: &[Vec<String>]) -> Vec<PathBuf> {
    if !multi_file {
        return vec![dir.join(name)];
    }
    let root = dir.join(name);
    files
        .iter()
        .map(|components| {
            let mut p = root.clone();
            for c in components {
                p.push(c);
            }
            p
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_files(paths: &[PathBuf]) -> Vec<Slot> {
        paths.iter().cloned().map(Slot::File).collect()
    }

    fn tmp(name: &str) -> PathBuf {
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

    #[test]
    fn pieces_crossing_regions_and_file_ends_land_exactly() {
        // Two files of a few regions each with odd ends, and pieces of an
        // odd length, so writes start mid-region, cross region boundaries,
        // end mid-region and reach into the last (partial) region of each
        // file, which must go through a map of its own. Written out of
        // order, and one piece twice (an endgame copy).
        let dir = tmp("regions");
        let lens = [5 * REGION + 12_345, 3 * REGION - 7];
        let layout = Layout::new(768 * 1024 + 5, &lens);
        let files: Vec<Vec<String>> = (0..2).map(|i| vec![format!("f{i}")]).collect();
        let paths = file_paths(&dir, "t", true, &files);
        let st = Storage::open(layout.clone(), paths.clone()).unwrap();
        let total = layout.total_length() as usize;
        let content: Vec<u8> = (0..total).map(|i| (i * 31 % 251) as u8).collect();
        let n = layout.num_pieces();
        let mut order: Vec<u32> = (0..n).map(|i| (i * 7) % n).collect();
        order.push(3);
        for p in order {
            let s = layout.piece_offset(p) as usize;
            let e = s + layout.piece_len(p) as usize;
            st.write_piece(p, &content[s..e]).unwrap();
        }
        st.sync().unwrap();
        let a = lens[0] as usize;
        assert!(fs::read(&paths[0]).unwrap() == content[..a]);
        assert!(fs::read(&paths[1]).unwrap() == content[a..]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_write_changes_the_modification_time() {
        // The second write of the same bytes goes through the region map
        // kept from the first, without a page fault: the time must move all
        // the same, or a resume state stamped between the two would match.
        let dir = tmp("mtime");
        let layout = Layout::new(256 * 1024, &[2 * REGION]);
        let paths = file_paths(&dir, "t", false, &[]);
        let st = Storage::open(layout, paths.clone()).unwrap();
        let piece = vec![7u8; 256 * 1024];
        st.write_piece(1, &piece).unwrap();
        let before = st.stamps().unwrap()[0];
        std::thread::sleep(std::time::Duration::from_millis(20));
        st.write_piece(1, &piece).unwrap();
        let after = st.stamps().unwrap()[0];
        assert!(after.mtime_ns > before.mtime_ns, "{before:?} {after:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn upload_windows_map_ranges_across_files() {
        let dir = tmp("window");
        let lens = [10u64, 0, 5, 40];
        let layout = Layout::new(16, &lens);
        let files: Vec<Vec<String>> = (0..4).map(|i| vec![format!("f{i}")]).collect();
        let paths = file_paths(&dir, "t", true, &files);
        let st = Storage::open(layout.clone(), paths.clone()).unwrap();
        let content: Vec<u8> = (100..155u8).collect();
        for p in 0..layout.num_pieces() {
            let s = layout.piece_offset(p) as usize;
            let e = s + layout.piece_len(p) as usize;
            st.write_piece(p, &content[s..e]).unwrap();
        }
        // Bytes 4..30 span files 0, 2 and 3.
        let w = st.map_upload_window(4, 26).unwrap();
        assert!(w.covers(4, 26) && w.covers(10, 5) && !w.covers(3, 2) && !w.covers(29, 2));
        let got: Vec<u8> = w.slices(8, 10).flatten().copied().collect();
        assert_eq!(got, &content[8..18]);
        assert_eq!(w.slices(8, 10).count(), 3, "one slice per file touched");
        let all: Vec<u8> = w.slices(4, 26).flatten().copied().collect();
        assert_eq!(all, &content[4..30]);
        // A file shortened underneath us is an error, not a map past its end.
        let f = OpenOptions::new().write(true).open(&paths[3]).unwrap();
        f.set_len(20).unwrap();
        let err = st.map_upload_window(16, 39).err().unwrap();
        assert!(err.to_string().contains("shortened"), "{err}");
        drop(w);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_are_created_sparse_and_never_truncated() {
        let dir = tmp("sparse");
        let layout = Layout::new(1 << 20, &[64 << 20]);
        let path = dir.join("big");
        fs::write(&path, b"keep").unwrap();
        let st = Storage::open(layout, vec![path.clone()]).unwrap();
        assert!(st.had_data());
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 64 << 20);
        assert!(meta.blocks() * 512 < 1 << 20, "file was not sparse");
        assert_eq!(&fs::read(&path).unwrap()[..4], b"keep");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn new_files_are_allocated_whole_and_files_with_data_are_left_alone() {
        let dir = tmp("allocate");
        let layout = Layout::new(1 << 20, &[8 << 20, 8 << 20, 8 << 20]);
        let paths: Vec<PathBuf> = ["new", "kept", "side"]
            .iter()
            .map(|n| dir.join(n))
            .collect();
        fs::write(&paths[1], b"keep").unwrap();
        let blocks = |p: &Path| fs::metadata(p).unwrap().blocks() * 512;
        let kept = blocks(&paths[1]);
        let slots = vec![
            Slot::File(paths[0].clone()),
            Slot::File(paths[1].clone()),
            Slot::Side(paths[2].clone()),
        ];
        let st = Storage::open_in(&dir, layout, slots, Allocation::Full).unwrap();
        // The new file has every block, at its length.
        assert_eq!(fs::metadata(&paths[0]).unwrap().len(), 8 << 20);
        assert!(blocks(&paths[0]) >= 8 << 20, "{}", blocks(&paths[0]));
        // A file with data is grown sparsely (an allocation would move
        // the time stamp the resume state compares).
        assert!(blocks(&paths[1]) < 1 << 20);
        assert_eq!(&fs::read(&paths[1]).unwrap()[..4], b"keep");
        // A side file only ever holds a piece's edge.
        assert!(blocks(&paths[2]) < 1 << 20);
        // The room the new file took is no longer counted as missing.
        assert_eq!(st.unallocated.load(Ordering::Relaxed), (8 << 20) - kept);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn symlinks_below_the_download_folder_are_never_written_through() {
        use std::os::unix::fs::symlink;
        let base = tmp("symlink");
        let outside = base.join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("f"), b"keep").unwrap();
        let dir = base.join("dir");
        fs::create_dir_all(dir.join("t")).unwrap();
        let layout = Layout::new(16, &[10, 10]);
        let files = vec![
            vec!["sub".to_string(), "f".to_string()],
            vec!["g".to_string()],
        ];
        // A folder of the torrent is a link to outside.
        symlink(&outside, dir.join("t").join("sub")).unwrap();
        let paths = file_paths(&dir, "t", true, &files);
        let err = Storage::open_in(&dir, layout.clone(), as_files(&paths), Allocation::Full)
            .err()
            .unwrap();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(err.to_string().contains("sub"), "{err}");
        assert_eq!(fs::read(outside.join("f")).unwrap(), b"keep");
        assert!(!dir.join("t").join("g").exists(), "nothing is created");
        // The file itself is a link.
        fs::remove_file(dir.join("t").join("sub")).unwrap();
        symlink(outside.join("f"), dir.join("t").join("g")).unwrap();
        assert!(
            Storage::open_in(&dir, layout.clone(), as_files(&paths), Allocation::Full).is_err()
        );
        assert_eq!(fs::read(outside.join("f")).unwrap(), b"keep");
        // The torrent's own folder is a link.
        fs::remove_dir_all(dir.join("t")).unwrap();
        symlink(&outside, dir.join("t")).unwrap();
        assert!(
            Storage::open_in(&dir, layout.clone(), as_files(&paths), Allocation::Full).is_err()
        );
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
        // The download folder itself may be a link.
        fs::remove_file(dir.join("t")).unwrap();
        let link = base.join("link");
        symlink(&dir, &link).unwrap();
        let paths = file_paths(&link, "t", true, &files);
        assert!(Storage::open_in(&link, layout, as_files(&paths), Allocation::Full).is_ok());
        assert!(dir.join("t").join("sub").join("f").is_file());
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn more_files_than_descriptors_kept_open() {
        let dir = tmp("many");
        let n = MAX_OPEN_FILES + 72;
        let lens = vec![10u64; n];
        let layout = Layout::new(16, &lens);
        let files: Vec<Vec<String>> = (0..n)
            .map(|i| vec![format!("d{}", i / 50), format!("f{i}")])
            .collect();
        let paths = file_paths(&dir, "t", true, &files);
        let st =
            Storage::open_in(&dir, layout.clone(), as_files(&paths), Allocation::Full).unwrap();
        // The first files are created at once, the others when written.
        assert!(paths[..MAX_OPEN_FILES].iter().all(|p| p.is_file()));
        assert!(!paths[MAX_OPEN_FILES].exists());
        assert!(st.open_files().entries.len() <= MAX_OPEN_FILES);
        assert_eq!(st.stamps().unwrap()[n - 1].length, 0);
        // Checking finds nothing and creates nothing.
        let mut buf = Vec::new();
        assert!(!st
            .check_piece(layout.num_pieces() - 1, &[0; 20], &mut buf)
            .unwrap());
        assert!(!paths[n - 1].exists());
        let content: Vec<u8> = (0..layout.total_length()).map(|i| i as u8).collect();
        let mut hashes = Vec::new();
        for p in 0..layout.num_pieces() {
            let s = layout.piece_offset(p) as usize;
            let e = s + layout.piece_len(p) as usize;
            st.write_piece(p, &content[s..e]).unwrap();
            hashes.push(<[u8; 20]>::from(Sha1::digest(&content[s..e])));
        }
        assert!(paths.iter().all(|p| p.is_file()), "written files exist");
        assert_eq!(st.stamps().unwrap()[n - 1].length, 10);
        assert!(st.open_files().entries.len() <= MAX_OPEN_FILES);
        // Files closed since they were written are synced all the same.
        st.sync().unwrap();
        assert!(st.dirty.iter().all(|d| !d.load(Ordering::Relaxed)));
        for (i, p) in paths.iter().enumerate() {
            assert_eq!(fs::read(p).unwrap(), &content[i * 10..i * 10 + 10]);
        }
        let mut buf = [0u8; 30];
        st.read(0, 5, &mut buf).unwrap();
        assert_eq!(&buf, &content[5..35]);
        assert!(st.check_all(&hashes, 2, &|_| {}).unwrap().is_full());
        assert!(st.open_files().entries.len() <= MAX_OPEN_FILES);
        // A file gone from the disk has a zero stamp.
        fs::remove_file(&paths[n - 1]).unwrap();
        let stamps = st.stamps().unwrap();
        assert_eq!(stamps[n - 1].length, 0);
        assert_eq!(stamps[0].length, 10);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_closed_file_is_not_reopened_through_a_link_planted_since() {
        use std::os::unix::fs::symlink;
        let base = tmp("replant");
        let outside = base.join("outside");
        fs::create_dir_all(&outside).unwrap();
        let dir = base.join("dir");
        let n = MAX_OPEN_FILES + 1;
        let layout = Layout::new(16, &vec![16u64; n]);
        let files: Vec<Vec<String>> = (0..n)
            .map(|i| vec![if i == 0 { "a" } else { "b" }.to_string(), format!("f{i}")])
            .collect();
        let paths = file_paths(&dir, "t", true, &files);
        let st = Storage::open_in(&dir, layout, as_files(&paths), Allocation::Full).unwrap();
        // The last file is not open (nor created: the first files filled
        // the cache); its folder becomes a link to outside.
        assert!(st.open_files().get(n - 1).is_none());
        fs::rename(dir.join("t").join("b"), base.join("moved")).unwrap();
        symlink(&outside, dir.join("t").join("b")).unwrap();
        fs::write(outside.join(format!("f{}", n - 1)), vec![0u8; 16]).unwrap();
        let err = st.write_piece(n as u32 - 1, &[7u8; 16]).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(
            fs::read(outside.join(format!("f{}", n - 1))).unwrap(),
            vec![0u8; 16]
        );
        // The file itself replaced by a link is refused too.
        fs::remove_file(dir.join("t").join("b")).unwrap();
        fs::rename(base.join("moved"), dir.join("t").join("b")).unwrap();
        let victim = paths[n - 1].clone();
        symlink(outside.join(format!("f{}", n - 1)), &victim).unwrap();
        assert!(st.write_piece(n as u32 - 1, &[7u8; 16]).is_err());
        assert_eq!(
            fs::read(outside.join(format!("f{}", n - 1))).unwrap(),
            vec![0u8; 16]
        );
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_folder_where_a_file_should_be_is_an_error_naming_it() {
        let dir = tmp("folder");
        let path = dir.join("x");
        fs::create_dir_all(&path).unwrap();
        let err = Storage::open(Layout::new(16, &[10]), vec![path.clone()])
            .err()
            .unwrap();
        assert!(err.to_string().contains("x"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}

//! Opening the storage and its files: each file looked at (links refused
//! below the download folder) before any is created, then created at its
//! length, allocated whole where asked and possible, or grown sparsely;
//! and a file closed by the open-file cache opened again, checked again.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::cache::{OpenFiles, MAX_OPEN_FILES};
use super::links::{look_at, refuse_symlinks_below, Folders};
use super::map::{fallocate, RegionWindow};
use super::paths::PathTable;
use super::{Allocation, Kept, Slot, Storage, StorageError};
use crate::layout::Layout;

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
        paths.shrink_to_fit();
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
            gate: Mutex::default(),
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
    pub(super) fn file(&self, i: usize) -> Result<Arc<File>, StorageError> {
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
        if let Err(e) = fallocate(f, 0, len) {
            log::debug!(
                "{}: not allocated at once ({e}); it is grown sparsely",
                self.paths.get(i).display(),
            );
            // Out of room, ext4 keeps what it did allocate (and the length
            // that covers it): give it back, so a download refused for lack
            // of room leaves no full file behind. The file held nothing.
            let _ = f.set_len(0);
            return 0;
        }
        self.allocated(want.saturating_sub(allocated));
        want
    }
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

#[cfg(test)]
mod tests {
    use super::super::tests::tmp;
    use super::super::*;
    use std::path::Path;

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

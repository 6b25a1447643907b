//! Free-space accounting: the bytes the files still need on disk (counted
//! when the storage is opened, less each file allocated whole since),
//! against what the filesystem says is free.

use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;

use super::{free_space, Kept, Storage, StorageError};

impl Storage {
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

    /// Counts `need` more bytes as allocated (a new file given its blocks
    /// whole).
    pub(super) fn allocated(&self, need: u64) {
        let _ = self
            .unallocated
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(need))
            });
    }
}

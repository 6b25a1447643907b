//! The free-space check at the start of a download: the chosen files'
//! whole size, less what the filesystem already allocated to them (a
//! resumed download needs only the rest), against the free space of the
//! filesystem that will hold them. It looks and creates nothing, so a
//! download refused for lack of room leaves nothing behind, and it names
//! the sizes in MiB/GiB.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::report::human;
use crate::storage::StorageError;

/// Bytes still to allocate for `files` (path, length): each file's length
/// less the blocks it already has (nothing for a missing file; a file
/// that is not a regular file counts whole, and is refused later).
pub fn needed(files: impl IntoIterator<Item = (PathBuf, u64)>) -> u64 {
    files
        .into_iter()
        .map(|(path, length)| {
            let allocated = match fs::symlink_metadata(&path) {
                Ok(m) if m.is_file() => m.blocks().saturating_mul(512),
                _ => 0,
            };
            length.saturating_sub(allocated)
        })
        .fold(0u64, u64::saturating_add)
}

/// Fails with a `StorageFull` error when the filesystem holding `dir` (or
/// its nearest existing parent: nothing is created) has less free space
/// than `needed` bytes. Filesystems that cannot tell are given the benefit
/// of the doubt.
pub fn check(dir: &Path, needed: u64) -> Result<(), StorageError> {
    if needed == 0 {
        return Ok(());
    }
    let mut at: PathBuf = dir.to_path_buf();
    while !at.exists() {
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p.to_path_buf(),
            _ => {
                at = PathBuf::from(".");
                break;
            }
        }
    }
    let Ok(f) = File::open(&at) else {
        return Ok(());
    };
    let Some(free) = crate::storage::free_space(&f) else {
        return Ok(());
    };
    if free >= needed {
        return Ok(());
    }
    Err(StorageError {
        op: "store the download in",
        path: dir.to_path_buf(),
        source: io::Error::new(
            io::ErrorKind::StorageFull,
            format!(
                "not enough free space: {} needed, {} free, {} missing",
                human(needed),
                human(free),
                human(needed - free)
            ),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_allocated_already_is_not_needed_again() {
        let dir = std::env::temp_dir().join(format!("tget-space-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let full = dir.join("full");
        fs::write(&full, vec![1u8; 64 * 1024]).unwrap();
        let missing = dir.join("missing");
        let n = needed([(full, 64 * 1024), (missing, 1000)]);
        assert_eq!(n, 1000);
        // Nothing needed: fine anywhere; an impossible need is refused,
        // from a folder that does not exist yet, which is not created.
        assert!(check(&dir.join("a/b"), 0).is_ok());
        let e = check(&dir.join("a/b"), u64::MAX / 2).unwrap_err();
        let e = e.to_string();
        assert!(e.contains("TiB needed, ") && e.contains("missing"), "{e}");
        assert!(!dir.join("a").exists());
        let _ = fs::remove_dir_all(&dir);
    }
}

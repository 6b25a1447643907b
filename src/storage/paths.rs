//! Where the files go: [`file_paths`] names each file's path on disk, and
//! [`PathTable`] keeps every path in one buffer.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::StorageError;

/// Every file's path, in one buffer: a torrent may have hundreds of
/// thousands of files, and a `PathBuf` each would cost some 70 bytes.
/// Paths below `base` are kept relative to it.
#[derive(Default)]
pub(super) struct PathTable {
    base: PathBuf,
    /// The paths' bytes, one after another; a path not below `base` is
    /// kept whole, after a NUL (which no path holds).
    bytes: Vec<u8>,
    /// Where each path ends in `bytes`.
    ends: Vec<u32>,
}

impl PathTable {
    pub(super) fn new(base: PathBuf, files: usize) -> PathTable {
        PathTable {
            base,
            bytes: Vec::new(),
            ends: Vec::with_capacity(files),
        }
    }

    /// Adds `path`; an error past 4 GiB of paths (a million files of a
    /// 4 KiB path each).
    pub(super) fn push(&mut self, path: &Path) -> Result<(), StorageError> {
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
    pub(super) fn get(&self, i: usize) -> PathBuf {
        let Some(&end) = self.ends.get(i) else {
            return PathBuf::new();
        };
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        match &self.bytes[start..end as usize] {
            [0, whole @ ..] => PathBuf::from(OsStr::from_bytes(whole)),
            rel => self.base.join(OsStr::from_bytes(rel)),
        }
    }
    /// Gives back the room the buffer has beyond its paths.
    pub(super) fn shrink_to_fit(&mut self) {
        self.bytes.shrink_to_fit();
    }
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

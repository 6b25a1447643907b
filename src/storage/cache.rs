//! The open-file cache: at most [`MAX_OPEN_FILES`] of the torrent's files
//! open at once, the least recently used closed when another is needed.

use std::fs::File;
use std::sync::{Arc, MutexGuard};

use super::Storage;

/// At most this many of the torrent's files are open at once; the least
/// recently used is closed when another is needed. A torrent of 100 000
/// files must not need 100 000 descriptors (the usual limit is 1 024).
pub const MAX_OPEN_FILES: usize = 128;

/// The open files: a small cache keyed by file index, least recently used
/// evicted. Handles are shared, so a file evicted while a read or write
/// still uses it closes when that finishes.
#[derive(Default)]
pub(super) struct OpenFiles {
    /// Bumped on every use; an entry's stamp says when it was last used.
    tick: u64,
    entries: Vec<(usize, u64, Arc<File>)>,
}

impl OpenFiles {
    pub(super) fn get(&mut self, file: usize) -> Option<Arc<File>> {
        self.tick += 1;
        let tick = self.tick;
        let e = self.entries.iter_mut().find(|e| e.0 == file)?;
        e.1 = tick;
        Some(e.2.clone())
    }

    pub(super) fn insert(&mut self, file: usize, f: Arc<File>) {
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

impl Storage {
    pub(super) fn open_files(&self) -> MutexGuard<'_, OpenFiles> {
        // The cache holds no invariant a panic elsewhere could break.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{as_files, tmp};
    use super::super::*;
    use sha1::{Digest, Sha1};

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
}

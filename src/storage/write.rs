//! Writing pieces: each span of a piece goes to its file (or to the
//! in-memory file), region by region, through the region window or a map
//! of the range (both in `map.rs`), after making sure the pages written
//! have disk blocks; and the sync that flushes what was written.

use std::fs::File;
use std::io;
use std::sync::atomic::Ordering;

use super::map::fallocate;
use super::{Storage, StorageError, REGION};

impl Storage {
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
                self.keep_in_memory(span.offset, chunk);
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

    /// Turns the result of `MADV_POPULATE_WRITE` on `len` bytes at `offset`
    /// of file `file` into the go-ahead for copying into them. The advice
    /// (Linux 5.14+) makes every page present and writable before anything
    /// touches it, so the copy cannot fault, and it reports what would have
    /// been SIGBUS (a full disk, a shortened file) as EFAULT, which becomes
    /// an error naming the cause. In a sparse file it also reserves the
    /// blocks (delayed allocation), far cheaper than a `fallocate` call per
    /// write, each a journal transaction (a file allocated whole at its
    /// creation, [`Allocation::Full`](super::Allocation::Full), needs
    /// neither). Kernels without the advice fall back to
    /// [`Storage::reserve`].
    pub(super) fn populated(
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
        if let Err(e) = fallocate(f, offset as i64, len as i64) {
            // Filesystems without fallocate: write through the map anyway.
            if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
                return Err(self.error("allocate space in", file, e));
            }
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::super::tests::tmp;
    use super::super::*;

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

    /// This thread's major page faults so far (Linux: field 12 of
    /// /proc/thread-self/stat), or `None` where that cannot be read.
    fn major_faults() -> Option<u64> {
        let stat = fs::read_to_string("/proc/thread-self/stat").ok()?;
        // The name in parentheses may hold spaces: count from its end.
        let rest = &stat[stat.rfind(')')? + 2..];
        rest.split(' ').nth(9)?.parse().ok()
    }

    #[test]
    fn writing_a_piece_reads_its_pages_in_one_batch() {
        // A fresh (sparse) file: each page written must first be read into
        // the page cache (zero-filled). Read one by one by the page faults
        // of the populate, that is a major fault per 4 KiB page; read ahead
        // in one batch first (MADV_WILLNEED), none. Both write paths: a
        // whole region through the window, the file's last partial region
        // through a map of its own.
        let Some(start) = major_faults() else {
            return; // not Linux's /proc: nothing to count
        };
        let dir = tmp("willneed");
        let piece = 256 * 1024;
        let layout = Layout::new(piece, &[REGION + 4 * piece]);
        let paths = file_paths(&dir, "t", false, &[]);
        let st = Storage::open(layout.clone(), paths.clone()).unwrap();
        let data = vec![9u8; piece as usize];
        for p in 0..layout.num_pieces() {
            st.write_piece(p, &data).unwrap();
        }
        let faults = major_faults().unwrap() - start;
        // 3 MiB written: 768 major faults without the batch read. A few
        // are allowed for anything else this thread touches.
        assert!(faults < 16, "{faults} major faults writing 3 MiB");
        st.sync().unwrap();
        assert_eq!(fs::read(&paths[0]).unwrap().len(), 3 << 20);
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
}

//! Upload windows: a range of the torrent mapped read-only, file by file,
//! whose pages a worker hands straight to the kernel for the socket (the
//! maps themselves are made in `map.rs`).

use memmap2::Mmap;

use super::{Storage, StorageError};

impl Storage {
    /// Maps `len` bytes at torrent offset `start` read-only, file by file,
    /// for uploading (see [`UploadWindow`]). The pages are read in at once
    /// (`MAP_POPULATE`). A file shortened underneath us is an error here.
    pub fn map_upload_window(&self, start: u64, len: u64) -> Result<UploadWindow, StorageError> {
        let mut maps = Vec::new();
        let mut at = start;
        for span in self.layout.spans(start, len) {
            let file = self.file(span.file)?;
            let map = self.upload_map(span.file, &file, span.offset, span.len)?;
            maps.push((at, map));
            at += span.len;
        }
        Ok(UploadWindow {
            start,
            len: at - start,
            maps,
        })
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

#[cfg(test)]
mod tests {
    use super::super::tests::tmp;
    use super::super::*;
    use std::fs::{self, OpenOptions};

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
}

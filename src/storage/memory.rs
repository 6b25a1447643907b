//! The in-memory file of `--no-save` streaming ([`Slot::Memory`]): its
//! bytes are held by offset until the caller has passed them on.
//!
//! [`Slot::Memory`]: super::Slot::Memory

use std::io;

use super::{Storage, StorageError};

impl Storage {
    /// Copies `buf.len()` bytes at `offset` of the in-memory file out of the
    /// chunks written there; an error if some are not (or no longer) held.
    pub(super) fn read_memory(
        &self,
        file: usize,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), StorageError> {
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

    /// Keeps `chunk`, written at `offset` of the in-memory file, until
    /// [`Storage::release_memory`] lets it go. What it overwrites goes: a
    /// chunk starting inside it, and the part of one that reaches into it.
    /// A read finds the chunk starting last at or before each byte, so a
    /// streamed piece's unverified chunk left behind inside a verified
    /// piece written whole would otherwise be read in its place.
    pub(super) fn keep_in_memory(&self, offset: u64, chunk: &[u8]) {
        let Ok(mut mem) = self.memory.lock() else {
            return;
        };
        let end = offset + chunk.len() as u64;
        let inside: Vec<u64> = mem.range(offset..end).map(|(&start, _)| start).collect();
        let mut tail = None;
        for start in inside {
            if let Some(old) = mem.remove(&start) {
                let old_end = start + old.len() as u64;
                if old_end > end {
                    tail = Some((end, old[(end - start) as usize..].to_vec()));
                }
            }
        }
        if let Some((&start, old)) = mem.range_mut(..offset).next_back() {
            let old_end = start + old.len() as u64;
            if old_end > offset {
                if old_end > end {
                    tail = Some((end, old[(end - start) as usize..].to_vec()));
                }
                old.truncate((offset - start) as usize);
            }
        }
        mem.insert(offset, chunk.to_vec());
        if let Some((at, bytes)) = tail {
            mem.insert(at, bytes);
        }
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
}

#[cfg(test)]
mod tests {
    use crate::layout::Layout;
    use crate::storage::{Slot, Storage};

    #[test]
    fn a_piece_written_whole_over_streamed_chunks_reads_back_whole() {
        let st = Storage::open_slots(Layout::new(65536, &[131_072]), vec![Slot::Memory]).unwrap();
        // A claimant's unverified chunks of piece 0, from a bad peer.
        st.write_at(0, 16384, &[0xEE; 16384]).unwrap();
        st.write_at(0, 32768, &[0xEE; 32768]).unwrap();
        // Then the piece verified, written whole by another writer.
        st.write_piece(0, &[1; 65536]).unwrap();
        let mut got = vec![0; 65536];
        st.read(0, 0, &mut got).unwrap();
        assert!(
            got.iter().all(|&b| b == 1),
            "stale streamed bytes read back"
        );
        // A chunk written inside a longer one splits it; reads still work.
        st.write_piece(1, &[2; 65536]).unwrap();
        st.write_at(1, 16384, &[3; 16384]).unwrap();
        st.read(1, 0, &mut got).unwrap();
        assert!(got[..16384].iter().all(|&b| b == 2));
        assert!(got[16384..32768].iter().all(|&b| b == 3));
        assert!(got[32768..].iter().all(|&b| b == 2));
    }
}

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
    /// [`Storage::release_memory`] lets it go.
    pub(super) fn keep_in_memory(&self, offset: u64, chunk: &[u8]) {
        if let Ok(mut mem) = self.memory.lock() {
            mem.insert(offset, chunk.to_vec());
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

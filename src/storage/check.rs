//! The hash check: a piece's bytes on disk against its SHA-1, and every
//! piece (or a list of them) on several threads.

use std::sync::atomic::Ordering;

use sha1::{Digest, Sha1};

use super::{Hashes, Storage, StorageError};
use crate::wire::Bitfield;

impl Storage {
    /// Whether every file piece `piece` touches has been created on disk.
    fn piece_on_disk(&self, piece: u32) -> bool {
        self.layout
            .piece_spans(piece)
            .all(|span| self.on_disk[span.file].load(Ordering::Relaxed))
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
}

//! Who may write a piece's bytes, and when: the rule that keeps a
//! verified piece's bytes in the file what its SHA-1 says.
//!
//! Two kinds of writer reach a piece's range:
//! - **A claimant** streams the piece: it hashes each block in order from
//!   its own memory and writes it to the file before the whole piece is
//!   checked, so it holds a window of the piece, not all of it. At most
//!   one worker (or web seed slot) holds a piece's claim at a time.
//! - **A verified writer** holds the whole piece in memory (an endgame
//!   copy, or a piece small enough to hold) and writes it only once its
//!   SHA-1 matched.
//!
//! The gate keeps three promises, each under one mutex:
//! - a claim is exclusive, so unverified bytes come from one writer only,
//!   and that writer's hash is over exactly the bytes it wrote;
//! - once a piece is **sealed** (verified and in the file), no unverified
//!   write reaches it: a claimant's late write is refused, not made;
//! - a verified write of a sealed piece is skipped (the bytes are there).
//!
//! So an endgame copy finishing first seals the piece, and the claimant
//! still streaming it (perhaps from a peer sending garbage) cannot undo
//! that; a claimant finishing first seals it, and the copy's write is
//! skipped. The piece is reported done to the coordinator only after it
//! is sealed.

use super::{Storage, StorageError};

/// The gate's state: the claimed pieces (at most one per writer thread, a
/// few per worker) and one bit per piece for the sealed ones.
#[derive(Debug, Default)]
pub(super) struct Gate {
    claimed: Vec<u32>,
    sealed: Vec<u64>,
}

impl Gate {
    fn is_sealed(&self, piece: u32) -> bool {
        self.sealed
            .get(piece as usize / 64)
            .is_some_and(|w| w & (1 << (piece % 64)) != 0)
    }

    fn seal(&mut self, piece: u32) {
        let word = piece as usize / 64;
        if self.sealed.len() <= word {
            self.sealed.resize(word + 1, 0);
        }
        self.sealed[word] |= 1 << (piece % 64);
    }

    fn unclaim(&mut self, piece: u32) {
        self.claimed.retain(|&p| p != piece);
    }
}

impl Storage {
    fn gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims `piece` for writing its bytes before they are verified.
    /// `false` when another writer holds the claim or the piece is sealed:
    /// then the caller must hold the piece whole and use
    /// [`Storage::write_verified`].
    pub fn claim(&self, piece: u32) -> bool {
        let mut g = self.gate();
        if g.is_sealed(piece) || g.claimed.contains(&piece) {
            return false;
        }
        g.claimed.push(piece);
        true
    }

    /// Gives back the claim on `piece` (dropped, failed its check, or a
    /// write failed). Its unverified bytes stay in the file until the next
    /// claimant or a verified writer overwrites them.
    pub fn unclaim(&self, piece: u32) {
        self.gate().unclaim(piece);
    }

    /// Writes `data` at `offset` inside `piece`, which the caller claimed,
    /// before the piece is verified. `Ok(false)`, with nothing written,
    /// once the piece is sealed: another writer verified it, and the
    /// caller's bytes must not replace those.
    pub fn write_claimed(
        &self,
        piece: u32,
        offset: u32,
        data: &[u8],
    ) -> Result<bool, StorageError> {
        let g = self.gate();
        if g.is_sealed(piece) {
            return Ok(false);
        }
        debug_assert!(
            g.claimed.contains(&piece),
            "piece {piece} written unclaimed"
        );
        self.write_at(piece, offset, data)?;
        Ok(true)
    }

    /// The claimant's piece matched its SHA-1, and all its bytes are in
    /// the file: sealed, and the claim given back. `false` when it was
    /// sealed already (a verified copy came first).
    pub fn seal_claimed(&self, piece: u32) -> bool {
        let mut g = self.gate();
        g.unclaim(piece);
        let first = !g.is_sealed(piece);
        g.seal(piece);
        first
    }

    /// Writes a whole piece whose SHA-1 matched, unless it is sealed
    /// already, and seals it. `Ok(false)` when it was sealed before
    /// (nothing written).
    pub fn write_verified(&self, piece: u32, data: &[u8]) -> Result<bool, StorageError> {
        let mut g = self.gate();
        if g.is_sealed(piece) {
            return Ok(false);
        }
        self.write_piece(piece, data)?;
        g.seal(piece);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use crate::layout::Layout;
    use crate::storage::Storage;

    fn storage(tag: &str) -> (Storage, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("tget-gate-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let st = Storage::open(Layout::new(32768, &[3 * 32768]), vec![dir.join("f")]).unwrap();
        (st, dir)
    }

    fn piece_bytes(st: &Storage, dir: &std::path::Path, piece: usize) -> Vec<u8> {
        drop(st.sync());
        std::fs::read(dir.join("f")).unwrap()[piece * 32768..(piece + 1) * 32768].to_vec()
    }

    #[test]
    fn a_claim_is_held_by_one_writer_until_given_back_or_sealed() {
        let (st, dir) = storage("claim");
        assert!(st.claim(1));
        assert!(!st.claim(1), "a second claimant");
        assert!(st.claim(2), "another piece");
        st.unclaim(1);
        assert!(st.claim(1), "given back, claimed again");
        assert!(st.seal_claimed(1));
        assert!(!st.claim(1), "sealed");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn once_a_copy_sealed_the_piece_the_claimants_late_bytes_never_reach_it() {
        let (st, dir) = storage("copy-first");
        assert!(st.claim(0));
        // The claimant streams its first block (from a peer sending 7s).
        assert!(st.write_claimed(0, 0, &[7; 16384]).unwrap());
        // A whole copy from another peer verifies and is written.
        assert!(st.write_verified(0, &[1; 32768]).unwrap());
        // The claimant's next block is refused, and so is its seal.
        assert!(!st.write_claimed(0, 16384, &[7; 16384]).unwrap());
        assert!(!st.write_claimed(0, 0, &[7; 16384]).unwrap());
        assert!(!st.seal_claimed(0), "sealed already");
        assert_eq!(piece_bytes(&st, &dir, 0), vec![1; 32768]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn once_the_claimant_sealed_the_piece_a_copy_is_not_written_again() {
        let (st, dir) = storage("claimant-first");
        assert!(st.claim(2));
        assert!(st.write_claimed(2, 0, &[5; 16384]).unwrap());
        assert!(st.write_claimed(2, 16384, &[5; 16384]).unwrap());
        assert!(st.seal_claimed(2));
        assert!(!st.write_verified(2, &[9; 32768]).unwrap(), "skipped");
        assert_eq!(piece_bytes(&st, &dir, 2), vec![5; 32768]);
        let _ = std::fs::remove_dir_all(dir);
    }
}

//! The piece picker: which piece a peer should send us next.
//!
//! Owned by the coordinator thread alone (workers ask it by message), so it
//! needs no lock. It keeps, per piece, whether we have it, how many connected
//! peers have it (availability) and how many workers are fetching it.
//!
//! Order: the first few pieces are picked at random among what the peer has,
//! so that a first piece completes quickly and we have something to trade;
//! after that the rarest piece the peer has, ties broken at random. When no
//! piece is left unassigned (endgame), a piece already being fetched by
//! another worker may be handed out again; the first copy to verify wins and
//! the others are cancelled. The copy goes to the piece handed out last
//! among those with the fewest copies: the one deepest in its worker's
//! queue, so the furthest from done.
//!
//! Cost: a pick must not scan every piece of a torrent of a million. The
//! pieces we want, lack and nobody fetches ("free") are kept in one array
//! grouped by availability (bucket 0 first), with each piece's position, so
//! a change of availability, an assignment or a release moves one piece in
//! O(1) (or O(buckets), at most the number of peers). A pick probes the
//! rarest non-empty bucket at random, then walks it, then the next bucket,
//! and so on: for a peer that has most pieces the first probe hits; for
//! one that has few, the cost is the number of rarer free pieces it lacks.
//! Bucket 0 is never probed: no counted peer has its pieces. A peer with
//! almost none of the free pieces can exhaust the probe budget, and the
//! pick then scans that peer's bitfield 64 pieces at a time, exactly as
//! rarest-first prescribes. Pieces being fetched are kept in a list of
//! their own, so endgame looks only at those. Memory: about 15 bytes per
//! piece (availability 2, workers 1, position 4, bucket entry 4, when
//! handed out 4).

pub use crate::rng::Rng;
use crate::wire::Bitfield;

/// How many pieces are picked at random before rarest-first takes over.
const RANDOM_FIRST: u32 = 4;

/// At most this many workers fetch the same piece in endgame.
const MAX_ENDGAME_COPIES: u8 = 3;

/// Pieces looked at in the availability buckets before a pick gives up on
/// them and scans the peer's bitfield instead: this many, or a sixteenth
/// of the pieces if more (a probe costs about what scanning a few pieces
/// does, so giving up earlier would only make the worst case slower).
const PROBE_BUDGET: u32 = 512;

/// Random probes into a bucket before it is walked in order.
const RANDOM_PROBES: u32 = 8;

/// A streaming window this short is scanned directly.
const SHORT_WINDOW: u32 = 1024;

/// `pos` of a piece in neither list.
const NOWHERE: u32 = u32::MAX;

/// What probing the buckets found.
enum Probe {
    Found(u32),
    /// Every free piece some peer has was looked at: none fits.
    Nothing,
    /// The budget ran out first.
    GaveUp,
}

/// Piece state for picking.
#[derive(Debug)]
pub struct Picker {
    have: Bitfield,
    /// Pieces of the selected files (all pieces when no file was chosen).
    wanted: Bitfield,
    /// Wanted pieces we do not have yet.
    missing: u32,
    /// Connected peers that have each piece (saturating).
    availability: Vec<u16>,
    /// Workers currently fetching each piece.
    assigned: Vec<u8>,
    /// The free pieces (wanted, missing, not assigned), grouped by
    /// availability: bucket `a` is `free[start[a]..start[a + 1]]`.
    free: Vec<u32>,
    /// Bucket boundaries; the last entry is `free.len()`.
    start: Vec<u32>,
    /// Wanted, missing pieces some worker fetches, in no order.
    busy: Vec<u32>,
    /// When each piece was last handed out to a first worker (a count of
    /// such hand-outs).
    handed: Vec<u32>,
    /// Hand-outs to a first worker so far.
    hand_outs: u32,
    /// Each piece's index in `free` (when not assigned) or `busy` (when
    /// assigned), or `NOWHERE` for pieces we have or do not want.
    pos: Vec<u32>,
    /// When streaming: only pieces in this range are picked, its first
    /// piece before any other.
    window: Option<std::ops::Range<u32>>,
    /// Pieces per extent (a stretch of the torrent written through one
    /// storage map); 1 turns extent affinity off.
    extent: u32,
    /// The extent of the last rarest-first pick.
    last_extent: Option<u32>,
    rng: Rng,
}

/// The set bits of `bytes` (a wire bitfield: the high bit of byte 0 is
/// index 0) at indexes in `range`, ascending, read 64 at a time so that
/// empty stretches cost little.
struct Ones<'a> {
    bytes: &'a [u8],
    /// Byte offset of the next 8 bytes to read.
    next: usize,
    /// Bits of the current 8 bytes not returned yet (high bit = `base`).
    word: u64,
    base: u64,
    end: u64,
}

fn ones_in(bytes: &[u8], range: std::ops::Range<u32>) -> Ones<'_> {
    let from = (range.start / 64) as usize * 8;
    let mut ones = Ones {
        bytes,
        next: from,
        word: 0,
        base: 0,
        end: range.end as u64,
    };
    ones.load();
    // Drop the bits before the start of the range.
    ones.word &= u64::MAX >> (range.start % 64);
    ones
}

impl Ones<'_> {
    /// Reads the next 8 bytes (zero past the end) into `word`.
    fn load(&mut self) {
        let mut buf = [0u8; 8];
        if let Some(rest) = self.bytes.get(self.next..) {
            let n = rest.len().min(8);
            buf[..n].copy_from_slice(&rest[..n]);
        }
        self.word = u64::from_be_bytes(buf);
        self.base = self.next as u64 * 8;
        self.next += 8;
    }
}

impl Iterator for Ones<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        loop {
            if self.word != 0 {
                let bit = self.word.leading_zeros();
                self.word &= !((1u64 << 63) >> bit);
                let i = self.base + bit as u64;
                if i >= self.end {
                    self.word = 0;
                    self.next = self.bytes.len();
                    return None;
                }
                return u32::try_from(i).ok();
            }
            if self.next >= self.bytes.len() || self.next as u64 * 8 >= self.end {
                return None;
            }
            self.load();
        }
    }
}

impl Picker {
    /// A picker over all the pieces, of which `have` are already verified.
    pub fn new(have: Bitfield, rng: Rng) -> Picker {
        let mut all = Bitfield::new(have.len());
        all.fill();
        Picker::with_wanted(have, all, rng)
    }

    /// A picker that fetches only the `wanted` pieces.
    pub fn with_wanted(have: Bitfield, wanted: Bitfield, rng: Rng) -> Picker {
        let n = have.len();
        let mut free = Vec::new();
        let mut pos = vec![NOWHERE; n as usize];
        for i in ones_in(wanted.as_bytes(), 0..n) {
            if !have.get(i) {
                pos[i as usize] = free.len() as u32;
                free.push(i);
            }
        }
        free.shrink_to_fit();
        Picker {
            have,
            wanted,
            missing: free.len() as u32,
            availability: vec![0; n as usize],
            assigned: vec![0; n as usize],
            start: vec![0, free.len() as u32],
            free,
            busy: Vec::new(),
            handed: vec![0; n as usize],
            hand_outs: 0,
            pos,
            window: None,
            extent: 1,
            last_extent: None,
            rng,
        }
    }

    /// Sets how many consecutive pieces make one extent. Among pieces
    /// equally rare, a pick then prefers the extent of the last pick, so
    /// the workers fill one stretch of the file at a time and the storage
    /// writes it through one map (docs/ARCHITECTURE.md) instead of
    /// scattering writes over the whole torrent. Rarest-first still
    /// decides: a piece of that extent is taken only if it is as rare as
    /// the piece the pick found.
    pub fn set_extent(&mut self, pieces: u32) {
        self.extent = pieces.max(1);
    }

    /// Restricts picking to `window` (streaming), or lifts the restriction.
    pub fn set_window(&mut self, window: Option<std::ops::Range<u32>>) {
        self.window = window;
    }

    /// The verified pieces.
    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    /// Whether every wanted piece is verified.
    pub fn is_complete(&self) -> bool {
        self.missing == 0
    }

    /// The wanted pieces.
    pub fn wanted(&self) -> &Bitfield {
        &self.wanted
    }

    /// A peer announced all the pieces in `bits`.
    pub fn add_peer(&mut self, bits: &Bitfield) {
        for i in ones_in(bits.as_bytes(), 0..self.have.len()) {
            self.add_have(i);
        }
    }

    /// A peer with pieces `bits` went away.
    pub fn remove_peer(&mut self, bits: &Bitfield) {
        for i in ones_in(bits.as_bytes(), 0..self.have.len()) {
            let idx = i as usize;
            if self.availability[idx] == 0 {
                continue;
            }
            if self.is_free(i) {
                // Down one bucket: swap with the first of its bucket, which
                // then starts one later.
                let a = self.availability[idx] as usize;
                let first = self.start[a];
                self.swap_free(self.pos[idx], first);
                self.start[a] += 1;
            }
            self.availability[idx] -= 1;
        }
    }

    /// A peer announced piece `i` (already range-checked).
    pub fn add_have(&mut self, i: u32) {
        let idx = i as usize;
        let Some(&a) = self.availability.get(idx) else {
            return;
        };
        if a == u16::MAX {
            return;
        }
        if self.is_free(i) {
            // Up one bucket: swap with the last of its bucket, which then
            // ends one earlier.
            let a = a as usize;
            self.ensure_bucket(a + 1);
            let last = self.start[a + 1] - 1;
            self.swap_free(self.pos[idx], last);
            self.start[a + 1] -= 1;
        }
        self.availability[idx] += 1;
    }

    /// How many connected peers have piece `i`.
    pub fn availability(&self, i: u32) -> u32 {
        self.availability.get(i as usize).map_or(0, |&a| a as u32)
    }

    /// Picks a piece for a worker whose peer has `peer`, skipping pieces in
    /// `holding` (those the worker already fetches). Returns `None` when the
    /// peer has nothing we can use.
    ///
    /// `peer` is expected to have been counted ([`Picker::add_peer`],
    /// [`Picker::add_have`]), as the coordinator always does: pieces no
    /// counted peer has are only found by the full scan a pick falls back
    /// on when probing is not enough.
    pub fn pick(&mut self, peer: &Bitfield, holding: &[u32]) -> Option<u32> {
        if let Some(w) = &self.window {
            // The head of the window is due first.
            let head = w.start;
            if w.contains(&head) && peer.get(head) && self.is_free(head) {
                self.assign(head);
                return Some(head);
            }
        }
        let random_phase = self.have.count() < RANDOM_FIRST && self.window.is_none();
        let n = self.have.len();
        let range = match &self.window {
            Some(w) => w.start.min(n)..w.end.min(n),
            None => 0..n,
        };
        let mut best = if range.len() as u32 <= SHORT_WINDOW {
            self.scan(peer, range, random_phase)
        } else {
            match self.probe(peer, random_phase) {
                Probe::Found(i) => Some(i),
                Probe::Nothing => None,
                Probe::GaveUp => self.scan(peer, range, random_phase),
            }
        };
        if let Some(i) = best {
            if !random_phase && self.window.is_none() {
                best = Some(self.with_affinity(peer, i));
            }
        }
        if best.is_none() {
            best = self.pick_endgame(peer, holding);
        }
        if let Some(i) = best {
            self.assign(i);
        }
        best
    }

    /// `found` (a free piece the peer has, from rarest-first), or a piece
    /// as rare of the last pick's extent, if one is free and the peer has
    /// it; remembers the extent of what it returns.
    fn with_affinity(&mut self, peer: &Bitfield, found: u32) -> u32 {
        if self.extent <= 1 {
            return found;
        }
        let rarity = self.availability[found as usize];
        if let Some(e) = self.last_extent {
            let n = self.have.len();
            let from = e.saturating_mul(self.extent).min(n);
            let to = from.saturating_add(self.extent).min(n);
            for j in from..to {
                if self.is_free(j) && peer.get(j) && self.availability[j as usize] <= rarity {
                    return j;
                }
            }
        }
        self.last_extent = Some(found / self.extent);
        found
    }

    /// Looks for a free piece the peer has in the buckets, rarest first
    /// (or, in the random phase, among all of them at once), with a budget.
    fn probe(&mut self, peer: &Bitfield, random_phase: bool) -> Probe {
        let mut budget = PROBE_BUDGET.max(self.have.len() / 16);
        let buckets = self.start.len() - 1;
        // Bucket 0 is skipped: no counted peer has its pieces. The random
        // phase looks at all the other buckets as one.
        let ranges = if random_phase { 1 } else { buckets - 1 };
        for r in 0..ranges {
            let (lo, hi) = if random_phase {
                (self.start[1.min(buckets)], self.start[buckets])
            } else {
                (self.start[r + 1], self.start[r + 2])
            };
            let len = hi - lo;
            if len == 0 {
                continue;
            }
            // A few random probes (uniform among what the peer has), then
            // the bucket in order from a random point.
            for _ in 0..RANDOM_PROBES.min(len) {
                let i = self.free[(lo + self.rng.below(len as u64) as u32) as usize];
                budget = budget.saturating_sub(1);
                if peer.get(i) && self.in_window(i) {
                    return Probe::Found(i);
                }
            }
            let from = self.rng.below(len as u64) as u32;
            for k in 0..len {
                if budget == 0 {
                    return Probe::GaveUp;
                }
                budget -= 1;
                let i = self.free[(lo + (from + k) % len) as usize];
                if peer.get(i) && self.in_window(i) {
                    return Probe::Found(i);
                }
            }
        }
        Probe::Nothing
    }

    /// The exact choice, looking at every piece of `peer` in `range`: the
    /// rarest free one (any free one in the random phase), ties broken at
    /// random.
    fn scan(
        &mut self,
        peer: &Bitfield,
        range: std::ops::Range<u32>,
        random_phase: bool,
    ) -> Option<u32> {
        let mut best: Option<u32> = None;
        let mut best_avail = u32::MAX;
        let mut ties = 0u64;
        for i in ones_in(peer.as_bytes(), range) {
            if !self.is_free(i) {
                continue;
            }
            let avail = if random_phase {
                0
            } else {
                self.availability[i as usize] as u32
            };
            if avail < best_avail {
                best = Some(i);
                best_avail = avail;
                ties = 1;
            } else if avail == best_avail {
                // Reservoir sampling keeps each tie equally likely.
                ties += 1;
                if self.rng.below(ties) == 0 {
                    best = Some(i);
                }
            }
        }
        best
    }

    /// Endgame: a piece the peer has that other workers already fetch, the one
    /// with the fewest copies in flight, and among those the one handed out
    /// last (the furthest from done: the deepest in its worker's queue);
    /// when streaming, the lowest (the reader waits for it first).
    fn pick_endgame(&self, peer: &Bitfield, holding: &[u32]) -> Option<u32> {
        let mut best: Option<(u8, std::cmp::Reverse<u32>, u32)> = None;
        for &i in &self.busy {
            let copies = self.assigned[i as usize];
            if copies >= MAX_ENDGAME_COPIES
                || !peer.get(i)
                || holding.contains(&i)
                || !self.in_window(i)
            {
                continue;
            }
            let when = if self.window.is_some() {
                0
            } else {
                self.handed[i as usize]
            };
            let key = (copies, std::cmp::Reverse(when), i);
            if best.is_none_or(|b| key < b) {
                best = Some(key);
            }
        }
        best.map(|(_, _, i)| i)
    }

    /// Whether any worker besides the first is fetching piece `i`.
    pub fn copies(&self, i: u32) -> u8 {
        self.assigned.get(i as usize).copied().unwrap_or(0)
    }

    /// A worker stopped fetching piece `i` without completing it.
    pub fn release(&mut self, i: u32) {
        let idx = i as usize;
        let Some(a) = self.assigned.get_mut(idx) else {
            return;
        };
        if *a == 0 {
            return;
        }
        *a -= 1;
        if *a == 0 && self.pos[idx] != NOWHERE {
            self.busy_remove(i);
            self.free_insert(i);
        }
    }

    fn in_window(&self, i: u32) -> bool {
        self.window.as_ref().is_none_or(|w| w.contains(&i))
    }

    /// Piece `i` verified and written. Returns false if we already had it.
    pub fn complete(&mut self, i: u32) -> bool {
        let idx = i as usize;
        if idx >= self.assigned.len() {
            return false;
        }
        if self.pos[idx] != NOWHERE {
            if self.assigned[idx] > 0 {
                self.busy_remove(i);
            } else {
                self.free_remove(i);
            }
        }
        self.assigned[idx] = 0;
        let new = self.have.set(i);
        if new && self.wanted.get(i) {
            self.missing -= 1;
        }
        new
    }

    /// Whether we want piece `i` and lack it.
    pub fn wants(&self, i: u32) -> bool {
        self.wanted.get(i) && !self.have.get(i)
    }

    /// How many pieces we want, lack, and no worker fetches.
    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    /// How many pieces of `peer` we want and lack.
    pub fn wanted_from(&self, peer: &Bitfield) -> u32 {
        peer.as_bytes()
            .iter()
            .zip(self.wanted.as_bytes())
            .zip(self.have.as_bytes())
            .map(|((&p, &w), &h)| (p & w & !h).count_ones())
            .sum()
    }

    /// Whether piece `i` is wanted, missing and fetched by no worker.
    fn is_free(&self, i: u32) -> bool {
        let idx = i as usize;
        self.pos.get(idx).is_some_and(|&p| p != NOWHERE) && self.assigned[idx] == 0
    }

    /// A worker starts fetching piece `i` (wanted and missing).
    fn assign(&mut self, i: u32) {
        let idx = i as usize;
        if self.assigned[idx] == 0 {
            self.free_remove(i);
            self.pos[idx] = self.busy.len() as u32;
            self.busy.push(i);
            self.hand_outs = self.hand_outs.wrapping_add(1);
            self.handed[idx] = self.hand_outs;
        }
        self.assigned[idx] = self.assigned[idx].saturating_add(1);
    }

    /// Makes sure bucket `b` exists (possibly empty).
    fn ensure_bucket(&mut self, b: usize) {
        while self.start.len() < b + 2 {
            self.start.push(self.free.len() as u32);
        }
    }

    fn swap_free(&mut self, x: u32, y: u32) {
        self.free.swap(x as usize, y as usize);
        self.pos[self.free[x as usize] as usize] = x;
        self.pos[self.free[y as usize] as usize] = y;
    }

    /// Puts piece `i` among the free pieces, in its availability's bucket:
    /// at the end of the last bucket, then one bucket down at a time.
    fn free_insert(&mut self, i: u32) {
        let a = self.availability[i as usize] as usize;
        self.ensure_bucket(a);
        let buckets = self.start.len() - 1;
        self.pos[i as usize] = self.free.len() as u32;
        self.free.push(i);
        self.start[buckets] += 1;
        for b in (a + 1..buckets).rev() {
            let first = self.start[b];
            self.swap_free(self.pos[i as usize], first);
            self.start[b] += 1;
        }
    }

    /// Takes piece `i` out of the free pieces: up one bucket at a time to
    /// the end of the last, then off the end.
    fn free_remove(&mut self, i: u32) {
        let a = self.availability[i as usize] as usize;
        let buckets = self.start.len() - 1;
        for b in a..buckets - 1 {
            let last = self.start[b + 1] - 1;
            self.swap_free(self.pos[i as usize], last);
            self.start[b + 1] -= 1;
        }
        let last = self.free.len() as u32 - 1;
        self.swap_free(self.pos[i as usize], last);
        self.free.pop();
        self.start[buckets] -= 1;
        self.pos[i as usize] = NOWHERE;
    }

    fn busy_remove(&mut self, i: u32) {
        let p = self.pos[i as usize] as usize;
        self.busy.swap_remove(p);
        if let Some(&moved) = self.busy.get(p) {
            self.pos[moved as usize] = p as u32;
        }
        self.pos[i as usize] = NOWHERE;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Picker {
        /// Panics unless the lists and buckets agree with the per-piece state.
        fn check(&self) {
            let n = self.have.len();
            assert_eq!(*self.start.last().unwrap() as usize, self.free.len());
            assert_eq!(self.start[0], 0);
            assert!(self.start.windows(2).all(|w| w[0] <= w[1]));
            for (b, w) in self.start.windows(2).enumerate() {
                for k in w[0]..w[1] {
                    let i = self.free[k as usize];
                    assert_eq!(self.availability[i as usize] as usize, b, "piece {i}");
                    assert_eq!(self.pos[i as usize], k);
                }
            }
            for (k, &i) in self.busy.iter().enumerate() {
                assert_eq!(self.pos[i as usize], k as u32);
            }
            let mut free = 0;
            let mut busy = 0;
            for i in 0..n {
                let a = self.assigned[i as usize];
                if self.wants(i) && a == 0 {
                    free += 1;
                } else if self.wants(i) {
                    busy += 1;
                } else {
                    assert_eq!(self.pos[i as usize], NOWHERE);
                }
            }
            assert_eq!((free, busy), (self.free.len(), self.busy.len()));
        }

        /// The lowest availability among the free pieces of `peer`.
        fn rarest_for(&self, peer: &Bitfield) -> Option<u32> {
            peer.ones()
                .filter(|&i| self.is_free(i))
                .map(|i| self.availability(i))
                .min()
        }
    }

    fn bits(n: u32, ones: &[u32]) -> Bitfield {
        let mut b = Bitfield::new(n);
        for &i in ones {
            b.set(i);
        }
        b
    }

    fn picker_past_random_phase(n: u32) -> Picker {
        // Pieces 0..4 already had, so rarest-first is in force.
        Picker::new(bits(n, &[0, 1, 2, 3]), Rng::new(7))
    }

    #[test]
    fn rarest_piece_first() {
        let mut p = picker_past_random_phase(10);
        let everyone = bits(10, &(0..10).collect::<Vec<_>>());
        p.add_peer(&everyone);
        p.add_peer(&bits(10, &[4, 5, 6, 7, 8]));
        p.add_peer(&bits(10, &[4, 5, 6, 7, 9]));
        // 8 and 9 are held by two peers, 4..=7 by three: 8 or 9 come first.
        let first = p.pick(&everyone, &[]).unwrap();
        assert!(first == 8 || first == 9, "picked {first}");
        let second = p.pick(&everyone, &[]).unwrap();
        assert!(second == 8 || second == 9);
        assert_ne!(first, second);
        let third = p.pick(&everyone, &[]).unwrap();
        assert!((4..=7).contains(&third));
    }

    #[test]
    fn equally_rare_pieces_are_taken_an_extent_at_a_time() {
        let n = 4 + 64;
        let mut p = picker_past_random_phase(n);
        p.set_extent(8);
        let everyone = bits(n, &(0..n).collect::<Vec<_>>());
        p.add_peer(&everyone);
        // All equally rare: after the first pick, the rest of its extent
        // comes first, then the next extent is started where the pick lands.
        let first = p.pick(&everyone, &[]).unwrap();
        let extent = first / 8;
        let mut taken = vec![first];
        let left = (extent * 8..extent * 8 + 8).filter(|&i| i >= 4).count();
        for _ in 1..left {
            let i = p.pick(&everyone, &[]).unwrap();
            assert_eq!(i / 8, extent, "{i} left extent {extent} after {taken:?}");
            taken.push(i);
        }
        let next = p.pick(&everyone, &[]).unwrap();
        assert_ne!(next / 8, extent);
        // A rarer piece elsewhere still wins over the extent.
        let mut p = picker_past_random_phase(n);
        p.set_extent(8);
        p.add_peer(&everyone);
        p.add_peer(&bits(n, &(0..n - 1).collect::<Vec<_>>()));
        let first = p.pick(&everyone, &[]).unwrap();
        assert_eq!(first, n - 1, "the rarest piece");
        let second = p.pick(&everyone, &[]).unwrap();
        assert_eq!(second / 8, (n - 1) / 8, "then its extent");
    }

    #[test]
    fn only_pieces_the_peer_has_and_we_lack() {
        let mut p = picker_past_random_phase(8);
        let peer = bits(8, &[2, 3, 6]);
        p.add_peer(&peer);
        assert_eq!(p.pick(&peer, &[]), Some(6));
        // Now 6 is assigned; nothing else new: endgame hands 6 out again
        // only to a worker that does not already hold it.
        assert_eq!(p.pick(&peer, &[6]), None);
        assert_eq!(p.pick(&peer, &[]), Some(6));
        assert_eq!(p.copies(6), 2);
    }

    #[test]
    fn ties_are_broken_at_random() {
        let mut seen = std::collections::HashSet::new();
        for seed in 0..50 {
            let mut p = Picker::new(bits(8, &[0, 1, 2, 3]), Rng::new(seed));
            let peer = bits(8, &[4, 5, 6, 7]);
            p.add_peer(&peer);
            seen.insert(p.pick(&peer, &[]).unwrap());
        }
        assert!(seen.len() >= 3, "only {seen:?}");
    }

    #[test]
    fn first_pieces_are_random_not_rarest() {
        let mut seen = std::collections::HashSet::new();
        for seed in 0..50 {
            let mut p = Picker::new(Bitfield::new(8), Rng::new(seed));
            let all = bits(8, &(0..8).collect::<Vec<_>>());
            p.add_peer(&all);
            p.add_peer(&bits(8, &[0, 1, 2, 3, 4, 5, 6]));
            // Piece 7 is rarest, but the random phase ignores rarity.
            seen.insert(p.pick(&all, &[]).unwrap());
        }
        assert!(seen.len() >= 3, "only {seen:?}");
    }

    #[test]
    fn released_pieces_are_picked_again_and_completed_ones_never() {
        let mut p = picker_past_random_phase(6);
        let peer = bits(6, &[4, 5]);
        p.add_peer(&peer);
        let a = p.pick(&peer, &[]).unwrap();
        let b = p.pick(&peer, &[a]).unwrap();
        assert_ne!(a, b);
        p.release(a);
        assert_eq!(p.pick(&peer, &[b]), Some(a));
        assert!(p.complete(a));
        assert!(!p.complete(a));
        assert!(p.complete(b));
        assert!(p.is_complete());
        assert_eq!(p.pick(&peer, &[]), None);
    }

    #[test]
    fn an_endgame_copy_goes_to_the_piece_handed_out_last() {
        let mut p = picker_past_random_phase(8);
        let peer = bits(8, &[5, 6, 7]);
        p.add_peer(&peer);
        let first: Vec<u32> = (0..3).map(|_| p.pick(&peer, &[]).unwrap()).collect();
        // Each piece once; the first copy goes to the last picked.
        assert_eq!(p.pick(&peer, &[]), Some(first[2]));
        // Released and handed out again, a piece counts as handed out
        // last: among those with one copy, it is copied first.
        p.release(first[0]);
        assert_eq!(p.pick(&peer, &[]), Some(first[0]), "free again");
        assert_eq!(p.pick(&peer, &[]), Some(first[0]), "the newest");
        assert_eq!(
            p.pick(&peer, &[]),
            Some(first[1]),
            "the only one left with one copy"
        );
        p.check();
    }

    #[test]
    fn endgame_copies_are_bounded() {
        let mut p = picker_past_random_phase(5);
        let peer = bits(5, &[4]);
        p.add_peer(&peer);
        assert_eq!(p.pick(&peer, &[]), Some(4));
        assert_eq!(p.pick(&peer, &[]), Some(4));
        assert_eq!(p.pick(&peer, &[]), Some(4));
        assert_eq!(p.pick(&peer, &[]), None);
    }

    #[test]
    fn unwanted_pieces_are_never_picked_and_do_not_block_completion() {
        let mut p = Picker::with_wanted(Bitfield::new(6), bits(6, &[1, 2]), Rng::new(3));
        let all = bits(6, &[0, 1, 2, 3, 4, 5]);
        p.add_peer(&all);
        let mut got = vec![p.pick(&all, &[]).unwrap(), p.pick(&all, &[]).unwrap()];
        got.sort();
        assert_eq!(got, vec![1, 2]);
        assert_eq!(p.wanted_from(&all), 2);
        p.complete(1);
        assert!(!p.is_complete());
        p.complete(2);
        assert!(p.is_complete());
    }

    #[test]
    fn a_window_picks_its_head_first_and_nothing_outside() {
        let mut p = picker_past_random_phase(20);
        let all = bits(20, &(0..20).collect::<Vec<_>>());
        p.add_peer(&all);
        p.set_window(Some(8..11));
        assert_eq!(p.pick(&all, &[]), Some(8), "head first");
        let mut rest = vec![p.pick(&all, &[8]).unwrap(), p.pick(&all, &[8]).unwrap()];
        rest.sort();
        assert_eq!(rest, vec![9, 10]);
        // Only endgame copies inside the window remain.
        let extra = p.pick(&all, &[8, 9, 10]);
        assert_eq!(extra, None);
    }

    #[test]
    fn rarest_first_with_many_pieces_probes_the_rarest_bucket() {
        // 20 000 pieces: picks go through the buckets, not a scan.
        let n = 20_000;
        let mut p = picker_past_random_phase(n);
        let all = bits(n, &(0..n).collect::<Vec<_>>());
        let rare: Vec<u32> = (0..n).filter(|i| i % 1000 == 7).collect();
        let common: Vec<u32> = (0..n).filter(|i| i % 1000 != 7).collect();
        // Everything is held by three peers except `rare`, held by one.
        p.add_peer(&all);
        p.add_peer(&bits(n, &common));
        p.add_peer(&bits(n, &common));
        p.check();
        let mut got: Vec<u32> = (0..rare.len())
            .map(|_| p.pick(&all, &[]).unwrap())
            .collect();
        got.sort();
        assert_eq!(got, rare, "the rarest pieces first");
        let next = p.pick(&all, &[]).unwrap();
        assert_eq!(p.availability(next), 3);
        p.check();
    }

    #[test]
    fn a_peer_with_few_pieces_still_gets_its_rarest() {
        // A seeder makes every piece common; a second peer has three
        // pieces. Probing the seeder-only bucket for the second peer's
        // pieces runs out of budget, and the scan finds them.
        let n = 50_000;
        let mut p = picker_past_random_phase(n);
        let all = bits(n, &(0..n).collect::<Vec<_>>());
        let few = bits(n, &[10_000, 20_000, 49_999]);
        p.add_peer(&all);
        p.add_peer(&few);
        let picked: Vec<u32> = (0..3).map(|_| p.pick(&few, &[]).unwrap()).collect();
        let mut got = picked.clone();
        got.sort();
        assert_eq!(got, vec![10_000, 20_000, 49_999]);
        // Nothing free left for it: endgame copies, then nothing.
        assert_eq!(p.pick(&few, &got), None);
        assert_eq!(p.pick(&few, &[]), Some(picked[2]));
        p.check();
    }

    #[test]
    fn a_long_window_is_probed_and_never_left() {
        let n = 10_000;
        let mut p = picker_past_random_phase(n);
        let all = bits(n, &(0..n).collect::<Vec<_>>());
        p.add_peer(&all);
        p.add_peer(&bits(n, &(0..5000).collect::<Vec<_>>()));
        p.set_window(Some(4000..7000));
        assert_eq!(p.pick(&all, &[]), Some(4000), "head first");
        // 5000..7000 are the rarest in the window.
        for _ in 0..2000 {
            let i = p.pick(&all, &[]).unwrap();
            assert!((5000..7000).contains(&i), "{i}");
        }
        for _ in 0..999 {
            let i = p.pick(&all, &[]).unwrap();
            assert!((4001..5000).contains(&i), "{i}");
        }
        assert_eq!(p.pick(&all, &[]), Some(4000), "an endgame copy");
        p.check();
    }

    #[test]
    fn first_pieces_are_random_with_many_pieces() {
        let n = 10_000;
        let mut seen = std::collections::HashSet::new();
        for seed in 0..20 {
            let mut p = Picker::new(Bitfield::new(n), Rng::new(seed));
            let all = bits(n, &(0..n).collect::<Vec<_>>());
            p.add_peer(&all);
            p.add_peer(&bits(n, &(1..n).collect::<Vec<_>>()));
            // Piece 0 is rarest, but the random phase ignores rarity.
            seen.insert(p.pick(&all, &[]).unwrap());
        }
        assert!(seen.len() >= 15, "only {seen:?}");
    }

    #[test]
    fn random_operations_keep_rarest_first_and_the_buckets_consistent() {
        let n = 3000;
        let mut rng = Rng::new(99);
        let mut p = picker_past_random_phase(n);
        // Extent affinity must never override rarest-first.
        p.set_extent(8);
        let mut peers: Vec<Bitfield> = Vec::new();
        let mut held: Vec<u32> = Vec::new();
        for step in 0..4000 {
            match rng.below(10) {
                0 if peers.len() < 6 => {
                    let mut b = Bitfield::new(n);
                    let density = 1 + rng.below(100);
                    for i in 0..n {
                        if rng.below(100) < density {
                            b.set(i);
                        }
                    }
                    p.add_peer(&b);
                    peers.push(b);
                }
                1 if !peers.is_empty() => {
                    let b = peers.swap_remove(rng.below(peers.len() as u64) as usize);
                    p.remove_peer(&b);
                }
                2 if !peers.is_empty() => {
                    let k = rng.below(peers.len() as u64) as usize;
                    let i = rng.below(n as u64) as u32;
                    if peers[k].set(i) {
                        p.add_have(i);
                    }
                }
                3 if !held.is_empty() => {
                    let i = held.swap_remove(rng.below(held.len() as u64) as usize);
                    p.release(i);
                }
                4 if !held.is_empty() => {
                    let i = held.swap_remove(rng.below(held.len() as u64) as usize);
                    p.complete(i);
                }
                _ if !peers.is_empty() => {
                    let k = rng.below(peers.len() as u64) as usize;
                    let rarest = p.rarest_for(&peers[k]);
                    if let Some(i) = p.pick(&peers[k], &[]) {
                        assert!(peers[k].get(i));
                        if let Some(r) = rarest {
                            assert_eq!(p.availability(i), r, "step {step}: not the rarest");
                        }
                        held.push(i);
                    }
                }
                _ => {}
            }
            if step % 97 == 0 {
                p.check();
            }
        }
        p.check();
    }

    #[test]
    fn set_bits_are_found_in_any_range() {
        let n = 300;
        let set: Vec<u32> = vec![0, 1, 7, 8, 63, 64, 65, 127, 128, 200, 255, 256, 299];
        let b = bits(n, &set);
        let all: Vec<u32> = ones_in(b.as_bytes(), 0..n).collect();
        assert_eq!(all, set);
        for (lo, hi) in [
            (1, 300),
            (8, 64),
            (63, 129),
            (64, 65),
            (250, 1000),
            (0, 0),
            (299, 300),
        ] {
            let want: Vec<u32> = set
                .iter()
                .copied()
                .filter(|i| (lo..hi).contains(i))
                .collect();
            let got: Vec<u32> = ones_in(b.as_bytes(), lo..hi).collect();
            assert_eq!(got, want, "{lo}..{hi}");
        }
        assert_eq!(ones_in(&[], 0..10).count(), 0);
    }

    #[test]
    fn availability_follows_peers() {
        let mut p = Picker::new(Bitfield::new(4), Rng::new(1));
        let a = bits(4, &[0, 1]);
        p.add_peer(&a);
        p.add_have(1);
        assert_eq!(p.availability(1), 2);
        p.remove_peer(&a);
        assert_eq!(p.availability(0), 0);
        assert_eq!(p.availability(1), 1);
        assert_eq!(p.wanted_from(&bits(4, &[0, 3])), 2);
    }
}

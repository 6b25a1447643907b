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
//! the others are cancelled.

pub use crate::rng::Rng;
use crate::wire::Bitfield;

/// How many pieces are picked at random before rarest-first takes over.
const RANDOM_FIRST: u32 = 4;

/// At most this many workers fetch the same piece in endgame.
const MAX_ENDGAME_COPIES: u8 = 3;

/// Piece state for picking.
#[derive(Debug)]
pub struct Picker {
    have: Bitfield,
    /// Pieces of the selected files (all pieces when no file was chosen).
    wanted: Bitfield,
    /// Wanted pieces we do not have yet.
    missing: u32,
    availability: Vec<u32>,
    /// Workers currently fetching each piece.
    assigned: Vec<u8>,
    /// When streaming: only pieces in this range are picked, its first
    /// piece before any other.
    window: Option<std::ops::Range<u32>>,
    rng: Rng,
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
        let n = have.len() as usize;
        let missing = wanted.ones().filter(|&i| !have.get(i)).count() as u32;
        Picker {
            have,
            wanted,
            missing,
            availability: vec![0; n],
            assigned: vec![0; n],
            window: None,
            rng,
        }
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
        for i in bits.ones() {
            self.availability[i as usize] += 1;
        }
    }

    /// A peer with pieces `bits` went away.
    pub fn remove_peer(&mut self, bits: &Bitfield) {
        for i in bits.ones() {
            let a = &mut self.availability[i as usize];
            *a = a.saturating_sub(1);
        }
    }

    /// A peer announced piece `i` (already range-checked).
    pub fn add_have(&mut self, i: u32) {
        self.availability[i as usize] += 1;
    }

    /// How many connected peers have piece `i`.
    pub fn availability(&self, i: u32) -> u32 {
        self.availability[i as usize]
    }

    /// Picks a piece for a worker whose peer has `peer`, skipping pieces in
    /// `holding` (those the worker already fetches). Returns `None` when the
    /// peer has nothing we can use.
    pub fn pick(&mut self, peer: &Bitfield, holding: &[u32]) -> Option<u32> {
        if let Some(w) = &self.window {
            // The head of the window is due first.
            let head = w.start;
            if w.contains(&head)
                && peer.get(head)
                && self.wants(head)
                && self.assigned[head as usize] == 0
            {
                self.assigned[head as usize] += 1;
                return Some(head);
            }
        }
        let random_phase = self.have.count() < RANDOM_FIRST && self.window.is_none();
        let mut best: Option<u32> = None;
        let mut best_avail = u32::MAX;
        let mut ties = 0u64;
        for i in peer.ones() {
            let idx = i as usize;
            if !self.wants(i) || self.assigned[idx] > 0 || !self.in_window(i) {
                continue;
            }
            let avail = if random_phase {
                0
            } else {
                self.availability[idx]
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
        if best.is_none() {
            best = self.pick_endgame(peer, holding);
        }
        if let Some(i) = best {
            self.assigned[i as usize] += 1;
        }
        best
    }

    /// Endgame: a piece the peer has that other workers already fetch, the one
    /// with the fewest copies in flight.
    fn pick_endgame(&mut self, peer: &Bitfield, holding: &[u32]) -> Option<u32> {
        let mut best: Option<u32> = None;
        let mut best_copies = MAX_ENDGAME_COPIES;
        for i in peer.ones() {
            let copies = self.assigned[i as usize];
            if !self.wants(i) || copies == 0 || holding.contains(&i) || !self.in_window(i) {
                continue;
            }
            if copies < best_copies {
                best = Some(i);
                best_copies = copies;
            }
        }
        best
    }

    /// Whether any worker besides the first is fetching piece `i`.
    pub fn copies(&self, i: u32) -> u8 {
        self.assigned[i as usize]
    }

    /// A worker stopped fetching piece `i` without completing it.
    pub fn release(&mut self, i: u32) {
        let a = &mut self.assigned[i as usize];
        *a = a.saturating_sub(1);
    }

    fn in_window(&self, i: u32) -> bool {
        self.window.as_ref().is_none_or(|w| w.contains(&i))
    }

    /// Piece `i` verified and written. Returns false if we already had it.
    pub fn complete(&mut self, i: u32) -> bool {
        self.assigned[i as usize] = 0;
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

    /// How many pieces of `peer` we want and lack.
    pub fn wanted_from(&self, peer: &Bitfield) -> u32 {
        peer.ones().filter(|&i| self.wants(i)).count() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

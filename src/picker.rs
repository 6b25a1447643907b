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
    availability: Vec<u32>,
    /// Workers currently fetching each piece.
    assigned: Vec<u8>,
    /// Pieces neither had nor wanted (unselected files, later issues).
    rng: Rng,
}

impl Picker {
    /// A picker over `num_pieces` pieces of which `have` are already verified.
    pub fn new(have: Bitfield, rng: Rng) -> Picker {
        let n = have.len() as usize;
        Picker {
            have,
            availability: vec![0; n],
            assigned: vec![0; n],
            rng,
        }
    }

    /// The verified pieces.
    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    /// Whether every piece is verified.
    pub fn is_complete(&self) -> bool {
        self.have.is_full()
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
        let random_phase = self.have.count() < RANDOM_FIRST;
        let mut best: Option<u32> = None;
        let mut best_avail = u32::MAX;
        let mut ties = 0u64;
        for i in peer.ones() {
            let idx = i as usize;
            if self.have.get(i) || self.assigned[idx] > 0 {
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
            if self.have.get(i) || copies == 0 || holding.contains(&i) {
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

    /// Piece `i` verified and written. Returns false if we already had it.
    pub fn complete(&mut self, i: u32) -> bool {
        self.assigned[i as usize] = 0;
        self.have.set(i)
    }

    /// Whether we lack piece `i`.
    pub fn wants(&self, i: u32) -> bool {
        !self.have.get(i)
    }

    /// How many pieces of `peer` we lack.
    pub fn wanted_from(&self, peer: &Bitfield) -> u32 {
        peer.ones().filter(|&i| !self.have.get(i)).count() as u32
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

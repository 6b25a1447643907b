//! The choker: which peers may download from us.
//!
//! A pure function, [`choose`], over a table of the connected peers (rates,
//! flags, how long they have been connected and unchoked). The coordinator
//! owns the table and calls it every [`ROUND`] (10 s); nothing here keeps
//! state or looks at a clock, so the rules are tested on plain tables.
//! docs/SEEDING.md describes the algorithm with its numbers.
//!
//! - **Leeching** (we still want pieces): the regular slots go to the
//!   interested peers that gave us the most over the last round (download
//!   rate from them: tit-for-tat). Ties fall back to the seeding order.
//! - **Seeding** (we want nothing): the regular slots rotate. A peer keeps
//!   its slot for a turn of [`SEED_TURN`] (30 s), ranked by our upload rate
//!   to it; a peer that took nothing for a whole round while unchoked ends
//!   its turn early. Then come the peers that have waited longest since
//!   their last turn (round-robin, so every interested peer gets one), and
//!   last the peers whose turn is over, by upload rate, which keep their
//!   slot only if nobody is waiting.
//! - **Snubbed** peers (unchoking us, yet nothing received for
//!   [`SNUB_AFTER`] while we are interested) get no regular slot.
//! - **One optimistic unchoke** on top of the regular slots, moved every
//!   [`OPTIMISTIC_ROUNDS`] rounds (30 s) to a random interested peer outside
//!   the regular set; peers connected for less than [`NEW_PEER`] are
//!   [`NEW_PEER_WEIGHT`] times as likely to get it.

use std::cmp::Reverse;
use std::time::Duration;

use crate::rng::Rng;

/// How often the coordinator re-runs the choker.
pub const ROUND: Duration = Duration::from_secs(10);
/// The optimistic unchoke moves every this many rounds (30 s).
pub const OPTIMISTIC_ROUNDS: u64 = 3;
/// Regular upload slots unless `--upload-slots` says otherwise.
pub const DEFAULT_SLOTS: usize = 4;
/// A peer unchoking us that sent nothing for this long is snubbed.
pub const SNUB_AFTER: Duration = Duration::from_secs(60);
/// How long a seeding turn lasts.
pub const SEED_TURN: Duration = Duration::from_secs(30);
/// Peers connected for less than this count as new for the optimistic draw.
pub const NEW_PEER: Duration = Duration::from_secs(60);
/// How much likelier a new peer is to be drawn as the optimistic unchoke.
pub const NEW_PEER_WEIGHT: u64 = 3;

/// Whether we are downloading (tit-for-tat) or only uploading (round-robin).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// We still want pieces: reward the peers that give us the most.
    Leeching,
    /// We want nothing: share the slots out in turns.
    Seeding,
}

/// What the choker knows about one connected peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRow {
    /// The caller's name for the peer (the coordinator uses the worker index).
    pub key: usize,
    /// The peer wants pieces we have.
    pub interested: bool,
    /// The peer unchokes us but sent nothing for [`SNUB_AFTER`].
    pub snubbed: bool,
    /// Bytes per second we received from the peer over the last round.
    pub download_rate: u64,
    /// Bytes per second we sent to the peer over the last round.
    pub upload_rate: u64,
    /// How long the connection has been up.
    pub connected_for: Duration,
    /// How long the peer has held a regular slot (`None`: it holds none).
    pub unchoked_for: Option<Duration>,
    /// How long since the peer was last unchoked (or connected, if never).
    pub waiting_for: Duration,
}

/// Who is unchoked after a round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Choice {
    /// The regular slots, best first (at most `slots` keys).
    pub regular: Vec<usize>,
    /// The optimistic unchoke, never one of `regular`.
    pub optimistic: Option<usize>,
}

impl Choice {
    /// Whether `key` is unchoked (regular or optimistic).
    pub fn unchokes(&self, key: usize) -> bool {
        self.optimistic == Some(key) || self.regular.contains(&key)
    }
}

/// Runs one round of the choker.
///
/// `optimistic` is the current optimistic unchoke; `rotate` says whether
/// this round moves it (every [`OPTIMISTIC_ROUNDS`] rounds). The current one
/// is kept when not rotating, as long as it is still interested and did not
/// earn a regular slot.
pub fn choose(
    peers: &[PeerRow],
    mode: Mode,
    slots: usize,
    optimistic: Option<usize>,
    rotate: bool,
    rng: &mut Rng,
) -> Choice {
    let regular = regular_slots(peers, mode, slots);
    let candidates: Vec<&PeerRow> = peers
        .iter()
        .filter(|p| p.interested && !regular.contains(&p.key))
        .collect();
    let keep = optimistic.filter(|k| !rotate && candidates.iter().any(|p| p.key == *k));
    let optimistic = keep.or_else(|| {
        // Prefer someone new to the slot when there is a choice.
        let fresh: Vec<&PeerRow> = candidates
            .iter()
            .copied()
            .filter(|p| Some(p.key) != optimistic)
            .collect();
        let pool = if fresh.is_empty() {
            &candidates
        } else {
            &fresh
        };
        draw_optimistic(pool, rng)
    });
    Choice {
        regular,
        optimistic,
    }
}

/// The regular slots: up to `slots` interested, unsnubbed peers.
pub fn regular_slots(peers: &[PeerRow], mode: Mode, slots: usize) -> Vec<usize> {
    let mut order: Vec<&PeerRow> = peers
        .iter()
        .filter(|p| p.interested && !p.snubbed)
        .collect();
    order.sort_by_key(|p| seed_rank(p));
    if mode == Mode::Leeching {
        // Stable: equal download rates keep the seeding order.
        order.sort_by_key(|p| Reverse(p.download_rate));
    }
    order.iter().take(slots).map(|p| p.key).collect()
}

/// Where a peer stands in the seeding order (smaller is better): in its
/// turn by upload rate, then waiting longest first, then turn over by
/// upload rate; the key breaks remaining ties.
fn seed_rank(p: &PeerRow) -> (u8, Reverse<u128>, usize) {
    match p.unchoked_for {
        Some(held) if held < SEED_TURN && !(held >= ROUND && p.upload_rate == 0) => {
            (0, Reverse(p.upload_rate as u128), p.key)
        }
        None => (1, Reverse(p.waiting_for.as_nanos()), p.key),
        Some(_) => (2, Reverse(p.upload_rate as u128), p.key),
    }
}

/// A weighted draw among `pool`: new peers count [`NEW_PEER_WEIGHT`] times.
pub fn draw_optimistic(pool: &[&PeerRow], rng: &mut Rng) -> Option<usize> {
    let weight = |p: &PeerRow| {
        if p.connected_for < NEW_PEER {
            NEW_PEER_WEIGHT
        } else {
            1
        }
    };
    let total: u64 = pool.iter().map(|p| weight(p)).sum();
    if total == 0 {
        return None;
    }
    let mut r = rng.below(total);
    for p in pool {
        let w = weight(p);
        if r < w {
            return Some(p.key);
        }
        r -= w;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    /// An interested peer connected 5 minutes ago, choked for 20 s.
    fn peer(key: usize) -> PeerRow {
        PeerRow {
            key,
            interested: true,
            snubbed: false,
            download_rate: 0,
            upload_rate: 0,
            connected_for: S(300),
            unchoked_for: None,
            waiting_for: S(20),
        }
    }

    fn down(key: usize, rate: u64) -> PeerRow {
        PeerRow {
            download_rate: rate,
            ..peer(key)
        }
    }

    #[test]
    fn leeching_unchokes_the_peers_that_give_us_most() {
        let peers = [
            down(0, 10),
            down(1, 500),
            down(2, 40),
            down(3, 900),
            down(4, 0),
            down(5, 300),
        ];
        let c = choose(&peers, Mode::Leeching, 4, None, true, &mut Rng::new(1));
        assert_eq!(c.regular, vec![3, 1, 5, 2]);
        assert!(matches!(c.optimistic, Some(0) | Some(4)));
    }

    #[test]
    fn uninterested_and_snubbed_peers_get_no_regular_slot() {
        let peers = [
            PeerRow {
                interested: false,
                ..down(0, 1000)
            },
            PeerRow {
                snubbed: true,
                ..down(1, 800)
            },
            down(2, 5),
        ];
        let c = choose(&peers, Mode::Leeching, 4, None, true, &mut Rng::new(2));
        assert_eq!(c.regular, vec![2]);
        // The snubbed peer may still be the optimistic unchoke; the
        // uninterested one may not.
        assert_eq!(c.optimistic, Some(1));
    }

    #[test]
    fn slots_bound_the_regular_set() {
        let peers: Vec<PeerRow> = (0..10).map(|k| down(k, k as u64 * 100)).collect();
        for slots in [0, 1, 4, 9] {
            let c = choose(&peers, Mode::Leeching, slots, None, true, &mut Rng::new(3));
            assert_eq!(c.regular.len(), slots);
            assert!(c.optimistic.is_some());
            assert!(!c.regular.contains(&c.optimistic.unwrap()));
        }
        // Everyone fits: no one is left for the optimistic slot.
        let c = choose(&peers, Mode::Leeching, 10, None, true, &mut Rng::new(3));
        assert_eq!(c.regular.len(), 10);
        assert_eq!(c.optimistic, None);
    }

    #[test]
    fn seeding_ranks_by_upload_rate_within_the_turn() {
        let held = |key, up| PeerRow {
            upload_rate: up,
            unchoked_for: Some(S(10)),
            ..peer(key)
        };
        let peers = [held(0, 100), held(1, 700), held(2, 300), peer(3)];
        let r = regular_slots(&peers, Mode::Seeding, 2);
        assert_eq!(r, vec![1, 2]);
        // Download rates do not matter to a seed.
        let mut p2 = peers.clone();
        p2[0].download_rate = 1 << 30;
        assert_eq!(regular_slots(&p2, Mode::Seeding, 2), vec![1, 2]);
        // ... but do to a leecher.
        assert_eq!(regular_slots(&p2, Mode::Leeching, 2), vec![0, 1]);
    }

    #[test]
    fn seeding_hands_an_expired_turn_to_the_longest_waiting_peer() {
        let peers = [
            PeerRow {
                upload_rate: 5000,
                unchoked_for: Some(S(30)),
                ..peer(0)
            },
            PeerRow {
                waiting_for: S(40),
                ..peer(1)
            },
            PeerRow {
                waiting_for: S(90),
                ..peer(2)
            },
        ];
        assert_eq!(regular_slots(&peers, Mode::Seeding, 1), vec![2]);
        assert_eq!(regular_slots(&peers, Mode::Seeding, 2), vec![2, 1]);
        // Nobody waiting: the expired peer keeps its slot.
        assert_eq!(regular_slots(&peers, Mode::Seeding, 3), vec![2, 1, 0]);
    }

    #[test]
    fn seeding_ends_a_turn_early_when_the_peer_took_nothing() {
        let idle = PeerRow {
            unchoked_for: Some(S(10)),
            upload_rate: 0,
            ..peer(0)
        };
        let busy = PeerRow {
            unchoked_for: Some(S(10)),
            upload_rate: 1,
            ..peer(1)
        };
        let fresh = PeerRow {
            unchoked_for: Some(S(5)),
            ..peer(2)
        };
        let waiting = peer(3);
        let peers = [idle, busy, fresh, waiting];
        // busy and fresh keep their turns; waiting beats idle.
        assert_eq!(regular_slots(&peers, Mode::Seeding, 3), vec![1, 2, 3]);
    }

    /// Simulates rounds of a seed with 4 slots and 10 interested peers that
    /// take whatever they are given: every peer gets a regular turn within
    /// a few turns' time, and no peer holds a slot for much longer than a turn.
    #[test]
    fn seeding_round_robin_gives_every_peer_a_turn() {
        let n = 10;
        let mut peers: Vec<PeerRow> = (0..n)
            .map(|k| PeerRow {
                waiting_for: S(k as u64), // arbitrary initial order
                ..peer(k)
            })
            .collect();
        let mut turns = vec![0u32; n];
        let mut longest_hold = Duration::ZERO;
        let mut opt = None;
        let mut rng = Rng::new(9);
        for round in 0..30u64 {
            let c = choose(
                &peers,
                Mode::Seeding,
                4,
                opt,
                round % OPTIMISTIC_ROUNDS == 0,
                &mut rng,
            );
            opt = c.optimistic;
            for p in peers.iter_mut() {
                let regular = c.regular.contains(&p.key);
                match (p.unchoked_for, regular) {
                    (None, true) => {
                        turns[p.key] += 1;
                        p.unchoked_for = Some(Duration::ZERO);
                    }
                    (Some(_), false) => {
                        p.unchoked_for = None;
                        p.waiting_for = Duration::ZERO;
                    }
                    _ => {}
                }
                // The next round happens ROUND later.
                if let Some(h) = p.unchoked_for.as_mut() {
                    *h += ROUND;
                    longest_hold = longest_hold.max(*h);
                    p.upload_rate = 50_000;
                } else {
                    p.waiting_for += ROUND;
                    p.upload_rate = if c.optimistic == Some(p.key) {
                        50_000
                    } else {
                        0
                    };
                }
            }
        }
        // 30 rounds × 4 slots / 3 rounds per turn = 40 turns over 10 peers.
        for (k, t) in turns.iter().enumerate() {
            assert!(*t >= 3, "peer {k} had {t} turns: {turns:?}");
        }
        assert!(longest_hold <= SEED_TURN, "held {longest_hold:?}");
    }

    #[test]
    fn optimistic_is_kept_between_rotations_and_moved_on_rotation() {
        let peers: Vec<PeerRow> = (0..6).map(|k| down(k, 100 - k as u64)).collect();
        let mut rng = Rng::new(4);
        // Regular: 0..4; candidates 4 and 5.
        let c = choose(&peers, Mode::Leeching, 4, Some(5), false, &mut rng);
        assert_eq!(c.optimistic, Some(5));
        let c = choose(&peers, Mode::Leeching, 4, Some(5), true, &mut rng);
        assert_eq!(c.optimistic, Some(4), "rotation prefers someone else");
        // The current optimistic peer lost interest: replaced at once.
        let mut p2 = peers.clone();
        p2[5].interested = false;
        let c = choose(&p2, Mode::Leeching, 4, Some(5), false, &mut rng);
        assert_eq!(c.optimistic, Some(4));
        // The optimistic peer earned a regular slot: another takes its place.
        let mut p3 = peers.clone();
        p3[5].download_rate = 10_000;
        let c = choose(&p3, Mode::Leeching, 4, Some(5), false, &mut rng);
        assert_eq!(c.regular[0], 5);
        assert!(c.optimistic.is_some() && c.optimistic != Some(5));
    }

    #[test]
    fn new_peers_are_three_times_as_likely_to_be_the_optimistic_unchoke() {
        // Regular slots 0 (full); candidates: one new peer, three old ones.
        let mut peers: Vec<PeerRow> = (0..4).map(peer).collect();
        peers[0].connected_for = S(5);
        let mut rng = Rng::new(11);
        let mut wins = [0u32; 4];
        let draws = 60_000;
        for _ in 0..draws {
            let c = choose(&peers, Mode::Seeding, 0, None, true, &mut rng);
            wins[c.optimistic.unwrap()] += 1;
        }
        // Weights 3:1:1:1, so the new peer wins half the draws.
        let share = wins[0] as f64 / draws as f64;
        assert!((0.47..0.53).contains(&share), "{wins:?}");
        for w in &wins[1..] {
            let s = *w as f64 / draws as f64;
            assert!((0.15..0.185).contains(&s), "{wins:?}");
        }
    }

    #[test]
    fn nobody_interested_unchokes_nobody() {
        let peers: Vec<PeerRow> = (0..3)
            .map(|k| PeerRow {
                interested: false,
                ..peer(k)
            })
            .collect();
        let c = choose(&peers, Mode::Seeding, 4, Some(1), false, &mut Rng::new(5));
        assert_eq!(c, Choice::default());
        assert!(!c.unchokes(1));
        assert_eq!(draw_optimistic(&[], &mut Rng::new(5)), None);
    }
}

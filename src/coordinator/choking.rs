//! The coordinator's upload slots: rates from the workers' reports, the
//! choker's rounds (`crate::choker`), refilling a freed slot at once, and
//! when seeding is over.

use super::*;

impl Coordinator {
    /// The worker's peer became interested in us or not: upload slots move.
    pub(super) fn on_peer_interest(&mut self, worker: usize, interested: bool) {
        if let Some(c) = self.conns[worker].as_mut() {
            c.peer_interested = interested;
        }
        if !interested {
            self.set_choked(worker, true, Instant::now());
        }
        self.fill_upload_slots();
    }

    /// The worker's transfer report, for the choker's rates.
    pub(super) fn on_transferred(
        &mut self,
        worker: usize,
        downloaded: u64,
        uploaded: u64,
        unchoking_us: bool,
    ) {
        if let Some(c) = self.conns[worker].as_mut() {
            let now = Instant::now();
            let s = &mut c.slot;
            s.down_total += downloaded;
            s.up_total += uploaded;
            if downloaded > 0 {
                s.last_block_at = Some(now);
            }
            if unchoking_us != s.unchoking_us {
                s.unchoking_us = unchoking_us;
                s.unchoking_since = now;
            }
        }
    }

    /// Between choker rounds: a free regular slot goes at once to the
    /// interested, unsnubbed, choked peer that has waited longest, and a free
    /// optimistic slot to a choked interested peer drawn as the choker
    /// draws. The next round may rearrange both.
    pub(super) fn fill_upload_slots(&mut self) {
        let now = Instant::now();
        let regular = self
            .conns
            .iter()
            .flatten()
            .filter(|c| c.slot.regular_since.is_some())
            .count();
        let mut free = self.upload_slots.saturating_sub(regular);
        let mut waiting: Vec<(Instant, usize)> = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(w, c)| c.as_ref().map(|c| (w, c)))
            .filter(|(w, c)| {
                c.peer_interested
                    && !c.unchoked
                    && !self.is_snubbed(c, now)
                    && self.optimistic != Some(*w)
            })
            .map(|(w, c)| (c.slot.choked_at, w))
            .collect();
        waiting.sort();
        for (_, w) in waiting {
            if free == 0 {
                break;
            }
            if let Some(c) = self.conns[w].as_mut() {
                c.slot.regular_since = Some(now);
            }
            self.set_choked(w, false, now);
            free -= 1;
        }
        if self.optimistic.is_none() {
            let rows = self.peer_rows(now);
            let pool: Vec<&PeerRow> = rows
                .iter()
                .filter(|r| r.interested && self.conns[r.key].as_ref().is_some_and(|c| !c.unchoked))
                .collect();
            if let Some(w) = choker::draw_optimistic(&pool, &mut self.rng) {
                self.optimistic = Some(w);
                self.set_choked(w, false, now);
            }
        }
    }

    /// Chokes or unchokes a worker's peer, telling the worker if that
    /// changes anything. Choking ends any regular slot.
    pub(super) fn set_choked(&mut self, worker: usize, choke: bool, now: Instant) {
        let Some(c) = self.conns[worker].as_mut() else {
            return;
        };
        if choke {
            c.slot.regular_since = None;
            if self.optimistic == Some(worker) {
                self.optimistic = None;
            }
        }
        if c.unchoked != choke {
            return;
        }
        c.unchoked = !choke;
        if choke {
            c.slot.choked_at = now;
        }
        let _ = self.workers[worker].send(if choke {
            ToWorker::Choke
        } else {
            ToWorker::Unchoke
        });
    }

    /// Whether a peer is snubbing us: we want its pieces, it unchokes us,
    /// and nothing came from it for `choker::SNUB_AFTER`.
    pub(super) fn is_snubbed(&self, c: &Conn, now: Instant) -> bool {
        let s = &c.slot;
        let since = s
            .last_block_at
            .map_or(s.unchoking_since, |t| t.max(s.unchoking_since));
        c.interesting && s.unchoking_us && now.duration_since(since) >= choker::SNUB_AFTER
    }

    /// The choker's table of connected peers.
    pub(super) fn peer_rows(&self, now: Instant) -> Vec<PeerRow> {
        self.conns
            .iter()
            .enumerate()
            .filter_map(|(w, c)| c.as_ref().map(|c| (w, c)))
            .map(|(w, c)| PeerRow {
                key: w,
                interested: c.peer_interested,
                snubbed: self.is_snubbed(c, now),
                download_rate: c.slot.down_rate,
                upload_rate: c.slot.up_rate,
                connected_for: now.duration_since(c.slot.connected_at),
                unchoked_for: c.slot.regular_since.map(|t| now.duration_since(t)),
                waiting_for: now.duration_since(c.slot.choked_at),
            })
            .collect()
    }

    /// One choker round: measure rates, choose, apply.
    pub(super) fn rechoke(&mut self) {
        let now = Instant::now();
        for c in self.conns.iter_mut().flatten() {
            let s = &mut c.slot;
            let secs = now.duration_since(s.mark_at).as_secs_f64().max(0.001);
            s.down_rate = ((s.down_total - s.down_mark) as f64 / secs) as u64;
            s.up_rate = ((s.up_total - s.up_mark) as f64 / secs) as u64;
            s.down_mark = s.down_total;
            s.up_mark = s.up_total;
            s.mark_at = now;
        }
        let mode = if self.picker.is_complete() || self.policy.serve_only {
            Mode::Seeding
        } else {
            Mode::Leeching
        };
        let rows = self.peer_rows(now);
        let rotate = self.choke_round % choker::OPTIMISTIC_ROUNDS == 0;
        self.choke_round += 1;
        let choice = choker::choose(
            &rows,
            mode,
            self.upload_slots,
            self.optimistic,
            rotate,
            &mut self.rng,
        );
        debug!(
            "choker ({mode:?}): regular {:?}, optimistic {:?}",
            choice.regular, choice.optimistic
        );
        // Choke first, so the optimistic slot is not cleared after being set.
        for w in 0..self.conns.len() {
            if self.conns[w].is_some() && !choice.unchokes(w) {
                self.set_choked(w, true, now);
            }
        }
        for &w in &choice.regular {
            if let Some(c) = self.conns[w].as_mut() {
                if c.slot.regular_since.is_none() {
                    c.slot.regular_since = Some(now);
                }
            }
            self.set_choked(w, false, now);
        }
        if let Some(w) = choice.optimistic {
            if let Some(c) = self.conns[w].as_mut() {
                c.slot.regular_since = None;
            }
            self.set_choked(w, false, now);
        }
        self.optimistic = choice.optimistic;
    }

    /// Whether seeding reached its ratio or time (and what outcome that is).
    pub(super) fn seeding_over(&mut self) -> Option<Outcome> {
        let seeding = self.seed && (self.picker.is_complete() || self.policy.serve_only);
        if !seeding {
            return None;
        }
        let since = *self.seeding_since.get_or_insert_with(Instant::now);
        let total = self.storage.layout().total_length();
        let uploaded = self.shared.uploaded.load(Ordering::Relaxed);
        let ratio_met = self
            .policy
            .ratio
            .is_some_and(|r| uploaded as f64 >= r * total as f64);
        let time_met = self.policy.time.is_some_and(|t| since.elapsed() >= t);
        if !ratio_met && !time_met {
            return None;
        }
        info!(
            "seeding done: {} ({uploaded} bytes uploaded, ratio {:.2})",
            if ratio_met {
                "ratio reached"
            } else {
                "time reached"
            },
            uploaded as f64 / total.max(1) as f64
        );
        Some(if self.picker.is_complete() {
            Outcome::Complete
        } else {
            Outcome::SeedingEnded
        })
    }
}

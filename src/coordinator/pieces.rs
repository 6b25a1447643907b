//! The coordinator's piece bookkeeping: availability from bitfields and
//! haves, picks for workers (rarest first, endgame), finished and failed
//! pieces, interest, and the streaming window.

use super::*;

impl Coordinator {
    /// Moves the streaming window past verified pieces and publishes how many
    /// bytes of the streamed file are ready.
    pub(super) fn advance_stream(&mut self) {
        let Some(st) = self.stream.as_mut() else {
            return;
        };
        while st.head < st.pieces.end && self.picker.have().get(st.head) {
            st.head += 1;
        }
        let ready = if st.head >= st.pieces.end {
            st.file_len
        } else {
            let at = self.storage.layout().piece_offset(st.head);
            at.saturating_sub(st.file_start).min(st.file_len)
        };
        self.shared.stream_ready.store(ready, Ordering::Relaxed);
        // The window starts at the first missing piece and reaches at most
        // `window` pieces past what the reader has consumed, so a slow reader
        // holds back the download (and, with `--no-save`, its memory).
        let layout = self.storage.layout();
        let consumed = self.shared.stream_consumed.load(Ordering::Relaxed);
        let reading = (st.file_start + consumed.min(st.file_len)) / layout.piece_length();
        let end = (reading as u32)
            .saturating_add(st.window)
            .min(st.head.saturating_add(st.window))
            .min(st.pieces.end);
        let window = (st.head < st.pieces.end).then(|| st.head..end.max(st.head));
        self.picker.set_window(window);
    }

    /// The worker's peer sent its bitfield: availability and interest change.
    pub(super) fn on_bitfield(&mut self, worker: usize, bits: Bitfield, interested: bool) {
        if let Some(c) = self.conns[worker].as_mut() {
            self.picker.remove_peer(&c.bits);
            self.picker.add_peer(&bits);
            c.wanted = self.picker.wanted_from(&bits);
            c.bits = bits;
            // The worker may have said "interested" already; from
            // here the coordinator decides (and may take it back).
            c.interesting |= interested;
            self.update_interest(worker);
        }
    }

    /// The worker's peer announced a piece.
    pub(super) fn on_have(&mut self, worker: usize, piece: u32) {
        if let Some(c) = self.conns[worker].as_mut() {
            if c.bits.set(piece) {
                self.picker.add_have(piece);
                if self.picker.wants(piece) {
                    c.wanted += 1;
                }
                self.update_interest(worker);
            }
        }
    }

    /// Picks up to `count` pieces for the worker (rarest first; in the
    /// endgame, pieces others hold too), only among its peer's allowed-fast
    /// pieces when `allowed_only`, and sends them as `Assign`.
    ///
    /// Near the end, when fewer pieces are free than peers are connected,
    /// a worker gets one piece at a time, and only while it holds at most
    /// one: the last pieces are spread over as many peers as possible
    /// instead of queued behind each other at a few. An endgame copy, too,
    /// goes only to a worker about to run dry, one at a time: a worker with
    /// a queue of its own would fetch the copy only after it, and every
    /// copy costs some peer's bandwidth (with 48 peers, handing copies to
    /// every worker that asked ahead made 321 copies of the last 265
    /// pieces, of which 20 won).
    pub(super) fn on_want_pieces(&mut self, worker: usize, count: u32, allowed_only: bool) {
        let mut got = Vec::new();
        if let Some(c) = self.conns[worker].as_mut() {
            let layout = self.storage.layout();
            let only = allowed_only.then(|| {
                let mut only = Bitfield::new(c.bits.len());
                for &p in &c.slot.allowed_fast {
                    if c.bits.get(p) {
                        only.set(p);
                    }
                }
                only
            });
            let from = only.as_ref().unwrap_or(&c.bits);
            let scarce = (self.picker.free_count() as u64)
                < self.shared.peers_connected.load(Ordering::Relaxed);
            for _ in 0..count {
                if scarce && (c.assigned.len() > 1 || !got.is_empty()) {
                    break;
                }
                match self.picker.pick(from, &c.assigned) {
                    // A streamed piece writes unverified bytes to the file:
                    // never two workers at once.
                    Some(p)
                        if crate::peer::streams_piece(layout, p) && self.picker.copies(p) > 1 =>
                    {
                        self.picker.release(p);
                        break;
                    }
                    Some(p) if self.picker.copies(p) > 1 && c.assigned.len() > 1 => {
                        self.picker.release(p);
                        break;
                    }
                    Some(p) => {
                        c.assigned.push(p);
                        got.push(p);
                        if self.picker.copies(p) > 1 {
                            debug!("piece {p}: endgame copy to worker {worker}");
                            break;
                        }
                    }
                    None => break,
                }
            }
        }
        self.send(worker, ToWorker::Assign(got));
    }

    /// `worker` is past the pool for a web seed's piece (src/webseed/).
    pub(crate) fn on_piece_done(&mut self, worker: usize, piece: u32) {
        if let Some(c) = self.conns.get_mut(worker).and_then(Option::as_mut) {
            c.assigned.retain(|&p| p != piece);
        }
        if !self.picker.complete(piece) {
            return; // an endgame duplicate that raced the first copy
        }
        self.web_piece_done(piece);
        let len = self.storage.layout().piece_len(piece) as u64;
        self.shared.verified.fetch_add(len, Ordering::Relaxed);
        self.shared.pieces_done.fetch_add(1, Ordering::Relaxed);
        self.unsaved = true;
        self.advance_stream();
        debug!("piece {piece} verified");
        for w in 0..self.conns.len() {
            let Some(c) = self.conns[w].as_mut() else {
                continue;
            };
            if let Some(pos) = c.assigned.iter().position(|&p| p == piece) {
                c.assigned.swap_remove(pos);
                let _ = self.workers[w].send(ToWorker::Cancel(piece));
            }
            if c.bits.get(piece) {
                c.wanted = c.wanted.saturating_sub(1);
            }
            if self.serve {
                let _ = self.workers[w].send(ToWorker::Have(piece));
            }
            self.update_interest(w);
        }
    }

    /// A piece from the worker's peer failed its hash check: the piece goes
    /// back to the picker, and the peer's address moves towards a ban.
    pub(super) fn on_piece_failed(&mut self, worker: usize, piece: u32) {
        self.picker.release(piece);
        if let Some(c) = self.conns[worker].as_mut() {
            c.assigned.retain(|&p| p != piece);
            let addr = c.addr;
            warn!("piece {piece} from {addr} failed its hash check");
            let _ = self.notices.try_send(Notice::PieceFailed {
                index: piece,
                peer: addr,
            });
            if self.bans.bad_piece(addr.ip()) {
                warn!(
                    "banning {}: {} bad pieces",
                    addr.ip(),
                    crate::ban::BAN_AFTER_BAD_PIECES
                );
                self.drop_banned(addr.ip());
            }
        }
        self.shared.pieces_failed.fetch_add(1, Ordering::Relaxed);
    }

    /// The worker gave pieces back unfinished.
    pub(super) fn on_released(&mut self, worker: usize, pieces: Vec<u32>) {
        if let Some(c) = self.conns[worker].as_mut() {
            for p in pieces {
                if let Some(pos) = c.assigned.iter().position(|&a| a == p) {
                    c.assigned.swap_remove(pos);
                    self.picker.release(p);
                }
            }
        }
    }

    pub(super) fn update_interest(&mut self, worker: usize) {
        let serve_only = self.policy.serve_only;
        if let Some(c) = self.conns[worker].as_mut() {
            let want = c.wanted > 0 && !serve_only;
            if want != c.interesting {
                c.interesting = want;
                let _ = self.workers[worker].send(ToWorker::Interest(want));
            }
        }
    }
}

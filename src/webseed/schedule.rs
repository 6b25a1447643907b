//! The coordinator's side of web seeds: picks for slots with the same
//! picker as peers, back-off and dropping of failing servers and files.

use super::*;

impl Seeds {
    /// Whether there are web seeds at all.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Whether a slot holds a piece (the coordinator's shutdown waits for
    /// its report, as for a peer's).
    pub(crate) fn busy(&self) -> bool {
        self.slots.iter().any(|s| s.piece.is_some())
    }

    pub(super) fn set_state(&self, server: usize, state: State, error: Option<String>) {
        let e = &self.board.entries[server];
        let old = e.state.swap(state as u8, Ordering::Relaxed);
        if old == state as u8 && error.is_none() {
            return;
        }
        if let Some(n) = &self.notices {
            let _ = n.try_send(Notice::WebSeed {
                url: e.url.clone(),
                state: state.name(),
                bytes: e.bytes.load(Ordering::Relaxed),
                error,
            });
        }
    }
}

impl Coordinator {
    /// Uses the web seeds in `seeds` (from [`start`]).
    pub(crate) fn with_web_seeds(mut self, seeds: Seeds) -> Coordinator {
        self.web = seeds;
        self
    }

    /// Another source completed `piece`: slots fetching it drop it.
    pub(crate) fn web_piece_done(&mut self, piece: u32) {
        for s in &mut self.web.slots {
            if s.piece == Some(piece) {
                s.piece = None;
                let _ = s.tx.send(ToSlot::Cancel(piece));
            }
        }
    }

    /// Handles a web-seed slot's report.
    pub(crate) fn on_web(&mut self, r: Report) {
        match r {
            Report::Want { slot } => self.web_want(slot),
            Report::Done { slot, piece } => {
                let Some(sl) = self.web.slots.get_mut(slot) else {
                    return;
                };
                sl.piece = None;
                let server = sl.server;
                let len = self.storage.layout().piece_len(piece) as u64;
                let was_new = self.picker.wants(piece);
                if let Some(sv) = self.web.servers.get_mut(server) {
                    sv.fails = 0;
                }
                if was_new {
                    self.web.board.entries[server]
                        .bytes
                        .fetch_add(len, Ordering::Relaxed);
                }
                if !self.web.servers[server].dropped {
                    self.web.set_state(server, State::Active, None);
                }
                self.on_piece_done(usize::MAX, piece);
            }
            Report::Cancelled { slot, piece } => {
                if let Some(sl) = self.web.slots.get_mut(slot) {
                    if sl.piece == Some(piece) {
                        sl.piece = None;
                        self.picker.release(piece);
                    }
                }
            }
            Report::Failed {
                slot,
                piece,
                failure,
            } => self.web_failed(slot, piece, failure),
        }
    }

    /// A slot's report while the session ends: a piece it verified and
    /// wrote counts (the final save records it), nothing new is handed
    /// out, and a slot that gave its piece up is no longer waited for.
    pub(crate) fn on_web_stopping(&mut self, r: Report) {
        let (slot, done) = match r {
            Report::Want { slot } => {
                if let Some(sl) = self.web.slots.get(slot) {
                    let _ = sl.tx.send(ToSlot::Stop);
                }
                return;
            }
            Report::Done { slot, piece } => (slot, Some(piece)),
            Report::Cancelled { slot, .. } | Report::Failed { slot, .. } => (slot, None),
        };
        let Some(sl) = self.web.slots.get_mut(slot) else {
            return;
        };
        sl.piece = None;
        let server = sl.server;
        if let Some(piece) = done {
            if self.picker.complete(piece) {
                let len = self.storage.layout().piece_len(piece) as u64;
                self.web.board.entries[server]
                    .bytes
                    .fetch_add(len, Ordering::Relaxed);
                self.shared.verified.fetch_add(len, Ordering::Relaxed);
                self.shared.pieces_done.fetch_add(1, Ordering::Relaxed);
                debug!("piece {piece} verified (web seed, while stopping)");
            }
        }
    }

    pub(super) fn web_want(&mut self, slot: usize) {
        let Some(server) = self.web.slots.get(slot).map(|s| s.server) else {
            return;
        };
        let reply = self.web_pick(slot, server);
        let sl = &mut self.web.slots[slot];
        if let ToSlot::Assign(p) = reply {
            sl.piece = Some(p);
        }
        let _ = sl.tx.send(reply);
    }

    pub(super) fn web_pick(&mut self, slot: usize, server: usize) -> ToSlot {
        let now = Instant::now();
        let sv = &mut self.web.servers[server];
        if sv.dropped {
            return ToSlot::Stop;
        }
        if self.picker.is_complete() || self.shared.stopping.load(Ordering::Relaxed) {
            // Seeding: nothing more to fetch.
            return ToSlot::Wait(Duration::from_secs(5));
        }
        if sv.next_try > now {
            return ToSlot::Wait(sv.next_try - now);
        }
        if !sv.counted {
            self.picker.add_peer(&sv.bits);
            sv.counted = true;
        }
        // Pieces this server's other slots hold are not given twice to it.
        let holding: Vec<u32> = self
            .web
            .slots
            .iter()
            .enumerate()
            .filter(|(i, s)| *i != slot && s.server == server)
            .filter_map(|(_, s)| s.piece)
            .collect();
        let layout = self.storage.layout();
        match self.picker.pick(&self.web.servers[server].bits, &holding) {
            Some(p) if crate::peer::streams_piece(layout, p) && self.picker.copies(p) > 1 => {
                self.picker.release(p);
                ToSlot::Wait(IDLE_WAIT)
            }
            Some(p) => ToSlot::Assign(p),
            None => ToSlot::Wait(IDLE_WAIT),
        }
    }

    pub(super) fn web_failed(&mut self, slot: usize, piece: u32, failure: Failure) {
        let Some(sl) = self.web.slots.get_mut(slot) else {
            return;
        };
        if sl.piece == Some(piece) {
            sl.piece = None;
            self.picker.release(piece);
        }
        let server = sl.server;
        let layout = self.storage.layout().clone();
        let sv = &mut self.web.servers[server];
        if sv.dropped {
            return;
        }
        let url = sv.url.clone();
        warn!("web seed {url}: piece {piece}: {failure}");
        let mut bad_files: Vec<usize> = Vec::new();
        let mut drop_now = false;
        match &failure {
            Failure::NoRange { .. } => drop_now = true,
            Failure::Status {
                file,
                code: 404 | 410,
            } => {
                sv.file_failures += 1;
                bad_files.push(*file);
            }
            Failure::Hash => {
                self.shared.pieces_failed.fetch_add(1, Ordering::Relaxed);
                sv.file_failures += 1;
                bad_files.extend(layout.piece_spans(piece).map(|s| s.file));
            }
            // The whole server is backed off.
            _ => sv.fails += 1,
        }
        drop_now |= sv.file_failures >= MAX_FILE_FAILURES;
        let mut files_dropped = false;
        for f in bad_files {
            sv.file_fails[f] = sv.file_fails[f].saturating_add(1);
            if sv.file_fails[f] == FILE_FAILS {
                info!("web seed {url}: file {f} is not asked of it again");
                files_dropped = true;
            }
        }
        if files_dropped {
            let bits = servable(&layout, &sv.file_fails);
            if sv.counted {
                self.picker.remove_peer(&sv.bits);
                self.picker.add_peer(&bits);
            }
            sv.bits = bits;
            if self.picker.wanted_from(&sv.bits) == 0 {
                drop_now = true;
            }
        }
        if sv.fails >= MAX_FAILS {
            drop_now = true;
        }
        let message = failure.to_string();
        if drop_now {
            warn!("web seed {url}: dropped ({message})");
            sv.dropped = true;
            if sv.counted {
                self.picker.remove_peer(&sv.bits);
                sv.counted = false;
            }
            self.web.set_state(server, State::Dropped, Some(message));
            for s in &self.web.slots {
                if s.server == server {
                    let _ = s.tx.send(ToSlot::Stop);
                }
            }
        } else {
            let delay = if sv.fails == 0 {
                Duration::ZERO
            } else {
                BACKOFF * (1u32 << (sv.fails - 1).min(10))
            };
            sv.next_try = Instant::now() + delay;
            let state = if delay.is_zero() {
                State::Active
            } else {
                State::Backoff
            };
            self.web.set_state(server, state, Some(message));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::Channels;
    use crate::picker::{Picker, Rng};

    /// The session ends (Ctrl+C) while a slot writes a piece it verified:
    /// its report, queued behind the stop, still counts, so the final
    /// save records the piece. (Before, the shutdown waited for peers only
    /// and dropped the report: the piece was on the disk and not in the
    /// record.)
    #[test]
    fn a_piece_a_web_seed_finishes_while_stopping_is_recorded() {
        let dir = std::env::temp_dir().join(format!("tget-ws-stop-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f.bin");
        std::fs::write(&file, vec![7u8; 4 * 16384]).unwrap();
        let opts = crate::create::CreateOptions {
            piece_length: Some(16384),
            ..Default::default()
        };
        let bytes = crate::create::create_torrent(&file, &opts).unwrap();
        let meta = crate::metainfo::Metainfo::from_bytes(&bytes).unwrap();
        let layout = Layout::new(16384, &[4 * 16384]);
        let storage = Arc::new(Storage::open(layout, vec![dir.join("out.bin")]).unwrap());
        let shared = Arc::new(Shared::default());
        let (events_tx, events_rx) = crossbeam_channel::unbounded();
        let (jobs_tx, _jobs_rx) = crossbeam_channel::unbounded();
        let (notices_tx, _notices_rx) = crossbeam_channel::bounded(64);
        // The slots' threads are not started (the test plays them), but
        // kept, with their ends of the channels.
        let kept = std::sync::Mutex::new(Vec::new());
        let no_threads = |_: String, f: Box<dyn FnOnce() + Send>| {
            kept.lock().unwrap().push(f);
            Ok(())
        };
        let (seeds, board) = start(
            &["http://127.0.0.1:9/f.bin".to_string()],
            &meta.info,
            &storage,
            &shared,
            &events_tx,
            notices_tx.clone(),
            DEFAULT_TIMEOUT,
            &Default::default(),
            &no_threads,
        )
        .unwrap();
        let channels = Channels {
            events: events_rx,
            workers: Vec::new(),
            jobs: jobs_tx,
            notices: notices_tx,
        };
        let picker = Picker::new(Bitfield::new(4), Rng::new(1));
        let mut coord = Coordinator::new(picker, storage, shared.clone(), channels, [1; 20])
            .with_web_seeds(seeds);
        coord.on_web(Report::Want { slot: 0 });
        let piece = coord.web.slots[0].piece.expect("a piece for slot 0");
        events_tx.send(Event::Stop).unwrap();
        events_tx
            .send(Event::Web(Report::Done { slot: 0, piece }))
            .unwrap();
        coord.run().unwrap();
        assert_eq!(shared.pieces_done.load(Ordering::Relaxed), 1);
        assert_eq!(board.snapshot()[0].bytes, 16384);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

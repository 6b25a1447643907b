//! The blocking loop of one connection: handshake, then read with a
//! deadline, hand what arrived to the protocol, write what it queued, and
//! talk to the coordinator. The only code here that touches the socket.

use super::*;

/// What a turn of the loop waits for.
enum Wait {
    /// Bytes from the peer.
    Socket,
    /// The coordinator's answer (for more pieces).
    Coordinator,
    /// Credit from the download rate limit: wait this long.
    Nap(Duration),
}

impl Connection<'_> {
    /// The connection's life: handshake, then the loop. Each turn does the
    /// worker's duties in order, then waits for the next thing to happen
    /// (bytes from the peer, an answer from the coordinator, or a rate
    /// limit's credit), never longer than [`READ_TICK`].
    pub(super) fn run(&mut self) -> Result<(), Close> {
        self.handshake()?;
        self.stream.set_read_timeout(Some(READ_TICK))?;
        self.stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        self.announce_pieces();
        while !self.ctx.shared.stopping.load(Ordering::Relaxed) {
            self.poll_control()?; // the coordinator's messages
            self.fill_pipeline()?; // our requests
            self.serve_uploads()?; // the peer's requests
            self.flush()?; // everything queued goes out
            self.check_timers()?;
            match self.next_wait() {
                Wait::Socket => {
                    self.read()?;
                    self.drain_messages()?; // the protocol handles what came
                }
                Wait::Coordinator => self.wait_for_coordinator()?,
                Wait::Nap(d) => self.nap(d),
            }
        }
        Ok(())
    }

    /// Uploads are queued with credit to send them: a read must not wait,
    /// it takes only what is there (see `read`).
    fn uploads_ready(&self) -> bool {
        !self.uploads.is_empty() && self.upload_wait.is_none()
    }

    /// What to wait for next.
    fn next_wait(&self) -> Wait {
        let busy = self.uploads_ready();
        // Download limit: while the bucket is in debt, do not read at all;
        // TCP flow control slows the peer down.
        if let Some(wait) = self.ctx.limits.download.as_ref().and_then(|b| b.wait()) {
            let nap = wait.min(self.upload_wait.unwrap_or(READ_TICK));
            return Wait::Nap(if busy {
                Duration::ZERO
            } else {
                nap.min(READ_TICK)
            });
        }
        if !busy && self.asked.is_some() && self.requests.is_empty() {
            // Nothing is coming from the peer until the coordinator
            // answers: wait for the answer rather than for the socket.
            return Wait::Coordinator;
        }
        Wait::Socket
    }

    /// Reads what the peer sent into the framing reader, waiting at most
    /// the read deadline (not at all while uploads are queued, and only
    /// until upload credit comes while waiting for it). A deadline that
    /// passes loses nothing: the reader keeps partial messages.
    fn read(&mut self) -> Result<(), Close> {
        let busy = self.uploads_ready();
        if busy != self.nonblocking {
            self.stream.set_nonblocking(busy)?;
            self.nonblocking = busy;
        }
        if !busy {
            let timeout = self
                .upload_wait
                .map_or(READ_TICK, |w| w.clamp(MIN_TICK, READ_TICK));
            if timeout != self.read_timeout {
                self.stream.set_read_timeout(Some(timeout))?;
                self.read_timeout = timeout;
            }
        }
        let read = match self.ctx.limits.download.as_deref() {
            None => self.reader.fill(&mut self.stream),
            Some(bucket) => {
                let r = self
                    .reader
                    .fill_at_most(&mut self.stream, bucket.read_cap());
                if let Ok(n) = r {
                    bucket.charge(n as u64);
                }
                r
            }
        };
        match read {
            Ok(0) => Err(Close::Quiet("peer closed the connection".into())),
            Ok(_) => {
                self.last_recv = Instant::now();
                Ok(())
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits for the coordinator's next message (at most [`READ_TICK`]).
    fn wait_for_coordinator(&mut self) -> Result<(), Close> {
        match self.ctx.control.recv_timeout(READ_TICK) {
            Ok(msg) => self.on_control(msg),
            Err(RecvTimeoutError::Timeout) => Ok(()),
            Err(RecvTimeoutError::Disconnected) => Err(Close::Quiet("session ended".into())),
        }
    }

    /// Exchanges handshakes and waits for the coordinator's verdict.
    pub(super) fn handshake(&mut self) -> Result<(), Close> {
        self.stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        self.stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
        let mut ours = Handshake::new(self.ctx.info_hash, self.ctx.our_id);
        fast::advertise(&mut ours.reserved);
        ours.reserved[wire::EXTENSION_PROTOCOL_BYTE] |= wire::EXTENSION_PROTOCOL_BIT;
        if self.our_dht_port().is_some() {
            ours.reserved[wire::DHT_BYTE] |= wire::DHT_BIT;
        }
        self.stream.write_all(&ours.encode())?;
        trace::handshake(self.addr, "->", &ours);
        let theirs = match self.received.take() {
            Some(theirs) => theirs,
            None => {
                let mut theirs = [0u8; HANDSHAKE_LEN];
                self.read_handshake(&mut theirs, HANDSHAKE_TIMEOUT)?;
                theirs
            }
        };
        let h = Handshake::decode(&theirs).map_err(|e| bad(e.to_string()))?;
        trace::handshake(self.addr, "<-", &h);
        if h.info_hash != self.ctx.info_hash {
            return Err(bad("handshake for another torrent (wrong info-hash)"));
        }
        self.fast = fast::advertised(&h.reserved);
        self.extensions =
            h.reserved[wire::EXTENSION_PROTOCOL_BYTE] & wire::EXTENSION_PROTOCOL_BIT != 0;
        self.peer_dht = h.reserved[wire::DHT_BYTE] & wire::DHT_BIT != 0;
        self.heard = true;
        let _ = self.ctx.events.send(Event::Handshaked {
            worker: self.ctx.id,
            addr: self.addr,
            peer_id: h.peer_id,
            inbound: self.inbound,
            transport: self.stream.kind(),
        });
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.ctx.control.recv_timeout(left) {
                Ok(ToWorker::Accept { ours }) => {
                    self.ours = ours;
                    self.handshaked = true;
                    return Ok(());
                }
                Ok(ToWorker::Reject) => return Err(Close::Quiet("rejected".into())),
                Ok(_) => continue, // stale, from an earlier connection
                Err(_) => return Err(Close::Quiet("coordinator did not answer".into())),
            }
        }
    }

    /// Reads the peer's handshake (whole within `limit`, see
    /// [`wire::read_handshake`]).
    pub(super) fn read_handshake(
        &mut self,
        buf: &mut [u8; HANDSHAKE_LEN],
        limit: Duration,
    ) -> Result<(), Close> {
        match wire::read_handshake(&mut *self.stream, limit) {
            Ok(h) => {
                *buf = h;
                Ok(())
            }
            Err(wire::HandshakeReadError::Io(e)) => Err(e.into()),
            Err(e) => Err(Close::Quiet(e.to_string())),
        }
    }

    pub(super) fn poll_control(&mut self) -> Result<(), Close> {
        loop {
            match self.ctx.control.try_recv() {
                Ok(msg) => self.on_control(msg)?,
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => {
                    return Err(Close::Quiet("session ended".into()))
                }
            }
        }
    }

    pub(super) fn on_control(&mut self, msg: ToWorker) -> Result<(), Close> {
        match msg {
            ToWorker::Interest(want) => {
                if want != self.am_interested {
                    self.am_interested = want;
                    let m = if want {
                        Message::Interested
                    } else {
                        Message::NotInterested
                    };
                    self.send(m);
                }
            }
            ToWorker::Unchoke => {
                if self.am_choking {
                    self.am_choking = false;
                    self.send(Message::Unchoke);
                }
            }
            ToWorker::Choke => {
                if !self.am_choking {
                    self.am_choking = true;
                    self.send(Message::Choke);
                    self.drop_queued_uploads();
                }
            }
            ToWorker::Have(piece) => {
                self.ours.set(piece);
                if !self.peer_bits.get(piece) {
                    self.send(Message::Have(piece));
                }
            }
            ToWorker::Cancel(piece) => self.drop_piece(piece, true),
            ToWorker::Disconnect => return Err(Close::Quiet("disconnected by us".into())),
            ToWorker::Pex(connected) => self.send_pex(&connected),
            ToWorker::Assign(pieces) => self.on_assign(pieces),
            ToWorker::Accept { .. } | ToWorker::Reject => {}
        }
        Ok(())
    }

    /// Queues a message for the peer (sent by the next `flush`).
    pub(super) fn send(&mut self, m: Message<'_>) {
        let ids = trace::ExtIds::theirs(&self.theirs);
        trace::queue_to(&mut self.out, self.addr, m, ids);
    }

    pub(super) fn flush(&mut self) -> Result<(), Close> {
        if self.out.is_empty() {
            return Ok(());
        }
        if self.nonblocking {
            // Writes block (up to the write timeout); only reads skip waiting.
            self.stream.set_nonblocking(false)?;
            self.nonblocking = false;
        }
        self.stream.write_all(&self.out)?;
        self.out.clear();
        self.last_send = Instant::now();
        Ok(())
    }

    pub(super) fn check_timers(&mut self) -> Result<(), Close> {
        let now = Instant::now();
        if self
            .asked
            .is_some_and(|t| now.duration_since(t) > REPLY_TIMEOUT)
        {
            return Err(Close::Quiet("coordinator did not answer".into()));
        }
        if !self.requests.is_empty() && now.duration_since(self.last_block) > REQUEST_TIMEOUT {
            return Err(Close::Quiet(format!(
                "no block for {} s with {} requests outstanding",
                REQUEST_TIMEOUT.as_secs(),
                self.requests.len()
            )));
        }
        // A peer that wants what we have waits for an upload slot; that is
        // not useless (the choker gives every interested peer a turn).
        let serving = self.peer_interested && self.ours.count() > 0;
        if !serving && now.duration_since(self.last_useful) > USELESS_TIMEOUT {
            return Err(Close::Quiet("no blocks either way for 120 s".into()));
        }
        if now.duration_since(self.last_recv) > IDLE_TIMEOUT {
            return Err(Close::Quiet("idle too long".into()));
        }
        if now.duration_since(self.last_send) > KEEPALIVE_EVERY {
            self.send(Message::KeepAlive);
        }
        // Pipeline depth follows the measured rate: about a second's worth.
        let elapsed = now.duration_since(self.rate_mark);
        if elapsed >= Duration::from_secs(1) {
            let rate = self.rate_bytes as f64 / elapsed.as_secs_f64();
            let want = (rate / BLOCK_SIZE as f64) as usize;
            self.depth = want
                .clamp(MIN_DEPTH, MAX_DEPTH)
                .max(self.depth / 2)
                .min(self.max_depth);
            self.rate_mark = now;
            self.rate_bytes = 0;
            self.ramping = false;
        }
        // An upload window idle for a second is unmapped (its pages count
        // in our resident memory while mapped).
        if self.uploads.is_empty()
            && self.window.is_some()
            && now.duration_since(self.last_send) > WINDOW_IDLE
        {
            self.window = None;
        }
        // Nothing to do with a seed when we are a seed too.
        if self.ours.is_full() && self.peer_bits.is_full() {
            return Err(Close::Quiet("both sides are seeds".into()));
        }
        self.report_transfer(now);
        Ok(())
    }

    /// Tells the coordinator (for the choker) what moved since the last
    /// report and whether the peer unchokes us: at most once a second, and
    /// only when something moved or the peer's choke changed.
    pub(super) fn report_transfer(&mut self, now: Instant) {
        let unchoking = !self.peer_choking;
        let moved = self.report_down > 0 || self.report_up > 0;
        let due = moved && now.duration_since(self.last_report) >= REPORT_EVERY;
        if !due && unchoking == self.reported_unchoking {
            return;
        }
        let _ = self.ctx.events.send(Event::Transferred {
            worker: self.ctx.id,
            downloaded: std::mem::take(&mut self.report_down),
            uploaded: std::mem::take(&mut self.report_up),
            unchoking_us: unchoking,
        });
        self.reported_unchoking = unchoking;
        self.last_report = now;
    }

    /// Sleeps `d` instead of reading (download limit). The time does not
    /// count against the peer: we were not listening.
    pub(super) fn nap(&mut self, d: Duration) {
        std::thread::sleep(d);
        self.last_block += d;
        self.last_recv += d;
    }
}

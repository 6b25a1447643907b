//! One uTP connection as a state machine with no socket: packets and the
//! time go in (`on_packet`, `tick`), packets come out (`transmit`), and the
//! application's bytes go through `write` and `read`. Unit-tested alone;
//! `endpoint.rs` drives it from the socket thread and the stream handles.
//!
//! Time is a `u64` of microseconds from any fixed start (the endpoint's
//! `Instant`); the header's timestamps are its low 32 bits.
//!
//! Sequence numbers: SYN, DATA and FIN take one each; STATE carries the
//! next one we will use (libtorrent and libutp read it so: the side that
//! sent a SYN sets its `ack_nr` to the reply's `seq_nr - 1`).
//!
//! Sending: bytes written wait in `unsent`; `transmit` cuts them into
//! packets of at most `mss` bytes while the bytes in flight stay within the
//! congestion window (LEDBAT) and the peer's advertised window. Every packet
//! sent stays in `inflight` until acked (cumulatively or by a selective
//! ack). Loss: three packets selectively acked past a hole, or three
//! duplicate acks, resend the hole and halve the window (once per window);
//! a timeout (RTO, at least 500 ms, doubling with each timeout in a row)
//! resends everything unacked with a window of one packet, and
//! `max_timeouts` in a row end the connection.
//!
//! Receiving: in-order bytes go to `readable`, later packets to a bounded
//! reorder buffer; both count against `recv_buffer`, whose free part is the
//! window we advertise. A packet that does not fit is dropped (and acked,
//! so the sender learns the window).

pub use super::config::{
    Config, Outbox, Stats, INITIAL_RTO_US, MAX_BURST, MAX_INFLIGHT, MAX_REORDER, MAX_RTO_US,
    MIN_RTO_US,
};
use super::config::{DELAY_BUCKET_US, KEEPALIVE_US, LINGER_US, MAX_CWND_INCREASE};
use super::packet::{Header, Packet, Type};
use std::collections::VecDeque;

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The peer sent RESET (or refused our SYN with one).
    Reset,
    /// Too many timeouts in a row.
    TimedOut,
    /// Both sides closed and our FIN was acked.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    SynSent,
    Connected,
    Dead(End),
}

#[derive(Debug)]
struct Sent {
    seq: u16,
    ty: Type,
    payload: Vec<u8>,
    sent_at: u64,
    transmissions: u32,
    /// Waiting to be sent again (lost); not counted in flight.
    resend: bool,
    /// Selectively acked: arrived, waits for the cumulative ack.
    sacked: bool,
}

/// One connection.
#[derive(Debug)]
pub struct Conn {
    cfg: Config,
    phase: Phase,
    recv_id: u16,
    send_id: u16,
    /// The next sequence number we will use.
    seq_nr: u16,
    /// The last sequence number received in order.
    ack_nr: u16,

    unsent: VecDeque<u8>,
    inflight: VecDeque<Sent>,
    /// Payload bytes sent, not acked, not sacked, not waiting for a resend.
    inflight_bytes: usize,
    /// Payload bytes in `inflight` (for the send buffer's cap).
    held_bytes: usize,
    cwnd: f64,
    slow_start: bool,
    ssthresh: f64,
    /// After a loss cut, no further cut until this seq is acked.
    recover_seq: Option<u16>,
    peer_wnd: usize,
    srtt: Option<(u64, u64)>,
    rto: u64,
    timeouts: u32,
    rto_at: Option<u64>,
    dup_acks: u32,
    last_ack: u16,
    probe_at: Option<u64>,
    delay_min: [Option<u32>; 2],
    delay_bucket_start: u64,
    fin_queued: bool,
    fin_sent: bool,
    fin_acked_at: Option<u64>,

    readable: VecDeque<u8>,
    /// Slot i holds packet ack_nr + 1 + i (slot 0 is always empty).
    reorder: VecDeque<Option<(Type, Vec<u8>)>>,
    reorder_bytes: usize,
    eof: bool,
    need_ack: bool,
    /// What we put in timestamp_difference: our clock minus theirs.
    reply_micro: u32,
    last_sent: u64,
    stats: Stats,
}

/// `a - b` as a signed distance on the 16-bit circle.
fn seq_diff(a: u16, b: u16) -> i16 {
    a.wrapping_sub(b) as i16
}

impl Conn {
    fn blank(cfg: Config, recv_id: u16, send_id: u16, now: u64) -> Conn {
        let mss = cfg.mss as f64;
        Conn {
            phase: Phase::SynSent,
            recv_id,
            send_id,
            seq_nr: 0,
            ack_nr: 0,
            unsent: VecDeque::new(),
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            held_bytes: 0,
            cwnd: 2.0 * mss,
            slow_start: true,
            ssthresh: f64::INFINITY,
            recover_seq: None,
            peer_wnd: cfg.mss,
            srtt: None,
            rto: INITIAL_RTO_US,
            timeouts: 0,
            rto_at: None,
            dup_acks: 0,
            last_ack: 0,
            probe_at: None,
            delay_min: [None, None],
            delay_bucket_start: now,
            fin_queued: false,
            fin_sent: false,
            fin_acked_at: None,
            readable: VecDeque::new(),
            reorder: VecDeque::new(),
            reorder_bytes: 0,
            eof: false,
            need_ack: false,
            reply_micro: 0,
            last_sent: now,
            stats: Stats::default(),
            cfg,
        }
    }

    /// A connection we open: `recv_id` is the id the peer will address us
    /// by (the SYN carries it), `first_seq` the SYN's sequence number. The
    /// SYN goes out at the next `transmit`.
    pub fn connect(cfg: Config, recv_id: u16, first_seq: u16, now: u64) -> Conn {
        let mut c = Conn::blank(cfg, recv_id, recv_id.wrapping_add(1), now);
        c.inflight.push_back(Sent {
            seq: first_seq,
            ty: Type::Syn,
            payload: Vec::new(),
            sent_at: now,
            transmissions: 0,
            resend: true,
            sacked: false,
        });
        c.seq_nr = first_seq.wrapping_add(1);
        c.last_ack = first_seq.wrapping_sub(1);
        c
    }

    /// A connection a peer opened with `syn`; our first seq is `first_seq`.
    /// The STATE that answers it goes out at the next `transmit`.
    pub fn accept(cfg: Config, syn: &Packet<'_>, first_seq: u16, now: u64) -> Conn {
        let h = &syn.header;
        let mut c = Conn::blank(cfg, h.conn_id.wrapping_add(1), h.conn_id, now);
        c.phase = Phase::Connected;
        c.seq_nr = first_seq;
        c.last_ack = first_seq.wrapping_sub(1);
        c.ack_nr = h.seq_nr;
        // libtorrent's SYN says 0: no window is known until its next packet.
        c.peer_wnd = (h.wnd_size as usize).max(c.cfg.mss);
        c.reply_micro = (now as u32).wrapping_sub(h.timestamp);
        c.need_ack = true;
        c
    }

    /// The id packets to us carry.
    pub fn recv_id(&self) -> u16 {
        self.recv_id
    }

    pub fn is_connected(&self) -> bool {
        self.phase == Phase::Connected
    }

    pub fn is_connecting(&self) -> bool {
        self.phase == Phase::SynSent
    }

    /// Why the connection ended, once it has.
    pub fn end(&self) -> Option<End> {
        match self.phase {
            Phase::Dead(e) => Some(e),
            _ => None,
        }
    }

    /// The peer closed its direction and every byte before its FIN is
    /// readable.
    pub fn eof(&self) -> bool {
        self.eof
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub fn readable_len(&self) -> usize {
        self.readable.len()
    }

    /// Bytes `write` would take now.
    pub fn writable(&self) -> usize {
        if self.phase != Phase::Connected || self.fin_queued {
            return 0;
        }
        self.cfg
            .send_buffer
            .saturating_sub(self.unsent.len() + self.held_bytes)
    }

    /// Nothing written is waiting or unacked.
    pub fn all_acked(&self) -> bool {
        self.unsent.is_empty() && self.inflight.is_empty()
    }

    /// The congestion window in bytes (for tests and logs).
    pub fn cwnd(&self) -> usize {
        self.cwnd as usize
    }

    /// The current retransmission timeout in microseconds.
    pub fn rto(&self) -> u64 {
        self.rto
    }

    fn free_recv(&self) -> usize {
        self.cfg
            .recv_buffer
            .saturating_sub(self.readable.len() + self.reorder_bytes)
    }

    /// Queues bytes to send; returns how many were taken (0 when the send
    /// buffer is full or the connection is not open for writing).
    pub fn write(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.writable());
        self.unsent.extend(&data[..n]);
        n
    }

    /// Copies readable bytes out. Reading may open our window; if it was
    /// nearly shut, the next `transmit` tells the peer.
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        let before = self.free_recv();
        let n = buf.len().min(self.readable.len());
        let (a, b) = self.readable.as_slices();
        let from_a = n.min(a.len());
        buf[..from_a].copy_from_slice(&a[..from_a]);
        buf[from_a..n].copy_from_slice(&b[..n - from_a]);
        self.readable.drain(..n);
        let after = self.free_recv();
        let half = self.cfg.recv_buffer / 2;
        if (before < self.cfg.mss && after >= self.cfg.mss) || (before < half && after >= half) {
            self.need_ack = true;
        }
        n
    }

    /// Closes our direction: a FIN follows the bytes already written.
    pub fn close(&mut self) {
        self.fin_queued = true;
    }

    /// The connection can be forgotten: it ended, or we closed, our FIN was
    /// acked and the peer closed too (or had time to).
    pub fn finished(&self, now: u64) -> bool {
        match (self.phase, self.fin_acked_at) {
            (Phase::Dead(_), _) => true,
            (_, Some(at)) => self.eof || now >= at + LINGER_US,
            _ => false,
        }
    }

    /// Ends the connection now (the caller sends `reset_packet` if the peer
    /// should know).
    pub fn reset(&mut self) {
        self.phase = Phase::Dead(End::Reset);
    }

    // ------------------------------------------------------------ input --

    /// One packet from the peer (already matched to this connection).
    pub fn on_packet(&mut self, p: &Packet<'_>, now: u64) {
        let h = &p.header;
        if matches!(self.phase, Phase::Dead(_)) {
            return;
        }
        if h.ty == Type::Reset {
            self.phase = Phase::Dead(End::Reset);
            return;
        }
        self.reply_micro = (now as u32).wrapping_sub(h.timestamp);
        match self.phase {
            Phase::SynSent => {
                let syn_seq = self.seq_nr.wrapping_sub(1);
                if h.ty == Type::Syn || h.ack_nr != syn_seq {
                    return;
                }
                self.phase = Phase::Connected;
                // The reply's seq_nr is the first one the peer will use
                // (a DATA packet's is its own, to be delivered below).
                self.ack_nr = h.seq_nr.wrapping_sub(1);
            }
            Phase::Connected => {
                if h.ty == Type::Syn {
                    // Our STATE was lost: answer the SYN again.
                    self.need_ack = true;
                    return;
                }
            }
            Phase::Dead(_) => return,
        }
        self.peer_wnd = h.wnd_size as usize;
        if self.peer_wnd == 0 {
            // A peer that tells us its window is shut is alive.
            self.timeouts = 0;
        }
        self.on_ack(p, now);
        if matches!(h.ty, Type::Data | Type::Fin) {
            self.on_data(h.ty, h.seq_nr, p.payload);
        }
    }

    fn on_ack(&mut self, p: &Packet<'_>, now: u64) {
        let h = &p.header;
        let base = match self.inflight.front() {
            Some(s) => s.seq,
            None => self.seq_nr,
        };
        // How many packets from the front this ack covers.
        let covered = h.ack_nr.wrapping_sub(base.wrapping_sub(1)) as usize;
        if covered > self.inflight.len() {
            return; // stale, or acks what we never sent
        }
        let flight_before = self.inflight_bytes;
        let mut acked_bytes = 0;
        let mut progress = covered > 0;
        let mut rtt_sample = None;
        for _ in 0..covered {
            let s = self.inflight.pop_front().expect("covered <= len");
            self.held_bytes -= s.payload.len();
            if !s.sacked {
                acked_bytes += s.payload.len();
                if !s.resend && s.transmissions > 0 {
                    self.inflight_bytes -= s.payload.len();
                }
            }
            if s.transmissions == 1 {
                rtt_sample = Some(now.saturating_sub(s.sent_at));
            }
            if s.ty == Type::Fin {
                self.fin_acked_at = Some(now);
            }
            if self.recover_seq == Some(s.seq) {
                self.recover_seq = None;
            }
        }
        if let Some(mask) = p.sack {
            let first = h.ack_nr.wrapping_add(2);
            let front = self.inflight.front().map(|s| s.seq);
            for (byte_i, byte) in mask.iter().enumerate() {
                for bit in 0..8 {
                    if byte & (1 << bit) == 0 {
                        continue;
                    }
                    let seq = first.wrapping_add((byte_i * 8 + bit) as u16);
                    let Some(f) = front else { break };
                    let i = seq.wrapping_sub(f) as usize;
                    let Some(s) = self.inflight.get_mut(i) else {
                        continue;
                    };
                    if s.sacked || s.transmissions == 0 {
                        continue;
                    }
                    s.sacked = true;
                    progress = true;
                    acked_bytes += s.payload.len();
                    if !s.resend {
                        self.inflight_bytes -= s.payload.len();
                    }
                    s.resend = false;
                    if s.transmissions == 1 {
                        rtt_sample = Some(now.saturating_sub(s.sent_at));
                    }
                }
            }
            self.detect_sack_loss();
        }
        if let Some(sample) = rtt_sample {
            self.on_rtt(sample);
        }
        if progress {
            self.timeouts = 0;
            self.dup_acks = 0;
            self.rto_at = if self.inflight_bytes > 0 {
                Some(now + self.rto)
            } else {
                None
            };
            if self.inflight.is_empty() {
                self.rto_at = None;
            }
        } else if h.ty == Type::State
            && h.ack_nr == self.last_ack
            && !self.inflight.is_empty()
            && self.inflight.front().is_some_and(|s| s.transmissions > 0)
        {
            self.dup_acks += 1;
            if self.dup_acks == 3 {
                self.lose(0);
            }
        }
        self.last_ack = h.ack_nr;
        if acked_bytes > 0 && h.timestamp_diff != 0 {
            self.ledbat(
                acked_bytes,
                flight_before.max(acked_bytes),
                h.timestamp_diff,
                now,
            );
        }
    }

    /// A packet with three or more selectively acked packets after it is
    /// taken as lost (as libutp and libtorrent do).
    fn detect_sack_loss(&mut self) {
        let mut sacked_after = 0;
        let mut lost = Vec::new();
        for i in (0..self.inflight.len()).rev() {
            let s = &self.inflight[i];
            if s.sacked {
                sacked_after += 1;
            } else if sacked_after >= 3 && !s.resend && s.transmissions == 1 {
                lost.push(i);
            }
        }
        for i in lost.into_iter().rev() {
            self.lose(i);
        }
    }

    /// Marks packet `i` of the flight for a fast resend and cuts the window
    /// once per window of data.
    fn lose(&mut self, i: usize) {
        let Some(s) = self.inflight.get_mut(i) else {
            return;
        };
        if s.resend || s.sacked || s.transmissions == 0 {
            return;
        }
        s.resend = true;
        self.inflight_bytes -= s.payload.len();
        self.stats.fast_resends += 1;
        let seq = s.seq;
        let cut = match self.recover_seq {
            None => true,
            Some(r) => seq_diff(seq, r) > 0,
        };
        if cut {
            let mss = self.cfg.mss as f64;
            self.cwnd = (self.cwnd / 2.0).max(2.0 * mss);
            self.ssthresh = self.cwnd;
            self.slow_start = false;
            self.recover_seq = Some(self.seq_nr.wrapping_sub(1));
        }
    }

    fn on_rtt(&mut self, sample: u64) {
        let (srtt, var) = match self.srtt {
            None => (sample, sample / 2),
            Some((srtt, var)) => {
                let err = srtt.abs_diff(sample);
                let var = (var * 3 + err) / 4;
                let srtt = (srtt * 7 + sample) / 8;
                (srtt, var)
            }
        };
        self.srtt = Some((srtt, var));
        self.rto = (srtt + 4 * var).clamp(MIN_RTO_US, MAX_RTO_US);
    }

    /// LEDBAT: grow the window while the queueing delay our packets see is
    /// under the target, shrink it above, in proportion to the distance and
    /// to the share of the window just acked.
    fn ledbat(&mut self, acked: usize, flight: usize, sample: u32, now: u64) {
        if now >= self.delay_bucket_start + DELAY_BUCKET_US {
            self.delay_min = [None, self.delay_min[0]];
            self.delay_bucket_start = now;
        }
        let lower = |a: u32, b: u32| if (b.wrapping_sub(a) as i32) > 0 { a } else { b };
        self.delay_min[0] = Some(self.delay_min[0].map_or(sample, |m| lower(m, sample)));
        let base = match self.delay_min {
            [Some(a), Some(b)] => lower(a, b),
            [Some(a), None] => a,
            _ => sample,
        };
        let delay = (sample.wrapping_sub(base) as i32).max(0) as f64;
        let target = self.cfg.target_delay_us as f64;
        let mss = self.cfg.mss as f64;
        if delay >= target && self.slow_start {
            self.slow_start = false;
            self.ssthresh = self.cwnd / 2.0;
        }
        let saturated = flight + self.cfg.mss >= self.cwnd as usize;
        if !saturated {
            return;
        }
        let linear = MAX_CWND_INCREASE * (acked as f64 / flight as f64) * (target - delay) / target;
        let gain = if self.slow_start {
            if self.cwnd + acked as f64 > self.ssthresh {
                self.slow_start = false;
                linear
            } else {
                linear.max(acked as f64)
            }
        } else {
            linear
        };
        self.cwnd = (self.cwnd + gain).clamp(2.0 * mss, self.cfg.max_cwnd as f64);
    }

    fn on_data(&mut self, ty: Type, seq: u16, payload: &[u8]) {
        self.need_ack = true;
        if self.eof {
            return;
        }
        let offset = seq.wrapping_sub(self.ack_nr.wrapping_add(1)) as usize;
        if offset >= 0x8000 {
            return; // a duplicate of what we have
        }
        if offset >= MAX_REORDER || payload.len() > self.free_recv() {
            self.stats.dropped_no_room += 1;
            return;
        }
        if offset > 0 {
            if self.reorder.len() <= offset {
                self.reorder.resize_with(offset + 1, || None);
            }
            if self.reorder[offset].is_none() {
                self.reorder_bytes += payload.len();
                self.reorder[offset] = Some((ty, payload.to_vec()));
            }
            return;
        }
        self.deliver(ty, payload);
        self.reorder.pop_front();
        while let Some(Some(_)) = self.reorder.front() {
            let Some(Some((ty, bytes))) = self.reorder.pop_front() else {
                unreachable!()
            };
            self.reorder_bytes -= bytes.len();
            self.deliver(ty, &bytes);
            if self.eof {
                self.reorder.clear();
                self.reorder_bytes = 0;
                break;
            }
        }
    }

    fn deliver(&mut self, ty: Type, payload: &[u8]) {
        self.ack_nr = self.ack_nr.wrapping_add(1);
        if ty == Type::Fin {
            self.eof = true;
        } else {
            self.readable.extend(payload);
        }
    }

    // ----------------------------------------------------------- timers --

    /// The clock moved: retransmission timeouts, keep-alives.
    pub fn tick(&mut self, now: u64) {
        if matches!(self.phase, Phase::Dead(_)) {
            return;
        }
        if let Some(at) = self.rto_at {
            if now >= at {
                self.on_timeout(now);
            }
        }
        if self.phase == Phase::Connected && now >= self.last_sent + KEEPALIVE_US {
            self.need_ack = true;
        }
    }

    fn on_timeout(&mut self, now: u64) {
        self.timeouts += 1;
        self.stats.timeouts += 1;
        let limit = if self.phase == Phase::SynSent {
            self.cfg.max_syn_timeouts
        } else {
            self.cfg.max_timeouts
        };
        if self.timeouts >= limit {
            self.phase = Phase::Dead(End::TimedOut);
            return;
        }
        self.rto = (self.rto * 2).min(MAX_RTO_US);
        let mss = self.cfg.mss as f64;
        if self.phase == Phase::Connected {
            self.ssthresh = (self.cwnd / 2.0).max(2.0 * mss);
            self.cwnd = mss;
            self.slow_start = true;
        }
        for s in self.inflight.iter_mut() {
            if !s.sacked && !s.resend && s.transmissions > 0 {
                s.resend = true;
            }
        }
        self.inflight_bytes = 0;
        self.dup_acks = 0;
        self.rto_at = Some(now + self.rto);
    }

    /// When `tick` next has something to do (an RTO), if ever.
    pub fn next_timer(&self) -> Option<u64> {
        self.rto_at
    }

    // ----------------------------------------------------------- output --

    fn header(&self, ty: Type, seq: u16, now: u64) -> Header {
        Header {
            ty,
            conn_id: if ty == Type::Syn {
                self.recv_id
            } else {
                self.send_id
            },
            timestamp: now as u32,
            timestamp_diff: self.reply_micro,
            wnd_size: self.free_recv() as u32,
            seq_nr: seq,
            ack_nr: self.ack_nr,
        }
    }

    fn window(&self) -> usize {
        (self.cwnd as usize).min(self.peer_wnd)
    }

    /// May a packet of `len` payload bytes go now?
    fn fits(&self, len: usize) -> bool {
        self.inflight_bytes == 0 || self.inflight_bytes + len <= self.window()
    }

    /// Appends every packet due now to `out`.
    pub fn transmit(&mut self, now: u64, out: &mut Outbox) {
        let before = out.ends.len();
        if let Phase::Dead(_) = self.phase {
            return;
        }
        // Resends first, oldest first.
        let mut burst = MAX_BURST;
        for i in 0..self.inflight.len() {
            let s = &self.inflight[i];
            if !s.resend {
                continue;
            }
            if !self.fits(s.payload.len()) || burst == 0 {
                break;
            }
            burst -= 1;
            self.send_sent(i, now, out);
        }
        if self.phase == Phase::Connected {
            self.send_new(now, out, burst);
        }
        if self.need_ack && self.phase == Phase::Connected {
            let anything = out.ends.len() > before;
            if !anything || self.reorder.len() > 1 {
                self.send_state(now, out);
            }
        }
        if out.ends.len() > before {
            self.need_ack = false;
            self.last_sent = now;
        }
    }

    fn send_new(&mut self, now: u64, out: &mut Outbox, mut burst: usize) {
        while !self.unsent.is_empty() && self.inflight.len() < MAX_INFLIGHT && burst > 0 {
            burst -= 1;
            let mut len = self.unsent.len().min(self.cfg.mss);
            if self.peer_wnd == 0 {
                // Shut window: nothing in flight means nothing will tell us
                // it opened, so probe with one packet after an RTO.
                if self.inflight_bytes > 0 || !self.inflight.is_empty() {
                    return;
                }
                match self.probe_at {
                    None => {
                        self.probe_at = Some(now + self.rto);
                        return;
                    }
                    Some(at) if now < at => return,
                    Some(_) => self.probe_at = None,
                }
            } else if self.inflight_bytes == 0 {
                len = len.min(self.peer_wnd);
            } else if self.inflight_bytes + len > self.window() {
                return;
            }
            let payload: Vec<u8> = self.unsent.drain(..len).collect();
            self.held_bytes += len;
            self.inflight.push_back(Sent {
                seq: self.seq_nr,
                ty: Type::Data,
                payload,
                sent_at: now,
                transmissions: 0,
                resend: true,
                sacked: false,
            });
            self.seq_nr = self.seq_nr.wrapping_add(1);
            let i = self.inflight.len() - 1;
            self.send_sent(i, now, out);
        }
        if self.fin_queued && !self.fin_sent && self.unsent.is_empty() {
            self.fin_sent = true;
            self.inflight.push_back(Sent {
                seq: self.seq_nr,
                ty: Type::Fin,
                payload: Vec::new(),
                sent_at: now,
                transmissions: 0,
                resend: true,
                sacked: false,
            });
            self.seq_nr = self.seq_nr.wrapping_add(1);
            let i = self.inflight.len() - 1;
            self.send_sent(i, now, out);
        }
    }

    /// Sends (or resends) packet `i` of the flight.
    fn send_sent(&mut self, i: usize, now: u64, out: &mut Outbox) {
        let (ty, seq) = (self.inflight[i].ty, self.inflight[i].seq);
        let h = self.header(ty, seq, now);
        let s = &mut self.inflight[i];
        super::packet::encode(&h, None, &s.payload, &mut out.bytes);
        out.ends.push(out.bytes.len());
        if s.transmissions > 0 {
            self.stats.resent += 1;
        }
        s.transmissions += 1;
        s.sent_at = now;
        s.resend = false;
        self.inflight_bytes += s.payload.len();
        self.stats.packets_sent += 1;
        if self.rto_at.is_none() {
            self.rto_at = Some(now + self.rto);
        }
    }

    fn send_state(&mut self, now: u64, out: &mut Outbox) {
        // A STATE carries the next seq we will use, but none follows a FIN:
        // after ours it carries the FIN's (libtorrent ignores a packet
        // whose seq is past the FIN it received).
        let seq = if self.fin_sent {
            self.seq_nr.wrapping_sub(1)
        } else {
            self.seq_nr
        };
        let h = self.header(Type::State, seq, now);
        let mask = self.sack_mask();
        super::packet::encode(&h, mask.as_deref(), &[], &mut out.bytes);
        out.ends.push(out.bytes.len());
        self.stats.packets_sent += 1;
    }

    /// The selective ack of what waits in the reorder buffer: bit k stands
    /// for ack_nr + 2 + k, i.e. reorder slot k + 1.
    fn sack_mask(&self) -> Option<Vec<u8>> {
        if self.reorder.len() <= 1 {
            return None;
        }
        let bits = self.reorder.len() - 1;
        let len = bits.div_ceil(32) * 4;
        let mut mask = vec![0u8; len.min(128)];
        for (k, slot) in self.reorder.iter().skip(1).enumerate() {
            if slot.is_some() && k / 8 < mask.len() {
                mask[k / 8] |= 1 << (k % 8);
            }
        }
        Some(mask)
    }

    /// A RESET for this connection (sent when a handle is dropped on a
    /// connection that is not closing cleanly).
    pub fn reset_packet(&self, now: u64, out: &mut Outbox) {
        let h = self.header(Type::Reset, self.seq_nr, now);
        super::packet::encode(&h, None, &[], &mut out.bytes);
        out.ends.push(out.bytes.len());
    }
}

#[cfg(test)]
mod tests;

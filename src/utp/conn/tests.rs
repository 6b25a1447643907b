//! The state machine with no socket: two connections joined by a link
//! that can drop, duplicate, reorder and hold back packets.

use super::*;
use crate::rng::Rng;
use crate::utp::packet::decode;

const MS: u64 = 1_000;

/// What the link does to packets.
#[derive(Clone, Copy, Default)]
struct Faults {
    /// Per mille of packets dropped.
    drop: u64,
    /// Per mille of packets sent twice.
    dup: u64,
    /// Per mille of packets held back one round (so overtaken).
    delay: u64,
}

/// Two connections and the packets between them, in rounds of `step` µs.
struct Link {
    a: Conn,
    b: Conn,
    now: u64,
    step: u64,
    rng: Rng,
    faults: Faults,
    /// Held back one round: (to_b, bytes).
    held: Vec<(bool, Vec<u8>)>,
    /// Drop everything a sends (a cut cable).
    cut_a: bool,
    /// Every datagram a sent, as (time, bytes), when recording.
    record_a: Option<Vec<(u64, Vec<u8>)>>,
}

fn handshake(cfg: Config, a_seq: u16, b_seq: u16) -> (Conn, Conn) {
    let mut a = Conn::connect(cfg.clone(), 0x1234, a_seq, 0);
    let mut out = Outbox::default();
    a.transmit(0, &mut out);
    assert_eq!(out.ends.len(), 1, "one SYN");
    let syn_bytes = out.datagrams().next().unwrap().to_vec();
    let syn = decode(&syn_bytes).unwrap();
    assert_eq!(syn.header.ty, Type::Syn);
    assert_eq!(syn.header.conn_id, 0x1234);
    assert_eq!(syn.header.seq_nr, a_seq);
    let mut b = Conn::accept(cfg, &syn, b_seq, 0);
    out.clear();
    b.transmit(0, &mut out);
    let state = decode(out.datagrams().next().unwrap()).unwrap();
    assert_eq!(state.header.ty, Type::State);
    assert_eq!(
        state.header.conn_id, 0x1234,
        "the reply carries the SYN's id"
    );
    assert_eq!(state.header.ack_nr, a_seq);
    assert_eq!(state.header.seq_nr, b_seq, "a STATE carries the next seq");
    a.on_packet(&state, 0);
    assert!(a.is_connected());
    (a, b)
}

impl Link {
    fn new(cfg: Config, faults: Faults, seed: u64) -> Link {
        Link::with_seqs(cfg, faults, seed, 1000, 40_000)
    }

    fn with_seqs(cfg: Config, faults: Faults, seed: u64, a_seq: u16, b_seq: u16) -> Link {
        let (a, b) = handshake(cfg, a_seq, b_seq);
        Link {
            a,
            b,
            now: 0,
            step: MS,
            rng: Rng::new(seed),
            faults,
            held: Vec::new(),
            cut_a: false,
            record_a: None,
        }
    }

    /// One round: timers, both sides transmit, the link delivers.
    fn round(&mut self) {
        self.now += self.step;
        let now = self.now;
        self.a.tick(now);
        self.b.tick(now);
        let mut from_a = Outbox::default();
        let mut from_b = Outbox::default();
        self.a.transmit(now, &mut from_a);
        self.b.transmit(now, &mut from_b);
        let mut deliver: Vec<(bool, Vec<u8>)> = std::mem::take(&mut self.held);
        for d in from_a.datagrams() {
            if let Some(r) = self.record_a.as_mut() {
                r.push((now, d.to_vec()));
            }
            if !self.cut_a {
                self.fault(true, d, &mut deliver);
            }
        }
        for d in from_b.datagrams() {
            self.fault(false, d, &mut deliver);
        }
        for (to_b, bytes) in deliver {
            let p = decode(&bytes).unwrap();
            if to_b {
                self.b.on_packet(&p, now);
            } else {
                self.a.on_packet(&p, now);
            }
        }
    }

    fn fault(&mut self, to_b: bool, d: &[u8], deliver: &mut Vec<(bool, Vec<u8>)>) {
        let f = self.faults;
        if self.rng.below(1000) < f.drop {
            return;
        }
        let copies = if self.rng.below(1000) < f.dup { 2 } else { 1 };
        for _ in 0..copies {
            if self.rng.below(1000) < f.delay {
                self.held.push((to_b, d.to_vec()));
            } else {
                deliver.push((to_b, d.to_vec()));
            }
        }
    }

    /// Sends `data` from a to b (b reading as it arrives, up to
    /// `read_per_round` bytes a round); returns what b read.
    fn transfer(&mut self, data: &[u8], read_per_round: usize, max_rounds: u64) -> Vec<u8> {
        let mut sent = 0;
        let mut got = Vec::with_capacity(data.len());
        let mut buf = vec![0u8; 64 * 1024];
        for _ in 0..max_rounds {
            sent += self.a.write(&data[sent..]);
            self.round();
            let mut budget = read_per_round;
            while budget > 0 {
                let want = budget.min(buf.len());
                let n = self.b.read(&mut buf[..want]);
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                budget -= n;
            }
            if got.len() == data.len() {
                return got;
            }
            assert!(self.a.end().is_none(), "a ended: {:?}", self.a.end());
            assert!(self.b.end().is_none(), "b ended: {:?}", self.b.end());
        }
        panic!(
            "transfer stalled: {} of {} bytes after {max_rounds} rounds; a {:?}",
            got.len(),
            data.len(),
            self.a.stats()
        );
    }
}

fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Rng::new(seed).fill(&mut v);
    v
}

#[test]
fn a_clean_link_carries_bytes_in_order_both_ways() {
    let mut link = Link::new(Config::default(), Faults::default(), 1);
    let data = content(3 * 1024 * 1024 + 17, 1);
    assert_eq!(link.transfer(&data, usize::MAX, 20_000), data);
    // And back.
    std::mem::swap(&mut link.a, &mut link.b);
    let back = content(100_000, 2);
    assert_eq!(link.transfer(&back, usize::MAX, 20_000), back);
    assert_eq!(link.a.stats().timeouts, 0);
}

#[test]
fn sequence_numbers_wrap_around() {
    let mut link = Link::with_seqs(Config::default(), Faults::default(), 2, 65_530, 65_533);
    let data = content(200 * 1380, 3);
    assert_eq!(link.transfer(&data, usize::MAX, 20_000), data);
}

#[test]
fn reordered_packets_are_delivered_in_order_and_selectively_acked() {
    let (mut a, mut b) = handshake(Config::default(), 10, 20);
    let data = content(10 * 1380, 4);
    assert_eq!(a.write(&data), data.len());
    let mut out = Outbox::default();
    a.transmit(MS, &mut out);
    let packets: Vec<Vec<u8>> = out.datagrams().map(|d| d.to_vec()).collect();
    // cwnd starts at 2 packets; ack them to open it.
    assert!(packets.len() >= 2);
    let mut all = packets.clone();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    // Several rounds, each delivered backwards.
    for round in 0..20 {
        for p in all.iter().rev() {
            b.on_packet(&decode(p).unwrap(), (round + 2) * MS);
        }
        let mut acks = Outbox::default();
        b.transmit((round + 2) * MS, &mut acks);
        for ack in acks.datagrams() {
            a.on_packet(&decode(ack).unwrap(), (round + 2) * MS);
        }
        let n = b.read(&mut buf);
        got.extend_from_slice(&buf[..n]);
        let mut next = Outbox::default();
        a.transmit((round + 2) * MS, &mut next);
        all = next.datagrams().map(|d| d.to_vec()).collect();
        if got.len() == data.len() {
            break;
        }
    }
    assert_eq!(got, data);
}

/// a, its window open (as if many round trips went well), sends 8
/// packets of `data`; b receives all but the first. Returns both ends,
/// a's datagrams and b's ack (bytes).
fn first_of_eight_lost(data: &[u8]) -> (Conn, Conn, Vec<Vec<u8>>, Vec<u8>) {
    let (mut a, mut b) = handshake(Config::default(), 100, 200);
    a.cwnd = 64.0 * 1380.0;
    a.peer_wnd = 1 << 20;
    a.write(data);
    let mut out = Outbox::default();
    a.transmit(MS, &mut out);
    let packets: Vec<Vec<u8>> = out.datagrams().map(|d| d.to_vec()).collect();
    assert_eq!(packets.len(), 8);
    for p in &packets[1..] {
        b.on_packet(&decode(p).unwrap(), 2 * MS);
    }
    let mut acks = Outbox::default();
    b.transmit(2 * MS, &mut acks);
    let ack = acks.datagrams().last().unwrap().to_vec();
    (a, b, packets, ack)
}

/// What a sends at `now`, and the seq of its first DATA packet.
fn resend_at(a: &mut Conn, now: u64) -> (Outbox, u16) {
    let mut resend = Outbox::default();
    a.transmit(now, &mut resend);
    let first = resend
        .datagrams()
        .map(|d| decode(d).unwrap().header)
        .find(|h| h.ty == Type::Data)
        .expect("the hole is resent at once");
    (resend, first.seq_nr)
}

#[test]
fn a_hole_is_selectively_acked_and_fast_resent_without_a_timeout() {
    let data = content(8 * 1380, 5);
    let (mut a, mut b, packets, ack) = first_of_eight_lost(&data);
    let ack = decode(&ack).unwrap();
    assert_eq!(ack.header.ack_nr, 100, "nothing in order past the SYN");
    assert_eq!(
        ack.sack,
        Some(&[0x7f, 0, 0, 0][..]),
        "packets 2..8 acked selectively"
    );
    a.on_packet(&ack, 2 * MS);
    let (resend, seq) = resend_at(&mut a, 3 * MS);
    assert_eq!(seq, decode(&packets[0]).unwrap().header.seq_nr);
    assert_eq!(a.stats().fast_resends, 1);
    assert_eq!(a.stats().timeouts, 0);
    b.on_packet(&decode(resend.datagrams().next().unwrap()).unwrap(), 4 * MS);
    let mut buf = vec![0u8; data.len() + 10];
    assert_eq!(b.read(&mut buf), data.len());
    assert_eq!(&buf[..data.len()], &data[..]);
}

#[test]
fn a_selective_ack_as_short_as_libtorrent_sends_it_is_read() {
    // libtorrent sends as many SACK bytes as its receive buffer spans (here
    // one byte for seven packets), not BEP 29's multiple of 4. Before we
    // read those, every ack it sent while it had a gap was dropped, and
    // the connection froze with only timeouts resending one packet.
    let (mut a, _b, packets, ours) = first_of_eight_lost(&content(8 * 1380, 7));
    assert_eq!(&ours[20..], &[0, 4, 0x7f, 0, 0, 0], "our SACK: 4 bytes");
    let mut theirs = ours[..20].to_vec();
    theirs.extend_from_slice(&[0, 1, 0x7f]);
    let ack = decode(&theirs).expect("a one-byte SACK decodes");
    a.on_packet(&ack, 2 * MS);
    let (_, seq) = resend_at(&mut a, 3 * MS);
    assert_eq!(seq, decode(&packets[0]).unwrap().header.seq_nr);
    assert_eq!(a.stats().fast_resends, 1);
}

#[test]
fn three_duplicate_acks_resend_the_oldest_packet() {
    let (mut a, mut b) = handshake(Config::default(), 100, 200);
    a.cwnd = 64.0 * 1380.0;
    a.peer_wnd = 1 << 20;
    a.write(&content(4 * 1380, 6));
    let mut out = Outbox::default();
    a.transmit(MS, &mut out);
    assert_eq!(out.ends.len(), 4);
    // b never saw any of them; it sends three plain STATEs (no sack).
    let mut st = Outbox::default();
    for i in 0..3 {
        b.need_ack = true;
        b.transmit((2 + i) * MS, &mut st);
    }
    let acks: Vec<Vec<u8>> = st.datagrams().map(|d| d.to_vec()).collect();
    for (i, ack) in acks.iter().enumerate() {
        a.on_packet(&decode(ack).unwrap(), (5 + i as u64) * MS);
        let mut resend = Outbox::default();
        a.transmit((5 + i as u64) * MS, &mut resend);
        assert_eq!(
            resend.ends.len(),
            usize::from(i == 2),
            "resend after 3 dup acks"
        );
    }
    assert_eq!(a.stats().fast_resends, 1);
}

#[test]
fn duplicated_packets_are_delivered_once() {
    let faults = Faults {
        dup: 500,
        ..Faults::default()
    };
    let mut link = Link::new(Config::default(), faults, 7);
    let data = content(1024 * 1024, 7);
    assert_eq!(link.transfer(&data, usize::MAX, 20_000), data);
}

#[test]
fn a_lossy_reordering_duplicating_link_delivers_every_byte() {
    let faults = Faults {
        drop: 30,
        dup: 10,
        delay: 30,
    };
    let mut link = Link::new(Config::default(), faults, 8);
    let data = content(4 * 1024 * 1024, 8);
    assert_eq!(link.transfer(&data, usize::MAX, 200_000), data);
    let s = link.a.stats();
    assert!(s.fast_resends > 0, "{s:?}");
}

/// The figure: 64 MiB over a link that drops 3 %, duplicates 1 %
/// and reorders 3 % of the packets, byte-identical (under a second).
#[test]
fn sixty_four_mib_cross_a_lossy_link_byte_identical() {
    let faults = Faults {
        drop: 30,
        dup: 10,
        delay: 30,
    };
    let mut link = Link::new(Config::default(), faults, 64);
    let data = content(64 * 1024 * 1024, 64);
    let got = link.transfer(&data, usize::MAX, 5_000_000);
    assert!(got == data, "the bytes differ");
}

#[test]
fn a_shut_window_stops_the_sender_until_the_reader_reads() {
    let cfg = Config {
        recv_buffer: 64 * 1024,
        ..Config::default()
    };
    let mut link = Link::new(cfg, Faults::default(), 9);
    let data = content(1024 * 1024, 9);
    let mut sent = 0;
    for _ in 0..3000 {
        sent += link.a.write(&data[sent..]);
        link.round();
    }
    // b read nothing: it holds at most its buffer, and a sent no more
    // than that plus window probes (each dropped, never more than a packet).
    assert_eq!(link.b.readable_len(), 64 * 1024);
    assert_eq!(link.b.free_recv(), 0);
    assert_eq!(link.a.peer_wnd, 0);
    let dropped = link.b.stats().dropped_no_room;
    assert!(
        dropped <= 3000 / 500 + 2,
        "probes are paced by the RTO: {dropped}"
    );
    assert!(link.a.end().is_none(), "a zero window is not a dead peer");
    // Now b reads; the rest flows.
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..200_000 {
        let n = link.b.read(&mut buf);
        got.extend_from_slice(&buf[..n]);
        if got.len() == data.len() {
            break;
        }
        sent += link.a.write(&data[sent..]);
        link.round();
    }
    assert!(got == data, "{} of {} bytes", got.len(), data.len());
}

#[test]
fn the_sender_never_exceeds_the_advertised_window() {
    let cfg = Config {
        recv_buffer: 20 * 1380,
        ..Config::default()
    };
    let mut link = Link::new(cfg, Faults::default(), 10);
    link.record_a = Some(Vec::new());
    let data = content(1024 * 1024, 10);
    // b reads slowly: 500 bytes a round, so its window is often nearly shut.
    assert_eq!(link.transfer(&data, 500, 100_000), data);
    assert_eq!(
        link.b.stats().dropped_no_room,
        0,
        "nothing sent past the window"
    );
}

#[test]
fn a_long_round_trip_gets_a_window_of_more_than_128_kib() {
    // At a 100 ms round trip 128 KiB in flight is 1.3 MB/s per connection.
    // The window was capped there while libtorrent's short selective acks
    // were being dropped (see packet.rs); the cap is now 1 MiB. Here each
    // way takes 50 ms and b's clock runs 7 ms ahead (LEDBAT's base delay
    // takes both out): the window grows past 400 KiB.
    let (mut a, mut b) = handshake(Config::default(), 100, 200);
    let data = content(16 * 1024 * 1024, 14);
    let (mut sent, mut got, mut peak) = (0, 0, 0);
    let mut buf = vec![0u8; 1 << 20];
    let mut now = 0;
    for _ in 0..400 {
        now += 100 * MS;
        let at_b = now + 50 * MS + 7 * MS;
        sent += a.write(&data[sent..]);
        a.tick(now);
        // The endpoint transmits on every ack; here, until the window
        // (not the burst limit) stops a.
        for _ in 0..100 {
            let mut to_b = Outbox::default();
            a.transmit(now, &mut to_b);
            if to_b.is_empty() {
                break;
            }
            for d in to_b.datagrams() {
                b.on_packet(&decode(d).unwrap(), at_b);
            }
        }
        peak = peak.max(a.inflight_bytes);
        loop {
            let n = b.read(&mut buf);
            if n == 0 {
                break;
            }
            got += n;
        }
        let mut to_a = Outbox::default();
        b.tick(at_b);
        b.transmit(at_b, &mut to_a);
        for d in to_a.datagrams() {
            a.on_packet(&decode(d).unwrap(), now + 100 * MS);
        }
        if got == data.len() {
            break;
        }
    }
    assert_eq!(got, data.len(), "{:?}", a.stats());
    assert!(peak >= 400 * 1024, "at most {peak} bytes in flight");
}

#[test]
fn a_reset_mid_transfer_ends_both_directions() {
    let mut link = Link::new(Config::default(), Faults::default(), 11);
    let data = content(1024 * 1024, 11);
    link.a.write(&data);
    for _ in 0..5 {
        link.round();
    }
    assert!(link.b.readable_len() > 0);
    let mut out = Outbox::default();
    link.a.reset_packet(link.now, &mut out);
    link.a.reset();
    let reset = out.datagrams().next().unwrap().to_vec();
    link.b.on_packet(&decode(&reset).unwrap(), link.now);
    assert_eq!(link.b.end(), Some(End::Reset));
    assert_eq!(link.b.writable(), 0);
    assert!(link.b.finished(link.now));
    let mut after = Outbox::default();
    link.b.transmit(link.now + MS, &mut after);
    link.a.transmit(link.now + MS, &mut after);
    assert!(after.is_empty(), "nothing is sent after a reset");
}

#[test]
fn timeouts_double_and_too_many_end_the_connection() {
    let mut link = Link::new(Config::default(), Faults::default(), 12);
    link.step = 10 * MS;
    link.a.write(&content(10_000, 12));
    while !link.a.all_acked() {
        link.round();
    }
    // The cable is cut: a's packets no longer arrive.
    link.cut_a = true;
    link.record_a = Some(Vec::new());
    link.a.write(&content(1380, 13));
    let cut_at = link.now;
    for _ in 0..100_000 {
        link.round();
        if link.a.end().is_some() {
            break;
        }
    }
    assert_eq!(link.a.end(), Some(End::TimedOut));
    // A dead peer is given up within half a minute (libtorrent gives up
    // after three timeouts), so its worker is free for another peer.
    let gave_up_after = link.now - cut_at;
    assert!(gave_up_after <= 30_000 * MS, "{gave_up_after} µs");
    let sends: Vec<u64> = link
        .record_a
        .take()
        .unwrap()
        .iter()
        .filter(|(_, d)| decode(d).unwrap().header.ty == Type::Data)
        .map(|(t, _)| *t)
        .collect();
    // First send, then one resend per timeout but the last.
    assert_eq!(sends.len(), link.a.cfg.max_timeouts as usize);
    let gaps: Vec<u64> = sends.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[0] >= MIN_RTO_US, "{gaps:?}");
    for w in gaps.windows(2) {
        // Doubling, give or take one round of the clock.
        assert!(
            w[1] + link.step >= 2 * w[0] && w[1] <= 2 * w[0] + link.step,
            "{gaps:?}"
        );
    }
}

#[test]
fn an_unanswered_syn_is_resent_after_1_then_2_seconds_then_given_up() {
    let mut a = Conn::connect(Config::default(), 7, 1, 0);
    let mut sends = Vec::new();
    let mut now = 0;
    while a.end().is_none() && now < 60_000 * MS {
        a.tick(now);
        let mut out = Outbox::default();
        a.transmit(now, &mut out);
        sends.extend(out.datagrams().map(|_| now));
        now += 10 * MS;
    }
    assert_eq!(sends, vec![0, 1000 * MS, 3000 * MS]);
    assert_eq!(a.end(), Some(End::TimedOut));
    assert_eq!(now, 7010 * MS);
}

#[test]
fn a_syn_reset_is_a_refusal() {
    let mut a = Conn::connect(Config::default(), 7, 1, 0);
    let mut out = Outbox::default();
    a.transmit(0, &mut out);
    let mut r = Vec::new();
    let h = Header {
        ty: Type::Reset,
        conn_id: 7,
        timestamp: 0,
        timestamp_diff: 0,
        wnd_size: 0,
        seq_nr: 9,
        ack_nr: 1,
    };
    crate::utp::packet::encode(&h, None, &[], &mut r);
    a.on_packet(&decode(&r).unwrap(), MS);
    assert_eq!(a.end(), Some(End::Reset));
}

#[test]
fn fin_after_data_gives_eof_once_every_byte_is_read() {
    let mut link = Link::new(Config::default(), Faults::default(), 14);
    let data = content(50_000, 14);
    link.a.write(&data);
    link.a.close();
    assert_eq!(link.a.write(b"more"), 0, "closed for writing");
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    for _ in 0..1000 {
        link.round();
        loop {
            let n = link.b.read(&mut buf);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        if link.b.eof() {
            break;
        }
    }
    assert!(link.b.eof());
    assert_eq!(got, data);
    // b closes too; both finish.
    link.b.close();
    for _ in 0..100 {
        link.round();
    }
    assert!(link.a.finished(link.now) && link.b.finished(link.now));
}

#[test]
fn ledbat_grows_the_window_under_the_target_and_shrinks_it_above() {
    let (mut a, _b) = handshake(Config::default(), 1, 1);
    a.slow_start = false;
    a.cwnd = 40.0 * 1380.0;
    a.peer_wnd = 1 << 22;
    let mut now = MS;
    // Each round: fill the window, then ack it all with a delay sample.
    let mut run = |a: &mut Conn, extra_delay_us: u32, rounds: usize| {
        for _ in 0..rounds {
            a.write(&vec![0u8; a.writable().min(200 * 1380)]);
            loop {
                let mut out = Outbox::default();
                a.transmit(now, &mut out);
                if out.is_empty() {
                    break;
                }
            }
            now += 20 * MS;
            let last = a.seq_nr.wrapping_sub(1);
            let h = Header {
                ty: Type::State,
                conn_id: 0,
                timestamp: now as u32,
                timestamp_diff: 5_000_000 + extra_delay_us,
                wnd_size: 1 << 22,
                seq_nr: 1,
                ack_nr: last,
            };
            let mut ack = Vec::new();
            crate::utp::packet::encode(&h, None, &[], &mut ack);
            a.on_packet(&decode(&ack).unwrap(), now);
        }
    };
    run(&mut a, 0, 1); // the base delay
    let start = a.cwnd();
    run(&mut a, 10_000, 20);
    let grown = a.cwnd();
    assert!(grown > start, "{start} -> {grown} at 10 ms of delay");
    run(&mut a, 300_000, 20);
    let shrunk = a.cwnd();
    assert!(shrunk < grown, "{grown} -> {shrunk} at 300 ms of delay");
}

#[test]
fn a_state_after_our_fin_carries_the_fins_seq() {
    // libtorrent ignores a packet whose seq is past the FIN it got, so
    // the ack of its FIN must not carry FIN + 1.
    let (mut a, _b) = handshake(Config::default(), 10, 20);
    a.close();
    let mut out = Outbox::default();
    a.transmit(MS, &mut out);
    let fin = decode(out.datagrams().next().unwrap()).unwrap().header;
    assert_eq!(fin.ty, Type::Fin);
    a.need_ack = true;
    let mut again = Outbox::default();
    a.transmit(2 * MS, &mut again);
    let state = decode(again.datagrams().next().unwrap()).unwrap().header;
    assert_eq!(state.ty, Type::State);
    assert_eq!(state.seq_nr, fin.seq_nr);
}

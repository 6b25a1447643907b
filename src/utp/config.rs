//! The knobs and the plain types of a uTP connection: its `Config`, the
//! protocol's constants, the `Outbox` datagrams are written to and the
//! `Stats` it keeps. `conn.rs` re-exports them.

/// The knobs of one connection.
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest payload in one packet. 1380 keeps the datagram at 1400 bytes
    /// (with a selective ack at most 1434 bytes), under the 1472 of an
    /// Ethernet path and the 1452 of IPv6 over Ethernet.
    pub mss: usize,
    /// Bytes written and not yet acked (unsent plus in flight).
    pub send_buffer: usize,
    /// Bytes received and not yet read (in order plus reordered): the
    /// largest window we advertise.
    pub recv_buffer: usize,
    /// Timeouts in a row that end a connection (5: about 15 s of silence
    /// after a good round trip time, 31 s from the initial RTO).
    pub max_timeouts: u32,
    /// Timeouts of the SYN that end a connect.
    pub max_syn_timeouts: u32,
    /// LEDBAT's target queueing delay.
    pub target_delay_us: u64,
    /// The congestion window's ceiling, 1 MiB (libtorrent's receive
    /// window). What is in flight is also bounded by `send_buffer` (512
    /// KiB): about 5 MB/s per connection at a 100 ms round trip.
    /// Sessions 9 and 10 capped it at 128 KiB because a uTP-only libtorrent
    /// leecher "stopped answering" after a loss; the cause was ours (we
    /// dropped its selective acks, packet.rs), and with it fixed 25 runs of
    /// 24 MiB at 1 MiB went through without a stall.
    pub max_cwnd: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            mss: 1380,
            send_buffer: 512 * 1024,
            recv_buffer: 512 * 1024,
            max_timeouts: 5,
            max_syn_timeouts: 3,
            target_delay_us: 100_000,
            max_cwnd: 1024 * 1024,
        }
    }
}

/// The smallest RTO (BEP 29: 500 ms).
pub const MIN_RTO_US: u64 = 500_000;
/// The RTO before any round trip was measured (BEP 29: 1 s).
pub const INITIAL_RTO_US: u64 = 1_000_000;
/// The largest RTO, however many timeouts in a row.
pub const MAX_RTO_US: u64 = 60_000_000;
/// Packets held out of order at most (and the reach of our selective ack).
pub const MAX_REORDER: usize = 1024;
/// Packets in flight at most (seq numbers are 16 bits; acks must not wrap).
pub const MAX_INFLIGHT: usize = 2048;
/// Data packets one `transmit` sends at most: the rest waits for the next
/// ack or tick, so a wide window never lands as one burst that overflows
/// the receiver's socket buffer (a default Linux UDP buffer holds about
/// 90 datagrams of this size).
pub const MAX_BURST: usize = 32;
/// LEDBAT's growth per round trip at zero delay (as libutp and libtorrent).
pub(super) const MAX_CWND_INCREASE: f64 = 3000.0;
/// Something is sent at least this often so NATs keep the mapping.
pub(super) const KEEPALIVE_US: u64 = 29_000_000;
/// How long a closed connection stays to answer the peer's FIN.
pub(super) const LINGER_US: u64 = 2_000_000;
/// Each minute's smallest delay sample; the base is the smaller of two.
pub(super) const DELAY_BUCKET_US: u64 = 60_000_000;

/// A buffer of datagrams to send: their bytes back to back and their ends.
#[derive(Debug, Default)]
pub struct Outbox {
    pub bytes: Vec<u8>,
    pub ends: Vec<usize>,
}

impl Outbox {
    /// The datagrams, in order.
    pub fn datagrams(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let d = &self.bytes[start..end];
            start = end;
            d
        })
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

/// Statistics a test or a log line can read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub packets_sent: u64,
    pub resent: u64,
    pub timeouts: u64,
    pub fast_resends: u64,
    pub dropped_no_room: u64,
}

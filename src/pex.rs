//! Peer exchange (ut_pex, BEP 11): peers tell each other whom they are
//! connected to.
//!
//! A ut_pex message is a bencoded dictionary of compact address lists:
//! `added` (6 bytes each: IPv4 then port), `added.f` (one flag byte per
//! added peer), `dropped`, and the IPv6 forms `added6`, `added6.f`,
//! `dropped6` (18 bytes each). We send our connected set at most once a
//! minute as a delta against what we last sent that peer ([`PexSent`]);
//! we read `added`/`added6` into the coordinator's peer list (flag 0x10,
//! "reachable", is kept; `dropped` only stops us from asking that peer
//! for them again, so it is read and otherwise ignored). Never used for
//! private torrents (BEP 27).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::bencode::{self, Value};

/// How often we send a peer our connected set (BEP 11: at most once a minute).
pub const INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
/// Most added (and dropped) peers we put in one message (BEP 11 suggests 50).
pub const MAX_PER_MESSAGE: usize = 50;
/// Most added peers we take from one message; more are ignored.
pub const MAX_ACCEPTED: usize = 200;

/// Flag bits of `added.f`.
pub mod flags {
    /// The peer prefers encryption.
    pub const ENCRYPTION: u8 = 0x01;
    /// The peer is a seed.
    pub const SEED: u8 = 0x02;
    /// The peer supports uTP.
    pub const UTP: u8 = 0x04;
    /// The peer supports ut_holepunch.
    pub const HOLEPUNCH: u8 = 0x08;
    /// The peer is reachable (accepts incoming connections).
    pub const REACHABLE: u8 = 0x10;
}

/// A decoded ut_pex message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PexMessage {
    /// New peers, with their flags (0 when the sender gave none).
    pub added: Vec<(SocketAddr, u8)>,
    /// Peers the sender disconnected from.
    pub dropped: Vec<SocketAddr>,
}

/// Why a ut_pex message was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PexError(pub String);

impl std::fmt::Display for PexError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ut_pex: {}", self.0)
    }
}

impl std::error::Error for PexError {}

impl PexMessage {
    /// Encodes the message (IPv4 and IPv6 peers into their own keys).
    pub fn encode(&self) -> Vec<u8> {
        let mut added = Vec::new();
        let mut added_f = Vec::new();
        let mut added6 = Vec::new();
        let mut added6_f = Vec::new();
        for &(a, f) in &self.added {
            match a {
                SocketAddr::V4(_) => {
                    push_compact(&mut added, a);
                    added_f.push(f);
                }
                SocketAddr::V6(_) => {
                    push_compact(&mut added6, a);
                    added6_f.push(f);
                }
            }
        }
        let mut dropped = Vec::new();
        let mut dropped6 = Vec::new();
        for &a in &self.dropped {
            match a {
                SocketAddr::V4(_) => push_compact(&mut dropped, a),
                SocketAddr::V6(_) => push_compact(&mut dropped6, a),
            }
        }
        Value::dict([
            ("added", Value::bytes(added)),
            ("added.f", Value::bytes(added_f)),
            ("added6", Value::bytes(added6)),
            ("added6.f", Value::bytes(added6_f)),
            ("dropped", Value::bytes(dropped)),
            ("dropped6", Value::bytes(dropped6)),
        ])
        .encode()
    }

    /// Decodes a message. Missing keys are empty lists; a list whose length
    /// is not a multiple of its entry size, or a payload that is not a
    /// dictionary, is an error. At most [`MAX_ACCEPTED`] added peers are
    /// kept; port-0 and unspecified addresses are skipped.
    pub fn decode(payload: &[u8]) -> Result<PexMessage, PexError> {
        let v = bencode::decode(payload).map_err(|e| PexError(e.to_string()))?;
        if v.as_dict().is_none() {
            return Err(PexError("not a dictionary".into()));
        }
        let list = |key: &str, size: usize| -> Result<Vec<SocketAddr>, PexError> {
            let Some(bytes) = v.get(key.as_bytes()).and_then(Value::as_bytes) else {
                return Ok(Vec::new());
            };
            if bytes.len() % size != 0 {
                return Err(PexError(format!(
                    "{key} is {} bytes, not a multiple of {size}",
                    bytes.len()
                )));
            }
            Ok(bytes.chunks_exact(size).filter_map(parse_compact).collect())
        };
        let flags_of = |key: &str| {
            v.get(key.as_bytes())
                .and_then(Value::as_bytes)
                .unwrap_or_default()
                .to_vec()
        };
        let mut m = PexMessage::default();
        for (key, size) in [("added", 6), ("added6", 18)] {
            let f = flags_of(&format!("{key}.f"));
            for (i, a) in list(key, size)?.into_iter().enumerate() {
                if m.added.len() < MAX_ACCEPTED {
                    m.added.push((a, f.get(i).copied().unwrap_or(0)));
                }
            }
        }
        for (key, size) in [("dropped", 6), ("dropped6", 18)] {
            let mut d = list(key, size)?;
            d.truncate(MAX_ACCEPTED);
            m.dropped.extend(d);
        }
        Ok(m)
    }
}

fn push_compact(out: &mut Vec<u8>, a: SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
    }
    out.extend_from_slice(&a.port().to_be_bytes());
}

/// One compact address (6 or 18 bytes); `None` for port 0 or an
/// unspecified address.
fn parse_compact(b: &[u8]) -> Option<SocketAddr> {
    let (ip, port): (IpAddr, &[u8]) = match b.len() {
        6 => (Ipv4Addr::new(b[0], b[1], b[2], b[3]).into(), &b[4..6]),
        18 => {
            let octets: [u8; 16] = b[..16].try_into().ok()?;
            (Ipv6Addr::from(octets).into(), &b[16..18])
        }
        _ => return None,
    };
    let port = u16::from_be_bytes([port[0], port[1]]);
    (port != 0 && !ip.is_unspecified()).then(|| SocketAddr::new(ip, port))
}

/// What we last told one peer, so the next message is a delta.
#[derive(Debug, Default)]
pub struct PexSent {
    sent: HashSet<SocketAddr>,
}

impl PexSent {
    /// The message that brings the peer from what we last sent to
    /// `connected` (leaving out the peer itself), or `None` when nothing
    /// changed. At most [`MAX_PER_MESSAGE`] of each kind; the rest go in
    /// the next message.
    pub fn delta(&mut self, connected: &[SocketAddr], to: SocketAddr) -> Option<PexMessage> {
        let now: HashSet<SocketAddr> = connected.iter().copied().filter(|&a| a != to).collect();
        let mut m = PexMessage::default();
        for &a in connected {
            if m.added.len() >= MAX_PER_MESSAGE {
                break;
            }
            if a != to && !self.sent.contains(&a) {
                m.added.push((a, flags::REACHABLE));
                self.sent.insert(a);
            }
        }
        let gone: Vec<SocketAddr> = self
            .sent
            .iter()
            .filter(|a| !now.contains(a))
            .take(MAX_PER_MESSAGE)
            .copied()
            .collect();
        for a in gone {
            self.sent.remove(&a);
            m.dropped.push(a);
        }
        (!m.added.is_empty() || !m.dropped.is_empty()).then_some(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn round_trip_with_both_families_and_flags() {
        let m = PexMessage {
            added: vec![
                (a("10.0.0.1:6881"), flags::SEED | flags::REACHABLE),
                (a("[2001:db8::1]:51413"), flags::UTP),
            ],
            dropped: vec![a("10.0.0.2:1"), a("[2001:db8::2]:2")],
        };
        assert_eq!(PexMessage::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn a_message_as_libtorrent_sends_it() {
        // added: 127.0.0.1:6881 and 127.0.0.2:80, flags for the first only.
        let payload =
            b"d5:added12:\x7f\x00\x00\x01\x1a\xe1\x7f\x00\x00\x02\x00\x507:added.f1:\x107:dropped0:e";
        let m = PexMessage::decode(payload).unwrap();
        assert_eq!(
            m.added,
            vec![
                (a("127.0.0.1:6881"), flags::REACHABLE),
                (a("127.0.0.2:80"), 0)
            ]
        );
        assert!(m.dropped.is_empty());
    }

    #[test]
    fn bad_lengths_and_types_are_errors_and_junk_entries_skipped() {
        assert!(PexMessage::decode(b"d5:added5:abcdee").is_err());
        assert!(PexMessage::decode(b"le").is_err());
        assert!(PexMessage::decode(b"d5:added").is_err());
        // Port 0 and 0.0.0.0 are skipped.
        let m = PexMessage::decode(b"d5:added12:\x01\x02\x03\x04\x00\x00\x00\x00\x00\x00\x00\x01e")
            .unwrap();
        assert!(m.added.is_empty());
        // A wrongly typed key counts as absent.
        assert_eq!(
            PexMessage::decode(b"d5:addedi5ee").unwrap(),
            PexMessage::default()
        );
    }

    #[test]
    fn a_flood_of_added_peers_is_capped() {
        let mut added = Vec::new();
        for i in 0..1000u32 {
            added.extend_from_slice(&[10, 0, (i >> 8) as u8, i as u8, 0, 1]);
        }
        let mut payload = b"d5:added".to_vec();
        payload.extend_from_slice(format!("{}:", added.len()).as_bytes());
        payload.extend_from_slice(&added);
        payload.push(b'e');
        assert_eq!(
            PexMessage::decode(&payload).unwrap().added.len(),
            MAX_ACCEPTED
        );
    }

    #[test]
    fn deltas_add_then_drop_and_never_name_the_receiver() {
        let me = a("10.0.0.9:1");
        let mut s = PexSent::default();
        let first = s
            .delta(&[a("10.0.0.1:1"), a("10.0.0.2:1"), me], me)
            .unwrap();
        assert_eq!(first.added.len(), 2);
        assert!(first.dropped.is_empty());
        assert_eq!(s.delta(&[a("10.0.0.1:1"), a("10.0.0.2:1"), me], me), None);
        let next = s.delta(&[a("10.0.0.2:1"), a("10.0.0.3:1")], me).unwrap();
        assert_eq!(next.added, vec![(a("10.0.0.3:1"), flags::REACHABLE)]);
        assert_eq!(next.dropped, vec![a("10.0.0.1:1")]);
    }

    #[test]
    fn a_big_set_goes_out_fifty_at_a_time() {
        let peers: Vec<SocketAddr> = (1..=120u16)
            .map(|p| SocketAddr::from(([10, 0, 0, 1], p)))
            .collect();
        let me = a("10.0.0.9:1");
        let mut s = PexSent::default();
        let sizes: Vec<usize> = (0..4)
            .map(|_| s.delta(&peers, me).map_or(0, |m| m.added.len()))
            .collect();
        assert_eq!(sizes, vec![50, 50, 20, 0]);
    }
}

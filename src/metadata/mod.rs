//! Metadata exchange (ut_metadata, BEP 9): the info dictionary, fetched
//! from peers 16 KiB at a time, for downloads started from a magnet link.
//!
//! Three parts:
//! - [`MetaMessage`]: the three ut_metadata messages (request, data,
//!   reject), a bencoded dictionary followed, for data, by the raw bytes.
//! - [`Assembly`]: collects the pieces of one info dictionary, remembers who
//!   sent each, and checks the whole against the info-hash.
//! - [`fetch`]: the phase that runs before an ordinary download when all we
//!   have is a magnet link. Peers come from the link (`x.pe`), `--peer`, the
//!   link's trackers and the DHT; a small fixed pool of threads connects to
//!   them (blocking sockets, one each, as in the download), and the calling
//!   thread plays coordinator: it hands out metadata pieces, so several
//!   peers fetch one dictionary at once, and checks the result. When a
//!   dictionary fails the hash check, the liar is not known if several
//!   peers contributed: the fetch starts over with one peer at a time
//!   sending every piece, so the next failure names exactly one peer, which
//!   is banned. The peers found are passed on to the download.
//!
//! Serving metadata to peers that ask is done by the download's workers
//! (src/peer/extensions.rs) with [`MetaMessage::Data`] from the torrent's info bytes.

use std::collections::{HashMap, HashSet};
use std::io::{ErrorKind, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use log::{debug, info};
use sha1::{Digest, Sha1};

use crate::bencode::{self, Value};
use crate::extension::{self, ExtHandshake, MAX_METADATA_SIZE, UT_METADATA_ID};
use crate::wire::{self, Handshake, Message, MessageReader};

/// Bytes per metadata piece (all but the last).
pub const PIECE_SIZE: usize = 16 * 1024;

/// A ut_metadata message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaMessage<'a> {
    /// Asks for piece `n` of the info dictionary.
    Request(u32),
    /// Piece `piece` of a dictionary of `total_size` bytes.
    Data {
        /// Which piece.
        piece: u32,
        /// The whole dictionary's size.
        total_size: u64,
        /// The piece's bytes.
        data: &'a [u8],
    },
    /// The sender will not send piece `n`.
    Reject(u32),
}

/// Why metadata (a message, a piece or the whole) was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaError(pub String);

impl std::fmt::Display for MetaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ut_metadata: {}", self.0)
    }
}

impl std::error::Error for MetaError {}

fn meta_err(m: impl Into<String>) -> MetaError {
    MetaError(m.into())
}

impl MetaMessage<'_> {
    /// The payload of the extended message (after its id byte).
    pub fn encode(&self) -> Vec<u8> {
        let (kind, piece) = match *self {
            MetaMessage::Request(p) => (0, p),
            MetaMessage::Data { piece, .. } => (1, piece),
            MetaMessage::Reject(p) => (2, p),
        };
        let mut d = vec![
            ("msg_type", Value::Int(kind)),
            ("piece", Value::Int(piece as i64)),
        ];
        if let MetaMessage::Data { total_size, .. } = *self {
            d.push(("total_size", Value::Int(total_size as i64)));
        }
        let mut out = Value::dict(d).encode();
        if let MetaMessage::Data { data, .. } = *self {
            out.extend_from_slice(data);
        }
        out
    }

    /// Decodes a payload; for data, the bytes after the dictionary are the
    /// piece. Unknown message types are an error.
    pub fn decode(payload: &[u8]) -> Result<MetaMessage<'_>, MetaError> {
        let (v, used) = bencode::decode_prefix(payload).map_err(|e| meta_err(e.to_string()))?;
        if v.as_dict().is_none() {
            return Err(meta_err("not a dictionary"));
        }
        let int = |key: &str| {
            v.get(key.as_bytes())
                .and_then(Value::as_int)
                .ok_or_else(|| meta_err(format!("no integer {key}")))
        };
        let piece = u32::try_from(int("piece")?).map_err(|_| meta_err("piece out of range"))?;
        let rest = payload.get(used..).unwrap_or_default();
        match int("msg_type")? {
            0 => Ok(MetaMessage::Request(piece)),
            1 => Ok(MetaMessage::Data {
                piece,
                total_size: u64::try_from(int("total_size")?)
                    .map_err(|_| meta_err("negative total_size"))?,
                data: rest,
            }),
            2 => Ok(MetaMessage::Reject(piece)),
            t => Err(meta_err(format!("unknown msg_type {t}"))),
        }
    }
}

/// The number of pieces of a dictionary of `size` bytes.
pub fn piece_count(size: u64) -> u32 {
    size.div_ceil(PIECE_SIZE as u64) as u32
}

/// The bytes of piece `piece` of `info` for a data message (`None` when
/// out of range).
pub fn piece_of(info: &[u8], piece: u32) -> Option<&[u8]> {
    let start = (piece as usize).checked_mul(PIECE_SIZE)?;
    if start >= info.len() {
        return None;
    }
    Some(&info[start..(start + PIECE_SIZE).min(info.len())])
}

/// One info dictionary being put together.
#[derive(Debug)]
pub struct Assembly {
    buf: Vec<u8>,
    /// Who sent each piece (`None`: not yet received).
    from: Vec<Option<SocketAddr>>,
    received: u32,
}

impl Assembly {
    /// A dictionary of `size` bytes; refused when zero or larger than
    /// [`MAX_METADATA_SIZE`].
    pub fn new(size: u64) -> Result<Assembly, MetaError> {
        if size == 0 || size > MAX_METADATA_SIZE {
            return Err(meta_err(format!(
                "metadata_size {size} outside 1..={MAX_METADATA_SIZE}"
            )));
        }
        Ok(Assembly {
            buf: vec![0; size as usize],
            from: vec![None; piece_count(size) as usize],
            received: 0,
        })
    }

    /// The dictionary's size.
    pub fn size(&self) -> u64 {
        self.buf.len() as u64
    }

    /// The number of pieces.
    pub fn pieces(&self) -> u32 {
        self.from.len() as u32
    }

    /// Whether piece `p` is still missing.
    pub fn missing(&self, p: u32) -> bool {
        self.from.get(p as usize).is_some_and(Option::is_none)
    }

    /// Whether every piece arrived.
    pub fn is_complete(&self) -> bool {
        self.received == self.pieces()
    }

    /// Stores piece `piece` from `peer`. Its size must be exactly what that
    /// piece's size is (16 KiB, the last one the remainder) and
    /// `total_size` what we expect. A piece already held is ignored.
    pub fn add(
        &mut self,
        piece: u32,
        total_size: u64,
        data: &[u8],
        peer: SocketAddr,
    ) -> Result<(), MetaError> {
        if total_size != self.size() {
            return Err(meta_err(format!(
                "total_size {total_size}, expected {}",
                self.size()
            )));
        }
        let Some(want) = piece_of(&self.buf, piece).map(<[u8]>::len) else {
            return Err(meta_err(format!("piece {piece} out of range")));
        };
        if data.len() != want {
            return Err(meta_err(format!(
                "piece {piece} is {} bytes, expected {want}",
                data.len()
            )));
        }
        if self.missing(piece) {
            let start = piece as usize * PIECE_SIZE;
            self.buf[start..start + want].copy_from_slice(data);
            self.from[piece as usize] = Some(peer);
            self.received += 1;
        }
        Ok(())
    }

    /// Forgets every piece received (the size stays).
    pub fn reset(&mut self) {
        self.from.iter_mut().for_each(|f| *f = None);
        self.received = 0;
    }

    /// Checks the complete dictionary against `info_hash`: its bytes when
    /// they match; otherwise the peers that sent a piece of it (and the
    /// assembly starts over).
    pub fn finish(&mut self, info_hash: &[u8; 20]) -> Result<Vec<u8>, Vec<SocketAddr>> {
        let digest: [u8; 20] = Sha1::digest(&self.buf).into();
        if &digest == info_hash {
            return Ok(std::mem::take(&mut self.buf));
        }
        let mut culprits: Vec<SocketAddr> = self.from.iter().flatten().copied().collect();
        culprits.sort();
        culprits.dedup();
        self.reset();
        Err(culprits)
    }
}

/// A .torrent file around fetched info bytes: `announce` (the first
/// tracker), `announce-list` (each tracker its own tier, in order),
/// `created by`, and `info` exactly as fetched (so the info-hash stays).
pub fn torrent_bytes(info: &[u8], trackers: &[String]) -> Vec<u8> {
    let mut out = b"d".to_vec();
    let put = |key: &str, v: &Value, out: &mut Vec<u8>| {
        bencode::encode_into(&Value::bytes(key.as_bytes()), out);
        bencode::encode_into(v, out);
    };
    // Keys in sorted order: announce, announce-list, created by, info.
    if let Some(first) = trackers.first() {
        put("announce", &Value::bytes(first.as_bytes()), &mut out);
        let tiers = trackers
            .iter()
            .map(|t| Value::List(vec![Value::bytes(t.as_bytes())]))
            .collect();
        put("announce-list", &Value::List(tiers), &mut out);
    }
    let by = concat!("tget ", env!("CARGO_PKG_VERSION"));
    put("created by", &Value::bytes(by.as_bytes()), &mut out);
    bencode::encode_into(&Value::bytes(&b"info"[..]), &mut out);
    out.extend_from_slice(info);
    out.push(b'e');
    out
}

mod fetch;
pub use fetch::{fetch, FetchConfig, FetchError, Fetched};

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    #[test]
    fn messages_round_trip() {
        for m in [
            MetaMessage::Request(3),
            MetaMessage::Reject(0),
            MetaMessage::Data {
                piece: 1,
                total_size: 20000,
                data: b"abc",
            },
        ] {
            assert_eq!(MetaMessage::decode(&m.encode()).unwrap(), m);
        }
        // BEP 9's own example of a data message header.
        let wire = b"d8:msg_typei1e5:piecei0e10:total_sizei8eexxxxxxxx";
        assert_eq!(
            MetaMessage::decode(wire).unwrap(),
            MetaMessage::Data {
                piece: 0,
                total_size: 8,
                data: b"xxxxxxxx"
            }
        );
    }

    #[test]
    fn bad_messages_are_errors() {
        for bad in [
            &b"d8:msg_typei7e5:piecei0ee"[..],
            b"d8:msg_typei0ee",
            b"d8:msg_typei0e5:piecei-1ee",
            b"d8:msg_typei1e5:piecei0ee",
            b"li1ee",
            b"d8:msg_type",
        ] {
            assert!(MetaMessage::decode(bad).is_err(), "{bad:?}");
        }
    }

    fn info_of(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn pieces_from_two_peers_assemble_and_verify() {
        let info = info_of(PIECE_SIZE * 2 + 100);
        let hash: [u8; 20] = Sha1::digest(&info).into();
        let mut a = Assembly::new(info.len() as u64).unwrap();
        assert_eq!(a.pieces(), 3);
        let total = info.len() as u64;
        a.add(2, total, piece_of(&info, 2).unwrap(), addr(2))
            .unwrap();
        a.add(0, total, piece_of(&info, 0).unwrap(), addr(1))
            .unwrap();
        assert!(!a.is_complete());
        a.add(1, total, piece_of(&info, 1).unwrap(), addr(1))
            .unwrap();
        assert!(a.is_complete());
        assert_eq!(a.finish(&hash).unwrap(), info);
    }

    #[test]
    fn wrong_sizes_are_refused() {
        let info = info_of(PIECE_SIZE + 10);
        let total = info.len() as u64;
        let mut a = Assembly::new(total).unwrap();
        assert!(a.add(0, total, &info[..100], addr(1)).is_err());
        assert!(a.add(1, total, &info[..11], addr(1)).is_err());
        assert!(a.add(2, total, &info[..10], addr(1)).is_err());
        assert!(a.add(0, total + 1, &info[..PIECE_SIZE], addr(1)).is_err());
        assert!(Assembly::new(0).is_err());
        assert!(Assembly::new(MAX_METADATA_SIZE + 1).is_err());
        assert!(Assembly::new(MAX_METADATA_SIZE).is_ok());
    }

    #[test]
    fn a_bad_dictionary_names_its_senders_and_starts_over() {
        let info = info_of(PIECE_SIZE + 10);
        let hash: [u8; 20] = Sha1::digest(&info).into();
        let total = info.len() as u64;
        let mut a = Assembly::new(total).unwrap();
        let mut lie = piece_of(&info, 1).unwrap().to_vec();
        lie[0] ^= 1;
        a.add(0, total, piece_of(&info, 0).unwrap(), addr(1))
            .unwrap();
        a.add(1, total, &lie, addr(2)).unwrap();
        assert_eq!(a.finish(&hash).unwrap_err(), vec![addr(1), addr(2)]);
        assert!(!a.is_complete() && a.missing(0) && a.missing(1));
        a.add(0, total, piece_of(&info, 0).unwrap(), addr(1))
            .unwrap();
        a.add(1, total, piece_of(&info, 1).unwrap(), addr(3))
            .unwrap();
        assert_eq!(a.finish(&hash).unwrap(), info);
    }

    #[test]
    fn a_saved_torrent_keeps_the_info_hash_and_the_trackers() {
        let data = info_of(5000);
        let hash: [u8; 20] = Sha1::digest(&data).into();
        let info = Value::dict([
            ("length", Value::Int(5000)),
            ("name", Value::bytes(&b"x"[..])),
            ("piece length", Value::Int(16384)),
            ("pieces", Value::bytes(hash.to_vec())),
        ])
        .encode();
        let meta = crate::metainfo::Metainfo::from_bytes(&torrent_bytes(&info, &[])).unwrap();
        let trackers = vec![
            "http://127.0.0.1:1/announce".to_string(),
            "udp://127.0.0.1:2".to_string(),
        ];
        let bytes = torrent_bytes(&meta.info_bytes, &trackers);
        let back = crate::metainfo::Metainfo::from_bytes(&bytes).unwrap();
        assert_eq!(back.info_hash, meta.info_hash);
        assert_eq!(back.announce.as_deref(), Some(trackers[0].as_str()));
        assert_eq!(back.tracker_tiers().concat(), trackers);
        let bare = crate::metainfo::Metainfo::from_bytes(&torrent_bytes(&meta.info_bytes, &[]));
        assert_eq!(bare.unwrap().info_hash, meta.info_hash);
    }
}

//! The uTP packet (BEP 29): a 20-byte header, an optional chain of
//! extensions, then the payload.
//!
//! ```text
//! 0       4       8               16              24              32
//! +-------+-------+---------------+---------------+---------------+
//! | type  | ver   | extension     | connection_id                 |
//! +-------+-------+---------------+---------------+---------------+
//! | timestamp_microseconds                                        |
//! | timestamp_difference_microseconds                             |
//! | wnd_size                                                      |
//! | seq_nr                        | ack_nr                        |
//! +---------------+---------------+---------------+---------------+
//! ```
//! Each extension is `next type (1 byte), length (1 byte), bytes`. Type 1 is
//! the selective ack: a bitmask (BEP 29 says a multiple of 4 bytes; we send
//! that and read any non-zero length) where bit `i` of byte
//! `j` (least significant first) stands for packet `ack_nr + 2 + 8j + i`.
//! Other extension types are skipped by their length.
//!
//! `decode` reads untrusted datagrams: it checks every length and never
//! panics.

/// The header's size in bytes.
pub const HEADER_LEN: usize = 20;
/// The only version there is.
pub const VERSION: u8 = 1;
/// The extension number of the selective ack.
pub const EXT_SACK: u8 = 1;

/// The five packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// Carries payload; takes a sequence number.
    Data = 0,
    /// The last packet of a direction; takes a sequence number.
    Fin = 1,
    /// An acknowledgement with no payload.
    State = 2,
    /// Ends the connection at once.
    Reset = 3,
    /// Opens a connection; takes a sequence number.
    Syn = 4,
}

impl Type {
    fn from_nibble(n: u8) -> Option<Type> {
        Some(match n {
            0 => Type::Data,
            1 => Type::Fin,
            2 => Type::State,
            3 => Type::Reset,
            4 => Type::Syn,
            _ => return None,
        })
    }
}

/// The fixed header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub ty: Type,
    pub conn_id: u16,
    pub timestamp: u32,
    pub timestamp_diff: u32,
    pub wnd_size: u32,
    pub seq_nr: u16,
    pub ack_nr: u16,
}

/// A decoded packet borrowing from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    pub header: Header,
    /// The selective-ack bitmask, if the packet carried one.
    pub sack: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

/// Why a datagram is not a uTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than a header, or an extension runs past the end.
    Truncated,
    /// The version nibble is not 1.
    Version(u8),
    /// The type nibble is not 0..=4.
    Type(u8),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Truncated => write!(f, "truncated uTP packet"),
            DecodeError::Version(v) => write!(f, "uTP version {v} (only 1 exists)"),
            DecodeError::Type(t) => write!(f, "uTP packet type {t} (0 to 4 exist)"),
        }
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Whether a datagram on a UDP socket shared with the DHT is uTP: its first
/// byte is a version 1 and a type 0 to 4 (0x01..=0x41), where a KRPC
/// message starts with `d` (0x64).
pub fn looks_like_utp(datagram: &[u8]) -> bool {
    datagram.len() >= HEADER_LEN && datagram[0] & 0x0f == VERSION && datagram[0] >> 4 <= 4
}

/// Reads one datagram.
pub fn decode(buf: &[u8]) -> Result<Packet<'_>, DecodeError> {
    if buf.len() < HEADER_LEN {
        return Err(DecodeError::Truncated);
    }
    let version = buf[0] & 0x0f;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let ty = Type::from_nibble(buf[0] >> 4).ok_or(DecodeError::Type(buf[0] >> 4))?;
    let header = Header {
        ty,
        conn_id: be16(buf, 2),
        timestamp: be32(buf, 4),
        timestamp_diff: be32(buf, 8),
        wnd_size: be32(buf, 12),
        seq_nr: be16(buf, 16),
        ack_nr: be16(buf, 18),
    };
    let mut next = buf[1];
    let mut at = HEADER_LEN;
    let mut sack = None;
    // Each extension takes at least 2 bytes, so this ends within the datagram.
    while next != 0 {
        if buf.len() < at + 2 {
            return Err(DecodeError::Truncated);
        }
        let (kind, len) = (next, buf[at + 1] as usize);
        next = buf[at];
        let start = at + 2;
        let end = start + len;
        if buf.len() < end {
            return Err(DecodeError::Truncated);
        }
        // BEP 29 asks for a multiple of 4 bytes, but libtorrent sends as
        // many bytes as its receive buffer spans (one or more). Refusing
        // those packets dropped every ack and request it sent while it had
        // a gap, and the connection froze.
        if kind == EXT_SACK && len > 0 {
            sack = Some(&buf[start..end]);
        }
        at = end;
    }
    Ok(Packet {
        header,
        sack,
        payload: &buf[at..],
    })
}

/// Appends one packet to `out`. A selective ack, if given, must be 1 to
/// 255 bytes (ours are multiples of 4, as BEP 29 asks).
pub fn encode(h: &Header, sack: Option<&[u8]>, payload: &[u8], out: &mut Vec<u8>) {
    out.push(((h.ty as u8) << 4) | VERSION);
    out.push(if sack.is_some() { EXT_SACK } else { 0 });
    out.extend_from_slice(&h.conn_id.to_be_bytes());
    out.extend_from_slice(&h.timestamp.to_be_bytes());
    out.extend_from_slice(&h.timestamp_diff.to_be_bytes());
    out.extend_from_slice(&h.wnd_size.to_be_bytes());
    out.extend_from_slice(&h.seq_nr.to_be_bytes());
    out.extend_from_slice(&h.ack_nr.to_be_bytes());
    if let Some(mask) = sack {
        debug_assert!(!mask.is_empty() && mask.len() <= 255);
        out.push(0);
        out.push(mask.len() as u8);
        out.extend_from_slice(mask);
    }
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn header(ty: Type) -> Header {
        Header {
            ty,
            conn_id: 0xbeef,
            timestamp: 0x0102_0304,
            timestamp_diff: 0xa0b0_c0d0,
            wnd_size: 1 << 20,
            seq_nr: 0xfffe,
            ack_nr: 7,
        }
    }

    #[test]
    fn every_type_round_trips_with_and_without_a_selective_ack() {
        for ty in [Type::Data, Type::Fin, Type::State, Type::Reset, Type::Syn] {
            for sack in [None, Some(&[0x81u8, 0, 0, 0x40][..])] {
                let mut out = Vec::new();
                encode(&header(ty), sack, b"payload", &mut out);
                let p = decode(&out).unwrap();
                assert_eq!(p.header, header(ty));
                assert_eq!(p.sack, sack);
                assert_eq!(p.payload, b"payload");
            }
        }
    }

    #[test]
    fn the_header_is_laid_out_as_bep_29_draws_it() {
        let mut out = Vec::new();
        encode(&header(Type::Syn), None, &[], &mut out);
        assert_eq!(
            out,
            [
                0x41, 0, 0xbe, 0xef, 1, 2, 3, 4, 0xa0, 0xb0, 0xc0, 0xd0, 0, 0x10, 0, 0, 0xff, 0xfe,
                0, 7
            ]
        );
    }

    #[test]
    fn unknown_extensions_are_skipped_and_bad_ones_refused() {
        let mut out = Vec::new();
        encode(&header(Type::State), None, &[], &mut out);
        // An extension of type 3 (libtorrent's close reason), 4 bytes, then
        // a selective ack.
        out[1] = 3;
        out.extend_from_slice(&[EXT_SACK, 4, 9, 9, 9, 9, 0, 4, 1, 2, 3, 4]);
        out.extend_from_slice(b"x");
        let p = decode(&out).unwrap();
        assert_eq!(p.sack, Some(&[1u8, 2, 3, 4][..]));
        assert_eq!(p.payload, b"x");
        // Truncated extension chain.
        assert_eq!(decode(&out[..25]), Err(DecodeError::Truncated));
        assert_eq!(decode(&out[..19]), Err(DecodeError::Truncated));
        let mut bad = out.clone();
        bad[0] = 0x42;
        assert_eq!(decode(&bad), Err(DecodeError::Version(2)));
        bad[0] = 0x51;
        assert_eq!(decode(&bad), Err(DecodeError::Type(5)));
        // libtorrent's selective acks come in any length (its receive
        // span in bytes), not only BEP 29's multiples of 4.
        let mut odd = Vec::new();
        encode(&header(Type::State), None, &[], &mut odd);
        odd[1] = EXT_SACK;
        odd.extend_from_slice(&[0, 3, 1, 2, 3]);
        assert_eq!(decode(&odd).unwrap().sack, Some(&[1u8, 2, 3][..]));
        // An empty one says nothing.
        let mut empty = Vec::new();
        encode(&header(Type::State), None, &[], &mut empty);
        empty[1] = EXT_SACK;
        empty.extend_from_slice(&[0, 0]);
        assert_eq!(decode(&empty).unwrap().sack, None);
    }

    #[test]
    fn utp_is_told_from_krpc_by_its_first_byte() {
        let mut syn = Vec::new();
        encode(&header(Type::Syn), None, &[], &mut syn);
        assert!(looks_like_utp(&syn));
        assert!(!looks_like_utp(
            b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe"
        ));
        assert!(!looks_like_utp(&syn[..HEADER_LEN - 1]));
    }

    #[test]
    fn decode_never_panics_on_random_bytes() {
        let mut rng = Rng::new(29);
        let mut buf = [0u8; 200];
        let mut ok = 0;
        for round in 0..200_000 {
            let len = rng.below(buf.len() as u64 + 1) as usize;
            rng.fill(&mut buf[..len]);
            if round % 2 == 0 && len >= HEADER_LEN {
                // Make half of them plausible so the extension walk runs.
                buf[0] = (buf[0] % 5) << 4 | VERSION;
                buf[1] %= 3;
            }
            if let Ok(p) = decode(&buf[..len]) {
                ok += 1;
                assert!(p.payload.len() <= len - HEADER_LEN);
                // What decodes re-encodes to a packet that decodes the same.
                let mut again = Vec::new();
                encode(&p.header, p.sack, p.payload, &mut again);
                assert_eq!(decode(&again).unwrap(), p);
            }
        }
        assert!(ok > 1000, "only {ok} random packets decoded");
    }
}

//! The peer wire protocol (BEP 3): the handshake and the length-prefixed
//! messages that follow it.
//!
//! Framing is done by [`MessageReader`], which buffers what the socket gives
//! and hands out whole messages that borrow from its buffer. It tolerates a
//! read timeout in the middle of a message (the bytes stay buffered), which a
//! `read_exact` on the socket would not: that is what lets a worker wake up
//! from a blocking read every so often to look at its control channel.

use std::fmt;
use std::io::{self, Read};

/// The protocol string of the BitTorrent handshake.
pub const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";

/// Length of a handshake on the wire.
pub const HANDSHAKE_LEN: usize = 68;

/// Message ids (BEP 3).
pub mod id {
    pub const CHOKE: u8 = 0;
    pub const UNCHOKE: u8 = 1;
    pub const INTERESTED: u8 = 2;
    pub const NOT_INTERESTED: u8 = 3;
    pub const HAVE: u8 = 4;
    pub const BITFIELD: u8 = 5;
    pub const REQUEST: u8 = 6;
    pub const PIECE: u8 = 7;
    pub const CANCEL: u8 = 8;
    pub const PORT: u8 = 9;
    /// Fast extension (BEP 6).
    pub const SUGGEST_PIECE: u8 = 0x0d;
    pub const HAVE_ALL: u8 = 0x0e;
    pub const HAVE_NONE: u8 = 0x0f;
    pub const REJECT_REQUEST: u8 = 0x10;
    pub const ALLOWED_FAST: u8 = 0x11;
    /// Extension protocol (BEP 10).
    pub const EXTENDED: u8 = 20;
}

/// The largest request length we serve (we send 16 KiB requests ourselves,
/// but accept peers asking for up to 128 KiB, as the issue and old clients do).
pub const MAX_REQUEST_LEN: u32 = 128 * 1024;

/// Largest extension-protocol message we will buffer (BEP 10 messages are
/// small; ut_metadata pieces are 16 KiB plus a dictionary).
pub const MAX_EXTENDED_LEN: u32 = 64 * 1024;

/// The extension protocol (BEP 10) is advertised by `reserved[5] |= 0x10`.
pub const EXTENSION_PROTOCOL_BYTE: usize = 5;
/// Reserved byte and bit of the DHT (BEP 5): the sender runs a DHT node and
/// will send a `port` message.
pub const DHT_BYTE: usize = 7;
/// See [`DHT_BYTE`].
pub const DHT_BIT: u8 = 0x01;
/// See [`EXTENSION_PROTOCOL_BYTE`].
pub const EXTENSION_PROTOCOL_BIT: u8 = 0x10;

/// The largest legal message for a torrent of `num_pieces` pieces: a full
/// bitfield, a piece message carrying one block of [`MAX_REQUEST_LEN`], or an
/// extension message, whichever is largest.
pub fn max_message_len(num_pieces: u32) -> u32 {
    let bitfield = 1 + num_pieces.div_ceil(8);
    bitfield.max(9 + MAX_REQUEST_LEN).max(MAX_EXTENDED_LEN)
}

/// Why [`read_handshake`] got no handshake.
#[derive(Debug)]
pub enum HandshakeReadError {
    /// The time ran out with `got` of the 68 bytes read.
    TimedOut {
        limit: std::time::Duration,
        got: usize,
    },
    /// The peer closed the connection first.
    Closed,
    /// The socket failed.
    Io(io::Error),
}

impl std::fmt::Display for HandshakeReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeReadError::TimedOut { limit, got } => write!(
                f,
                "no complete handshake within {} s ({got} of {HANDSHAKE_LEN} bytes)",
                limit.as_secs_f32()
            ),
            HandshakeReadError::Closed => {
                write!(f, "peer closed the connection during the handshake")
            }
            HandshakeReadError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for HandshakeReadError {}

/// Reads the peer's 68-byte handshake, which must arrive whole within
/// `limit` however it trickles in (a per-read timeout alone would let one
/// byte every few seconds hold a thread indefinitely). Leaves the socket's
/// read timeout set to whatever was left.
pub fn read_handshake(
    stream: &mut (impl crate::transport::Transport + ?Sized),
    limit: std::time::Duration,
) -> Result<[u8; HANDSHAKE_LEN], HandshakeReadError> {
    let deadline = std::time::Instant::now() + limit;
    let mut buf = [0u8; HANDSHAKE_LEN];
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(HandshakeReadError::TimedOut { limit, got });
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(HandshakeReadError::Io)?;
        match stream.read(&mut buf[got..]) {
            Ok(0) => return Err(HandshakeReadError::Closed),
            Ok(n) => got += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(HandshakeReadError::Io(e)),
        }
    }
    Ok(buf)
}

/// The 68-byte handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    /// Reserved bits: extension flags (BEP 4).
    pub reserved: [u8; 8],
    /// The torrent's info-hash.
    pub info_hash: [u8; 20],
    /// The sender's peer id.
    pub peer_id: [u8; 20],
}

impl Handshake {
    /// A handshake with no extension bits set.
    pub fn new(info_hash: [u8; 20], peer_id: [u8; 20]) -> Handshake {
        Handshake {
            reserved: [0; 8],
            info_hash,
            peer_id,
        }
    }

    /// The handshake as sent on the wire.
    pub fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        let mut out = [0u8; HANDSHAKE_LEN];
        out[0] = 19;
        out[1..20].copy_from_slice(PROTOCOL);
        out[20..28].copy_from_slice(&self.reserved);
        out[28..48].copy_from_slice(&self.info_hash);
        out[48..68].copy_from_slice(&self.peer_id);
        out
    }

    /// Parses a handshake, checking the protocol string.
    pub fn decode(buf: &[u8; HANDSHAKE_LEN]) -> Result<Handshake, WireError> {
        if buf[0] != 19 || &buf[1..20] != PROTOCOL {
            return Err(WireError::BadHandshake("wrong protocol string"));
        }
        let mut h = Handshake::new([0; 20], [0; 20]);
        h.reserved.copy_from_slice(&buf[20..28]);
        h.info_hash.copy_from_slice(&buf[28..48]);
        h.peer_id.copy_from_slice(&buf[48..68]);
        Ok(h)
    }
}

/// One peer message. Payloads borrow from the reader's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// A zero-length message, sent to keep an idle connection open.
    KeepAlive,
    /// The sender will not answer our requests.
    Choke,
    /// The sender will answer our requests.
    Unchoke,
    /// The sender wants pieces we have.
    Interested,
    /// The sender wants nothing from us.
    NotInterested,
    /// The sender now has piece `0`.
    Have(u32),
    /// The sender's pieces, one bit each, high bit first.
    Bitfield(&'a [u8]),
    /// The sender asks for `length` bytes at `begin` of piece `index`.
    Request { index: u32, begin: u32, length: u32 },
    /// A block: `data` at `begin` of piece `index`.
    Piece {
        index: u32,
        begin: u32,
        data: &'a [u8],
    },
    /// The sender withdraws a request.
    Cancel { index: u32, begin: u32, length: u32 },
    /// The sender's DHT port (BEP 5); accepted and ignored for now.
    Port(u16),
    /// Fast extension: the sender suggests we fetch piece `0`.
    SuggestPiece(u32),
    /// Fast extension: the sender has every piece (instead of a bitfield).
    HaveAll,
    /// Fast extension: the sender has no piece (instead of a bitfield).
    HaveNone,
    /// Fast extension: the sender will not answer this request.
    RejectRequest { index: u32, begin: u32, length: u32 },
    /// Fast extension: we may request piece `0` even while choked.
    AllowedFast(u32),
    /// An extension-protocol message (BEP 10): extended id and payload.
    Extended(u8, &'a [u8]),
    /// A message id we do not know; BEP 3 says to ignore it.
    Unknown(u8),
}

impl Message<'_> {
    /// Appends the message, length prefix included, to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        fn head(out: &mut Vec<u8>, len: u32, id: u8) {
            out.extend_from_slice(&len.to_be_bytes());
            out.push(id);
        }
        match *self {
            Message::KeepAlive => out.extend_from_slice(&0u32.to_be_bytes()),
            Message::Choke => head(out, 1, id::CHOKE),
            Message::Unchoke => head(out, 1, id::UNCHOKE),
            Message::Interested => head(out, 1, id::INTERESTED),
            Message::NotInterested => head(out, 1, id::NOT_INTERESTED),
            Message::Have(i) => {
                head(out, 5, id::HAVE);
                out.extend_from_slice(&i.to_be_bytes());
            }
            Message::Bitfield(bits) => {
                head(out, 1 + bits.len() as u32, id::BITFIELD);
                out.extend_from_slice(bits);
            }
            Message::Request {
                index,
                begin,
                length,
            }
            | Message::Cancel {
                index,
                begin,
                length,
            }
            | Message::RejectRequest {
                index,
                begin,
                length,
            } => {
                let mid = match self {
                    Message::Request { .. } => id::REQUEST,
                    Message::Cancel { .. } => id::CANCEL,
                    _ => id::REJECT_REQUEST,
                };
                head(out, 13, mid);
                out.extend_from_slice(&index.to_be_bytes());
                out.extend_from_slice(&begin.to_be_bytes());
                out.extend_from_slice(&length.to_be_bytes());
            }
            Message::Piece { index, begin, data } => {
                piece_header_into(out, index, begin, data.len() as u32);
                out.extend_from_slice(data);
            }
            Message::Port(p) => {
                head(out, 3, id::PORT);
                out.extend_from_slice(&p.to_be_bytes());
            }
            Message::SuggestPiece(i) | Message::AllowedFast(i) => {
                let mid = if matches!(self, Message::SuggestPiece(_)) {
                    id::SUGGEST_PIECE
                } else {
                    id::ALLOWED_FAST
                };
                head(out, 5, mid);
                out.extend_from_slice(&i.to_be_bytes());
            }
            Message::HaveAll => head(out, 1, id::HAVE_ALL),
            Message::HaveNone => head(out, 1, id::HAVE_NONE),
            Message::Extended(ext, payload) => {
                head(out, 2 + payload.len() as u32, id::EXTENDED);
                out.push(ext);
                out.extend_from_slice(payload);
            }
            Message::Unknown(mid) => head(out, 1, mid),
        }
    }
}

/// Length of a piece message's header: length prefix, id, index, begin.
pub const PIECE_HEADER_LEN: usize = 13;

/// Appends the 13-byte header of a piece message carrying `len` bytes, so an
/// uploader can write the block's bytes straight after it.
pub fn piece_header_into(out: &mut Vec<u8>, index: u32, begin: u32, len: u32) {
    out.extend_from_slice(&piece_header(index, begin, len));
}

/// The 13-byte header of a piece message carrying `len` bytes.
pub fn piece_header(index: u32, begin: u32, len: u32) -> [u8; PIECE_HEADER_LEN] {
    let mut h = [0u8; PIECE_HEADER_LEN];
    h[..4].copy_from_slice(&len.saturating_add(9).to_be_bytes());
    h[4] = id::PIECE;
    h[5..9].copy_from_slice(&index.to_be_bytes());
    h[9..].copy_from_slice(&begin.to_be_bytes());
    h
}

/// Why a peer's bytes were not acceptable. Each ends that peer's connection.
#[derive(Debug)]
pub enum WireError {
    /// The handshake was malformed.
    BadHandshake(&'static str),
    /// A length prefix larger than the largest legal message.
    TooLong { len: u32, max: u32 },
    /// A message whose length does not fit its id.
    BadLength { id: u8, len: u32 },
    /// The socket failed or closed.
    Io(io::Error),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::BadHandshake(why) => write!(f, "bad handshake: {why}"),
            WireError::TooLong { len, max } => {
                write!(f, "message length {len} exceeds the largest legal {max}")
            }
            WireError::BadLength { id, len } => {
                write!(f, "message id {id} with impossible length {len}")
            }
            WireError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for WireError {}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        WireError::Io(e)
    }
}

/// Buffers bytes from a socket and cuts them into messages.
pub struct MessageReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_len: u32,
}

/// How much the reader asks the socket for at least, per read.
const MIN_READ: usize = 16 * 1024;
/// A piece message of one whole block: its length prefix, id, index and
/// begin, and 16 KiB of data.
const BLOCK_MESSAGE: usize = 4 + 9 + 16 * 1024;
/// The reader's buffer to begin with (it grows only for a message longer
/// than fits): every byte of it is touched once reads have gone round it,
/// so it is resident for each connected worker. 128 KiB made 6 MiB of
/// the peak with 48 peers (issue 15). The part of a block message left
/// over after a read, and a read's worth after it, fit.
const READ_BUFFER: usize = MIN_READ + BLOCK_MESSAGE;

impl MessageReader {
    /// A reader refusing messages longer than `max_len` bytes.
    pub fn new(max_len: u32) -> MessageReader {
        MessageReader {
            buf: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
            max_len,
        }
    }

    /// Bytes the reader's buffer holds, used or not (what it keeps
    /// resident).
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Bytes buffered but not yet handed out.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Reads once from `r` into the buffer. Returns the number of bytes read;
    /// 0 means the peer closed the connection. Timeouts pass through as errors
    /// and lose nothing.
    pub fn fill<R: Read>(&mut self, r: &mut R) -> io::Result<usize> {
        self.fill_at_most(r, usize::MAX)
    }

    /// Like [`MessageReader::fill`], but asks the socket for at most `max`
    /// bytes (at least 1), so a rate limit can meter reads.
    pub fn fill_at_most<R: Read>(&mut self, r: &mut R, max: usize) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        // The whole pending message must fit in the buffer (its length was
        // or will be checked against max_len by next_message; cap it anyway).
        let need = self
            .pending_len()
            .map_or(0, |l| l.min(self.max_len as usize) + 4);
        if self.start > 0
            && (self.buf.len() - self.end < MIN_READ || self.start + need > self.buf.len())
        {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let want = need.max(self.end + MIN_READ);
        if want > self.buf.len() {
            self.buf.resize(want, 0);
        }
        let stop = self.end + (self.buf.len() - self.end).min(max.max(1));
        let n = r.read(&mut self.buf[self.end..stop])?;
        self.end += n;
        Ok(n)
    }

    /// The length of the message at the head of the buffer, if its prefix is in.
    fn pending_len(&self) -> Option<usize> {
        let avail = &self.buf[self.start..self.end];
        if avail.len() < 4 {
            return None;
        }
        Some(u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize)
    }

    /// The next whole message, if one is buffered.
    pub fn next_message(&mut self) -> Result<Option<Message<'_>>, WireError> {
        let Some(len) = self.pending_len() else {
            return Ok(None);
        };
        if len > self.max_len as usize {
            return Err(WireError::TooLong {
                len: len as u32,
                max: self.max_len,
            });
        }
        if self.end - self.start < 4 + len {
            return Ok(None);
        }
        let body_start = self.start + 4;
        self.start = body_start + len;
        parse_body(&self.buf[body_start..body_start + len])
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Parses one message body (the bytes after the length prefix).
pub fn parse_body(body: &[u8]) -> Result<Option<Message<'_>>, WireError> {
    let Some((&mid, p)) = body.split_first() else {
        return Ok(Some(Message::KeepAlive));
    };
    let bad = || WireError::BadLength {
        id: mid,
        len: body.len() as u32,
    };
    let fixed = |n: usize| if p.len() == n { Ok(()) } else { Err(bad()) };
    let msg = match mid {
        id::CHOKE => fixed(0).map(|_| Message::Choke)?,
        id::UNCHOKE => fixed(0).map(|_| Message::Unchoke)?,
        id::INTERESTED => fixed(0).map(|_| Message::Interested)?,
        id::NOT_INTERESTED => fixed(0).map(|_| Message::NotInterested)?,
        id::HAVE => fixed(4).map(|_| Message::Have(be32(p)))?,
        id::BITFIELD => Message::Bitfield(p),
        id::REQUEST | id::CANCEL | id::REJECT_REQUEST => {
            fixed(12)?;
            let (index, begin, length) = (be32(p), be32(&p[4..]), be32(&p[8..]));
            match mid {
                id::REQUEST => Message::Request {
                    index,
                    begin,
                    length,
                },
                id::CANCEL => Message::Cancel {
                    index,
                    begin,
                    length,
                },
                _ => Message::RejectRequest {
                    index,
                    begin,
                    length,
                },
            }
        }
        id::PIECE => {
            if p.len() < 8 {
                return Err(bad());
            }
            Message::Piece {
                index: be32(p),
                begin: be32(&p[4..]),
                data: &p[8..],
            }
        }
        id::PORT => fixed(2).map(|_| Message::Port(u16::from_be_bytes([p[0], p[1]])))?,
        id::SUGGEST_PIECE => fixed(4).map(|_| Message::SuggestPiece(be32(p)))?,
        id::HAVE_ALL => fixed(0).map(|_| Message::HaveAll)?,
        id::HAVE_NONE => fixed(0).map(|_| Message::HaveNone)?,
        id::ALLOWED_FAST => fixed(4).map(|_| Message::AllowedFast(be32(p)))?,
        id::EXTENDED => match p.split_first() {
            Some((&ext, payload)) => Message::Extended(ext, payload),
            None => return Err(bad()),
        },
        other => Message::Unknown(other),
    };
    Ok(Some(msg))
}

/// A set of piece indexes, stored as the wire's bitfield (high bit first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitfield {
    bytes: Vec<u8>,
    len: u32,
    count: u32,
}

impl Bitfield {
    /// An empty set over `len` pieces.
    pub fn new(len: u32) -> Bitfield {
        Bitfield {
            bytes: vec![0; len.div_ceil(8) as usize],
            len,
            count: 0,
        }
    }

    /// Parses a peer's bitfield: the length must be exactly right and the
    /// spare bits at the end clear.
    pub fn from_wire(bytes: &[u8], len: u32) -> Result<Bitfield, &'static str> {
        if bytes.len() != len.div_ceil(8) as usize {
            return Err("bitfield of the wrong length");
        }
        let spare = (bytes.len() as u32 * 8 - len) as u8;
        if spare > 0 {
            let last = bytes[bytes.len() - 1];
            if last & ((1u8 << spare) - 1) != 0 {
                return Err("bitfield with spare bits set");
            }
        }
        let count = bytes.iter().map(|b| b.count_ones()).sum();
        Ok(Bitfield {
            bytes: bytes.to_vec(),
            len,
            count,
        })
    }

    /// Number of pieces the set is over.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the set is over zero pieces.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of pieces in the set.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether every piece is in the set.
    pub fn is_full(&self) -> bool {
        self.count == self.len
    }

    /// Whether piece `i` is in the set (false when out of range).
    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.bytes[(i / 8) as usize] & (0x80 >> (i % 8)) != 0
    }

    /// Adds piece `i`; returns whether it was new. Out of range is ignored.
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.bytes[(i / 8) as usize] |= 0x80 >> (i % 8);
        self.count += 1;
        true
    }

    /// Adds every piece.
    pub fn fill(&mut self) {
        for i in 0..self.len {
            self.set(i);
        }
    }

    /// The wire form.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Iterates over the pieces in the set.
    pub fn ones(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(move |&i| self.get(i))
    }
}

/// Our peer id: `-TG0001-` and twelve random alphanumerics.
pub fn new_peer_id() -> [u8; 20] {
    let mut id = *b"-TG0001-000000000000";
    let mut rng = crate::rng::Rng::from_entropy();
    const CHARS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    for b in &mut id[8..] {
        *b = CHARS[rng.below(CHARS.len() as u64) as usize];
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(m: Message<'_>) {
        let mut out = Vec::new();
        m.encode_into(&mut out);
        let mut r = MessageReader::new(max_message_len(100));
        let mut src = &out[..];
        r.fill(&mut src).unwrap();
        assert_eq!(r.next_message().unwrap(), Some(m));
        assert_eq!(r.next_message().unwrap(), None);
    }

    #[test]
    fn the_read_buffer_stays_at_32_kib_for_a_stream_of_blocks() {
        // A peer sending 16 KiB blocks, read as a socket hands them over:
        // sometimes a little, sometimes a lot. The buffer each connected
        // worker keeps resident stays at 32 KiB and a block's header
        // (issue 15's bound at 24 and 48 peers).
        let mut out = Vec::new();
        let block = vec![5u8; 16 * 1024];
        for i in 0..64u32 {
            Message::Piece {
                index: i / 16,
                begin: (i % 16) * 16384,
                data: &block,
            }
            .encode_into(&mut out);
        }
        let mut r = MessageReader::new(max_message_len(100));
        let mut src = &out[..];
        let mut blocks = 0;
        for step in [100usize, 70_000, 5_000, 40_000, 1].iter().cycle() {
            if src.is_empty() {
                break;
            }
            let mut part = &src[..(*step).min(src.len())];
            let n = r.fill(&mut part).unwrap();
            src = &src[n..];
            while let Some(m) = r.next_message().unwrap() {
                assert!(matches!(m, Message::Piece { .. }));
                blocks += 1;
            }
            assert!(r.capacity() <= 32 * 1024 + 13, "{} bytes", r.capacity());
        }
        assert_eq!(blocks, 64);
    }

    #[test]
    fn every_message_round_trips() {
        roundtrip(Message::KeepAlive);
        roundtrip(Message::Choke);
        roundtrip(Message::Unchoke);
        roundtrip(Message::Interested);
        roundtrip(Message::NotInterested);
        roundtrip(Message::Have(7));
        roundtrip(Message::Bitfield(&[0xff, 0x80]));
        roundtrip(Message::Request {
            index: 1,
            begin: 16384,
            length: 16384,
        });
        roundtrip(Message::Piece {
            index: 3,
            begin: 0,
            data: b"hello",
        });
        roundtrip(Message::Cancel {
            index: 1,
            begin: 2,
            length: 3,
        });
        roundtrip(Message::Port(6881));
        roundtrip(Message::Extended(0, b"d1:md11:ut_metadatai1eee"));
        roundtrip(Message::SuggestPiece(9));
        roundtrip(Message::HaveAll);
        roundtrip(Message::HaveNone);
        roundtrip(Message::RejectRequest {
            index: 4,
            begin: 32768,
            length: 16384,
        });
        roundtrip(Message::AllowedFast(77));
    }

    #[test]
    fn fast_extension_messages_have_the_bep_6_bytes() {
        let enc = |m: Message<'_>| {
            let mut out = Vec::new();
            m.encode_into(&mut out);
            out
        };
        assert_eq!(enc(Message::HaveAll), [0, 0, 0, 1, 0x0e]);
        assert_eq!(enc(Message::HaveNone), [0, 0, 0, 1, 0x0f]);
        assert_eq!(
            enc(Message::SuggestPiece(258)),
            [0, 0, 0, 5, 0x0d, 0, 0, 1, 2]
        );
        assert_eq!(enc(Message::AllowedFast(1)), [0, 0, 0, 5, 0x11, 0, 0, 0, 1]);
        assert_eq!(
            enc(Message::RejectRequest {
                index: 1,
                begin: 2,
                length: 3
            }),
            [0, 0, 0, 13, 0x10, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]
        );
        assert!(parse_body(&[id::HAVE_ALL, 0]).is_err());
        assert!(parse_body(&[id::ALLOWED_FAST, 0, 0]).is_err());
        assert!(parse_body(&[id::REJECT_REQUEST, 0, 0, 0, 1]).is_err());
    }

    #[test]
    fn fill_at_most_reads_no_more_than_asked() {
        let mut out = Vec::new();
        Message::Piece {
            index: 0,
            begin: 0,
            data: &[5u8; 1000],
        }
        .encode_into(&mut out);
        let mut src = &out[..];
        let mut r = MessageReader::new(max_message_len(10));
        assert_eq!(r.fill_at_most(&mut src, 100).unwrap(), 100);
        assert_eq!(r.next_message().unwrap(), None);
        assert_eq!(r.fill_at_most(&mut src, 0).unwrap(), 1, "at least one byte");
        while r.fill_at_most(&mut src, 300).unwrap() > 0 {}
        assert!(matches!(
            r.next_message().unwrap(),
            Some(Message::Piece { .. })
        ));
    }

    #[test]
    fn handshake_round_trips_and_checks_protocol() {
        let h = Handshake::new([1; 20], [2; 20]);
        let mut wire = h.encode();
        assert_eq!(Handshake::decode(&wire).unwrap(), h);
        wire[5] = b'x';
        assert!(Handshake::decode(&wire).is_err());
        wire = h.encode();
        wire[0] = 18;
        assert!(Handshake::decode(&wire).is_err());
    }

    /// A reader that hands out one byte at a time, then times out once.
    struct Trickle<'a> {
        data: &'a [u8],
        timeout_next: bool,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.timeout_next = !self.timeout_next;
            if self.timeout_next {
                return Err(io::Error::new(io::ErrorKind::WouldBlock, "timeout"));
            }
            if self.data.is_empty() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.data[0];
            self.data = &self.data[1..];
            Ok(1)
        }
    }

    #[test]
    fn framing_survives_timeouts_mid_message() {
        let mut out = Vec::new();
        Message::Have(42).encode_into(&mut out);
        Message::Piece {
            index: 1,
            begin: 0,
            data: &[9u8; 300],
        }
        .encode_into(&mut out);
        let mut src = Trickle {
            data: &out,
            timeout_next: false,
        };
        let mut r = MessageReader::new(max_message_len(10));
        let mut got = Vec::new();
        loop {
            match r.fill(&mut src) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("{e}"),
            }
            while let Some(m) = r.next_message().unwrap() {
                got.push(format!("{m:?}").len());
            }
        }
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn large_messages_are_reassembled_across_reads() {
        let data = vec![7u8; 16384];
        let mut out = Vec::new();
        for i in 0..20 {
            Message::Piece {
                index: i,
                begin: 0,
                data: &data,
            }
            .encode_into(&mut out);
        }
        let mut src = &out[..];
        let mut r = MessageReader::new(max_message_len(10));
        let mut n = 0;
        while r.fill(&mut src).unwrap() > 0 {
            while let Some(m) = r.next_message().unwrap() {
                match m {
                    Message::Piece { index, data: d, .. } => {
                        assert_eq!(index, n);
                        assert_eq!(d, &data[..]);
                        n += 1;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        assert_eq!(n, 20);
    }

    #[test]
    fn oversized_length_prefix_is_refused_without_allocating() {
        let mut r = MessageReader::new(max_message_len(10));
        let mut src: &[u8] = &[0xff, 0xff, 0xff, 0xff, 7];
        r.fill(&mut src).unwrap();
        assert!(matches!(r.next_message(), Err(WireError::TooLong { .. })));
    }

    #[test]
    fn wrong_lengths_for_fixed_messages_are_refused() {
        assert!(matches!(
            parse_body(&[id::HAVE, 0, 0, 1]),
            Err(WireError::BadLength { id: 4, .. })
        ));
        assert!(parse_body(&[id::CHOKE, 0]).is_err());
        assert!(parse_body(&[id::REQUEST, 0, 0, 0, 0]).is_err());
        assert!(parse_body(&[id::PIECE, 0, 0, 0]).is_err());
        assert!(parse_body(&[20]).is_err());
        assert_eq!(parse_body(&[99, 1, 2]).unwrap(), Some(Message::Unknown(99)));
    }

    #[test]
    fn bitfield_checks_length_and_spare_bits() {
        let b = Bitfield::from_wire(&[0b1010_0000], 3).unwrap();
        assert!(b.get(0) && !b.get(1) && b.get(2) && !b.get(3));
        assert_eq!(b.count(), 2);
        assert!(Bitfield::from_wire(&[0b1010_0001], 3).is_err());
        assert!(Bitfield::from_wire(&[0, 0], 3).is_err());
        assert!(Bitfield::from_wire(&[], 3).is_err());
        let full = Bitfield::from_wire(&[0xff], 8).unwrap();
        assert!(full.is_full());
        let mut s = Bitfield::new(10);
        assert!(s.set(9));
        assert!(!s.set(9));
        assert!(!s.set(10));
        assert_eq!(s.as_bytes(), &[0, 0x40]);
        assert_eq!(s.ones().collect::<Vec<_>>(), vec![9]);
    }
}

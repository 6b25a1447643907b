//! The peer wire protocol: the 68-byte handshake, one message body
//! (`parse_body`), and a stream of messages cut by `MessageReader` as it
//! arrives in chunks of one size, with timeouts between them.
//!
//! Input: two bytes of piece count (big-endian), one byte choosing the chunk
//! size, whether reads time out and whether the reader is metered (as the
//! rate limit does, `fill_at_most`), then the stream.
#![no_main]

use std::io::{self, Read};

use libfuzzer_sys::fuzz_target;
use tget::wire::{self, Bitfield, Handshake, Message, MessageReader, HANDSHAKE_LEN};

/// Hands out `data` `size` bytes at a time; every other read times out
/// when `stutter`.
struct Chunked<'a> {
    data: &'a [u8],
    size: usize,
    stutter: bool,
    timed_out: bool,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.stutter {
            self.timed_out = !self.timed_out;
            if self.timed_out {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
        let n = self.size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn check_bitfield(bits: &[u8], pieces: u32) {
    if let Ok(b) = Bitfield::from_wire(bits, pieces) {
        assert_eq!(b.len(), pieces);
        assert!(b.count() <= pieces);
        assert_eq!(b.ones().count() as u32, b.count());
        assert!(b.ones().all(|i| i < pieces && b.get(i)));
        assert_eq!(b.as_bytes(), bits);
    }
}

fuzz_target!(|data: &[u8]| {
    let [p0, p1, how, stream @ ..] = data else {
        return;
    };
    let pieces = u32::from(u16::from_be_bytes([*p0, *p1]));

    if let Some(hs) = stream.get(..HANDSHAKE_LEN) {
        let hs: &[u8; HANDSHAKE_LEN] = hs.try_into().unwrap();
        if let Ok(h) = Handshake::decode(hs) {
            assert_eq!(&h.encode(), hs);
        }
    }

    // The whole stream as one message body: what parses re-encodes to the
    // same bytes (but an unknown id, whose payload is ignored).
    if let Ok(Some(m)) = wire::parse_body(stream) {
        let mut out = Vec::new();
        m.encode_into(&mut out);
        if !matches!(m, Message::Unknown(_)) {
            assert_eq!(&out[4..], stream);
        }
        if let Message::Bitfield(bits) = m {
            check_bitfield(bits, pieces);
            check_bitfield(
                bits,
                (bits.len() as u32 * 8).saturating_sub(u32::from(how % 8)),
            );
        }
    }

    let max = wire::max_message_len(pieces);
    let size = [1, 3, 68, 4096, 70_000][usize::from(how & 7) % 5];
    let mut src = Chunked {
        data: stream,
        size,
        stutter: how & 0x80 != 0,
        timed_out: false,
    };
    let mut reader = MessageReader::new(max);
    let mut seen = 0usize;
    // Each read that is not a timeout takes at least one byte.
    'reading: for _ in 0..2 * stream.len() + 4 {
        let filled = if how & 0x40 != 0 {
            reader.fill_at_most(&mut src, usize::from(how & 0x3f))
        } else {
            reader.fill(&mut src)
        };
        match filled {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => continue,
        }
        loop {
            match reader.next_message() {
                Ok(Some(m)) => {
                    if let Message::Piece { data, .. } = m {
                        seen += data.len();
                    }
                    if let Message::Bitfield(bits) = m {
                        check_bitfield(bits, pieces);
                    }
                }
                Ok(None) => break,
                Err(_) => break 'reading,
            }
        }
        assert!(
            reader.buffered() <= max as usize + 4,
            "buffered {} bytes, past the largest message",
            reader.buffered()
        );
    }
    assert!(seen <= stream.len());
});

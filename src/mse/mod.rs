//! MSE/PE (Message Stream Encryption / Protocol Encryption) as a transport.
//!
//! The handshake, as the Vuze wiki's spec gives it (A dials, B answers;
//! S is the Diffie-Hellman secret, SKEY the torrent's info-hash, HASH is
//! SHA-1 over the concatenation):
//!
//! ```text
//! 1 A->B: Ya, PadA
//! 2 B->A: Yb, PadB
//! 3 A->B: HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
//!         ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA)
//! 4 B->A: ENCRYPT(VC, crypto_select, len(PadD), PadD), ENCRYPT2(payload)
//! 5 A->B: ENCRYPT2(payload)
//! ```
//!
//! Y is a 96-byte public key, the pads are 0 to 512 bytes, VC is eight zero
//! bytes, crypto_provide/select are 32-bit bit sets (0x01 plaintext, 0x02
//! RC4). A encrypts with RC4 keyed HASH('keyA', S, SKEY), B with
//! HASH('keyB', S, SKEY), each keystream's first 1024 bytes discarded.
//! ENCRYPT2 is RC4 if RC4 was selected, nothing if plaintext was.
//!
//! Neither side knows where the other's random padding ends, so each
//! synchronises by scanning for a value it can predict: B for
//! HASH('req1', S) within 512 + 20 bytes after Ya, A for ENCRYPT(VC) within
//! 512 + 8 bytes after Yb. Every read runs against one deadline for the
//! whole handshake and every scan and pad is capped, so a hostile peer can
//! make us hold at most a few kilobytes for at most the deadline.

mod dh;
mod rc4;

pub use dh::KeyPair;
pub use rc4::Rc4;

use crate::transport::Transport;
use sha1::{Digest, Sha1};
use std::io::{self, IoSlice, Read, Write};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// The most padding either side may send in any pad (PadA..PadD).
pub const MAX_PAD: usize = 512;
/// The verification constant: eight zero bytes.
const VC: [u8; 8] = [0; 8];
/// crypto_provide/crypto_select bit: the payload goes in plaintext.
pub const CRYPTO_PLAINTEXT: u32 = 0x01;
/// crypto_provide/crypto_select bit: the payload goes through RC4.
pub const CRYPTO_RC4: u32 = 0x02;
/// Public key bytes on the wire (Ya, Yb).
pub const PUBLIC_KEY_BYTES: usize = dh::KEY_BYTES;

/// Whether to use MSE: the future `--encryption` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encryption {
    /// Outgoing: try MSE first (offering RC4 or plaintext), fall back to a
    /// plain connection. Incoming: accept both; of an MSE peer's offer,
    /// select plaintext if offered (as libtorrent does: the handshake is
    /// hidden, the payload costs no RC4), else RC4.
    #[default]
    Prefer,
    /// Never send the peer protocol in plaintext: only RC4, both ways.
    Require,
    /// Never use MSE: plain connections only.
    Off,
}

impl FromStr for Encryption {
    type Err = String;

    fn from_str(s: &str) -> Result<Encryption, String> {
        match s.to_ascii_lowercase().as_str() {
            "prefer" => Ok(Encryption::Prefer),
            "require" => Ok(Encryption::Require),
            "off" => Ok(Encryption::Off),
            _ => Err(format!(
                "unknown encryption policy {s:?} (expected prefer, require or off)"
            )),
        }
    }
}

impl std::fmt::Display for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Encryption::Prefer => "prefer",
            Encryption::Require => "require",
            Encryption::Off => "off",
        })
    }
}

fn hash(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn xor20(a: &[u8; 20], b: &[u8; 20]) -> [u8; 20] {
    let mut out = [0u8; 20];
    for n in 0..20 {
        out[n] = a[n] ^ b[n];
    }
    out
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("mse: {msg}"))
}

/// A random length in 0..=MAX_PAD.
fn pad_len() -> usize {
    let mut b = [0u8; 2];
    dh::random_bytes(&mut b);
    usize::from(u16::from_le_bytes(b)) % (MAX_PAD + 1)
}

/// The handshake's view of the connection: what has come in and not been
/// parsed yet, and the one deadline every read and write runs against.
struct Wire {
    t: Box<dyn Transport>,
    buf: Vec<u8>,
    deadline: Instant,
}

impl Wire {
    fn remaining(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "mse: handshake deadline passed",
            ));
        }
        // A zero timeout means "for ever" to the OS: keep at least 1 ms.
        Ok(left.max(Duration::from_millis(1)))
    }

    /// Reads until `buf` holds at least `min` bytes, never more than `max`.
    fn fill(&mut self, min: usize, max: usize) -> io::Result<()> {
        let mut chunk = [0u8; 1024];
        while self.buf.len() < min {
            let left = self.remaining()?;
            self.t.set_read_timeout(Some(left))?;
            let room = (max - self.buf.len()).min(chunk.len());
            match self.t.read(&mut chunk[..room]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "mse: connection closed during the handshake",
                    ))
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next `n` bytes.
    fn take(&mut self, n: usize) -> io::Result<Vec<u8>> {
        self.fill(n, n.max(self.buf.len()))?;
        Ok(self.buf.drain(..n).collect())
    }

    /// The next `n` bytes, decrypted with `rc4`.
    fn take_decrypted(&mut self, n: usize, rc4: &mut Rc4) -> io::Result<Vec<u8>> {
        let mut v = self.take(n)?;
        rc4.apply(&mut v);
        Ok(v)
    }

    /// Skips up to `max_skip` bytes to find `pattern`, and consumes it.
    fn sync(&mut self, pattern: &[u8], max_skip: usize, what: &str) -> io::Result<()> {
        let window = max_skip + pattern.len();
        loop {
            let seen = self.buf.len().min(window);
            if let Some(at) = self.buf[..seen]
                .windows(pattern.len())
                .position(|w| w == pattern)
            {
                self.buf.drain(..at + pattern.len());
                return Ok(());
            }
            if seen >= window {
                return Err(bad(&format!(
                    "{what} not found within {max_skip} bytes of padding"
                )));
            }
            let want = self.buf.len() + 1;
            self.fill(want, window.max(want))?;
        }
    }

    fn send(&mut self, data: &[u8]) -> io::Result<()> {
        let left = self.remaining()?;
        self.t.set_write_timeout(Some(left))?;
        self.t.write_all(data)
    }

    /// The connection, with the timeouts cleared and whatever came in past
    /// the handshake.
    fn finish(self) -> io::Result<(Box<dyn Transport>, Vec<u8>)> {
        self.t.set_read_timeout(None)?;
        self.t.set_write_timeout(None)?;
        Ok((self.t, self.buf))
    }
}

/// Our public key followed by 0..=512 random bytes.
fn public_with_pad(keys: &KeyPair) -> Vec<u8> {
    let mut out = keys.public().to_vec();
    let mut pad = vec![0u8; pad_len()];
    dh::random_bytes(&mut pad);
    out.extend_from_slice(&pad);
    out
}

fn public_key(bytes: &[u8]) -> [u8; PUBLIC_KEY_BYTES] {
    bytes.try_into().expect("96 bytes")
}

/// Opens MSE on a fresh outgoing connection for the torrent `info_hash`,
/// offering what `policy` allows (Prefer: RC4 or plaintext; Require: RC4
/// only), all within `deadline`. With `Off` the stream is returned as it
/// came, untouched. On success the transport's timeouts are cleared.
pub fn connect(
    stream: Box<dyn Transport>,
    info_hash: [u8; 20],
    policy: Encryption,
    deadline: Instant,
) -> io::Result<Box<dyn Transport>> {
    let provide = match policy {
        Encryption::Off => return Ok(stream),
        Encryption::Prefer => CRYPTO_RC4 | CRYPTO_PLAINTEXT,
        Encryption::Require => CRYPTO_RC4,
    };
    connect_offering(stream, info_hash, provide, deadline)
}

/// [`connect`] with the crypto_provide bits spelled out.
fn connect_offering(
    stream: Box<dyn Transport>,
    info_hash: [u8; 20],
    provide: u32,
    deadline: Instant,
) -> io::Result<Box<dyn Transport>> {
    // A socket handed over from a non-blocking accept loop would make the
    // reads below spin until the deadline: the handshake blocks.
    stream.set_nonblocking(false)?;
    let mut wire = Wire {
        t: stream,
        buf: Vec::new(),
        deadline,
    };
    let keys = KeyPair::generate();
    wire.send(&public_with_pad(&keys))?;
    let yb = wire.take(PUBLIC_KEY_BYTES)?;
    let s = keys
        .shared(&public_key(&yb))
        .ok_or_else(|| bad("the peer's public key is degenerate"))?;
    let skey = &info_hash[..];
    let mut enc = Rc4::mse(&hash(&[b"keyA", &s, skey]));
    let mut dec = Rc4::mse(&hash(&[b"keyB", &s, skey]));

    // Step 3: the two hashes, then the encrypted offer with no initial
    // payload (the peer protocol's handshake follows in the stream).
    let mut msg = Vec::with_capacity(40 + 16 + MAX_PAD);
    msg.extend_from_slice(&hash(&[b"req1", &s]));
    msg.extend_from_slice(&xor20(&hash(&[b"req2", skey]), &hash(&[b"req3", &s])));
    let pad_c = pad_len();
    let mut offer = Vec::with_capacity(16 + pad_c);
    offer.extend_from_slice(&VC);
    offer.extend_from_slice(&provide.to_be_bytes());
    offer.extend_from_slice(&(pad_c as u16).to_be_bytes());
    offer.resize(offer.len() + pad_c, 0);
    offer.extend_from_slice(&0u16.to_be_bytes()); // len(IA)
    enc.apply(&mut offer);
    msg.extend_from_slice(&offer);
    wire.send(&msg)?;

    // Step 4: find B's encrypted VC after its padding.
    let mut vc = VC;
    dec.apply(&mut vc);
    wire.sync(&vc, MAX_PAD, "the encrypted verification constant")?;
    let head = wire.take_decrypted(6, &mut dec)?;
    let select = u32::from_be_bytes(head[0..4].try_into().expect("4 bytes"));
    let pad_d = usize::from(u16::from_be_bytes([head[4], head[5]]));
    if pad_d > MAX_PAD {
        return Err(bad(&format!("PadD of {pad_d} bytes (limit {MAX_PAD})")));
    }
    wire.take_decrypted(pad_d, &mut dec)?;
    if select.count_ones() != 1 || select & provide == 0 {
        return Err(bad(&format!(
            "the peer selected {select:#x}, we offered {provide:#x}"
        )));
    }
    let (t, rest) = wire.finish()?;
    Ok(Box::new(MseStream::new(
        t,
        select == CRYPTO_RC4,
        enc,
        dec,
        Vec::new(),
        rest,
    )))
}

/// Dials `addr` (TCP, or uTP where TCP fails: `transport::dial`) as
/// `policy` says: see [`dial_over`]. Each connect gets `connect_limit`.
pub fn dial(
    addr: std::net::SocketAddr,
    info_hash: [u8; 20],
    policy: Encryption,
    connect_limit: Duration,
    handshake_limit: Duration,
) -> io::Result<Box<dyn Transport>> {
    let open = || crate::transport::dial(addr, connect_limit);
    dial_over(&open, info_hash, policy, handshake_limit)
}

/// A connection `open` makes (TCP or uTP), set up as `policy` says: `Off`
/// as it is; `Require` then MSE (an MSE failure is the dial's failure);
/// `Prefer` then MSE, and if the MSE handshake fails (a plaintext-only
/// peer closes on our random bytes), a second connection from `open`,
/// plain. The MSE handshake must end by `now + handshake_limit`.
pub fn dial_over(
    open: &dyn Fn() -> io::Result<Box<dyn Transport>>,
    info_hash: [u8; 20],
    policy: Encryption,
    handshake_limit: Duration,
) -> io::Result<Box<dyn Transport>> {
    let stream = open()?;
    if policy == Encryption::Off {
        return Ok(stream);
    }
    match connect(stream, info_hash, policy, Instant::now() + handshake_limit) {
        Ok(t) => Ok(t),
        Err(e) if policy == Encryption::Require => Err(e),
        Err(_) => open(),
    }
}

/// Answers an MSE handshake on an incoming connection whose first bytes
/// (already read, to tell MSE from the plain protocol) are `first_bytes`.
/// The peer's torrent must be one of `known_info_hashes`; the one it asked
/// for is returned with the transport. `Require` selects only RC4; `Prefer`
/// selects plaintext when offered, else RC4; `Off` refuses MSE.
pub fn accept(
    stream: Box<dyn Transport>,
    first_bytes: &[u8],
    known_info_hashes: &[[u8; 20]],
    policy: Encryption,
    deadline: Instant,
) -> io::Result<(Box<dyn Transport>, [u8; 20])> {
    if policy == Encryption::Off {
        return Err(bad("encryption is off"));
    }
    // A socket handed over from a non-blocking accept loop would make the
    // reads below spin until the deadline: the handshake blocks.
    stream.set_nonblocking(false)?;
    let mut wire = Wire {
        t: stream,
        buf: first_bytes.to_vec(),
        deadline,
    };
    let ya = wire.take(PUBLIC_KEY_BYTES)?;
    let keys = KeyPair::generate();
    let s = keys
        .shared(&public_key(&ya))
        .ok_or_else(|| bad("the peer's public key is degenerate"))?;
    wire.send(&public_with_pad(&keys))?;

    // Step 3: find HASH('req1', S) after A's padding, then which torrent.
    wire.sync(&hash(&[b"req1", &s]), MAX_PAD, "HASH('req1', S)")?;
    let masked: [u8; 20] = wire.take(20)?.try_into().expect("20 bytes");
    let want = xor20(&masked, &hash(&[b"req3", &s]));
    let info_hash = *known_info_hashes
        .iter()
        .find(|ih| hash(&[b"req2", &ih[..]]) == want)
        .ok_or_else(|| bad("the skey hash matches no torrent of ours"))?;
    let skey = &info_hash[..];
    let mut dec = Rc4::mse(&hash(&[b"keyA", &s, skey]));
    let mut enc = Rc4::mse(&hash(&[b"keyB", &s, skey]));

    let head = wire.take_decrypted(14, &mut dec)?;
    if head[0..8] != VC {
        return Err(bad("wrong verification constant"));
    }
    let provide = u32::from_be_bytes(head[8..12].try_into().expect("4 bytes"));
    let pad_c = usize::from(u16::from_be_bytes([head[12], head[13]]));
    if pad_c > MAX_PAD {
        return Err(bad(&format!("PadC of {pad_c} bytes (limit {MAX_PAD})")));
    }
    wire.take_decrypted(pad_c, &mut dec)?;
    let ia_len = wire.take_decrypted(2, &mut dec)?;
    let ia_len = usize::from(u16::from_be_bytes([ia_len[0], ia_len[1]]));
    let ia = wire.take_decrypted(ia_len, &mut dec)?;

    // A peer that wants its payload encrypted offers RC4 alone; one that
    // offers both leaves it to us, and RC4 costs CPU on every byte we
    // serve (seeding 1 GiB: 5.6 CPU-s with RC4, 0.6 without).
    let select = if provide & CRYPTO_PLAINTEXT != 0 && policy == Encryption::Prefer {
        CRYPTO_PLAINTEXT
    } else if provide & CRYPTO_RC4 != 0 {
        CRYPTO_RC4
    } else {
        return Err(bad(&format!(
            "the peer offers {provide:#x}, our policy is {policy}"
        )));
    };

    // Step 4: our VC, the choice and a padding.
    let pad_d = pad_len();
    let mut answer = Vec::with_capacity(14 + pad_d);
    answer.extend_from_slice(&VC);
    answer.extend_from_slice(&select.to_be_bytes());
    answer.extend_from_slice(&(pad_d as u16).to_be_bytes());
    answer.resize(answer.len() + pad_d, 0);
    enc.apply(&mut answer);
    wire.send(&answer)?;

    let (t, rest) = wire.finish()?;
    let stream = MseStream::new(t, select == CRYPTO_RC4, enc, dec, ia, rest);
    Ok((Box::new(stream), info_hash))
}

/// A connection after an MSE handshake: RC4 both ways, or plaintext if
/// that was selected. Bytes that arrived with the handshake (the initial
/// payload, or the start of the stream) are read first.
pub struct MseStream {
    inner: Box<dyn Transport>,
    /// (encrypt, decrypt), when RC4 was selected.
    rc4: Option<(Rc4, Rc4)>,
    /// Plaintext already received, not yet read.
    pending: Vec<u8>,
    pending_at: usize,
    /// Ciphertext of bytes a short or failed write did not get out: the
    /// keystream has moved past them, so they go out before anything else.
    unsent: Vec<u8>,
}

impl MseStream {
    fn new(
        inner: Box<dyn Transport>,
        use_rc4: bool,
        enc: Rc4,
        mut dec: Rc4,
        initial_payload: Vec<u8>,
        mut rest: Vec<u8>,
    ) -> MseStream {
        let rc4 = if use_rc4 {
            dec.apply(&mut rest);
            Some((enc, dec))
        } else {
            None
        };
        let mut pending = initial_payload;
        pending.extend_from_slice(&rest);
        MseStream {
            inner,
            rc4,
            pending,
            pending_at: 0,
            unsent: Vec::new(),
        }
    }

    /// Writes out ciphertext the keystream already covers; `Ok(n)` counts
    /// bytes of the caller's buffer (which must start with the same
    /// plaintext, as `write_all` and every retrying writer does).
    fn write_unsent(&mut self, limit: usize) -> io::Result<usize> {
        let n = self
            .inner
            .write(&self.unsent[..self.unsent.len().min(limit)])?;
        self.unsent.drain(..n);
        Ok(n)
    }
}

/// How much plaintext one write encrypts at a time.
const WRITE_CHUNK: usize = 64 * 1024;

impl Read for MseStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pending_at < self.pending.len() {
            let n = buf.len().min(self.pending.len() - self.pending_at);
            buf[..n].copy_from_slice(&self.pending[self.pending_at..self.pending_at + n]);
            self.pending_at += n;
            if self.pending_at == self.pending.len() {
                self.pending = Vec::new();
                self.pending_at = 0;
            }
            return Ok(n);
        }
        let n = self.inner.read(buf)?;
        if let Some((_, dec)) = &mut self.rc4 {
            dec.apply(&mut buf[..n]);
        }
        Ok(n)
    }
}

impl Write for MseStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some((enc, _)) = &mut self.rc4 else {
            return self.inner.write(buf);
        };
        if buf.is_empty() {
            return Ok(0);
        }
        if !self.unsent.is_empty() {
            return self.write_unsent(buf.len());
        }
        let take = buf.len().min(WRITE_CHUNK);
        self.unsent.extend_from_slice(&buf[..take]);
        enc.apply(&mut self.unsent);
        self.write_unsent(take)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.rc4.is_none() {
            return self.inner.write_vectored(bufs);
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if !self.unsent.is_empty() {
            return self.write_unsent(total);
        }
        // RC4 needs a copy anyway: gather up to one chunk into the buffer
        // `write` uses (its allocation is kept), encrypt it, send it.
        for b in bufs {
            let room = WRITE_CHUNK - self.unsent.len();
            self.unsent.extend_from_slice(&b[..b.len().min(room)]);
            if self.unsent.len() == WRITE_CHUNK {
                break;
            }
        }
        let take = self.unsent.len();
        if take == 0 {
            return Ok(0);
        }
        if let Some((enc, _)) = &mut self.rc4 {
            enc.apply(&mut self.unsent);
        }
        self.write_unsent(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        while !self.unsent.is_empty() {
            if self.write_unsent(usize::MAX)? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        self.inner.flush()
    }
}

impl Transport for MseStream {
    fn set_read_timeout(&self, limit: Option<Duration>) -> io::Result<()> {
        self.inner.set_read_timeout(limit)
    }

    fn set_write_timeout(&self, limit: Option<Duration>) -> io::Result<()> {
        self.inner.set_write_timeout(limit)
    }

    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        self.inner.set_nonblocking(on)
    }

    fn kind(&self) -> &'static str {
        match (self.rc4.is_some(), self.inner.kind() == "utp") {
            (true, false) => "mse-rc4",
            (false, false) => "mse-plain",
            (true, true) => "utp+mse-rc4",
            (false, true) => "utp+mse-plain",
        }
    }

    /// The carrying transport's: ending it ends this stream.
    fn closer(&self) -> Option<crate::transport::Closer> {
        self.inner.closer()
    }
}

#[cfg(test)]
mod tests;

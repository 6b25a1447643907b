//! Transports: the byte stream a worker owns, under the peer protocol.
//!
//! The peer protocol (src/peer/) reads and writes a [`Transport`]: a
//! blocking `Read + Write` with deadlines. It does not know what carries the
//! bytes. Plain TCP is the one transport today; an encrypted stream (MSE/PE)
//! or a uTP connection is another implementation of the same trait, chosen
//! when the connection is made.
//!
//! The three knobs are the ones a blocking loop needs:
//! - a read deadline, so a read returns (with `WouldBlock` or `TimedOut`)
//!   when nothing came, and the worker can look at its other duties;
//! - a write deadline, so a peer that stops reading cannot hold a worker;
//! - non-blocking mode, so a worker with uploads queued reads only what has
//!   already arrived and goes back to sending;
//! - a [`Closer`], so another thread (the coordinator, at shutdown) can end
//!   a read or write that is waiting at once rather than at its deadline.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

/// Ends a transport from another thread: once `close` is called, a read or
/// write of the transport that is waiting returns at once (end of stream or
/// an error), and so does every later one. It holds only what it needs to
/// do that (for TCP a duplicate of the socket), dropped with it.
pub struct Closer(Box<dyn Fn() + Send + Sync>);

impl Closer {
    /// A closer that runs `close` (which may be called more than once).
    pub fn new(close: impl Fn() + Send + Sync + 'static) -> Closer {
        Closer(Box::new(close))
    }

    /// Ends the transport's reads and writes, pending and future.
    pub fn close(&self) {
        (self.0)()
    }
}

impl std::fmt::Debug for Closer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Closer")
    }
}

/// Whether a transport of this `kind` encrypts the peer protocol (RC4
/// under MSE/PE, over TCP or uTP).
pub fn encrypted(kind: &str) -> bool {
    kind.ends_with("mse-rc4")
}

/// A connected byte stream with deadlines.
pub trait Transport: Read + Write + Send {
    /// How long a read waits before it fails with `WouldBlock`/`TimedOut`
    /// (`None`: for ever).
    fn set_read_timeout(&self, limit: Option<Duration>) -> io::Result<()>;
    /// How long a write waits for room before it fails.
    fn set_write_timeout(&self, limit: Option<Duration>) -> io::Result<()>;
    /// Non-blocking: reads and writes fail with `WouldBlock` at once instead
    /// of waiting.
    fn set_nonblocking(&self, on: bool) -> io::Result<()>;
    /// A short name for logs and events: "tcp", "utp", "mse-rc4",
    /// "mse-plain".
    fn kind(&self) -> &'static str;
    /// A handle another thread can end this transport with (see
    /// [`Closer`]); `None` when the transport has none (test doubles).
    fn closer(&self) -> Option<Closer> {
        None
    }
}

impl Transport for TcpStream {
    fn set_read_timeout(&self, limit: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, limit)
    }

    fn set_write_timeout(&self, limit: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, limit)
    }

    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        TcpStream::set_nonblocking(self, on)
    }

    fn kind(&self) -> &'static str {
        "tcp"
    }

    /// A duplicate of the socket: shutting it down both ways wakes a
    /// `recv` or `send` blocked on the original (Linux) and fails every
    /// later one. The duplicate's descriptor lives as long as the closer,
    /// so the closer must be dropped when the connection ends.
    fn closer(&self) -> Option<Closer> {
        let dup = self.try_clone().ok()?;
        Some(Closer::new(move || {
            let _ = dup.shutdown(Shutdown::Both);
        }))
    }
}

/// A TCP connection to `addr`, made within `limit` the way `--proxy` and
/// `--bind` say (`crate::dial`), set up for the peer protocol (Nagle off:
/// requests and small messages go out at once).
pub fn dial_tcp(addr: SocketAddr, limit: Duration) -> io::Result<Box<dyn Transport>> {
    let stream = crate::dial::connect(&addr, limit)?;
    tcp(stream)
}

/// A connection to `addr` within `limit`: TCP, and when that fails and uTP
/// is on ([`crate::utp::enabled`]: the binary's default, off with
/// `--no-utp`), uTP, libtorrent's order: a peer that answers only over uTP
/// (TCP refused or filtered) is still reached.
pub fn dial(addr: SocketAddr, limit: Duration) -> io::Result<Box<dyn Transport>> {
    match dial_tcp(addr, limit) {
        Ok(t) => Ok(t),
        Err(e) if crate::utp::enabled() => crate::utp::dial(addr, limit)
            .map_err(|u| io::Error::new(e.kind(), format!("{e}; over uTP: {u}"))),
        Err(e) => Err(e),
    }
}

/// An accepted (or otherwise connected) TCP stream as a transport.
pub fn tcp(stream: TcpStream) -> io::Result<Box<dyn Transport>> {
    stream.set_nodelay(true)?;
    Ok(Box::new(stream))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn rc4_over_tcp_or_utp_counts_as_encrypted_and_nothing_else_does() {
        for kind in ["mse-rc4", "utp+mse-rc4"] {
            assert!(encrypted(kind), "{kind}");
        }
        for kind in ["tcp", "utp", "mse-plain", "utp+mse-plain"] {
            assert!(!encrypted(kind), "{kind}");
        }
    }
    use std::net::TcpListener;

    #[test]
    fn a_tcp_transport_carries_bytes_and_honours_its_read_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut ours = dial_tcp(addr, Duration::from_secs(5)).unwrap();
        let (mut theirs, _) = listener.accept().unwrap();
        assert_eq!(ours.kind(), "tcp");
        ours.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        theirs.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        // Nothing to read: the deadline ends the read with an error.
        ours.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let e = ours.read(&mut got).unwrap_err();
        assert!(matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ));
        // Non-blocking: the same read fails at once.
        ours.set_nonblocking(true).unwrap();
        let e = ours.read(&mut got).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    /// Reads `t` on another thread (with a deadline of `limit`) until
    /// `closer` is called: what the read returned.
    pub(crate) fn read_until_closed(
        mut t: Box<dyn Transport>,
        closer: Closer,
        limit: Duration,
    ) -> io::Result<usize> {
        t.set_read_timeout(Some(limit)).unwrap();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 16];
            let r = t.read(&mut buf);
            (r, t)
        });
        // Give the reader time to block (the test holds without it too).
        std::thread::sleep(Duration::from_millis(50));
        closer.close();
        let (r, _t) = reader.join().unwrap();
        r
    }

    /// Writes to `t` on another thread (with a deadline of `limit`) more
    /// than the peer, which reads nothing, lets through, until `closer` is
    /// called: what the write returned.
    pub(crate) fn write_until_closed(
        mut t: Box<dyn Transport>,
        closer: Closer,
        limit: Duration,
    ) -> io::Result<()> {
        t.set_write_timeout(Some(limit)).unwrap();
        let writer = std::thread::spawn(move || {
            let big = vec![7u8; 64 << 20];
            let r = t.write_all(&big);
            (r, t)
        });
        // Give the writer time to fill the buffers and block.
        std::thread::sleep(Duration::from_millis(200));
        closer.close();
        let (r, _t) = writer.join().unwrap();
        r
    }

    /// Whether `r` is what a closed transport's read gives: end of stream
    /// or an error, not its deadline passing.
    pub(crate) fn ended_by_closer(r: &io::Result<usize>) -> bool {
        match r {
            Ok(n) => *n == 0,
            Err(e) => !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        }
    }

    #[test]
    fn a_tcp_closer_ends_a_read_blocked_on_another_thread() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let ours = dial_tcp(addr, Duration::from_secs(5)).unwrap();
        // The peer stays connected and silent.
        let (_theirs, _) = listener.accept().unwrap();
        let closer = ours.closer().expect("TCP has a closer");
        let r = read_until_closed(ours, closer, Duration::from_secs(10));
        assert!(ended_by_closer(&r), "{r:?}");
    }

    #[test]
    fn a_tcp_closer_ends_a_write_blocked_on_a_peer_that_reads_nothing() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let ours = dial_tcp(addr, Duration::from_secs(5)).unwrap();
        let (_theirs, _) = listener.accept().unwrap();
        let closer = ours.closer().expect("TCP has a closer");
        let r = write_until_closed(ours, closer, Duration::from_secs(10));
        let e = r.expect_err("64 MiB went through a peer that reads nothing");
        assert!(ended_by_closer(&Err(e)));
    }
}

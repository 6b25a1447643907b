//! MSE tests: the policy flag, the stream's write path on a fake transport,
//! and whole handshakes over loopback TCP, friendly and hostile.

use super::*;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

const IH: [u8; 20] = [0x11; 20];
const OTHER_IH: [u8; 20] = [0x22; 20];

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

/// A connected loopback pair: (dialer, answerer).
fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (b, _) = listener.accept().unwrap();
    (a, b)
}

/// A transport that records every byte written through it.
struct Tap {
    inner: TcpStream,
    written: Arc<Mutex<Vec<u8>>>,
}

impl Read for Tap {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl Write for Tap {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written.lock().unwrap().extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Transport for Tap {
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
        "tap"
    }
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

const FROM_A: &[u8] = b"\x13BitTorrent protocol, from the dialer, long enough to spot";
const FROM_B: &[u8] = b"\x13BitTorrent protocol, from the answerer, also long enough";

/// Runs a handshake over loopback with the dialer offering `provide`, sends
/// a message each way, and returns (dialer kind, answerer kind, bytes the
/// dialer put on the wire, bytes the answerer put on the wire).
fn exchange(provide: u32, policy_b: Encryption) -> (String, String, Vec<u8>, Vec<u8>) {
    let (a, b) = pair();
    let wire_a = Arc::new(Mutex::new(Vec::new()));
    let wire_b = Arc::new(Mutex::new(Vec::new()));
    let tap_a = Tap {
        inner: a,
        written: wire_a.clone(),
    };
    let tap_b = Tap {
        inner: b,
        written: wire_b.clone(),
    };
    let answerer = thread::spawn(move || {
        let (mut t, ih) = accept(Box::new(tap_b), &[], &[OTHER_IH, IH], policy_b, soon()).unwrap();
        assert_eq!(ih, IH);
        let mut got = vec![0u8; FROM_A.len()];
        t.read_exact(&mut got).unwrap();
        assert_eq!(got, FROM_A);
        t.write_all(FROM_B).unwrap();
        t.kind().to_string()
    });
    let mut t = connect_offering(Box::new(tap_a), IH, provide, soon()).unwrap();
    t.write_all(FROM_A).unwrap();
    let mut got = vec![0u8; FROM_B.len()];
    t.read_exact(&mut got).unwrap();
    assert_eq!(got, FROM_B);
    let kind_b = answerer.join().unwrap();
    let wa = wire_a.lock().unwrap().clone();
    let wb = wire_b.lock().unwrap().clone();
    (t.kind().to_string(), kind_b, wa, wb)
}

#[test]
fn the_policy_parses_from_the_flag_words() {
    assert_eq!("prefer".parse::<Encryption>(), Ok(Encryption::Prefer));
    assert_eq!("Require".parse::<Encryption>(), Ok(Encryption::Require));
    assert_eq!("off".parse::<Encryption>(), Ok(Encryption::Off));
    assert!("maybe".parse::<Encryption>().is_err());
    assert_eq!(Encryption::default(), Encryption::Prefer);
    assert_eq!(Encryption::Require.to_string(), "require");
}

#[test]
fn offered_both_prefer_chooses_plaintext_and_require_rc4() {
    // As libtorrent does: the handshake is hidden either way, and RC4
    // would cost CPU on every byte served.
    let (ka, kb, wa, wb) = exchange(CRYPTO_RC4 | CRYPTO_PLAINTEXT, Encryption::Prefer);
    assert_eq!((ka.as_str(), kb.as_str()), ("mse-plain", "mse-plain"));
    assert!(find(&wa, FROM_A) && find(&wb, FROM_B));
    assert!(!find(&wa, &IH) && !find(&wb, &IH), "the info-hash showed");
    let (ka, kb, ..) = exchange(CRYPTO_RC4 | CRYPTO_PLAINTEXT, Encryption::Require);
    assert_eq!((ka.as_str(), kb.as_str()), ("mse-rc4", "mse-rc4"));
}

#[test]
fn rc4_is_chosen_and_carries_bytes_both_ways_encrypted() {
    let (ka, kb, wa, wb) = exchange(CRYPTO_RC4, Encryption::Prefer);
    assert_eq!((ka.as_str(), kb.as_str()), ("mse-rc4", "mse-rc4"));
    assert!(!find(&wa, FROM_A), "the dialer's bytes went out in clear");
    assert!(!find(&wb, FROM_B), "the answerer's bytes went out in clear");
    assert!(!find(&wa, &IH) && !find(&wb, &IH), "the info-hash showed");
}

#[test]
fn a_closer_of_an_mse_stream_ends_a_read_blocked_on_another_thread() {
    use crate::transport::tests::{ended_by_closer, read_until_closed};
    let (a, b) = pair();
    let answerer = thread::spawn(move || {
        let (t, _) = accept(Box::new(b), &[], &[IH], Encryption::Require, soon()).unwrap();
        t
    });
    let ours = connect_offering(Box::new(a), IH, CRYPTO_RC4, soon()).unwrap();
    // The answerer's end stays open and silent.
    let _theirs = answerer.join().unwrap();
    assert_eq!(ours.kind(), "mse-rc4");
    let closer = ours.closer().expect("MSE over TCP has a closer");
    let r = read_until_closed(ours, closer, Duration::from_secs(10));
    assert!(ended_by_closer(&r), "{r:?}");
}

#[test]
fn require_on_both_sides_gives_rc4() {
    let (ka, kb, ..) = exchange(CRYPTO_RC4, Encryption::Require);
    assert_eq!((ka.as_str(), kb.as_str()), ("mse-rc4", "mse-rc4"));
}

#[test]
fn plaintext_selection_carries_the_payload_in_clear() {
    let (ka, kb, wa, wb) = exchange(CRYPTO_PLAINTEXT, Encryption::Prefer);
    assert_eq!((ka.as_str(), kb.as_str()), ("mse-plain", "mse-plain"));
    assert!(find(&wa, FROM_A) && find(&wb, FROM_B));
}

#[test]
fn require_refuses_a_plaintext_only_offer() {
    let (a, b) = pair();
    let dialer = thread::spawn(move || {
        let r = connect_offering(Box::new(a), IH, CRYPTO_PLAINTEXT, soon());
        assert!(r.is_err());
    });
    let r = accept(Box::new(b), &[], &[IH], Encryption::Require, soon());
    assert!(r.is_err());
    dialer.join().unwrap();
}

#[test]
fn off_passes_outgoing_streams_through_and_refuses_incoming_mse() {
    let (a, b) = pair();
    let t = connect(Box::new(a), IH, Encryption::Off, soon()).unwrap();
    assert_eq!(t.kind(), "tcp");
    assert!(accept(Box::new(b), &[0; 96], &[IH], Encryption::Off, soon()).is_err());
}

#[test]
fn first_bytes_already_read_by_the_listener_are_used() {
    // The listener peeks at the first bytes to tell MSE from BitTorrent;
    // it hands them over and the handshake carries on from there.
    let (a, mut b) = pair();
    let dialer = thread::spawn(move || {
        let mut t = connect(Box::new(a), IH, Encryption::Require, soon()).unwrap();
        t.write_all(FROM_A).unwrap();
        t.kind().to_string()
    });
    let mut first = [0u8; 68];
    b.read_exact(&mut first).unwrap();
    let (mut t, ih) = accept(Box::new(b), &first, &[IH], Encryption::Prefer, soon()).unwrap();
    assert_eq!(ih, IH);
    let mut got = vec![0u8; FROM_A.len()];
    t.read_exact(&mut got).unwrap();
    assert_eq!(got, FROM_A);
    assert_eq!(dialer.join().unwrap(), "mse-rc4");
}

/// A TCP transport that counts the reads made through it.
struct CountReads {
    inner: TcpStream,
    reads: Arc<Mutex<usize>>,
}

impl Read for CountReads {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        *self.reads.lock().unwrap() += 1;
        self.inner.read(buf)
    }
}

impl Write for CountReads {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Transport for CountReads {
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
        "count-reads"
    }
}

#[test]
fn a_socket_from_a_non_blocking_accept_loop_does_not_spin() {
    // The listener polls non-blocking sockets; one handed to `accept` must
    // wait for the slow dialer in the kernel, not in a loop of reads.
    let (a, b) = pair();
    b.set_nonblocking(true).unwrap();
    let reads = Arc::new(Mutex::new(0));
    let counted = CountReads {
        inner: b,
        reads: reads.clone(),
    };
    let dialer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(200));
        connect(Box::new(a), IH, Encryption::Prefer, soon()).map(|t| t.kind())
    });
    let (t, _) = accept(Box::new(counted), &[], &[IH], Encryption::Prefer, soon()).unwrap();
    assert_eq!(t.kind(), "mse-plain");
    assert_eq!(dialer.join().unwrap().unwrap(), "mse-plain");
    let n = *reads.lock().unwrap();
    assert!(n < 100, "{n} reads for one handshake");
}

/// A plaintext-only peer: closes any connection whose first byte is not
/// the BitTorrent handshake's. Returns its address and a count of the
/// connections it saw.
fn plaintext_only_peer() -> (std::net::SocketAddr, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(0));
    let count = seen.clone();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { break };
            *count.lock().unwrap() += 1;
            let mut first = [0u8; 1];
            if c.read_exact(&mut first).is_ok() && first[0] == 19 {
                let mut rest = [0u8; 67];
                let _ = c.read_exact(&mut rest);
            }
            // Dropped: closed.
        }
    });
    (addr, seen)
}

#[test]
fn prefer_falls_back_to_plain_tcp_and_require_does_not() {
    let limit = Duration::from_secs(10);
    let (addr, seen) = plaintext_only_peer();
    let t = dial(addr, IH, Encryption::Prefer, limit, limit).unwrap();
    assert_eq!(t.kind(), "tcp");
    // The peer's thread counts the second connection after the kernel has
    // accepted it: wait (boundedly) for the count to catch up.
    for _ in 0..1000 {
        if *seen.lock().unwrap() >= 2 {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        *seen.lock().unwrap(),
        2,
        "one MSE try, one plain connection"
    );

    let (addr, seen) = plaintext_only_peer();
    assert!(dial(addr, IH, Encryption::Require, limit, limit).is_err());
    assert_eq!(
        *seen.lock().unwrap(),
        1,
        "require never connects in plaintext"
    );

    let (addr, seen) = plaintext_only_peer();
    let t = dial(addr, IH, Encryption::Off, limit, limit).unwrap();
    assert_eq!(t.kind(), "tcp");
    drop(t);
    assert!(*seen.lock().unwrap() <= 1);
}

#[test]
fn prefer_dials_mse_where_the_peer_speaks_it() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let answerer = thread::spawn(move || {
        let (b, _) = listener.accept().unwrap();
        let (mut t, _) = accept(Box::new(b), &[], &[IH], Encryption::Prefer, soon()).unwrap();
        t.write_all(FROM_B).unwrap();
    });
    let limit = Duration::from_secs(10);
    let mut t = dial(addr, IH, Encryption::Prefer, limit, limit).unwrap();
    assert_eq!(
        t.kind(),
        "mse-plain",
        "MSE, and the answerer chose plaintext"
    );
    let mut got = vec![0u8; FROM_B.len()];
    t.read_exact(&mut got).unwrap();
    assert_eq!(got, FROM_B);
    answerer.join().unwrap();
}

// --- The stream's write path, on a transport that takes 3 bytes at a time
// and fails every other write with WouldBlock.

struct Trickle {
    written: Arc<Mutex<Vec<u8>>>,
    fail_next: bool,
}

impl Read for Trickle {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Ok(0)
    }
}

impl Write for Trickle {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let fail = self.fail_next;
        self.fail_next = !fail;
        if fail {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(3);
        self.written.lock().unwrap().extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for Trickle {
    fn set_read_timeout(&self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
    fn set_write_timeout(&self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
    fn set_nonblocking(&self, _: bool) -> io::Result<()> {
        Ok(())
    }
    fn kind(&self) -> &'static str {
        "trickle"
    }
}

fn trickle_stream() -> (MseStream, Arc<Mutex<Vec<u8>>>) {
    let written = Arc::new(Mutex::new(Vec::new()));
    let t = Trickle {
        written: written.clone(),
        fail_next: false,
    };
    let s = MseStream::new(
        Box::new(t),
        true,
        Rc4::mse(b"enc"),
        Rc4::mse(b"dec"),
        Vec::new(),
        Vec::new(),
    );
    (s, written)
}

fn decrypted(written: &Arc<Mutex<Vec<u8>>>) -> Vec<u8> {
    let mut v = written.lock().unwrap().clone();
    Rc4::mse(b"enc").apply(&mut v);
    v
}

#[test]
fn short_and_failed_writes_resume_without_losing_the_keystream() {
    let (mut s, written) = trickle_stream();
    let data: Vec<u8> = (0..100u8).collect();
    let mut at = 0;
    let mut tries = 0;
    while at < data.len() {
        tries += 1;
        assert!(tries < 1000);
        match s.write(&data[at..]) {
            Ok(n) => at += n,
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
        }
    }
    assert_eq!(decrypted(&written), data);
}

#[test]
fn vectored_writes_are_encrypted_too() {
    let (mut s, written) = trickle_stream();
    let parts: [&[u8]; 3] = [b"length prefix ", b"and a header ", b"and the block"];
    let whole: Vec<u8> = parts.concat();
    let mut at = 0;
    let mut tries = 0;
    while at < whole.len() {
        tries += 1;
        assert!(tries < 1000);
        // The caller offers the rest as slices, as write_all_vectored does.
        let mut skip = at;
        let mut slices = Vec::new();
        for p in parts {
            if skip >= p.len() {
                skip -= p.len();
            } else {
                slices.push(IoSlice::new(&p[skip..]));
                skip = 0;
            }
        }
        match s.write_vectored(&slices) {
            Ok(n) => at += n,
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
        }
    }
    let raw = written.lock().unwrap().clone();
    assert!(!find(&raw, b"header"), "vectored bytes went out in clear");
    assert_eq!(decrypted(&written), whole);
}

#[test]
fn flush_pushes_out_ciphertext_a_failed_write_left() {
    let (mut s, written) = trickle_stream();
    s.write_all(b"abcdefgh").unwrap_err(); // 3 bytes out, then WouldBlock
    loop {
        match s.flush() {
            Ok(()) => break,
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
        }
    }
    assert_eq!(decrypted(&written), b"abcdefgh");
}

// --- Hostile handshakes: each ends in an error, within the deadline.

/// What a hand-driven dialer needs: its keys and the answerer's secret.
fn dial_by_hand(raw: &mut TcpStream, pad_a: usize) -> [u8; 96] {
    let keys = KeyPair::generate();
    let mut first = keys.public().to_vec();
    first.resize(96 + pad_a, 0xa5);
    raw.write_all(&first).unwrap();
    let mut yb = [0u8; 96];
    raw.read_exact(&mut yb).unwrap();
    keys.shared(&yb).unwrap()
}

/// Step 3 as an honest dialer would send it, with PadC of `pad_c` bytes
/// (the length field says `pad_c_len`).
fn step3(s: &[u8; 96], ih: &[u8; 20], pad_c_len: u16) -> Vec<u8> {
    let mut msg = hash(&[b"req1", s]).to_vec();
    msg.extend_from_slice(&xor20(&hash(&[b"req2", ih]), &hash(&[b"req3", s])));
    let mut offer = VC.to_vec();
    offer.extend_from_slice(&CRYPTO_RC4.to_be_bytes());
    offer.extend_from_slice(&pad_c_len.to_be_bytes());
    offer.resize(offer.len() + usize::from(pad_c_len), 0);
    offer.extend_from_slice(&0u16.to_be_bytes());
    Rc4::mse(&hash(&[b"keyA", s, ih])).apply(&mut offer);
    msg.extend_from_slice(&offer);
    msg
}

/// Runs `accept` against a hand-driven dialer and returns its error.
fn accept_against(
    dialer: impl FnOnce(&mut TcpStream) + Send + 'static,
    within: Duration,
) -> io::Error {
    let (mut a, b) = pair();
    let d = thread::spawn(move || {
        dialer(&mut a);
        // Drain until the answerer closes, so no unread bytes reset the
        // connection and turn its own error into ConnectionReset.
        let mut sink = [0u8; 1024];
        while matches!(a.read(&mut sink), Ok(n) if n > 0) {}
    });
    let started = Instant::now();
    let r = accept(
        Box::new(b),
        &[],
        &[IH],
        Encryption::Prefer,
        started + within,
    );
    let e = match r {
        Ok(_) => panic!("a hostile handshake was accepted"),
        Err(e) => e,
    };
    d.join().unwrap();
    e
}

#[test]
fn the_honest_hand_driven_dialer_is_accepted() {
    // The hand-driven dialer the hostile tests bend is itself correct.
    let (mut a, b) = pair();
    let d = thread::spawn(move || {
        let s = dial_by_hand(&mut a, 512);
        a.write_all(&step3(&s, &IH, 512)).unwrap();
        // Read everything until the answerer closes: unread bytes at close
        // would reset the connection under the answerer's last write.
        let mut sink = [0u8; 1024];
        while matches!(a.read(&mut sink), Ok(n) if n > 0) {}
    });
    let r = accept(Box::new(b), &[], &[IH], Encryption::Prefer, soon());
    assert_eq!(r.unwrap().1, IH);
    d.join().unwrap();
}

#[test]
fn padding_over_the_limit_is_refused() {
    let e = accept_against(
        |a| {
            let s = dial_by_hand(a, 513);
            let _ = a.write_all(&step3(&s, &IH, 0));
        },
        Duration::from_secs(10),
    );
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
}

#[test]
fn pad_c_over_the_limit_is_refused() {
    let e = accept_against(
        |a| {
            let s = dial_by_hand(a, 0);
            let _ = a.write_all(&step3(&s, &IH, 513));
        },
        Duration::from_secs(10),
    );
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    assert!(e.to_string().contains("PadC"), "{e}");
}

#[test]
fn a_wrong_skey_hash_is_refused() {
    let e = accept_against(
        |a| {
            let s = dial_by_hand(a, 10);
            let _ = a.write_all(&step3(&s, &OTHER_IH, 0));
        },
        Duration::from_secs(10),
    );
    assert!(e.to_string().contains("no torrent"), "{e}");
}

#[test]
fn garbage_after_the_dh_key_is_refused() {
    let e = accept_against(
        |a| {
            let _ = dial_by_hand(a, 0);
            let mut junk = vec![0u8; 2000];
            dh::random_bytes(&mut junk);
            let _ = a.write_all(&junk);
        },
        Duration::from_secs(10),
    );
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
}

#[test]
fn a_handshake_that_never_ends_runs_into_the_deadline() {
    let e = accept_against(
        |a| {
            let _ = dial_by_hand(a, 100);
            // Then nothing, until the answerer has given up and closed.
        },
        Duration::from_millis(300),
    );
    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
}

#[test]
fn a_degenerate_public_key_is_refused() {
    let e = accept_against(
        |a| {
            let _ = a.write_all(&[0u8; 96]);
        },
        Duration::from_secs(10),
    );
    assert!(e.to_string().contains("degenerate"), "{e}");
}

#[test]
fn the_dialer_refuses_padding_over_the_limit_and_silence() {
    // An answerer whose PadB runs on for ever (garbage after Yb).
    let (a, mut b) = pair();
    let answerer = thread::spawn(move || {
        let mut ya = [0u8; 96];
        b.read_exact(&mut ya).unwrap();
        let mut out = KeyPair::generate().public().to_vec();
        out.resize(96 + 2000, 0x5a);
        let _ = b.write_all(&out);
        let mut sink = [0u8; 4096];
        while matches!(b.read(&mut sink), Ok(n) if n > 0) {}
    });
    let e = match connect(Box::new(a), IH, Encryption::Prefer, soon()) {
        Ok(_) => panic!("connected to garbage"),
        Err(e) => e,
    };
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    answerer.join().unwrap();

    // An answerer that never says anything.
    let (a, b) = pair();
    let deadline = Instant::now() + Duration::from_millis(300);
    let e = match connect(Box::new(a), IH, Encryption::Prefer, deadline) {
        Ok(_) => panic!("connected to silence"),
        Err(e) => e,
    };
    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
    drop(b);
}

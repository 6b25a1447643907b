//! Distance on loopback, for `bench_swarm_at_a_distance`: a relay in front
//! of each seeder that holds every byte it forwards for a fixed time, each
//! way, and a tracker that hands out the relays' addresses instead of the
//! seeders'. Everything listens on 127.0.0.1 and connects only there.
//!
//! The relay delays the BitTorrent conversation, not TCP: it reads from
//! either side as fast as the bytes come and writes each chunk to the
//! other side once it has waited `one_way`. So a request reaches the
//! seeder `one_way` after it was sent, and the blocks it asks for reach
//! the downloader `one_way` after the seeder sent them: how many requests
//! a client keeps out decides what it gets, as on a long path. The
//! kernel's own TCP windows are the loopback's, the same for every client.
//! No system setting is touched (no `tc netem`).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

/// How often a listener's loop looks at its stop flag.
const POLL: Duration = Duration::from_millis(10);
/// A relayed connection silent this long (both ways) is closed: a bound on
/// its threads if a side never closes.
const IDLE: Duration = Duration::from_secs(120);

/// A thread accepting on a listener, handing each connection to a
/// function on a thread of its own; it stops when dropped.
struct Acceptor {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Acceptor {
    fn start(listener: TcpListener, serve: impl Fn(TcpStream) + Send + Clone + 'static) -> Self {
        listener
            .set_nonblocking(true)
            .expect("bench: nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let serve = serve.clone();
                        thread::spawn(move || serve(s));
                    }
                    Err(_) => sleep(POLL),
                }
            }
        });
        Acceptor {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A relay on 127.0.0.1 in front of one peer: every byte either way
/// arrives `one_way` later than it was sent. Stops accepting when dropped.
pub struct DelayRelay {
    pub addr: SocketAddr,
    _acceptor: Acceptor,
}

impl DelayRelay {
    pub fn start(target: SocketAddr, one_way: Duration) -> DelayRelay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bench: bind a relay");
        let addr = listener.local_addr().expect("bench: relay address");
        let acceptor = Acceptor::start(listener, move |client: TcpStream| {
            let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let pipe = |from: &TcpStream, to: &TcpStream| -> io::Result<()> {
                let (from, to) = (from.try_clone()?, to.try_clone()?);
                from.set_read_timeout(Some(IDLE))?;
                thread::spawn(move || delayed_copy(from, to, one_way));
                Ok(())
            };
            let _ = pipe(&client, &server).and_then(|()| pipe(&server, &client));
        });
        DelayRelay {
            addr,
            _acceptor: acceptor,
        }
    }
}

/// Copies `from` to `to`, each chunk written `delay` after it was read:
/// a reader (this thread) and a writer joined by a queue, so the reading
/// never waits for the writing. The end of `from` becomes the end of `to`
/// once the bytes before it have gone; an error on either side closes
/// both.
fn delayed_copy(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let Ok(to_writer) = to.try_clone() else {
        return;
    };
    let Ok(from_closer) = from.try_clone() else {
        return;
    };
    let writer = thread::spawn(move || {
        let mut to = to_writer;
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                sleep(due - now);
            }
            if to.write_all(&chunk).is_err() {
                let _ = to.shutdown(Shutdown::Both);
                let _ = from_closer.shutdown(Shutdown::Both);
                return;
            }
        }
        // The reader saw the end: pass it on.
        let _ = to.shutdown(Shutdown::Write);
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx
                    .send((Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.join();
    let _ = to.flush();
}

/// An HTTP tracker on 127.0.0.1 that answers every announce, whatever the
/// torrent, with the same compact list of peers (the relays). Stops when
/// dropped.
pub struct FixedTracker {
    /// `http://127.0.0.1:PORT/announce`
    pub url: String,
    _acceptor: Acceptor,
}

impl FixedTracker {
    pub fn start(peers: &[SocketAddr]) -> FixedTracker {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bench: bind a tracker");
        let url = format!(
            "http://{}/announce",
            listener.local_addr().expect("bench: tracker address")
        );
        let mut compact = Vec::new();
        for p in peers {
            let SocketAddr::V4(v4) = p else {
                panic!("bench: the fixed tracker lists IPv4 peers only");
            };
            compact.extend_from_slice(&v4.ip().octets());
            compact.extend_from_slice(&v4.port().to_be_bytes());
        }
        let mut body = format!(
            "d8:completei{}e10:incompletei0e8:intervali1800e5:peers{}:",
            peers.len(),
            compact.len()
        )
        .into_bytes();
        body.extend_from_slice(&compact);
        body.push(b'e');
        let body = Arc::new(body);
        let acceptor = Acceptor::start(listener, move |mut s: TcpStream| {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            // Read the request head (bounded), then answer and close.
            let mut head = Vec::new();
            let mut buf = [0u8; 2048];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let mut reply = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            reply.extend_from_slice(&body);
            let _ = s.write_all(&reply);
            let _ = s.shutdown(Shutdown::Write);
        });
        FixedTracker {
            url,
            _acceptor: acceptor,
        }
    }
}

/// The bytes of a .torrent made by mktorrent with one tracker (it starts
/// `d8:announce<len>:<url>`, no announce-list) with that tracker replaced
/// by `url`. The info dictionary, and so the info-hash, is untouched.
pub fn with_announce(torrent: &[u8], url: &str) -> Vec<u8> {
    const HEAD: &[u8] = b"d8:announce";
    assert!(
        torrent.starts_with(HEAD),
        "bench: the torrent does not start with its announce URL"
    );
    let rest = &torrent[HEAD.len()..];
    let colon = rest
        .iter()
        .position(|&b| b == b':')
        .expect("bench: the announce URL's length");
    let len: usize = std::str::from_utf8(&rest[..colon])
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("bench: the announce URL's length is a number");
    let after = &rest[colon + 1 + len..];
    assert!(
        !after.windows(13).any(|w| w == b"announce-list"),
        "bench: the torrent has an announce-list"
    );
    let mut out = HEAD.to_vec();
    out.extend_from_slice(format!("{}:{url}", url.len()).as_bytes());
    out.extend_from_slice(after);
    out
}

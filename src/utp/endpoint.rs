//! One UDP socket and one thread carrying any number of uTP connections.
//!
//! The socket thread receives, finds the connection by (peer address,
//! connection id), feeds it the packet, sends what it answers and wakes the
//! stream handle waiting on it; every 10 ms it runs the timers of every
//! connection. A stream handle (`UtpStream`, one per worker) writes into
//! its connection and sends what that lets out itself, so a write never
//! waits for the socket thread. Each connection sits behind its own mutex,
//! held for the state machine's work and never across a socket call.
//!
//! Bounds: at most `MAX_CONNECTIONS` connections, of which at most
//! `MAX_HALF_OPEN` incoming ones heard only by their SYN (half-open) and
//! at most `MAX_PENDING` accepted but not yet taken by `accept`. A SYN
//! beyond any of them is dropped, as is every packet for a connection we
//! do not know (no RESET is sent back: nothing to amplify). A half-open
//! connection whose stream is dropped (the listener gave up on it) is reset
//! and forgotten at once rather than closed with a FIN nobody may ack. Each
//! connection's buffers are capped by its `Config`. So a SYN flood costs
//! neither memory nor threads beyond those caps.
//!
//! The socket may be shared with the DHT (one UDP port for both, as
//! libtorrent does): a datagram whose first byte is `d` is a bencoded KRPC
//! message (uTP's first byte has version 1 in its low nibble, `d` is 0x64)
//! and goes to the receiver `divert_krpc` returned, if any, else is dropped.

use super::conn::{Config, Conn, End, Outbox};
use super::packet::{decode, Type};
use crate::dht::Fed;
use crate::rng::Rng;
use crate::transport::Transport;
use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Connections one endpoint carries at most.
pub const MAX_CONNECTIONS: usize = 1024;
/// Incoming connections waiting for `accept` at most.
pub const MAX_PENDING: usize = 32;
/// Incoming connections heard only by their SYN at most (accepted or not).
pub const MAX_HALF_OPEN: usize = 64;
/// KRPC datagrams waiting for the DHT thread at most; more are dropped.
const KRPC_QUEUE: usize = 256;
/// How long an accepted connection waits for `accept` before it is
/// dropped (so SYNs that lead nowhere cannot hold the queue).
const PENDING_TIMEOUT_US: u64 = 10_000_000;
/// How often the timers run (and the longest the thread sleeps).
const TICK: Duration = Duration::from_millis(10);
/// Datagrams read in one go before the answers go out.
const DRAIN: usize = 256;
/// The UDP socket's receive buffer we ask for (the kernel caps it).
const SOCKET_RECV_BUFFER: usize = 2 << 20;

struct Slot {
    peer: SocketAddr,
    /// Incoming, and nothing but the SYN heard from the peer yet.
    half_open: AtomicBool,
    state: Mutex<SlotState>,
    cv: Condvar,
}

struct SlotState {
    conn: Conn,
    /// A stream handle exists (or waits in the accept queue).
    attached: bool,
    /// The stream's `Closer` was called: its reads and writes fail with
    /// `ConnectionAborted` (the connection itself is closed as usual when
    /// the stream is dropped).
    aborted: bool,
}

struct Table {
    conns: HashMap<(SocketAddr, u16), Arc<Slot>>,
    /// Accepted, waiting for `accept`, with the time they came.
    pending: VecDeque<(Arc<Slot>, u64)>,
    accepting: bool,
    /// Slots with `half_open` set.
    half_open: usize,
    rng: Rng,
}

impl Table {
    /// Forgets the connection under `key`, keeping the half-open count.
    fn forget(&mut self, key: &(SocketAddr, u16)) {
        if let Some(slot) = self.conns.remove(key) {
            if slot.half_open.swap(false, Ordering::Relaxed) {
                self.half_open -= 1;
            }
        }
    }
}

struct Shared {
    socket: UdpSocket,
    start: Instant,
    cfg: Config,
    table: Mutex<Table>,
    accept_cv: Condvar,
    stop: AtomicBool,
    dropped_syns: AtomicU64,
    /// Where KRPC (DHT) datagrams go when the port is shared.
    krpc: Mutex<Option<crossbeam_channel::Sender<Fed>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Sends every datagram in `out` to `peer` and empties it. A datagram
    /// the socket will not take is lost like any other.
    fn send(&self, out: &mut Outbox, peer: SocketAddr) {
        for d in out.datagrams() {
            if log::log_enabled!(log::Level::Trace) {
                if let Ok(p) = decode(d) {
                    let h = p.header;
                    log::trace!(
                        "utp: out {peer} {:?} id {} seq {} ack {} wnd {} len {}",
                        h.ty,
                        h.conn_id,
                        h.seq_nr,
                        h.ack_nr,
                        h.wnd_size,
                        p.payload.len()
                    );
                }
            }
            for _ in 0..8 {
                match self.socket.send_to(d, peer) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        log::trace!("utp: send to {peer}: {e}");
                        break;
                    }
                    Ok(_) => break,
                }
            }
        }
        out.clear();
    }
}

struct Inner {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A uTP endpoint: one UDP socket and its thread. Cloning shares it; the
/// thread ends when the last clone and the last stream are gone.
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

impl Endpoint {
    /// Binds `addr` and starts the socket thread. The endpoint accepts
    /// incoming connections (see `set_accepting`).
    pub fn bind(addr: SocketAddr) -> io::Result<Endpoint> {
        Endpoint::bind_with(addr, Config::default())
    }

    /// `bind` with the connections' knobs.
    pub fn bind_with(addr: SocketAddr, cfg: Config) -> io::Result<Endpoint> {
        let socket = UdpSocket::bind(addr)?;
        Endpoint::from_socket(socket, cfg)
    }

    /// An endpoint on a socket bound elsewhere (to share a port).
    pub fn from_socket(socket: UdpSocket, cfg: Config) -> io::Result<Endpoint> {
        socket.set_read_timeout(Some(TICK))?;
        // Room for the bursts of many peers while this thread works: the
        // kernel caps it at net.core.rmem_max (often 208 KiB, a no-op).
        let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(SOCKET_RECV_BUFFER);
        let shared = Arc::new(Shared {
            socket,
            start: Instant::now(),
            cfg,
            table: Mutex::new(Table {
                conns: HashMap::new(),
                pending: VecDeque::new(),
                accepting: true,
                half_open: 0,
                rng: Rng::from_entropy(),
            }),
            accept_cv: Condvar::new(),
            stop: AtomicBool::new(false),
            dropped_syns: AtomicU64::new(0),
            krpc: Mutex::new(None),
        });
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("utp".into())
            .spawn(move || run(&for_thread))?;
        Ok(Endpoint {
            inner: Arc::new(Inner {
                shared,
                thread: Some(thread),
            }),
        })
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.shared().socket.local_addr()
    }

    /// Whether incoming SYNs open connections (true after `bind`); when
    /// false they are dropped.
    pub fn set_accepting(&self, on: bool) {
        lock(&self.shared().table).accepting = on;
    }

    /// Connections open now (any state).
    pub fn connections(&self) -> usize {
        lock(&self.shared().table).conns.len()
    }

    /// Incoming connections heard only by their SYN so far.
    pub fn half_open(&self) -> usize {
        lock(&self.shared().table).half_open
    }

    /// A weak handle: it does not keep the endpoint (and its port) alive.
    pub fn downgrade(&self) -> WeakEndpoint {
        WeakEndpoint(Arc::downgrade(&self.inner))
    }

    /// Shares the port with a DHT node: from now on KRPC datagrams (first
    /// byte `d`) arriving here go to the returned receiver (at most
    /// `KRPC_QUEUE` waiting; more are dropped), and the node sends through
    /// the returned handle to the same socket. A later call replaces the
    /// earlier receiver. The handle must not change the socket's modes.
    pub fn divert_krpc(&self) -> io::Result<(UdpSocket, crossbeam_channel::Receiver<Fed>)> {
        let mut krpc = lock(&self.shared().krpc);
        if krpc.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "uTP: the port is shared with a DHT node already",
            ));
        }
        let socket = self.shared().socket.try_clone()?;
        let (tx, rx) = crossbeam_channel::bounded(KRPC_QUEUE);
        *krpc = Some(tx);
        Ok((socket, rx))
    }

    /// Incoming connections waiting for `accept`.
    pub fn pending(&self) -> usize {
        lock(&self.shared().table).pending.len()
    }

    /// SYNs dropped because the caps were reached.
    pub fn dropped_syns(&self) -> u64 {
        self.shared().dropped_syns.load(Ordering::Relaxed)
    }

    /// Opens a connection to `peer`, waiting at most `limit` for its answer.
    pub fn connect(&self, peer: SocketAddr, limit: Duration) -> io::Result<UtpStream> {
        let sh = self.shared();
        let now = sh.now();
        let slot = {
            let mut t = lock(&sh.table);
            if t.conns.len() >= MAX_CONNECTIONS {
                return Err(io::Error::other("uTP: too many connections"));
            }
            let mut id = t.rng.below(1 << 16) as u16;
            while t.conns.contains_key(&(peer, id)) {
                id = t.rng.below(1 << 16) as u16;
            }
            let seq = t.rng.below(1 << 16) as u16;
            let slot = Arc::new(Slot {
                peer,
                half_open: AtomicBool::new(false),
                state: Mutex::new(SlotState {
                    conn: Conn::connect(sh.cfg.clone(), id, seq, now),
                    attached: true,
                    aborted: false,
                }),
                cv: Condvar::new(),
            });
            t.conns.insert((peer, id), Arc::clone(&slot));
            slot
        };
        let mut out = Outbox::default();
        lock(&slot.state).conn.transmit(now, &mut out);
        sh.send(&mut out, peer);
        let deadline = Instant::now() + limit;
        let mut st = lock(&slot.state);
        let result = loop {
            if st.conn.is_connected() {
                break Ok(());
            }
            if let Some(end) = st.conn.end() {
                break Err(match end {
                    End::Reset => io::Error::new(io::ErrorKind::ConnectionRefused, "uTP: refused"),
                    _ => io::Error::new(io::ErrorKind::TimedOut, "uTP: no answer to SYN"),
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "uTP: connect timed out",
                ));
            }
            st = slot
                .cv
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        };
        let id = st.conn.recv_id();
        drop(st);
        match result {
            Ok(()) => Ok(UtpStream::new(self.clone(), slot)),
            Err(e) => {
                lock(&sh.table).forget(&(peer, id));
                Err(e)
            }
        }
    }

    /// The next incoming connection if one is waiting, without waiting.
    pub fn try_accept(&self) -> Option<UtpStream> {
        let slot = lock(&self.shared().table).pending.pop_front()?.0;
        Some(UtpStream::new(self.clone(), slot))
    }

    /// The next incoming connection, waiting for ever.
    pub fn accept(&self) -> io::Result<UtpStream> {
        self.accept_timeout(None)?
            .ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))
    }

    /// The next incoming connection, waiting at most `limit` (`None`: for
    /// ever); `Ok(None)` when none came in time.
    pub fn accept_timeout(&self, limit: Option<Duration>) -> io::Result<Option<UtpStream>> {
        let sh = self.shared();
        let deadline = limit.map(|l| Instant::now() + l);
        let mut t = lock(&sh.table);
        loop {
            if let Some((slot, _)) = t.pending.pop_front() {
                drop(t);
                return Ok(Some(UtpStream::new(self.clone(), slot)));
            }
            t = match deadline {
                None => sh.accept_cv.wait(t).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    sh.accept_cv
                        .wait_timeout(t, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

/// The socket thread.
fn run(sh: &Shared) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Outbox::default();
    let mut dirty: Vec<Arc<Slot>> = Vec::new();
    let mut last_tick = Instant::now();
    while !sh.stop.load(Ordering::Relaxed) {
        match sh.socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                handle(sh, &buf[..n], from, &mut dirty);
                // Read what else is queued before answering, so one ack
                // answers many packets.
                if sh.socket.set_nonblocking(true).is_ok() {
                    for _ in 0..DRAIN {
                        match sh.socket.recv_from(&mut buf) {
                            Ok((n, from)) => handle(sh, &buf[..n], from, &mut dirty),
                            Err(_) => break,
                        }
                    }
                    let _ = sh.socket.set_nonblocking(false);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            // An ICMP error from an earlier send (port unreachable) and the
            // like: nothing to do with this read.
            Err(e) => log::trace!("utp: recv: {e}"),
        }
        let now = sh.now();
        // One wake-up per connection per batch, not one per datagram: the
        // stream handle then reads what the whole batch brought.
        for slot in dirty.drain(..) {
            lock(&slot.state).conn.transmit(now, &mut out);
            slot.cv.notify_all();
            sh.send(&mut out, slot.peer);
        }
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            tick_all(sh, &mut out);
        }
    }
}

fn handle(sh: &Shared, datagram: &[u8], from: SocketAddr, dirty: &mut Vec<Arc<Slot>>) {
    if datagram.first() == Some(&b'd') {
        if let Some(tx) = &*lock(&sh.krpc) {
            let _ = tx.try_send((datagram.to_vec(), from));
        }
        return;
    }
    let Ok(p) = decode(datagram) else {
        return;
    };
    let h = p.header;
    log::trace!(
        "utp: in  {from} {:?} id {} seq {} ack {} wnd {} diff {} len {} sack {:?}",
        h.ty,
        h.conn_id,
        h.seq_nr,
        h.ack_nr,
        h.wnd_size,
        h.timestamp_diff,
        p.payload.len(),
        p.sack
    );
    let id = if h.ty == Type::Syn {
        h.conn_id.wrapping_add(1)
    } else {
        h.conn_id
    };
    let now = sh.now();
    let mut t = lock(&sh.table);
    let slot = match t.conns.get(&(from, id)) {
        Some(s) => Arc::clone(s),
        None if h.ty == Type::Syn => {
            if !t.accepting
                || t.pending.len() >= MAX_PENDING
                || t.half_open >= MAX_HALF_OPEN
                || t.conns.len() >= MAX_CONNECTIONS
            {
                sh.dropped_syns.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let seq = t.rng.below(1 << 16) as u16;
            t.half_open += 1;
            let slot = Arc::new(Slot {
                peer: from,
                half_open: AtomicBool::new(true),
                state: Mutex::new(SlotState {
                    conn: Conn::accept(sh.cfg.clone(), &p, seq, now),
                    attached: true,
                    aborted: false,
                }),
                cv: Condvar::new(),
            });
            t.conns.insert((from, id), Arc::clone(&slot));
            t.pending.push_back((Arc::clone(&slot), now));
            sh.accept_cv.notify_one();
            drop(t);
            dirty.push(slot);
            return;
        }
        None => return,
    };
    if h.ty != Type::Syn && slot.half_open.swap(false, Ordering::Relaxed) {
        t.half_open -= 1;
    }
    drop(t);
    lock(&slot.state).conn.on_packet(&p, now);
    if !dirty.iter().any(|d| Arc::ptr_eq(d, &slot)) {
        dirty.push(slot);
    }
}

/// Runs every connection's timers; forgets those that are finished and
/// have no handle.
fn tick_all(sh: &Shared, out: &mut Outbox) {
    let slots: Vec<((SocketAddr, u16), Arc<Slot>)> = lock(&sh.table)
        .conns
        .iter()
        .map(|(k, s)| (*k, Arc::clone(s)))
        .collect();
    let now = sh.now();
    let mut gone = Vec::new();
    for (key, slot) in slots {
        let mut st = lock(&slot.state);
        st.conn.tick(now);
        st.conn.transmit(now, out);
        if st.conn.end().is_some() || st.conn.eof() {
            slot.cv.notify_all();
        }
        if st.conn.finished(now) && !st.attached {
            gone.push(key);
        }
        drop(st);
        sh.send(out, slot.peer);
    }
    let mut t = lock(&sh.table);
    for key in gone {
        t.forget(&key);
    }
    // Accepted connections nobody took in time, or that died waiting.
    let mut expired = Vec::new();
    while let Some((slot, at)) = t.pending.front() {
        let stale = now >= *at + PENDING_TIMEOUT_US || lock(&slot.state).conn.end().is_some();
        if !stale {
            break;
        }
        let slot = Arc::clone(slot);
        t.pending.pop_front();
        let id = lock(&slot.state).conn.recv_id();
        t.forget(&(slot.peer, id));
        expired.push(slot);
    }
    drop(t);
    for slot in expired {
        let mut st = lock(&slot.state);
        st.attached = false;
        if st.conn.end().is_none() {
            st.conn.reset();
            st.conn.reset_packet(now, out);
        }
        drop(st);
        sh.send(out, slot.peer);
    }
}

/// An endpoint that may be gone (see `Endpoint::downgrade`).
#[derive(Clone)]
pub struct WeakEndpoint(std::sync::Weak<Inner>);

impl WeakEndpoint {
    /// The endpoint, if something still holds it.
    pub fn upgrade(&self) -> Option<Endpoint> {
        self.0.upgrade().map(|inner| Endpoint { inner })
    }
}

/// One uTP connection as a blocking byte stream (a `Transport`).
pub struct UtpStream {
    ep: Endpoint,
    slot: Arc<Slot>,
    read_timeout: Cell<Option<Duration>>,
    write_timeout: Cell<Option<Duration>>,
    nonblocking: Cell<bool>,
    out: Outbox,
}

/// What a read or write of an aborted stream (see `SlotState::aborted`)
/// fails with.
fn aborted() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "uTP: closed by us")
}

fn end_error(end: End) -> io::Error {
    match end {
        End::Reset => io::Error::new(io::ErrorKind::ConnectionReset, "uTP: reset by peer"),
        End::TimedOut => io::Error::new(io::ErrorKind::TimedOut, "uTP: peer stopped answering"),
        End::Closed => io::Error::new(io::ErrorKind::NotConnected, "uTP: closed"),
    }
}

impl UtpStream {
    fn new(ep: Endpoint, slot: Arc<Slot>) -> UtpStream {
        UtpStream {
            ep,
            slot,
            read_timeout: Cell::new(None),
            write_timeout: Cell::new(None),
            nonblocking: Cell::new(false),
            out: Outbox::default(),
        }
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.slot.peer
    }

    /// Waits on the connection's condvar until `deadline` (`None`: for
    /// ever); `WouldBlock` when it passed.
    fn wait<'a>(
        &self,
        st: MutexGuard<'a, SlotState>,
        deadline: Option<Instant>,
    ) -> io::Result<MutexGuard<'a, SlotState>> {
        match deadline {
            None => Ok(self.slot.cv.wait(st).unwrap_or_else(|e| e.into_inner())),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(io::ErrorKind::WouldBlock, "uTP: timed out"));
                }
                Ok(self
                    .slot
                    .cv
                    .wait_timeout(st, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0)
            }
        }
    }

    fn flush_out(&mut self) {
        if !self.out.is_empty() {
            self.ep.shared().send(&mut self.out, self.slot.peer);
        }
    }
}

impl Read for UtpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = self.read_timeout.get().map(|d| Instant::now() + d);
        let slot = Arc::clone(&self.slot);
        let mut st = lock(&slot.state);
        loop {
            if st.aborted {
                return Err(aborted());
            }
            if st.conn.readable_len() > 0 {
                let n = st.conn.read(buf);
                let now = self.ep.shared().now();
                st.conn.transmit(now, &mut self.out);
                drop(st);
                self.flush_out();
                return Ok(n);
            }
            if st.conn.eof() {
                return Ok(0);
            }
            if let Some(end) = st.conn.end() {
                return Err(end_error(end));
            }
            if self.nonblocking.get() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            st = self.wait(st, deadline)?;
        }
    }
}

impl Write for UtpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = self.write_timeout.get().map(|d| Instant::now() + d);
        let slot = Arc::clone(&self.slot);
        let mut st = lock(&slot.state);
        loop {
            if st.aborted {
                return Err(aborted());
            }
            if let Some(end) = st.conn.end() {
                return Err(end_error(end));
            }
            let n = st.conn.write(buf);
            if n > 0 {
                let now = self.ep.shared().now();
                st.conn.transmit(now, &mut self.out);
                drop(st);
                self.flush_out();
                return Ok(n);
            }
            if self.nonblocking.get() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            st = self.wait(st, deadline)?;
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for UtpStream {
    fn set_read_timeout(&self, limit: Option<Duration>) -> io::Result<()> {
        if limit == Some(Duration::ZERO) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "zero timeout"));
        }
        self.read_timeout.set(limit);
        Ok(())
    }

    fn set_write_timeout(&self, limit: Option<Duration>) -> io::Result<()> {
        if limit == Some(Duration::ZERO) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "zero timeout"));
        }
        self.write_timeout.set(limit);
        Ok(())
    }

    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        self.nonblocking.set(on);
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "utp"
    }

    /// Marks the stream aborted and wakes it: a read or write waiting on
    /// the connection fails at once, and so does every later one. Dropping
    /// the stream still closes the connection (FIN) as usual.
    fn closer(&self) -> Option<crate::transport::Closer> {
        let slot = Arc::clone(&self.slot);
        Some(crate::transport::Closer::new(move || {
            lock(&slot.state).aborted = true;
            slot.cv.notify_all();
        }))
    }
}

impl Drop for UtpStream {
    fn drop(&mut self) {
        let slot = Arc::clone(&self.slot);
        let mut st = lock(&slot.state);
        st.attached = false;
        let now = self.ep.shared().now();
        if st.conn.end().is_none() && slot.half_open.load(Ordering::Relaxed) {
            // Nothing heard but a SYN (perhaps forged): no FIN to wait on,
            // forgotten at the next tick.
            st.conn.reset();
            st.conn.reset_packet(now, &mut self.out);
        } else if st.conn.end().is_none() {
            st.conn.close();
            st.conn.transmit(now, &mut self.out);
        }
        drop(st);
        self.flush_out();
    }
}

#[cfg(test)]
mod tests;

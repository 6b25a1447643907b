//! UDP tracker announces (BEP 15).
//!
//! The packet functions are pure: they build request datagrams and check
//! reply datagrams (length, action, transaction id). [`announce`] is the
//! blocking client: it resolves the tracker, obtains a connection id (cached
//! process-wide per tracker address for 60 seconds, behind a `Mutex`), sends
//! the announce and retransmits after 15·2ⁿ seconds (n = 0, 1, … up to 8),
//! never past the caller's overall timeout.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

use crate::dial::Udp;
use crate::socks::Target;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{random_u64, AnnounceRequest, AnnounceResponse, TrackerError, MAX_PEERS_PER_REPLY};

/// The magic constant of a connect request.
pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;
/// Action: connect.
pub const ACTION_CONNECT: u32 = 0;
/// Action: announce.
pub const ACTION_ANNOUNCE: u32 = 1;
/// Action: scrape (not used by us).
pub const ACTION_SCRAPE: u32 = 2;
/// Action: error.
pub const ACTION_ERROR: u32 = 3;
/// How long a connection id may be used after it was received.
pub const CONNECTION_ID_LIFETIME: Duration = Duration::from_secs(60);
/// The first retransmission timeout (BEP 15: 15 · 2ⁿ seconds).
pub const RETRANSMIT_BASE: Duration = Duration::from_secs(15);
/// The largest n in 15 · 2ⁿ.
const MAX_RETRANSMIT_EXPONENT: u32 = 8;
/// Length of a connect request and of a connect reply.
pub const CONNECT_LEN: usize = 16;
/// Length of an announce request (IPv4 form, as BEP 15 defines it).
pub const ANNOUNCE_LEN: usize = 98;
/// Length of an announce reply without peers.
const ANNOUNCE_REPLY_HEADER: usize = 20;
/// The longest error message we keep.
const MAX_ERROR_MESSAGE: usize = 1024;

/// Why a datagram is not the reply we were waiting for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// It carries another transaction id: not an answer to our request.
    WrongTransaction { expected: u32, got: u32 },
    /// The tracker answered with action 3 and this message.
    Tracker(String),
    /// It is too short, has an unexpected action, or its peer list is cut.
    Malformed(String),
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::WrongTransaction { expected, got } => write!(
                f,
                "transaction id {got:#010x} in reply, expected {expected:#010x}"
            ),
            ReplyError::Tracker(message) => write!(f, "tracker error: {message}"),
            ReplyError::Malformed(what) => write!(f, "malformed UDP tracker reply: {what}"),
        }
    }
}

impl std::error::Error for ReplyError {}

impl From<ReplyError> for TrackerError {
    fn from(error: ReplyError) -> TrackerError {
        match error {
            ReplyError::Tracker(message) => TrackerError::Failure(message),
            other => TrackerError::Malformed(other.to_string()),
        }
    }
}

fn be_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

fn be_u64(buf: &[u8], at: usize) -> Option<u64> {
    let bytes = buf.get(at..at.checked_add(8)?)?;
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// The transaction id of a datagram, if it is long enough to carry one.
pub fn transaction_id(datagram: &[u8]) -> Option<u32> {
    be_u32(datagram, 4)
}

/// The action of a reply to transaction `txid`, from its 8-byte header.
fn reply_action(datagram: &[u8], txid: u32) -> Result<u32, ReplyError> {
    let (Some(action), Some(got)) = (be_u32(datagram, 0), be_u32(datagram, 4)) else {
        return Err(ReplyError::Malformed(format!(
            "{} bytes is shorter than the 8-byte header",
            datagram.len()
        )));
    };
    if got != txid {
        return Err(ReplyError::WrongTransaction {
            expected: txid,
            got,
        });
    }
    Ok(action)
}

/// Checks the 8-byte header (action, transaction id) of a reply expected to
/// carry `action`, and that it is at least `min_len` bytes long.
fn check_header(datagram: &[u8], action: u32, txid: u32, min_len: usize) -> Result<(), ReplyError> {
    let got_action = reply_action(datagram, txid)?;
    if got_action == ACTION_ERROR {
        return Err(ReplyError::Tracker(decode_error(datagram, txid)?));
    }
    if got_action != action {
        return Err(ReplyError::Malformed(format!(
            "action {got_action}, expected {action}"
        )));
    }
    if datagram.len() < min_len {
        return Err(ReplyError::Malformed(format!(
            "{} bytes is shorter than the {min_len} bytes of an action {action} reply",
            datagram.len()
        )));
    }
    Ok(())
}

/// A connect request.
pub fn encode_connect_request(txid: u32) -> [u8; CONNECT_LEN] {
    let mut out = [0u8; CONNECT_LEN];
    out[..8].copy_from_slice(&PROTOCOL_ID.to_be_bytes());
    out[8..12].copy_from_slice(&ACTION_CONNECT.to_be_bytes());
    out[12..].copy_from_slice(&txid.to_be_bytes());
    out
}

/// The connection id of a connect reply to transaction `txid`.
pub fn decode_connect_response(datagram: &[u8], txid: u32) -> Result<u64, ReplyError> {
    check_header(datagram, ACTION_CONNECT, txid, CONNECT_LEN)?;
    be_u64(datagram, 8).ok_or_else(|| ReplyError::Malformed("connect reply cut short".into()))
}

/// An announce request (the 98-byte form; `ip` is 0 so the tracker uses the
/// sender's address; `num_want` above `i32::MAX` is sent as -1, "default").
pub fn encode_announce_request(
    connection_id: u64,
    txid: u32,
    req: &AnnounceRequest,
) -> [u8; ANNOUNCE_LEN] {
    let mut out = [0u8; ANNOUNCE_LEN];
    let numwant = i32::try_from(req.numwant).unwrap_or(-1);
    out[0..8].copy_from_slice(&connection_id.to_be_bytes());
    out[8..12].copy_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
    out[12..16].copy_from_slice(&txid.to_be_bytes());
    out[16..36].copy_from_slice(&req.info_hash);
    out[36..56].copy_from_slice(&req.peer_id);
    out[56..64].copy_from_slice(&req.downloaded.to_be_bytes());
    out[64..72].copy_from_slice(&req.left.to_be_bytes());
    out[72..80].copy_from_slice(&req.uploaded.to_be_bytes());
    out[80..84].copy_from_slice(&req.event.udp_code().to_be_bytes());
    // 84..88: IP address, 0 = the sender's
    out[88..92].copy_from_slice(&req.key.to_be_bytes());
    out[92..96].copy_from_slice(&numwant.to_be_bytes());
    out[96..98].copy_from_slice(&req.port.to_be_bytes());
    out
}

/// An announce reply to transaction `txid`. Peers are 6 bytes each from an
/// IPv4 tracker, 18 bytes each when `ipv6` (the tracker was reached over IPv6).
pub fn decode_announce_response(
    datagram: &[u8],
    txid: u32,
    ipv6: bool,
) -> Result<AnnounceResponse, ReplyError> {
    check_header(datagram, ACTION_ANNOUNCE, txid, ANNOUNCE_REPLY_HEADER)?;
    let short = || ReplyError::Malformed("announce reply cut short".into());
    let interval = be_u32(datagram, 8).ok_or_else(short)?;
    let leechers = be_u32(datagram, 12).ok_or_else(short)?;
    let seeders = be_u32(datagram, 16).ok_or_else(short)?;
    let list = datagram.get(ANNOUNCE_REPLY_HEADER..).unwrap_or(&[]);
    let entry = if ipv6 { 18 } else { 6 };
    if list.len() % entry != 0 {
        return Err(ReplyError::Malformed(format!(
            "peer list of {} bytes is not a multiple of {entry}",
            list.len()
        )));
    }
    let mut peers = Vec::new();
    for chunk in list.chunks_exact(entry) {
        if peers.len() >= MAX_PEERS_PER_REPLY {
            break;
        }
        let (ip, port) = chunk.split_at(entry - 2);
        let ip = match (<[u8; 4]>::try_from(ip), <[u8; 16]>::try_from(ip)) {
            (Ok(v4), _) => IpAddr::V4(Ipv4Addr::from(v4)),
            (_, Ok(v6)) => IpAddr::V6(Ipv6Addr::from(v6)),
            _ => continue,
        };
        let port = match *port {
            [a, b] => u16::from_be_bytes([a, b]),
            _ => continue,
        };
        if port != 0 && !ip.is_unspecified() {
            peers.push(SocketAddr::new(ip, port));
        }
    }
    Ok(AnnounceResponse {
        interval: Duration::from_secs(u64::from(interval)),
        min_interval: None,
        peers,
        warning: None,
        tracker_id: None,
        complete: Some(seeders),
        incomplete: Some(leechers),
    })
}

/// The message of an error reply (action 3) to transaction `txid`.
pub fn decode_error(datagram: &[u8], txid: u32) -> Result<String, ReplyError> {
    let action = reply_action(datagram, txid)?;
    if action != ACTION_ERROR {
        return Err(ReplyError::Malformed(format!(
            "action {action}, expected {ACTION_ERROR}"
        )));
    }
    let message = datagram.get(8..).unwrap_or(&[]);
    let message = message.get(..MAX_ERROR_MESSAGE).unwrap_or(message);
    Ok(String::from_utf8_lossy(message)
        .trim_end_matches('\0')
        .to_string())
}

/// Builds a connect reply (for test servers).
pub fn encode_connect_response(txid: u32, connection_id: u64) -> [u8; CONNECT_LEN] {
    let mut out = [0u8; CONNECT_LEN];
    out[0..4].copy_from_slice(&ACTION_CONNECT.to_be_bytes());
    out[4..8].copy_from_slice(&txid.to_be_bytes());
    out[8..16].copy_from_slice(&connection_id.to_be_bytes());
    out
}

/// Builds an announce reply (for test servers); peers of the other address
/// family than the first peer are left out.
pub fn encode_announce_response(
    txid: u32,
    interval: u32,
    leechers: u32,
    seeders: u32,
    peers: &[SocketAddr],
) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(ANNOUNCE_REPLY_HEADER.saturating_add(peers.len().saturating_mul(18)));
    out.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
    out.extend_from_slice(&txid.to_be_bytes());
    out.extend_from_slice(&interval.to_be_bytes());
    out.extend_from_slice(&leechers.to_be_bytes());
    out.extend_from_slice(&seeders.to_be_bytes());
    let v6 = peers.first().is_some_and(|p| p.is_ipv6());
    for peer in peers {
        match peer.ip() {
            IpAddr::V4(ip) if !v6 => out.extend_from_slice(&ip.octets()),
            IpAddr::V6(ip) if v6 => out.extend_from_slice(&ip.octets()),
            _ => continue,
        }
        out.extend_from_slice(&peer.port().to_be_bytes());
    }
    out
}

/// Builds an error reply (for test servers).
pub fn encode_error(txid: u32, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + message.len());
    out.extend_from_slice(&ACTION_ERROR.to_be_bytes());
    out.extend_from_slice(&txid.to_be_bytes());
    out.extend_from_slice(message.as_bytes());
    out
}

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

/// Connection ids per tracker (its address, or behind a proxy its
/// `host:port`): (tracker, id, when received). Process-wide, small, and
/// pruned of expired entries on every use.
static CONNECTION_IDS: Mutex<Vec<(String, u64, Instant)>> = Mutex::new(Vec::new());
const MAX_CACHED_IDS: usize = 64;

fn cache_get(addr: &str, now: Instant) -> Option<(u64, Instant)> {
    let mut cache = CONNECTION_IDS.lock().unwrap_or_else(|e| e.into_inner());
    cache.retain(|(_, _, at)| now.saturating_duration_since(*at) < CONNECTION_ID_LIFETIME);
    cache
        .iter()
        .find(|(a, _, _)| a == addr)
        .map(|(_, id, at)| (*id, *at))
}

fn cache_put(addr: &str, id: u64, at: Instant) {
    let mut cache = CONNECTION_IDS.lock().unwrap_or_else(|e| e.into_inner());
    cache.retain(|(a, _, _)| a != addr);
    if cache.len() >= MAX_CACHED_IDS {
        cache.remove(0);
    }
    cache.push((addr.to_string(), id, at));
}

fn cache_forget(addr: &str) {
    let mut cache = CONNECTION_IDS.lock().unwrap_or_else(|e| e.into_inner());
    cache.retain(|(a, _, _)| a != addr);
}

/// `host` and `port` of a `udp://host:port[/path][?query]` URL.
pub fn parse_url(url: &str) -> Result<(String, u16), TrackerError> {
    let unsupported = || TrackerError::UnsupportedUrl(url.to_string());
    let (scheme, rest) = url.split_once("://").ok_or_else(unsupported)?;
    if !scheme.eq_ignore_ascii_case("udp") {
        return Err(unsupported());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(unsupported)?;
        (host, after.strip_prefix(':').ok_or_else(unsupported)?)
    } else {
        authority.rsplit_once(':').ok_or_else(unsupported)?
    };
    let port: u16 = port.parse().map_err(|_| unsupported())?;
    if host.is_empty() || port == 0 {
        return Err(unsupported());
    }
    Ok((host.to_string(), port))
}

/// How an exchange of one request ended without a reply.
enum Exchange<T> {
    Reply(T),
    /// The connection id expired while retransmitting: reconnect.
    Expired,
}

/// Sends `packet` to `to` and waits for the reply to `txid`, retransmitting
/// after base · 2ⁿ, until `deadline`. Datagrams from another address than
/// `to` (directly; through a proxy's relay the source it reports is not
/// checked: the transaction id is), too short to carry a transaction id or
/// carrying another one are ignored. `decode` gets the reply and its
/// source. With `valid_until`, stops retransmitting when that instant has
/// passed.
#[allow(clippy::too_many_arguments)]
fn exchange<T>(
    socket: &Udp,
    to: Target<'_>,
    packet: &[u8],
    txid: u32,
    base: Duration,
    deadline: Instant,
    valid_until: Option<Instant>,
    buf: &mut [u8],
    decode: impl Fn(&[u8], SocketAddr) -> Result<T, ReplyError>,
) -> Result<Exchange<T>, TrackerError> {
    let io = |what: &str, e: std::io::Error| TrackerError::Io(format!("{what} {to}: {e}"));
    let mut n = 0u32;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(TrackerError::Timeout);
        }
        if valid_until.is_some_and(|v| now >= v) {
            return Ok(Exchange::Expired);
        }
        log::trace!("tracker: UDP send {} bytes to {to} (try {n})", packet.len());
        socket
            .send_to_target(packet, to)
            .map_err(|e| io("send to", e))?;
        let wait = base.saturating_mul(1u32 << n.min(MAX_RETRANSMIT_EXPONENT));
        let wait_until = super::later(now, wait).min(deadline);
        loop {
            let now = Instant::now();
            let left = wait_until.saturating_duration_since(now);
            if left.is_zero() {
                break;
            }
            socket
                .set_read_timeout(Some(left))
                .map_err(|e| io("set timeout on socket for", e))?;
            match socket.recv_from(buf) {
                Ok((len, from)) => {
                    let datagram = buf.get(..len).unwrap_or(&[]);
                    let stranger = match to {
                        Target::Addr(a) if !socket.relayed() => from != a,
                        _ => false,
                    };
                    if stranger || transaction_id(datagram) != Some(txid) {
                        log::trace!(
                            "tracker: ignoring a {len}-byte datagram from {from} (not ours)"
                        );
                        continue;
                    }
                    return decode(datagram, from)
                        .map(Exchange::Reply)
                        .map_err(TrackerError::from);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io("receive from", e)),
            }
        }
        n = n.saturating_add(1);
    }
}

/// Announces once to a `udp://host:port` tracker, giving up after `timeout`.
pub fn announce(
    url: &str,
    req: &AnnounceRequest,
    timeout: Duration,
) -> Result<AnnounceResponse, TrackerError> {
    announce_with(url, req, timeout, RETRANSMIT_BASE)
}

/// [`announce`] with another retransmission base (tests use milliseconds).
pub(crate) fn announce_with(
    url: &str,
    req: &AnnounceRequest,
    timeout: Duration,
    base: Duration,
) -> Result<AnnounceResponse, TrackerError> {
    let start = Instant::now();
    let deadline = super::later(start, timeout);
    let (host, port) = parse_url(url)?;
    // Behind a proxy: through its UDP relay, the host name resolved by the
    // proxy (no DNS query leaves here). Else from `--bind`'s address when
    // given (crate::dial), to the address the name resolves to.
    let (socket, to) = if crate::dial::proxied() {
        let to = match host.parse::<IpAddr>() {
            Ok(ip) => Target::Addr(SocketAddr::new(ip, port)),
            Err(_) => Target::Name(&host, port),
        };
        let socket = Udp::through_proxy(timeout)
            .map_err(|e| TrackerError::Io(format!("UDP to {to}: {e}")))?;
        (socket, to)
    } else {
        let addr = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| TrackerError::Io(format!("cannot resolve {host}:{port}: {e}")))?
            .next()
            .ok_or_else(|| TrackerError::Io(format!("{host}:{port} resolves to no address")))?;
        let socket = Udp::open(addr.is_ipv6(), 0, timeout)
            .map_err(|e| TrackerError::Io(format!("no local address of {addr}'s family: {e}")))?;
        // Connected: the system drops datagrams from others and reports a
        // closed port.
        socket
            .connect(addr)
            .map_err(|e| TrackerError::Io(format!("connect to {addr}: {e}")))?;
        (socket, Target::Addr(addr))
    };
    let key = to.to_string();
    let addr = &key;
    let mut buf = vec![0u8; 65_536];
    // A cached id that the tracker rejects earns one fresh connect.
    let mut fresh_connect_tried = false;
    loop {
        let (connection_id, obtained_at, cached) = match cache_get(addr, Instant::now()) {
            Some((id, at)) => (id, at, true),
            None => {
                let txid = random_u64() as u32;
                let packet = encode_connect_request(txid);
                log::debug!("tracker: UDP connect to {to}");
                let id = match exchange(
                    &socket,
                    to,
                    &packet,
                    txid,
                    base,
                    deadline,
                    None,
                    &mut buf,
                    |d, _| decode_connect_response(d, txid),
                ) {
                    Ok(Exchange::Reply(id)) => id,
                    Ok(Exchange::Expired) => continue,
                    Err(e) => return Err(e),
                };
                let now = Instant::now();
                cache_put(addr, id, now);
                (id, now, false)
            }
        };
        let txid = random_u64() as u32;
        let packet = encode_announce_request(connection_id, txid, req);
        let valid_until = super::later(obtained_at, CONNECTION_ID_LIFETIME);
        let result = exchange(
            &socket,
            to,
            &packet,
            txid,
            base,
            deadline,
            Some(valid_until),
            &mut buf,
            // BEP 15: the peer list's format follows the tracker's family.
            |d, from| decode_announce_response(d, txid, crate::dial::is_v6(from.ip())),
        );
        match result {
            Ok(Exchange::Reply(response)) => return Ok(response),
            Ok(Exchange::Expired) => {
                cache_forget(addr);
            }
            Err(TrackerError::Failure(message)) if cached && !fresh_connect_tried => {
                log::debug!(
                    "tracker: {addr} refused a cached connection id ({message}); reconnecting"
                );
                cache_forget(addr);
                fresh_connect_tried = true;
            }
            Err(e) => {
                cache_forget(addr);
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::Event;
    use std::net::UdpSocket;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::thread;

    fn request() -> AnnounceRequest {
        AnnounceRequest {
            info_hash: [0xaa; 20],
            peer_id: [0xbb; 20],
            port: 0x1ae1,
            uploaded: 3,
            downloaded: 1,
            left: 2,
            event: Event::Started,
            numwant: 50,
            key: 0x0102_0304,
            tracker_id: None,
            ipv6: None,
        }
    }

    #[test]
    fn connect_request_layout() {
        let p = encode_connect_request(0x1122_3344);
        assert_eq!(&p[..8], &[0, 0, 0x04, 0x17, 0x27, 0x10, 0x19, 0x80]);
        assert_eq!(&p[8..12], &[0, 0, 0, 0]);
        assert_eq!(&p[12..], &[0x11, 0x22, 0x33, 0x44]);
    }

    #[test]
    fn connect_response_round_trip_and_checks() {
        let p = encode_connect_response(7, 0xdead_beef_0000_0001);
        assert_eq!(decode_connect_response(&p, 7), Ok(0xdead_beef_0000_0001));
        assert_eq!(
            decode_connect_response(&p, 8),
            Err(ReplyError::WrongTransaction {
                expected: 8,
                got: 7
            })
        );
        assert!(matches!(
            decode_connect_response(&p[..15], 7),
            Err(ReplyError::Malformed(m)) if m.contains("15 bytes")
        ));
        assert!(matches!(
            decode_connect_response(&p[..5], 7),
            Err(ReplyError::Malformed(m)) if m.contains("8-byte header")
        ));
        let mut wrong = p;
        wrong[3] = 1;
        assert!(matches!(
            decode_connect_response(&wrong, 7),
            Err(ReplyError::Malformed(m)) if m.contains("action 1, expected 0")
        ));
        assert_eq!(
            decode_connect_response(&encode_error(7, "go away"), 7),
            Err(ReplyError::Tracker("go away".into()))
        );
    }

    #[test]
    fn announce_request_layout() {
        let p = encode_announce_request(0x0102_0304_0506_0708, 0x0a0b_0c0d, &request());
        assert_eq!(p.len(), 98);
        assert_eq!(&p[0..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&p[8..12], &[0, 0, 0, 1]);
        assert_eq!(&p[12..16], &[0x0a, 0x0b, 0x0c, 0x0d]);
        assert_eq!(&p[16..36], &[0xaa; 20]);
        assert_eq!(&p[36..56], &[0xbb; 20]);
        assert_eq!(&p[56..64], &1u64.to_be_bytes()); // downloaded
        assert_eq!(&p[64..72], &2u64.to_be_bytes()); // left
        assert_eq!(&p[72..80], &3u64.to_be_bytes()); // uploaded
        assert_eq!(&p[80..84], &2u32.to_be_bytes()); // started
        assert_eq!(&p[84..88], &[0, 0, 0, 0]);
        assert_eq!(&p[88..92], &[1, 2, 3, 4]);
        assert_eq!(&p[92..96], &50i32.to_be_bytes());
        assert_eq!(&p[96..98], &[0x1a, 0xe1]);
        let mut req = request();
        req.numwant = u32::MAX;
        req.event = Event::Stopped;
        let p = encode_announce_request(0, 0, &req);
        assert_eq!(&p[92..96], &(-1i32).to_be_bytes());
        assert_eq!(&p[80..84], &3u32.to_be_bytes());
    }

    #[test]
    fn announce_response_ipv4() {
        let peers: Vec<SocketAddr> = vec![
            "127.0.0.1:6881".parse().unwrap(),
            "10.0.0.9:1".parse().unwrap(),
        ];
        let p = encode_announce_response(5, 1800, 3, 4, &peers);
        assert_eq!(p.len(), 20 + 12);
        let r = decode_announce_response(&p, 5, false).unwrap();
        assert_eq!(r.interval, Duration::from_secs(1800));
        assert_eq!(r.incomplete, Some(3));
        assert_eq!(r.complete, Some(4));
        assert_eq!(r.peers, peers);
        assert_eq!(r.min_interval, None);
    }

    #[test]
    fn announce_response_ipv6() {
        let peers: Vec<SocketAddr> = vec![
            "[::1]:6881".parse().unwrap(),
            "[2001:db8::2]:9".parse().unwrap(),
        ];
        let p = encode_announce_response(5, 60, 0, 0, &peers);
        assert_eq!(p.len(), 20 + 36);
        assert_eq!(decode_announce_response(&p, 5, true).unwrap().peers, peers);
        // Read as IPv4 the 36 bytes are 6 entries of garbage, but a multiple of 6.
        assert!(decode_announce_response(&p, 5, false).is_ok());
    }

    #[test]
    fn announce_response_checks() {
        let peers: Vec<SocketAddr> = vec!["127.0.0.1:6881".parse().unwrap()];
        let p = encode_announce_response(5, 60, 0, 0, &peers);
        assert_eq!(
            decode_announce_response(&p, 6, false),
            Err(ReplyError::WrongTransaction {
                expected: 6,
                got: 5
            })
        );
        assert!(matches!(
            decode_announce_response(&p[..19], 5, false),
            Err(ReplyError::Malformed(m)) if m.contains("19 bytes")
        ));
        assert!(matches!(
            decode_announce_response(&p[..25], 5, false),
            Err(ReplyError::Malformed(m)) if m.contains("not a multiple of 6")
        ));
        assert!(matches!(
            decode_announce_response(&p, 5, true),
            Err(ReplyError::Malformed(m)) if m.contains("not a multiple of 18")
        ));
        let connect = encode_connect_response(5, 1);
        assert!(matches!(
            decode_announce_response(&connect, 5, false),
            Err(ReplyError::Malformed(m)) if m.contains("action 0, expected 1")
        ));
        assert_eq!(
            decode_announce_response(&encode_error(5, "unregistered torrent"), 5, false),
            Err(ReplyError::Tracker("unregistered torrent".into()))
        );
    }

    #[test]
    fn announce_response_drops_port_zero_and_caps() {
        let peers: Vec<SocketAddr> = vec![
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.2:1".parse().unwrap(),
        ];
        let p = encode_announce_response(1, 60, 0, 0, &peers);
        assert_eq!(
            decode_announce_response(&p, 1, false).unwrap().peers,
            vec!["127.0.0.2:1".parse::<SocketAddr>().unwrap()]
        );
        let many: Vec<SocketAddr> = (0..MAX_PEERS_PER_REPLY + 5)
            .map(|i| SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 1)))
            .collect();
        let p = encode_announce_response(1, 60, 0, 0, &many);
        assert_eq!(
            decode_announce_response(&p, 1, false).unwrap().peers.len(),
            MAX_PEERS_PER_REPLY
        );
    }

    #[test]
    fn error_packet() {
        let p = encode_error(9, "bad\0");
        assert_eq!(decode_error(&p, 9), Ok("bad".into()));
        assert_eq!(
            decode_error(&p, 1),
            Err(ReplyError::WrongTransaction {
                expected: 1,
                got: 9
            })
        );
        assert!(matches!(
            decode_error(&p[..3], 9),
            Err(ReplyError::Malformed(_))
        ));
        assert!(matches!(
            decode_error(&encode_connect_response(9, 0), 9),
            Err(ReplyError::Malformed(m)) if m.contains("action 0, expected 3")
        ));
        assert_eq!(decode_error(&encode_error(2, ""), 2), Ok(String::new()));
        let long = "x".repeat(5000);
        assert_eq!(
            decode_error(&encode_error(2, &long), 2).unwrap().len(),
            MAX_ERROR_MESSAGE
        );
    }

    #[test]
    fn reply_errors_map_to_tracker_errors() {
        assert_eq!(
            TrackerError::from(ReplyError::Tracker("x".into())),
            TrackerError::Failure("x".into())
        );
        assert!(matches!(
            TrackerError::from(ReplyError::Malformed("cut".into())),
            TrackerError::Malformed(m) if m.contains("cut")
        ));
        assert!(!ReplyError::WrongTransaction {
            expected: 1,
            got: 2
        }
        .to_string()
        .contains('\n'));
    }

    #[test]
    fn transaction_id_needs_eight_bytes() {
        assert_eq!(transaction_id(&[0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(transaction_id(&[0, 0, 0, 0, 0, 0, 1, 2]), Some(0x0102));
    }

    #[test]
    fn url_parsing() {
        assert_eq!(
            parse_url("udp://tracker.example:6969/announce"),
            Ok(("tracker.example".into(), 6969))
        );
        assert_eq!(
            parse_url("UDP://127.0.0.1:80"),
            Ok(("127.0.0.1".into(), 80))
        );
        assert_eq!(parse_url("udp://[::1]:1337?x=1"), Ok(("::1".into(), 1337)));
        for bad in [
            "udp://host",
            "udp://host:0",
            "udp://host:99999",
            "udp://:80",
            "udp://[::1]",
            "http://host:80",
            "host:80",
        ] {
            assert_eq!(
                parse_url(bad),
                Err(TrackerError::UnsupportedUrl(bad.into())),
                "{bad}"
            );
        }
    }

    // --- client round trips against an in-test UDP server -------------------

    /// What the in-test server does with one datagram.
    type Behaviour = dyn Fn(usize, &[u8]) -> Vec<Vec<u8>> + Send;

    /// A UDP server on 127.0.0.1 that answers each datagram with the packets
    /// `behaviour(nth datagram, datagram)` returns; it stops after `max`
    /// datagrams or 5 s of silence. Returns the URL and the datagram counter.
    fn server(max: usize, behaviour: Box<Behaviour>) -> (String, Arc<AtomicUsize>) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let url = format!("udp://{}/announce", socket.local_addr().unwrap());
        let count = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&count);
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        thread::spawn(move || {
            let mut buf = [0u8; 2048];
            for nth in 0..max {
                let Ok((len, from)) = socket.recv_from(&mut buf) else {
                    return;
                };
                seen.fetch_add(1, Ordering::SeqCst);
                for reply in behaviour(nth, &buf[..len]) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        (url, count)
    }

    /// The transaction id of a request datagram (bytes 12..16).
    fn request_txid(datagram: &[u8]) -> u32 {
        be_u32(datagram, 12).unwrap_or(0)
    }

    /// A well-behaved tracker reply to `datagram`.
    fn answer(datagram: &[u8]) -> Vec<u8> {
        let txid = request_txid(datagram);
        if datagram.len() == 16 {
            encode_connect_response(txid, 0x4242).to_vec()
        } else {
            assert_eq!(&datagram[0..8], &0x4242u64.to_be_bytes());
            encode_announce_response(txid, 900, 1, 2, &["127.0.0.1:7000".parse().unwrap()])
        }
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn udp_round_trip() {
        let (url, count) = server(10, Box::new(|_, d| vec![answer(d)]));
        let r = announce_with(&url, &request(), Duration::from_secs(5), 50 * MS).unwrap();
        assert_eq!(r.interval, Duration::from_secs(900));
        assert_eq!(
            r.peers,
            vec!["127.0.0.1:7000".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!((r.complete, r.incomplete), (Some(2), Some(1)));
        assert_eq!(count.load(Ordering::SeqCst), 2);
        // The connection id is cached: the second announce skips connect.
        let r = crate::tracker::announce(&url, &request(), Duration::from_secs(5)).unwrap();
        assert_eq!(r.peers.len(), 1);
        assert_eq!(count.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn udp_wrong_transaction_id_is_ignored() {
        let (url, _) = server(
            10,
            Box::new(|_, d| {
                let mut wrong = answer(d);
                wrong[7] ^= 0xff;
                vec![wrong, vec![1, 2, 3], answer(d)]
            }),
        );
        let r = announce_with(&url, &request(), Duration::from_secs(5), 50 * MS).unwrap();
        assert_eq!(r.peers.len(), 1);
    }

    #[test]
    fn udp_lost_packets_are_retransmitted() {
        // Drops the first connect and the first announce.
        let (url, count) = server(
            10,
            Box::new(|nth, d| {
                if nth == 0 || nth == 2 {
                    vec![]
                } else {
                    vec![answer(d)]
                }
            }),
        );
        let r = announce_with(&url, &request(), Duration::from_secs(5), 30 * MS).unwrap();
        assert_eq!(r.peers.len(), 1);
        assert_eq!(count.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn udp_silent_tracker_times_out_within_the_callers_timeout() {
        let (url, count) = server(100, Box::new(|_, _| vec![]));
        let t = Instant::now();
        let result = announce_with(&url, &request(), 400 * MS, 50 * MS);
        let elapsed = t.elapsed();
        assert_eq!(result, Err(TrackerError::Timeout));
        assert!(elapsed >= 400 * MS && elapsed < 900 * MS, "{elapsed:?}");
        // sent at 0, 50, 150 (then 350 waits past the deadline): 4 sends
        let sends = count.load(Ordering::SeqCst);
        assert!((3..=4).contains(&sends), "{sends}");
    }

    #[test]
    fn udp_error_action_is_a_failure() {
        let (url, _) = server(
            10,
            Box::new(|_, d| {
                let txid = request_txid(d);
                if d.len() == 16 {
                    vec![encode_connect_response(txid, 0x4242).to_vec()]
                } else {
                    vec![encode_error(txid, "torrent not registered")]
                }
            }),
        );
        assert_eq!(
            announce_with(&url, &request(), Duration::from_secs(5), 50 * MS),
            Err(TrackerError::Failure("torrent not registered".into()))
        );
    }

    #[test]
    fn udp_rejected_cached_id_reconnects_once() {
        // Connect replies always work; the first announce is refused (as if the
        // tracker restarted), the second one answered.
        let (url, count) = server(
            10,
            Box::new(|nth, d| {
                let txid = request_txid(d);
                if nth == 3 {
                    vec![encode_error(txid, "connection id mismatch")]
                } else {
                    vec![answer(d)]
                }
            }),
        );
        let req = request();
        // 0: connect, 1: announce; the id is now cached
        assert!(announce_with(&url, &req, Duration::from_secs(5), 50 * MS).is_ok());
        // 2: announce with the cached id
        assert!(announce_with(&url, &req, Duration::from_secs(5), 50 * MS).is_ok());
        // 3: announce with the cached id -> error; 4: connect; 5: announce
        assert!(announce_with(&url, &req, Duration::from_secs(5), 50 * MS).is_ok());
        assert_eq!(count.load(Ordering::SeqCst), 6);
    }

    #[test]
    fn udp_malformed_reply_with_our_id_fails() {
        let (url, _) = server(
            10,
            Box::new(|_, d| {
                let mut r = answer(d);
                if d.len() != 16 {
                    r.push(0); // 7 bytes of peers
                }
                vec![r]
            }),
        );
        assert!(matches!(
            announce_with(&url, &request(), Duration::from_secs(5), 50 * MS),
            Err(TrackerError::Malformed(m)) if m.contains("multiple of 6")
        ));
    }

    #[test]
    fn udp_closed_port_is_an_io_error() {
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("udp://127.0.0.1:{port}");
        match announce_with(&url, &request(), Duration::from_secs(2), 100 * MS) {
            Err(TrackerError::Io(m)) => assert!(m.contains(&format!("127.0.0.1:{port}")), "{m}"),
            // Some systems do not report ICMP port unreachable: then it times out.
            Err(TrackerError::Timeout) => {}
            other => panic!("expected Io, got {other:?}"),
        }
    }

    #[test]
    fn udp_against_the_test_tracker() {
        let tracker = crate::tracker::test_tracker::TestUdpTracker::start();
        let mut a = request();
        a.port = 1000;
        let r = crate::tracker::announce(&tracker.url, &a, Duration::from_secs(5)).unwrap();
        assert!(r.peers.is_empty());
        assert_eq!(r.interval, Duration::from_secs(60));
        let mut b = request();
        b.port = 2000;
        b.peer_id = [0xcc; 20];
        let r = crate::tracker::announce(&tracker.url, &b, Duration::from_secs(5)).unwrap();
        assert_eq!(
            r.peers,
            vec!["127.0.0.1:1000".parse::<SocketAddr>().unwrap()]
        );
        a.event = Event::Stopped;
        crate::tracker::announce(&tracker.url, &a, Duration::from_secs(5)).unwrap();
        assert_eq!(
            tracker.peers(&[0xaa; 20]),
            vec!["127.0.0.1:2000".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(tracker.announces(), 3);
        // One connect: the connection id was cached for the later announces.
        assert_eq!(tracker.connects(), 1);
    }
}

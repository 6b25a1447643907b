//! HTTP(S) tracker announces: BEP 3 requests, BEP 23 compact peers, BEP 7
//! `peers6`, read with ureq under a time limit and a byte limit.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::{
    AnnounceRequest, AnnounceResponse, TrackerError, MAX_HTTP_REPLY_BYTES, MAX_PEERS_PER_REPLY,
};
use crate::bencode::{self, Value};

const USER_AGENT: &str = concat!("tget/", env!("CARGO_PKG_VERSION"));

/// Appends `bytes` to `out`, keeping RFC 3986 unreserved characters and
/// writing every other byte as `%XX`.
fn push_escaped(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// The full announce URL: `base` plus the BEP 3 query parameters.
///
/// `info_hash`, `peer_id` and `trackerid` are escaped byte by byte; `compact=1`
/// is always asked for; `event` is left out for [`super::Event::None`]. A base
/// that already has a query gets the parameters after an `&`.
pub fn build_url(base: &str, req: &AnnounceRequest) -> String {
    // A fragment is never sent to the server.
    let base = base.split('#').next().unwrap_or(base);
    let mut url = String::with_capacity(base.len() + 200);
    url.push_str(base);
    if !base.contains('?') {
        url.push('?');
    } else if !base.ends_with('?') && !base.ends_with('&') {
        url.push('&');
    }
    url.push_str("info_hash=");
    push_escaped(&mut url, &req.info_hash);
    url.push_str("&peer_id=");
    push_escaped(&mut url, &req.peer_id);
    let _ = write!(
        url,
        "&port={}&uploaded={}&downloaded={}&left={}&compact=1&numwant={}&key={:08x}",
        req.port, req.uploaded, req.downloaded, req.left, req.numwant, req.key
    );
    if let Some(event) = req.event.as_str() {
        url.push_str("&event=");
        url.push_str(event);
    }
    if let Some(id) = &req.tracker_id {
        url.push_str("&trackerid=");
        push_escaped(&mut url, id.as_bytes());
    }
    // BEP 7: our IPv6 address, so a tracker we reach over IPv4 can hand it
    // to IPv6 peers (the colons escaped).
    if let Some(ip) = req.ipv6 {
        url.push_str("&ipv6=");
        push_escaped(&mut url, ip.to_string().as_bytes());
    }
    url
}

fn malformed(what: String) -> TrackerError {
    TrackerError::Malformed(what)
}

/// An optional string field (lossy UTF-8).
fn opt_string(dict: &BTreeMap<Vec<u8>, Value>, key: &str) -> Result<Option<String>, TrackerError> {
    match dict.get(key.as_bytes()) {
        None => Ok(None),
        Some(value) => match value.as_bytes() {
            Some(bytes) => Ok(Some(String::from_utf8_lossy(bytes).into_owned())),
            None => Err(malformed(format!("field '{key}' is not a string"))),
        },
    }
}

/// An optional non-negative integer field.
fn opt_uint(dict: &BTreeMap<Vec<u8>, Value>, key: &str) -> Result<Option<u64>, TrackerError> {
    match dict.get(key.as_bytes()) {
        None => Ok(None),
        Some(value) => match value.as_int() {
            Some(n) => u64::try_from(n)
                .map(Some)
                .map_err(|_| malformed(format!("field '{key}' is negative ({n})"))),
            None => Err(malformed(format!("field '{key}' is not an integer"))),
        },
    }
}

/// Keeps a peer unless its port is 0 or its address is unspecified.
fn keep(peers: &mut Vec<SocketAddr>, addr: SocketAddr) {
    if addr.port() != 0 && !addr.ip().is_unspecified() && peers.len() < MAX_PEERS_PER_REPLY {
        peers.push(addr);
    }
}

/// BEP 23 compact IPv4 peers: 6 bytes each.
fn compact_v4(bytes: &[u8], peers: &mut Vec<SocketAddr>) -> Result<(), TrackerError> {
    if bytes.len() % 6 != 0 {
        return Err(malformed(format!(
            "field 'peers' is {} bytes, not a multiple of 6",
            bytes.len()
        )));
    }
    for chunk in bytes.chunks_exact(6) {
        if let [a, b, c, d, p0, p1] = *chunk {
            let ip = Ipv4Addr::new(a, b, c, d);
            keep(
                peers,
                SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([p0, p1])),
            );
        }
    }
    Ok(())
}

/// BEP 7 compact IPv6 peers: 18 bytes each.
fn compact_v6(bytes: &[u8], peers: &mut Vec<SocketAddr>) -> Result<(), TrackerError> {
    if bytes.len() % 18 != 0 {
        return Err(malformed(format!(
            "field 'peers6' is {} bytes, not a multiple of 18",
            bytes.len()
        )));
    }
    for chunk in bytes.chunks_exact(18) {
        let (ip, port) = chunk.split_at(16);
        if let (Ok(ip), Ok(port)) = (<[u8; 16]>::try_from(ip), <[u8; 2]>::try_from(port)) {
            let ip = Ipv6Addr::from(ip);
            keep(
                peers,
                SocketAddr::new(IpAddr::V6(ip), u16::from_be_bytes(port)),
            );
        }
    }
    Ok(())
}

/// The original BEP 3 form: a list of dictionaries with `ip` and `port`.
fn dict_peers(list: &[Value], peers: &mut Vec<SocketAddr>) -> Result<(), TrackerError> {
    for (i, entry) in list.iter().enumerate() {
        let Some(dict) = entry.as_dict() else {
            return Err(malformed(format!(
                "field 'peers' entry {i} is not a dictionary"
            )));
        };
        let ip = match dict.get(b"ip".as_slice()) {
            Some(value) => match value.as_bytes() {
                Some(bytes) => bytes,
                None => {
                    return Err(malformed(format!(
                        "field 'peers' entry {i}: 'ip' is not a string"
                    )))
                }
            },
            None => return Err(malformed(format!("field 'peers' entry {i} has no 'ip'"))),
        };
        let port = match dict.get(b"port".as_slice()) {
            Some(value) => match value.as_int() {
                Some(port) => u16::try_from(port).map_err(|_| {
                    malformed(format!(
                        "field 'peers' entry {i}: 'port' {port} is out of range"
                    ))
                })?,
                None => {
                    return Err(malformed(format!(
                        "field 'peers' entry {i}: 'port' is not an integer"
                    )))
                }
            },
            None => return Err(malformed(format!("field 'peers' entry {i} has no 'port'"))),
        };
        match std::str::from_utf8(ip)
            .ok()
            .and_then(|s| s.parse::<IpAddr>().ok())
        {
            Some(ip) => keep(peers, SocketAddr::new(ip, port)),
            // A host name: we do not resolve names from tracker replies.
            None => log::debug!(
                "tracker: skipping peer entry {i} with a non-numeric ip {:?}",
                String::from_utf8_lossy(ip)
            ),
        }
    }
    Ok(())
}

/// Parses a bencoded announce reply.
///
/// A `failure reason` gives [`TrackerError::Failure`]; a body that is not
/// bencode, not a dictionary, lacks `interval` or `peers`/`peers6`, or has a
/// field of the wrong type gives [`TrackerError::Malformed`] naming the field.
pub fn parse_response(body: &[u8]) -> Result<AnnounceResponse, TrackerError> {
    let value = bencode::decode(body).map_err(|e| malformed(format!("not bencode: {e}")))?;
    let Some(dict) = value.as_dict() else {
        return Err(malformed("the reply is not a dictionary".to_string()));
    };
    if let Some(reason) = opt_string(dict, "failure reason")? {
        return Err(TrackerError::Failure(reason));
    }
    let warning = opt_string(dict, "warning message")?;
    let interval = opt_uint(dict, "interval")?
        .ok_or_else(|| malformed("missing field 'interval'".to_string()))?;
    let min_interval = opt_uint(dict, "min interval")?.map(Duration::from_secs);
    let tracker_id = opt_string(dict, "tracker id")?;
    let count = |key| -> Result<Option<u32>, TrackerError> {
        Ok(opt_uint(dict, key)?.map(|n| u32::try_from(n).unwrap_or(u32::MAX)))
    };
    let complete = count("complete")?;
    let incomplete = count("incomplete")?;

    let mut peers = Vec::new();
    let v4 = dict.get(b"peers".as_slice());
    let v6 = dict.get(b"peers6".as_slice());
    if v4.is_none() && v6.is_none() {
        return Err(malformed("missing field 'peers'".to_string()));
    }
    match v4 {
        None => {}
        Some(Value::Bytes(bytes)) => compact_v4(bytes, &mut peers)?,
        Some(Value::List(list)) => dict_peers(list, &mut peers)?,
        Some(_) => {
            return Err(malformed(
                "field 'peers' is neither a string nor a list".to_string(),
            ))
        }
    }
    match v6 {
        None => {}
        Some(Value::Bytes(bytes)) => compact_v6(bytes, &mut peers)?,
        Some(_) => return Err(malformed("field 'peers6' is not a string".to_string())),
    }
    Ok(AnnounceResponse {
        interval: Duration::from_secs(interval),
        min_interval,
        peers,
        warning,
        tracker_id,
        complete,
        incomplete,
    })
}

/// Maps a ureq error to ours, naming the tracker URL.
fn map_error(error: ureq::Error, url: &str) -> TrackerError {
    match error {
        ureq::Error::Timeout(_) => TrackerError::Timeout,
        ureq::Error::Io(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) =>
        {
            TrackerError::Timeout
        }
        ureq::Error::Io(e) => TrackerError::Io(format!("{url}: {e}")),
        ureq::Error::HostNotFound => TrackerError::Io(format!("{url}: host not found")),
        ureq::Error::BadUri(e) => TrackerError::UnsupportedUrl(format!("{url} ({e})")),
        ureq::Error::BodyExceedsLimit(_) => malformed(format!(
            "the reply from {url} is longer than {MAX_HTTP_REPLY_BYTES} bytes"
        )),
        other => TrackerError::Http(format!("{url}: {other}")),
    }
}

/// Announces once to an `http://` or `https://` tracker.
///
/// ureq sends the URL from [`build_url`] as it is (no re-escaping), follows a
/// bounded number of redirects, and the whole exchange, body included, must
/// end within `timeout`. At most [`MAX_HTTP_REPLY_BYTES`] are read. A reply
/// with a non-2xx status is still read for a `failure reason`.
pub fn announce(
    url: &str,
    req: &AnnounceRequest,
    timeout: Duration,
) -> Result<AnnounceResponse, TrackerError> {
    let full = build_url(url, req);
    log::trace!("tracker: GET {full}");
    let response = crate::dial::http_agent()
        .get(full.as_str())
        .config()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .user_agent(USER_AGENT)
        .build()
        .call()
        .map_err(|e| map_error(e, url))?;
    let status = response.status();
    let body = response
        .into_body()
        .into_with_config()
        .limit(MAX_HTTP_REPLY_BYTES as u64)
        .read_to_vec()
        .map_err(|e| map_error(e, url))?;
    match parse_response(&body) {
        Err(TrackerError::Failure(reason)) => Err(TrackerError::Failure(reason)),
        _ if !status.is_success() => Err(TrackerError::Http(format!("{url}: status {status}"))),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::Event;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::thread;
    use std::time::Instant;

    fn request() -> AnnounceRequest {
        AnnounceRequest {
            info_hash: *b"\x12\x34\x56\x78\x9a\x00 AZaz09-._~%&/",
            peer_id: *b"-TG0001-abcdefghijkl",
            port: 6881,
            uploaded: 10,
            downloaded: 20,
            left: 30,
            event: Event::Started,
            numwant: 50,
            key: 0xdead_beef,
            tracker_id: None,
            ipv6: None,
        }
    }

    const ESCAPED_HASH: &str = "%124Vx%9A%00%20AZaz09-._~%25%26%2F";

    #[test]
    fn url_escapes_raw_bytes() {
        let url = build_url("http://t.example/announce", &request());
        assert_eq!(
            url,
            format!(
                "http://t.example/announce?info_hash={ESCAPED_HASH}&peer_id=-TG0001-abcdefghijkl\
                 &port=6881&uploaded=10&downloaded=20&left=30&compact=1&numwant=50&key=deadbeef\
                 &event=started"
            )
        );
    }

    #[test]
    fn our_ipv6_address_is_told_when_known() {
        let mut req = request();
        req.ipv6 = Some("2a01:4f8::7".parse().unwrap());
        let url = build_url("http://t/announce", &req);
        assert!(
            url.ends_with("&event=started&ipv6=2a01%3A4f8%3A%3A7"),
            "{url}"
        );
        // Unknown (the default): no key at all.
        assert!(!build_url("http://t/announce", &request()).contains("ipv6"));
    }

    #[test]
    fn url_appends_to_an_existing_query() {
        let url = build_url("http://t/announce?passkey=abc", &request());
        assert!(
            url.starts_with("http://t/announce?passkey=abc&info_hash=%12"),
            "{url}"
        );
        let url = build_url("http://t/announce?", &request());
        assert!(url.starts_with("http://t/announce?info_hash="), "{url}");
        let url = build_url("http://t/announce?a=1&", &request());
        assert!(url.starts_with("http://t/announce?a=1&info_hash="), "{url}");
    }

    #[test]
    fn url_drops_fragment() {
        let url = build_url("http://t/announce#frag", &request());
        assert!(url.starts_with("http://t/announce?info_hash="), "{url}");
        assert!(!url.contains("frag"));
    }

    #[test]
    fn url_event_and_tracker_id() {
        let mut req = request();
        req.event = Event::None;
        let url = build_url("http://t/a", &req);
        assert!(!url.contains("event="), "{url}");
        assert!(!url.contains("trackerid="), "{url}");
        req.event = Event::Completed;
        req.tracker_id = Some("id 1/é".into());
        let url = build_url("http://t/a", &req);
        assert!(url.contains("&event=completed"), "{url}");
        assert!(url.ends_with("&trackerid=id%201%2F%C3%A9"), "{url}");
        req.event = Event::Stopped;
        assert!(build_url("http://t/a", &req).contains("&event=stopped"));
    }

    #[test]
    fn parses_compact_peers() {
        let body = b"d8:completei5e10:incompletei7e8:intervali1800e12:min intervali60e\
5:peers12:\x7f\x00\x00\x01\x1a\xe1\x0a\x00\x00\x02\x00\x50e";
        let r = parse_response(body).unwrap();
        assert_eq!(r.interval, Duration::from_secs(1800));
        assert_eq!(r.min_interval, Some(Duration::from_secs(60)));
        assert_eq!(r.complete, Some(5));
        assert_eq!(r.incomplete, Some(7));
        assert_eq!(r.warning, None);
        assert_eq!(r.tracker_id, None);
        assert_eq!(
            r.peers,
            vec![
                "127.0.0.1:6881".parse::<SocketAddr>().unwrap(),
                "10.0.0.2:80".parse().unwrap()
            ]
        );
    }

    #[test]
    fn parses_dict_peers() {
        let body = b"d8:intervali900e5:peersld2:ip9:127.0.0.17:peer id20:aaaaaaaaaaaaaaaaaaaa4:porti6881eed2:ip3:::14:porti1eed2:ip11:example.org4:porti5eeee";
        let r = parse_response(body).unwrap();
        assert_eq!(
            r.peers,
            vec![
                "127.0.0.1:6881".parse::<SocketAddr>().unwrap(),
                "[::1]:1".parse().unwrap()
            ]
        );
        assert_eq!(r.min_interval, None);
    }

    #[test]
    fn parses_peers6() {
        let mut body = b"d8:intervali60e5:peers0:6:peers636:".to_vec();
        let mut one = [0u8; 18];
        one[15] = 1;
        one[16] = 0x1a;
        one[17] = 0xe1;
        body.extend_from_slice(&one);
        let mut two = [0u8; 18];
        two[0] = 0x20;
        two[1] = 0x01;
        two[17] = 7;
        body.extend_from_slice(&two);
        body.push(b'e');
        let r = parse_response(&body).unwrap();
        assert_eq!(
            r.peers,
            vec![
                "[::1]:6881".parse::<SocketAddr>().unwrap(),
                "[2001::]:7".parse().unwrap()
            ]
        );
        // peers6 alone is enough
        let r = parse_response(b"d8:intervali60e6:peers60:e").unwrap();
        assert!(r.peers.is_empty());
    }

    #[test]
    fn failure_reason_wins() {
        assert_eq!(
            parse_response(b"d14:failure reason22:torrent not registerede"),
            Err(TrackerError::Failure("torrent not registered".into()))
        );
        // even with other (broken) fields around
        assert_eq!(
            parse_response(b"d14:failure reason3:bad8:interval1:xe"),
            Err(TrackerError::Failure("bad".into()))
        );
    }

    #[test]
    fn warning_and_tracker_id() {
        let r =
            parse_response(b"d8:intervali60e5:peers0:10:tracker id3:xyz15:warning message4:slowe")
                .unwrap();
        assert_eq!(r.warning.as_deref(), Some("slow"));
        assert_eq!(r.tracker_id.as_deref(), Some("xyz"));
    }

    fn malformed_text(body: &[u8]) -> String {
        match parse_response(body) {
            Err(TrackerError::Malformed(text)) => text,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn wrong_types_name_the_field() {
        let cases: &[(&[u8], &str)] = &[
            (b"d8:interval2:60e", "'interval'"),
            (b"d8:intervali-5e5:peers0:e", "'interval' is negative"),
            (
                b"d8:intervali60e12:min interval1:x5:peers0:e",
                "'min interval'",
            ),
            (b"d8:intervali60e5:peersi3ee", "'peers'"),
            (b"d8:intervali60e5:peers5:abcdee", "multiple of 6"),
            (b"d8:intervali60e6:peers65:abcdee", "multiple of 18"),
            (b"d8:intervali60e6:peers6lee", "'peers6'"),
            (
                b"d8:intervali60e5:peersli1eee",
                "entry 0 is not a dictionary",
            ),
            (
                b"d8:intervali60e5:peersld4:porti1eeee",
                "entry 0 has no 'ip'",
            ),
            (
                b"d8:intervali60e5:peersld2:ipi1e4:porti1eeee",
                "'ip' is not a string",
            ),
            (
                b"d8:intervali60e5:peersld2:ip3:::14:porti70000eeee",
                "'port' 70000",
            ),
            (
                b"d8:intervali60e5:peersld2:ip3:::14:port1:xeee",
                "'port' is not an integer",
            ),
            (b"d8:intervali60e5:peersld2:ip3:::1eee", "has no 'port'"),
            (b"d8:intervali60e5:peers0:8:completei-1ee", "'complete'"),
            (b"d8:intervali60e5:peers0:10:incomplete0:e", "'incomplete'"),
            (
                b"d8:intervali60e5:peers0:15:warning messagei1ee",
                "'warning message'",
            ),
            (b"d8:intervali60e5:peers0:10:tracker idi1ee", "'tracker id'"),
            (b"d14:failure reasoni1ee", "'failure reason'"),
            (b"d5:peers0:e", "missing field 'interval'"),
            (b"d8:intervali60ee", "missing field 'peers'"),
            (b"li1ee", "not a dictionary"),
        ];
        for (body, needle) in cases {
            let text = malformed_text(body);
            assert!(
                text.contains(needle),
                "{:?}: {text}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn not_bencode_is_malformed() {
        let text = malformed_text(b"<html>502 Bad Gateway</html>");
        assert!(text.contains("not bencode"), "{text}");
        assert!(malformed_text(b"").contains("not bencode"));
    }

    #[test]
    fn port_zero_and_unspecified_peers_are_dropped() {
        let body = b"d8:intervali60e5:peers18:\x7f\x00\x00\x01\x00\x00\x00\x00\x00\x00\x1a\xe1\x7f\x00\x00\x02\x1a\xe1\
e";
        let r = parse_response(body).unwrap();
        assert_eq!(
            r.peers,
            vec!["127.0.0.2:6881".parse::<SocketAddr>().unwrap()]
        );
        let r = parse_response(b"d8:intervali60e5:peersld2:ip9:127.0.0.14:porti0eeee").unwrap();
        assert!(r.peers.is_empty());
    }

    #[test]
    fn peers_are_capped() {
        let n = MAX_PEERS_PER_REPLY + 10;
        let mut body = format!("d8:intervali60e5:peers{}:", n * 6).into_bytes();
        for i in 0..n {
            body.extend_from_slice(&[10, 0, (i >> 8) as u8, i as u8, 0, 1]);
        }
        body.push(b'e');
        let r = parse_response(&body).unwrap();
        assert_eq!(r.peers.len(), MAX_PEERS_PER_REPLY);
    }

    #[test]
    fn huge_counts_saturate() {
        let r = parse_response(b"d8:intervali60e5:peers0:8:completei99999999999ee").unwrap();
        assert_eq!(r.complete, Some(u32::MAX));
    }

    // --- round trips against a tiny in-test HTTP server ---------------------

    /// Reads one request head; returns its first line.
    fn read_head(stream: &mut TcpStream) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        text.lines().next().unwrap_or("").to_string()
    }

    /// Serves one connection with `respond(request line) -> raw reply bytes`.
    fn serve_once(
        respond: impl FnOnce(&str) -> Vec<u8> + Send + 'static,
    ) -> (String, thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/announce", listener.local_addr().unwrap());
        let handle = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let line = read_head(&mut stream);
            let reply = respond(&line);
            let _ = stream.write_all(&reply);
            line
        });
        (url, handle)
    }

    fn http_reply(status: &str, body: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn http_round_trip_sends_raw_escapes() {
        let (url, server) = serve_once(|_| {
            http_reply(
                "200 OK",
                b"d8:intervali120e5:peers6:\x7f\x00\x00\x01\x1a\xe1e",
            )
        });
        let r = announce(&url, &request(), Duration::from_secs(5)).unwrap();
        assert_eq!(r.interval, Duration::from_secs(120));
        assert_eq!(
            r.peers,
            vec!["127.0.0.1:6881".parse::<SocketAddr>().unwrap()]
        );
        let line = server.join().unwrap();
        assert!(
            line.starts_with(&format!("GET /announce?info_hash={ESCAPED_HASH}&peer_id=")),
            "{line}"
        );
    }

    #[test]
    fn http_error_status_with_failure_reason() {
        let (url, server) =
            serve_once(|_| http_reply("400 Bad Request", b"d14:failure reason7:unknowne"));
        assert_eq!(
            announce(&url, &request(), Duration::from_secs(5)),
            Err(TrackerError::Failure("unknown".into()))
        );
        server.join().unwrap();
    }

    #[test]
    fn http_error_status_without_bencode() {
        let (url, server) = serve_once(|_| http_reply("404 Not Found", b"<html>nope</html>"));
        match announce(&url, &request(), Duration::from_secs(5)) {
            Err(TrackerError::Http(text)) => assert!(text.contains("404"), "{text}"),
            other => panic!("expected Http, got {other:?}"),
        }
        server.join().unwrap();
    }

    #[test]
    fn http_tracker_that_never_answers_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/announce", listener.local_addr().unwrap());
        let server = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            thread::sleep(Duration::from_millis(1500));
            drop(stream);
        });
        let t = Instant::now();
        assert_eq!(
            announce(&url, &request(), Duration::from_millis(300)),
            Err(TrackerError::Timeout)
        );
        assert!(
            t.elapsed() < Duration::from_millis(1200),
            "{:?}",
            t.elapsed()
        );
        server.join().unwrap();
    }

    #[test]
    fn http_oversized_reply_is_refused() {
        let (url, server) = serve_once(|_| {
            let mut body = b"d8:intervali60e5:peers".to_vec();
            let n = MAX_HTTP_REPLY_BYTES + 60;
            body.extend_from_slice(format!("{n}:").as_bytes());
            body.resize(body.len() + n, 1);
            body.push(b'e');
            http_reply("200 OK", &body)
        });
        match announce(&url, &request(), Duration::from_secs(10)) {
            Err(TrackerError::Malformed(text)) => assert!(text.contains("longer than"), "{text}"),
            other => panic!("expected Malformed, got {:?}", other.map(|r| r.peers.len())),
        }
        server.join().unwrap();
    }

    #[test]
    fn http_connection_refused_is_io() {
        // Bind then drop to get a port nobody listens on.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/announce");
        match announce(&url, &request(), Duration::from_secs(5)) {
            Err(TrackerError::Io(text)) => assert!(text.contains(&url), "{text}"),
            other => panic!("expected Io, got {other:?}"),
        }
    }

    #[test]
    fn dispatch_goes_to_http() {
        let (url, server) = serve_once(|_| http_reply("200 OK", b"d8:intervali7e5:peers0:e"));
        let r = crate::tracker::announce(&url, &request(), Duration::from_secs(5)).unwrap();
        assert_eq!(r.interval, Duration::from_secs(7));
        server.join().unwrap();
    }
}

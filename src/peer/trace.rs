//! What `-vv` prints for each message, sent or received: one line per
//! message, decoded (docs/WIRE.md walks through a real trace).
//!
//! The decoders here are pure functions from bytes to one line of text, so
//! they are tested on byte inputs alone. What a peer chose (its peer id, its
//! client name, the extension names in its `m`) is escaped before it goes
//! into the line ([`crate::report::Escaped`]), and nothing is decoded at all
//! unless trace logging is on: with `-vv` off, tracing costs one level check
//! per message.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr};

use super::*;
use crate::bencode::{self, Value};
use crate::report::Escaped;

/// Most entries of a peer's `m` dictionary, and most PEX addresses, named in
/// one line; the rest are counted.
const SHOWN: usize = 4;

/// Which extended message id means which extension, for one direction.
/// Extended ids are chosen by the receiver (BEP 10): messages to us carry
/// our ids ([`ExtIds::OURS`]), messages to the peer carry the ids from its
/// extended handshake ([`ExtIds::theirs`]). Id 0 is always the handshake.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ExtIds {
    metadata: Option<u8>,
    pex: Option<u8>,
}

impl ExtIds {
    /// The ids we ask peers to use (crate::extension).
    pub(super) const OURS: ExtIds = ExtIds {
        metadata: Some(extension::UT_METADATA_ID),
        pex: Some(extension::UT_PEX_ID),
    };
    /// Only the handshake is known (the peer's has not arrived).
    pub(super) const NONE: ExtIds = ExtIds {
        metadata: None,
        pex: None,
    };

    /// The ids the peer asked for in its extended handshake.
    pub(super) fn theirs(h: &ExtHandshake) -> ExtIds {
        ExtIds {
            metadata: h.ut_metadata,
            pex: h.ut_pex,
        }
    }
}

/// Appends `m` to the outgoing buffer `out`, logging it for `-vv`. A free
/// function so callers can pass payloads borrowed from other fields. An
/// extended message other than the handshake is logged by id only (see
/// [`queue_to`]).
pub(super) fn queue(out: &mut Vec<u8>, addr: SocketAddr, m: Message<'_>) {
    queue_to(out, addr, m, ExtIds::NONE);
}

/// [`queue`], naming extended messages by the peer's ids `ids`.
pub(super) fn queue_to(out: &mut Vec<u8>, addr: SocketAddr, m: Message<'_>, ids: ExtIds) {
    if log::log_enabled!(log::Level::Trace) {
        trace!("{addr} -> {}", readable(&m, ids));
    }
    m.encode_into(out);
}

/// Logs a message the peer sent us.
pub(super) fn received(addr: SocketAddr, m: &Message<'_>) {
    if log::log_enabled!(log::Level::Trace) {
        trace!("{addr} <- {}", readable(m, ExtIds::OURS));
    }
}

/// Logs a handshake: `->` for ours, `<-` for the peer's.
pub(super) fn handshake(addr: SocketAddr, arrow: &str, h: &Handshake) {
    if log::log_enabled!(log::Level::Trace) {
        trace!("{addr} {arrow} {}", handshake_line(h));
    }
}

/// A handshake in one line: the reserved bits, raw and named, and the peer
/// id, escaped, with the client it names.
pub(super) fn handshake_line(h: &Handshake) -> String {
    format!(
        "handshake reserved={} ({}) peer_id={}",
        hex(&h.reserved),
        reserved_names(&h.reserved),
        peer_id(&h.peer_id)
    )
}

/// The reserved bits we know by name; the others as the hex of the eight
/// bytes with only them set.
pub(super) fn reserved_names(r: &[u8; 8]) -> String {
    const KNOWN: [(usize, u8, &str); 3] = [
        (
            wire::EXTENSION_PROTOCOL_BYTE,
            wire::EXTENSION_PROTOCOL_BIT,
            "extension protocol",
        ),
        (fast::RESERVED_BYTE, fast::RESERVED_BIT, "fast"),
        (wire::DHT_BYTE, wire::DHT_BIT, "dht"),
    ];
    let mut names = Vec::new();
    let mut rest = *r;
    for (byte, bit, name) in KNOWN {
        if r[byte] & bit != 0 {
            names.push(name.to_string());
            rest[byte] &= !bit;
        }
    }
    if rest != [0; 8] {
        names.push(format!("unknown {}", hex(&rest)));
    }
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// A peer id, printable: ASCII letters, digits and `-._~` as they are, every
/// other byte as `\xNN`, then the client its prefix names, if well known.
pub(super) fn peer_id(id: &[u8; 20]) -> String {
    let mut s = String::with_capacity(24);
    for &b in id {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            s.push(b as char);
        } else {
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    if let Some(client) = client(id) {
        let _ = write!(s, " ({client})");
    }
    s
}

/// The client a peer id names (BEP 20): Azureus style `-XXabcd-` (two
/// letters, four version characters), or aria2's `A2-1-37-0-`. `None` for
/// prefixes we do not know.
pub(super) fn client(id: &[u8; 20]) -> Option<String> {
    if let Some(rest) = id.strip_prefix(b"A2-") {
        // aria2: A2-<major>-<minor>-<patch>-
        let version: Vec<String> = rest
            .split(|&b| b == b'-')
            .take(3)
            .filter(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit))
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        return Some(if version.len() == 3 {
            format!("aria2 {}", version.join("."))
        } else {
            "aria2".into()
        });
    }
    if id[0] != b'-' || id[7] != b'-' {
        return None;
    }
    let name = match &id[1..3] {
        b"qB" => "qBittorrent",
        b"LT" => "libtorrent (rasterbar)",
        b"TR" => "Transmission",
        b"rQ" => "rqbit",
        b"DE" => "Deluge",
        b"UT" => "\u{b5}Torrent",
        b"TG" => "tget",
        _ => return None,
    };
    let v = &id[3..7];
    if !v.iter().all(u8::is_ascii_digit) {
        return Some(name.into());
    }
    // Four digits, one per part; trailing zero parts left out (4650: 4.6.5).
    let mut parts: Vec<char> = v.iter().map(|&b| b as char).collect();
    while parts.len() > 1 && parts.last() == Some(&'0') {
        parts.pop();
    }
    let version: Vec<String> = parts.iter().map(char::to_string).collect();
    Some(format!("{name} {}", version.join(".")))
}

/// A message in one readable line for `-vv` logs (payloads summarised,
/// extended messages decoded by name with `ids`).
pub(super) fn readable(m: &Message<'_>, ids: ExtIds) -> String {
    match m {
        Message::KeepAlive => "keep-alive".into(),
        Message::Choke => "choke".into(),
        Message::Unchoke => "unchoke".into(),
        Message::Interested => "interested".into(),
        Message::NotInterested => "not-interested".into(),
        Message::Have(i) => format!("have piece={i}"),
        Message::Bitfield(b) => {
            let ones: u32 = b.iter().map(|x| x.count_ones()).sum();
            format!("bitfield bytes={} pieces={ones}", b.len())
        }
        Message::Request {
            index,
            begin,
            length,
        } => format!("request piece={index} offset={begin} length={length}"),
        Message::Piece { index, begin, data } => {
            format!("piece piece={index} offset={begin} length={}", data.len())
        }
        Message::Cancel {
            index,
            begin,
            length,
        } => format!("cancel piece={index} offset={begin} length={length}"),
        Message::Port(p) => format!("port {p}"),
        Message::Extended(id, p) => extended(*id, p, ids),
        Message::SuggestPiece(i) => format!("suggest piece={i}"),
        Message::HaveAll => "have-all".into(),
        Message::HaveNone => "have-none".into(),
        Message::RejectRequest {
            index,
            begin,
            length,
        } => format!("reject piece={index} offset={begin} length={length}"),
        Message::AllowedFast(i) => format!("allowed-fast piece={i}"),
        Message::Unknown(id) => format!("unknown id={id}"),
    }
}

/// An extended message (BEP 10) by name: the handshake, ut_metadata or
/// ut_pex decoded; any other id, or a payload that does not decode, by id
/// and length.
pub(super) fn extended(id: u8, payload: &[u8], ids: ExtIds) -> String {
    let raw = || format!("extended id={id} length={}", payload.len());
    if id == extension::HANDSHAKE_ID {
        return ext_handshake(payload).unwrap_or_else(|| format!("{} (unreadable)", raw()));
    }
    if Some(id) == ids.metadata {
        return match MetaMessage::decode(payload) {
            Ok(MetaMessage::Request(p)) => format!("ut_metadata request piece={p}"),
            Ok(MetaMessage::Data {
                piece,
                total_size,
                data,
            }) => format!(
                "ut_metadata data piece={piece} total_size={total_size} length={}",
                data.len()
            ),
            Ok(MetaMessage::Reject(p)) => format!("ut_metadata reject piece={p}"),
            Err(_) => format!("ut_metadata (unreadable) length={}", payload.len()),
        };
    }
    if Some(id) == ids.pex {
        return match PexMessage::decode(payload) {
            Ok(m) => pex_line(&m),
            Err(_) => format!("ut_pex (unreadable) length={}", payload.len()),
        };
    }
    raw()
}

/// A ut_pex message: how many peers were added (IPv4, IPv6) and dropped,
/// and the first few added.
fn pex_line(m: &PexMessage) -> String {
    let added6 = m.added.iter().filter(|(a, _)| a.is_ipv6()).count();
    let mut s = format!(
        "ut_pex added={} added6={added6} dropped={}",
        m.added.len() - added6,
        m.dropped.len()
    );
    if !m.added.is_empty() {
        let first: Vec<String> = m
            .added
            .iter()
            .take(SHOWN)
            .map(|(a, _)| a.to_string())
            .collect();
        let more = if m.added.len() > SHOWN { ", ..." } else { "" };
        let _ = write!(s, " [{}{more}]", first.join(", "));
    }
    s
}

/// The extended handshake's dictionary in one line: `m` (extension names
/// to the ids the sender wants them under), `p`, `v`, `reqq`,
/// `metadata_size`, `yourip`, `ipv6`, `upload_only`; keys it lacks are left
/// out. `None` when the payload is not a bencoded dictionary.
pub(super) fn ext_handshake(payload: &[u8]) -> Option<String> {
    // The typed keys as tget reads them (crate::extension), the rest from
    // the dictionary itself.
    let h = ExtHandshake::decode(payload).ok()?;
    let v = bencode::decode(payload).ok()?;
    let mut s = String::from("extended handshake m={");
    if let Some(m) = v.get(b"m").and_then(Value::as_dict) {
        let names: Vec<String> = m
            .iter()
            .take(SHOWN * 2)
            .map(|(name, id)| match id.as_int() {
                Some(id) => format!("{}: {id}", text(name)),
                None => format!("{}: ?", text(name)),
            })
            .collect();
        s.push_str(&names.join(", "));
        if m.len() > SHOWN * 2 {
            let _ = write!(s, ", ... {} in all", m.len());
        }
    }
    s.push('}');
    if let Some(p) = h.listen_port {
        let _ = write!(s, " p={p}");
    }
    if let Some(c) = &h.client {
        let _ = write!(s, " v=\"{}\"", Escaped(c));
    }
    if let Some(q) = h.reqq {
        let _ = write!(s, " reqq={q}");
    }
    if let Some(size) = h.metadata_size {
        let _ = write!(s, " metadata_size={size}");
    }
    if let Some(ip) = h.yourip {
        let _ = write!(s, " yourip={ip}");
    }
    if let Some(b) = v.get(b"ipv6").and_then(Value::as_bytes) {
        match <[u8; 16]>::try_from(b) {
            Ok(a) => {
                let _ = write!(s, " ipv6={}", IpAddr::from(Ipv6Addr::from(a)));
            }
            Err(_) => {
                let _ = write!(s, " ipv6=({} bytes)", b.len());
            }
        }
    }
    if let Some(u) = v.get(b"upload_only").and_then(Value::as_int) {
        let _ = write!(s, " upload_only={u}");
    }
    Some(s)
}

/// Bytes a peer chose, as text safe for the terminal: UTF-8 (invalid
/// sequences replaced) with hidden characters escaped, at most 64 bytes.
fn text(b: &[u8]) -> String {
    let lossy = String::from_utf8_lossy(&b[..b.len().min(64)]);
    Escaped(&lossy).to_string()
}

/// Bytes as lowercase hex.
fn hex(b: &[u8]) -> String {
    b.iter()
        .fold(String::with_capacity(2 * b.len()), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs(reserved: [u8; 8], id: &[u8; 20]) -> Handshake {
        let mut h = Handshake::new([0xab; 20], *id);
        h.reserved = reserved;
        h
    }

    #[test]
    fn handshake_names_reserved_bits_and_client() {
        // What libtorrent sends: extension protocol, Fast and DHT.
        let h = hs(
            [0, 0, 0, 0, 0, 0x10, 0, 0x05],
            b"-LT2090-\x01abcdefghij\xff",
        );
        assert_eq!(
            handshake_line(&h),
            "handshake reserved=0000000000100005 (extension protocol, fast, dht) \
             peer_id=-LT2090-\\x01abcdefghij\\xff (libtorrent (rasterbar) 2.0.9)"
        );
    }

    #[test]
    fn unknown_reserved_bits_are_shown_raw() {
        // Azureus messaging (byte 0) and BEP 52's v2 upgrade (byte 7, 0x10).
        let r = [0x80, 0, 0, 0, 0, 0x10, 0, 0x14];
        assert_eq!(
            reserved_names(&r),
            "extension protocol, fast, unknown 8000000000000010"
        );
        assert_eq!(reserved_names(&[0; 8]), "none");
    }

    #[test]
    fn well_known_clients_are_named() {
        let name = |p: &[u8]| {
            let mut id = [b'x'; 20];
            id[..p.len()].copy_from_slice(p);
            client(&id)
        };
        assert_eq!(name(b"-qB4650-").as_deref(), Some("qBittorrent 4.6.5"));
        assert_eq!(name(b"-TR4060-").as_deref(), Some("Transmission 4.0.6"));
        assert_eq!(name(b"-rQ7000-").as_deref(), Some("rqbit 7"));
        assert_eq!(name(b"-DE13F0-").as_deref(), Some("Deluge"));
        assert_eq!(name(b"-UT355W-").as_deref(), Some("\u{b5}Torrent"));
        assert_eq!(name(b"-TG0001-").as_deref(), Some("tget 0.0.0.1"));
        assert_eq!(name(b"A2-1-37-0-").as_deref(), Some("aria2 1.37.0"));
        assert_eq!(name(b"-XX1000-"), None);
        assert_eq!(name(b"M7-2-2--"), None);
    }

    #[test]
    fn peer_id_from_a_peer_cannot_drive_the_terminal() {
        let mut id = *b"-qB4650-\x1b[31m\r\n\x7f\xe2\x80\xae1";
        let s = peer_id(&id);
        assert_eq!(
            s,
            "-qB4650-\\x1b\\x5b31m\\x0d\\x0a\\x7f\\xe2\\x80\\xae1 (qBittorrent 4.6.5)"
        );
        assert!(!s.chars().any(crate::report::is_hidden));
        id[0] = 0;
        assert!(!peer_id(&id).contains('('));
    }

    #[test]
    fn extension_handshake_is_decoded_in_one_line() {
        let payload = b"d12:complete_agoi-1e4:ipv616:\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x011:md11:lt_donthavei7e11:ut_metadatai2e6:ut_pexi1ee13:metadata_sizei31235e1:pi6881e4:reqqi500e11:upload_onlyi1e1:v17:libtorrent 2.0.116:yourip4:\x7f\x00\x00\x02e";
        assert_eq!(
            extended(0, payload, ExtIds::NONE),
            "extended handshake m={lt_donthave: 7, ut_metadata: 2, ut_pex: 1} p=6881 \
             v=\"libtorrent 2.0.11\" reqq=500 metadata_size=31235 yourip=127.0.0.2 \
             ipv6=::1 upload_only=1"
        );
    }

    #[test]
    fn our_own_extension_handshake_round_trips_through_the_decoder() {
        let ours = extension::ours(500, 6881, "127.0.0.1".parse().unwrap(), Some(1234), true);
        let line = ext_handshake(&ours.encode()).unwrap();
        assert_eq!(
            line,
            format!(
                "extended handshake m={{ut_metadata: 1, ut_pex: 2}} p=6881 v=\"tget {}\" \
                 reqq=500 metadata_size=1234 yourip=127.0.0.1",
                env!("CARGO_PKG_VERSION")
            )
        );
    }

    #[test]
    fn peer_strings_in_the_extension_handshake_are_escaped() {
        let payload = b"d1:md9:ut\x1b[2Jpexi3ee1:v10:evil\r\n\xe2\x80\xaeXe";
        let line = ext_handshake(payload).unwrap();
        assert!(!line.chars().any(crate::report::is_hidden), "{line}");
        assert!(line.contains(r"ut\u{1b}[2Jpex: 3"), "{line}");
        assert!(line.contains(r#"v="evil\r\n\u{202e}X""#), "{line}");
        // Not a dictionary: the raw form.
        assert_eq!(
            extended(0, b"i1e", ExtIds::NONE),
            "extended id=0 length=3 (unreadable)"
        );
        // A long m is cut.
        let mut many = b"d1:md".to_vec();
        for i in 0..20 {
            many.extend_from_slice(format!("3:x{i:02}i{}e", i + 1).as_bytes());
        }
        many.extend_from_slice(b"ee");
        let line = ext_handshake(&many).unwrap();
        assert!(line.ends_with("x07: 8, ... 20 in all}"), "{line}");
    }

    #[test]
    fn metadata_messages_are_named_by_the_receivers_ids() {
        let req = MetaMessage::Request(3).encode();
        assert_eq!(
            extended(extension::UT_METADATA_ID, &req, ExtIds::OURS),
            "ut_metadata request piece=3"
        );
        let data = MetaMessage::Data {
            piece: 1,
            total_size: 20000,
            data: &[7; 3616],
        }
        .encode();
        let theirs = ExtIds::theirs(&ExtHandshake {
            ut_metadata: Some(9),
            ..Default::default()
        });
        assert_eq!(
            extended(9, &data, theirs),
            "ut_metadata data piece=1 total_size=20000 length=3616"
        );
        let rej = MetaMessage::Reject(0).encode();
        assert_eq!(extended(9, &rej, theirs), "ut_metadata reject piece=0");
        // The same id is nothing to a peer that did not ask for it.
        assert_eq!(
            extended(9, &rej, ExtIds::OURS),
            format!("extended id=9 length={}", rej.len())
        );
        assert_eq!(
            extended(extension::UT_METADATA_ID, b"d5:piecei0ee", ExtIds::OURS),
            "ut_metadata (unreadable) length=12"
        );
    }

    #[test]
    fn pex_messages_are_counted_with_the_first_addresses() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let m = PexMessage {
            added: vec![
                (a("127.0.0.2:6881"), 0),
                (a("127.0.0.3:6882"), 0x10),
                (a("[::1]:6883"), 0),
                (a("127.0.0.4:6884"), 0),
                (a("127.0.0.5:6885"), 0),
            ],
            dropped: vec![a("127.0.0.9:1")],
        };
        assert_eq!(
            extended(extension::UT_PEX_ID, &m.encode(), ExtIds::OURS),
            "ut_pex added=4 added6=1 dropped=1 \
             [127.0.0.2:6881, 127.0.0.3:6882, 127.0.0.4:6884, 127.0.0.5:6885, ...]"
        );
        let empty = PexMessage::default().encode();
        assert_eq!(
            extended(extension::UT_PEX_ID, &empty, ExtIds::OURS),
            "ut_pex added=0 added6=0 dropped=0"
        );
    }

    #[test]
    fn other_messages_read_as_before() {
        let m = Message::Request {
            index: 1,
            begin: 16384,
            length: 16384,
        };
        assert_eq!(
            readable(&m, ExtIds::OURS),
            "request piece=1 offset=16384 length=16384"
        );
        assert_eq!(
            readable(&Message::Extended(7, b"xyz"), ExtIds::OURS),
            "extended id=7 length=3"
        );
    }
}

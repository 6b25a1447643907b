//! Magnet links (BEP 9, BEP 53): `magnet:?xt=urn:btih:<info-hash>&dn=...`.
//!
//! The info-hash may be 40 hex digits or 32 base32 characters. Also kept:
//! `dn` (display name), every `tr` (tracker), every `x.pe` (peer address),
//! every `ws` (web seed, BEP 19) and `so` (file selection, BEP 53:
//! `0,2,4-6`). Unknown parameters are ignored, as BEP 9 asks. A malformed
//! link is an error naming the bad part.

use std::fmt;
use std::net::SocketAddr;

/// A parsed magnet link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Magnet {
    /// The torrent's info-hash (v1).
    pub info_hash: [u8; 20],
    /// The suggested name (`dn`).
    pub name: Option<String>,
    /// Tracker URLs (`tr`), in order, without duplicates.
    pub trackers: Vec<String>,
    /// Peers to try (`x.pe`).
    pub peers: Vec<SocketAddr>,
    /// File indexes to download (`so`), if given.
    pub select: Option<Vec<usize>>,
    /// Web seeds (`ws`, BEP 19), in order, without duplicates.
    pub web_seeds: Vec<String>,
}

/// Why a magnet link was refused: the part and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MagnetError {
    /// The offending part of the link (e.g. `xt=urn:btih:12`).
    pub part: String,
    /// What was wrong.
    pub message: String,
}

impl fmt::Display for MagnetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid magnet link: {}: {}", self.part, self.message)
    }
}

impl std::error::Error for MagnetError {}

fn err(part: &str, message: impl Into<String>) -> MagnetError {
    // Keep the quoted part short: a hostile link may be megabytes long.
    let mut short: String = part.chars().take(80).collect();
    if short.len() < part.len() {
        short.push('…');
    }
    MagnetError {
        part: crate::report::one_line(&short),
        message: crate::report::one_line(&message.into()),
    }
}

/// The most parameters we look at; more is not a magnet link but an attack.
const MAX_PARAMS: usize = 1000;

impl Magnet {
    /// Parses a `magnet:?` link.
    pub fn parse(link: &str) -> Result<Magnet, MagnetError> {
        let rest = link
            .get(..8)
            .filter(|p| p.eq_ignore_ascii_case("magnet:?"))
            .map(|_| &link[8..])
            .ok_or_else(|| err(link, "does not start with magnet:?"))?;
        let mut info_hash = None;
        let mut m = Magnet {
            info_hash: [0; 20],
            name: None,
            trackers: Vec::new(),
            peers: Vec::new(),
            select: None,
            web_seeds: Vec::new(),
        };
        for (n, param) in rest.split('&').filter(|p| !p.is_empty()).enumerate() {
            if n >= MAX_PARAMS {
                return Err(err(param, format!("more than {MAX_PARAMS} parameters")));
            }
            let (key, raw) = param
                .split_once('=')
                .ok_or_else(|| err(param, "a parameter without '='"))?;
            let value = percent_decode(raw).ok_or_else(|| err(param, "bad %-escape"))?;
            match key {
                "xt" => {
                    let Some(hash) = value
                        .get(..9)
                        .filter(|p| p.eq_ignore_ascii_case("urn:btih:"))
                        .map(|_| &value[9..])
                    else {
                        // Other hash kinds (btmh, v2) are allowed beside btih.
                        if value.starts_with("urn:btmh:") {
                            continue;
                        }
                        return Err(err(param, "xt is not urn:btih:<info-hash>"));
                    };
                    let h = decode_hash(hash).ok_or_else(|| {
                        err(
                            param,
                            "the info-hash is neither 40 hex digits nor 32 base32 characters",
                        )
                    })?;
                    if info_hash.is_some_and(|old| old != h) {
                        return Err(err(param, "two different info-hashes"));
                    }
                    info_hash = Some(h);
                }
                "dn" => m.name = Some(value),
                "tr" if !m.trackers.contains(&value) => m.trackers.push(value),
                "ws" if !m.web_seeds.contains(&value) => m.web_seeds.push(value),
                "x.pe" => {
                    let addr = value
                        .parse::<SocketAddr>()
                        .map_err(|_| err(param, "x.pe is not an address:port"))?;
                    if addr.port() == 0 {
                        return Err(err(param, "x.pe has port 0"));
                    }
                    m.peers.push(addr);
                }
                "so" => m.select = Some(parse_select(&value).map_err(|e| err(param, e))?),
                _ => {}
            }
        }
        m.info_hash = info_hash.ok_or_else(|| err(link, "no xt=urn:btih: info-hash"))?;
        Ok(m)
    }

    /// The info-hash as 40 lowercase hex digits.
    pub fn info_hash_hex(&self) -> String {
        self.info_hash.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// `%XX` and `+` decoding (query-string style), to UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                out.push(v);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// 40 hex digits or 32 base32 (RFC 4648, upper or lower case) characters.
fn decode_hash(s: &str) -> Option<[u8; 20]> {
    let mut out = [0u8; 20];
    match s.len() {
        40 => {
            for (i, pair) in s.as_bytes().chunks(2).enumerate() {
                out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
            }
        }
        32 => {
            let mut acc: u64 = 0;
            let mut bits = 0;
            let mut at = 0;
            for c in s.bytes() {
                let v = match c {
                    b'A'..=b'Z' => c - b'A',
                    b'a'..=b'z' => c - b'a',
                    b'2'..=b'7' => c - b'2' + 26,
                    _ => return None,
                } as u64;
                acc = (acc << 5) | v;
                bits += 5;
                if bits >= 8 {
                    bits -= 8;
                    out[at] = (acc >> bits) as u8;
                    at += 1;
                }
            }
        }
        _ => return None,
    }
    Some(out)
}

/// BEP 53 `so`: `0,2,4-6`.
fn parse_select(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: usize = a.parse().map_err(|_| format!("'{part}' is not an index"))?;
        let b: usize = b.parse().map_err(|_| format!("'{part}' is not an index"))?;
        if a > b || b - a > 1_000_000 || out.len() > 1_000_000 {
            return Err(format!("'{part}' is not a sensible range"));
        }
        out.extend(a..=b);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";

    #[test]
    fn hex_and_base32_forms() {
        let m = Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}")).unwrap();
        assert_eq!(m.info_hash_hex(), HEX);
        let b32 = "YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK";
        let m2 = Magnet::parse(&format!("magnet:?xt=urn:btih:{b32}")).unwrap();
        assert_eq!(m2.info_hash, m.info_hash);
        let lower = Magnet::parse(&format!("MAGNET:?xt=urn:btih:{}", b32.to_lowercase())).unwrap();
        assert_eq!(lower.info_hash, m.info_hash);
    }

    #[test]
    fn web_seeds_are_kept_once_in_order() {
        let link = format!(
            "magnet:?xt=urn:btih:{HEX}&ws=http%3A%2F%2F127.0.0.1%3A8080%2Fa%20b\
             &ws=http://127.0.0.1/x&ws=http%3A%2F%2F127.0.0.1%3A8080%2Fa%20b"
        );
        let m = Magnet::parse(&link).unwrap();
        assert_eq!(
            m.web_seeds,
            vec!["http://127.0.0.1:8080/a b", "http://127.0.0.1/x"]
        );
    }

    #[test]
    fn every_part_is_kept() {
        let link = format!(
            "magnet:?xt=urn:btih:{HEX}&dn=Big+Buck%20Bunny&tr=udp%3A%2F%2F127.0.0.1%3A6969\
             &tr=http://127.0.0.1/announce&tr=http://127.0.0.1/announce\
             &x.pe=127.0.0.1:6881&x.pe=[::1]:51413&so=0,2,4-6&unknown=ignored"
        );
        let m = Magnet::parse(&link).unwrap();
        assert_eq!(m.name.as_deref(), Some("Big Buck Bunny"));
        assert_eq!(
            m.trackers,
            vec!["udp://127.0.0.1:6969", "http://127.0.0.1/announce"]
        );
        assert_eq!(m.peers.len(), 2);
        assert_eq!(m.select, Some(vec![0, 2, 4, 5, 6]));
    }

    #[test]
    fn an_error_stays_one_line_whatever_the_link_decodes_to() {
        for link in ["magnet:?so=%0a", "magnet:?x.pe=%0d%0a1", "magnet:?\n=1"] {
            let e = Magnet::parse(link).unwrap_err().to_string();
            assert_eq!(e.lines().count(), 1, "{e:?}");
        }
    }

    #[test]
    fn every_error_names_the_bad_part() {
        let cases = [
            ("http://x", "magnet:?"),
            ("magnet:?dn=x", "no xt"),
            ("magnet:?xt=urn:btih:1234", "neither 40 hex"),
            ("magnet:?xt=urn:sha1:abc", "not urn:btih"),
            (
                &format!("magnet:?xt=urn:btih:{}", "z".repeat(40)),
                "neither 40 hex",
            ),
            (
                &format!("magnet:?xt=urn:btih:{}", "1".repeat(32)),
                "neither 40 hex",
            ),
            (&format!("magnet:?xt=urn:btih:{HEX}&x.pe=nope"), "x.pe"),
            (
                &format!("magnet:?xt=urn:btih:{HEX}&x.pe=1.2.3.4:0"),
                "port 0",
            ),
            (&format!("magnet:?xt=urn:btih:{HEX}&so=1-x"), "not an index"),
            (&format!("magnet:?xt=urn:btih:{HEX}&so=5-1"), "sensible"),
            (&format!("magnet:?xt=urn:btih:{HEX}&dn=%zz"), "%-escape"),
            (&format!("magnet:?xt=urn:btih:{HEX}&dn"), "without '='"),
            (
                &format!("magnet:?xt=urn:btih:{HEX}&xt=urn:btih:{}", "0".repeat(40)),
                "two different",
            ),
        ];
        for (link, want) in cases {
            let e = Magnet::parse(link).unwrap_err().to_string();
            assert!(e.contains(want), "{link}: {e}");
            assert!(e.starts_with("invalid magnet link: "), "{e}");
            assert_eq!(e.lines().count(), 1);
        }
    }
}

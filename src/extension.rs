//! The extension protocol (BEP 10): the extended handshake.
//!
//! When both handshakes set reserved bit 20 (`wire::EXTENSION_PROTOCOL_*`),
//! each side sends one extended message with id 0: a bencoded dictionary
//! whose `m` maps extension names to the message ids the *sender* wants to
//! receive them under. Later extended messages carry those ids. We support
//! `ut_metadata` (BEP 9, the info dictionary piece by piece) and `ut_pex`
//! (BEP 11, peer exchange). The other keys we send and read: `v` (client
//! name), `p` (our listening port), `reqq` (how many requests the sender
//! queues), `yourip` (the address we see the receiver at), `ipv6` (our
//! own global IPv6 address, when we know one: crate::ownip) and
//! `metadata_size` (the info dictionary's length, when we have it).
//!
//! Decoding is lenient, as BEP 10 asks: a key of the wrong type is ignored,
//! not an error; only a payload that is not a bencoded dictionary is refused.

use std::net::{IpAddr, Ipv6Addr};

use crate::bencode::{self, Value};

/// The id under which we want to receive `ut_metadata` messages.
pub const UT_METADATA_ID: u8 = 1;
/// The id under which we want to receive `ut_pex` messages.
pub const UT_PEX_ID: u8 = 2;
/// The extended message id of the handshake itself.
pub const HANDSHAKE_ID: u8 = 0;
/// The largest `metadata_size` we believe; a bigger info dictionary is not
/// fetched (a 16 MiB info dictionary describes about 800 000 pieces).
pub const MAX_METADATA_SIZE: u64 = 16 * 1024 * 1024;

/// One side's extended handshake.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtHandshake {
    /// The id the sender wants `ut_metadata` messages under (`None` or 0:
    /// not supported).
    pub ut_metadata: Option<u8>,
    /// The id the sender wants `ut_pex` messages under.
    pub ut_pex: Option<u8>,
    /// The info dictionary's size, if the sender has it.
    pub metadata_size: Option<u64>,
    /// How many outstanding requests the sender queues.
    pub reqq: Option<u32>,
    /// The sender's client name and version.
    pub client: Option<String>,
    /// The sender's listening port.
    pub listen_port: Option<u16>,
    /// The address the sender sees the receiver at.
    pub yourip: Option<IpAddr>,
    /// The sender's own IPv6 address (16 bytes on the wire).
    pub ipv6: Option<Ipv6Addr>,
}

/// Why an extended handshake was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtError(pub String);

impl std::fmt::Display for ExtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "extended handshake: {}", self.0)
    }
}

impl std::error::Error for ExtError {}

impl ExtHandshake {
    /// Encodes the handshake as the payload of extended message 0.
    pub fn encode(&self) -> Vec<u8> {
        let mut m = Vec::new();
        if let Some(id) = self.ut_metadata {
            m.push(("ut_metadata", Value::Int(id as i64)));
        }
        if let Some(id) = self.ut_pex {
            m.push(("ut_pex", Value::Int(id as i64)));
        }
        let mut d = Vec::new();
        if let Some(ip) = self.ipv6 {
            d.push(("ipv6", Value::bytes(ip.octets().to_vec())));
        }
        d.push(("m", Value::dict(m)));
        if let Some(size) = self.metadata_size {
            d.push(("metadata_size", Value::Int(size as i64)));
        }
        if let Some(p) = self.listen_port {
            d.push(("p", Value::Int(p as i64)));
        }
        if let Some(q) = self.reqq {
            d.push(("reqq", Value::Int(q as i64)));
        }
        if let Some(v) = &self.client {
            d.push(("v", Value::bytes(v.as_bytes())));
        }
        if let Some(ip) = self.yourip {
            let bytes = match ip {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            };
            d.push(("yourip", Value::bytes(bytes)));
        }
        Value::dict(d).encode()
    }

    /// Decodes a peer's handshake payload. Keys of the wrong type or out of
    /// range are ignored; an id of 0 in `m` means "disabled".
    pub fn decode(payload: &[u8]) -> Result<ExtHandshake, ExtError> {
        let v = bencode::decode(payload).map_err(|e| ExtError(e.to_string()))?;
        if v.as_dict().is_none() {
            return Err(ExtError("not a dictionary".into()));
        }
        let int = |key: &[u8]| v.get(key).and_then(Value::as_int);
        let id = |name: &[u8]| {
            v.get(b"m")
                .and_then(|m| m.get(name))
                .and_then(Value::as_int)
                .and_then(|i| u8::try_from(i).ok())
                .filter(|&i| i != 0)
        };
        let yourip = v.get(b"yourip").and_then(Value::as_bytes).and_then(|b| {
            if let Ok(a) = <[u8; 4]>::try_from(b) {
                Some(IpAddr::from(a))
            } else if let Ok(a) = <[u8; 16]>::try_from(b) {
                Some(IpAddr::from(a))
            } else {
                None
            }
        });
        let ipv6 = v
            .get(b"ipv6")
            .and_then(Value::as_bytes)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(Ipv6Addr::from);
        Ok(ExtHandshake {
            ut_metadata: id(b"ut_metadata"),
            ut_pex: id(b"ut_pex"),
            metadata_size: int(b"metadata_size")
                .and_then(|s| u64::try_from(s).ok())
                .filter(|&s| s > 0),
            reqq: int(b"reqq")
                .and_then(|q| u32::try_from(q).ok())
                .filter(|&q| q > 0),
            client: v
                .get(b"v")
                .and_then(Value::as_bytes)
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(64)]).into_owned()),
            listen_port: int(b"p")
                .and_then(|p| u16::try_from(p).ok())
                .filter(|&p| p != 0),
            yourip,
            ipv6,
        })
    }
}

/// Our handshake: the extensions we take, our request queue, our port, the
/// peer's address as we see it, and the metadata size when we have it.
/// PEX is left out for private torrents (BEP 27).
pub fn ours(
    reqq: usize,
    listen_port: u16,
    peer_ip: IpAddr,
    metadata_size: Option<usize>,
    pex: bool,
) -> ExtHandshake {
    ExtHandshake {
        ut_metadata: Some(UT_METADATA_ID),
        ut_pex: pex.then_some(UT_PEX_ID),
        metadata_size: metadata_size.map(|s| s as u64),
        reqq: Some(reqq as u32),
        client: Some(concat!("tget ", env!("CARGO_PKG_VERSION")).to_string()),
        listen_port: (listen_port != 0).then_some(listen_port),
        yourip: Some(peer_ip),
        ipv6: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = ours(500, 6881, "127.0.0.1".parse().unwrap(), Some(1234), true);
        let back = ExtHandshake::decode(&h.encode()).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.ut_metadata, Some(UT_METADATA_ID));
        assert_eq!(back.ut_pex, Some(UT_PEX_ID));
        assert_eq!(back.reqq, Some(500));
    }

    #[test]
    fn no_pex_for_private_torrents() {
        let h = ours(500, 6881, "::1".parse().unwrap(), None, false);
        let back = ExtHandshake::decode(&h.encode()).unwrap();
        assert_eq!(back.ut_pex, None);
        assert_eq!(back.metadata_size, None);
        assert_eq!(back.yourip, Some("::1".parse().unwrap()));
    }

    #[test]
    fn our_ipv6_address_goes_as_16_bytes_and_comes_back() {
        let mut h = ours(500, 6881, "127.0.0.1".parse().unwrap(), None, true);
        h.ipv6 = Some("2a01:4f8::7".parse().unwrap());
        let bytes = h.encode();
        let key = b"4:ipv616:\x2a\x01\x04\xf8";
        assert!(bytes.windows(key.len()).any(|w| w == key), "{bytes:?}");
        assert_eq!(ExtHandshake::decode(&bytes).unwrap(), h);
        // Without one, no key at all.
        let none = ours(500, 6881, "127.0.0.1".parse().unwrap(), None, true).encode();
        assert!(!none.windows(6).any(|w| w == b"4:ipv6"));
        // Another length is ignored, not an error.
        let odd = ExtHandshake::decode(b"d4:ipv64:\x7f\x00\x00\x01e").unwrap();
        assert_eq!(odd.ipv6, None);
    }

    #[test]
    fn what_libtorrent_sends_is_understood() {
        let payload = b"d12:complete_agoi-1e1:md11:lt_donthavei7e11:ut_metadatai2e6:ut_pexi1ee13:metadata_sizei31235e1:pi6881e4:reqqi500e1:v17:libtorrent 2.0.11e";
        let h = ExtHandshake::decode(payload).unwrap();
        assert_eq!(h.ut_metadata, Some(2));
        assert_eq!(h.ut_pex, Some(1));
        assert_eq!(h.metadata_size, Some(31235));
        assert_eq!(h.listen_port, Some(6881));
        assert_eq!(h.reqq, Some(500));
        assert_eq!(h.client.as_deref(), Some("libtorrent 2.0.11"));
    }

    #[test]
    fn wrong_types_and_ranges_are_ignored_not_fatal() {
        let payload = b"d1:md11:ut_metadatai0e6:ut_pexi300ee13:metadata_sizei-5e1:pi70000e4:reqq3:abc6:youripi1ee";
        let h = ExtHandshake::decode(payload).unwrap();
        assert_eq!(h, ExtHandshake::default());
        assert!(ExtHandshake::decode(b"i1e").is_err());
        assert!(ExtHandshake::decode(b"d1:m").is_err());
    }
}

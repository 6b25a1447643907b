//! KRPC (BEP 5): the DHT's messages, one bencoded dictionary per UDP
//! datagram.
//!
//! Every message has a transaction id `t` (chosen by the querier, echoed in
//! the answer) and a kind `y`: `q` (a query: method `q`, arguments `a`), `r`
//! (a response: values `r`) or `e` (an error: `[code, message]`).
//!
//! Four queries exist: `ping`, `find_node` (who is close to `target`?),
//! `get_peers` (who has `info_hash`? answered with peers in `values` and/or
//! close nodes, plus a `token`) and `announce_peer` (I have `info_hash` on
//! `port`, here is the token you gave me). A response does not say which
//! query it answers; the querier knows from the transaction id, so
//! [`Response`] is one struct with every optional field.
//!
//! Nodes travel as "compact node info": 20 bytes of id then 6 bytes of IPv4
//! address and port (26 bytes) in `nodes`, or 18 bytes of IPv6 address and
//! port (38 bytes) in `nodes6` (BEP 32). Peers travel as "compact peer
//! info": 6 bytes (IPv4) or 18 bytes (IPv6), one byte string each in the
//! `values` list.
//!
//! Decoding is strict and bounded: a datagram over [`MAX_DATAGRAM`] bytes is
//! refused before it is parsed, every id must be exactly 20 bytes, lists are
//! capped ([`MAX_NODES`], [`MAX_VALUES`]) and nothing panics whatever the
//! bytes.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::bencode::{self, Value};

/// A node id or an info-hash: 160 bits, compared by XOR distance.
pub type NodeId = [u8; 20];

/// The largest datagram we read or write, in bytes; larger ones are dropped
/// unparsed.
pub const MAX_DATAGRAM: usize = 1500;
/// The longest transaction id we accept.
pub const MAX_TID_LEN: usize = 16;
/// The longest token we accept.
pub const MAX_TOKEN_LEN: usize = 64;
/// The most nodes we take from one `nodes` or `nodes6` field.
pub const MAX_NODES: usize = 64;
/// The most peers we take from one `values` list.
pub const MAX_VALUES: usize = 128;

/// Error code 201: a generic error.
pub const ERR_GENERIC: i64 = 201;
/// Error code 202: a server error.
pub const ERR_SERVER: i64 = 202;
/// Error code 203: a protocol error (malformed packet, bad arguments, bad
/// token).
pub const ERR_PROTOCOL: i64 = 203;
/// Error code 204: the method is unknown.
pub const ERR_METHOD_UNKNOWN: i64 = 204;

/// A node: its id and its UDP address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeInfo {
    /// The node's id.
    pub id: NodeId,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// One KRPC message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A query (`y` = `q`).
    Query {
        /// The transaction id.
        tid: Vec<u8>,
        /// The querying node's id (`a.id`).
        id: NodeId,
        /// The method and its arguments.
        query: Query,
    },
    /// A response (`y` = `r`).
    Response {
        /// The transaction id of the query it answers.
        tid: Vec<u8>,
        /// The values.
        response: Response,
    },
    /// An error (`y` = `e`).
    Error {
        /// The transaction id of the query it answers.
        tid: Vec<u8>,
        /// The code (201-204).
        code: i64,
        /// The text (lossily decoded from UTF-8).
        message: String,
    },
}

/// A query's method and arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// `ping`: are you there?
    Ping,
    /// `find_node`: the nodes you know closest to `target`.
    FindNode {
        /// The id sought.
        target: NodeId,
    },
    /// `get_peers`: peers for `info_hash`, or nodes closer to it.
    GetPeers {
        /// The torrent.
        info_hash: NodeId,
    },
    /// `announce_peer`: the querier has `info_hash` on `port`.
    AnnouncePeer {
        /// The torrent.
        info_hash: NodeId,
        /// The peer's TCP port (ignored when `implied_port`).
        port: u16,
        /// Use the datagram's source port instead of `port`.
        implied_port: bool,
        /// The token from an earlier `get_peers` response.
        token: Vec<u8>,
    },
    /// A method we do not know (answered with error 204).
    Unknown {
        /// The method's name.
        method: Vec<u8>,
    },
}

/// A response's values; which ones are present depends on the query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// The responding node's id.
    pub id: NodeId,
    /// Close nodes (`nodes` for IPv4, `nodes6` for IPv6).
    pub nodes: Vec<NodeInfo>,
    /// Peers (`values`), from `get_peers`.
    pub values: Vec<SocketAddr>,
    /// The token to announce with, from `get_peers`.
    pub token: Option<Vec<u8>>,
}

/// A datagram that is not a valid KRPC message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KrpcError {
    /// The datagram is larger than [`MAX_DATAGRAM`].
    TooLarge {
        /// Its length in bytes.
        len: usize,
    },
    /// The datagram is not bencode.
    Bencode(bencode::DecodeError),
    /// The top-level value is not a dictionary.
    NotADict,
    /// A required field is absent.
    Missing {
        /// The field's path, e.g. `a.id`.
        field: &'static str,
    },
    /// A field has the wrong type, length or value.
    Invalid {
        /// The field's path, e.g. `r.nodes`.
        field: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
}

impl fmt::Display for KrpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KrpcError::TooLarge { len } => write!(
                f,
                "krpc: datagram of {len} bytes is over the {MAX_DATAGRAM}-byte limit"
            ),
            KrpcError::Bencode(e) => write!(f, "krpc: {e}"),
            KrpcError::NotADict => write!(f, "krpc: the message is not a dictionary"),
            KrpcError::Missing { field } => write!(f, "krpc: field `{field}` is missing"),
            KrpcError::Invalid { field, why } => write!(f, "krpc: field `{field}`: {why}"),
        }
    }
}

impl std::error::Error for KrpcError {}

impl Message {
    /// The transaction id.
    pub fn tid(&self) -> &[u8] {
        match self {
            Message::Query { tid, .. } | Message::Response { tid, .. } => tid,
            Message::Error { tid, .. } => tid,
        }
    }

    /// Decodes one datagram.
    pub fn decode(datagram: &[u8]) -> Result<Message, KrpcError> {
        if datagram.len() > MAX_DATAGRAM {
            return Err(KrpcError::TooLarge {
                len: datagram.len(),
            });
        }
        let v = bencode::decode(datagram).map_err(KrpcError::Bencode)?;
        if v.as_dict().is_none() {
            return Err(KrpcError::NotADict);
        }
        let tid = bytes_field(&v, b"t", "t")?;
        if tid.len() > MAX_TID_LEN {
            return Err(KrpcError::Invalid {
                field: "t",
                why: "longer than 16 bytes",
            });
        }
        let tid = tid.to_vec();
        match bytes_field(&v, b"y", "y")? {
            b"q" => decode_query(&v, tid),
            b"r" => {
                let r = v.get(b"r").ok_or(KrpcError::Missing { field: "r" })?;
                if r.as_dict().is_none() {
                    return Err(KrpcError::Invalid {
                        field: "r",
                        why: "not a dictionary",
                    });
                }
                Ok(Message::Response {
                    tid,
                    response: decode_response(r)?,
                })
            }
            b"e" => {
                let e = v.get(b"e").ok_or(KrpcError::Missing { field: "e" })?;
                let list = e.as_list().ok_or(KrpcError::Invalid {
                    field: "e",
                    why: "not a list",
                })?;
                let code = list
                    .first()
                    .and_then(Value::as_int)
                    .ok_or(KrpcError::Invalid {
                        field: "e",
                        why: "does not start with an integer code",
                    })?;
                let message = list
                    .get(1)
                    .and_then(Value::as_bytes)
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Ok(Message::Error { tid, code, message })
            }
            _ => Err(KrpcError::Invalid {
                field: "y",
                why: "not one of q, r, e",
            }),
        }
    }

    /// The bencoded datagram.
    pub fn encode(&self) -> Vec<u8> {
        let mut top: Vec<(&[u8], Value)> = Vec::with_capacity(4);
        match self {
            Message::Query { tid, id, query } => {
                top.push((b"t", Value::bytes(tid.clone())));
                top.push((b"y", Value::bytes(&b"q"[..])));
                let mut args: Vec<(&[u8], Value)> = vec![(b"id", Value::bytes(&id[..]))];
                let method: &[u8] = match query {
                    Query::Ping => b"ping",
                    Query::FindNode { target } => {
                        args.push((b"target", Value::bytes(&target[..])));
                        b"find_node"
                    }
                    Query::GetPeers { info_hash } => {
                        args.push((b"info_hash", Value::bytes(&info_hash[..])));
                        b"get_peers"
                    }
                    Query::AnnouncePeer {
                        info_hash,
                        port,
                        implied_port,
                        token,
                    } => {
                        args.push((b"info_hash", Value::bytes(&info_hash[..])));
                        args.push((b"port", Value::Int(i64::from(*port))));
                        args.push((b"token", Value::bytes(token.clone())));
                        if *implied_port {
                            args.push((b"implied_port", Value::Int(1)));
                        }
                        b"announce_peer"
                    }
                    Query::Unknown { method } => method,
                };
                top.push((b"q", Value::bytes(method)));
                top.push((b"a", Value::dict(args)));
            }
            Message::Response { tid, response } => {
                top.push((b"t", Value::bytes(tid.clone())));
                top.push((b"y", Value::bytes(&b"r"[..])));
                let mut r: Vec<(&[u8], Value)> = vec![(b"id", Value::bytes(&response.id[..]))];
                let mut v4 = Vec::new();
                let mut v6 = Vec::new();
                for n in &response.nodes {
                    match n.addr {
                        SocketAddr::V4(_) => encode_node(n, &mut v4),
                        SocketAddr::V6(_) => encode_node(n, &mut v6),
                    }
                }
                if !v4.is_empty() {
                    r.push((b"nodes", Value::Bytes(v4)));
                }
                if !v6.is_empty() {
                    r.push((b"nodes6", Value::Bytes(v6)));
                }
                if !response.values.is_empty() {
                    let values = response
                        .values
                        .iter()
                        .map(|a| Value::Bytes(encode_peer(*a)))
                        .collect::<Vec<_>>();
                    r.push((b"values", Value::List(values)));
                }
                if let Some(token) = &response.token {
                    r.push((b"token", Value::bytes(token.clone())));
                }
                top.push((b"r", Value::dict(r)));
            }
            Message::Error { tid, code, message } => {
                top.push((b"t", Value::bytes(tid.clone())));
                top.push((b"y", Value::bytes(&b"e"[..])));
                top.push((
                    b"e",
                    Value::List(vec![Value::Int(*code), Value::from(message.as_str())]),
                ));
            }
        }
        Value::dict(top).encode()
    }
}

fn decode_query(v: &Value, tid: Vec<u8>) -> Result<Message, KrpcError> {
    let method = bytes_field(v, b"q", "q")?;
    let a = v.get(b"a").ok_or(KrpcError::Missing { field: "a" })?;
    if a.as_dict().is_none() {
        return Err(KrpcError::Invalid {
            field: "a",
            why: "not a dictionary",
        });
    }
    let id = id_field(a, b"id", "a.id")?;
    let query = match method {
        b"ping" => Query::Ping,
        b"find_node" => Query::FindNode {
            target: id_field(a, b"target", "a.target")?,
        },
        b"get_peers" => Query::GetPeers {
            info_hash: id_field(a, b"info_hash", "a.info_hash")?,
        },
        b"announce_peer" => {
            let info_hash = id_field(a, b"info_hash", "a.info_hash")?;
            let implied_port = match a.get(b"implied_port") {
                None => false,
                Some(x) => {
                    x.as_int().ok_or(KrpcError::Invalid {
                        field: "a.implied_port",
                        why: "not an integer",
                    })? != 0
                }
            };
            let port = match a.get(b"port") {
                None if implied_port => 0,
                None => return Err(KrpcError::Missing { field: "a.port" }),
                Some(p) => {
                    let p = p.as_int().ok_or(KrpcError::Invalid {
                        field: "a.port",
                        why: "not an integer",
                    })?;
                    match u16::try_from(p) {
                        Ok(p) if p != 0 || implied_port => p,
                        _ => {
                            return Err(KrpcError::Invalid {
                                field: "a.port",
                                why: "not in 1..=65535",
                            })
                        }
                    }
                }
            };
            let token = bytes_field(a, b"token", "a.token")?;
            if token.len() > MAX_TOKEN_LEN {
                return Err(KrpcError::Invalid {
                    field: "a.token",
                    why: "longer than 64 bytes",
                });
            }
            Query::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token: token.to_vec(),
            }
        }
        other => Query::Unknown {
            method: other.to_vec(),
        },
    };
    Ok(Message::Query { tid, id, query })
}

fn decode_response(r: &Value) -> Result<Response, KrpcError> {
    let id = id_field(r, b"id", "r.id")?;
    let mut nodes = Vec::new();
    if let Some(n) = r.get(b"nodes") {
        let b = n.as_bytes().ok_or(KrpcError::Invalid {
            field: "r.nodes",
            why: "not a byte string",
        })?;
        parse_nodes(b, 26, &mut nodes).map_err(|why| KrpcError::Invalid {
            field: "r.nodes",
            why,
        })?;
    }
    if let Some(n) = r.get(b"nodes6") {
        let b = n.as_bytes().ok_or(KrpcError::Invalid {
            field: "r.nodes6",
            why: "not a byte string",
        })?;
        parse_nodes(b, 38, &mut nodes).map_err(|why| KrpcError::Invalid {
            field: "r.nodes6",
            why,
        })?;
    }
    let mut values = Vec::new();
    if let Some(list) = r.get(b"values") {
        let list = list.as_list().ok_or(KrpcError::Invalid {
            field: "r.values",
            why: "not a list",
        })?;
        for item in list.iter().take(MAX_VALUES) {
            let peer = item
                .as_bytes()
                .and_then(parse_peer)
                .ok_or(KrpcError::Invalid {
                    field: "r.values",
                    why: "an entry is not a 6- or 18-byte compact peer",
                })?;
            values.push(peer);
        }
    }
    let token = match r.get(b"token") {
        None => None,
        Some(t) => {
            let t = t.as_bytes().ok_or(KrpcError::Invalid {
                field: "r.token",
                why: "not a byte string",
            })?;
            if t.len() > MAX_TOKEN_LEN {
                return Err(KrpcError::Invalid {
                    field: "r.token",
                    why: "longer than 64 bytes",
                });
            }
            Some(t.to_vec())
        }
    };
    Ok(Response {
        id,
        nodes,
        values,
        token,
    })
}

fn bytes_field<'a>(v: &'a Value, key: &[u8], field: &'static str) -> Result<&'a [u8], KrpcError> {
    v.get(key)
        .ok_or(KrpcError::Missing { field })?
        .as_bytes()
        .ok_or(KrpcError::Invalid {
            field,
            why: "not a byte string",
        })
}

fn id_field(v: &Value, key: &[u8], field: &'static str) -> Result<NodeId, KrpcError> {
    bytes_field(v, key, field)?
        .try_into()
        .map_err(|_| KrpcError::Invalid {
            field,
            why: "not 20 bytes",
        })
}

/// Appends a node's compact info (26 bytes for IPv4, 38 for IPv6).
pub fn encode_node(n: &NodeInfo, out: &mut Vec<u8>) {
    out.extend_from_slice(&n.id);
    out.extend_from_slice(&encode_peer(n.addr));
}

/// Appends the nodes of `bytes`, cut in `entry_len`-byte compact node infos
/// (26 or 38), to `out`, at most [`MAX_NODES`] of them; an error when the
/// length is not a multiple of `entry_len`.
pub fn parse_nodes(
    bytes: &[u8],
    entry_len: usize,
    out: &mut Vec<NodeInfo>,
) -> Result<(), &'static str> {
    if entry_len <= 20 || bytes.len() % entry_len != 0 {
        return Err("length is not a multiple of the compact node size");
    }
    for chunk in bytes.chunks_exact(entry_len).take(MAX_NODES) {
        let (id, addr) = chunk.split_at(20);
        let id: NodeId = id.try_into().map_err(|_| "short node id")?;
        let addr = parse_peer(addr).ok_or("bad compact address")?;
        out.push(NodeInfo { id, addr });
    }
    Ok(())
}

/// A compact peer info: 4 bytes of IPv4 address then the port (6 bytes), or
/// 16 bytes of IPv6 address then the port (18 bytes), big-endian.
pub fn encode_peer(addr: SocketAddr) -> Vec<u8> {
    let mut out = match addr.ip() {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    out.extend_from_slice(&addr.port().to_be_bytes());
    out
}

/// Parses a 6- or 18-byte compact peer info; `None` for any other length.
pub fn parse_peer(b: &[u8]) -> Option<SocketAddr> {
    match b.len() {
        6 => {
            let ip: [u8; 4] = b.get(..4)?.try_into().ok()?;
            let port: [u8; 2] = b.get(4..)?.try_into().ok()?;
            Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(ip)),
                u16::from_be_bytes(port),
            ))
        }
        18 => {
            let ip: [u8; 16] = b.get(..16)?.try_into().ok()?;
            let port: [u8; 2] = b.get(16..)?.try_into().ok()?;
            Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(ip)),
                u16::from_be_bytes(port),
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn v4(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn roundtrip(m: &Message) {
        let bytes = m.encode();
        assert!(bytes.len() <= MAX_DATAGRAM);
        assert_eq!(&Message::decode(&bytes).unwrap(), m, "{m:?}");
    }

    #[test]
    fn ping_matches_bep5_example() {
        let m = Message::Query {
            tid: b"aa".to_vec(),
            id: *b"abcdefghij0123456789",
            query: Query::Ping,
        };
        assert_eq!(
            m.encode(),
            b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe".to_vec()
        );
        roundtrip(&m);
        let r = Message::Response {
            tid: b"aa".to_vec(),
            response: Response {
                id: *b"mnopqrstuvwxyz123456",
                ..Response::default()
            },
        };
        assert_eq!(
            r.encode(),
            b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re".to_vec()
        );
        roundtrip(&r);
    }

    #[test]
    fn every_query_round_trips() {
        for query in [
            Query::Ping,
            Query::FindNode { target: [7; 20] },
            Query::GetPeers { info_hash: [9; 20] },
            Query::AnnouncePeer {
                info_hash: [9; 20],
                port: 6881,
                implied_port: false,
                token: b"tok".to_vec(),
            },
            Query::AnnouncePeer {
                info_hash: [9; 20],
                port: 1,
                implied_port: true,
                token: vec![0; 20],
            },
            Query::Unknown {
                method: b"sample_infohashes".to_vec(),
            },
        ] {
            roundtrip(&Message::Query {
                tid: vec![0, 1, 2, 3],
                id: [1; 20],
                query,
            });
        }
    }

    #[test]
    fn find_node_and_get_peers_match_bep5_examples() {
        let m = Message::decode(
            b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e1:q9:find_node1:t2:aa1:y1:qe",
        )
        .unwrap();
        assert_eq!(
            m,
            Message::Query {
                tid: b"aa".to_vec(),
                id: *b"abcdefghij0123456789",
                query: Query::FindNode {
                    target: *b"mnopqrstuvwxyz123456"
                }
            }
        );
        let m = Message::decode(
            b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456e1:q9:get_peers1:t2:aa1:y1:qe",
        )
        .unwrap();
        assert!(
            matches!(m, Message::Query { query: Query::GetPeers { info_hash }, .. } if &info_hash == b"mnopqrstuvwxyz123456")
        );
        let m = Message::decode(
            b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz1234564:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe",
        )
        .unwrap();
        assert_eq!(
            m,
            Message::Query {
                tid: b"aa".to_vec(),
                id: *b"abcdefghij0123456789",
                query: Query::AnnouncePeer {
                    info_hash: *b"mnopqrstuvwxyz123456",
                    port: 6881,
                    implied_port: true,
                    token: b"aoeusnth".to_vec()
                }
            }
        );
    }

    #[test]
    fn responses_round_trip_with_nodes_values_and_token() {
        let r = Response {
            id: [3; 20],
            nodes: vec![
                NodeInfo {
                    id: [4; 20],
                    addr: v4("127.0.0.1:6881"),
                },
                NodeInfo {
                    id: [5; 20],
                    addr: v4("[::1]:7000"),
                },
                NodeInfo {
                    id: [6; 20],
                    addr: v4("10.1.2.3:65535"),
                },
            ],
            values: vec![v4("1.2.3.4:5"), v4("[2001:db8::1]:80")],
            token: Some(b"secret".to_vec()),
        };
        let m = Message::Response {
            tid: b"xy".to_vec(),
            response: r,
        };
        let bytes = m.encode();
        let back = Message::decode(&bytes).unwrap();
        // The decoder reads `nodes` (IPv4) before `nodes6`, so order by family.
        let Message::Response { response, .. } = back else {
            panic!("not a response")
        };
        assert_eq!(response.nodes.len(), 3);
        assert_eq!(response.nodes[2].addr, v4("[::1]:7000"));
        assert_eq!(
            response.values,
            vec![v4("1.2.3.4:5"), v4("[2001:db8::1]:80")]
        );
        assert_eq!(response.token.as_deref(), Some(&b"secret"[..]));
        // Only IPv4 nodes: exact round trip.
        roundtrip(&Message::Response {
            tid: b"xy".to_vec(),
            response: Response {
                id: [3; 20],
                nodes: vec![NodeInfo {
                    id: [4; 20],
                    addr: v4("127.0.0.1:6881"),
                }],
                values: vec![],
                token: Some(vec![1, 2]),
            },
        });
    }

    #[test]
    fn compact_node_is_26_bytes_and_node6_38() {
        let mut out = Vec::new();
        encode_node(
            &NodeInfo {
                id: [0xAB; 20],
                addr: v4("1.2.3.4:258"),
            },
            &mut out,
        );
        assert_eq!(out.len(), 26);
        assert_eq!(&out[20..], &[1, 2, 3, 4, 1, 2]);
        let mut out6 = Vec::new();
        encode_node(
            &NodeInfo {
                id: [0xAB; 20],
                addr: v4("[::1]:1"),
            },
            &mut out6,
        );
        assert_eq!(out6.len(), 38);
        let mut nodes = Vec::new();
        parse_nodes(&out, 26, &mut nodes).unwrap();
        parse_nodes(&out6, 38, &mut nodes).unwrap();
        assert_eq!(nodes[0].addr, v4("1.2.3.4:258"));
        assert_eq!(nodes[1].addr, v4("[::1]:1"));
        assert!(parse_nodes(&out[..25], 26, &mut nodes).is_err());
        assert_eq!(parse_peer(&[1, 2, 3]), None);
    }

    #[test]
    fn node_lists_are_capped() {
        let mut bytes = Vec::new();
        for i in 0..57u8 {
            encode_node(
                &NodeInfo {
                    id: [i; 20],
                    addr: v4("1.1.1.1:1"),
                },
                &mut bytes,
            );
        }
        let mut out = Vec::new();
        parse_nodes(&bytes, 26, &mut out).unwrap();
        assert_eq!(out.len(), 57);
        let mut big = Vec::new();
        for _ in 0..3 {
            big.extend_from_slice(&bytes);
        }
        out.clear();
        parse_nodes(&big, 26, &mut out).unwrap();
        assert_eq!(out.len(), MAX_NODES);
    }

    #[test]
    fn errors_round_trip() {
        let m = Message::Error {
            tid: b"aa".to_vec(),
            code: ERR_GENERIC,
            message: "A Generic Error Ocurred".into(),
        };
        assert_eq!(
            m.encode(),
            b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee".to_vec()
        );
        roundtrip(&m);
        for code in [ERR_SERVER, ERR_PROTOCOL, ERR_METHOD_UNKNOWN] {
            roundtrip(&Message::Error {
                tid: vec![9],
                code,
                message: "x".into(),
            });
        }
        // A message is optional on decode.
        assert_eq!(
            Message::decode(b"d1:eli202ee1:t1:a1:y1:ee").unwrap(),
            Message::Error {
                tid: b"a".to_vec(),
                code: 202,
                message: String::new()
            }
        );
    }

    #[test]
    fn malformed_messages_are_errors() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "bencode"),
            (b"le", "not a dictionary"),
            (b"d1:y1:qe", "`t` is missing"),
            (b"d1:ti1e1:y1:qe", "`t`: not a byte string"),
            (b"d1:t17:aaaaaaaaaaaaaaaaa1:y1:qe", "`t`: longer"),
            (b"d1:t2:aae", "`y` is missing"),
            (b"d1:t2:aa1:y1:xe", "not one of q, r, e"),
            (b"d1:t2:aa1:y1:qe", "`q` is missing"),
            (b"d1:q4:ping1:t2:aa1:y1:qe", "`a` is missing"),
            (b"d1:ai1e1:q4:ping1:t2:aa1:y1:qe", "`a`: not a dictionary"),
            (b"d1:ade1:q4:ping1:t2:aa1:y1:qe", "`a.id` is missing"),
            (b"d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe", "`a.id`: not 20"),
            (
                b"d1:ad2:id20:abcdefghij0123456789e1:q9:find_node1:t2:aa1:y1:qe",
                "`a.target` is missing",
            ),
            (
                b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234565:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe",
                "`a.port` is missing",
            ),
            (
                b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti70000e5:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe",
                "not in 1..=65535",
            ),
            (
                b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti0e5:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe",
                "not in 1..=65535",
            ),
            (
                b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti1ee1:q13:announce_peer1:t2:aa1:y1:qe",
                "`a.token` is missing",
            ),
            (b"d1:t2:aa1:y1:re", "`r` is missing"),
            (b"d1:rle1:t2:aa1:y1:re", "`r`: not a dictionary"),
            (
                b"d1:rd2:id20:mnopqrstuvwxyz1234565:nodes3:abce1:t2:aa1:y1:re",
                "`r.nodes`: length",
            ),
            (
                b"d1:rd2:id20:mnopqrstuvwxyz1234566:nodes6i1ee1:t2:aa1:y1:re",
                "`r.nodes6`: not a byte string",
            ),
            (
                b"d1:rd2:id20:mnopqrstuvwxyz1234566:valuesl5:abcdeee1:t2:aa1:y1:re",
                "`r.values`: an entry",
            ),
            (
                b"d1:rd2:id20:mnopqrstuvwxyz1234565:tokeni1ee1:t2:aa1:y1:re",
                "`r.token`: not a byte string",
            ),
            (b"d1:ei201e1:t2:aa1:y1:ee", "`e`: not a list"),
            (b"d1:el3:abce1:t2:aa1:y1:ee", "integer code"),
        ];
        for (input, want) in cases {
            let e = Message::decode(input).unwrap_err().to_string();
            assert!(
                e.contains(want),
                "{:?}: got {e:?}, want {want:?}",
                String::from_utf8_lossy(input)
            );
        }
        let big = vec![b'x'; MAX_DATAGRAM + 1];
        assert_eq!(
            Message::decode(&big).unwrap_err(),
            KrpcError::TooLarge { len: 1501 }
        );
    }

    #[test]
    fn implied_port_allows_a_missing_or_zero_port() {
        let m = Message::decode(
            b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz1234565:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe",
        )
        .unwrap();
        assert!(matches!(
            m,
            Message::Query {
                query: Query::AnnouncePeer {
                    port: 0,
                    implied_port: true,
                    ..
                },
                ..
            }
        ));
    }

    /// Random bytes, and random mutations of valid messages, never panic the
    /// decoder (bounded: a few seconds at most).
    #[test]
    fn decoder_never_panics_on_random_bytes() {
        let mut rng = Rng::new(0xD47);
        let seeds: Vec<Vec<u8>> = vec![
            Message::Query {
                tid: b"aa".to_vec(),
                id: [1; 20],
                query: Query::AnnouncePeer {
                    info_hash: [2; 20],
                    port: 80,
                    implied_port: true,
                    token: b"tok".to_vec(),
                },
            }
            .encode(),
            Message::Response {
                tid: b"aa".to_vec(),
                response: Response {
                    id: [3; 20],
                    nodes: vec![NodeInfo {
                        id: [4; 20],
                        addr: v4("127.0.0.1:1"),
                    }],
                    values: vec![v4("1.2.3.4:5")],
                    token: Some(b"t".to_vec()),
                },
            }
            .encode(),
            Message::Error {
                tid: b"aa".to_vec(),
                code: 201,
                message: "e".into(),
            }
            .encode(),
        ];
        let alphabet = b"de0123456789:il-qrtyaq";
        for round in 0..20_000u32 {
            let bytes = match round % 3 {
                0 => {
                    let mut b = vec![0u8; rng.below(64) as usize];
                    rng.fill(&mut b);
                    b
                }
                1 => (0..rng.below(80))
                    .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
                    .collect(),
                _ => {
                    let mut b = seeds[rng.below(seeds.len() as u64) as usize].clone();
                    for _ in 0..=rng.below(4) {
                        let i = rng.below(b.len() as u64) as usize;
                        match rng.below(3) {
                            0 => b[i] = rng.next_u64() as u8,
                            1 => {
                                b.remove(i);
                            }
                            _ => b.insert(i, alphabet[rng.below(alphabet.len() as u64) as usize]),
                        }
                        if b.is_empty() {
                            break;
                        }
                    }
                    b
                }
            };
            let _ = Message::decode(&bytes);
        }
    }
}

//! Tracker replies: an HTTP announce reply (bencoded) and the UDP connect,
//! announce and error replies (BEP 15).
//!
//! Input: one byte choosing the UDP reply's address family, then the reply.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tget::tracker::{http, udp, MAX_PEERS_PER_REPLY};

fuzz_target!(|data: &[u8]| {
    let Some((&how, reply)) = data.split_first() else {
        return;
    };
    if let Ok(r) = http::parse_response(reply) {
        assert!(r.peers.len() <= MAX_PEERS_PER_REPLY);
        assert!(r
            .peers
            .iter()
            .all(|p| p.port() != 0 && !p.ip().is_unspecified()));
    }
    // The transaction id is the reply's own, as a tracker that answers us
    // would send it; a wrong one is refused before anything else.
    let txid = udp::transaction_id(reply).unwrap_or(0);
    let _ = udp::decode_connect_response(reply, txid);
    let _ = udp::decode_error(reply, txid);
    if let Ok(r) = udp::decode_announce_response(reply, txid, how & 1 == 1) {
        assert!(r.peers.len() <= MAX_PEERS_PER_REPLY);
    }
    assert!(udp::decode_connect_response(reply, txid.wrapping_add(1)).is_err());
});

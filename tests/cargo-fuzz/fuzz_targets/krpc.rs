//! DHT datagrams (BEP 5 KRPC): queries, responses and errors, with their
//! compact node and peer lists. What decodes re-encodes to a datagram that
//! decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tget::dht::krpc::{self, Message, MAX_TID_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        assert!(m.tid().len() <= MAX_TID_LEN);
        assert_eq!(Message::decode(&m.encode()), Ok(m));
    }
    for entry_len in [26, 38] {
        let mut nodes = Vec::new();
        if krpc::parse_nodes(data, entry_len, &mut nodes).is_ok() {
            assert!(nodes.len() <= krpc::MAX_NODES);
        }
    }
    if let Some(addr) = krpc::parse_peer(data) {
        assert_eq!(krpc::encode_peer(addr), data);
    }
});

//! Extension-protocol payloads (BEP 10, 9, 11): the extended handshake, a
//! ut_metadata message with the metadata assembly it feeds, and a ut_pex
//! message. What decodes re-encodes to a payload that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tget::extension::ExtHandshake;
use tget::metadata::{Assembly, MetaMessage};
use tget::pex::PexMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = ExtHandshake::decode(data) {
        assert_eq!(ExtHandshake::decode(&h.encode()), Ok(h));
    }
    if let Ok(p) = PexMessage::decode(data) {
        assert_eq!(PexMessage::decode(&p.encode()), Ok(p));
    }
    if let Ok(m) = MetaMessage::decode(data) {
        assert_eq!(MetaMessage::decode(&m.encode()), Ok(m.clone()));
        if let MetaMessage::Data {
            piece,
            total_size,
            data,
        } = m
        {
            // Whatever size a peer claims, an assembly is bounded; a piece
            // is taken only at its exact size.
            if let Ok(mut a) = Assembly::new(total_size.min(1 << 20)) {
                let peer = "127.0.0.1:6881".parse().unwrap();
                if a.add(piece, total_size, data, peer).is_ok() {
                    assert!(!a.missing(piece));
                }
                if a.is_complete() {
                    assert_eq!(a.finish(&[0; 20]), Err(vec![peer]));
                }
            }
        }
    }
});

//! The metainfo parser: a whole .torrent file (`Metainfo::from_bytes`) and
//! a bare info dictionary as fetched for a magnet link (`Info::from_bytes`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tget::metainfo::{Info, Metainfo};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Metainfo::from_bytes(data) {
        // Whatever parses answers the questions the client asks of it.
        let _ = m.info_hash_hex();
        let _ = m.tracker_tiers();
        let total = m.info.total_length();
        let pieces = m.info.num_pieces();
        let mut sum = 0u64;
        for i in 0..pieces {
            sum += m.info.piece_len(i).expect("a piece in range has a length");
        }
        assert_eq!(sum, total);
        assert!(m.info.piece_len(pieces).is_none());
    }
    let _ = Info::from_bytes(data);
});

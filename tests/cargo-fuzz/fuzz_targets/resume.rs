//! The resume record (`DIR/.tget/<info-hash>.resume`), which anything with
//! access to the folder may have changed: decoding returns a state or an
//! error. A state names only pieces within the count, and re-encodes to a
//! record that decodes to the same pieces, files and boot. The first byte
//! picks the piece count.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tget::resume::ResumeState;

fuzz_target!(|data: &[u8]| {
    let Some((&n, record)) = data.split_first() else {
        return;
    };
    let pieces = u32::from(n) * 3 + 1;
    if let Ok(s) = ResumeState::decode(record, pieces) {
        assert_eq!(s.pieces.len(), pieces);
        assert_eq!(s.unsynced.len(), pieces);
        for boot in [None, s.boot.as_deref()] {
            let (have, recheck) = s.trusted(boot);
            assert_eq!(have.len(), pieces);
            assert!(recheck.iter().all(|&p| p < pieces));
        }
        let again = ResumeState::decode(&s.encode(), pieces).expect("a record tget wrote");
        assert!(again.sealed);
        assert_eq!(
            (
                &again.info_hash,
                &again.pieces,
                &again.unsynced,
                &again.boot,
                &again.files
            ),
            (&s.info_hash, &s.pieces, &s.unsynced, &s.boot, &s.files)
        );
    }
});

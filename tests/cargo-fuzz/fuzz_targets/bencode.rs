//! The bencode decoder and its raw readers (`validate`, `dict_items`,
//! `list_iter`, `raw_string`, `dict_entry_span`) on arbitrary bytes: no
//! panic, and the readers agree with the decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tget::bencode;

fuzz_target!(|data: &[u8]| {
    let decoded = bencode::decode(data);
    if let Ok(v) = &decoded {
        // What decodes encodes to bytes that decode to the same value.
        assert_eq!(bencode::decode(&v.encode()).as_ref(), Ok(v));
        // Validation builds nothing but accepts what the decoder accepts.
        assert!(bencode::validate(data).is_ok());
    }
    if bencode::validate(data).is_err() {
        assert!(decoded.is_err());
    }
    if let Ok((_, used)) = bencode::decode_prefix(data) {
        assert!(used <= data.len());
    }
    if let Ok(items) = bencode::dict_items(data) {
        for (key, raw) in items {
            assert!(bencode::decode(raw).is_ok());
            let _ = bencode::raw_string(raw);
            if let Ok(Some(span)) = bencode::dict_entry_span(data, key) {
                assert_eq!(&data[span], raw);
            }
        }
    }
    if let Ok(items) = bencode::list_iter(data) {
        for raw in items {
            assert!(bencode::decode(raw).is_ok());
        }
    }
    let _ = bencode::raw_string(data);
});

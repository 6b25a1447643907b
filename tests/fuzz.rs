//! Property-based fuzzing of every parser that reads outside input: the
//! bencode decoder, the metainfo parser, the peer wire parser and framing,
//! the HTTP and UDP tracker reply parsers, magnet links, and the extension
//! messages (extended handshake, ut_metadata, ut_pex) with the metadata
//! assembly. Random and mutated inputs never panic, either parse or return
//! an error, and never allocate more than a bound (measured by a
//! peak-counting global allocator).
//!
//! `cargo test` runs proptest's default number of cases (256 per property);
//! `.ci/run` runs this binary with `PROPTEST_CASES=50000`.
//!
//! The allocator's counters are process-wide, so every test here holds one
//! lock for its whole run: the tests of this binary run one at a time.

use std::alloc::System;
use std::sync::{Mutex, MutexGuard};

use peakmem_alloc::{PeakMemAlloc, PeakMemAllocTrait, INSTRUMENTED_SYSTEM};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use tget::bencode::{self, Value};
use tget::metainfo::{check_path_component, Metainfo, MAX_PIECE_LENGTH};
use tget::tracker::{http, udp, MAX_HTTP_REPLY_BYTES, MAX_PEERS_PER_REPLY};
use tget::wire::{self, Bitfield, Handshake, Message, MessageReader, HANDSHAKE_LEN};

#[global_allocator]
static GLOBAL: &PeakMemAlloc<System> = &INSTRUMENTED_SYSTEM;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f`; returns its result and the most heap it had allocated at once.
fn measured<T>(f: impl FnOnce() -> T) -> (T, usize) {
    GLOBAL.reset_peak_memory();
    let r = f();
    (r, GLOBAL.get_peak_memory())
}

/// The allocation bound of the bencode decoder (and what is built on it):
/// a decoded value costs at most this many times its encoded size, plus a
/// constant (the worst case is a dictionary per few input bytes: a map node
/// of about 640 bytes for `d1:ai0ee`, 8 bytes of input), and never more
/// than the input's size plus the decoder's structure cap, plus slack for
/// what the metainfo parser builds from the tree.
fn decode_bound(input_len: usize) -> usize {
    (128 * input_len + 64 * 1024).min(input_len + bencode::MAX_STRUCTURE_BYTES + (16 << 20))
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        failure_persistence: None,
        ..Config::default()
    })
}

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

/// Bytes drawn mostly from bencode's own alphabet, so random input reaches
/// deep into the decoder instead of failing at the first byte.
fn bencodeish() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => prop::sample::select(b"ilde:-0123456789".to_vec()),
        1 => any::<u8>(),
    ];
    prop::collection::vec(byte, 0..300)
}

/// Arbitrary bencode values, a few levels deep.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(Value::Int),
        prop::collection::vec(any::<u8>(), 0..24).prop_map(Value::Bytes),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
            prop::collection::btree_map(prop::collection::vec(any::<u8>(), 0..8), inner, 0..6)
                .prop_map(Value::Dict),
        ]
    })
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
    Splice(usize, Vec<u8>),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Delete),
        any::<usize>().prop_map(Edit::Truncate),
        (
            any::<usize>(),
            prop::sample::select(vec![
                b"i-0e".to_vec(),
                b"i03e".to_vec(),
                b"99999999999999999999:".to_vec(),
                b"9223372036854775808:".to_vec(),
                b"d".to_vec(),
                b"l".to_vec(),
                b"e".to_vec(),
                b"0:".to_vec(),
                b"2:..".to_vec(),
                b"i-1e".to_vec(),
            ])
        )
            .prop_map(|(i, s)| Edit::Splice(i, s)),
    ];
    prop::collection::vec(edit, 1..6)
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match e {
            Edit::Flip(i, b) => {
                if !bytes.is_empty() {
                    let i = i % bytes.len();
                    bytes[i] ^= b | 1;
                }
            }
            Edit::Insert(i, b) => {
                let i = at(*i, bytes.len());
                bytes.insert(i, *b);
            }
            Edit::Delete(i) => {
                if !bytes.is_empty() {
                    let i = i % bytes.len();
                    bytes.remove(i);
                }
            }
            Edit::Truncate(i) => {
                let i = at(*i, bytes.len());
                bytes.truncate(i);
            }
            Edit::Splice(i, s) => {
                let i = at(*i, bytes.len());
                bytes.splice(i..i, s.iter().copied());
            }
        }
    }
    bytes
}

/// Path components, safe and hostile.
fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9_]{1,12}",
        1 => prop::sample::select(vec![
            "..".to_string(),
            ".".to_string(),
            "...".to_string(),
            String::new(),
            "/etc".to_string(),
            "a/b".to_string(),
            "C:".to_string(),
            "c:evil".to_string(),
            "a\\b".to_string(),
            "..\\..\\x".to_string(),
            "nul\0byte".to_string(),
            "x".repeat(255),
            "y".repeat(256),
            "é".repeat(128),
        ]),
    ]
}

/// A torrent as bencode: one or several files with possibly hostile paths,
/// a piece length from a hostile set, and a piece count that is usually
/// right.
fn torrent() -> impl Strategy<Value = Vec<u8>> {
    let files = prop::collection::vec(
        (prop::collection::vec(component(), 1..4), 0i64..100_000),
        1..6,
    );
    (
        component(),
        prop_oneof![
            3 => prop::sample::select(vec![16_384i64, 32_768]),
            1 => prop::sample::select(vec![0i64, -1, 1, 1 << 40, 3]),
        ],
        prop_oneof![Just(None), Just(Some(7i64)), (0i64..100_000).prop_map(Some)],
        files,
        any::<bool>(),
        prop_oneof![3 => Just(0i64), 1 => -2i64..3],
    )
        .prop_map(|(name, plen, single, files, multi, piece_skew)| {
            let total: i64 = if multi {
                files.iter().map(|f| f.1).sum()
            } else {
                single.unwrap_or(1)
            };
            let count = if plen > 0 {
                (total + plen - 1) / plen
            } else {
                1
            };
            let count = (count + piece_skew).clamp(0, 2000) as usize;
            let mut info = vec![
                (b"name".to_vec(), Value::bytes(name.into_bytes())),
                (b"piece length".to_vec(), Value::Int(plen)),
                (b"pieces".to_vec(), Value::Bytes(vec![0x5a; count * 20])),
            ];
            if multi {
                let list = files
                    .into_iter()
                    .map(|(path, len)| {
                        Value::dict([
                            ("length", Value::Int(len)),
                            (
                                "path",
                                Value::List(path.into_iter().map(Value::from).collect()),
                            ),
                        ])
                    })
                    .collect();
                info.push((b"files".to_vec(), Value::List(list)));
            } else {
                info.push((b"length".to_vec(), Value::Int(single.unwrap_or(1))));
            }
            Value::dict([
                ("announce", Value::from("http://127.0.0.1:1/announce")),
                ("info", Value::Dict(info.into_iter().collect())),
            ])
            .encode()
        })
}

// ---------------------------------------------------------------------------
// Bencode
// ---------------------------------------------------------------------------

fn check_decode(input: &[u8]) -> Result<(), TestCaseError> {
    let (r, peak) = measured(|| {
        let r = bencode::decode(input);
        let p = bencode::decode_prefix(input).map(|(_, used)| used);
        let s = bencode::dict_entry_span(input, b"info");
        (r, p, s)
    });
    let (r, p, s) = r;
    prop_assert!(
        peak <= decode_bound(input.len()),
        "{peak} bytes for {} input bytes",
        input.len()
    );
    if let Ok(used) = p {
        prop_assert!(used <= input.len());
    }
    if let Ok(Some(span)) = s {
        prop_assert!(span.end <= input.len());
    }
    match r {
        Ok(v) => {
            // A value that decodes whole re-encodes to the same length
            // (only key order can differ).
            prop_assert_eq!(v.encode().len(), input.len());
        }
        Err(e) => {
            prop_assert!(e.offset <= input.len());
            prop_assert!(!e.to_string().contains('\n'));
        }
    }
    Ok(())
}

#[test]
fn bencode_decoder_random_bytes() {
    let _g = serial();
    runner()
        .run(&prop::collection::vec(any::<u8>(), 0..512), |b| {
            check_decode(&b)
        })
        .unwrap();
    runner().run(&bencodeish(), |b| check_decode(&b)).unwrap();
}

#[test]
fn bencode_decoder_round_trips_and_survives_mutation() {
    let _g = serial();
    runner()
        .run(&(value(), edits()), |(v, edits)| {
            let bytes = v.encode();
            let back = bencode::decode(&bytes);
            prop_assert_eq!(back.as_ref(), Ok(&v));
            check_decode(&bytes)?;
            check_decode(&apply(bytes, &edits))
        })
        .unwrap();
}

#[test]
fn bencode_nesting_100_000_deep_is_refused_cheaply() {
    let _g = serial();
    for open in [b"l".as_slice(), b"d1:a"] {
        let mut input = open.repeat(100_000);
        input.extend(vec![b'e'; 100_000]);
        // On a small stack: the depth limit bounds the recursion.
        let (r, peak) = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || measured(|| bencode::decode(&input).map(|_| ())))
            .unwrap()
            .join()
            .unwrap();
        let e = r.unwrap_err();
        assert!(e.message.contains("nested deeper"), "{e}");
        assert!(peak < 64 * 1024, "{peak} bytes");
    }
}

#[test]
fn bencode_string_length_of_2_pow_63_is_refused_without_allocating() {
    let _g = serial();
    for input in [
        b"9223372036854775808:abc".as_slice(),
        b"18446744073709551616:abc",
        b"99999999999999999999999999999:",
        b"l9223372036854775807:xe",
    ] {
        let (r, peak) = measured(|| bencode::decode(input));
        let e = r.unwrap_err();
        assert!(e.message.contains("larger than"), "{e}");
        assert!(peak < 4096, "{peak} bytes");
    }
}

#[test]
fn bencode_integers_with_leading_zeros_or_minus_zero_are_refused() {
    let _g = serial();
    for input in [
        b"i03e".as_slice(),
        b"i-0e",
        b"i00e",
        b"i-03e",
        b"ie",
        b"i-e",
        b"i9223372036854775808e",
        b"03:abc",
    ] {
        assert!(bencode::decode(input).is_err(), "{:?}", input);
    }
    assert_eq!(bencode::decode(b"i0e"), Ok(Value::Int(0)));
    assert_eq!(
        bencode::decode(b"i-9223372036854775808e"),
        Ok(Value::Int(i64::MIN))
    );
}

#[test]
fn bencode_dictionaries_with_unsorted_keys_decode_and_duplicates_are_refused() {
    let _g = serial();
    // Unsorted: accepted (real torrents do this), hashed from the raw bytes.
    let v = bencode::decode(b"d1:bi1e1:ai2ee").unwrap();
    assert_eq!(v.get(b"a"), Some(&Value::Int(2)));
    let span = bencode::dict_entry_span(b"d4:infod1:zi1e1:ai2eee", b"info")
        .unwrap()
        .unwrap();
    assert_eq!(span, 7..21);
    // Duplicates: refused, sorted or not.
    for input in [
        b"d1:ai1e1:ai2ee".as_slice(),
        b"d1:ai1e1:bi1e1:ai2ee",
        b"d4:infod1:xi1ee4:infod1:xi1eee",
    ] {
        let e = bencode::decode(input).unwrap_err();
        assert!(e.message.contains("duplicate"), "{e}");
    }
    assert!(bencode::dict_entry_span(b"d4:infode4:infodee", b"info").is_err());
}

// ---------------------------------------------------------------------------
// Metainfo
// ---------------------------------------------------------------------------

fn check_metainfo(bytes: &[u8]) -> Result<(), TestCaseError> {
    let (r, peak) = measured(|| Metainfo::from_bytes(bytes));
    prop_assert!(
        peak <= decode_bound(bytes.len()),
        "{peak} bytes for {}",
        bytes.len()
    );
    match r {
        Ok(m) => {
            let i = &m.info;
            prop_assert!(i.piece_length > 0 && i.piece_length <= MAX_PIECE_LENGTH);
            prop_assert!(i.total_length() > 0);
            prop_assert_eq!(
                i.pieces.len() as u64,
                i.total_length().div_ceil(i.piece_length)
            );
            prop_assert!(check_path_component(&i.name).is_ok());
            for f in i.files.iter() {
                prop_assert!(!f.path.is_empty());
                for c in f.components() {
                    prop_assert!(check_path_component(c).is_ok(), "{:?}", c);
                }
            }
        }
        Err(e) => prop_assert!(!e.to_string().contains('\n'), "{}", e),
    }
    Ok(())
}

#[test]
fn metainfo_parser_generated_and_mutated_torrents() {
    let _g = serial();
    let valid = std::cell::Cell::new(0u32);
    let mut r = runner();
    r.run(&(torrent(), edits()), |(t, edits)| {
        if Metainfo::from_bytes(&t).is_ok() {
            valid.set(valid.get() + 1);
        }
        check_metainfo(&t)?;
        check_metainfo(&apply(t, &edits))
    })
    .unwrap();
    // The generator must reach the valid side too, not only the errors.
    assert!(
        valid.get() * 20 >= r.config().cases,
        "only {} valid torrents in {} cases",
        valid.get(),
        r.config().cases
    );
    runner().run(&bencodeish(), |b| check_metainfo(&b)).unwrap();
}

/// A small valid torrent with `info` entries replaced or added.
fn torrent_with(info: &[(&str, Value)]) -> Vec<u8> {
    let mut d: std::collections::BTreeMap<Vec<u8>, Value> = [
        (b"name".to_vec(), Value::from("x")),
        (b"piece length".to_vec(), Value::Int(16_384)),
        (b"pieces".to_vec(), Value::Bytes(vec![1; 20])),
        (b"length".to_vec(), Value::Int(1000)),
    ]
    .into_iter()
    .collect();
    for (k, v) in info {
        d.insert(k.as_bytes().to_vec(), v.clone());
    }
    Value::dict([("info", Value::Dict(d))]).encode()
}

#[test]
fn metainfo_pieces_of_odd_length_are_refused() {
    let _g = serial();
    for n in [1usize, 19, 21, 39] {
        let e = Metainfo::from_bytes(&torrent_with(&[("pieces", Value::Bytes(vec![1; n]))]))
            .unwrap_err();
        assert_eq!(e.field, "info.pieces", "{e}");
        assert!(e.message.contains("multiple of 20"), "{e}");
    }
}

#[test]
fn metainfo_piece_length_of_0_or_2_pow_40_is_refused() {
    let _g = serial();
    for plen in [0i64, -16_384, 1 << 40, i64::MAX] {
        let e =
            Metainfo::from_bytes(&torrent_with(&[("piece length", Value::Int(plen))])).unwrap_err();
        assert_eq!(e.field, "info.piece length", "{plen}: {e}");
    }
}

/// A `files` list of `n` distinct one-byte files, bencoded directly.
fn many_files(n: usize) -> Vec<u8> {
    let mut files = Vec::with_capacity(n * 30);
    files.push(b'l');
    for i in 0..n {
        let name = format!("{i:x}");
        files.extend_from_slice(format!("d6:lengthi1e4:pathl{}:{name}ee", name.len()).as_bytes());
    }
    files.push(b'e');
    let pieces = n.div_ceil(16_384);
    let mut t = b"d4:infod5:files".to_vec();
    t.extend_from_slice(&files);
    t.extend_from_slice(b"4:name4:many12:piece lengthi16384e6:pieces");
    t.extend_from_slice(format!("{}:", pieces * 20).as_bytes());
    t.extend(std::iter::repeat_n(7u8, pieces * 20));
    t.extend_from_slice(b"ee");
    t
}

/// A million files is 28 MB of torrent but would be 1.5 GB of decoded tree:
/// no tree is built, and the parsed list is kept in one string of paths
/// with a length and an end each (issue 21), so a million files (the most
/// `MAX_FILES` lets in) parse within about twice the torrent's size: the
/// info dictionary's copy and the list.
#[test]
fn metainfo_file_list_of_1_million_entries_parses_within_the_bound() {
    let _g = serial();
    let bytes = many_files(1_000_000);
    let (r, peak) = measured(|| Metainfo::from_bytes(&bytes).map(|m| m.info.files.len()));
    eprintln!(
        "1 000 000 files: {} MiB of torrent, peak {} MiB",
        bytes.len() >> 20,
        peak >> 20
    );
    assert_eq!(r, Ok(1_000_000));
    assert!(peak <= 2 * bytes.len() + (16 << 20), "{peak} bytes");
    assert!(peak <= decode_bound(bytes.len()), "{peak} bytes");
    drop(bytes);
    let bytes = many_files(20_000);
    let (r, peak) = measured(|| Metainfo::from_bytes(&bytes).map(|m| m.info.files.len()));
    assert_eq!(r, Ok(20_000));
    assert!(peak <= decode_bound(bytes.len()), "{peak} bytes");
}

// ---------------------------------------------------------------------------
// Peer wire
// ---------------------------------------------------------------------------

#[test]
fn wire_message_parser_random_bodies() {
    let _g = serial();
    let body = (
        prop_oneof![0u8..=9, Just(20u8), any::<u8>()],
        prop::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(id, mut rest)| {
            rest.insert(0, id);
            rest
        });
    runner()
        .run(&body, |body| {
            let (r, peak) = measured(|| {
                wire::parse_body(&body).map(|m| {
                    m.map(|m| {
                        let mut out = Vec::new();
                        m.encode_into(&mut out);
                        (format!("{m:?}"), out)
                    })
                })
            });
            prop_assert!(peak <= 64 * 1024 + 4 * body.len(), "{peak}");
            if let Ok(Some((m, out))) = r {
                // Whatever parses re-encodes to the same bytes, except the
                // payload of an unknown id, which is ignored.
                if !m.starts_with("Unknown") {
                    prop_assert_eq!(&out[4..], &body[..]);
                }
            }
            Ok(())
        })
        .unwrap();
    runner()
        .run(&prop::collection::vec(any::<u8>(), HANDSHAKE_LEN), |b| {
            let arr: [u8; HANDSHAKE_LEN] = b.as_slice().try_into().unwrap();
            if let Ok(h) = Handshake::decode(&arr) {
                prop_assert_eq!(h.encode(), arr);
            }
            Ok(())
        })
        .unwrap();
    runner()
        .run(
            &(prop::collection::vec(any::<u8>(), 0..40), 0u32..400),
            |(bytes, len)| {
                if let Ok(b) = Bitfield::from_wire(&bytes, len) {
                    prop_assert!(b.count() <= len);
                    prop_assert!(b.ones().all(|i| i < len));
                    prop_assert_eq!(b.as_bytes(), &bytes[..]);
                }
                Ok(())
            },
        )
        .unwrap();
}

/// A reader that hands out the stream in the given chunk sizes, with a
/// timeout between chunks.
struct Chunked<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    turn: usize,
    timeout_next: bool,
}

impl std::io::Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.timeout_next = !self.timeout_next;
        if self.timeout_next {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        let size = self.sizes[self.turn % self.sizes.len()];
        self.turn += 1;
        let n = size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// A stream of mostly well-formed messages, with random damage.
fn wire_stream() -> impl Strategy<Value = Vec<u8>> {
    let one = prop_oneof![
        Just(vec![0u8, 0, 0, 0]),
        (0u8..=9, prop::collection::vec(any::<u8>(), 0..20)).prop_map(|(id, p)| {
            let mut m = ((p.len() + 1) as u32).to_be_bytes().to_vec();
            m.push(id);
            m.extend(p);
            m
        }),
        prop::collection::vec(any::<u8>(), 0..3000).prop_map(|p| {
            let mut m = ((p.len() + 9) as u32).to_be_bytes().to_vec();
            m.push(7);
            m.extend([0u8; 8]);
            m.extend(p);
            m
        }),
        any::<u32>().prop_map(|len| len.to_be_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..16),
    ];
    prop::collection::vec(one, 0..24).prop_map(|v| v.concat())
}

#[test]
fn wire_framing_random_streams_in_random_chunks() {
    let _g = serial();
    let strategy = (
        wire_stream(),
        prop::collection::vec(1usize..70_000, 1..8),
        prop_oneof![Just(0u32), 1u32..100, 1u32..(1 << 23)],
    );
    runner()
        .run(&strategy, |(data, sizes, pieces)| {
            let max = wire::max_message_len(pieces);
            let (outcome, peak) = measured(|| {
                let mut src = Chunked {
                    data: &data,
                    sizes,
                    turn: 0,
                    timeout_next: false,
                };
                let mut r = MessageReader::new(max);
                let mut seen = 0usize;
                // Bounded: every other read returns data until the end.
                for _ in 0..4 * data.len() + 8 {
                    match r.fill(&mut src) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(_) => continue,
                    }
                    loop {
                        match r.next_message() {
                            Ok(Some(m)) => {
                                if let Message::Piece { data, .. } = m {
                                    seen += data.len();
                                }
                            }
                            Ok(None) => break,
                            Err(e) => return Err(e.to_string()),
                        }
                    }
                    if r.buffered() > max as usize + 4 {
                        return Ok(usize::MAX);
                    }
                }
                Ok(seen)
            });
            if let Ok(seen) = outcome {
                prop_assert!(seen != usize::MAX, "buffered past the largest message");
                prop_assert!(seen <= data.len());
            }
            let bound = 3 * (max as usize + 4 + 32 * 1024) + 256 * 1024;
            prop_assert!(peak <= bound, "{peak} bytes, bound {bound}");
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------
// Tracker replies
// ---------------------------------------------------------------------------

fn check_http_reply(body: &[u8]) -> Result<(), TestCaseError> {
    let (r, peak) = measured(|| http::parse_response(body));
    prop_assert!(peak <= decode_bound(body.len()), "{peak}");
    if let Ok(reply) = r {
        prop_assert!(reply.peers.len() <= MAX_PEERS_PER_REPLY);
        prop_assert!(reply
            .peers
            .iter()
            .all(|p| p.port() != 0 && !p.ip().is_unspecified()));
    }
    Ok(())
}

/// Tracker replies: compact or dictionary peers, with extra fields.
fn http_reply() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(any::<u8>(), 0..6 * 3000),
        prop::collection::vec((any::<[u8; 4]>(), any::<i64>()), 0..8),
        any::<i64>(),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(compact, dicts, interval, use_dicts, v6)| {
            let peers = if use_dicts {
                Value::List(
                    dicts
                        .into_iter()
                        .map(|(ip, port)| {
                            Value::dict([
                                ("ip", Value::from(std::net::Ipv4Addr::from(ip).to_string())),
                                ("port", Value::Int(port)),
                            ])
                        })
                        .collect(),
                )
            } else {
                let whole = compact.len() / 6 * 6;
                Value::Bytes(compact[..whole].to_vec())
            };
            Value::dict([
                ("interval", Value::Int(interval)),
                ("peers", peers),
                ("peers6", Value::Bytes(v6)),
                ("min interval", Value::Int(30)),
            ])
            .encode()
        })
}

#[test]
fn tracker_http_reply_parser_random_and_mutated() {
    let _g = serial();
    runner()
        .run(&(http_reply(), edits()), |(body, edits)| {
            check_http_reply(&body)?;
            check_http_reply(&apply(body, &edits))
        })
        .unwrap();
    runner()
        .run(&bencodeish(), |b| check_http_reply(&b))
        .unwrap();
}

#[test]
fn tracker_http_reply_of_the_largest_size_keeps_at_most_the_peer_cap() {
    let _g = serial();
    // The most that is ever read (MAX_HTTP_REPLY_BYTES), all compact peers.
    let n = (MAX_HTTP_REPLY_BYTES - 64) / 6;
    let mut body = format!("d8:intervali60e5:peers{}:", n * 6).into_bytes();
    body.extend([10u8, 0, 0, 1, 0x1a, 0xe1].repeat(n));
    body.push(b'e');
    let (r, peak) = measured(|| http::parse_response(&body));
    let reply = r.unwrap();
    assert_eq!(reply.peers.len(), MAX_PEERS_PER_REPLY);
    assert!(peak <= 2 * body.len() + 64 * 1024, "{peak} bytes");
}

#[test]
fn tracker_udp_reply_parsers_random_datagrams() {
    let _g = serial();
    let datagram = (
        prop_oneof![0u32..4, any::<u32>()],
        prop_oneof![Just(7u32), any::<u32>()],
        prop::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(action, txid, rest)| {
            let mut d = action.to_be_bytes().to_vec();
            d.extend(txid.to_be_bytes());
            d.extend(rest);
            d
        });
    let any_bytes = prop::collection::vec(any::<u8>(), 0..64);
    let strategy = prop_oneof![datagram, any_bytes];
    runner()
        .run(&(strategy, any::<bool>()), |(d, v6)| {
            let (r, peak) = measured(|| {
                let _ = udp::decode_connect_response(&d, 7);
                let _ = udp::decode_error(&d, 7);
                udp::decode_announce_response(&d, 7, v6)
            });
            prop_assert!(peak <= 64 * 1024, "{peak}");
            if let Ok(reply) = r {
                prop_assert!(reply.peers.len() <= MAX_PEERS_PER_REPLY);
                prop_assert!(reply.peers.iter().all(|p| p.port() != 0));
                prop_assert_eq!(udp::transaction_id(&d), Some(7));
            }
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------
// Magnet links
// ---------------------------------------------------------------------------

/// Links built from magnet's own vocabulary, so random input reaches every
/// parameter's parser.
fn magnetish() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("xt"),
        Just("dn"),
        Just("tr"),
        Just("x.pe"),
        Just("so"),
        Just("zz"),
        Just("")
    ];
    let val = prop_oneof![
        Just("urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a".to_string()),
        Just("urn:btih:YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK".to_string()),
        Just("127.0.0.1:6881".to_string()),
        Just("0,2,4-6".to_string()),
        "[a-zA-Z0-9%+:/.,\\-\\[\\]]{0,60}",
    ];
    proptest::collection::vec((key, val), 0..12).prop_map(|params| {
        let body: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("magnet:?{}", body.join("&"))
    })
}

fn check_magnet(link: &str) -> Result<(), TestCaseError> {
    let (r, peak) = measured(|| tget::magnet::Magnet::parse(link));
    prop_assert!(
        peak <= 64 * link.len() + 64 * 1024,
        "{peak} bytes for {} input",
        link.len()
    );
    if let Err(e) = r {
        let text = e.to_string();
        prop_assert_eq!(text.lines().count(), 1);
        prop_assert!(text.len() < 400, "error too long: {}", text.len());
    }
    Ok(())
}

#[test]
fn magnet_parser_random_and_mutated_links() {
    let _g = serial();
    runner()
        .run(&magnetish(), |link| check_magnet(&link))
        .unwrap();
    runner().run(&"\\PC{0,200}", |s| check_magnet(&s)).unwrap();
    runner()
        .run(&"magnet:\\?\\PC{0,200}", |s| check_magnet(&s))
        .unwrap();
}

#[test]
fn magnet_with_a_megabyte_of_parameters_is_refused_within_the_bound() {
    let _g = serial();
    let link = format!("magnet:?{}", "dn=x&".repeat(200_000));
    let (r, peak) = measured(|| tget::magnet::Magnet::parse(&link));
    assert!(r.is_err());
    assert!(peak <= 64 * 1024, "{peak} bytes");
}

// ---------------------------------------------------------------------------
// Extension messages (BEP 10, 9, 11)
// ---------------------------------------------------------------------------

/// Valid-looking extension payloads, then mutated.
fn extension_payload() -> impl Strategy<Value = Vec<u8>> {
    let seeds = prop::sample::select(vec![
        tget::extension::ours(500, 6881, "127.0.0.1".parse().unwrap(), Some(31235), true).encode(),
        b"d12:complete_agoi-1e1:md11:ut_metadatai2e6:ut_pexi1ee13:metadata_sizei31235e1:pi6881e4:reqqi500e1:v4:x.yze".to_vec(),
        tget::metadata::MetaMessage::Request(3).encode(),
        tget::metadata::MetaMessage::Data { piece: 1, total_size: 20000, data: &[7; 100] }.encode(),
        tget::metadata::MetaMessage::Reject(0).encode(),
        b"d5:added12:\x7f\x00\x00\x01\x1a\xe1\x7f\x00\x00\x02\x00\x507:added.f2:\x10\x027:dropped6:\x0a\x00\x00\x01\x00\x01e".to_vec(),
    ]);
    prop_oneof![
        3 => (seeds, edits()).prop_map(|(b, e)| apply(b, &e)),
        1 => bencodeish(),
    ]
}

fn check_extension(payload: &[u8]) -> Result<(), TestCaseError> {
    let (_, peak) = measured(|| {
        let _ = tget::extension::ExtHandshake::decode(payload);
        let _ = tget::pex::PexMessage::decode(payload);
        // Whatever a peer claims, an assembly is bounded.
        if let Ok(tget::metadata::MetaMessage::Data {
            piece,
            total_size,
            data,
        }) = tget::metadata::MetaMessage::decode(payload)
        {
            if let Ok(mut a) = tget::metadata::Assembly::new(total_size.min(1 << 20)) {
                let _ = a.add(piece, total_size, data, "127.0.0.1:1".parse().unwrap());
            }
        }
    });
    prop_assert!(
        peak <= decode_bound(payload.len()) + (1 << 20),
        "{peak} bytes for {} bytes of input",
        payload.len()
    );
    Ok(())
}

#[test]
fn extension_payloads_random_and_mutated() {
    let _g = serial();
    runner()
        .run(&extension_payload(), |p| check_extension(&p))
        .unwrap();
}

#[test]
fn a_metadata_size_of_2_pow_62_is_refused_without_allocating() {
    let _g = serial();
    let (r, peak) = measured(|| tget::metadata::Assembly::new(1 << 62));
    assert!(r.is_err());
    assert!(peak < 4096, "{peak} bytes");
}

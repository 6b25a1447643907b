//! Bencode (BEP 3): the encoding of .torrent files, tracker replies and
//! extension messages.
//!
//! Four kinds of value exist: integers (`i42e`), byte strings (`4:spam`),
//! lists (`l...e`) and dictionaries (`d...e`, byte-string keys).
//!
//! The decoder is strict about everything that would make a value ambiguous
//! or dangerous:
//! - integers reject leading zeros (`i03e`), negative zero (`i-0e`), an empty
//!   body (`ie`), a lone minus (`i-e`) and anything outside `i64`;
//! - string lengths reject leading zeros and any length larger than the bytes
//!   that remain, so a hostile length such as 2^63 never allocates;
//! - nesting deeper than [`MAX_DEPTH`] is an error (the recursion is bounded by
//!   that limit, so hostile input cannot overflow the stack);
//! - dictionary keys must be byte strings and must not repeat;
//! - the memory the decoded tree needs beyond its strings' bytes is
//!   estimated as it is built and capped at [`MAX_STRUCTURE_BYTES`], so a
//!   small input made of many tiny dictionaries (a `files` list of a million
//!   entries is 28 MB of input but would be 750 MB of tree) is an error, not
//!   an allocation driven by the input.
//!
//! One leniency is deliberate: **dictionary keys that are not in sorted order
//! are accepted** on decode. BEP 3 requires sorted keys, but real torrents in
//! the wild break the rule, and rejecting them helps nobody. Because such a
//! dictionary re-encodes in a different byte order, anything that hashes a
//! value (the info-hash) must hash the raw input bytes: see
//! [`dict_entry_span`]. Encoding always writes sorted keys, because
//! [`Value::Dict`] is a `BTreeMap`.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

/// The deepest nesting of lists and dictionaries the decoder accepts.
///
/// A top-level list or dictionary is at depth 1; a value nested 64 containers
/// deep decodes, 65 is an error.
pub const MAX_DEPTH: usize = 64;

/// The most heap a decoded value may need beyond the bytes of its strings:
/// the list slots, dictionary nodes and per-string overhead, as estimated by
/// the decoder while it builds the tree. With it, decoding `n` bytes
/// allocates about `n` plus at most this much, whatever the input.
///
/// 128 MiB admits a tree of about 140 000 file entries (each costs some
/// 900 bytes of tree); a million-file `files` list (28 MB of input, 750 MB
/// of tree) is refused. The metainfo parser builds no such tree: it reads
/// the list an entry at a time.
pub const MAX_STRUCTURE_BYTES: usize = 128 * 1024 * 1024;

/// Estimated cost of one list element: a `Value` slot, doubled for the
/// vector's growth.
const LIST_ITEM_COST: usize = 2 * std::mem::size_of::<Value>();
/// Estimated cost of a dictionary node (eleven key and value slots, about
/// 630 bytes), charged for the first entry and every sixth after it, as if
/// every node were only half full.
const DICT_NODE_COST: usize = 640;
/// Entries per charged dictionary node.
const DICT_ENTRIES_PER_NODE: usize = 6;
/// Estimated overhead of each string's allocation (keys included).
const STRING_COST: usize = 16;
/// Estimated cost of remembering a key while checking a dictionary for
/// repeated keys without building it ([`validate`]): a set slot. Charged
/// against the same cap, so a value that [`decode`] accepts passes too.
const KEY_CHECK_COST: usize = 48;
/// Estimated cost of one entry returned by [`dict_items`].
const ITEM_COST: usize = 2 * std::mem::size_of::<RawItem<'static>>();

/// A decoded bencode value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// An integer, `i<decimal>e`.
    Int(i64),
    /// A byte string, `<length>:<bytes>`; not necessarily UTF-8.
    Bytes(Vec<u8>),
    /// A list, `l<values>e`.
    List(Vec<Value>),
    /// A dictionary, `d<key><value>...e`, keyed by byte strings.
    Dict(BTreeMap<Vec<u8>, Value>),
}

impl Value {
    /// The integer, if this is an [`Value::Int`].
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The bytes, if this is a [`Value::Bytes`].
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The bytes as text, if this is a [`Value::Bytes`] holding valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The elements, if this is a [`Value::List`].
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    /// The map, if this is a [`Value::Dict`].
    pub fn as_dict(&self) -> Option<&BTreeMap<Vec<u8>, Value>> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// Looks `key` up if this is a dictionary; `None` for other values or a
    /// missing key.
    pub fn get(&self, key: &[u8]) -> Option<&Value> {
        self.as_dict().and_then(|d| d.get(key))
    }

    /// The bencoded bytes of this value (dictionary keys sorted).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        encode_into(self, &mut out);
        out
    }

    /// Convenience constructor: a byte string.
    pub fn bytes(b: impl Into<Vec<u8>>) -> Value {
        Value::Bytes(b.into())
    }

    /// Convenience constructor: a dictionary from `(key, value)` pairs; a
    /// later pair replaces an earlier one with the same key.
    pub fn dict<K: Into<Vec<u8>>>(entries: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Dict(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Int(i)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Bytes(s.into_bytes())
    }
}

impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Value {
        Value::Bytes(b)
    }
}

impl From<Vec<Value>> for Value {
    fn from(l: Vec<Value>) -> Value {
        Value::List(l)
    }
}

/// Input that is not valid bencode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset in the input where the problem was found.
    pub offset: usize,
    /// What was expected or what was wrong there.
    pub message: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bencode: at byte {}: {}", self.offset, self.message)
    }
}

impl std::error::Error for DecodeError {}

/// Decodes exactly one value that spans the whole input; bytes after the
/// value are an error.
pub fn decode(input: &[u8]) -> Result<Value, DecodeError> {
    let (value, used) = decode_prefix(input)?;
    if used != input.len() {
        return Err(err(used, "trailing data after the value"));
    }
    Ok(value)
}

/// Decodes one value from the start of `input` and returns it with the number
/// of bytes it took; whatever follows is left alone.
pub fn decode_prefix(input: &[u8]) -> Result<(Value, usize), DecodeError> {
    let mut p = Parser::new(input);
    let v = p.value(0)?;
    Ok((v, p.pos))
}

/// Appends the bencoding of `v` to `out` (dictionary keys sorted).
pub fn encode_into(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Int(i) => {
            out.push(b'i');
            out.extend_from_slice(i.to_string().as_bytes());
            out.push(b'e');
        }
        Value::Bytes(b) => encode_bytes(b, out),
        Value::List(l) => {
            out.push(b'l');
            for item in l {
                encode_into(item, out);
            }
            out.push(b'e');
        }
        Value::Dict(d) => {
            out.push(b'd');
            for (k, item) in d {
                encode_bytes(k, out);
                encode_into(item, out);
            }
            out.push(b'e');
        }
    }
}

fn encode_bytes(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

/// The raw byte range, inside `input`, of the value stored under `key` in the
/// top-level dictionary, exactly as it appears in the input (whatever its key
/// order). The info-hash is the SHA-1 of `input[range]` for key `info`.
///
/// The whole input is validated as by [`validate`]; a top-level value that
/// is not a dictionary is an error. `Ok(None)` means the key is absent.
pub fn dict_entry_span(input: &[u8], key: &[u8]) -> Result<Option<Range<usize>>, DecodeError> {
    let items = dict_items(input)?;
    let base = input.as_ptr() as usize;
    Ok(items.iter().find(|(k, _)| *k == key).map(|(_, v)| {
        // `v` is a slice of `input`: its offset is the pointers' difference.
        let start = v.as_ptr() as usize - base;
        start..start + v.len()
    }))
}

/// Validates `input` as exactly one value, as [`decode`] does (the same
/// errors at the same offsets) but without building it, so neither time nor
/// memory goes into a tree that is not needed. The memory cap
/// ([`MAX_STRUCTURE_BYTES`]) still counts the keys remembered to find
/// repeated ones, at less than a built tree costs.
pub fn validate(input: &[u8]) -> Result<(), DecodeError> {
    let mut p = Parser::new(input);
    p.skip(0)?;
    if p.pos != input.len() {
        return Err(err(p.pos, "trailing data after the value"));
    }
    Ok(())
}

/// One dictionary entry, undecoded: the key's bytes and the value's raw
/// bencoded bytes.
pub type RawItem<'a> = (&'a [u8], &'a [u8]);

/// The entries of the dictionary that is the whole of `input`, in input
/// order, each as its key's bytes and its value's raw bytes (a slice of
/// `input`, for [`decode`], [`raw_string`] or these functions again).
/// Validated whole as by [`validate`]; `input` not being one dictionary is
/// an error. A torrent's `files` list is read entry by entry this way, so a
/// list of 100 000 files never becomes one tree.
pub fn dict_items(input: &[u8]) -> Result<Vec<RawItem<'_>>, DecodeError> {
    let mut p = Parser::new(input);
    p.container(b'd', "a dictionary")?;
    let mut items = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    loop {
        match p.peek() {
            None => {
                return Err(err(
                    p.pos,
                    "unexpected end of input, expected a key or 'e' to end the dictionary opened at byte 0",
                ))
            }
            Some(b'e') => {
                p.pos += 1;
                break;
            }
            Some(_) => {
                let key_at = p.pos;
                p.charge(ITEM_COST)?;
                let k = p.dict_key_slice()?;
                if !seen.insert(k) {
                    return Err(duplicate_key(key_at, k));
                }
                let start = p.pos;
                p.skip(1)?;
                items.push((k, input.get(start..p.pos).unwrap_or_default()));
            }
        }
    }
    if p.pos != input.len() {
        return Err(err(p.pos, "trailing data after the value"));
    }
    Ok(items)
}

/// The elements of the list that is the whole of `input`, one at a time,
/// each as its raw bytes (see [`dict_items`]). The whole list is validated
/// first, as by [`validate`]; then nothing is held but a position, however
/// long the list.
pub fn list_iter(input: &[u8]) -> Result<Items<'_>, DecodeError> {
    let mut p = Parser::new(input);
    p.container(b'l', "a list")?;
    let mut check = Parser::new(input);
    check.skip(0)?;
    if check.pos != input.len() {
        return Err(err(check.pos, "trailing data after the value"));
    }
    Ok(Items { p })
}

/// The elements of a validated list; see [`list_iter`]. A clone walks the
/// list again without validating it again.
#[derive(Clone)]
pub struct Items<'a> {
    p: Parser<'a>,
}

impl<'a> Iterator for Items<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let start = self.p.pos;
        if self.p.peek()? == b'e' {
            return None;
        }
        // The list was validated whole: this cannot fail.
        self.p.skip(1).ok()?;
        self.p.input.get(start..self.p.pos)
    }
}

/// The bytes of `raw` if it is exactly one byte string (`4:spam` gives
/// `spam`), without copying them.
pub fn raw_string(raw: &[u8]) -> Option<&[u8]> {
    let mut p = Parser::new(raw);
    if !matches!(p.peek(), Some(b'0'..=b'9')) {
        return None;
    }
    let r = p.string_range().ok()?;
    (p.pos == raw.len()).then(|| raw.get(r)).flatten()
}

fn err(offset: usize, message: impl Into<String>) -> DecodeError {
    DecodeError {
        offset,
        message: message.into(),
    }
}

fn duplicate_key(offset: usize, key: &[u8]) -> DecodeError {
    err(
        offset,
        format!(
            "duplicate dictionary key \"{}\"",
            String::from_utf8_lossy(key).escape_debug()
        ),
    )
}

/// A byte as it should appear in an error message.
fn show(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else {
        format!("byte 0x{b:02x}")
    }
}

#[derive(Clone)]
struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    /// Estimated structure bytes of what was built so far.
    cost: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a [u8]) -> Parser<'a> {
        Parser {
            input,
            pos: 0,
            cost: 0,
        }
    }

    /// Adds `n` to the estimated structure cost, failing past the cap.
    fn charge(&mut self, n: usize) -> Result<(), DecodeError> {
        self.cost = self.cost.saturating_add(n);
        if self.cost > MAX_STRUCTURE_BYTES {
            return Err(err(
                self.pos,
                format!(
                    "the decoded value would need more than {} MiB of memory",
                    MAX_STRUCTURE_BYTES >> 20
                ),
            ));
        }
        Ok(())
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    /// Parses one value; `depth` is the number of containers already open.
    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        match self.peek() {
            None => Err(err(self.pos, "unexpected end of input, expected a value")),
            Some(b'i') => self.int().map(Value::Int),
            Some(b'0'..=b'9') => self.string().map(Value::Bytes),
            Some(b'l') => {
                let open = self.enter(depth)?;
                let mut items = Vec::new();
                loop {
                    match self.peek() {
                        None => {
                            return Err(err(
                                self.pos,
                                format!(
                                    "unexpected end of input, expected a value or 'e' to end the list opened at byte {open}"
                                ),
                            ))
                        }
                        Some(b'e') => {
                            self.pos += 1;
                            return Ok(Value::List(items));
                        }
                        Some(_) => {
                            self.charge(LIST_ITEM_COST)?;
                            items.push(self.value(depth + 1)?)
                        }
                    }
                }
            }
            Some(b'd') => {
                let open = self.enter(depth)?;
                let mut map = BTreeMap::new();
                loop {
                    match self.peek() {
                        None => {
                            return Err(err(
                                self.pos,
                                format!(
                                    "unexpected end of input, expected a key or 'e' to end the dictionary opened at byte {open}"
                                ),
                            ))
                        }
                        Some(b'e') => {
                            self.pos += 1;
                            return Ok(Value::Dict(map));
                        }
                        Some(_) => {
                            let key_at = self.pos;
                            if map.len() % DICT_ENTRIES_PER_NODE == 0 {
                                self.charge(DICT_NODE_COST)?;
                            }
                            let k = self.dict_key()?;
                            if map.contains_key(&k) {
                                return Err(duplicate_key(key_at, &k));
                            }
                            let v = self.value(depth + 1)?;
                            map.insert(k, v);
                        }
                    }
                }
            }
            Some(b) => Err(err(
                self.pos,
                format!(
                    "expected a value ('i', 'l', 'd' or a string length), found {}",
                    show(b)
                ),
            )),
        }
    }

    /// Steps over one value, checking it as [`Parser::value`] does (same
    /// errors, same offsets) but building nothing.
    fn skip(&mut self, depth: usize) -> Result<(), DecodeError> {
        match self.peek() {
            None => Err(err(self.pos, "unexpected end of input, expected a value")),
            Some(b'i') => self.int().map(drop),
            Some(b'0'..=b'9') => self.string_range().map(drop),
            Some(b'l') => {
                let open = self.enter(depth)?;
                loop {
                    match self.peek() {
                        None => {
                            return Err(err(
                                self.pos,
                                format!(
                                    "unexpected end of input, expected a value or 'e' to end the list opened at byte {open}"
                                ),
                            ))
                        }
                        Some(b'e') => {
                            self.pos += 1;
                            return Ok(());
                        }
                        Some(_) => self.skip(depth + 1)?,
                    }
                }
            }
            Some(b'd') => {
                let open = self.enter(depth)?;
                let mut seen = std::collections::BTreeSet::new();
                loop {
                    match self.peek() {
                        None => {
                            return Err(err(
                                self.pos,
                                format!(
                                    "unexpected end of input, expected a key or 'e' to end the dictionary opened at byte {open}"
                                ),
                            ))
                        }
                        Some(b'e') => {
                            self.pos += 1;
                            return Ok(());
                        }
                        Some(_) => {
                            let key_at = self.pos;
                            self.charge(KEY_CHECK_COST)?;
                            let k = self.dict_key_slice()?;
                            if !seen.insert(k) {
                                return Err(duplicate_key(key_at, k));
                            }
                            self.skip(depth + 1)?;
                        }
                    }
                }
            }
            Some(b) => Err(err(
                self.pos,
                format!(
                    "expected a value ('i', 'l', 'd' or a string length), found {}",
                    show(b)
                ),
            )),
        }
    }

    /// Steps over the opening `open` of a top-level list or dictionary
    /// (`what`), failing if the input starts with anything else.
    fn container(&mut self, open: u8, what: &str) -> Result<(), DecodeError> {
        match self.peek() {
            Some(b) if b == open => {
                self.pos += 1;
                Ok(())
            }
            Some(b) => Err(err(
                self.pos,
                format!(
                    "expected '{}' ({what}) at top level, found {}",
                    open as char,
                    show(b)
                ),
            )),
            None => Err(err(
                self.pos,
                format!("unexpected end of input, expected {what}"),
            )),
        }
    }

    /// Checks the depth limit and steps over an opening `l`/`d`; returns its
    /// offset.
    fn enter(&mut self, depth: usize) -> Result<usize, DecodeError> {
        if depth >= MAX_DEPTH {
            return Err(err(
                self.pos,
                format!("lists and dictionaries nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        let open = self.pos;
        self.pos += 1;
        Ok(open)
    }

    /// A dictionary key: must be a byte string.
    fn dict_key(&mut self) -> Result<Vec<u8>, DecodeError> {
        self.dict_key_slice_then(|p| p.string())
    }

    /// A dictionary key's bytes, not copied.
    fn dict_key_slice(&mut self) -> Result<&'a [u8], DecodeError> {
        self.dict_key_slice_then(|p| {
            let r = p.string_range()?;
            Ok(p.input.get(r).unwrap_or_default())
        })
    }

    /// Checks that a key (a byte string) comes next, then reads it with `read`.
    fn dict_key_slice_then<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<T, DecodeError> {
        match self.peek() {
            Some(b'0'..=b'9') => read(self),
            Some(b) => Err(err(
                self.pos,
                format!(
                    "dictionary key must be a byte string (a length), found {}",
                    show(b)
                ),
            )),
            None => Err(err(
                self.pos,
                "unexpected end of input, expected a dictionary key",
            )),
        }
    }

    /// `i<decimal>e`; `self.pos` is at the `i`.
    fn int(&mut self) -> Result<i64, DecodeError> {
        self.pos += 1;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let first = self.pos;
        match self.peek() {
            Some(b'0'..=b'9') => {}
            Some(b'e') if !negative => {
                return Err(err(self.pos, "empty integer, expected a digit"))
            }
            Some(b) => {
                let what = if negative { "after '-'" } else { "in integer" };
                return Err(err(
                    self.pos,
                    format!("expected a digit {what}, found {}", show(b)),
                ));
            }
            None => {
                return Err(err(
                    self.pos,
                    "unexpected end of input inside integer, expected a digit",
                ))
            }
        }
        let mut n: i64 = 0;
        loop {
            match self.peek() {
                Some(d @ b'0'..=b'9') => {
                    if self.pos > first && self.input.get(first) == Some(&b'0') {
                        return Err(err(first, "integer has a leading zero"));
                    }
                    let digit = i64::from(d - b'0');
                    let next = n.checked_mul(10).and_then(|m| {
                        if negative {
                            m.checked_sub(digit)
                        } else {
                            m.checked_add(digit)
                        }
                    });
                    n = match next {
                        Some(v) => v,
                        None => return Err(err(first, "integer does not fit in 64 bits")),
                    };
                    self.pos += 1;
                }
                Some(b'e') => {
                    if negative && n == 0 {
                        return Err(err(first - 1, "negative zero (\"-0\") is not allowed"));
                    }
                    self.pos += 1;
                    return Ok(n);
                }
                Some(b) => {
                    return Err(err(
                        self.pos,
                        format!(
                            "expected a digit or 'e' to end the integer, found {}",
                            show(b)
                        ),
                    ))
                }
                None => {
                    return Err(err(
                        self.pos,
                        "unexpected end of input inside integer, expected a digit or 'e'",
                    ))
                }
            }
        }
    }

    /// `<length>:<bytes>`; `self.pos` is at the first digit.
    fn string(&mut self) -> Result<Vec<u8>, DecodeError> {
        let start = self.pos;
        let range = self.string_range()?;
        self.charge(STRING_COST)?;
        match self.input.get(range) {
            Some(b) => Ok(b.to_vec()),
            None => Err(err(start, "string runs past the end of the input")),
        }
    }

    /// Reads `<length>:<bytes>` and returns where the bytes are; `self.pos`
    /// is at the first digit.
    fn string_range(&mut self) -> Result<Range<usize>, DecodeError> {
        let start = self.pos;
        let mut len: usize = 0;
        let mut too_big = false;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            if self.pos > start && self.input.get(start) == Some(&b'0') {
                return Err(err(start, "string length has a leading zero"));
            }
            match len
                .checked_mul(10)
                .and_then(|m| m.checked_add(usize::from(d - b'0')))
            {
                Some(v) => len = v,
                None => too_big = true,
            }
            self.pos += 1;
        }
        match self.peek() {
            Some(b':') => self.pos += 1,
            Some(b) => {
                return Err(err(
                    self.pos,
                    format!("expected ':' after string length, found {}", show(b)),
                ))
            }
            None => {
                return Err(err(
                    self.pos,
                    "unexpected end of input, expected ':' after string length",
                ))
            }
        }
        let remaining = self.input.len() - self.pos;
        if too_big || len > remaining {
            let digits =
                String::from_utf8_lossy(self.input.get(start..self.pos - 1).unwrap_or(&[]))
                    .into_owned();
            return Err(err(
                start,
                format!("string length {digits} is larger than the {remaining} bytes that remain"),
            ));
        }
        let from = self.pos;
        self.pos += len; // len <= remaining, so this cannot pass the end
        Ok(from..self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fails_at(input: &[u8], offset: usize, needle: &str) {
        match decode(input) {
            Ok(v) => panic!(
                "{:?} decoded to {v:?}, expected an error",
                String::from_utf8_lossy(input)
            ),
            Err(e) => {
                assert_eq!(
                    e.offset,
                    offset,
                    "offset for {:?}: {e}",
                    String::from_utf8_lossy(input)
                );
                assert!(
                    e.message.contains(needle),
                    "message for {:?} is {:?}, wanted {needle:?}",
                    String::from_utf8_lossy(input),
                    e.message
                );
            }
        }
    }

    fn round_trip(v: &Value) {
        let bytes = v.encode();
        assert_eq!(&decode(&bytes).unwrap(), v);
        assert_eq!(decode(&bytes).unwrap().encode(), bytes);
    }

    #[test]
    fn integers_round_trip() {
        for i in [0, 1, -1, 42, -42, i64::MAX, i64::MIN] {
            round_trip(&Value::Int(i));
        }
        assert_eq!(Value::Int(-42).encode(), b"i-42e");
        assert_eq!(
            decode(b"i9223372036854775807e").unwrap(),
            Value::Int(i64::MAX)
        );
        assert_eq!(
            decode(b"i-9223372036854775808e").unwrap(),
            Value::Int(i64::MIN)
        );
    }

    #[test]
    fn strings_round_trip() {
        for b in [&b""[..], b"spam", &[0u8, 255, b':', b'e']] {
            round_trip(&Value::bytes(b));
        }
        assert_eq!(Value::from("spam").encode(), b"4:spam");
        assert_eq!(decode(b"0:").unwrap(), Value::bytes(""));
    }

    #[test]
    fn lists_round_trip() {
        let v = Value::List(vec![
            Value::Int(1),
            "a".into(),
            Value::List(vec![]),
            Value::dict([("k", Value::Int(2))]),
        ]);
        round_trip(&v);
        assert_eq!(v.encode(), b"li1e1:aled1:ki2eee");
    }

    #[test]
    fn dicts_round_trip_and_encode_sorted() {
        let v = Value::dict([
            ("zeta", Value::Int(1)),
            ("alpha", Value::List(vec!["x".into()])),
            ("", Value::bytes("")),
        ]);
        round_trip(&v);
        assert_eq!(v.encode(), b"d0:0:5:alphal1:xe4:zetai1ee");
    }

    #[test]
    fn accessors() {
        let v = decode(b"d1:ai7e1:b3:xyz1:cl1:qe1:d2:\xff\xfee").unwrap();
        assert_eq!(v.get(b"a").and_then(Value::as_int), Some(7));
        assert_eq!(v.get(b"b").and_then(Value::as_str), Some("xyz"));
        assert_eq!(v.get(b"b").and_then(Value::as_bytes), Some(&b"xyz"[..]));
        assert_eq!(
            v.get(b"c").and_then(Value::as_list).map(<[_]>::len),
            Some(1)
        );
        assert_eq!(v.get(b"d").and_then(Value::as_str), None, "not UTF-8");
        assert!(v.get(b"d").and_then(Value::as_bytes).is_some());
        assert!(v.as_dict().is_some());
        assert_eq!(v.get(b"missing"), None);
        assert_eq!(Value::Int(1).get(b"a"), None);
        assert_eq!(Value::Int(1).as_bytes(), None);
        assert_eq!(Value::bytes("x").as_int(), None);
        assert_eq!(Value::bytes("x").as_list(), None);
        assert_eq!(Value::bytes("x").as_dict(), None);
    }

    #[test]
    fn decode_prefix_reports_bytes_used() {
        assert_eq!(decode_prefix(b"i5eXYZ").unwrap(), (Value::Int(5), 3));
        assert_eq!(decode_prefix(b"d1:ai1ee rest").unwrap().1, 8);
        assert!(decode_prefix(b"").is_err());
    }

    #[test]
    fn display_names_offset() {
        let e = decode(b"4spam").unwrap_err();
        assert_eq!(
            e.to_string(),
            "bencode: at byte 1: expected ':' after string length, found 's'"
        );
        let _: &dyn std::error::Error = &e;
    }

    #[test]
    fn integer_errors() {
        fails_at(b"i-0e", 1, "negative zero");
        fails_at(b"i-01e", 2, "leading zero");
        fails_at(b"i03e", 1, "leading zero");
        fails_at(b"i00e", 1, "leading zero");
        fails_at(b"i e", 1, "expected a digit in integer, found byte 0x20");
        fails_at(b"ie", 1, "empty integer");
        fails_at(b"i-e", 2, "after '-'");
        fails_at(b"i-", 2, "unexpected end");
        fails_at(b"i", 1, "unexpected end");
        fails_at(b"i12", 3, "expected a digit or 'e'");
        fails_at(b"i1x2e", 2, "found 'x'");
        fails_at(b"i+1e", 1, "found '+'");
        fails_at(b"i9223372036854775808e", 1, "does not fit");
        fails_at(b"i-9223372036854775809e", 2, "does not fit");
        fails_at(b"li1ei99999999999999999999ee", 5, "does not fit");
    }

    #[test]
    fn string_errors() {
        fails_at(b"4spam", 1, "expected ':' after string length");
        fails_at(b"4", 1, "expected ':'");
        fails_at(b"05:hello", 0, "leading zero");
        fails_at(b"00:", 0, "leading zero");
        fails_at(b"5:spam", 0, "larger than the 4 bytes that remain");
        fails_at(b"l1:a9:xe", 4, "larger than the 2 bytes that remain");
    }

    #[test]
    fn huge_string_length_does_not_allocate() {
        fails_at(
            b"9223372036854775808:abc",
            0,
            "9223372036854775808 is larger",
        );
        fails_at(
            b"99999999999999999999999999999:abc",
            0,
            "larger than the 3 bytes",
        );
    }

    #[test]
    fn structure_errors() {
        fails_at(b"", 0, "expected a value");
        fails_at(b"x", 0, "found 'x'");
        fails_at(b"l", 1, "'e' to end the list opened at byte 0");
        fails_at(b"li1e", 4, "'e' to end the list");
        fails_at(b"d", 1, "'e' to end the dictionary opened at byte 0");
        fails_at(b"d1:a", 4, "expected a value");
        fails_at(b"di1ei2ee", 1, "key must be a byte string");
        fails_at(b"dle1:ae", 1, "key must be a byte string");
        fails_at(b"i1ei2e", 3, "trailing data");
        fails_at(b"le\n", 2, "trailing data");
        fails_at(b"lxe", 1, "found 'x'");
        fails_at(b"l\x00e", 1, "byte 0x00");
    }

    #[test]
    fn duplicate_keys_rejected() {
        fails_at(b"d1:ai1e1:ai2ee", 7, "duplicate dictionary key \"a\"");
        fails_at(b"d1:ai1e1:bi2e1:ai3ee", 13, "duplicate");
        assert!(dict_entry_span(b"d1:ai1e1:ai2ee", b"a").is_err());
    }

    #[test]
    fn unsorted_keys_accepted() {
        let v = decode(b"d1:bi2e1:ai1ee").unwrap();
        assert_eq!(v.get(b"a"), Some(&Value::Int(1)));
        assert_eq!(v.get(b"b"), Some(&Value::Int(2)));
        // Re-encoding sorts them.
        assert_eq!(v.encode(), b"d1:ai1e1:bi2ee");
    }

    #[test]
    fn depth_limit() {
        let ok = [vec![b'l'; MAX_DEPTH], vec![b'e'; MAX_DEPTH]].concat();
        assert!(decode(&ok).is_ok());
        let deep = [vec![b'l'; MAX_DEPTH + 1], vec![b'e'; MAX_DEPTH + 1]].concat();
        fails_at(&deep, MAX_DEPTH, "nested deeper than 64");
        let mut dicts = Vec::new();
        for _ in 0..=MAX_DEPTH {
            dicts.extend_from_slice(b"d1:k");
        }
        dicts.extend_from_slice(b"i1e");
        dicts.extend(std::iter::repeat_n(b'e', MAX_DEPTH + 1));
        fails_at(&dicts, 4 * MAX_DEPTH, "nested deeper");
    }

    /// Inputs that `decode` refuses, for checking that the functions that
    /// build nothing refuse them the same way.
    const BAD: &[&[u8]] = &[
        b"",
        b"i03e",
        b"i-0e",
        b"ie",
        b"5:ab",
        b"01:a",
        b"l",
        b"li1e",
        b"d1:a",
        b"d1:ai1e1:ai2ee",
        b"di1ei2ee",
        b"d1:ai1e",
        b"x",
        b"i1ei2e",
        b"ld1:ai1e1:ai2eee",
        b"d1:bl1:ae1:bi1ee",
    ];

    #[test]
    fn validate_refuses_what_decode_refuses_at_the_same_offset() {
        for input in BAD {
            let d = decode(input).unwrap_err();
            let v = validate(input).unwrap_err();
            assert_eq!(d, v, "{:?}", String::from_utf8_lossy(input));
        }
        for input in [
            &b"i42e"[..],
            b"4:spam",
            b"le",
            b"de",
            b"d1:ad1:bl1:cee1:zi0ee",
        ] {
            assert!(validate(input).is_ok());
        }
        let deep = [vec![b'l'; MAX_DEPTH + 1], vec![b'e'; MAX_DEPTH + 1]].concat();
        assert_eq!(validate(&deep).unwrap_err(), decode(&deep).unwrap_err());
    }

    #[test]
    fn dictionary_and_list_items_are_raw_slices() {
        let input = b"d1:bl1:xi7ee1:ai1e1:cd1:zi0eee";
        let items = dict_items(input).unwrap();
        let got: Vec<(&[u8], &[u8])> = items;
        assert_eq!(
            got,
            vec![
                (&b"b"[..], &b"l1:xi7ee"[..]),
                (b"a", b"i1e"),
                (b"c", b"d1:zi0ee"),
            ]
        );
        let list: Vec<&[u8]> = list_iter(b"l1:xi7ed1:ai1eee").unwrap().collect();
        assert_eq!(list, vec![&b"1:x"[..], b"i7e", b"d1:ai1ee"]);
        assert_eq!(list_iter(b"le").unwrap().count(), 0);
        assert_eq!(raw_string(b"4:spam"), Some(&b"spam"[..]));
        assert_eq!(raw_string(b"0:"), Some(&b""[..]));
        assert_eq!(raw_string(b"4:spamx"), None);
        assert_eq!(raw_string(b"i4e"), None);
        assert_eq!(raw_string(b"9:spam"), None);
        // The wrong kind of container, or anything wrong inside, is refused.
        assert_eq!(dict_items(b"le").unwrap_err().offset, 0);
        assert_eq!(list_iter(b"de").err().unwrap().offset, 0);
        assert_eq!(dict_items(b"de1:a").unwrap_err().offset, 2);
        assert!(list_iter(b"ld1:ai1e1:ai2eee").is_err());
        for input in BAD.iter().filter(|i| i.first() == Some(&b'd')) {
            assert_eq!(
                dict_items(input).unwrap_err(),
                decode(input).unwrap_err(),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn hostile_nesting_on_small_stack() {
        let handle = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let lists = vec![b'l'; 100_000];
                let e1 = decode(&lists).unwrap_err();
                let mut dicts = Vec::new();
                for _ in 0..100_000 {
                    dicts.extend_from_slice(b"d1:a");
                }
                let e2 = decode(&dicts).unwrap_err();
                let e3 = dict_entry_span(&dicts, b"a").unwrap_err();
                (e1.offset, e2.offset, e3.offset)
            })
            .unwrap();
        assert_eq!(
            handle.join().unwrap(),
            (MAX_DEPTH, 4 * MAX_DEPTH, 4 * MAX_DEPTH)
        );
    }

    #[test]
    fn structure_cost_is_capped() {
        // Many tiny dictionaries: 8 bytes of input each, far more in memory.
        let n = MAX_STRUCTURE_BYTES / (DICT_NODE_COST + STRING_COST) + 10;
        let mut input = b"l".to_vec();
        for _ in 0..n {
            input.extend_from_slice(b"d1:ai0ee");
        }
        input.push(b'e');
        let e = decode(&input).unwrap_err();
        assert!(e.message.contains("more than 128 MiB of memory"), "{e}");
        assert!(e.offset < input.len());
        // Finding a span builds nothing, so the same list is fine there.
        let wrapped = [b"d1:a", &input[..], b"e"].concat();
        assert_eq!(
            dict_entry_span(&wrapped, b"a").unwrap(),
            Some(4..wrapped.len() - 1)
        );
        // The same count of integers costs a list slot each: fine.
        let mut ints = b"l".to_vec();
        for _ in 0..n {
            ints.extend_from_slice(b"i0e");
        }
        ints.push(b'e');
        assert!(decode(&ints).is_ok());
        // A long string is its bytes, not structure.
        let big = [b"16777216:".as_slice(), &vec![b'x'; 1 << 24]].concat();
        assert!(decode(&big).is_ok());
    }

    #[test]
    fn entry_span_is_raw_bytes() {
        // Unsorted keys inside the value: the span must be the bytes as given.
        let input = b"d8:announce3:url4:infod4:name1:x6:lengthi3ee1:zi0ee";
        let span = dict_entry_span(input, b"info").unwrap().unwrap();
        assert_eq!(&input[span], b"d4:name1:x6:lengthi3ee");
        let span = dict_entry_span(input, b"announce").unwrap().unwrap();
        assert_eq!(&input[span], b"3:url");
        assert_eq!(dict_entry_span(input, b"nope").unwrap(), None);
    }

    #[test]
    fn entry_span_errors() {
        assert_eq!(dict_entry_span(b"", b"a").unwrap_err().offset, 0);
        assert_eq!(dict_entry_span(b"li1ee", b"a").unwrap_err().offset, 0);
        assert_eq!(dict_entry_span(b"d1:ai1e", b"a").unwrap_err().offset, 7);
        assert_eq!(dict_entry_span(b"d1:ai1eex", b"a").unwrap_err().offset, 8);
        assert_eq!(dict_entry_span(b"di1ei1ee", b"a").unwrap_err().offset, 1);
        assert_eq!(dict_entry_span(b"d1:ai0-e", b"a").unwrap_err().offset, 6);
        assert_eq!(dict_entry_span(b"de", b"a").unwrap(), None);
    }
}

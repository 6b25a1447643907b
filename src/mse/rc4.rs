//! RC4, the stream cipher MSE uses once the keys are agreed.
//!
//! MSE throws away the first 1024 bytes of each keystream (the start of an
//! RC4 keystream is known to leak key bits); [`Rc4::mse`] does that.

/// An RC4 keystream generator: the 256-byte permutation and its two indexes.
#[derive(Clone)]
pub struct Rc4 {
    s: [u8; 256],
    i: u8,
    j: u8,
}

impl std::fmt::Debug for Rc4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The state is key material: keep it out of logs.
        f.write_str("Rc4 { .. }")
    }
}

impl Rc4 {
    /// Plain RC4 keyed with `key` (1 to 256 bytes), nothing discarded.
    pub fn new(key: &[u8]) -> Rc4 {
        assert!(
            !key.is_empty() && key.len() <= 256,
            "RC4 key of 1..=256 bytes"
        );
        let mut s = [0u8; 256];
        for (n, v) in s.iter_mut().enumerate() {
            *v = n as u8;
        }
        // Key scheduling: walk the table once, swapping each entry with one
        // chosen by the running sum of the table and the key.
        let mut j: u8 = 0;
        for n in 0..256 {
            j = j.wrapping_add(s[n]).wrapping_add(key[n % key.len()]);
            s.swap(n, j as usize);
        }
        Rc4 { s, i: 0, j: 0 }
    }

    /// RC4 as MSE uses it: keyed with `key`, the first 1024 bytes of the
    /// keystream discarded.
    pub fn mse(key: &[u8]) -> Rc4 {
        let mut r = Rc4::new(key);
        r.skip(1024);
        r
    }

    /// Advances the keystream by `n` bytes.
    pub fn skip(&mut self, n: usize) {
        for _ in 0..n {
            self.next_byte();
        }
    }

    fn next_byte(&mut self) -> u8 {
        self.i = self.i.wrapping_add(1);
        let si = self.s[self.i as usize];
        self.j = self.j.wrapping_add(si);
        self.s.swap(self.i as usize, self.j as usize);
        let k = self.s[self.i as usize].wrapping_add(self.s[self.j as usize]);
        self.s[k as usize]
    }

    /// XORs the next `buf.len()` keystream bytes into `buf` (encrypts or
    /// decrypts in place: the two are the same operation).
    pub fn apply(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b ^= self.next_byte();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|n| u8::from_str_radix(&s[n..n + 2], 16).unwrap())
            .collect()
    }

    /// The keystream from `offset`, 16 bytes.
    fn stream_at(key: &[u8], offset: usize) -> Vec<u8> {
        let mut r = Rc4::new(key);
        r.skip(offset);
        let mut out = vec![0u8; 16];
        r.apply(&mut out);
        out
    }

    // RFC 6229, section 2: keystreams for the keys 0x0102030405... .
    #[test]
    fn rfc6229_40_bit_key() {
        let key = hex("0102030405");
        let cases = [
            (0x000, "b2 39 63 05 f0 3d c0 27 cc c3 52 4a 0a 11 18 a8"),
            (0x010, "69 82 94 4f 18 fc 82 d5 89 c4 03 a4 7a 0d 09 19"),
            (0x3f0, "45 12 90 48 e6 a0 ed 0b 56 b4 90 33 8f 07 8d a5"),
            (0x400, "30 ab bc c7 c2 0b 01 60 9f 23 ee 2d 5f 6b b7 df"),
            (0x1000, "ff 25 b5 89 95 99 67 07 e5 1f bd f0 8b 34 d8 75"),
        ];
        for (offset, want) in cases {
            assert_eq!(stream_at(&key, offset), hex(want), "offset {offset:#x}");
        }
    }

    #[test]
    fn rfc6229_128_bit_key() {
        let key = hex("0102030405060708090a0b0c0d0e0f10");
        let cases = [
            (0x000, "9a c7 cc 9a 60 9d 1e f7 b2 93 28 99 cd e4 1b 97"),
            (0x010, "52 48 c4 95 90 14 12 6a 6e 8a 84 f1 1d 1a 9e 1c"),
            (0x400, "bd f0 32 4e 60 83 dc c6 d3 ce dd 3c a8 c5 3c 16"),
            (0xc00, "c0 5d 88 ab d5 03 57 f9 35 a6 3c 59 ee 53 76 23"),
        ];
        for (offset, want) in cases {
            assert_eq!(stream_at(&key, offset), hex(want), "offset {offset:#x}");
        }
    }

    #[test]
    fn the_mse_variant_starts_at_offset_1024() {
        let key = hex("0102030405");
        let mut r = Rc4::mse(&key);
        let mut out = vec![0u8; 16];
        r.apply(&mut out);
        assert_eq!(out, hex("30 ab bc c7 c2 0b 01 60 9f 23 ee 2d 5f 6b b7 df"));
    }

    #[test]
    fn applying_twice_gives_the_plaintext_back() {
        let mut a = Rc4::mse(b"some key");
        let mut b = Rc4::mse(b"some key");
        let mut buf = b"attack at dawn".to_vec();
        a.apply(&mut buf);
        assert_ne!(&buf[..], b"attack at dawn");
        b.apply(&mut buf);
        assert_eq!(&buf[..], b"attack at dawn");
    }
}

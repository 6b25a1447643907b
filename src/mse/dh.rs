//! Diffie-Hellman over the 768-bit MSE prime, generator 2.
//!
//! Numbers are 768-bit unsigned integers in twelve 64-bit limbs, least
//! significant first. Multiplication modulo P is Montgomery's (see
//! [`Montgomery`]); a plain shift-and-add version checks it in the tests.
//! Exponents are the 160-bit private keys MSE uses, so one side's half of a
//! key exchange costs about 500 modular multiplications. Nothing here is constant-time: MSE is obfuscation, not
//! authenticated encryption, and the threat model says so.

use std::io::Read;

const LIMBS: usize = 12;
/// Bytes in a public key or a shared secret on the wire.
pub const KEY_BYTES: usize = 96;
/// Bytes in a private key: MSE uses 160 random bits.
pub const PRIVATE_BYTES: usize = 20;

type Num = [u64; LIMBS];

/// The MSE prime, big-endian hex as the spec gives it.
const P_HEX: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74\
                     020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437\
                     4FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563";

fn prime() -> Num {
    let mut bytes = [0u8; KEY_BYTES];
    let hex = P_HEX.as_bytes();
    for (n, b) in bytes.iter_mut().enumerate() {
        let s = std::str::from_utf8(&hex[2 * n..2 * n + 2]).expect("ascii");
        *b = u8::from_str_radix(s, 16).expect("hex");
    }
    from_be(&bytes)
}

/// A big-endian byte string (at most 96 bytes) as a number.
fn from_be(bytes: &[u8]) -> Num {
    assert!(bytes.len() <= KEY_BYTES);
    let mut full = [0u8; KEY_BYTES];
    full[KEY_BYTES - bytes.len()..].copy_from_slice(bytes);
    let mut n = [0u64; LIMBS];
    for (k, limb) in n.iter_mut().enumerate() {
        // Limb k holds bytes counted from the end.
        let end = KEY_BYTES - 8 * k;
        *limb = u64::from_be_bytes(full[end - 8..end].try_into().expect("8 bytes"));
    }
    n
}

/// A number as 96 big-endian bytes (leading zeros kept, as MSE sends it).
fn to_be(n: &Num) -> [u8; KEY_BYTES] {
    let mut out = [0u8; KEY_BYTES];
    for (k, limb) in n.iter().enumerate() {
        let end = KEY_BYTES - 8 * k;
        out[end - 8..end].copy_from_slice(&limb.to_be_bytes());
    }
    out
}

/// a >= b.
fn ge(a: &Num, b: &Num) -> bool {
    for k in (0..LIMBS).rev() {
        if a[k] != b[k] {
            return a[k] > b[k];
        }
    }
    true
}

/// a - b, wrapping modulo 2^768.
fn sub(a: &Num, b: &Num) -> Num {
    let mut out = [0u64; LIMBS];
    let mut borrow = false;
    for k in 0..LIMBS {
        let (d, b1) = a[k].overflowing_sub(b[k]);
        let (d, b2) = d.overflowing_sub(borrow as u64);
        out[k] = d;
        borrow = b1 || b2;
    }
    out
}

/// (a + b) mod p, for a, b < p.
fn add_mod(a: &Num, b: &Num, p: &Num) -> Num {
    let mut sum = [0u64; LIMBS];
    let mut carry = false;
    for k in 0..LIMBS {
        let (s, c1) = a[k].overflowing_add(b[k]);
        let (s, c2) = s.overflowing_add(carry as u64);
        sum[k] = s;
        carry = c1 || c2;
    }
    // a + b < 2p, so one subtraction brings it below p; when the sum
    // overflowed 768 bits the wrapping subtraction still lands right.
    if carry || ge(&sum, p) {
        sub(&sum, p)
    } else {
        sum
    }
}

#[cfg(test)]
fn bit(n: &Num, i: usize) -> bool {
    (n[i / 64] >> (i % 64)) & 1 == 1
}

/// (a * b) mod p, for a, b < p: shift and add, from a's top bit down. Slow
/// (768 modular additions) but plain; the tests check the fast path by it.
#[cfg(test)]
fn mul_mod(a: &Num, b: &Num, p: &Num) -> Num {
    let mut r = [0u64; LIMBS];
    for i in (0..LIMBS * 64).rev() {
        r = add_mod(&r, &r, p);
        if bit(a, i) {
            r = add_mod(&r, b, p);
        }
    }
    r
}

/// Montgomery arithmetic modulo an odd p, with R = 2^768: numbers are kept
/// as x*R mod p, and a product costs one 12x12-limb multiplication
/// interleaved with the reduction (no division anywhere).
struct Montgomery {
    p: Num,
    /// -p^-1 mod 2^64.
    p_inv_neg: u64,
    /// R mod p: 1 in Montgomery form.
    one: Num,
    /// R^2 mod p: multiplying by it brings a number into Montgomery form.
    r2: Num,
}

impl Montgomery {
    fn new(p: Num) -> Montgomery {
        // Newton's iteration doubles the correct low bits of p^-1 each
        // step: 1 bit (any odd x is its own inverse mod 2) to 64 in six.
        let mut inv: u64 = 1;
        for _ in 0..6 {
            inv = inv.wrapping_mul(2u64.wrapping_sub(p[0].wrapping_mul(inv)));
        }
        debug_assert_eq!(p[0].wrapping_mul(inv), 1);
        // p > 2^767, so R - p < p is R mod p already.
        let one = sub(&[0; LIMBS], &p);
        let mut r2 = one;
        for _ in 0..LIMBS * 64 {
            r2 = add_mod(&r2, &r2, &p);
        }
        Montgomery {
            p,
            p_inv_neg: inv.wrapping_neg(),
            one,
            r2,
        }
    }

    /// a * b / R mod p, for a, b < p.
    fn mul(&self, a: &Num, b: &Num) -> Num {
        let p = &self.p;
        // t holds up to two limbs more than p while it is built.
        let mut t = [0u64; LIMBS + 2];
        for &bi in b.iter() {
            // t += a * b[i]
            let mut carry: u64 = 0;
            for j in 0..LIMBS {
                let v = t[j] as u128 + a[j] as u128 * bi as u128 + carry as u128;
                t[j] = v as u64;
                carry = (v >> 64) as u64;
            }
            let v = t[LIMBS] as u128 + carry as u128;
            t[LIMBS] = v as u64;
            t[LIMBS + 1] = (v >> 64) as u64;
            // Add the multiple of p that clears the low limb, then drop it:
            // t = (t + m * p) / 2^64.
            let m = t[0].wrapping_mul(self.p_inv_neg);
            let v = t[0] as u128 + m as u128 * p[0] as u128;
            let mut carry = (v >> 64) as u64;
            for j in 1..LIMBS {
                let v = t[j] as u128 + m as u128 * p[j] as u128 + carry as u128;
                t[j - 1] = v as u64;
                carry = (v >> 64) as u64;
            }
            let v = t[LIMBS] as u128 + carry as u128;
            t[LIMBS - 1] = v as u64;
            t[LIMBS] = t[LIMBS + 1] + (v >> 64) as u64;
            t[LIMBS + 1] = 0;
        }
        // The result is below 2p: one subtraction at most.
        let mut out = [0u64; LIMBS];
        out.copy_from_slice(&t[..LIMBS]);
        if t[LIMBS] != 0 || ge(&out, p) {
            sub(&out, p)
        } else {
            out
        }
    }

    /// base^exp mod p, exp big-endian bytes; square and multiply.
    fn pow(&self, base: &Num, exp: &[u8]) -> Num {
        let base_m = self.mul(base, &self.r2);
        let mut r = self.one;
        for byte in exp {
            for shift in (0..8).rev() {
                r = self.mul(&r, &r);
                if (byte >> shift) & 1 == 1 {
                    r = self.mul(&r, &base_m);
                }
            }
        }
        let mut plain_one = [0u64; LIMBS];
        plain_one[0] = 1;
        self.mul(&r, &plain_one)
    }
}

/// base^exp mod p.
fn pow_mod(base: &Num, exp: &[u8], p: &Num) -> Num {
    Montgomery::new(*p).pow(base, exp)
}

/// Our half of a key exchange: the private exponent.
pub struct KeyPair {
    private: [u8; PRIVATE_BYTES],
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyPair { .. }")
    }
}

impl KeyPair {
    /// A fresh key pair from the OS's random source (/dev/urandom), or, if
    /// that cannot be read, from the process's own generator.
    pub fn generate() -> KeyPair {
        let mut private = [0u8; PRIVATE_BYTES];
        random_bytes(&mut private);
        KeyPair { private }
    }

    /// A key pair with a given private exponent (tests).
    pub fn from_private(private: [u8; PRIVATE_BYTES]) -> KeyPair {
        KeyPair { private }
    }

    /// Our public key, 2^x mod P, as 96 big-endian bytes.
    pub fn public(&self) -> [u8; KEY_BYTES] {
        let mut two = [0u64; LIMBS];
        two[0] = 2;
        to_be(&pow_mod(&two, &self.private, &prime()))
    }

    /// The shared secret S = Y^x mod P from the other side's public key Y,
    /// or `None` when Y is not a usable public key (outside 2..P-2, where
    /// the secret would be 0, 1 or ±1 and known to anyone watching).
    pub fn shared(&self, their_public: &[u8; KEY_BYTES]) -> Option<[u8; KEY_BYTES]> {
        let p = prime();
        let y = from_be(their_public);
        let mut two = [0u64; LIMBS];
        two[0] = 2;
        let p_minus_1 = sub(&p, &{
            let mut one = [0u64; LIMBS];
            one[0] = 1;
            one
        });
        if !ge(&y, &two) || ge(&y, &p_minus_1) {
            return None;
        }
        Some(to_be(&pow_mod(&y, &self.private, &p)))
    }
}

/// Fills `buf` from /dev/urandom, falling back on [`crate::rng::Rng`].
pub fn random_bytes(buf: &mut [u8]) {
    let from_os = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(buf));
    if from_os.is_err() {
        crate::rng::Rng::from_entropy().fill(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|n| u8::from_str_radix(&s[n..n + 2], 16).unwrap())
            .collect()
    }

    fn private(s: &str) -> [u8; PRIVATE_BYTES] {
        hex(s).try_into().unwrap()
    }

    // Expected values computed with python3's pow(2, x, P) and pow(Y, x, P).
    const A_PRIV: &str = "0123456789abcdef0123456789abcdef01234567";
    const B_PRIV: &str = "fedcba9876543210fedcba9876543210fedcba98";
    const A_PUB: &str = "6fd4bc7aa649593205ec30348a3ccc737b61fa01e9e1762c2c53eb69033afecb\
df7c13b8ac3643af78d0760b0f42db009f2b96c970f009d060faf617f117d0f1c221cea0561b9a86e852fc70a6f09ad0\
f82378603aa5e56b811deb3f534bf276";
    const B_PUB: &str = "e2666b9cffca63998c8e806db50c47ac12512b327c5ec48d62e0a43c2961afcf\
136e7219fe2ec51e656b2f01ed089dd8cc53c78e7d650df59a752131bcf8ffff122144bf10c6269b47886d6af5838922\
3c66153ebb5e3dc18ea849ceb60ac18e";
    const SHARED: &str = "0bf59f468e43b9f22a5fd0ccbc9bd7825a7495f6e670c31533db364b536ee297\
a737d565ff7829d4c397de16aec19f893e3d28eaa14eaf7e17e1026697089fdff81c7dc7e4c65e6211443d9dd3e5d8b0\
c0e8b2888af39637af18a75cc1b17685";

    #[test]
    fn the_prime_round_trips_and_is_odd() {
        let p = prime();
        assert_eq!(p[0], 0x90563);
        assert_eq!(p[LIMBS - 1], u64::MAX);
        assert_eq!(
            to_be(&p).to_vec(),
            hex(&P_HEX.replace(' ', "").to_lowercase())
        );
    }

    #[test]
    fn public_keys_match_an_independent_computation() {
        let a = KeyPair::from_private(private(A_PRIV));
        let b = KeyPair::from_private(private(B_PRIV));
        assert_eq!(a.public().to_vec(), hex(A_PUB));
        assert_eq!(b.public().to_vec(), hex(B_PUB));
    }

    #[test]
    fn both_sides_agree_on_the_shared_secret() {
        let a = KeyPair::from_private(private(A_PRIV));
        let b = KeyPair::from_private(private(B_PRIV));
        let s_a = a.shared(&b.public()).unwrap();
        let s_b = b.shared(&a.public()).unwrap();
        assert_eq!(s_a, s_b);
        assert_eq!(s_a.to_vec(), hex(SHARED));
        // And with fresh random keys.
        let c = KeyPair::generate();
        let d = KeyPair::generate();
        assert_eq!(c.shared(&d.public()), d.shared(&c.public()));
    }

    #[test]
    fn degenerate_public_keys_are_refused() {
        let a = KeyPair::from_private(private(A_PRIV));
        let mut y = [0u8; KEY_BYTES];
        assert!(a.shared(&y).is_none()); // 0
        y[KEY_BYTES - 1] = 1;
        assert!(a.shared(&y).is_none()); // 1
        assert!(a.shared(&[0xff; KEY_BYTES]).is_none()); // above P
        let p_minus_1 = sub(&prime(), &{
            let mut one = [0u64; LIMBS];
            one[0] = 1;
            one
        });
        assert!(a.shared(&to_be(&p_minus_1)).is_none());
        y[KEY_BYTES - 1] = 2;
        assert!(a.shared(&y).is_some());
    }

    #[test]
    fn montgomery_products_match_shift_and_add() {
        let p = prime();
        let m = Montgomery::new(p);
        let mut rng = crate::rng::Rng::new(17);
        for _ in 0..50 {
            let mut a = [0u64; LIMBS];
            let mut b = [0u64; LIMBS];
            for k in 0..LIMBS {
                a[k] = rng.next_u64();
                b[k] = rng.next_u64();
            }
            a[LIMBS - 1] >>= 1; // below p
            b[LIMBS - 1] = rng.next_u64() >> 2;
            // Into Montgomery form, multiply, and back out.
            let am = m.mul(&a, &m.r2);
            let bm = m.mul(&b, &m.r2);
            let mut one = [0u64; LIMBS];
            one[0] = 1;
            let got = m.mul(&m.mul(&am, &bm), &one);
            assert_eq!(got, mul_mod(&a, &b, &p));
        }
        // Near the top: (p-1)(p-2).
        let mut one = [0u64; LIMBS];
        one[0] = 1;
        let pm1 = sub(&p, &one);
        let pm2 = sub(&pm1, &one);
        let got = m.mul(&m.mul(&m.mul(&pm1, &m.r2), &m.mul(&pm2, &m.r2)), &one);
        assert_eq!(got, mul_mod(&pm1, &pm2, &p));
    }

    #[test]
    fn mul_mod_wraps_past_the_prime() {
        // (P-1)^2 = 1 mod P.
        let p = prime();
        let mut one = [0u64; LIMBS];
        one[0] = 1;
        let m = sub(&p, &one);
        assert_eq!(mul_mod(&m, &m, &p), one);
    }
}

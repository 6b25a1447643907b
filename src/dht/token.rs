//! Announce tokens (BEP 5): a `get_peers` answer carries a token that the
//! asker must send back with `announce_peer`, proving it can receive at the
//! address it announces from.
//!
//! A token is SHA-1(secret ++ ip): nothing is stored per asker. The secret
//! changes every [`ROTATE_EVERY`]; the previous one is still accepted, so a
//! token stays valid for 5 to 10 minutes and then stops working.
//!
//! Secrets are SHA-1 of the previous secret, fresh bits from
//! [`Rng::from_entropy`] and a counter, so they never repeat and cannot be
//! derived from anything we send.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use sha1::{Digest, Sha1};

use crate::rng::Rng;

/// How often the secret changes.
pub const ROTATE_EVERY: Duration = Duration::from_secs(5 * 60);

/// The current and previous secrets.
#[derive(Debug)]
pub struct Tokens {
    current: [u8; 20],
    previous: [u8; 20],
    rotated: Instant,
    rng: Rng,
    counter: u64,
}

impl Tokens {
    /// Fresh secrets, the first period starting `now`.
    pub fn new(now: Instant) -> Tokens {
        let mut t = Tokens {
            current: [0; 20],
            previous: [0; 20],
            rotated: now,
            rng: Rng::from_entropy(),
            counter: 0,
        };
        t.current = t.fresh();
        t.previous = t.fresh();
        t
    }

    fn fresh(&mut self) -> [u8; 20] {
        self.counter = self.counter.wrapping_add(1);
        let mut h = Sha1::new();
        h.update(self.current);
        h.update(self.rng.next_u64().to_le_bytes());
        h.update(Rng::from_entropy().next_u64().to_le_bytes());
        h.update(self.counter.to_le_bytes());
        h.finalize().into()
    }

    fn rotate(&mut self, now: Instant) {
        let age = now.saturating_duration_since(self.rotated);
        if age < ROTATE_EVERY {
            return;
        }
        if age >= ROTATE_EVERY.saturating_mul(2) {
            // Both periods are over: neither secret may be accepted.
            self.previous = self.fresh();
        } else {
            self.previous = self.current;
        }
        self.current = self.fresh();
        self.rotated = now;
    }

    /// The token for an asker at `ip`.
    pub fn make(&mut self, ip: IpAddr, now: Instant) -> Vec<u8> {
        self.rotate(now);
        token(&self.current, ip)
    }

    /// Whether `token` is one we gave `ip` during this period or the last.
    pub fn check(&mut self, token: &[u8], ip: IpAddr, now: Instant) -> bool {
        self.rotate(now);
        token == self::token(&self.current, ip).as_slice()
            || token == self::token(&self.previous, ip).as_slice()
    }
}

fn token(secret: &[u8; 20], ip: IpAddr) -> Vec<u8> {
    let mut h = Sha1::new();
    h.update(secret);
    match ip {
        IpAddr::V4(ip) => h.update(ip.octets()),
        IpAddr::V6(ip) => h.update(ip.octets()),
    }
    h.finalize().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn token_is_valid_for_its_ip_only() {
        let now = Instant::now();
        let mut t = Tokens::new(now);
        let tok = t.make(ip("10.0.0.1"), now);
        assert_eq!(tok.len(), 20);
        assert!(t.check(&tok, ip("10.0.0.1"), now));
        assert!(!t.check(&tok, ip("10.0.0.2"), now));
        assert!(!t.check(&tok, ip("::ffff:10.0.0.1"), now));
        assert!(!t.check(b"", ip("10.0.0.1"), now));
        assert!(!t.check(&tok[..19], ip("10.0.0.1"), now));
    }

    #[test]
    fn previous_secret_is_accepted_older_is_not() {
        let now = Instant::now();
        let mut t = Tokens::new(now);
        let a = ip("192.168.1.7");
        let old = t.make(a, now);
        // One rotation: the token's secret is now the previous one.
        let t1 = now + ROTATE_EVERY + Duration::from_secs(1);
        assert!(t.check(&old, a, t1));
        let newer = t.make(a, t1);
        assert_ne!(newer, old);
        // Second rotation: the first secret is gone, the second remains.
        let t2 = t1 + ROTATE_EVERY;
        assert!(!t.check(&old, a, t2));
        assert!(t.check(&newer, a, t2));
    }

    #[test]
    fn long_silence_invalidates_both_secrets() {
        let now = Instant::now();
        let mut t = Tokens::new(now);
        let a = ip("192.168.1.7");
        let tok = t.make(a, now);
        assert!(!t.check(&tok, a, now + ROTATE_EVERY * 2));
    }

    #[test]
    fn two_tables_give_different_tokens() {
        let now = Instant::now();
        let a = ip("1.2.3.4");
        assert_ne!(Tokens::new(now).make(a, now), Tokens::new(now).make(a, now));
    }
}

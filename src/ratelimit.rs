//! Rate limits: one token bucket per direction, shared by every worker.
//!
//! `--max-download-rate` and `--max-upload-rate` each become one
//! [`TokenBucket`] behind an `Arc`, which every worker of the session holds
//! (as an `Option`: with no limit there is no bucket, and the hot path pays
//! one `is_some` check). The bucket is a single atomic integer, so workers
//! never wait on a lock.
//!
//! The bucket keeps a "paid-up time" `t`: the clock reading at which
//! everything taken so far will have been earned at the configured rate. A
//! worker may take bytes only while `t` is not in the future (the bucket is
//! not in debt); taking `n` bytes moves `t` forward by `n / rate`. An idle
//! bucket saves up at most [`BURST`] worth of credit (`t` never lags the
//! clock by more than that), which also absorbs workers waking a little
//! late. So over any interval of length `T` the bytes taken are at most
//! `rate × (T + BURST)` plus the one take that put the bucket into debt, and
//! when demand exceeds the rate they are at least `rate × T` minus the same.
//!
//! Uploads take a block's bytes before sending it; downloads take the bytes
//! a read returned (reads are capped at [`TokenBucket::read_cap`] while a
//! limit is set), so the sender is slowed by TCP flow control. The clock is
//! injectable ([`Clock`]) so the arithmetic is tested on a simulated clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Credit an idle bucket saves up: a tenth of a second at the limit.
pub const BURST: Duration = Duration::from_millis(100);

/// Smallest and largest read while a download limit is set.
const MIN_READ_CAP: u64 = 16 * 1024;
const MAX_READ_CAP: u64 = 128 * 1024;

/// A monotonic source of time for a bucket.
pub trait Clock: Send + Sync {
    /// Nanoseconds since a fixed origin; never decreases.
    fn now_ns(&self) -> u64;
}

/// The real clock: `Instant`, measured from the bucket's creation.
#[derive(Debug)]
pub struct MonotonicClock {
    origin: Instant,
}

impl Default for MonotonicClock {
    fn default() -> Self {
        MonotonicClock {
            origin: Instant::now(),
        }
    }
}

impl Clock for MonotonicClock {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A clock moved by hand, for tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicU64,
}

impl ManualClock {
    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .now
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                Some(t.saturating_add(ns))
            });
    }

    /// Sets the clock to `ns` if that is later than now.
    pub fn set_ns(&self, ns: u64) {
        self.now.fetch_max(ns, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now_ns(&self) -> u64 {
        (**self).now_ns()
    }
}

/// A token bucket of `rate` bytes per second, safe to share between threads.
#[derive(Debug)]
pub struct TokenBucket<C: Clock = MonotonicClock> {
    rate: u64,
    burst_ns: u64,
    /// When everything taken so far is paid for (clock nanoseconds).
    paid_up: AtomicU64,
    clock: C,
}

impl TokenBucket<MonotonicClock> {
    /// A bucket on the real clock; `None` when `rate` is 0 (unlimited).
    pub fn limit(rate: u64) -> Option<TokenBucket> {
        (rate > 0).then(|| TokenBucket::with_clock(rate, MonotonicClock::default()))
    }
}

impl<C: Clock> TokenBucket<C> {
    /// A bucket of `rate` bytes per second (at least 1) on `clock`.
    pub fn with_clock(rate: u64, clock: C) -> TokenBucket<C> {
        let now = clock.now_ns();
        TokenBucket {
            rate: rate.max(1),
            burst_ns: BURST.as_nanos() as u64,
            paid_up: AtomicU64::new(now),
            clock,
        }
    }

    /// The limit in bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Nanoseconds `n` bytes take at the limit (rounded up).
    fn cost(&self, n: u64) -> u64 {
        let ns = (n as u128 * 1_000_000_000).div_ceil(self.rate as u128);
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    /// Takes `n` bytes if the bucket is not in debt; otherwise takes nothing
    /// and says how long until it is out of debt.
    pub fn try_take(&self, n: u64) -> Result<(), Duration> {
        let now = self.clock.now_ns();
        let floor = now.saturating_sub(self.burst_ns);
        let mut cur = self.paid_up.load(Ordering::Acquire);
        loop {
            let base = cur.max(floor);
            if base > now {
                return Err(Duration::from_nanos(base - now));
            }
            let next = base.saturating_add(self.cost(n));
            match self
                .paid_up
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(()),
                Err(seen) => cur = seen,
            }
        }
    }

    /// How long until the bucket is out of debt (`None`: it is not).
    pub fn wait(&self) -> Option<Duration> {
        let now = self.clock.now_ns();
        let base = self.paid_up.load(Ordering::Acquire);
        (base > now).then(|| Duration::from_nanos(base - now))
    }

    /// Takes `n` bytes unconditionally (they were already moved), going
    /// into debt if need be.
    pub fn charge(&self, n: u64) {
        let floor = self.clock.now_ns().saturating_sub(self.burst_ns);
        let cost = self.cost(n);
        let _ = self
            .paid_up
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                Some(cur.max(floor).saturating_add(cost))
            });
    }

    /// The most bytes one read should ask for under this limit: about 20 ms
    /// at the limit, between 16 KiB and 128 KiB.
    pub fn read_cap(&self) -> usize {
        (self.rate / 50).clamp(MIN_READ_CAP, MAX_READ_CAP) as usize
    }
}

/// The session's limits, cloned into every worker. `None` means unlimited.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// Shared by all workers' reads.
    pub download: Option<std::sync::Arc<TokenBucket>>,
    /// Shared by all workers' block uploads.
    pub upload: Option<std::sync::Arc<TokenBucket>>,
}

impl Limits {
    /// Buckets for the given rates in bytes per second (0 = unlimited).
    pub fn new(max_download: u64, max_upload: u64) -> Limits {
        Limits {
            download: TokenBucket::limit(max_download).map(std::sync::Arc::new),
            upload: TokenBucket::limit(max_upload).map(std::sync::Arc::new),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use std::sync::Arc;

    const MS: u64 = 1_000_000;

    fn bucket(rate: u64) -> (Arc<ManualClock>, TokenBucket<Arc<ManualClock>>) {
        let clock = Arc::new(ManualClock::default());
        clock.set_ns(1_000 * MS); // not at zero, so the burst floor is real
        let b = TokenBucket::with_clock(rate, clock.clone());
        (clock, b)
    }

    #[test]
    fn a_take_puts_the_bucket_in_debt_for_its_cost() {
        let (clock, b) = bucket(1000);
        assert_eq!(b.try_take(500), Ok(()));
        // 500 bytes at 1000 B/s: half a second of debt.
        assert_eq!(b.try_take(1), Err(Duration::from_millis(500)));
        assert_eq!(b.wait(), Some(Duration::from_millis(500)));
        clock.advance(Duration::from_millis(499));
        assert!(b.try_take(1).is_err());
        clock.advance(Duration::from_millis(1));
        assert_eq!(b.wait(), None);
        assert_eq!(b.try_take(1), Ok(()));
    }

    #[test]
    fn an_idle_bucket_saves_at_most_the_burst() {
        let (clock, b) = bucket(1000);
        clock.advance(Duration::from_secs(60));
        // 100 ms of credit: 100 bytes go without debt, the 101st makes debt.
        let mut took = 0;
        while b.try_take(10).is_ok() {
            took += 10;
        }
        assert_eq!(took, 110, "burst of 100 bytes plus the take that made debt");
    }

    #[test]
    fn charge_goes_into_debt_and_later_takes_wait_it_out() {
        let (clock, b) = bucket(10_000);
        b.charge(20_000); // two seconds' worth at once
        assert_eq!(b.try_take(1), Err(Duration::from_secs(2)));
        clock.advance(Duration::from_secs(2));
        assert_eq!(b.try_take(1), Ok(()));
    }

    #[test]
    fn zero_rate_means_no_bucket() {
        assert!(TokenBucket::limit(0).is_none());
        let l = Limits::new(0, 0);
        assert!(l.download.is_none() && l.upload.is_none());
        let l = Limits::new(5, 0);
        assert_eq!(l.download.map(|b| b.rate()), Some(5));
    }

    #[test]
    fn read_cap_follows_the_rate_within_bounds() {
        let (_, slow) = bucket(1000);
        assert_eq!(slow.read_cap(), 16 * 1024);
        let (_, mid) = bucket(50 * 64 * 1024);
        assert_eq!(mid.read_cap(), 64 * 1024);
        let (_, fast) = bucket(1 << 40);
        assert_eq!(fast.read_cap(), 128 * 1024);
    }

    /// Simulates `workers` uploaders sending 16 KiB blocks as fast as the
    /// bucket lets them for `secs` simulated seconds, each waking up to
    /// `late_ms` late; returns the bytes sent.
    fn simulate_uploads(rate: u64, workers: usize, secs: u64, late_ms: u64, seed: u64) -> u64 {
        let (clock, b) = bucket(rate);
        let start = clock.now_ns();
        let end = start + secs * 1000 * MS;
        let mut rng = Rng::new(seed);
        let mut wake = vec![start; workers];
        let mut sent = 0u64;
        loop {
            // The worker due first runs next.
            let (w, &t) = wake.iter().enumerate().min_by_key(|(_, t)| **t).unwrap();
            if t >= end {
                return sent;
            }
            clock.set_ns(t);
            let block = 16 * 1024 + 13;
            match b.try_take(block) {
                Ok(()) => {
                    sent += block;
                    wake[w] = t + 1; // straight on to the next block
                }
                Err(wait) => {
                    let late = rng.below(late_ms * MS + 1);
                    wake[w] = t + wait.as_nanos() as u64 + late;
                }
            }
        }
    }

    #[test]
    fn uploads_by_many_workers_stay_within_two_percent_over_ten_seconds() {
        for (rate, workers, late) in [
            (1024 * 1024, 4, 20),
            (100 * 1024, 8, 50),
            (10 * 1024 * 1024, 50, 5),
            (3_000_000, 1, 90),
        ] {
            let sent = simulate_uploads(rate, workers, 10, late, rate ^ workers as u64);
            let want = rate as f64 * 10.0;
            let ratio = sent as f64 / want;
            assert!(
                (0.98..=1.02).contains(&ratio),
                "rate {rate}, {workers} workers, late {late} ms: sent {sent}, ratio {ratio:.4}"
            );
        }
    }

    /// Downloads: workers check the bucket, read whatever the socket has (up
    /// to the cap) and charge it.
    #[test]
    fn downloads_charged_after_reads_stay_within_three_percent() {
        let rate = 2 * 1024 * 1024;
        let (clock, b) = bucket(rate);
        let cap = b.read_cap() as u64;
        let start = clock.now_ns();
        let end = start + 10_000 * MS;
        let mut rng = Rng::new(7);
        let workers = 6;
        let mut wake = vec![start; workers];
        let mut got = 0u64;
        loop {
            let (w, &t) = wake.iter().enumerate().min_by_key(|(_, t)| **t).unwrap();
            if t >= end {
                break;
            }
            clock.set_ns(t);
            match b.wait() {
                None => {
                    // The socket has between 1 byte and the cap buffered.
                    let n = 1 + rng.below(cap);
                    b.charge(n);
                    got += n;
                    wake[w] = t + 50_000; // 50 us per read
                }
                Some(wait) => wake[w] = t + wait.as_nanos() as u64 + rng.below(10 * MS),
            }
        }
        let ratio = got as f64 / (rate as f64 * 10.0);
        assert!((0.97..=1.03).contains(&ratio), "ratio {ratio:.4}");
    }

    #[test]
    fn shared_between_threads_it_never_grants_more_than_rate_plus_burst() {
        // Real threads hammering a frozen clock: only the burst and one take
        // that made debt may pass.
        let (_, b) = bucket(1000);
        let b = Arc::new(b);
        let granted = Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (b, granted) = (b.clone(), granted.clone());
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        if b.try_take(10).is_ok() {
                            granted.fetch_add(10, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert!(granted.load(Ordering::Relaxed) <= 10, "no credit at start");
    }
}

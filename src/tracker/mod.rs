//! Tracker announces: HTTP(S) trackers (BEP 3, BEP 7, BEP 23) and UDP trackers
//! (BEP 15), plus the announcer thread that keeps one torrent's schedule over
//! a BEP 12 tier list.
//!
//! [`announce`] is one blocking request to one tracker URL. [`spawn_announcer`]
//! starts the thread that decides when to call it, on which tracker, and with
//! which event, and hands the peers it learns to the coordinator.

pub mod http;
pub mod udp;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

/// The most peers we keep from one tracker reply; the rest are ignored.
pub const MAX_PEERS_PER_REPLY: usize = 2000;

/// The most bytes we read from one HTTP tracker reply; a longer body is an error.
pub const MAX_HTTP_REPLY_BYTES: usize = 2 * 1024 * 1024;

/// How many peers we ask for in a normal announce.
pub const DEFAULT_NUMWANT: u32 = 80;

/// How long the announcer keeps trying to send `stopped` when told to stop.
pub const DEFAULT_STOP_DEADLINE: Duration = Duration::from_secs(3);

/// The event an announce carries (BEP 3 `event`, BEP 15 event codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A regular re-announce: no event is sent.
    None,
    /// The first announce of a session.
    Started,
    /// The download has just finished.
    Completed,
    /// We are leaving the swarm.
    Stopped,
}

impl Event {
    /// The value of the HTTP `event` parameter, or `None` when it is omitted.
    pub fn as_str(self) -> Option<&'static str> {
        match self {
            Event::None => None,
            Event::Started => Some("started"),
            Event::Completed => Some("completed"),
            Event::Stopped => Some("stopped"),
        }
    }

    /// The event code of a BEP 15 announce packet.
    pub fn udp_code(self) -> u32 {
        match self {
            Event::None => 0,
            Event::Completed => 1,
            Event::Started => 2,
            Event::Stopped => 3,
        }
    }
}

/// What we tell a tracker in one announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceRequest {
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
    /// The port we accept peer connections on.
    pub port: u16,
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
    pub event: Event,
    /// How many peers we would like.
    pub numwant: u32,
    /// A random number that lets the tracker recognise us across IP changes.
    pub key: u32,
    /// The `tracker id` the tracker gave us in an earlier reply, if any.
    pub tracker_id: Option<String>,
    /// Our global IPv6 address, told to HTTP trackers (BEP 7 `ipv6=`).
    pub ipv6: Option<std::net::Ipv6Addr>,
}

impl AnnounceRequest {
    /// A request with zeroed counters, no event, [`DEFAULT_NUMWANT`] and a random key.
    pub fn new(info_hash: [u8; 20], peer_id: [u8; 20], port: u16) -> AnnounceRequest {
        AnnounceRequest {
            info_hash,
            peer_id,
            port,
            uploaded: 0,
            downloaded: 0,
            left: 0,
            event: Event::None,
            numwant: DEFAULT_NUMWANT,
            key: random_u64() as u32,
            tracker_id: None,
            ipv6: None,
        }
    }
}

/// What a tracker told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceResponse {
    /// How long to wait before the next regular announce.
    pub interval: Duration,
    /// The tracker's floor on the time between announces, when it gives one.
    pub min_interval: Option<Duration>,
    /// Peers, at most [`MAX_PEERS_PER_REPLY`], none with port 0.
    pub peers: Vec<SocketAddr>,
    /// A warning the tracker sent along with a valid reply.
    pub warning: Option<String>,
    /// An id to send back in later announces to this tracker.
    pub tracker_id: Option<String>,
    /// Seeders in the swarm.
    pub complete: Option<u32>,
    /// Leechers in the swarm.
    pub incomplete: Option<u32>,
}

/// Why an announce failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackerError {
    /// The tracker refused the announce and gave this reason.
    Failure(String),
    /// The HTTP exchange failed (status, protocol, TLS); the text says how.
    Http(String),
    /// A socket or name-resolution error; the text names the address.
    Io(String),
    /// The reply could not be understood; the text names the field or byte.
    Malformed(String),
    /// The tracker did not answer within the allowed time.
    Timeout,
    /// The URL has a scheme or shape we cannot announce to.
    UnsupportedUrl(String),
}

impl fmt::Display for TrackerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrackerError::Failure(reason) => write!(f, "tracker refused the announce: {reason}"),
            TrackerError::Http(what) => write!(f, "HTTP error: {what}"),
            TrackerError::Io(what) => write!(f, "network error: {what}"),
            TrackerError::Malformed(what) => write!(f, "malformed tracker reply: {what}"),
            TrackerError::Timeout => write!(f, "tracker did not answer in time"),
            TrackerError::UnsupportedUrl(url) => write!(f, "unsupported tracker URL: {url}"),
        }
    }
}

impl std::error::Error for TrackerError {}

/// The kind of tracker a URL names, from its scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Udp,
}

fn scheme_of(url: &str) -> Option<Scheme> {
    let (scheme, _) = url.split_once("://")?;
    if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") {
        Some(Scheme::Http)
    } else if scheme.eq_ignore_ascii_case("udp") {
        Some(Scheme::Udp)
    } else {
        None
    }
}

/// Announces once to the tracker at `url` (`http://`, `https://` or `udp://`),
/// giving up after `timeout`.
///
/// The peers it returns are only those the tracker may name
/// ([`crate::addr::allowed_from`]): never broadcast, multicast or reserved
/// addresses, and loopback or private ones only from a tracker on that
/// network (its host is looked up only when the reply names such peers).
pub fn announce(
    url: &str,
    req: &AnnounceRequest,
    timeout: Duration,
) -> Result<AnnounceResponse, TrackerError> {
    let mut response = match scheme_of(url) {
        Some(Scheme::Http) => http::announce(url, req, timeout),
        // Behind a proxy, UDP goes through its relay or not at all.
        Some(Scheme::Udp) if !crate::dial::udp_allowed() => Err(TrackerError::UnsupportedUrl(
            format!("{url} (the proxy does not relay UDP)"),
        )),
        Some(Scheme::Udp) => udp::announce(url, req, timeout),
        None => Err(TrackerError::UnsupportedUrl(url.to_string())),
    }?;
    let local = |a: &SocketAddr| crate::addr::scope(a.ip()) != crate::addr::Scope::Global;
    let source = if response.peers.iter().any(local) {
        crate::addr::tracker_source(url)
    } else {
        None
    };
    let before = response.peers.len();
    response.peers.retain(|&a| match source {
        Some(from) => crate::addr::allowed_from(a, from),
        None => !local(&a) && crate::addr::unusable(a).is_none(),
    });
    if response.peers.len() < before {
        log::debug!(
            "tracker: {url}: {} peers left out (addresses it may not name)",
            before - response.peers.len()
        );
    }
    Ok(response)
}

/// A random number (not for cryptography), from [`crate::rng::Rng`].
pub(crate) fn random_u64() -> u64 {
    crate::rng::Rng::from_entropy().next_u64()
}

/// Shuffles in place (Fisher-Yates with [`random_u64`]).
fn shuffle<T>(items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = (random_u64() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

// ---------------------------------------------------------------------------
// The announcer thread
// ---------------------------------------------------------------------------

/// What the coordinator tells the announcer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// We are short of peers: announce sooner than the interval (but never
    /// more often than the tracker's min interval or 30 s).
    NeedPeers,
    /// The download finished: send `completed` once.
    Completed,
    /// Send `stopped` to the trackers that answered and end the thread.
    Stop,
}

/// What the announcer tells the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// A tracker answered with these peers (possibly none).
    Peers { url: String, peers: Vec<SocketAddr> },
    /// An announce to this tracker failed; it will be retried later.
    Failed { url: String, error: String },
    /// A tracker answered with a warning message.
    Warning { url: String, message: String },
}

/// Transfer counters the announcer asks for before each announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
}

/// What the announcer needs to know about the torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnouncerConfig {
    /// BEP 12 tiers (a torrent with only `announce` is one tier of one URL).
    pub tiers: Vec<Vec<String>>,
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
    /// The port we accept peer connections on.
    pub port: u16,
    /// The overall time allowed for the `stopped` announces when stopping.
    pub stop_deadline: Duration,
    /// Our global IPv6 address, for HTTP announces (BEP 7).
    pub ipv6: Option<std::net::Ipv6Addr>,
}

impl AnnouncerConfig {
    /// A configuration with the default stop deadline ([`DEFAULT_STOP_DEADLINE`]).
    pub fn new(
        tiers: Vec<Vec<String>>,
        info_hash: [u8; 20],
        peer_id: [u8; 20],
        port: u16,
    ) -> AnnouncerConfig {
        AnnouncerConfig {
            tiers,
            info_hash,
            peer_id,
            port,
            stop_deadline: DEFAULT_STOP_DEADLINE,
            ipv6: None,
        }
    }
}

/// The announcer's clock settings; tests shrink them to milliseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// Time allowed for one announce.
    pub announce_timeout: Duration,
    /// Delay before the first retry of a failing tracker; doubles per failure.
    pub retry_base: Duration,
    /// The longest retry delay.
    pub retry_max: Duration,
    /// Floor on the time between two rounds (NeedPeers, tiny intervals).
    pub min_gap: Duration,
    /// Ceiling on a tracker's interval, so a huge value cannot park us forever.
    pub max_interval: Duration,
    /// Shuffle each tier once at start (BEP 12); tests turn it off.
    pub shuffle: bool,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            announce_timeout: Duration::from_secs(30),
            retry_base: Duration::from_secs(15),
            retry_max: Duration::from_secs(30 * 60),
            min_gap: Duration::from_secs(30),
            max_interval: Duration::from_secs(4 * 60 * 60),
            shuffle: true,
        }
    }
}

impl Timing {
    /// The delay before retrying a tracker after its `failures`-th failure in a row.
    fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32
            .checked_shl(failures.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.retry_base.saturating_mul(factor).min(self.retry_max)
    }
}

/// The function that performs one announce ([`announce`], or a fake in tests).
pub(crate) type AnnounceFn = Arc<
    dyn Fn(&str, &AnnounceRequest, Duration) -> Result<AnnounceResponse, TrackerError>
        + Send
        + Sync,
>;

/// Starts the announcer thread for one torrent.
///
/// The thread announces `started` at once, then re-announces on the tracker's
/// interval, walking the BEP 12 tiers (each tier shuffled once; a tracker that
/// answers moves to the front of its tier; the next tier is tried only when
/// every tracker of a tier failed). Peers, failures and warnings go to
/// `report`; counters come from `progress`. A failing tracker is retried with
/// exponential backoff (15 s doubling to 30 min) and never ends the thread.
///
/// Announces run on a second small thread ("tracker-io") so that commands take
/// effect at once even while a tracker is slow. On [`Command::Stop`] or when
/// `commands` disconnects, the thread sends `stopped` to every tracker that
/// answered before, within `cfg.stop_deadline` overall, and returns. An
/// announce still in flight then is abandoned: "tracker-io" ends by itself
/// within one announce timeout (30 s).
///
/// Events: a tracker that has not answered yet this session gets `started`;
/// after [`Command::Completed`], the next tracker that answered before gets
/// `completed` (once); other announces carry no event.
pub fn spawn_announcer(
    cfg: AnnouncerConfig,
    progress: Box<dyn Fn() -> Progress + Send>,
    report: Box<dyn FnMut(Report) + Send>,
    commands: Receiver<Command>,
) -> std::io::Result<thread::JoinHandle<()>> {
    let announce_fn: AnnounceFn = Arc::new(announce);
    spawn_announcer_with(
        cfg,
        Timing::default(),
        announce_fn,
        progress,
        report,
        commands,
    )
}

const STACK_SIZE: usize = 256 * 1024;

pub(crate) fn spawn_announcer_with(
    cfg: AnnouncerConfig,
    timing: Timing,
    announce_fn: AnnounceFn,
    progress: Box<dyn Fn() -> Progress + Send>,
    report: Box<dyn FnMut(Report) + Send>,
    commands: Receiver<Command>,
) -> std::io::Result<thread::JoinHandle<()>> {
    let (job_tx, job_rx) = crossbeam_channel::bounded::<Job>(1);
    let (done_tx, done_rx) = crossbeam_channel::bounded::<Done>(1);
    let worker_fn = Arc::clone(&announce_fn);
    thread::Builder::new()
        .name("tracker-io".to_string())
        .stack_size(STACK_SIZE)
        .spawn(move || {
            for job in job_rx {
                let result = worker_fn(&job.url, &job.req, job.timeout);
                let done = Done {
                    url: job.url,
                    result,
                };
                if done_tx.send(done).is_err() {
                    break;
                }
            }
        })?;
    let announcer = Announcer::new(cfg, timing, announce_fn, progress, report);
    thread::Builder::new()
        .name("tracker".to_string())
        .stack_size(STACK_SIZE)
        .spawn(move || announcer.run(commands, job_tx, done_rx))
}

/// One announce handed to the "tracker-io" thread.
struct Job {
    url: String,
    req: AnnounceRequest,
    timeout: Duration,
}

/// The outcome of a [`Job`].
struct Done {
    url: String,
    result: Result<AnnounceResponse, TrackerError>,
}

/// What the announcer remembers about one tracker URL.
#[derive(Debug)]
struct TrackerState {
    url: String,
    /// It answered at least once this session (so it gets `stopped`).
    answered: bool,
    /// Failures in a row.
    failures: u32,
    /// Not to be tried before this instant (backoff after failures).
    retry_at: Option<Instant>,
    tracker_id: Option<String>,
}

/// A round: trackers are tried one after another until one answers.
#[derive(Debug, Default)]
struct Round {
    /// URLs already tried in this round.
    tried: Vec<String>,
    /// The announce in flight: URL and event.
    in_flight: Option<(String, Event)>,
}

struct Announcer {
    tiers: Vec<Vec<TrackerState>>,
    info_hash: [u8; 20],
    peer_id: [u8; 20],
    port: u16,
    ipv6: Option<std::net::Ipv6Addr>,
    key: u32,
    stop_deadline: Duration,
    timing: Timing,
    announce_fn: AnnounceFn,
    progress: Box<dyn Fn() -> Progress + Send>,
    report: Box<dyn FnMut(Report) + Send>,
    completed_pending: bool,
    /// When the next round starts (if no round is running).
    next_at: Instant,
    /// When the last round started.
    last_round_at: Option<Instant>,
    /// The min interval of the last tracker that answered.
    min_interval: Option<Duration>,
    round: Option<Round>,
}

impl Announcer {
    fn new(
        cfg: AnnouncerConfig,
        timing: Timing,
        announce_fn: AnnounceFn,
        progress: Box<dyn Fn() -> Progress + Send>,
        report: Box<dyn FnMut(Report) + Send>,
    ) -> Announcer {
        let mut seen: Vec<String> = Vec::new();
        let mut tiers = Vec::new();
        for tier in cfg.tiers {
            let mut states = Vec::new();
            for url in tier {
                let url = url.trim().to_string();
                if scheme_of(&url).is_none() {
                    log::debug!("tracker: skipping unsupported tracker URL {url}");
                    continue;
                }
                if scheme_of(&url) == Some(Scheme::Udp) && !crate::dial::udp_allowed() {
                    log::info!("tracker: skipping {url}: the proxy does not relay UDP");
                    continue;
                }
                if seen.contains(&url) {
                    continue;
                }
                seen.push(url.clone());
                states.push(TrackerState {
                    url,
                    answered: false,
                    failures: 0,
                    retry_at: None,
                    tracker_id: None,
                });
            }
            if timing.shuffle {
                shuffle(&mut states);
            }
            if !states.is_empty() {
                tiers.push(states);
            }
        }
        Announcer {
            tiers,
            info_hash: cfg.info_hash,
            peer_id: cfg.peer_id,
            port: cfg.port,
            ipv6: cfg.ipv6,
            key: random_u64() as u32,
            stop_deadline: cfg.stop_deadline,
            timing,
            announce_fn,
            progress,
            report,
            completed_pending: false,
            next_at: Instant::now(),
            last_round_at: None,
            min_interval: None,
            round: None,
        }
    }

    fn run(mut self, commands: Receiver<Command>, jobs: Sender<Job>, mut done: Receiver<Done>) {
        let mut jobs = Some(jobs);
        loop {
            let now = Instant::now();
            if self.round.is_none() && now >= self.next_at {
                self.last_round_at = Some(now);
                self.round = Some(Round::default());
            }
            if self
                .round
                .as_ref()
                .is_some_and(|round| round.in_flight.is_none())
            {
                self.next_attempt(&mut jobs, now);
                continue;
            }
            // Idle until next_at, or waiting for the announce in flight.
            let wait = if self.round.is_some() {
                self.timing.max_interval
            } else {
                self.next_at.saturating_duration_since(now)
            };
            crossbeam_channel::select! {
                recv(commands) -> cmd => match cmd {
                    Ok(Command::NeedPeers) => self.need_peers(),
                    Ok(Command::Completed) => self.completed(),
                    Ok(Command::Stop) | Err(_) => {
                        self.stop();
                        return;
                    }
                },
                recv(done) -> finished => match finished {
                    Ok(finished) => self.finish(&finished.url, finished.result),
                    Err(_) => {
                        // The worker is gone (it cannot normally end first):
                        // announce from this thread from now on.
                        log::warn!("tracker: announce worker ended; announcing inline");
                        jobs = None;
                        done = crossbeam_channel::never();
                        if let Some(round) = self.round.as_mut() {
                            round.in_flight = None;
                        }
                    }
                },
                default(wait) => {}
            }
        }
    }

    /// Starts the next announce of the current round, or ends the round when
    /// no tracker is left to try.
    fn next_attempt(&mut self, jobs: &mut Option<Sender<Job>>, now: Instant) {
        let tried: &[String] = self
            .round
            .as_ref()
            .map(|round| round.tried.as_slice())
            .unwrap_or(&[]);
        let candidate = self
            .tiers
            .iter()
            .flatten()
            .find(|t| !tried.contains(&t.url) && t.retry_at.is_none_or(|at| at <= now));
        let Some(tracker) = candidate else {
            // Everyone failed or is backing off: wait for the first to be due.
            self.round = None;
            let earliest = self.tiers.iter().flatten().filter_map(|t| t.retry_at).min();
            self.next_at = match earliest {
                Some(at) => at.max(now),
                None => later(now, self.timing.retry_max),
            };
            return;
        };
        let event = if !tracker.answered {
            Event::Started
        } else if self.completed_pending {
            Event::Completed
        } else {
            Event::None
        };
        let url = tracker.url.clone();
        let req = self.request(event, tracker.tracker_id.clone());
        if let Some(round) = self.round.as_mut() {
            round.tried.push(url.clone());
            round.in_flight = Some((url.clone(), event));
        }
        log::debug!("tracker: announcing to {url} (event {event:?})");
        let job = Job {
            url,
            req,
            timeout: self.timing.announce_timeout,
        };
        let job = match jobs.as_ref() {
            Some(sender) => match sender.try_send(job) {
                Ok(()) => return,
                Err(err) => {
                    log::warn!("tracker: announce worker unavailable; announcing inline");
                    *jobs = None;
                    err.into_inner()
                }
            },
            None => job,
        };
        let result = (self.announce_fn)(&job.url, &job.req, job.timeout);
        self.finish(&job.url, result);
    }

    fn request(&self, event: Event, tracker_id: Option<String>) -> AnnounceRequest {
        let progress = (self.progress)();
        AnnounceRequest {
            info_hash: self.info_hash,
            peer_id: self.peer_id,
            port: self.port,
            uploaded: progress.uploaded,
            downloaded: progress.downloaded,
            left: progress.left,
            event,
            numwant: if event == Event::Stopped {
                0
            } else {
                DEFAULT_NUMWANT
            },
            key: self.key,
            tracker_id,
            ipv6: self.ipv6,
        }
    }

    fn find(&mut self, url: &str) -> Option<(usize, usize)> {
        self.tiers.iter().enumerate().find_map(|(tier, trackers)| {
            trackers
                .iter()
                .position(|t| t.url == url)
                .map(|index| (tier, index))
        })
    }

    /// Takes in the outcome of an announce of the current round.
    fn finish(&mut self, url: &str, result: Result<AnnounceResponse, TrackerError>) {
        let now = Instant::now();
        let event = match self.round.as_mut() {
            Some(Round {
                in_flight: in_flight @ Some(_),
                ..
            }) if in_flight.as_ref().is_some_and(|(u, _)| u == url) => {
                in_flight.take().map_or(Event::None, |(_, event)| event)
            }
            _ => {
                log::debug!("tracker: ignoring a stale answer from {url}");
                return;
            }
        };
        let Some((tier, index)) = self.find(url) else {
            return;
        };
        match result {
            Ok(response) => {
                if let Some(trackers) = self.tiers.get_mut(tier) {
                    if let Some(tracker) = trackers.get_mut(index) {
                        tracker.answered = true;
                        tracker.failures = 0;
                        tracker.retry_at = None;
                        if response.tracker_id.is_some() {
                            tracker.tracker_id = response.tracker_id.clone();
                        }
                    }
                    // BEP 12: a tracker that answers moves to the front of its tier.
                    if index < trackers.len() {
                        let tracker = trackers.remove(index);
                        trackers.insert(0, tracker);
                    }
                }
                if event == Event::Completed {
                    self.completed_pending = false;
                }
                self.min_interval = response.min_interval;
                let floor = self
                    .timing
                    .min_gap
                    .max(response.min_interval.unwrap_or(Duration::ZERO));
                let interval = response
                    .interval
                    .max(floor)
                    .min(self.timing.max_interval.max(floor));
                self.next_at = if self.completed_pending {
                    now
                } else {
                    later(now, interval)
                };
                self.round = None;
                log::debug!(
                    "tracker: {url} answered with {} peers, next announce in {:?}",
                    response.peers.len(),
                    interval
                );
                if let Some(message) = response.warning {
                    log::warn!("tracker: warning from {url}: {message}");
                    (self.report)(Report::Warning {
                        url: url.to_string(),
                        message,
                    });
                }
                (self.report)(Report::Peers {
                    url: url.to_string(),
                    peers: response.peers,
                });
            }
            Err(error) => {
                let mut delay = self.timing.retry_base;
                if let Some(tracker) = self
                    .tiers
                    .get_mut(tier)
                    .and_then(|trackers| trackers.get_mut(index))
                {
                    tracker.failures = tracker.failures.saturating_add(1);
                    delay = self.timing.backoff(tracker.failures);
                    tracker.retry_at = Some(later(now, delay));
                }
                log::warn!("tracker: announce to {url} failed: {error} (retry in {delay:?})");
                (self.report)(Report::Failed {
                    url: url.to_string(),
                    error: error.to_string(),
                });
            }
        }
    }

    fn need_peers(&mut self) {
        if self.round.is_some() {
            return;
        }
        let gap = self
            .timing
            .min_gap
            .max(self.min_interval.unwrap_or(Duration::ZERO));
        let now = Instant::now();
        let earliest = match self.last_round_at {
            Some(at) => later(at, gap).max(now),
            None => now,
        };
        if earliest < self.next_at {
            log::debug!("tracker: peers wanted, announcing sooner");
            self.next_at = earliest;
        }
    }

    fn completed(&mut self) {
        self.completed_pending = true;
        if self.round.is_none() {
            self.next_at = Instant::now();
        }
    }

    /// Sends `stopped` to every tracker that answered, within the stop deadline.
    fn stop(&mut self) {
        let deadline = later(Instant::now(), self.stop_deadline);
        let answered: Vec<(String, Option<String>)> = self
            .tiers
            .iter()
            .flatten()
            .filter(|t| t.answered)
            .map(|t| (t.url.clone(), t.tracker_id.clone()))
            .collect();
        for (url, tracker_id) in answered {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::debug!("tracker: stop deadline reached before telling {url}");
                break;
            }
            let req = self.request(Event::Stopped, tracker_id);
            match (self.announce_fn)(&url, &req, left) {
                Ok(_) => log::debug!("tracker: sent stopped to {url}"),
                Err(error) => log::debug!("tracker: stopped to {url} failed: {error}"),
            }
        }
    }
}

/// `at + delay`, saturating far in the future instead of overflowing.
fn later(at: Instant, delay: Duration) -> Instant {
    at.checked_add(delay)
        .or_else(|| at.checked_add(Duration::from_secs(24 * 60 * 60)))
        .unwrap_or(at)
}

#[cfg(test)]
#[allow(dead_code)]
#[path = "../../tests/support/tracker.rs"]
pub(crate) mod test_tracker;

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::{unbounded, RecvTimeoutError};
    use std::sync::Mutex;

    #[test]
    fn event_strings_and_codes() {
        assert_eq!(Event::None.as_str(), None);
        assert_eq!(Event::Started.as_str(), Some("started"));
        assert_eq!(Event::Completed.as_str(), Some("completed"));
        assert_eq!(Event::Stopped.as_str(), Some("stopped"));
        assert_eq!(Event::None.udp_code(), 0);
        assert_eq!(Event::Completed.udp_code(), 1);
        assert_eq!(Event::Started.udp_code(), 2);
        assert_eq!(Event::Stopped.udp_code(), 3);
    }

    #[test]
    fn errors_display_on_one_line() {
        let errors = [
            TrackerError::Failure("torrent not registered".into()),
            TrackerError::Http("status 404 from http://t/announce".into()),
            TrackerError::Io("connect to 127.0.0.1:1: refused".into()),
            TrackerError::Malformed("field 'interval' is not an integer".into()),
            TrackerError::Timeout,
            TrackerError::UnsupportedUrl("wss://t".into()),
        ];
        for e in errors {
            let text = e.to_string();
            assert!(!text.contains('\n'), "{text}");
            assert!(!text.is_empty());
        }
        assert!(TrackerError::Failure("nope".into())
            .to_string()
            .contains("nope"));
        assert!(TrackerError::UnsupportedUrl("wss://t".into())
            .to_string()
            .contains("wss://t"));
    }

    #[test]
    fn announce_rejects_unknown_schemes() {
        let req = AnnounceRequest::new([1; 20], [2; 20], 6881);
        for url in ["wss://tracker.example/announce", "tracker", "ftp://x/"] {
            assert_eq!(
                announce(url, &req, Duration::from_millis(10)),
                Err(TrackerError::UnsupportedUrl(url.to_string()))
            );
        }
    }

    #[test]
    fn scheme_detection_ignores_case() {
        assert_eq!(scheme_of("HTTP://a/announce"), Some(Scheme::Http));
        assert_eq!(scheme_of("https://a/announce"), Some(Scheme::Http));
        assert_eq!(scheme_of("Udp://a:1"), Some(Scheme::Udp));
        assert_eq!(scheme_of("magnet:?xt"), None);
    }

    #[test]
    fn request_new_has_defaults() {
        let req = AnnounceRequest::new([1; 20], [2; 20], 6881);
        assert_eq!(req.event, Event::None);
        assert_eq!(req.numwant, DEFAULT_NUMWANT);
        assert_eq!(req.tracker_id, None);
        assert_eq!((req.uploaded, req.downloaded, req.left), (0, 0, 0));
    }

    #[test]
    fn shuffle_keeps_elements_and_mixes() {
        let mut saw_other_order = false;
        for _ in 0..50 {
            let mut v: Vec<u32> = (0..8).collect();
            shuffle(&mut v);
            let mut sorted = v.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..8).collect::<Vec<_>>());
            saw_other_order |= v != sorted;
        }
        assert!(saw_other_order);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let t = Timing::default();
        assert_eq!(t.backoff(1), Duration::from_secs(15));
        assert_eq!(t.backoff(2), Duration::from_secs(30));
        assert_eq!(t.backoff(3), Duration::from_secs(60));
        assert_eq!(t.backoff(8), Duration::from_secs(30 * 60));
        assert_eq!(t.backoff(40), Duration::from_secs(30 * 60));
        assert_eq!(t.backoff(u32::MAX), Duration::from_secs(30 * 60));
    }

    #[test]
    fn later_saturates() {
        let now = Instant::now();
        assert_eq!(
            later(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
        assert!(later(now, Duration::MAX) >= now);
    }

    // --- announcer tests with a scripted fake tracker -----------------------

    /// One call the fake saw.
    #[derive(Debug, Clone)]
    struct Call {
        url: String,
        event: Event,
        numwant: u32,
        tracker_id: Option<String>,
        timeout: Duration,
        left: u64,
    }

    type Script = dyn Fn(&str, usize, &AnnounceRequest) -> Result<AnnounceResponse, TrackerError>
        + Send
        + Sync;

    struct Fake {
        calls: Arc<Mutex<Vec<Call>>>,
        announce_fn: AnnounceFn,
    }

    /// A fake tracker: `script(url, nth call to this url, request)`.
    fn fake(script: Box<Script>) -> Fake {
        let calls: Arc<Mutex<Vec<Call>>> = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&calls);
        let announce_fn: AnnounceFn = Arc::new(move |url, req, timeout| {
            let nth = {
                let mut calls = seen.lock().unwrap_or_else(|e| e.into_inner());
                let nth = calls.iter().filter(|c| c.url == url).count();
                calls.push(Call {
                    url: url.to_string(),
                    event: req.event,
                    numwant: req.numwant,
                    tracker_id: req.tracker_id.clone(),
                    timeout,
                    left: req.left,
                });
                nth
            };
            script(url, nth, req)
        });
        Fake { calls, announce_fn }
    }

    fn reply(peers: &[&str]) -> AnnounceResponse {
        AnnounceResponse {
            interval: Duration::from_secs(1800),
            min_interval: None,
            peers: peers.iter().map(|p| p.parse().unwrap()).collect(),
            warning: None,
            tracker_id: None,
            complete: None,
            incomplete: None,
        }
    }

    fn fast() -> Timing {
        Timing {
            announce_timeout: Duration::from_secs(2),
            retry_base: Duration::from_millis(20),
            retry_max: Duration::from_millis(200),
            min_gap: Duration::from_millis(20),
            max_interval: Duration::from_secs(60),
            shuffle: false,
        }
    }

    struct Running {
        handle: thread::JoinHandle<()>,
        commands: Sender<Command>,
        reports: Receiver<Report>,
    }

    fn start(tiers: &[&[&str]], timing: Timing, fake: &Fake) -> Running {
        let cfg = AnnouncerConfig {
            tiers: tiers
                .iter()
                .map(|t| t.iter().map(|u| u.to_string()).collect())
                .collect(),
            info_hash: [7; 20],
            peer_id: [8; 20],
            port: 6881,
            stop_deadline: Duration::from_secs(1),
            ipv6: None,
        };
        start_cfg(cfg, timing, fake)
    }

    fn start_cfg(cfg: AnnouncerConfig, timing: Timing, fake: &Fake) -> Running {
        let (commands, command_rx) = unbounded();
        let (report_tx, reports) = unbounded();
        let handle = spawn_announcer_with(
            cfg,
            timing,
            Arc::clone(&fake.announce_fn),
            Box::new(|| Progress {
                uploaded: 1,
                downloaded: 2,
                left: 3,
            }),
            Box::new(move |r| {
                let _ = report_tx.send(r);
            }),
            command_rx,
        )
        .unwrap();
        Running {
            handle,
            commands,
            reports,
        }
    }

    fn next_report(r: &Running) -> Report {
        r.reports
            .recv_timeout(Duration::from_secs(5))
            .expect("a report within 5 s")
    }

    fn calls(f: &Fake) -> Vec<Call> {
        f.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    #[test]
    fn failing_tracker_is_retried_then_peers_arrive_and_stop_sends_stopped() {
        let f = fake(Box::new(|_, nth, _| {
            if nth == 0 {
                Err(TrackerError::Failure("try later".into()))
            } else {
                Ok(reply(&["10.0.0.1:6881", "10.0.0.2:51413"]))
            }
        }));
        let r = start(&[&["http://a/announce"]], fast(), &f);
        match next_report(&r) {
            Report::Failed { url, error } => {
                assert_eq!(url, "http://a/announce");
                assert!(error.contains("try later"), "{error}");
            }
            other => panic!("expected Failed, got {other:?}"),
        }
        match next_report(&r) {
            Report::Peers { url, peers } => {
                assert_eq!(url, "http://a/announce");
                assert_eq!(
                    peers,
                    vec![
                        "10.0.0.1:6881".parse().unwrap(),
                        "10.0.0.2:51413".parse::<SocketAddr>().unwrap()
                    ]
                );
            }
            other => panic!("expected Peers, got {other:?}"),
        }
        r.commands.send(Command::Stop).unwrap();
        r.handle.join().unwrap();
        let calls = calls(&f);
        let events: Vec<Event> = calls.iter().map(|c| c.event).collect();
        assert_eq!(events, [Event::Started, Event::Started, Event::Stopped]);
        assert_eq!(calls[0].left, 3);
        let stopped = &calls[2];
        assert_eq!(stopped.numwant, 0);
        assert!(stopped.timeout <= Duration::from_secs(1));
    }

    #[test]
    fn next_tier_only_after_whole_tier_fails_and_answering_tracker_moves_front() {
        let f = fake(Box::new(|url, _, _| {
            if url.contains("b") || url.contains("c") {
                Ok(reply(&[]))
            } else {
                Err(TrackerError::Timeout)
            }
        }));
        let mut timing = fast();
        timing.retry_base = Duration::from_secs(60); // a failed tracker stays out
        timing.retry_max = Duration::from_secs(60);
        let r = start(
            &[&["http://a/1", "http://b/1"], &["http://c/1"]],
            timing,
            &f,
        );
        assert!(matches!(next_report(&r), Report::Failed { .. }));
        assert!(matches!(next_report(&r), Report::Peers { url, .. } if url == "http://b/1"));
        r.commands.send(Command::NeedPeers).unwrap();
        assert!(matches!(next_report(&r), Report::Peers { url, .. } if url == "http://b/1"));
        drop(r.commands);
        r.handle.join().unwrap();
        let urls: Vec<(String, Event)> = calls(&f).into_iter().map(|c| (c.url, c.event)).collect();
        assert_eq!(
            urls,
            [
                ("http://a/1".to_string(), Event::Started),
                ("http://b/1".to_string(), Event::Started),
                ("http://b/1".to_string(), Event::None),
                // only b answered, so only b hears stopped; c was never needed
                ("http://b/1".to_string(), Event::Stopped),
            ]
        );
    }

    #[test]
    fn answering_tracker_is_tried_first_next_time() {
        // a fails once, b answers; later, with a due again, b (now first) is used.
        let f = fake(Box::new(|url, nth, _| {
            if url.contains("a") && nth == 0 {
                Err(TrackerError::Timeout)
            } else {
                Ok(reply(&[]))
            }
        }));
        let r = start(&[&["http://a/1", "http://b/1"]], fast(), &f);
        assert!(matches!(next_report(&r), Report::Failed { .. }));
        assert!(matches!(next_report(&r), Report::Peers { url, .. } if url == "http://b/1"));
        thread::sleep(Duration::from_millis(60)); // a's backoff is over
        r.commands.send(Command::NeedPeers).unwrap();
        assert!(matches!(next_report(&r), Report::Peers { url, .. } if url == "http://b/1"));
        r.commands.send(Command::Stop).unwrap();
        r.handle.join().unwrap();
        let urls: Vec<String> = calls(&f).into_iter().map(|c| c.url).collect();
        assert_eq!(
            urls,
            ["http://a/1", "http://b/1", "http://b/1", "http://b/1"]
        );
    }

    #[test]
    fn all_tiers_failing_falls_through_to_the_next_tier() {
        let f = fake(Box::new(|url, _, _| {
            if url.contains("c") {
                Ok(reply(&["10.1.1.1:1"]))
            } else {
                Err(TrackerError::Io("refused".into()))
            }
        }));
        let r = start(&[&["http://a/1"], &["http://c/1"]], fast(), &f);
        assert!(matches!(next_report(&r), Report::Failed { url, .. } if url == "http://a/1"));
        assert!(matches!(next_report(&r), Report::Peers { url, .. } if url == "http://c/1"));
        r.commands.send(Command::Stop).unwrap();
        r.handle.join().unwrap();
        let calls = calls(&f);
        assert_eq!(calls.len(), 3);
        assert_eq!(calls[2].url, "http://c/1");
        assert_eq!(calls[2].event, Event::Stopped);
    }

    #[test]
    fn completed_is_sent_once() {
        let f = fake(Box::new(|_, _, _| Ok(reply(&[]))));
        let r = start(&[&["http://a/1"]], fast(), &f);
        assert!(matches!(next_report(&r), Report::Peers { .. }));
        r.commands.send(Command::Completed).unwrap();
        assert!(matches!(next_report(&r), Report::Peers { .. }));
        thread::sleep(Duration::from_millis(30));
        r.commands.send(Command::NeedPeers).unwrap();
        assert!(matches!(next_report(&r), Report::Peers { .. }));
        r.commands.send(Command::Stop).unwrap();
        r.handle.join().unwrap();
        let events: Vec<Event> = calls(&f).into_iter().map(|c| c.event).collect();
        assert_eq!(
            events,
            [
                Event::Started,
                Event::Completed,
                Event::None,
                Event::Stopped
            ]
        );
    }

    #[test]
    fn need_peers_respects_min_interval() {
        let f = fake(Box::new(|_, _, _| {
            let mut r = reply(&[]);
            r.min_interval = Some(Duration::from_millis(400));
            Ok(r)
        }));
        let r = start(&[&["http://a/1"]], fast(), &f);
        let first = Instant::now();
        assert!(matches!(next_report(&r), Report::Peers { .. }));
        r.commands.send(Command::NeedPeers).unwrap();
        r.commands.send(Command::NeedPeers).unwrap();
        assert!(matches!(next_report(&r), Report::Peers { .. }));
        assert!(first.elapsed() >= Duration::from_millis(400));
        // No third announce came from the second NeedPeers before the gap.
        assert_eq!(
            r.reports.recv_timeout(Duration::from_millis(100)),
            Err(RecvTimeoutError::Timeout)
        );
        r.commands.send(Command::Stop).unwrap();
        r.handle.join().unwrap();
        assert_eq!(calls(&f).len(), 3);
    }

    #[test]
    fn reannounces_on_the_interval_with_tracker_id() {
        let f = fake(Box::new(|_, _, _| {
            let mut r = reply(&[]);
            r.interval = Duration::from_millis(50);
            r.tracker_id = Some("abc".into());
            Ok(r)
        }));
        let r = start(&[&["http://a/1"]], fast(), &f);
        for _ in 0..3 {
            assert!(matches!(next_report(&r), Report::Peers { .. }));
        }
        r.commands.send(Command::Stop).unwrap();
        r.handle.join().unwrap();
        let calls = calls(&f);
        assert_eq!(calls[0].tracker_id, None);
        assert_eq!(calls[1].tracker_id.as_deref(), Some("abc"));
        assert_eq!(calls[1].event, Event::None);
        assert_eq!(calls.last().map(|c| c.event), Some(Event::Stopped));
    }

    #[test]
    fn warning_is_reported() {
        let f = fake(Box::new(|_, _, _| {
            let mut r = reply(&[]);
            r.warning = Some("slow down".into());
            Ok(r)
        }));
        let r = start(&[&["http://a/1"]], fast(), &f);
        assert_eq!(
            next_report(&r),
            Report::Warning {
                url: "http://a/1".into(),
                message: "slow down".into()
            }
        );
        assert!(matches!(next_report(&r), Report::Peers { .. }));
        r.commands.send(Command::Stop).unwrap();
        r.handle.join().unwrap();
    }

    #[test]
    fn stop_takes_effect_during_a_slow_announce() {
        let f = fake(Box::new(|_, nth, _| {
            if nth == 1 {
                thread::sleep(Duration::from_secs(3));
            }
            Ok(reply(&[]))
        }));
        let mut timing = fast();
        timing.min_gap = Duration::from_millis(1);
        let r = start(&[&["http://a/1"]], timing, &f);
        assert!(matches!(next_report(&r), Report::Peers { .. }));
        r.commands.send(Command::NeedPeers).unwrap();
        thread::sleep(Duration::from_millis(100)); // the second announce hangs
        let t = Instant::now();
        r.commands.send(Command::Stop).unwrap();
        r.handle.join().unwrap();
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert_eq!(calls(&f).last().map(|c| c.event), Some(Event::Stopped));
    }

    #[test]
    fn stop_deadline_bounds_the_stopped_announces() {
        // a answers, then fails so that b answers too: both should hear
        // `stopped`, but a's takes longer than the whole deadline.
        let f = fake(Box::new(|url, nth, req| {
            if req.event == Event::Stopped {
                thread::sleep(Duration::from_millis(300));
                return Err(TrackerError::Timeout);
            }
            if url.contains("a") && nth == 1 {
                return Err(TrackerError::Timeout);
            }
            Ok(reply(&[]))
        }));
        let cfg = AnnouncerConfig {
            tiers: vec![vec!["http://a/1".into()], vec!["http://b/1".into()]],
            info_hash: [1; 20],
            peer_id: [2; 20],
            port: 1,
            stop_deadline: Duration::from_millis(200),
            ipv6: None,
        };
        let r = start_cfg(cfg, fast(), &f);
        assert!(matches!(next_report(&r), Report::Peers { url, .. } if url == "http://a/1"));
        thread::sleep(Duration::from_millis(30));
        r.commands.send(Command::NeedPeers).unwrap();
        assert!(matches!(next_report(&r), Report::Failed { url, .. } if url == "http://a/1"));
        assert!(matches!(next_report(&r), Report::Peers { url, .. } if url == "http://b/1"));
        let t = Instant::now();
        r.commands.send(Command::Stop).unwrap();
        r.handle.join().unwrap();
        assert!(
            t.elapsed() < Duration::from_millis(800),
            "{:?}",
            t.elapsed()
        );
        let calls = calls(&f);
        let stopped: Vec<&Call> = calls.iter().filter(|c| c.event == Event::Stopped).collect();
        assert_eq!(stopped.len(), 1, "{calls:?}");
        assert_eq!(stopped[0].url, "http://a/1");
        assert!(stopped[0].timeout <= Duration::from_millis(200));
    }

    #[test]
    fn announces_inline_when_the_worker_is_gone() {
        let f = fake(Box::new(|_, _, _| Ok(reply(&["10.0.0.1:1"]))));
        let cfg = AnnouncerConfig::new(vec![vec!["http://a/1".into()]], [1; 20], [2; 20], 3);
        let announcer = Announcer::new(
            cfg,
            fast(),
            Arc::clone(&f.announce_fn),
            Box::new(Progress::default),
            Box::new(|_| {}),
        );
        let (commands, command_rx) = unbounded();
        let (job_tx, job_rx) = crossbeam_channel::bounded::<Job>(1);
        let (done_tx, done_rx) = crossbeam_channel::bounded::<Done>(1);
        drop((job_rx, done_tx));
        let handle = thread::spawn(move || announcer.run(command_rx, job_tx, done_rx));
        thread::sleep(Duration::from_millis(100));
        commands.send(Command::Stop).unwrap();
        handle.join().unwrap();
        let events: Vec<Event> = calls(&f).into_iter().map(|c| c.event).collect();
        assert_eq!(events, [Event::Started, Event::Stopped]);
    }

    #[test]
    fn tiers_drop_duplicates_unsupported_urls_and_empty_tiers() {
        let f = fake(Box::new(|_, _, _| Ok(reply(&[]))));
        let cfg = AnnouncerConfig::new(
            vec![
                vec!["http://a/1".into(), " http://a/1 ".into(), "wss://w".into()],
                vec!["http://a/1".into()],
                vec![],
                vec!["udp://u:1".into(), "https://b/1".into()],
            ],
            [1; 20],
            [2; 20],
            3,
        );
        let announcer = Announcer::new(
            cfg,
            fast(),
            Arc::clone(&f.announce_fn),
            Box::new(Progress::default),
            Box::new(|_| {}),
        );
        let urls: Vec<Vec<&str>> = announcer
            .tiers
            .iter()
            .map(|t| t.iter().map(|s| s.url.as_str()).collect())
            .collect();
        assert_eq!(urls, [vec!["http://a/1"], vec!["udp://u:1", "https://b/1"]]);
    }

    #[test]
    fn a_stale_answer_is_ignored() {
        let f = fake(Box::new(|_, _, _| Ok(reply(&[]))));
        let (report_tx, reports) = unbounded();
        let cfg = AnnouncerConfig::new(
            vec![vec!["http://a/1".into(), "http://b/1".into()]],
            [1; 20],
            [2; 20],
            3,
        );
        let mut announcer = Announcer::new(
            cfg,
            fast(),
            Arc::clone(&f.announce_fn),
            Box::new(Progress::default),
            Box::new(move |r| {
                let _ = report_tx.send(r);
            }),
        );
        announcer.round = Some(Round {
            tried: vec!["http://a/1".into()],
            in_flight: Some(("http://a/1".into(), Event::Started)),
        });
        announcer.finish("http://b/1", Ok(reply(&["10.0.0.1:1"])));
        assert!(reports.try_recv().is_err());
        let in_flight = announcer.round.as_ref().and_then(|r| r.in_flight.clone());
        assert_eq!(in_flight, Some(("http://a/1".to_string(), Event::Started)));
        announcer.finish("http://a/1", Ok(reply(&["10.0.0.1:1"])));
        assert!(matches!(reports.try_recv(), Ok(Report::Peers { url, .. }) if url == "http://a/1"));
        assert!(announcer.round.is_none());
    }

    #[test]
    fn no_trackers_or_unsupported_ones_just_wait_for_stop() {
        let f = fake(Box::new(|_, _, _| Ok(reply(&[]))));
        let r = start(&[&["wss://x/1"], &[]], fast(), &f);
        assert_eq!(
            r.reports.recv_timeout(Duration::from_millis(100)),
            Err(RecvTimeoutError::Timeout)
        );
        r.commands.send(Command::Stop).unwrap();
        r.handle.join().unwrap();
        assert!(calls(&f).is_empty());
    }

    #[test]
    fn announcer_against_the_test_tracker_end_to_end() {
        let tracker = test_tracker::TestTracker::start();
        let spawn = |port: u16| {
            let cfg = AnnouncerConfig::new(
                vec![vec![tracker.url.clone()]],
                [9; 20],
                [port as u8; 20],
                port,
            );
            let (commands, command_rx) = unbounded();
            let (report_tx, reports) = unbounded();
            let handle = spawn_announcer(
                cfg,
                Box::new(Progress::default),
                Box::new(move |r| {
                    let _ = report_tx.send(r);
                }),
                command_rx,
            )
            .unwrap();
            Running {
                handle,
                commands,
                reports,
            }
        };
        let a = spawn(1111);
        assert_eq!(
            next_report(&a),
            Report::Peers {
                url: tracker.url.clone(),
                peers: vec![]
            }
        );
        let b = spawn(2222);
        assert_eq!(
            next_report(&b),
            Report::Peers {
                url: tracker.url.clone(),
                peers: vec!["127.0.0.1:1111".parse().unwrap()]
            }
        );
        a.commands.send(Command::Stop).unwrap();
        a.handle.join().unwrap();
        assert_eq!(
            tracker.peers(&[9; 20]),
            vec!["127.0.0.1:2222".parse::<SocketAddr>().unwrap()]
        );
        drop(b.commands);
        b.handle.join().unwrap();
        assert!(tracker.peers(&[9; 20]).is_empty());
        assert_eq!(tracker.announces(), 4);
    }

    /// Hostile trackers (tests/support/tracker.rs) through the real announce
    /// functions: each failure is reported, retried with a backoff that
    /// doubles up to the cap (never a hot loop), and a good tracker in a
    /// later tier still delivers its peers.
    #[test]
    fn hostile_trackers_are_retried_with_backoff_and_a_good_tier_still_answers() {
        use test_tracker::{HostileHttp, HostileHttpTracker, HostileUdp, HostileUdpTracker};
        let http = HostileHttpTracker::start(HostileHttp::NotBencode);
        let udp = HostileUdpTracker::start(HostileUdp::TruncatedConnect);
        let good = test_tracker::TestTracker::start();
        let real = Fake {
            calls: Arc::new(Mutex::new(Vec::new())),
            announce_fn: Arc::new(announce),
        };
        let timing = Timing {
            retry_base: Duration::from_millis(50),
            retry_max: Duration::from_millis(400),
            ..fast()
        };
        let r = start(&[&[&http.url, &udp.url]], timing, &real);
        let t0 = Instant::now();
        let mut failed_at: Vec<(String, Duration)> = Vec::new();
        while t0.elapsed() < Duration::from_millis(1500) {
            match r.reports.recv_timeout(Duration::from_millis(100)) {
                Ok(Report::Failed { url, error }) => {
                    assert!(!error.is_empty());
                    failed_at.push((url, t0.elapsed()));
                }
                Ok(other) => panic!("unexpected {other:?}"),
                Err(_) => {}
            }
        }
        r.commands.send(Command::Stop).unwrap();
        r.handle.join().unwrap();
        for url in [&http.url, &udp.url] {
            let times: Vec<Duration> = failed_at
                .iter()
                .filter(|(u, _)| u == url)
                .map(|(_, t)| *t)
                .collect();
            assert!(
                (4..=12).contains(&times.len()),
                "{url}: {} attempts in 1.5 s: {times:?}",
                times.len()
            );
            let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
            for g in gaps.windows(2) {
                assert!(
                    g[1] + Duration::from_millis(30) >= g[0],
                    "{url}: backoff shrank: {gaps:?}"
                );
            }
            assert!(
                gaps.last()
                    .is_some_and(|g| *g >= Duration::from_millis(300)),
                "{url}: never backed off to the cap: {gaps:?}"
            );
        }
        // With a good tracker in the next tier, its peers still arrive.
        let r = start(&[&[&http.url, &udp.url], &[&good.url]], fast(), &real);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got_peers = false;
        while Instant::now() < deadline && !got_peers {
            if let Ok(Report::Peers { url, .. }) =
                r.reports.recv_timeout(Duration::from_millis(100))
            {
                assert_eq!(url, good.url);
                got_peers = true;
            }
        }
        assert!(got_peers, "the good tracker was never reached");
        r.commands.send(Command::Stop).unwrap();
        r.handle.join().unwrap();
    }
}

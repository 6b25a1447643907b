//! What the torrents of one process share when it downloads several (a
//! batch: `tget download A B C`): one listening socket and its listener
//! thread, whose [`Router`] hands each inbound connection to the torrent
//! its handshake names; one set of DHT nodes; and one pair of rate limits.
//!
//! A [`Session`](crate::session::Session) given a hub
//! ([`Config::hub`](crate::session::Config::hub)) binds nothing and starts
//! no DHT node of its own: it registers its info-hash with the router while
//! it runs, uses the hub's nodes for its lookups and the hub's buckets for
//! its transfers. The hub's threads end when it is dropped.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use log::info;

use crate::blocklist::Blocklist;
use crate::dht::{Dht, DhtSettings};
use crate::listener::Router;
use crate::messages::{Event, Shared};
use crate::ratelimit::Limits;
use crate::session::SessionError;

/// How to start a hub.
#[derive(Debug, Clone, Default)]
pub struct HubConfig {
    /// Port to listen on (0: any; if taken, any, unless `strict_port`).
    pub port: u16,
    /// The port was given explicitly: taken is an error.
    pub strict_port: bool,
    /// The DHT, and the folder its tables are kept in; `None`: no DHT.
    pub dht: Option<(DhtSettings, PathBuf)>,
    /// Download limit in bytes per second for all torrents (0 = none).
    pub max_download_rate: u64,
    /// Upload limit in bytes per second for all torrents (0 = none).
    pub max_upload_rate: u64,
    /// Addresses closed on accept.
    pub blocklist: Arc<Blocklist>,
    /// MSE/PE policy for inbound connections.
    pub encryption: crate::mse::Encryption,
}

/// The resources shared by the torrents of one process.
pub struct Hub {
    router: Arc<Router>,
    local: Option<SocketAddr>,
    dht: Vec<Arc<Dht>>,
    limits: Limits,
    listener: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("local", &self.local)
            .field("dht", &self.dht.len())
            .finish()
    }
}

impl Hub {
    /// Binds the listening socket (none behind a proxy), starts its
    /// listener thread and the DHT nodes.
    pub fn start(cfg: HubConfig) -> Result<Hub, SessionError> {
        let router = Arc::new(Router::shared());
        let socket = crate::session::bind_listener(cfg.port, cfg.strict_port)?;
        let local = match &socket {
            Some(l) => Some(l.local_addr().map_err(SessionError::Listen)?),
            None => None,
        };
        // uTP on the same port number (before the DHT, which shares it).
        let utp = crate::utp::listen(local.map_or(0, |a| a.port()));
        let dht = match &cfg.dht {
            Some((settings, dir)) => crate::session::start_dht(settings, dir)?
                .into_iter()
                .map(Arc::new)
                .collect(),
            None => Vec::new(),
        };
        let listener = match socket {
            Some(socket) => {
                info!(
                    "listening for peers on port {}",
                    local.map_or(0, |a| a.port())
                );
                let router = router.clone();
                let blocklist = cfg.blocklist.clone();
                let policy = cfg.encryption;
                Some(
                    std::thread::Builder::new()
                        .name("listener".into())
                        .stack_size(256 * 1024)
                        .spawn(move || crate::listener::run(socket, utp, router, blocklist, policy))
                        .map_err(SessionError::Spawn)?,
                )
            }
            None => None,
        };
        Ok(Hub {
            router,
            local,
            dht,
            limits: Limits::new(cfg.max_download_rate, cfg.max_upload_rate),
            listener: Mutex::new(listener),
        })
    }

    /// The address listened on, if any.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    /// The port listened on (0 when nothing listens).
    pub fn port(&self) -> u16 {
        self.local.map_or(0, |a| a.port())
    }

    /// The DHT nodes (shared; a node's thread ends with its last holder).
    pub fn dht(&self) -> Vec<Arc<Dht>> {
        self.dht.clone()
    }

    /// The rate limits all torrents draw from.
    pub fn limits(&self) -> Limits {
        self.limits.clone()
    }

    /// Routes inbound handshakes for `info_hash` to `events` until the
    /// returned guard is dropped.
    pub(crate) fn route(
        self: &Arc<Hub>,
        info_hash: [u8; 20],
        events: Sender<Event>,
        shared: Arc<Shared>,
    ) -> RouteGuard {
        shared
            .listen_port
            .store(self.port() as u64, Ordering::Relaxed);
        self.router.add(info_hash, events, shared);
        RouteGuard {
            hub: self.clone(),
            info_hash,
        }
    }

    /// The info-hashes inbound connections are routed for now.
    pub fn active(&self) -> Vec<[u8; 20]> {
        self.router.info_hashes()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.router.close();
        let handle = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// A torrent's place in the hub's router; removed when dropped (its
/// inbound connections are closed from then on).
pub(crate) struct RouteGuard {
    hub: Arc<Hub>,
    info_hash: [u8; 20],
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        self.hub.router.remove(&self.info_hash);
    }
}

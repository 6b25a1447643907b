//! Where a download's torrent and first peers come from (part of the
//! binary): a .torrent file or a magnet link (whose metadata is fetched
//! first, with the status line or `--json` events meanwhile), `--peer`
//! addresses and the DHT's bootstrap nodes.

use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tget::blocklist::Blocklist;
use tget::metainfo::Metainfo;
use tget::report;
use tget::session::DhtSettings;

use crate::cli::exit;
use crate::run::{emit, reader_gone, status_line, Signals};
use crate::{fail, Failure};

pub(crate) fn load(torrent: &str) -> Result<Metainfo, Failure> {
    tget::source::load(torrent).map_err(|e| load_failure(torrent, e))
}

fn load_failure(torrent: &str, e: tget::source::LoadError) -> Failure {
    use tget::source::LoadError;
    let code = match e {
        LoadError::Invalid(_) => exit::BAD_INPUT,
        LoadError::NoMetadata(_) => exit::NO_METADATA,
        LoadError::Stopped => exit::SIGINT,
    };
    // A magnet link is long and its info-hash names it in the error.
    if tget::source::is_magnet(torrent) {
        return fail(code, e);
    }
    let what: String = torrent.chars().take(60).collect();
    fail(code, format!("{what}: {e}"))
}

/// Where to look for a magnet link's metadata.
pub(crate) struct MagnetSources {
    pub(crate) peers: Vec<SocketAddr>,
    pub(crate) dht: Option<DhtSettings>,
    /// A batch's running DHT nodes, used instead of starting `dht`'s.
    pub(crate) dht_nodes: Vec<Arc<tget::dht::Dht>>,
    pub(crate) port: u16,
    pub(crate) workers: usize,
    pub(crate) timeout: Option<Duration>,
    /// Where the fetched .torrent is kept for later runs.
    pub(crate) cache_dir: Option<std::path::PathBuf>,
    /// Addresses never dialled.
    pub(crate) blocklist: Arc<Blocklist>,
    /// MSE/PE for the connections (`--encryption`).
    pub(crate) encryption: tget::mse::Encryption,
}

/// A loaded torrent, the peers found while fetching it, and a magnet
/// link's file selection (`so`).
pub(crate) type Loaded = (Metainfo, Vec<SocketAddr>, Option<Vec<usize>>);

/// The torrent named by `torrent`: loaded, or for a magnet link fetched
/// from peers (`metadata` JSON event, exit 6 when it cannot be), with the
/// peers found on the way and the link's file selection (`so`).
pub(crate) fn load_any(
    torrent: &str,
    sources: MagnetSources,
    signals: &Signals,
    json: bool,
    quiet: bool,
) -> Result<Loaded, Failure> {
    if !tget::source::is_magnet(torrent) {
        return Ok((load(torrent)?, Vec::new(), None));
    }
    let m = tget::magnet::Magnet::parse(torrent).map_err(|e| fail(exit::BAD_INPUT, e))?;
    let started = Instant::now();
    if !quiet && !json && std::io::stderr().is_terminal() {
        status_line(
            &format!("fetching the metadata of {} ...", m.info_hash_hex()),
            false,
        );
    }
    // The fetched .torrent and the DHT tables are kept in DIR/.tget,
    // which must be a real folder (see tget::statedir).
    let state_dir = match &sources.cache_dir {
        Some(d) => Some(tget::statedir::ensure(d).map_err(|e| fail(exit::DISK, e))?),
        None => None,
    };
    let cfg = tget::metadata::FetchConfig {
        info_hash: m.info_hash,
        peers: sources.peers,
        trackers: Vec::new(),
        dht: sources.dht.map(|settings| {
            let dir = state_dir.clone().unwrap_or_else(|| ".tget".into());
            (settings, dir)
        }),
        dht_nodes: sources.dht_nodes,
        port: sources.port,
        workers: sources.workers,
        timeout: sources
            .timeout
            .unwrap_or(Duration::from_secs(100 * 365 * 86400)),
        blocklist: sources.blocklist,
        encryption: sources.encryption,
    };
    let cache = sources
        .cache_dir
        .as_deref()
        .map(|d| tget::source::magnet_cache(d, &m.info_hash));
    let (meta, peers) = tget::source::load_magnet(&m, cfg, cache.as_deref(), &signals.flag)
        .map_err(|e| match e {
            tget::source::LoadError::Stopped => {
                fail(signals.received().unwrap_or(exit::SIGINT), "interrupted")
            }
            e => load_failure(torrent, e),
        })?;
    if json {
        emit(&report::metadata_event(
            &meta,
            started.elapsed().as_secs_f64(),
            peers.len(),
        ))
        .map_err(|_| reader_gone())?;
    } else if !quiet && std::io::stderr().is_terminal() {
        status_line(
            &format!(
                "metadata of {}: {} in {:.1} s",
                m.info_hash_hex(),
                meta.info.name,
                started.elapsed().as_secs_f64()
            ),
            true,
        );
    }
    Ok((meta, peers, m.select))
}

pub(crate) fn resolve_peers(peers: &[String]) -> Result<Vec<SocketAddr>, Failure> {
    let mut out = Vec::new();
    for p in peers {
        let addrs = p
            .to_socket_addrs()
            .map_err(|e| fail(exit::USAGE, format!("--peer {p}: {e}")))?;
        out.extend(addrs);
    }
    Ok(out)
}

/// The DHT's entry points: those given, or the well-known routers (looked
/// up now; a router that cannot be found is skipped with a warning; none
/// behind a proxy, where the lookup would leave outside it).
pub(crate) fn dht_bootstrap(given: &[String]) -> Result<Vec<SocketAddr>, Failure> {
    if !given.is_empty() {
        return resolve_peers(given);
    }
    let mut out = Vec::new();
    if tget::dial::proxied() {
        // Their names would be looked up here, outside the proxy.
        log::info!(
            "DHT: behind a proxy the default routers are not used (give --dht-bootstrap ADDR:PORT)"
        );
        return Ok(out);
    }
    for name in tget::dht::DEFAULT_BOOTSTRAP {
        match name.to_socket_addrs() {
            Ok(addrs) => out.extend(addrs),
            Err(e) => log::warn!("DHT router {name}: {e}"),
        }
    }
    Ok(out)
}

/// The `--blocklist` files, read into one table. A bad line is a warning
/// naming its file and line; a file that cannot be read is bad input.
pub(crate) fn load_blocklists(files: &[PathBuf]) -> Result<Arc<Blocklist>, Failure> {
    if files.is_empty() {
        return Ok(Arc::default());
    }
    let (list, reports) = Blocklist::load(files).map_err(|e| fail(exit::BAD_INPUT, e))?;
    for r in &reports {
        for b in &r.bad {
            log::warn!(
                "blocklist {}:{}: skipped: {}",
                r.path.display(),
                b.line,
                b.why
            );
        }
        if r.bad_count > r.bad.len() {
            log::warn!(
                "blocklist {}: {} more bad lines skipped",
                r.path.display(),
                r.bad_count - r.bad.len()
            );
        }
    }
    log::info!(
        "blocklist: {} ranges from {} files",
        list.ranges_read(),
        files.len()
    );
    Ok(Arc::new(list))
}

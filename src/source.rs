//! Where a torrent comes from: a path, `-` (standard input), an http(s)
//! URL of a `.torrent`, or a magnet link, whose metadata is fetched from
//! peers ([`load_magnet`], BEP 9) and kept for later runs. Every source is
//! read with the same size cap as files.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::magnet::Magnet;
use crate::metadata::{self, FetchConfig, FetchError};
use crate::metainfo::{Metainfo, MetainfoError, MAX_TORRENT_FILE_SIZE};

/// How long fetching a `.torrent` over HTTP may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a torrent could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// The input is unreadable or not a valid torrent or magnet link.
    Invalid(String),
    /// A valid magnet link whose metadata could not be fetched.
    NoMetadata(String),
    /// Stopped (a signal) while fetching the metadata.
    Stopped,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Invalid(m) | LoadError::NoMetadata(m) => f.write_str(m),
            LoadError::Stopped => f.write_str("stopped while fetching the metadata"),
        }
    }
}

impl std::error::Error for LoadError {}

impl From<MetainfoError> for LoadError {
    fn from(e: MetainfoError) -> Self {
        LoadError::Invalid(e.to_string())
    }
}

/// Loads and validates the torrent named by `arg`.
pub fn load(arg: &str) -> Result<Metainfo, LoadError> {
    let bytes = if arg == "-" {
        read_capped(std::io::stdin().lock(), "standard input")?
    } else if has_scheme(arg, "http://") || has_scheme(arg, "https://") {
        fetch(arg)?
    } else if is_magnet(arg) {
        let m = Magnet::parse(arg).map_err(|e| LoadError::Invalid(e.to_string()))?;
        return Err(LoadError::NoMetadata(format!(
            "{}: a magnet link needs its metadata fetched from peers (tget info or tget download)",
            m.info_hash_hex()
        )));
    } else {
        return Ok(Metainfo::from_file(std::path::Path::new(arg))?);
    };
    Ok(Metainfo::from_vec(bytes)?)
}

/// Whether `arg` is a magnet link (to be parsed with [`Magnet::parse`]).
pub fn is_magnet(arg: &str) -> bool {
    has_scheme(arg, "magnet:")
}

/// Where a fetched magnet's .torrent is kept: `DIR/.tget/<info-hash>.torrent`.
pub fn magnet_cache(dir: &Path, info_hash: &[u8; 20]) -> PathBuf {
    let hex: String = info_hash.iter().map(|b| format!("{b:02x}")).collect();
    dir.join(".tget").join(format!("{hex}.torrent"))
}

/// The torrent behind a magnet link, and peers found on the way. A .torrent
/// kept by an earlier run at `cache` is used when its info-hash matches;
/// otherwise the metadata is fetched (the link's `x.pe` peers and `tr`
/// trackers are added to `cfg`'s) and, when `cache` is given, kept there.
pub fn load_magnet(
    m: &Magnet,
    mut cfg: FetchConfig,
    cache: Option<&Path>,
    stop: &AtomicBool,
) -> Result<(Metainfo, Vec<SocketAddr>), LoadError> {
    if let Some(path) = cache {
        let kept = crate::statedir::read(path, crate::metainfo::MAX_TORRENT_FILE_SIZE);
        match kept.ok().flatten().map(|b| Metainfo::from_bytes(&b)) {
            None => {}
            Some(Ok(meta)) if meta.info_hash == m.info_hash => return Ok((meta, m.peers.clone())),
            Some(Ok(_)) => log::warn!("{}: another torrent; fetching again", path.display()),
            Some(Err(_)) => {}
        }
    }
    cfg.info_hash = m.info_hash;
    let mut trackers = m.trackers.clone();
    trackers.extend(cfg.trackers.drain(..).filter(|t| !m.trackers.contains(t)));
    cfg.trackers = trackers;
    let mut peers = m.peers.clone();
    peers.append(&mut cfg.peers);
    cfg.peers = peers;
    let fetched = metadata::fetch(&cfg, stop).map_err(|e| match e {
        FetchError::Stopped => LoadError::Stopped,
        e => LoadError::NoMetadata(format!("{}: {e}", m.info_hash_hex())),
    })?;
    let bytes = metadata::torrent_bytes(&fetched.info_bytes, &cfg.trackers);
    let meta = Metainfo::from_bytes(&bytes).map_err(|e| {
        LoadError::Invalid(format!(
            "{}: the fetched metadata is not a valid torrent: {e}",
            m.info_hash_hex()
        ))
    })?;
    if let Some(path) = cache {
        let saved = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| crate::resume::write_atomic(path, &bytes));
        if let Err(e) = saved {
            log::warn!("cannot keep the metadata in {}: {e}", path.display());
        }
    }
    Ok((meta, fetched.peers))
}

fn has_scheme(arg: &str, scheme: &str) -> bool {
    arg.len() >= scheme.len() && arg[..scheme.len()].eq_ignore_ascii_case(scheme)
}

fn error(field: &str, message: impl Into<String>) -> MetainfoError {
    MetainfoError {
        field: field.to_string(),
        message: message.into(),
    }
}

fn read_capped(r: impl Read, what: &str) -> Result<Vec<u8>, MetainfoError> {
    let mut bytes = Vec::new();
    r.take(MAX_TORRENT_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| error("file", format!("{what}: {e}")))?;
    if bytes.len() as u64 > MAX_TORRENT_FILE_SIZE {
        return Err(error(
            "file",
            format!("{what}: larger than {MAX_TORRENT_FILE_SIZE} bytes"),
        ));
    }
    Ok(bytes)
}

fn fetch(url: &str) -> Result<Vec<u8>, MetainfoError> {
    // Through `--proxy` when there is one (crate::dial).
    let response = crate::dial::http_agent()
        .get(url)
        .config()
        .timeout_global(Some(FETCH_TIMEOUT))
        .http_status_as_error(true)
        .build()
        .call()
        .map_err(|e| error("url", format!("{url}: {e}")))?;
    let reader = response.into_body().into_reader();
    read_capped(reader, url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magnets_are_parsed_then_refused_for_want_of_metadata() {
        let bad = load("magnet:?xt=urn:btih:0123").unwrap_err();
        assert!(matches!(bad, LoadError::Invalid(_)), "{bad}");
        assert!(bad.to_string().contains("magnet"), "{bad}");
        let good =
            load("magnet:?xt=urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88a").unwrap_err();
        assert!(matches!(good, LoadError::NoMetadata(_)), "{good}");
    }

    #[test]
    fn a_missing_path_names_the_file() {
        let e = load("/nonexistent/x.torrent").unwrap_err();
        assert!(e.to_string().contains("x.torrent"), "{e}");
    }

    #[test]
    fn schemes_are_case_insensitive() {
        assert!(has_scheme("HTTP://x", "http://"));
        assert!(!has_scheme("htt", "http://"));
    }
}

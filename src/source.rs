//! Where a torrent comes from: a path, `-` (standard input), or an http(s)
//! URL of a `.torrent`. Magnet links are parsed (a malformed one is bad
//! input) but their metadata cannot be fetched yet. Every source is read
//! with the same size cap as files.

use std::io::Read;
use std::time::Duration;

use crate::magnet::Magnet;
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
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Invalid(m) | LoadError::NoMetadata(m) => f.write_str(m),
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
    } else if has_scheme(arg, "magnet:") {
        let m = Magnet::parse(arg).map_err(|e| LoadError::Invalid(e.to_string()))?;
        return Err(LoadError::NoMetadata(format!(
            "cannot fetch the metadata of {}: the metadata exchange (BEP 9) is not supported yet",
            m.info_hash_hex()
        )));
    } else {
        return Ok(Metainfo::from_file(std::path::Path::new(arg))?);
    };
    Ok(Metainfo::from_bytes(&bytes)?)
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
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(FETCH_TIMEOUT))
        .http_status_as_error(true)
        .build()
        .into();
    let response = agent
        .get(url)
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

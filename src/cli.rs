//! The command line: clap definitions for every subcommand and flag, and
//! the exit codes. A module of the binary (`main.rs`), not of the library.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use tget::session::Config;
use tget::units;

/// Exit codes (README.md lists them; keep the two in step).
pub(crate) mod exit {
    pub const OK: u8 = 0;
    pub const INTERNAL: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const BAD_INPUT: u8 = 3;
    pub const NO_PROGRESS: u8 = 4;
    pub const DISK: u8 = 5;
    pub const NO_METADATA: u8 = 6;
    pub const NETWORK: u8 = 7;
    pub const BUSY: u8 = 8;
    pub const SIGINT: u8 = 130;
    pub const SIGTERM: u8 = 143;
}

pub(crate) const EXIT_CODES: &str = "Exit codes:
  0    complete: every piece verified and written (or the reader of -O -/--json left)
  1    internal error
  2    usage error (bad flags or arguments)
  3    bad input: unreadable or invalid torrent (or magnet link), unreadable --blocklist
  4    no peers or no progress before --timeout
  5    disk or file error (verify: data incomplete; seed: incomplete data without --partial)
  6    metadata could not be fetched (magnet links)
  7    network set-up: the --port given is taken, --proxy down, refusing or
       not SOCKS5, or a --bind address this host does not have
  8    another tget is downloading or seeding this torrent in this folder
  130  download interrupted by SIGINT (Ctrl+C); state saved, run again to resume
  143  download interrupted by SIGTERM; state saved, run again to resume
       (seeding stopped by a signal, `tget seed` with or without --partial
       or `download --seed` once complete, exits 0)
Several torrents: 0 when all completed, else the code of the first one
(in the order given) that did not.";

#[derive(Parser)]
#[command(name = "tget", version, about = "A small BitTorrent client: blocking sockets, plain threads.", after_help = EXIT_CODES)]
pub(crate) struct Cli {
    /// More logging on stderr: -v connections and pieces, -vv every message.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
    /// Print only errors.
    #[arg(short, long, global = true)]
    pub(crate) quiet: bool,
    /// Do not use the DHT (download, seed, info; also taken after them).
    #[arg(long)]
    pub(crate) no_dht: bool,
    /// Send every connection through this SOCKS5 proxy:
    /// socks5://[user:pass@]HOST:PORT. Peers, HTTP(S) trackers and web seeds
    /// go through it; UDP trackers and the DHT are off, nothing listens, and
    /// nothing ever falls back to a direct connection.
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) proxy: Option<String>,
    /// Listen on this local address only and send every connection from it
    /// (peers, HTTP and UDP trackers, web seeds, the DHT). Without it tget
    /// listens on every address, IPv4 and IPv6.
    #[arg(long, global = true, value_name = "ADDR")]
    pub(crate) bind: Option<std::net::IpAddr>,
    /// Never use uTP: a peer whose TCP port does not answer is not tried
    /// over uTP (BEP 29) either.
    #[arg(long, global = true)]
    pub(crate) no_utp: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(clap::Args, Clone)]
pub(crate) struct NetArgs {
    /// Where the content lives: DIR/<name> for one file, DIR/<name>/... for several.
    #[arg(long, default_value = ".")]
    pub(crate) dir: PathBuf,
    /// Port to listen on for peers (default 6881, or any free port if that
    /// one is taken; a port given here that is taken is an error, exit 7).
    #[arg(long)]
    pub(crate) port: Option<u16>,
    /// A peer to connect to, besides those the trackers give (repeatable).
    #[arg(long = "peer", value_name = "HOST:PORT")]
    pub(crate) peers: Vec<String>,
    /// UDP port of our DHT node (default: the same number as --port).
    #[arg(long, value_name = "N")]
    pub(crate) dht_port: Option<u16>,
    /// A DHT node to join through (repeatable; default: the well-known
    /// public routers).
    #[arg(long = "dht-bootstrap", value_name = "HOST:PORT")]
    pub(crate) dht_bootstrap: Vec<String>,
    /// A file of addresses never to talk to (repeatable): one a line, as
    /// `name:1.2.3.0-1.2.3.255` (P2P format), `1.2.3.0-1.2.3.255`,
    /// `10.0.0.0/8`, `2001:db8::/32` or a single address; `#` starts a
    /// comment. Bad lines are warned about and skipped.
    #[arg(long = "blocklist", value_name = "FILE")]
    pub(crate) blocklists: Vec<PathBuf>,
    /// Number of worker threads, hence of simultaneous connections.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub(crate) max_peers: u16,
    /// Do not use the DHT (tests and offline use: nothing but the trackers
    /// and --peer addresses is contacted).
    #[arg(long)]
    pub(crate) no_dht: bool,
    /// MSE/PE encryption of peer connections: `prefer` tries it first and
    /// falls back to plaintext, and accepts both; `require` never talks
    /// plaintext; `off` never encrypts.
    #[arg(long, value_name = "prefer|require|off", default_value = "prefer")]
    pub(crate) encryption: tget::mse::Encryption,
}

/// Uploading, rate limits and when seeding ends (download and seed).
#[derive(clap::Args, Clone)]
pub(crate) struct ShareArgs {
    /// Regular upload slots: peers we upload to at once (plus one optimistic).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub(crate) upload_slots: u16,
    /// Download limit in bytes per second, K/M/G suffixes (1024-based); 0 = none.
    #[arg(long, value_name = "RATE", value_parser = units::parse_rate)]
    pub(crate) max_download_rate: Option<u64>,
    /// Upload limit in bytes per second, K/M/G suffixes (1024-based); 0 = none.
    #[arg(long, value_name = "RATE", value_parser = units::parse_rate)]
    pub(crate) max_upload_rate: Option<u64>,
    /// Stop seeding once we uploaded R times the torrent's size (implies --seed).
    #[arg(long, value_name = "R", value_parser = units::parse_ratio)]
    pub(crate) seed_ratio: Option<f64>,
    /// Stop seeding after this long: 90s, 30m, 2h, 1d, 1h30m; bare number = seconds (implies --seed).
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration)]
    pub(crate) seed_time: Option<Duration>,
}

impl NetArgs {
    /// The port to listen on: the one given, or the default.
    pub(crate) fn port(&self) -> u16 {
        self.port.unwrap_or(DEFAULT_PORT)
    }
}

/// The port listened on when `--port` is not given (if free).
pub(crate) const DEFAULT_PORT: u16 = 6881;

impl ShareArgs {
    /// Copies the choices into a session's config.
    pub(crate) fn apply(&self, config: &mut Config) {
        config.upload_slots = self.upload_slots as usize;
        config.max_download_rate = self.max_download_rate.unwrap_or(0);
        config.max_upload_rate = self.max_upload_rate.unwrap_or(0);
        config.seed_ratio = self.seed_ratio;
        config.seed_time = self.seed_time;
        if self.seed_ratio.is_some() || self.seed_time.is_some() {
            config.seed = true;
        }
    }
}

#[derive(clap::Args, Clone)]
pub(crate) struct OutArgs {
    /// Newline-delimited JSON events on stdout instead of the status line
    /// (schema in docs/JSON.md).
    #[arg(long)]
    pub(crate) json: bool,
    /// Give up with exit code 4 when nothing was verified for this long
    /// (e.g. 90s, 5m, 1h); off by default.
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration)]
    pub(crate) timeout: Option<Duration>,
}

/// Where `tget info <MAGNET>` looks for the metadata, and what it keeps.
#[derive(clap::Args, Clone)]
pub(crate) struct FetchArgs {
    /// Write the fetched metadata as a .torrent file that other clients load.
    #[arg(long, value_name = "FILE.torrent")]
    pub(crate) save: Option<PathBuf>,
    /// A peer to ask for the metadata, besides the link's (repeatable).
    #[arg(long = "peer", value_name = "HOST:PORT")]
    pub(crate) peers: Vec<String>,
    /// UDP port of our DHT node.
    #[arg(long, value_name = "N", default_value_t = 6881)]
    pub(crate) dht_port: u16,
    /// A DHT node to join through (repeatable; default: the well-known
    /// public routers).
    #[arg(long = "dht-bootstrap", value_name = "HOST:PORT")]
    pub(crate) dht_bootstrap: Vec<String>,
    /// Give up with exit code 6 when the metadata has not come in this long
    /// (e.g. 90s, 5m); off by default.
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration)]
    pub(crate) timeout: Option<Duration>,
    /// Do not use the DHT (only the link's trackers and peers, and --peer).
    #[arg(long)]
    pub(crate) no_dht: bool,
    /// MSE/PE encryption of peer connections: `prefer` tries it first and
    /// falls back to plaintext, and accepts both; `require` never talks
    /// plaintext; `off` never encrypts.
    #[arg(long, value_name = "prefer|require|off", default_value = "prefer")]
    pub(crate) encryption: tget::mse::Encryption,
}

#[derive(clap::Args, Clone)]
pub(crate) struct PickArgs {
    /// Download only files whose path matches this glob (repeatable; `*`
    /// within a folder, `**` across folders; paths as `tget info` shows).
    #[arg(long = "file", value_name = "PATTERN")]
    pub(crate) files_matching: Vec<String>,
    /// Download only these files, by index as `tget info` shows (e.g. 0,3-5).
    #[arg(long = "files", value_name = "LIST")]
    pub(crate) file_indexes: Option<String>,
    /// Write the content to standard output, in order, as it arrives
    /// (`-O -`; a single-file torrent or exactly one chosen file).
    #[arg(short = 'O', value_name = "-", conflicts_with = "json")]
    pub(crate) output: Option<String>,
    /// Same as `-O -`.
    #[arg(long, conflicts_with_all = ["json", "output"])]
    pub(crate) stdout: bool,
    /// While streaming, keep the file in memory only (the window), not on
    /// disk; nothing is seeded or saved for resuming.
    #[arg(long, requires = "output")]
    pub(crate) no_save: bool,
    /// Create new files sparse, their disk blocks allocated as pieces
    /// arrive, instead of all at once at the start (the default where the
    /// filesystem can): less disk used until the end, a little more CPU per
    /// byte, and another program can still fill the disk midway (exit 5).
    #[arg(long)]
    pub(crate) sparse: bool,
    /// While streaming, fetch at most this many pieces ahead.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) window: u32,
    /// An HTTP server holding the content (BEP 19 web seed), besides the
    /// torrent's `url-list` and a magnet's `ws=` (repeatable).
    #[arg(long = "web-seed", value_name = "URL")]
    pub(crate) web_seeds: Vec<String>,
    /// Use no web seeds (neither the torrent's nor a magnet's).
    #[arg(long, conflicts_with = "web_seeds")]
    pub(crate) no_web_seeds: bool,
    /// How long a web seed may stall (connecting, answering, each read)
    /// before it is backed off: 30s, 2m; bare number = seconds.
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration)]
    pub(crate) web_seed_timeout: Option<Duration>,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Download one or more torrents; exits 0 once every piece of each is
    /// verified and written.
    Download {
        /// The .torrent: a path, `-` for standard input, an http(s) URL, or
        /// a magnet link (its metadata is fetched from peers first). Several
        /// are downloaded in one process, -j at once, sharing the port, the
        /// DHT, the rate limits and --max-peers.
        #[arg(value_name = "TORRENT", required_unless_present = "input")]
        torrents: Vec<String>,
        /// Also download the torrents listed in FILE (`-`: standard input):
        /// one path, URL or magnet link a line; blank lines and lines
        /// starting with `#` are skipped.
        #[arg(short = 'i', long = "input-file", value_name = "FILE")]
        input: Option<String>,
        /// How many torrents download at once; the others wait, in order.
        #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 3,
              value_parser = clap::value_parser!(u16).range(1..=100))]
        jobs: u16,
        #[command(flatten)]
        net: NetArgs,
        #[command(flatten)]
        out: OutArgs,
        #[command(flatten)]
        pick: PickArgs,
        /// Keep seeding after the download completes (until interrupted, or
        /// --seed-ratio / --seed-time).
        #[arg(long)]
        seed: bool,
        #[command(flatten)]
        share: ShareArgs,
        /// Run CMD through `sh -c` once the data is complete and verified
        /// on disk, before seeding; its environment has TGET_INFO_HASH,
        /// TGET_NAME, TGET_DIR (the torrent's file or folder) and TGET_FILES
        /// (the chosen files' paths, one a line). Its output goes to
        /// stderr; a failing CMD is logged and does not change the exit
        /// code; tget waits for it before exiting.
        #[arg(long, value_name = "CMD")]
        on_complete: Option<String>,
    },
    /// Check the data (all cores) and serve it to peers until interrupted,
    /// or until --seed-ratio / --seed-time.
    Seed {
        /// The .torrent: a path, `-` for standard input, or an http(s) URL.
        torrent: String,
        #[command(flatten)]
        net: NetArgs,
        #[command(flatten)]
        out: OutArgs,
        #[command(flatten)]
        share: ShareArgs,
        /// Serve incomplete data (what verifies) instead of refusing (exit 5).
        #[arg(long)]
        partial: bool,
    },
    /// Show what a torrent holds (a magnet link's metadata is fetched from peers first).
    Info {
        /// The .torrent: a path, `-` for standard input, an http(s) URL, or a magnet link.
        torrent: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        fetch: FetchArgs,
    },
    /// Hash-check the data on disk (all cores); exits 0 only when complete.
    /// A download of some files (`--file`, `--files`) is checked for those:
    /// give the same flags, or tget takes the files present when the
    /// download's resume record is there.
    Verify {
        /// The .torrent: a path, `-` for standard input, or an http(s) URL.
        torrent: String,
        /// Where the content lives.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Print one JSON object on stdout instead of text.
        #[arg(long)]
        json: bool,
        /// Check only files whose path matches this glob (repeatable), as
        /// `download --file` chose them.
        #[arg(long = "file", value_name = "PATTERN")]
        files_matching: Vec<String>,
        /// Check only these files, by index (e.g. 0,3-5), as `download
        /// --files` chose them.
        #[arg(long = "files", value_name = "LIST")]
        file_indexes: Option<String>,
    },
    /// Make a .torrent from a file or folder.
    Create {
        /// The file or folder to share.
        path: PathBuf,
        /// Tracker announce URL (repeatable).
        #[arg(short = 't', long = "tracker", value_name = "URL")]
        trackers: Vec<String>,
        /// Piece size (a power of two, at least 16K; e.g. 262144 or 256K);
        /// chosen from the content's size when absent.
        #[arg(long, value_name = "BYTES", value_parser = units::parse_bytes)]
        piece_size: Option<u64>,
        /// Mark the torrent private (BEP 27).
        #[arg(long)]
        private: bool,
        /// A comment to put in the torrent.
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
        /// A web seed (BEP 19) to put in the torrent's `url-list`
        /// (repeatable): the file's URL, or for a folder a URL holding it.
        #[arg(long = "web-seed", value_name = "URL")]
        web_seeds: Vec<String>,
        /// Where to write the .torrent (`-` for standard output).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
        /// Replace FILE if it exists (without it, an existing FILE is an
        /// error, exit 2, and is left alone).
        #[arg(long)]
        force: bool,
    },
    /// Print a shell completion script (e.g. `tget completions bash > /etc/bash_completion.d/tget`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print a man page (roff): tget(1), or with COMMAND the page of that
    /// subcommand (tget-download(1), ...), e.g. `tget man download | man -l -`.
    Man {
        /// The subcommand whose page to print.
        command: Option<String>,
    },
    /// Offline demo: seeders and a download on 127.0.0.1, no internet needed.
    Demo {
        /// Size of the demo content: bytes, or with a K/M/G suffix (e.g. 1G).
        #[arg(long, default_value = "64M", value_parser = units::parse_bytes)]
        size: u64,
        /// Number of seeders.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=32))]
        peers: u16,
    },
}

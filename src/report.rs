//! What the binary shows: the status line and the `--json` events, built as
//! text here so `main.rs` only decides where it goes (the library never
//! prints). The JSON schema is documented in docs/JSON.md; every object has
//! `"event"` and `"version"`.

use std::time::Instant;

use crate::json::{array, Object};
use crate::metainfo::Metainfo;
use crate::session::{Notice, Stats};

/// Version of the JSON event schema (docs/JSON.md).
/// 2: `done`'s `bytes` counts what this run verified, not the whole size
/// (they differ when a run resumed); `done` gains `total_bytes`,
/// `uploaded` and `ratio`.
pub const JSON_VERSION: u64 = 2;

/// Bytes in binary units, e.g. "12.3 MiB".
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Seconds as `m:ss` or `h:mm:ss`.
pub fn clock(secs: u64) -> String {
    if secs >= 3600 {
        format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
    } else {
        format!("{}:{:02}", secs / 60, secs % 60)
    }
}

/// Download and upload rates from successive [`Stats`], lightly smoothed.
#[derive(Debug, Default)]
pub struct Rates {
    last: Option<(Instant, u64, u64)>,
    /// Bytes per second received.
    pub down: f64,
    /// Bytes per second sent.
    pub up: f64,
}

impl Rates {
    /// Folds in a new sample taken now.
    pub fn sample(&mut self, s: &Stats) {
        let now = Instant::now();
        if let Some((t, d, u)) = self.last {
            let dt = now.duration_since(t).as_secs_f64();
            if dt <= 0.0 {
                return;
            }
            let down = s.downloaded.saturating_sub(d) as f64 / dt;
            let up = s.uploaded.saturating_sub(u) as f64 / dt;
            self.down = 0.5 * self.down + 0.5 * down;
            self.up = 0.5 * self.up + 0.5 * up;
        }
        self.last = Some((now, s.downloaded, s.uploaded));
    }
}

/// What the status line says besides the counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatusInfo<'a> {
    /// The torrent's name (shown [`Escaped`], shortened to fit).
    pub name: &'a str,
    /// Serving only (`tget seed`): seeding even when data is missing.
    pub serving: bool,
    /// Seeding once the download is complete (`download --seed`).
    pub seed: bool,
    /// The port listened on, when it is not the one asked for.
    pub port: Option<u16>,
    /// Columns available (0: no limit); the line is kept shorter than
    /// this, so a terminal never wraps it.
    pub width: usize,
}

/// The status line's text (without the carriage return): the name, then
/// the bytes done of the total, rates, peers and ETA while downloading, or
/// the upload total and ratio while seeding; at most `width - 1` columns.
pub fn status_text(s: &Stats, r: &Rates, info: &StatusInfo) -> String {
    if let Some((done, of)) = s.checking {
        return fit("", &format!("checking {done}/{of} pieces"), info.width);
    }
    let seeding = info.serving || (info.seed && s.ready && s.verified >= s.total);
    let web = match s.web_seeds {
        0 => String::new(),
        1 => "  web seed 1".to_string(),
        n => format!("  web seeds {n}"),
    };
    let encrypted = match s.peers_encrypted {
        0 => String::new(),
        n => format!(" ({n} enc)"),
    };
    let peers = format!(
        "peers {}/{}{encrypted}{web}",
        s.peers_connected,
        s.peers_known.max(s.peers_connected)
    );
    let mut rest = if seeding {
        format!(
            "seeding, uploaded {} (ratio {:.2})  up {}/s  {peers}",
            human(s.uploaded),
            s.uploaded as f64 / s.total.max(1) as f64,
            human(r.up as u64)
        )
    } else {
        let pct = if s.total == 0 {
            100.0
        } else {
            s.verified as f64 * 100.0 / s.total as f64
        };
        let left = s.total.saturating_sub(s.verified);
        let eta = if left == 0 {
            "done".to_string()
        } else if r.down > 1.0 {
            clock((left as f64 / r.down) as u64)
        } else {
            "--:--".to_string()
        };
        format!(
            "{pct:5.1}%  {} of {}  down {}/s  up {}/s  {peers}  eta {eta}",
            human(s.verified),
            human(s.total),
            human(r.down as u64),
            human(r.up as u64),
        )
    };
    if let Some(p) = info.port {
        rest.push_str(&format!("  port {p}"));
    }
    fit(&Escaped(info.name).to_string(), &rest, info.width)
}

/// Columns a character takes on a terminal: 2 for the wide East Asian
/// ranges and emoji, else 1 (the hidden ones are escaped before this).
fn columns(c: char) -> usize {
    match c as u32 {
        0x1100..=0x115F
        | 0x2E80..=0x303E
        | 0x3041..=0x33FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF
        | 0xAC00..=0xD7A3
        | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F
        | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6
        | 0x1F300..=0x1F64F
        | 0x1F900..=0x1F9FF
        | 0x20000..=0x3FFFD => 2,
        _ => 1,
    }
}

/// `text` cut to at most `max` columns.
pub fn cut(text: &str, max: usize) -> &str {
    let mut used = 0;
    for (at, c) in text.char_indices() {
        used += columns(c);
        if used > max {
            return &text[..at];
        }
    }
    text
}

fn width_of(text: &str) -> usize {
    text.chars().map(columns).sum()
}

/// `name  rest` in fewer than `width` columns (0: no limit): the name is
/// shortened first (with `~` where it was cut), then dropped, then `rest`
/// is cut.
fn fit(name: &str, rest: &str, width: usize) -> String {
    let whole = if name.is_empty() {
        rest.to_string()
    } else {
        format!("{name}  {rest}")
    };
    if width == 0 || width_of(&whole) < width {
        return whole;
    }
    let max = width - 1;
    let room = max.saturating_sub(width_of(rest) + 2);
    if !name.is_empty() && room >= 8 {
        return format!("{}~  {rest}", cut(name, room - 1));
    }
    cut(rest, max).to_string()
}

/// The line a completed download ends with: the torrent's name
/// ([`Escaped`]), its size, the time it took and the average rate.
pub fn complete_text(name: &str, bytes: u64, seconds: f64) -> String {
    format!(
        "{}: complete, {} in {seconds:.1} s ({}/s)",
        Escaped(name),
        human(bytes),
        human((bytes as f64 / seconds.max(0.001)) as u64)
    )
}

/// What a run did, for its last line and the `done` event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunTotals {
    /// How long the run took.
    pub seconds: f64,
    /// Bytes verified by this run (fetched, not already here).
    pub bytes: u64,
    /// Bytes of the chosen data verified in all.
    pub have: u64,
    /// Bytes of the chosen data.
    pub size: u64,
    /// Payload bytes uploaded by this run.
    pub uploaded: u64,
    /// Times the blocklist refused an address.
    pub peers_blocked: u64,
}

impl RunTotals {
    /// Uploaded bytes over the chosen data's size.
    pub fn ratio(&self) -> f64 {
        self.uploaded as f64 / self.size.max(1) as f64
    }
}

/// The line a run ends with: for a download what it fetched (and what was
/// already here), for a seeder (`seeded`) or a download that uploaded,
/// the upload total and ratio. The name is shown [`Escaped`].
pub fn final_text(name: &str, t: &RunTotals, seeded: bool) -> String {
    let mut out = if t.have < t.size {
        // A seeder serving partial data.
        format!(
            "{}: {} of {} here, served for {:.1} s",
            Escaped(name),
            human(t.have),
            human(t.size),
            t.seconds
        )
    } else if t.bytes == 0 && seeded {
        format!("{}: served for {:.1} s", Escaped(name), t.seconds)
    } else {
        complete_text(name, t.bytes, t.seconds)
    };
    if t.have >= t.size && t.bytes > 0 && t.bytes < t.have {
        out.push_str(&format!(" ({} was already here)", human(t.have - t.bytes)));
    }
    if seeded || t.uploaded > 0 {
        out.push_str(&format!(
            "; uploaded {} (ratio {:.2})",
            human(t.uploaded),
            t.ratio()
        ));
    }
    out
}

fn event(name: &str) -> Object {
    Object::new()
        .str("event", name)
        .num("version", JSON_VERSION)
}

/// `started`: what is being downloaded.
/// `blocklist_ranges`: ranges read from `--blocklist` files (0 without);
/// `port`: the port listened on for peers.
pub fn started_event(
    meta: &Metainfo,
    blocklist_ranges: u64,
    port: u16,
    encryption: crate::mse::Encryption,
) -> String {
    event("started")
        .str("name", &meta.info.name)
        .str("info_hash", &meta.info_hash_hex())
        .num("total_bytes", meta.info.total_length())
        .num("pieces", meta.info.num_pieces() as u64)
        .num("files", meta.info.files.len() as u64)
        .num("blocklist_ranges", blocklist_ranges)
        .num("port", port as u64)
        .str("encryption", &encryption.to_string())
        .finish()
}

/// `completed`: the chosen data is complete and verified on disk (before
/// any seeding; `done` comes when tget ends); `total_bytes` is the size
/// of the chosen files.
pub fn completed_event(meta: &Metainfo, total_bytes: u64, seconds: f64) -> String {
    event("completed")
        .str("name", &meta.info.name)
        .str("info_hash", &meta.info_hash_hex())
        .num("total_bytes", total_bytes)
        .raw("seconds", &format!("{seconds:.3}"))
        .finish()
}

/// Whether `c` must not reach a terminal raw: the control characters (C0,
/// DEL and C1, which move the cursor, end lines or start escape sequences),
/// the line and paragraph separators, and the invisible format characters
/// (Unicode category Cf as of Unicode 16), among them the bidi controls
/// (U+061C, U+200E, U+200F, U+202A..U+202E, U+2066..U+2069) that reorder
/// what follows and zero-width ones such as U+200B and U+FEFF.
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c as u32,
            0x00AD
                | 0x0600..=0x0605
                | 0x061C
                | 0x06DD
                | 0x070F
                | 0x0890..=0x0891
                | 0x08E2
                | 0x180E
                | 0x200B..=0x200F
                | 0x2028..=0x202E
                | 0x2060..=0x2064
                | 0x2066..=0x206F
                | 0xFEFF
                | 0xFFF9..=0xFFFB
                | 0x110BD
                | 0x110CD
                | 0x13430..=0x1343F
                | 0x1BCA0..=0x1BCA3
                | 0x1D173..=0x1D17A
                | 0xE0001
                | 0xE0020..=0xE007F
        )
}

/// Text from the network or a torrent file, shown safely: every
/// [`is_hidden`] character is written escaped (`\r`, `\n`, `\t`,
/// `\u{202e}`), so the text stays on one line, cannot move the cursor or
/// reorder the line, and the reader sees that something was there. Other
/// characters (`é`, CJK, the backslash itself) are written as they are.
pub struct Escaped<'a>(pub &'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut rest = self.0;
        while let Some((at, c)) = rest.char_indices().find(|&(_, c)| is_hidden(c)) {
            f.write_str(&rest[..at])?;
            write!(f, "{}", c.escape_default())?;
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

/// `text` as one line that is safe to print ([`Escaped`]): used for every
/// error, whatever a link, a file name or a peer put in it.
pub fn one_line(text: &str) -> String {
    Escaped(text).to_string()
}

/// `tget verify --json`: one object.
pub fn verify_json(r: &crate::verify::Report) -> String {
    let files = r.files.iter().map(|(p, bad)| {
        Object::new()
            .str("path", &p.display().to_string())
            .num("bad_pieces", *bad as u64)
            .finish()
    });
    Object::new()
        .num("version", 1)
        .str("name", &r.name)
        .str("info_hash", &r.info_hash)
        .num("pieces", r.pieces as u64)
        .num("pieces_good", r.pieces_good as u64)
        .num("bytes", r.bytes)
        .num("bytes_good", r.bytes_good)
        .bool("complete", r.complete())
        .bool("selection", r.selection)
        .raw("files", &crate::json::array(files))
        .finish()
}

/// `tget verify`'s text: a summary line, then each file with bad pieces.
pub fn verify_text(r: &crate::verify::Report) -> String {
    let mut out = format!(
        "{}: {} of {} pieces good ({:.1}%)\n",
        Escaped(&r.name),
        r.pieces_good,
        r.pieces,
        r.pieces_good as f64 * 100.0 / r.pieces.max(1) as f64
    );
    // A selection lists each chosen file; the whole torrent, the bad ones.
    for (p, bad) in r.files.iter().filter(|(_, bad)| *bad > 0 || r.selection) {
        let p = p.display().to_string();
        if *bad == 0 {
            out.push_str(&format!("  {}: good\n", Escaped(&p)));
        } else {
            out.push_str(&format!("  {}: {bad} bad or missing pieces\n", Escaped(&p)));
        }
    }
    out
}

/// `metadata`: a magnet link's metadata arrived (before `started`).
pub fn metadata_event(meta: &Metainfo, seconds: f64, peers: usize) -> String {
    event("metadata")
        .str("info_hash", &meta.info_hash_hex())
        .str("name", &meta.info.name)
        .num("bytes", meta.info_bytes.len() as u64)
        .raw("seconds", &format!("{seconds:.3}"))
        .num("peers", peers as u64)
        .finish()
}

/// `progress`: sent once a second.
pub fn progress_event(s: &Stats, r: &Rates) -> String {
    event("progress")
        .num("bytes_done", s.verified)
        .num("bytes_left", s.total.saturating_sub(s.verified))
        .num("down_rate", r.down as u64)
        .num("up_rate", r.up as u64)
        .num("peers_connected", s.peers_connected)
        .num("peers_encrypted", s.peers_encrypted)
        .num("peers_known", s.peers_known.max(s.peers_connected))
        .num("pieces_done", s.pieces_done)
        .num("pieces", s.pieces)
        .finish()
}

/// `tracker` or `piece_failed`, from a session notice.
pub fn notice_event(n: &Notice) -> String {
    match n {
        Notice::Tracker { url, result } => {
            let o = event("tracker").str("url", url);
            match result {
                Ok(peers) => o.str("result", "ok").num("peers", *peers as u64),
                Err(e) => o.str("result", "error").num("peers", 0).str("error", e),
            }
            .finish()
        }
        Notice::PieceFailed { index, peer } => event("piece_failed")
            .num("index", *index as u64)
            .str("peer", &peer.to_string())
            .finish(),
        Notice::Peer {
            addr,
            inbound,
            transport,
        } => event("peer")
            .str("addr", &addr.to_string())
            .str("direction", if *inbound { "in" } else { "out" })
            .str("transport", transport)
            .bool("encrypted", crate::transport::encrypted(transport))
            .finish(),
        Notice::WebSeed {
            url,
            state,
            bytes,
            error,
        } => {
            let o = webseed_event(url, state, *bytes);
            match error {
                Some(e) => o.str("error", e),
                None => o,
            }
            .finish()
        }
    }
}

/// `webseed`: a web seed's state and the verified bytes it gave.
fn webseed_event(url: &str, state: &str, bytes: u64) -> Object {
    event("webseed")
        .str("url", url)
        .str("state", state)
        .num("bytes", bytes)
}

/// The `webseed` event each web seed gets at the end of a run, with what
/// it gave in all.
pub fn webseed_final_event(w: &crate::webseed::WebSeedStats) -> String {
    webseed_event(&w.url, w.state.name(), w.bytes).finish()
}

/// `done`: the run ended well (docs/JSON.md); `bytes` is what this run
/// verified, `total_bytes` the chosen data verified in all;
/// `peers_blocked`: addresses the blocklist refused (each time one was
/// offered or connected).
pub fn done_event(t: &RunTotals) -> String {
    let rate = (t.bytes as f64 / t.seconds.max(0.001)) as u64;
    event("done")
        .raw("seconds", &format!("{:.3}", t.seconds))
        .num("bytes", t.bytes)
        .num("average_rate", rate)
        .num("peers_blocked", t.peers_blocked)
        .num("total_bytes", t.have)
        .num("uploaded", t.uploaded)
        .raw("ratio", &format!("{:.3}", t.ratio()))
        .finish()
}

/// One torrent's outcome in a batch's `summary` event.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The input as given: a path, URL or magnet link.
    pub torrent: String,
    /// 40 hex digits, once the torrent was loaded.
    pub info_hash: Option<String>,
    /// Its name, once loaded.
    pub name: Option<String>,
    /// Its exit code (0: complete).
    pub code: u8,
    /// Bytes verified by this run.
    pub bytes: u64,
    /// What went wrong (when `code` is not 0).
    pub error: Option<String>,
}

/// `summary`: a batch ended; each torrent's outcome in input order, and
/// the process's exit `code` (docs/JSON.md).
pub fn summary_event(torrents: &[Outcome], code: u8) -> String {
    let items = torrents.iter().map(|t| {
        let mut o = crate::json::Object::new().str("torrent", &t.torrent);
        o = match &t.info_hash {
            Some(h) => o.str("info_hash", h),
            None => o.raw("info_hash", "null"),
        };
        o = match &t.name {
            Some(n) => o.str("name", n),
            None => o.raw("name", "null"),
        };
        o = o
            .str("result", if t.code == 0 { "ok" } else { "error" })
            .num("code", t.code as u64)
            .num("bytes", t.bytes);
        if let Some(e) = &t.error {
            o = o.str("error", e);
        }
        o.finish()
    });
    event("summary")
        .num("code", code as u64)
        .num(
            "completed",
            torrents.iter().filter(|t| t.code == 0).count() as u64,
        )
        .num(
            "failed",
            torrents.iter().filter(|t| t.code != 0).count() as u64,
        )
        .raw("torrents", &crate::json::array(items))
        .finish()
}

/// A batch's status line: how many torrents ended of how many, the bytes
/// of all of them (`all`), rates and peers, then the torrent in progress
/// (`now`: its name and counters; `more` others run beside it); at most
/// `width - 1` columns (0: no limit).
pub fn batch_status_text(
    (ended, failed, of): (usize, usize, usize),
    all: &Stats,
    r: &Rates,
    now: Option<(&str, &Stats)>,
    more: usize,
    width: usize,
) -> String {
    let failed = match failed {
        0 => String::new(),
        n => format!(", {n} failed"),
    };
    let head = format!("[{ended}/{of} done{failed}]");
    let mut rest = format!(
        "{} of {}  down {}/s  up {}/s  peers {}",
        human(all.verified),
        human(all.total),
        human(r.down as u64),
        human(r.up as u64),
        all.peers_connected
    );
    if let Some((name, s)) = now {
        let pct = if s.total == 0 {
            100.0
        } else {
            s.verified as f64 * 100.0 / s.total as f64
        };
        let state = match s.checking {
            Some((d, of)) => format!("checking {d}/{of}"),
            None => format!("{pct:.1}%"),
        };
        let more = match more {
            0 => String::new(),
            n => format!(" (+{n})"),
        };
        rest.push_str(&format!("  now: {} {state}{more}", Escaped(name)));
    }
    fit(&head, &rest, width)
}

/// `error`: the run failed with exit `code`.
pub fn error_event(code: u8, message: &str) -> String {
    event("error")
        .num("code", code as u64)
        .str("message", message)
        .finish()
}

/// `tget info --json`: one object describing the torrent.
pub fn info_json(meta: &Metainfo) -> String {
    let i = &meta.info;
    let files = i.files.iter().enumerate().map(|(n, f)| {
        Object::new()
            .num("index", n as u64)
            .str("path", f.path)
            .num("length", f.length)
            .finish()
    });
    let tiers = meta.tracker_tiers().into_iter().map(|tier| {
        array(tier.iter().map(|url| {
            let mut s = String::new();
            crate::json::string_into(&mut s, url);
            s
        }))
    });
    let mut o = Object::new()
        .num("version", JSON_VERSION)
        .str("name", &i.name)
        .str("info_hash", &meta.info_hash_hex())
        .str("magnet", &magnet_link(meta))
        .num("total_bytes", i.total_length())
        .num("piece_length", i.piece_length)
        .num("pieces", i.num_pieces() as u64)
        .bool("private", i.private)
        .raw("files", &array(files))
        .raw("trackers", &array(tiers));
    let web = meta.url_list.iter().map(|u| {
        let mut s = String::new();
        crate::json::string_into(&mut s, u);
        s
    });
    o = o.raw("web_seeds", &array(web));
    if let Some(c) = &meta.comment {
        o = o.str("comment", c);
    }
    if let Some(c) = &meta.created_by {
        o = o.str("created_by", c);
    }
    if let Some(d) = meta.creation_date {
        o = o.raw("creation_date", &d.to_string());
    }
    o.finish()
}

/// `s` percent-encoded for a URI's query: unreserved characters as they
/// are, every other byte of its UTF-8 as `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The torrent's magnet link: its info-hash, name (`dn`) and trackers
/// (`tr`, each once), percent-encoded, so it holds no space or control
/// character and is one word in a shell.
pub fn magnet_link(meta: &Metainfo) -> String {
    let mut link = format!(
        "magnet:?xt=urn:btih:{}&dn={}",
        meta.info_hash_hex(),
        percent_encode(&meta.info.name)
    );
    let mut seen: Vec<&str> = Vec::new();
    let tiers = meta.tracker_tiers();
    for url in tiers.iter().flatten() {
        let url = url.as_str();
        if !seen.contains(&url) {
            seen.push(url);
            link.push_str("&tr=");
            link.push_str(&percent_encode(url));
        }
    }
    link
}

/// `tget info`'s text; what the torrent says is shown [`Escaped`].
pub fn info_text(meta: &Metainfo) -> String {
    let i = &meta.info;
    let mut out = String::new();
    out.push_str(&format!("name:       {}\n", Escaped(&i.name)));
    out.push_str(&format!("info-hash:  {}\n", meta.info_hash_hex()));
    out.push_str(&format!("magnet:     {}\n", magnet_link(meta)));
    out.push_str(&format!(
        "size:       {} ({} bytes)\n",
        human(i.total_length()),
        i.total_length()
    ));
    out.push_str(&format!(
        "pieces:     {} x {}\n",
        i.num_pieces(),
        human(i.piece_length)
    ));
    out.push_str(&format!(
        "private:    {}\n",
        if i.private { "yes" } else { "no" }
    ));
    if let Some(c) = &meta.comment {
        out.push_str(&format!("comment:    {}\n", Escaped(c)));
    }
    if let Some(c) = &meta.created_by {
        out.push_str(&format!("created by: {}\n", Escaped(c)));
    }
    for (n, tier) in meta.tracker_tiers().iter().enumerate() {
        for url in tier {
            out.push_str(&format!("tracker:    [tier {n}] {}\n", Escaped(url)));
        }
    }
    for url in &meta.url_list {
        out.push_str(&format!("web seed:   {}\n", Escaped(url)));
    }
    out.push_str(&format!("files:      {}\n", i.files.len()));
    for (n, f) in i.files.iter().enumerate() {
        out.push_str(&format!(
            "  {n:>4}  {:>10}  {}\n",
            human(f.length),
            Escaped(f.path)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_status_line_has_the_totals_and_the_torrent_in_progress_within_the_width() {
        let all = Stats {
            total: 30 << 20,
            verified: 10 << 20,
            peers_connected: 7,
            ..Stats::default()
        };
        let now = Stats {
            total: 20 << 20,
            verified: 5 << 20,
            ..Stats::default()
        };
        let r = Rates::default();
        let line = batch_status_text((1, 1, 4), &all, &r, Some(("b.iso", &now)), 1, 0);
        assert!(
            line.starts_with("[1/4 done, 1 failed]  10.0 MiB of 30.0 MiB"),
            "{line}"
        );
        assert!(line.contains("peers 7"), "{line}");
        assert!(line.ends_with("now: b.iso 25.0% (+1)"), "{line}");
        for width in [20, 40, 60] {
            let cut = batch_status_text((1, 1, 4), &all, &r, Some(("b.iso", &now)), 1, width);
            assert!(width_of(&cut) < width, "{width}: {cut}");
        }
        // A name cannot drive the terminal.
        let line = batch_status_text((0, 0, 2), &all, &r, Some(("x\x1b[2J", &now)), 0, 0);
        assert!(!line.contains('\x1b'), "{line}");
    }

    #[test]
    fn units_and_clock() {
        assert_eq!(human(1000), "1000 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
        assert_eq!(clock(75), "1:15");
        assert_eq!(clock(3725), "1:02:05");
    }

    #[test]
    fn the_status_line_counts_web_seeds_among_the_sources() {
        let mut s = Stats {
            total: 100,
            verified: 50,
            downloaded: 50,
            uploaded: 0,
            pieces: 2,
            pieces_done: 1,
            pieces_failed: 0,
            peers_connected: 3,
            peers_encrypted: 0,
            peers_known: 5,
            peers_blocked: 0,
            checking: None,
            web_seeds: 0,
            ready: true,
            verified_at_start: 0,
        };
        let info = StatusInfo {
            name: "n",
            serving: false,
            seed: false,
            port: None,
            width: 0,
        };
        let none = status_text(&s, &Rates::default(), &info);
        assert!(none.contains("peers 3/5  eta"), "{none}");
        s.web_seeds = 2;
        let two = status_text(&s, &Rates::default(), &info);
        assert!(two.contains("peers 3/5  web seeds 2  eta"), "{two}");
        s.peers_encrypted = 2;
        let enc = status_text(&s, &Rates::default(), &info);
        assert!(enc.contains("peers 3/5 (2 enc)  web seeds 2  eta"), "{enc}");
    }

    #[test]
    fn the_check_counts_the_pieces_it_covers() {
        // A restart after a reboot checks the 40 unsynced pieces of 4096.
        let s = Stats {
            total: 4096 << 18,
            verified: 0,
            downloaded: 0,
            uploaded: 0,
            pieces: 4096,
            pieces_done: 0,
            verified_at_start: 0,
            ready: false,
            pieces_failed: 0,
            peers_connected: 0,
            peers_encrypted: 0,
            peers_known: 0,
            peers_blocked: 0,
            checking: Some((12, 40)),
            web_seeds: 0,
        };
        let info = StatusInfo::default();
        assert_eq!(
            status_text(&s, &Rates::default(), &info),
            "checking 12/40 pieces"
        );
        // Cut to the width: the name first, then the rest.
        let s = Stats {
            checking: None,
            ..s
        };
        let info = StatusInfo {
            name: "a-rather-long-name-for-a-torrent.iso",
            ..info
        };
        let full = status_text(&s, &Rates::default(), &info);
        assert!(
            full.starts_with("a-rather-long-name-for-a-torrent.iso    0.0%  0 B of 1.0 GiB"),
            "{full}"
        );
        for width in [20, 40, 60, 70, 90] {
            let line = status_text(&s, &Rates::default(), &StatusInfo { width, ..info });
            assert!(line.chars().count() < width, "{width}: {line}");
        }
        assert_eq!(cut("日本語", 5), "日本");
    }

    #[test]
    fn network_text_is_shown_escaped() {
        // C0 (line breaks, tab, ESC, BEL, BS), DEL and C1 (CSI, NEL).
        assert_eq!(one_line("a\rb\nc\td"), r"a\rb\nc\td");
        assert_eq!(
            one_line("\u{1b}[2J\u{7}\u{8}\u{7f}\u{9b}\u{85}"),
            r"\u{1b}[2J\u{7}\u{8}\u{7f}\u{9b}\u{85}"
        );
        // Bidi controls and the line and paragraph separators.
        for c in [
            '\u{61c}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{202e}', '\u{2066}', '\u{2069}',
            '\u{2028}', '\u{2029}',
        ] {
            let shown = one_line(&format!("x{c}y"));
            assert_eq!(shown, format!("x\\u{{{:x}}}y", c as u32));
        }
        // Invisible format characters (category Cf).
        for c in [
            '\u{ad}',
            '\u{200b}',
            '\u{200c}',
            '\u{200d}',
            '\u{2060}',
            '\u{2064}',
            '\u{feff}',
            '\u{e0001}',
            '\u{e007f}',
        ] {
            assert!(is_hidden(c), "{c:?}");
            assert!(!one_line(&c.to_string()).contains(c), "{c:?}");
        }
        // Plain text, accents, CJK, emoji, the backslash and quotes stay.
        for text in ["plain.iso", "é à ü", "日本語のファイル", "😀 \\ \"'"] {
            assert_eq!(one_line(text), text);
        }
        assert_eq!(Escaped("ä\u{202e}b").to_string(), r"ä\u{202e}b");
    }

    #[test]
    fn info_and_verify_text_escape_what_the_torrent_says() {
        let evil = "a\rb\nc\u{202e}d";
        let s = |t: &str| format!("{}:{t}", t.len());
        let torrent = format!(
            "d8:announce{}7:comment{}10:created by{}4:infod5:filesld6:lengthi1e4:pathl{}{}eee\
             4:name{}12:piece lengthi16384e6:pieces20:{}ee",
            s(evil),
            s(evil),
            s(evil),
            s(evil),
            s(evil),
            s(evil),
            "x".repeat(20)
        );
        let meta = Metainfo::from_bytes(torrent.as_bytes()).expect("a torrent");
        let text = info_text(&meta);
        assert!(!text.contains(['\r', '\u{202e}']), "{text:?}");
        // Name, comment, created by, tracker, and the file's two components.
        assert_eq!(text.matches(r"a\rb\nc\u{202e}d").count(), 6, "{text}");
        let r = crate::verify::Report {
            name: evil.into(),
            info_hash: String::new(),
            pieces: 1,
            pieces_good: 0,
            bytes: 1,
            bytes_good: 0,
            files: vec![(evil.into(), 1)],
            selection: false,
        };
        let text = complete_text(evil, 1536, 2.0);
        assert_eq!(
            text,
            r"a\rb\nc\u{202e}d: complete, 1.5 KiB in 2.0 s (768 B/s)"
        );
        let text = verify_text(&r);
        assert!(!text.contains(['\r', '\u{202e}']), "{text:?}");
        assert_eq!(text.lines().count(), 2, "{text}");
    }

    #[test]
    fn progress_counts_the_encrypted_peers_and_a_peer_event_says_its_transport() {
        let s = Stats {
            peers_connected: 5,
            peers_encrypted: 3,
            ..Stats::default()
        };
        let p = progress_event(&s, &Rates::default());
        assert!(
            p.contains(r#""peers_connected":5,"peers_encrypted":3,"#),
            "{p}"
        );
        let n = notice_event(&Notice::Peer {
            addr: "127.0.0.2:6881".parse().unwrap(),
            inbound: true,
            transport: "utp+mse-rc4",
        });
        assert!(
            n.contains(r#""direction":"in","transport":"utp+mse-rc4","encrypted":true"#),
            "{n}"
        );
    }

    #[test]
    fn events_carry_name_and_version() {
        let e = error_event(4, "no \"peers\"");
        assert_eq!(
            e,
            r#"{"event":"error","version":2,"code":4,"message":"no \"peers\""}"#
        );
        let d = done_event(&RunTotals {
            seconds: 2.0,
            bytes: 100,
            have: 100,
            size: 100,
            uploaded: 50,
            peers_blocked: 0,
        });
        assert!(
            d.starts_with(r#"{"event":"done","version":2,"seconds":2.000,"bytes":100"#)
                && d.ends_with(r#""total_bytes":100,"uploaded":50,"ratio":0.500}"#),
            "{d}"
        );
        let n = notice_event(&Notice::Tracker {
            url: "udp://x".into(),
            result: Err("timeout".into()),
        });
        assert!(
            n.contains(r#""result":"error""#) && n.contains(r#""error":"timeout""#),
            "{n}"
        );
    }
}

//! Machinery shared by the interop tests (std only): scratch folders, free
//! ports, child processes killed on drop, an opentracker on 127.0.0.1,
//! libtorrent and aria2c seeders and leechers, random content, torrents made
//! by mktorrent or libtorrent, and byte-by-byte comparison of the results.
//!
//! Everything listens on and talks to 127.0.0.1 only.

#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;

/// Debian's python3-libtorrent is built for the system python, not for
/// whatever `python3` comes first on PATH.
pub const PYTHON: &str = "/usr/bin/python3";
/// The tget binary built by cargo for this test target.
pub const TGET: &str = env!("CARGO_BIN_EXE_tget");

/// The tget binary with `--no-dht`: interop runs on 127.0.0.1 only and never
/// reaches the public DHT.
pub fn tget_command() -> Command {
    let mut c = Command::new(TGET);
    c.arg("--no-dht");
    c
}
/// How long one `tget download` (or one leecher) may take before it is
/// killed and the test fails.
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a seeder may take to check its data and announce.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop");
const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;
const POLL: Duration = Duration::from_millis(50);

fn script(name: &str) -> PathBuf {
    Path::new(SCRIPTS).join(name)
}

// ---------------------------------------------------------------- tools --

fn is_executable(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| is_executable(&dir.join(tool))))
        .unwrap_or(false)
}

/// Fails (never skips) when a real peer or tool is missing.
pub fn require_tools() {
    const HINT: &str = "install the Debian packages opentracker aria2 python3-libtorrent \
                        mktorrent (.ci/run does)";
    for (tool, package) in [
        ("opentracker", "opentracker"),
        ("aria2c", "aria2"),
        ("mktorrent", "mktorrent"),
        ("kill", "procps"),
    ] {
        if !on_path(tool) {
            panic!("interop: `{tool}` (package {package}) is not on PATH: {HINT}");
        }
    }
    let libtorrent = Command::new(PYTHON)
        .args(["-c", "import libtorrent"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !libtorrent {
        panic!("interop: `{PYTHON} -c 'import libtorrent'` failed (package python3-libtorrent): {HINT}");
    }
}

// ---------------------------------------------------------------- ports --

static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// A port on 127.0.0.1 that is free for both TCP and UDP right now and that
/// this test process has not handed out before.
pub fn free_port() -> u16 {
    for _ in 0..200 {
        let tcp = TcpListener::bind((LOCALHOST, 0)).expect("interop: bind 127.0.0.1:0");
        let port = tcp.local_addr().expect("interop: local_addr").port();
        if UdpSocket::bind((LOCALHOST, port)).is_err() {
            continue;
        }
        let mut used = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !used.contains(&port) {
            used.push(port);
            return port;
        }
    }
    panic!("interop: found no free port on 127.0.0.1 in 200 tries");
}

fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from((LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

// ------------------------------------------------------------ processes --

/// A child process, killed (SIGKILL) and reaped on drop. Its stdout and
/// stderr both go to `log`.
pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if start.elapsed() >= limit {
                return None;
            }
            sleep(POLL);
        }
    }

    /// Panics, naming the process and its log, if it has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.exited() {
            panic!(
                "interop: {} exited early ({status}); log {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log)
            );
        }
    }

    fn log_contains(&self, marker: &str) -> bool {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).contains(marker))
            .unwrap_or(false)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last few KiB of a log file, for failure messages.
pub fn tail(path: &Path) -> String {
    const KEEP: usize = 6000;
    match fs::read(path) {
        Ok(bytes) => {
            let from = bytes.len().saturating_sub(KEEP);
            let text = String::from_utf8_lossy(&bytes[from..]).into_owned();
            if from > 0 {
                format!("[...]{text}")
            } else {
                text
            }
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

fn run_ok(what: &str, cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("interop: cannot run {what} ({:?}): {e}", cmd.get_program()));
    if !out.status.success() {
        panic!(
            "interop: {what} failed ({}): {:?}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            cmd,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// -------------------------------------------------------------- content --

/// xorshift64*: deterministic, fast, good enough for test content.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A seed derived from a name, so each file gets its own stream.
    pub fn from_name(name: &str) -> Rng {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Rng::new(h)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// Writes `size` random bytes to `path`, creating parent folders.
pub fn write_random(path: &Path, size: u64, rng: &mut Rng) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("interop: create content folder");
    }
    let file =
        File::create(path).unwrap_or_else(|e| panic!("interop: create {}: {e}", path.display()));
    let mut out = BufWriter::new(file);
    let mut buf = vec![0u8; MIB as usize];
    let mut left = size;
    while left > 0 {
        let n = left.min(MIB) as usize;
        rng.fill(&mut buf[..n]);
        out.write_all(&buf[..n]).expect("interop: write content");
        left -= n as u64;
    }
    out.flush().expect("interop: flush content");
}

/// Asserts that `actual` holds the same files with the same bytes as
/// `expected` (a file, or a folder compared recursively).
pub fn assert_same_content(expected: &Path, actual: &Path) {
    let meta =
        fs::metadata(expected).unwrap_or_else(|e| panic!("interop: {}: {e}", expected.display()));
    if meta.is_dir() {
        let mut entries: Vec<_> = fs::read_dir(expected)
            .expect("interop: read expected folder")
            .map(|e| e.expect("interop: read folder entry").file_name())
            .collect();
        entries.sort();
        for name in entries {
            assert_same_content(&expected.join(&name), &actual.join(&name));
        }
    } else {
        assert_same_file(expected, actual);
    }
}

fn assert_same_file(expected: &Path, actual: &Path) {
    let want = fs::metadata(expected)
        .expect("interop: stat expected file")
        .len();
    let got = match fs::metadata(actual) {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => panic!("interop: {} is not a regular file", actual.display()),
        Err(e) => panic!(
            "interop: {} missing ({e}); expected {want} bytes",
            actual.display()
        ),
    };
    if want != got {
        panic!(
            "interop: {} has {got} bytes, expected {want}",
            actual.display()
        );
    }
    let mut a = File::open(expected).expect("interop: open expected file");
    let mut b = File::open(actual).expect("interop: open downloaded file");
    let mut buf_a = vec![0u8; MIB as usize];
    let mut buf_b = vec![0u8; MIB as usize];
    let mut offset = 0u64;
    loop {
        let n = read_full(&mut a, &mut buf_a).expect("interop: read expected file");
        let m = read_full(&mut b, &mut buf_b).expect("interop: read downloaded file");
        if n != m {
            panic!(
                "interop: {} changed size while being compared",
                actual.display()
            );
        }
        if n == 0 {
            return;
        }
        if buf_a[..n] != buf_b[..n] {
            let i = buf_a[..n]
                .iter()
                .zip(&buf_b[..n])
                .position(|(x, y)| x != y)
                .unwrap_or(0);
            panic!(
                "interop: {} differs from the seeded content at byte {}",
                actual.display(),
                offset + i as u64
            );
        }
        offset += n as u64;
    }
}

fn read_full(r: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

// ------------------------------------------------------------- torrents --

/// Where a torrent announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Announce {
    /// http://127.0.0.1:P/announce of the swarm's opentracker.
    Http,
    /// udp://127.0.0.1:P/announce of the swarm's opentracker.
    Udp,
    /// An http URL on a port where nothing listens: peers must be given
    /// directly (`--peer`).
    Dead,
}

pub struct Torrent {
    /// The .torrent file.
    pub file: PathBuf,
    /// Hex SHA-1 of the info dictionary.
    pub info_hash: String,
    /// The seeded content: the file, or the top folder of a multi-file torrent.
    pub content: PathBuf,
    /// The folder holding `content` (the seeders' save path).
    pub data_dir: PathBuf,
    pub announce: Announce,
}

impl Torrent {
    /// The torrent's name: where its content lands inside a download folder.
    pub fn name(&self) -> &std::ffi::OsStr {
        self.content
            .file_name()
            .expect("interop: content has a name")
    }
}

fn info_hash(torrent: &Path) -> String {
    let out = run_ok(
        "torrent_tool.py infohash",
        Command::new(PYTHON)
            .arg(script("torrent_tool.py"))
            .arg("infohash")
            .arg(torrent),
    );
    let hash = out.trim().to_string();
    assert!(
        hash.len() == 40 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "interop: bad info hash {hash:?} for {}",
        torrent.display()
    );
    hash
}

fn percent_encode_hex(hex: &str) -> String {
    hex.as_bytes()
        .chunks(2)
        .map(|pair| format!("%{}", String::from_utf8_lossy(pair)))
        .collect()
}

// ---------------------------------------------------------------- swarm --

/// One test's world: a scratch folder under the system temp dir, an
/// opentracker on 127.0.0.1 (started when the first torrent is made), and
/// the peers. Everything is killed and the folder removed on drop (set
/// TGET_INTEROP_KEEP=1 to keep the folder). When the test fails, the tails of
/// all logs are printed.
pub struct Swarm {
    pub dir: PathBuf,
    tracker_port: u16,
    dead_port: u16,
    tracker: Option<Proc>,
    whitelist: Vec<String>,
    procs: Vec<Proc>,
    /// Seeders started per info hash, to know how many the tracker must list.
    seeding: Vec<String>,
    logs: Vec<(String, PathBuf)>,
    counter: u32,
    /// LT_ENCRYPTION for libtorrent peers started from now on (ltpeer.py).
    lt_encryption: Option<&'static str>,
    /// Flags added to every aria2c started from now on.
    aria2_extra: Vec<&'static str>,
}

impl Swarm {
    pub fn new(name: &str) -> Swarm {
        require_tools();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "tget-interop-{name}-{}-{nanos}",
            std::process::id()
        ));
        fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("interop: create {}: {e}", dir.display()));
        // opentracker drops to user nobody: the folder must be readable.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
            .expect("interop: chmod scratch");
        Swarm {
            dir,
            tracker_port: free_port(),
            dead_port: free_port(),
            tracker: None,
            whitelist: Vec::new(),
            procs: Vec::new(),
            seeding: Vec::new(),
            logs: Vec::new(),
            counter: 0,
            lt_encryption: None,
            aria2_extra: Vec::new(),
        }
    }

    /// MSE/PE for the libtorrent peers started from now on: "forced" (RC4
    /// only) or "disabled" (plaintext only); `None`, libtorrent's default.
    pub fn lt_encryption(&mut self, policy: Option<&'static str>) {
        self.lt_encryption = policy;
    }

    /// Flags for every aria2c started from now on (e.g.
    /// `--bt-require-crypto=true`).
    pub fn aria2_flags(&mut self, flags: &[&'static str]) {
        self.aria2_extra = flags.to_vec();
    }

    /// The process ids of the peers started so far (seeders, `tget seed`),
    /// not the tracker's: for measuring their CPU time.
    pub fn peer_pids(&self) -> Vec<u32> {
        self.procs.iter().map(Proc::pid).collect()
    }

    /// /usr/bin/python3 for a libtorrent helper, with LT_ENCRYPTION set
    /// as `lt_encryption` says.
    fn python(&self) -> Command {
        let mut cmd = Command::new(PYTHON);
        match self.lt_encryption {
            Some(policy) => cmd.env("LT_ENCRYPTION", policy),
            None => cmd.env_remove("LT_ENCRYPTION"),
        };
        cmd
    }

    fn next_id(&mut self) -> u32 {
        self.counter += 1;
        self.counter
    }

    /// A fresh folder in the scratch folder.
    pub fn subdir(&mut self, prefix: &str) -> PathBuf {
        let id = self.next_id();
        let dir = self.dir.join(format!("{prefix}-{id}"));
        fs::create_dir_all(&dir).expect("interop: create folder");
        dir
    }

    pub fn announce_url(&self, announce: Announce) -> String {
        match announce {
            Announce::Http => format!("http://127.0.0.1:{}/announce", self.tracker_port),
            Announce::Udp => format!("udp://127.0.0.1:{}/announce", self.tracker_port),
            Announce::Dead => format!("http://127.0.0.1:{}/announce", self.dead_port),
        }
    }

    /// Starts a process with its output in a log file of the scratch folder.
    /// The log of the first process started under `name` (e.g. "tget seed").
    pub fn log_of(&self, name: &str) -> Option<PathBuf> {
        self.logs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, l)| l.clone())
    }

    pub fn spawn(&mut self, name: &str, cmd: &mut Command) -> Proc {
        let id = self.next_id();
        let log = self
            .dir
            .join(format!("{id:02}-{}.log", name.replace(' ', "-")));
        let out = File::create(&log).expect("interop: create log");
        let err = out.try_clone().expect("interop: clone log handle");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "interop: cannot start {name} ({:?}): {e}",
                cmd.get_program()
            )
        });
        self.logs.push((name.to_string(), log.clone()));
        Proc {
            name: name.to_string(),
            log,
            child,
        }
    }

    // ---- content and torrents

    /// A single file of `size` random bytes in a fresh seed folder.
    pub fn single_file(&mut self, name: &str, size: u64) -> PathBuf {
        let path = self.subdir("seed").join(name);
        write_random(&path, size, &mut Rng::from_name(name));
        path
    }

    /// A folder `name` of `count` files (random sizes up to ~300 KiB,
    /// several empty, some exactly on 16 KiB boundaries) in nested folders,
    /// in a fresh seed folder.
    pub fn multi_file(&mut self, name: &str, count: usize) -> PathBuf {
        const DIRS: [&str; 6] = ["", "docs", "src/a", "src/a/b c", "data/x/y/z", "media"];
        const SIZES: [u64; 8] = [0, 1, 16 * KIB - 1, 16 * KIB, 16 * KIB + 1, 0, 64 * KIB, 3];
        let root = self.subdir("seed").join(name);
        let mut rng = Rng::from_name(name);
        for i in 0..count {
            let size = match SIZES.get(i) {
                Some(&s) => s,
                None if i % 9 == 0 => 0,
                None => rng.below(300 * KIB),
            };
            let dir = DIRS[rng.below(DIRS.len() as u64) as usize];
            let file = format!("f{i:02}-{size}.bin");
            let path = if dir.is_empty() {
                root.join(file)
            } else {
                root.join(dir).join(file)
            };
            write_random(&path, size, &mut rng);
        }
        root
    }

    /// A torrent made by mktorrent (piece size 2^`piece_log2`, at least 2^15).
    pub fn mktorrent(&mut self, content: &Path, piece_log2: u32, announce: Announce) -> Torrent {
        self.mktorrent_with(content, piece_log2, announce, &[])
    }

    /// [`Swarm::mktorrent`] with extra mktorrent flags (e.g. `-p`).
    pub fn mktorrent_with(
        &mut self,
        content: &Path,
        piece_log2: u32,
        announce: Announce,
        extra: &[&str],
    ) -> Torrent {
        let file = self.torrent_path(content);
        run_ok(
            "mktorrent",
            Command::new("mktorrent")
                .args(extra)
                .arg("-l")
                .arg(piece_log2.to_string())
                .arg("-a")
                .arg(self.announce_url(announce))
                .arg("-o")
                .arg(&file)
                .arg(content),
        );
        self.finish_torrent(file, content, announce)
    }

    /// A v1 torrent made by libtorrent: any piece size (mktorrent refuses
    /// pieces under 32 KiB).
    pub fn lt_torrent(&mut self, content: &Path, piece_size: u64, announce: Announce) -> Torrent {
        let file = self.torrent_path(content);
        run_ok(
            "torrent_tool.py create",
            Command::new(PYTHON)
                .arg(script("torrent_tool.py"))
                .arg("create")
                .arg(content)
                .arg(&file)
                .arg(piece_size.to_string())
                .arg(self.announce_url(announce)),
        );
        self.finish_torrent(file, content, announce)
    }

    fn torrent_path(&mut self, content: &Path) -> PathBuf {
        let id = self.next_id();
        let name = content
            .file_name()
            .expect("interop: content has a name")
            .to_string_lossy();
        self.dir.join(format!("{name}-{id}.torrent"))
    }

    fn finish_torrent(&mut self, file: PathBuf, content: &Path, announce: Announce) -> Torrent {
        let info_hash = info_hash(&file);
        if announce != Announce::Dead {
            self.allow(&info_hash);
        }
        Torrent {
            file,
            info_hash,
            content: content.to_path_buf(),
            data_dir: content
                .parent()
                .expect("interop: content has a parent")
                .to_path_buf(),
            announce,
        }
    }

    // ---- tracker

    /// Whitelists an info hash on the tracker (starting it if needed, else
    /// reloading its whitelist with SIGHUP) and waits until it is accepted.
    pub fn allow(&mut self, info_hash: &str) {
        let tracker_dir = self.dir.join("tracker");
        fs::create_dir_all(&tracker_dir).expect("interop: create tracker folder");
        fs::set_permissions(&tracker_dir, fs::Permissions::from_mode(0o755))
            .expect("interop: chmod");
        self.whitelist.push(info_hash.to_string());
        let list = tracker_dir.join("whitelist.txt");
        fs::write(&list, self.whitelist.join("\n") + "\n").expect("interop: write whitelist");
        fs::set_permissions(&list, fs::Permissions::from_mode(0o644)).expect("interop: chmod");
        match self.tracker.as_mut() {
            Some(tracker) => {
                tracker.assert_running();
                run_ok(
                    "kill -HUP opentracker",
                    Command::new("kill")
                        .arg("-HUP")
                        .arg(tracker.pid().to_string()),
                );
            }
            None => self.start_tracker(&tracker_dir),
        }
        let start = Instant::now();
        while !self.probe(info_hash) {
            if let Some(tracker) = self.tracker.as_mut() {
                tracker.assert_running();
            }
            if start.elapsed() > Duration::from_secs(15) {
                panic!("interop: opentracker still refuses {info_hash} 15 s after whitelisting it");
            }
            sleep(Duration::from_millis(100));
        }
    }

    fn start_tracker(&mut self, tracker_dir: &Path) {
        let port = self.tracker_port.to_string();
        // -i must come before -p/-P: it sets the address they bind. -d is
        // chrooted into (as root), -w is read relative to it.
        let mut cmd = Command::new("opentracker");
        cmd.args([
            "-i",
            "127.0.0.1",
            "-p",
            &port,
            "-P",
            &port,
            "-w",
            "whitelist.txt",
            "-d",
        ])
        .arg(tracker_dir)
        .current_dir(tracker_dir);
        let mut tracker = self.spawn("opentracker", &mut cmd);
        let start = Instant::now();
        while !port_open(self.tracker_port) {
            tracker.assert_running();
            if start.elapsed() > Duration::from_secs(10) {
                panic!("interop: opentracker not listening on 127.0.0.1:{port} after 10 s");
            }
            sleep(POLL);
        }
        self.tracker = Some(tracker);
    }

    fn tracker_get(&self, path_and_query: &str) -> io::Result<Vec<u8>> {
        let addr = SocketAddr::from((LOCALHOST, self.tracker_port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
        )?;
        let mut reply = Vec::new();
        s.read_to_end(&mut reply)?;
        let body = reply
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| i + 4)
            .unwrap_or(0);
        Ok(reply[body..].to_vec())
    }

    /// Announces a fake leecher for `info_hash` and withdraws it at once;
    /// true when the tracker accepted the hash.
    fn probe(&self, info_hash: &str) -> bool {
        let query = format!(
            "/announce?info_hash={}&peer_id=-HP0000-interopprobe&port=9&uploaded=0&downloaded=0&left=1&compact=1",
            percent_encode_hex(info_hash)
        );
        match self.tracker_get(&query) {
            Ok(body) if body.starts_with(b"d") && !contains(&body, b"failure reason") => {
                let _ = self.tracker_get(&format!("{query}&event=stopped"));
                true
            }
            _ => false,
        }
    }

    /// How many seeders (complete peers) the tracker lists for `info_hash`.
    pub fn tracker_seeders(&self, info_hash: &str) -> u64 {
        let body = self
            .tracker_get(&format!(
                "/scrape?info_hash={}",
                percent_encode_hex(info_hash)
            ))
            .unwrap_or_default();
        let key = b"8:completei";
        match body.windows(key.len()).position(|w| w == key) {
            Some(i) => body[i + key.len()..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')),
            None => 0,
        }
    }

    /// Waits until the tracker lists at least `n` seeders for the torrent,
    /// failing early if any peer process has exited.
    pub fn wait_tracker_seeders(&mut self, t: &Torrent, n: u64) {
        let start = Instant::now();
        while self.tracker_seeders(&t.info_hash) < n {
            for p in &mut self.procs {
                p.assert_running();
            }
            if start.elapsed() > READY_TIMEOUT {
                panic!(
                    "interop: the tracker lists {} seeders for {}, expected {n} after {:?}",
                    self.tracker_seeders(&t.info_hash),
                    t.info_hash,
                    READY_TIMEOUT
                );
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// After starting a seeder: waits for the tracker to list it or, for an
    /// untracked torrent, for `marker` in its log.
    fn wait_seeder_ready(&mut self, t: &Torrent, mut proc: Proc, marker: &str) {
        self.seeding.push(t.info_hash.clone());
        if t.announce == Announce::Dead {
            let start = Instant::now();
            while !proc.log_contains(marker) {
                proc.assert_running();
                if start.elapsed() > READY_TIMEOUT {
                    panic!(
                        "interop: {} not ready after {READY_TIMEOUT:?}:\n{}",
                        proc.name,
                        tail(&proc.log)
                    );
                }
                sleep(POLL);
            }
            self.procs.push(proc);
        } else {
            self.procs.push(proc);
            let n = self.seeding.iter().filter(|h| **h == t.info_hash).count() as u64;
            self.wait_tracker_seeders(t, n);
        }
    }

    // ---- real peers

    /// Seeds `t` from its data folder with libtorrent; returns once the data
    /// is verified and the seeder announced. Returns its port.
    pub fn seed_libtorrent(&mut self, t: &Torrent) -> u16 {
        let port = free_port();
        let mut cmd = self.python();
        cmd.arg(script("lt_seed.py"))
            .arg(&t.file)
            .arg(&t.data_dir)
            .arg(port.to_string());
        let proc = self.spawn("libtorrent seeder", &mut cmd);
        self.wait_seeder_ready(t, proc, "READY");
        port
    }

    /// Seeds `t` with libtorrent sending at most `upload_limit` bytes per
    /// second (0: no cap), on loopback too. Returns its port.
    pub fn seed_libtorrent_capped(&mut self, t: &Torrent, upload_limit: u64) -> u16 {
        let port = free_port();
        let mut cmd = Command::new(PYTHON);
        cmd.arg(script("lt_seed.py"))
            .arg(&t.file)
            .arg(&t.data_dir)
            .arg(port.to_string())
            .arg("--upload-limit")
            .arg(upload_limit.to_string());
        let proc = self.spawn("libtorrent seeder", &mut cmd);
        self.wait_seeder_ready(t, proc, "READY");
        port
    }

    /// Seeds `t` with libtorrent listening on `ip` (a loopback address),
    /// logging every alert: returns its port and its log, where each
    /// incoming connection is written with the address it came from.
    pub fn seed_libtorrent_logged(&mut self, t: &Torrent, ip: &str) -> (u16, PathBuf) {
        let port = free_port();
        let mut cmd = self.python();
        cmd.arg(script("lt_seed.py"))
            .arg(&t.file)
            .arg(&t.data_dir)
            .arg(port.to_string())
            .args(["--ip", ip, "-v"]);
        let proc = self.spawn("libtorrent seeder", &mut cmd);
        let log = proc.log.clone();
        self.wait_seeder_ready(t, proc, "READY");
        (port, log)
    }

    /// Seeds `t` from its data folder with aria2c; returns once the data is
    /// verified and the seeder announced. Returns its port.
    pub fn seed_aria2(&mut self, t: &Torrent) -> u16 {
        let port = free_port();
        let mut cmd = self.aria2_command(t, port, &t.data_dir);
        cmd.args([
            "--check-integrity=true",
            "--bt-hash-check-seed=true",
            "--seed-ratio=0.0",
        ]);
        cmd.arg(&t.file);
        let proc = self.spawn("aria2c seeder", &mut cmd);
        self.wait_seeder_ready(t, proc, "listening on TCP port");
        port
    }

    /// aria2c options shared by seeders and leechers: loopback only, no
    /// LPD/PEX, no IPv6. aria2c speaks UDP trackers only through its DHT
    /// socket ("udp is not supported yet" otherwise), so for a UDP tracker
    /// DHT is on, bound to 127.0.0.1 with no entry point and its own routing
    /// table file.
    fn aria2_command(&mut self, t: &Torrent, port: u16, dir: &Path) -> Command {
        let mut cmd = Command::new("aria2c");
        cmd.args([
            "--no-conf",
            "--interface=127.0.0.1",
            "--disable-ipv6=true",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
            "--enable-peer-exchange=false",
            "--file-allocation=none",
            "--auto-file-renaming=false",
            "--allow-overwrite=true",
            "--summary-interval=0",
            "--console-log-level=notice",
            "--log=-",
            "--log-level=info",
        ])
        .arg(format!("--listen-port={port}"))
        .arg(format!("--dir={}", dir.display()))
        .arg(format!("--stop-with-process={}", std::process::id()))
        .args(&self.aria2_extra);
        if t.announce == Announce::Udp {
            let id = self.next_id();
            cmd.arg("--enable-dht=true")
                .arg(format!("--dht-listen-port={}", free_port()))
                .arg(format!(
                    "--dht-file-path={}",
                    self.dir.join(format!("aria2-{id}.dht")).display()
                ));
        } else {
            cmd.arg("--enable-dht=false");
        }
        cmd
    }

    /// Starts aria2c downloading `t` into a fresh folder (peers from the
    /// tracker, which it asks every 3 s).
    pub fn leech_aria2(&mut self, t: &Torrent) -> Leecher {
        let out = self.subdir("aria2-leech");
        let port = free_port();
        let mut cmd = self.aria2_command(t, port, &out);
        cmd.args(["--seed-time=0", "--bt-tracker-interval=3"])
            .arg(&t.file);
        let proc = self.spawn("aria2c leecher", &mut cmd);
        Leecher {
            proc,
            out,
            content: t.content.clone(),
        }
    }

    /// Starts libtorrent downloading `t` into a fresh folder, with peers from
    /// the tracker and the given 127.0.0.1 ports.
    pub fn leech_libtorrent(&mut self, t: &Torrent, peers: &[u16]) -> Leecher {
        let file = t.file.clone();
        self.python_leecher(
            "lt_leech.py",
            file.as_os_str(),
            "libtorrent leecher",
            t,
            peers,
        )
    }

    /// Starts `script SOURCE <fresh folder> <free port> [--peer ...]`, a
    /// libtorrent helper that downloads `t`.
    fn python_leecher(
        &mut self,
        script_name: &str,
        source: &std::ffi::OsStr,
        name: &str,
        t: &Torrent,
        peers: &[u16],
    ) -> Leecher {
        let out = self.subdir("lt-leech");
        let mut cmd = self.python();
        cmd.arg(script(script_name))
            .arg(source)
            .arg(&out)
            .arg(free_port().to_string());
        for p in peers {
            cmd.arg("--peer").arg(format!("127.0.0.1:{p}"));
        }
        let proc = self.spawn(name, &mut cmd);
        Leecher {
            proc,
            out,
            content: t.content.clone(),
        }
    }

    // ---- tget

    /// Runs `tget download` into a fresh folder and asserts that it exits 0
    /// within DOWNLOAD_TIMEOUT and that the content matches the seeded bytes.
    pub fn tget_download(&mut self, t: &Torrent, extra: &[&str]) {
        let file = t.file.clone();
        self.run_tget_download("tget download", tget_command(), t, file.as_os_str(), extra);
    }

    /// Runs `cmd` (the tget binary, with its global flags) as `download
    /// <source> --dir <fresh folder> --port <free> -v <extra...>`, and
    /// asserts that it exits 0 within DOWNLOAD_TIMEOUT with `t`'s content.
    fn run_tget_download(
        &mut self,
        what: &str,
        mut cmd: Command,
        t: &Torrent,
        source: &std::ffi::OsStr,
        extra: &[&str],
    ) {
        let out = self.subdir("tget-out");
        cmd.arg("download")
            .arg(source)
            .arg("--dir")
            .arg(&out)
            .arg("--port")
            .arg(free_port().to_string())
            .arg("-v")
            .args(extra);
        let start = Instant::now();
        let mut proc = self.spawn(what, &mut cmd);
        match proc.wait_for(DOWNLOAD_TIMEOUT) {
            None => panic!("interop: {what} did not finish within {DOWNLOAD_TIMEOUT:?}; killed"),
            Some(status) if !status.success() => panic!("interop: {what} failed: {status}"),
            Some(_) => {}
        }
        eprintln!(
            "interop: {what}: {} in {:.2?}",
            t.name().to_string_lossy(),
            start.elapsed()
        );
        assert_same_content(&t.content, &out.join(t.name()));
    }

    /// Runs `tget download <t> --dir <fresh> --port <free> -v <extra...>`
    /// and returns how it exited (killed after DOWNLOAD_TIMEOUT) and its log.
    pub fn tget_run(&mut self, t: &Torrent, extra: &[&str]) -> (ExitStatus, PathBuf) {
        let out = self.subdir("tget-out");
        let mut cmd = tget_command();
        cmd.arg("download")
            .arg(&t.file)
            .arg("--dir")
            .arg(&out)
            .arg("--port")
            .arg(free_port().to_string())
            .arg("-v")
            .args(extra);
        let mut proc = self.spawn("tget download", &mut cmd);
        let status = proc
            .wait_for(DOWNLOAD_TIMEOUT)
            .unwrap_or_else(|| panic!("interop: tget did not end within {DOWNLOAD_TIMEOUT:?}"));
        (status, proc.log.clone())
    }

    /// A torrent made by `tget create` (piece size 2^`piece_log2`), with
    /// `extra` flags (e.g. `--private`).
    pub fn tget_create(
        &mut self,
        content: &Path,
        piece_log2: u32,
        announce: Announce,
        extra: &[&str],
    ) -> Torrent {
        let file = self.torrent_path(content);
        run_ok(
            "tget create",
            tget_command()
                .arg("create")
                .arg(content)
                .arg("-t")
                .arg(self.announce_url(announce))
                .arg("--piece-size")
                .arg((1u64 << piece_log2).to_string())
                .args(extra)
                .arg("-o")
                .arg(&file),
        );
        self.finish_torrent(file, content, announce)
    }

    /// Starts `tget seed` on `t`'s data folder; returns its port once it
    /// accepts connections.
    pub fn tget_seed(&mut self, t: &Torrent) -> u16 {
        let port = free_port();
        let mut cmd = tget_command();
        cmd.arg("seed")
            .arg(&t.file)
            .arg("--dir")
            .arg(&t.data_dir)
            .arg("--port")
            .arg(port.to_string())
            .arg("-v");
        let mut proc = self.spawn("tget seed", &mut cmd);
        let start = Instant::now();
        while !port_open(port) {
            proc.assert_running();
            if start.elapsed() > READY_TIMEOUT {
                panic!(
                    "interop: tget seed not accepting on 127.0.0.1:{port} after {READY_TIMEOUT:?}"
                );
            }
            sleep(POLL);
        }
        self.procs.push(proc);
        port
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

impl Drop for Swarm {
    fn drop(&mut self) {
        self.procs.clear();
        self.tracker = None;
        let keep = std::env::var_os("TGET_INTEROP_KEEP").is_some();
        if std::thread::panicking() {
            for (name, log) in &self.logs {
                eprintln!("===== {name}: {} =====\n{}", log.display(), tail(log));
            }
            if !keep {
                eprintln!(
                    "interop: removing {} (TGET_INTEROP_KEEP=1 keeps it)",
                    self.dir.display()
                );
            }
        }
        if keep {
            eprintln!("interop: kept {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A real client downloading; killed on drop.
pub struct Leecher {
    proc: Proc,
    out: PathBuf,
    content: PathBuf,
}

impl Leecher {
    /// Waits for the leecher to exit 0 within DOWNLOAD_TIMEOUT and checks
    /// what it downloaded.
    pub fn finish(mut self) {
        let start = Instant::now();
        match self.proc.wait_for(DOWNLOAD_TIMEOUT) {
            None => panic!(
                "interop: {} did not finish within {DOWNLOAD_TIMEOUT:?}; killed",
                self.proc.name
            ),
            Some(status) if !status.success() => {
                panic!("interop: {} failed: {status}", self.proc.name)
            }
            Some(_) => {}
        }
        let name = self
            .content
            .file_name()
            .expect("interop: content has a name");
        eprintln!(
            "interop: {} finished {} after {:.2?}",
            self.proc.name,
            name.to_string_lossy(),
            start.elapsed()
        );
        assert_same_content(&self.content, &self.out.join(name));
    }
}

// ------------------------------------------------------- seeding (issue 3) --

impl Swarm {
    /// Starts `tget seed` on `t`'s data folder with `extra` flags; returns
    /// its port once it accepts connections.
    pub fn tget_seed_with(&mut self, t: &Torrent, extra: &[&str]) -> u16 {
        let port = free_port();
        let mut cmd = tget_command();
        cmd.arg("seed")
            .arg(&t.file)
            .arg("--dir")
            .arg(&t.data_dir)
            .arg("--port")
            .arg(port.to_string())
            .arg("-v")
            .args(extra);
        let mut proc = self.spawn("tget seed", &mut cmd);
        let start = Instant::now();
        while !port_open(port) {
            proc.assert_running();
            if start.elapsed() > READY_TIMEOUT {
                panic!(
                    "interop: tget seed not accepting on 127.0.0.1:{port} after {READY_TIMEOUT:?}"
                );
            }
            sleep(POLL);
        }
        self.procs.push(proc);
        port
    }
}

impl Swarm {
    /// Starts `lt_timed_leech.py` downloading `t` into a fresh folder from
    /// the given 127.0.0.1 ports only; its log gets the timings that
    /// [`lt_timings`] reads.
    pub fn leech_libtorrent_timed(&mut self, t: &Torrent, peers: &[u16]) -> Leecher {
        let file = t.file.clone();
        let name = "libtorrent timed leecher";
        self.python_leecher("lt_timed_leech.py", file.as_os_str(), name, t, peers)
    }
}

impl Leecher {
    /// The folder the leecher downloads into.
    pub fn out_dir(&self) -> PathBuf {
        self.out.clone()
    }

    /// The leecher's log (stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.proc.log
    }

    /// Waits for the leecher to exit 0 (within DOWNLOAD_TIMEOUT), without
    /// checking its bytes yet (`finish` does), so a caller can time it.
    pub fn wait_done(&mut self) {
        match self.proc.wait_for(DOWNLOAD_TIMEOUT) {
            None => panic!(
                "interop: {} did not finish within {DOWNLOAD_TIMEOUT:?}; killed",
                self.proc.name
            ),
            Some(status) if !status.success() => {
                panic!("interop: {} failed: {status}", self.proc.name)
            }
            Some(_) => {}
        }
    }
}

/// From the log of `lt_timed_leech.py`: seconds from the first connection
/// to the first payload byte, and from the first byte to the last piece
/// verified (the transfer itself).
pub fn lt_timings(log: &Path) -> Option<(f64, f64)> {
    let text = fs::read_to_string(log).ok()?;
    let at = |tag: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(tag)?.trim().parse().ok())
    };
    let (connected, first, done) = (at("CONNECTED ")?, at("FIRST ")?, at("DONE ")?);
    Some((first - connected, done - first))
}

// ---------------------------------------------------- magnet links (issue 5) --

impl Swarm {
    /// A magnet link for `t`: its info-hash, plus `extra` (`&x.pe=...`,
    /// `&tr=...`), already percent-encoded by the caller.
    pub fn magnet(&self, t: &Torrent, extra: &str) -> String {
        format!("magnet:?xt=urn:btih:{}{extra}", t.info_hash)
    }

    /// `&tr=<announce URL>`, percent-encoded.
    pub fn tr(&self, announce: Announce) -> String {
        let url = self.announce_url(announce);
        let mut out = String::from("&tr=");
        for b in url.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    /// Runs `tget download <link>` into a fresh folder and checks that it
    /// exits 0 with `t`'s content.
    pub fn tget_download_link(&mut self, t: &Torrent, link: &str, extra: &[&str]) {
        let what = "tget download (magnet)";
        self.run_tget_download(what, tget_command(), t, link.as_ref(), extra);
    }

    /// Starts libtorrent on a magnet link, asking the given 127.0.0.1 ports
    /// for the metadata and the content.
    pub fn leech_libtorrent_magnet(&mut self, t: &Torrent, link: &str, peers: &[u16]) -> Leecher {
        let name = "libtorrent magnet leecher";
        self.python_leecher("lt_magnet.py", link.as_ref(), name, t, peers)
    }

    /// Starts aria2c on a magnet link (peers from the link's tracker).
    pub fn leech_aria2_magnet(&mut self, t: &Torrent, link: &str) -> Leecher {
        let out = self.subdir("aria2-magnet");
        let port = free_port();
        let mut cmd = self.aria2_command(t, port, &out);
        cmd.args([
            "--seed-time=0",
            "--bt-tracker-interval=3",
            "--bt-save-metadata=false",
        ])
        .arg(link);
        let proc = self.spawn("aria2c magnet leecher", &mut cmd);
        Leecher {
            proc,
            out,
            content: t.content.clone(),
        }
    }
}

impl Swarm {
    /// Starts libtorrent sessions on 127.0.0.1 forming a DHT (one per port
    /// returned), the first seeding `t`; returns once the seeder's announce
    /// reached another node.
    pub fn dht_swarm_libtorrent(&mut self, t: &Torrent, nodes: usize) -> Vec<u16> {
        let ports: Vec<u16> = (0..nodes).map(|_| free_port()).collect();
        let mut cmd = Command::new(PYTHON);
        cmd.arg(script("lt_dht_swarm.py"))
            .arg(&t.file)
            .arg(&t.data_dir)
            .args(ports.iter().map(|p| p.to_string()));
        let proc = self.spawn("libtorrent DHT swarm", &mut cmd);
        self.wait_seeder_ready(t, proc, "READY");
        ports
    }

    /// Runs `tget download <link>` with the DHT on, joined through
    /// `bootstrap` (127.0.0.1 ports) only, and checks the content.
    pub fn tget_download_by_dht(&mut self, t: &Torrent, link: &str, bootstrap: &[u16]) {
        let dht_port = free_port().to_string();
        let mut extra = vec!["--dht-port", &dht_port, "--timeout", "90s"];
        let nodes: Vec<String> = bootstrap.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        for n in &nodes {
            extra.extend(["--dht-bootstrap", n.as_str()]);
        }
        // The DHT on: the binary without --no-dht, joined through loopback
        // nodes only.
        let what = "tget download (DHT)";
        self.run_tget_download(what, Command::new(TGET), t, link.as_ref(), &extra);
    }
}

/// Runs `tget info <link> --save <saved>` and checks with libtorrent that
/// the file loads and has `info_hash`.
pub fn check_saved_torrent(link: &str, saved: &Path, info_hash: &str) {
    run_ok(
        "tget info --save",
        tget_command()
            .args(["info", link, "--timeout", "60s", "--save"])
            .arg(saved),
    );
    let out = run_ok(
        "libtorrent loads the saved torrent",
        Command::new(PYTHON).arg("-c").arg(format!(
            "import libtorrent as lt; ti = lt.torrent_info({:?}); print(ti.info_hashes().v1, ti.num_files())",
            saved.display().to_string()
        )),
    );
    assert!(
        out.trim().starts_with(info_hash),
        "interop: libtorrent read {out:?} from the saved torrent, wanted {info_hash}"
    );
}

// ------------------------------------------------------ IPv6 (issue 17) --

impl Swarm {
    /// Starts libtorrent (lt_leech.py) listening on `ip` only, downloading
    /// `t` into a fresh folder from `peers` (`HOST:PORT`, `[::1]:PORT` for
    /// IPv6).
    pub fn leech_libtorrent_on(&mut self, t: &Torrent, ip: &str, peers: &[String]) -> Leecher {
        let out = self.subdir("lt-leech");
        let mut cmd = self.python();
        cmd.arg(script("lt_leech.py"))
            .arg(&t.file)
            .arg(&out)
            .arg(free_port().to_string())
            .args(["--ip", ip]);
        for p in peers {
            cmd.arg("--peer").arg(p);
        }
        let proc = self.spawn("libtorrent leecher", &mut cmd);
        Leecher {
            proc,
            out,
            content: t.content.clone(),
        }
    }
}

// ------------------------------------------------------------ uTP (issue 18) --

impl Swarm {
    /// Seeds `t` with libtorrent reachable only over uTP (TCP off both
    /// ways); returns its port once the data is verified.
    pub fn seed_libtorrent_utp_only(&mut self, t: &Torrent) -> u16 {
        let port = free_port();
        let mut cmd = self.python();
        cmd.arg(script("lt_seed.py"))
            .arg(&t.file)
            .arg(&t.data_dir)
            .arg(port.to_string())
            .arg("--utp-only");
        let proc = self.spawn("libtorrent uTP-only seeder", &mut cmd);
        self.wait_seeder_ready(t, proc, "READY");
        port
    }

    /// Starts a libtorrent leecher of `t` that speaks only uTP, dialling
    /// the given 127.0.0.1 ports.
    pub fn leech_libtorrent_utp_only(&mut self, t: &Torrent, peers: &[u16]) -> Leecher {
        let out = self.subdir("lt-utp-leech");
        let mut cmd = self.python();
        cmd.arg(script("lt_leech.py"))
            .arg(&t.file)
            .arg(&out)
            .arg(free_port().to_string())
            .arg("--utp-only");
        for p in peers {
            cmd.arg("--peer").arg(format!("127.0.0.1:{p}"));
        }
        let proc = self.spawn("libtorrent uTP-only leecher", &mut cmd);
        Leecher {
            proc,
            out,
            content: t.content.clone(),
        }
    }
}

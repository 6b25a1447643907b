//! An in-process HTTP/1.1 file server on 127.0.0.1 for web-seed tests
//! (BEP 19): it serves the files under a folder with correct range answers
//! (206, keep-alive), or misbehaves in one of the ways a real server might
//! ([`Mode`]). It counts requests and body bytes sent.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// How the server answers.
#[derive(Clone, Debug)]
pub enum Mode {
    /// Correct range answers.
    Ranges,
    /// A 200 with the whole file to every request, Range or not.
    IgnoreRange,
    /// A 206 with the right headers but half the body, then the
    /// connection closed.
    ShortBody,
    /// The first `n` requests get their head and nothing more (the
    /// connection stays open); later ones are answered correctly.
    StallFirst(usize),
    /// A 302 to the same URL, for ever.
    RedirectLoop,
    /// A 302 to the same path on `base` (an `http://host:port` URL).
    RedirectTo(String),
    /// Bytes of files whose path ends with this are flipped.
    Corrupt(String),
    /// The first `n` requests get status `code`; later ones are answered
    /// correctly.
    StatusFirst(u16, usize),
    /// Files whose path ends with this are not found (404).
    Missing(String),
    /// Each answer waits this long first.
    Slow(Duration),
}

struct State {
    root: PathBuf,
    mode: Mode,
    requests: AtomicUsize,
    sent: AtomicU64,
    paths: Mutex<Vec<String>>,
    stop: AtomicBool,
    open: Mutex<Vec<TcpStream>>,
    /// Where each connection came from.
    from: Mutex<Vec<SocketAddr>>,
}

/// A running server; stopped on drop.
pub struct HttpServer {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl HttpServer {
    /// Serves the files under `root`.
    pub fn start(root: &Path, mode: Mode) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            root: root.to_path_buf(),
            mode,
            requests: AtomicUsize::new(0),
            sent: AtomicU64::new(0),
            paths: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
            from: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                if let Ok(a) = conn.peer_addr() {
                    st.from.lock().unwrap().push(a);
                }
                if let Ok(c) = conn.try_clone() {
                    st.open.lock().unwrap().push(c);
                }
                let st = st.clone();
                thread::spawn(move || {
                    let _ = serve(conn, &st);
                });
            }
        });
        HttpServer { addr, state }
    }

    /// `http://127.0.0.1:port/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Requests answered (or begun).
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Body bytes written.
    pub fn sent(&self) -> u64 {
        self.state.sent.load(Ordering::Relaxed)
    }

    /// Where each connection came from, in order.
    pub fn connected_from(&self) -> Vec<SocketAddr> {
        self.state.from.lock().unwrap().clone()
    }

    /// The decoded paths asked for, in order.
    pub fn paths(&self) -> Vec<String> {
        self.state.paths.lock().unwrap().clone()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
        for c in self.state.open.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn head(w: &mut TcpStream, status: &str, headers: &[(&str, String)]) -> std::io::Result<()> {
    let mut h = format!("HTTP/1.1 {status}\r\n");
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    w.write_all(h.as_bytes())
}

fn body(w: &mut TcpStream, st: &State, data: &[u8]) -> std::io::Result<()> {
    for chunk in data.chunks(16 * 1024) {
        w.write_all(chunk)?;
        st.sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}

fn serve(conn: TcpStream, st: &State) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut w = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut range: Option<(u64, u64)> = None;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("range") {
                    let v = v.trim().trim_start_matches("bytes=");
                    if let Some((a, b)) = v.split_once('-') {
                        if let (Ok(a), Ok(b)) = (a.parse(), b.parse()) {
                            range = Some((a, b));
                        }
                    }
                }
            }
        }
        let n = st.requests.fetch_add(1, Ordering::Relaxed);
        let path = percent_decode(&target).unwrap_or_default();
        st.paths.lock().unwrap().push(path.clone());
        match &st.mode {
            Mode::RedirectLoop => {
                head(
                    &mut w,
                    "302 Found",
                    &[("Location", target.clone()), ("Content-Length", "0".into())],
                )?;
                continue;
            }
            Mode::RedirectTo(base) => {
                head(
                    &mut w,
                    "302 Found",
                    &[
                        ("Location", format!("{base}{target}")),
                        ("Content-Length", "0".into()),
                    ],
                )?;
                continue;
            }
            Mode::StatusFirst(code, k) if n < *k => {
                let text = "failure";
                head(
                    &mut w,
                    &format!("{code} Failure"),
                    &[("Content-Length", text.len().to_string())],
                )?;
                w.write_all(text.as_bytes())?;
                continue;
            }
            Mode::Slow(d) => thread::sleep(*d),
            _ => {}
        }
        let rel = path.trim_start_matches('/');
        let file = st.root.join(rel);
        let missing = matches!(&st.mode, Mode::Missing(end) if path.ends_with(end.as_str()));
        let data = match fs::read(&file) {
            Ok(d) if !rel.is_empty() && !missing => d,
            _ => {
                head(
                    &mut w,
                    "404 Not Found",
                    &[("Content-Length", "0".to_string())],
                )?;
                continue;
            }
        };
        let mut data = data;
        if let Mode::Corrupt(end) = &st.mode {
            if path.ends_with(end.as_str()) {
                for b in data.iter_mut().step_by(997) {
                    *b ^= 0x55;
                }
            }
        }
        let total = data.len() as u64;
        match (&st.mode, range) {
            (Mode::IgnoreRange, _) | (_, None) => {
                head(&mut w, "200 OK", &[("Content-Length", total.to_string())])?;
                body(&mut w, st, &data)?;
            }
            (mode, Some((a, b))) => {
                if a > b || b >= total {
                    head(
                        &mut w,
                        "416 Range Not Satisfiable",
                        &[("Content-Length", "0".to_string())],
                    )?;
                    continue;
                }
                let part = &data[a as usize..=b as usize];
                head(
                    &mut w,
                    "206 Partial Content",
                    &[
                        ("Content-Length", part.len().to_string()),
                        ("Content-Range", format!("bytes {a}-{b}/{total}")),
                    ],
                )?;
                match mode {
                    Mode::ShortBody => {
                        body(&mut w, st, &part[..part.len() / 2])?;
                        let _ = w.shutdown(Shutdown::Both);
                        return Ok(());
                    }
                    Mode::StallFirst(k) if n < *k => {
                        // Hold the connection open, sending nothing.
                        while !st.stop.load(Ordering::Relaxed) {
                            thread::sleep(Duration::from_millis(50));
                        }
                        return Ok(());
                    }
                    _ => body(&mut w, st, part)?,
                }
            }
        }
    }
}

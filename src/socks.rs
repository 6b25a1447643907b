//! A SOCKS5 client: the CONNECT and UDP ASSOCIATE commands of RFC 1928
//! with no authentication or with username/password (RFC 1929), on a
//! blocking `TcpStream`, and the header of datagrams through a UDP relay.
//!
//! Every read asks for exactly the bytes the protocol says come next (at
//! most 255 at a time) and waits no later than one deadline for the whole
//! exchange, so a proxy that stalls or talks nonsense costs a bounded time
//! and a fixed, small amount of memory. [`crate::dial`] decides when a
//! connection goes through a proxy; this module only speaks the protocol.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Instant;

/// A proxy named on the command line: `socks5://[user:pass@]HOST:PORT`.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// The proxy's host name or address, as given (without brackets).
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Username and password, if given.
    pub auth: Option<Auth>,
}

/// Username/password credentials (RFC 1929): 1 to 255 bytes each.
#[derive(Clone, PartialEq, Eq)]
pub struct Auth {
    /// The username.
    pub user: String,
    /// The password.
    pub pass: String,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// The URL without the password (safe to print and log).
impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "socks5://")?;
        if let Some(a) = &self.auth {
            write!(f, "{}:***@", a.user)?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Proxy {
    /// Parses `socks5://[user:pass@]HOST:PORT` (HOST a name, an IPv4
    /// address or a bracketed IPv6 one; `%XX` escapes in user and pass).
    pub fn parse(url: &str) -> Result<Proxy, String> {
        let bad = |why: &str| format!("--proxy {}: {why}", redact(url));
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("socks5") => rest,
            Some((scheme, _)) => {
                return Err(bad(&format!(
                    "scheme {scheme}:// is not supported (only socks5://)"
                )))
            }
            None => return Err(bad("expected socks5://[user:pass@]HOST:PORT")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let auth = match userinfo {
            None => None,
            Some(u) => {
                let (user, pass) = u
                    .split_once(':')
                    .ok_or_else(|| bad("credentials must be user:pass"))?;
                let user = percent_decode(user).ok_or_else(|| bad("bad %-escape in user"))?;
                let pass = percent_decode(pass).ok_or_else(|| bad("bad %-escape in password"))?;
                if user.is_empty() || user.len() > 255 || pass.is_empty() || pass.len() > 255 {
                    return Err(bad("user and password must be 1 to 255 bytes each"));
                }
                Some(Auth { user, pass })
            }
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, p) = v6
                .split_once("]:")
                .ok_or_else(|| bad("expected [IPv6]:PORT"))?;
            (h, p)
        } else {
            hostport
                .rsplit_once(':')
                .ok_or_else(|| bad("a port is needed (HOST:PORT)"))?
        };
        if host.is_empty() || host.contains(['/', '@', '[', ']']) {
            return Err(bad("bad host"));
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| bad("bad port"))?;
        Ok(Proxy {
            host: host.to_string(),
            port,
            auth,
        })
    }
}

/// `url` with any password replaced by `***`, for error messages.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => {
            let (userinfo, host) = rest.rsplit_once('@').unwrap_or(("", rest));
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_string(),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Why a SOCKS5 exchange failed.
#[derive(Debug)]
pub enum SocksError {
    /// The proxy's socket failed (reset, closed early).
    Io(io::Error),
    /// The proxy did not answer in time, during the named step.
    Stalled(&'static str),
    /// The proxy accepts none of the methods we offer: it wants
    /// credentials and we have none (or it wants a method we lack).
    NoMethod {
        /// Whether we offered username/password.
        offered_auth: bool,
    },
    /// The proxy refused our username and password.
    AuthRefused,
    /// The proxy answered something that is not SOCKS5.
    Malformed(String),
    /// The proxy refused the CONNECT (the RFC 1928 reply code).
    Refused(u8),
    /// The proxy refused the UDP ASSOCIATE (the RFC 1928 reply code;
    /// 7, command not supported, from a proxy that relays no UDP).
    UdpRefused(u8),
}

impl SocksError {
    /// Whether this says something about the proxy itself (down, wrong
    /// credentials, not SOCKS5) rather than about one target it could not
    /// reach: a failure of the first kind ends the run.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, SocksError::Refused(_) | SocksError::UdpRefused(_))
    }
}

impl fmt::Display for SocksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocksError::Io(e) => write!(f, "{e}"),
            SocksError::Stalled(step) => write!(f, "no answer in time to our {step}"),
            SocksError::NoMethod {
                offered_auth: false,
            } => write!(
                f,
                "it asks for authentication (give socks5://user:pass@HOST:PORT)"
            ),
            SocksError::NoMethod { offered_auth: true } => write!(
                f,
                "it accepts neither no authentication nor username/password"
            ),
            SocksError::AuthRefused => write!(f, "it refused our username and password"),
            SocksError::Malformed(m) => write!(f, "malformed reply: {m}"),
            SocksError::Refused(code) => write!(f, "CONNECT refused: {}", reply_text(*code)),
            SocksError::UdpRefused(code) => {
                write!(f, "UDP ASSOCIATE refused: {}", reply_text(*code))
            }
        }
    }
}

impl std::error::Error for SocksError {}

/// What a CONNECT reply code means (RFC 1928, section 6).
fn reply_text(code: u8) -> String {
    match code {
        1 => "general SOCKS server failure".into(),
        2 => "connection not allowed by ruleset".into(),
        3 => "network unreachable".into(),
        4 => "host unreachable".into(),
        5 => "connection refused".into(),
        6 => "TTL expired".into(),
        7 => "command not supported".into(),
        8 => "address type not supported".into(),
        c => format!("reply code {c}"),
    }
}

const VERSION: u8 = 5;
const NO_AUTH: u8 = 0;
const USER_PASS: u8 = 2;
const NO_ACCEPTABLE: u8 = 0xff;
const CMD_CONNECT: u8 = 1;
const CMD_UDP_ASSOCIATE: u8 = 3;
const ATYP_V4: u8 = 1;
const ATYP_NAME: u8 = 3;
const ATYP_V6: u8 = 4;

/// Negotiates the method and authenticates (RFC 1928 section 3, RFC 1929)
/// on a fresh connection to the proxy, all before `deadline`.
pub fn greet(s: &mut TcpStream, auth: Option<&Auth>, deadline: Instant) -> Result<(), SocksError> {
    let hello: &[u8] = if auth.is_some() {
        &[VERSION, 2, NO_AUTH, USER_PASS]
    } else {
        &[VERSION, 1, NO_AUTH]
    };
    send(s, hello, deadline, "greeting")?;
    let mut reply = [0u8; 2];
    recv(s, &mut reply, deadline, "greeting")?;
    if reply[0] != VERSION {
        return Err(SocksError::Malformed(format!(
            "version {} in the method selection (not SOCKS5)",
            reply[0]
        )));
    }
    match (reply[1], auth) {
        (NO_AUTH, _) => Ok(()),
        (USER_PASS, Some(a)) => {
            let mut msg = Vec::with_capacity(3 + a.user.len() + a.pass.len());
            msg.push(1);
            msg.push(a.user.len() as u8);
            msg.extend_from_slice(a.user.as_bytes());
            msg.push(a.pass.len() as u8);
            msg.extend_from_slice(a.pass.as_bytes());
            send(s, &msg, deadline, "username and password")?;
            let mut status = [0u8; 2];
            recv(s, &mut status, deadline, "username and password")?;
            // RFC 1929 says version 1; some servers answer 5.
            if status[0] != 1 && status[0] != VERSION {
                return Err(SocksError::Malformed(format!(
                    "version {} in the authentication reply",
                    status[0]
                )));
            }
            if status[1] == 0 {
                Ok(())
            } else {
                Err(SocksError::AuthRefused)
            }
        }
        (NO_ACCEPTABLE, _) => Err(SocksError::NoMethod {
            offered_auth: auth.is_some(),
        }),
        (m, _) => Err(SocksError::Malformed(format!(
            "it chose method {m}, which we did not offer"
        ))),
    }
}

/// What a CONNECT asks the proxy to reach.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// An address.
    Addr(SocketAddr),
    /// A host name the proxy resolves (an HTTP tracker's or web seed's
    /// host: no DNS query leaves here), and a port.
    Name(&'a str, u16),
}

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Addr(a) => write!(f, "{a}"),
            Target::Name(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

/// Asks the proxy to CONNECT to `target` (RFC 1928 section 4) and reads its
/// reply, before `deadline`. Returns the address the proxy bound.
pub fn request_connect(
    s: &mut TcpStream,
    target: SocketAddr,
    deadline: Instant,
) -> Result<SocketAddr, SocksError> {
    request_connect_to(s, Target::Addr(target), deadline)
}

/// [`request_connect`] to an address or a host name (at most 255 bytes).
pub fn request_connect_to(
    s: &mut TcpStream,
    target: Target<'_>,
    deadline: Instant,
) -> Result<SocketAddr, SocksError> {
    request(s, CMD_CONNECT, target, deadline)
}

/// Asks the proxy for a UDP relay (RFC 1928 UDP ASSOCIATE) for datagrams
/// we will send from `from` (`0.0.0.0:0` when not known yet), before
/// `deadline`. Returns the relay's address, as the proxy gave it (all
/// zeros: the proxy's own address). Datagrams for the relay carry the
/// header [`udp_wrap`] writes. The relay lives as long as `s` stays open.
pub fn request_udp_associate(
    s: &mut TcpStream,
    from: SocketAddr,
    deadline: Instant,
) -> Result<SocketAddr, SocksError> {
    request(s, CMD_UDP_ASSOCIATE, Target::Addr(from), deadline)
}

/// Writes `target` as an address (ATYP, address, port) into `out`.
fn put_target(out: &mut Vec<u8>, target: Target<'_>) -> Result<(), SocksError> {
    let port = match target {
        Target::Addr(a) => {
            match a.ip() {
                IpAddr::V4(ip) => {
                    out.push(ATYP_V4);
                    out.extend_from_slice(&ip.octets());
                }
                IpAddr::V6(ip) => {
                    out.push(ATYP_V6);
                    out.extend_from_slice(&ip.octets());
                }
            }
            a.port()
        }
        Target::Name(host, port) => {
            let len = u8::try_from(host.len())
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| {
                    SocksError::Io(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "a host name of 1 to 255 bytes is needed for SOCKS5",
                    ))
                })?;
            out.push(ATYP_NAME);
            out.push(len);
            out.extend_from_slice(host.as_bytes());
            port
        }
    };
    out.extend_from_slice(&port.to_be_bytes());
    Ok(())
}

/// One request (CONNECT or UDP ASSOCIATE) and its reply: the address the
/// proxy bound.
fn request(
    s: &mut TcpStream,
    cmd: u8,
    target: Target<'_>,
    deadline: Instant,
) -> Result<SocketAddr, SocksError> {
    let step = if cmd == CMD_CONNECT {
        "CONNECT"
    } else {
        "UDP ASSOCIATE"
    };
    let mut req = vec![VERSION, cmd, 0];
    put_target(&mut req, target)?;
    send(s, &req, deadline, step)?;
    let mut head = [0u8; 4];
    recv(s, &mut head, deadline, step)?;
    if head[0] != VERSION {
        return Err(SocksError::Malformed(format!(
            "version {} in the {step} reply",
            head[0]
        )));
    }
    match head[1] {
        0 => {}
        code if cmd == CMD_CONNECT => return Err(SocksError::Refused(code)),
        code => return Err(SocksError::UdpRefused(code)),
    }
    let ip: IpAddr = match head[3] {
        ATYP_V4 => {
            let mut a = [0u8; 4];
            recv(s, &mut a, deadline, step)?;
            a.into()
        }
        ATYP_V6 => {
            let mut a = [0u8; 16];
            recv(s, &mut a, deadline, step)?;
            a.into()
        }
        ATYP_NAME => {
            // A name we do not use: read past it (at most 255 bytes).
            let mut len = [0u8; 1];
            recv(s, &mut len, deadline, step)?;
            let mut name = [0u8; 255];
            recv(s, &mut name[..len[0] as usize], deadline, step)?;
            IpAddr::from([0, 0, 0, 0])
        }
        t => {
            return Err(SocksError::Malformed(format!(
                "address type {t} in the {step} reply"
            )))
        }
    };
    let mut port = [0u8; 2];
    recv(s, &mut port, deadline, step)?;
    Ok(SocketAddr::new(ip, u16::from_be_bytes(port)))
}

/// The longest header [`udp_wrap`] writes (a 255-byte name).
pub const UDP_HEADER_MAX: usize = 4 + 1 + 255 + 2;

/// A datagram for a SOCKS5 UDP relay (RFC 1928 section 7): two reserved
/// bytes, fragment 0 (we never fragment), the destination (an address, or
/// a host name the proxy resolves), then `payload`.
pub fn udp_wrap(to: Target<'_>, payload: &[u8]) -> Result<Vec<u8>, SocksError> {
    let mut d = Vec::with_capacity(UDP_HEADER_MAX + payload.len());
    d.extend_from_slice(&[0, 0, 0]);
    put_target(&mut d, to)?;
    d.extend_from_slice(payload);
    Ok(d)
}

/// A datagram from a SOCKS5 UDP relay: where it came from and the length
/// of its header (the payload follows). `None` for anything else: too
/// short, a fragment (FRAG not 0: we never reassemble), a source given as
/// a name, or an unknown address type.
pub fn udp_unwrap(d: &[u8]) -> Option<(SocketAddr, usize)> {
    if d.get(..3)? != [0, 0, 0] {
        return None;
    }
    let (ip, at): (IpAddr, usize) = match *d.get(3)? {
        ATYP_V4 => (<[u8; 4]>::try_from(d.get(4..8)?).ok()?.into(), 8),
        ATYP_V6 => (<[u8; 16]>::try_from(d.get(4..20)?).ok()?.into(), 20),
        _ => return None,
    };
    let port = u16::from_be_bytes(d.get(at..at + 2)?.try_into().ok()?);
    Some((SocketAddr::new(ip, port), at + 2))
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn time_left(deadline: Instant, step: &'static str) -> Result<std::time::Duration, SocksError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(SocksError::Stalled(step))
    } else {
        Ok(left)
    }
}

fn send(
    s: &mut TcpStream,
    bytes: &[u8],
    deadline: Instant,
    step: &'static str,
) -> Result<(), SocksError> {
    s.set_write_timeout(Some(time_left(deadline, step)?))
        .map_err(SocksError::Io)?;
    s.write_all(bytes).map_err(|e| {
        if timed_out(&e) {
            SocksError::Stalled(step)
        } else {
            SocksError::Io(e)
        }
    })
}

/// Fills `buf` exactly, each read waiting no later than `deadline`.
fn recv(
    s: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
    step: &'static str,
) -> Result<(), SocksError> {
    let mut got = 0;
    while got < buf.len() {
        s.set_read_timeout(Some(time_left(deadline, step)?))
            .map_err(SocksError::Io)?;
        match s.read(&mut buf[got..]) {
            Ok(0) => {
                return Err(SocksError::Malformed(format!(
                    "closed during our {step} after {got} of {} bytes",
                    buf.len()
                )))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if timed_out(&e) => return Err(SocksError::Stalled(step)),
            Err(e) => return Err(SocksError::Io(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_datagrams_are_wrapped_and_unwrapped_and_others_refused() {
        let to: SocketAddr = "127.0.0.9:6969".parse().unwrap();
        let d = udp_wrap(Target::Addr(to), b"payload").unwrap();
        assert_eq!(&d[..10], &[0, 0, 0, 1, 127, 0, 0, 9, 0x1b, 0x39]);
        assert_eq!(udp_unwrap(&d), Some((to, 10)));
        assert_eq!(&d[10..], b"payload");
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        let d6 = udp_wrap(Target::Addr(v6), b"x").unwrap();
        assert_eq!(udp_unwrap(&d6), Some((v6, 22)));
        let n = udp_wrap(Target::Name("tr.example", 80), b"x").unwrap();
        let mut want = vec![0, 0, 0, 3, 10];
        want.extend_from_slice(b"tr.example");
        want.extend_from_slice(&[0, 80, b'x']);
        assert_eq!(n, want);
        assert!(udp_wrap(Target::Name(&"a".repeat(256), 80), b"x").is_err());
        // A fragment, a name, a short datagram: refused, never a panic.
        let mut frag = d.clone();
        frag[2] = 1;
        assert_eq!(udp_unwrap(&frag), None);
        assert_eq!(udp_unwrap(&n), None);
        for len in 0..10 {
            assert_eq!(udp_unwrap(&d[..len]), None, "{len} bytes");
        }
    }

    #[test]
    fn udp_associate_is_asked_and_a_refusal_is_not_fatal() {
        let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let (a, h) = scripted(vec![5, 0, 0, 1, 127, 0, 0, 1, 0x1f, 0x90], false);
        let mut s = TcpStream::connect(a).unwrap();
        let relay = request_udp_associate(&mut s, any, soon()).unwrap();
        assert_eq!(relay, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(h.join().unwrap(), [5, 3, 0, 1, 0, 0, 0, 0, 0, 0]);
        // microsocks: command not supported.
        let (a, _h) = scripted(vec![5, 7, 0, 1, 0, 0, 0, 0, 0, 0], false);
        let mut s = TcpStream::connect(a).unwrap();
        let e = request_udp_associate(&mut s, any, soon()).unwrap_err();
        assert!(
            matches!(e, SocksError::UdpRefused(7)) && !e.is_fatal(),
            "{e}"
        );
        assert!(e.to_string().contains("command not supported"), "{e}");
    }

    #[test]
    fn urls_are_parsed() {
        let p = Proxy::parse("socks5://127.0.0.1:1080").unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.auth.is_none()),
            ("127.0.0.1", 1080, true)
        );
        let p = Proxy::parse("SOCKS5://al%40ce:p:w@[::1]:9050/").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("::1", 9050));
        let a = p.auth.clone().unwrap();
        assert_eq!((a.user.as_str(), a.pass.as_str()), ("al@ce", "p:w"));
        assert_eq!(p.to_string(), "socks5://al@ce:***@[::1]:9050");
        let p = Proxy::parse("socks5://u:x@proxy.example:1").unwrap();
        assert_eq!(p.host, "proxy.example");
    }

    #[test]
    fn bad_urls_are_refused_without_showing_the_password() {
        for bad in [
            "http://127.0.0.1:8080",
            "127.0.0.1:1080",
            "socks5://127.0.0.1",
            "socks5://127.0.0.1:0",
            "socks5://127.0.0.1:99999",
            "socks5://:1080",
            "socks5://user@127.0.0.1:1080",
            "socks5://:secret@127.0.0.1:1080",
            "socks5://u:secret%zz@127.0.0.1:1080",
            "socks4://u:secret@127.0.0.1:1080",
        ] {
            let e = Proxy::parse(bad).unwrap_err();
            assert!(e.starts_with("--proxy "), "{bad}: {e}");
            assert!(!e.contains("secret"), "{bad}: {e}");
        }
        let long = format!("socks5://{}:p@h:1", "u".repeat(256));
        assert!(Proxy::parse(&long).is_err());
    }

    /// A scripted proxy: reads what it is told to, answers `reply`.
    fn scripted(
        reply: Vec<u8>,
        then_stall: bool,
    ) -> (SocketAddr, std::thread::JoinHandle<Vec<u8>>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_millis(300)))
                .unwrap();
            let mut got = vec![0u8; 64];
            let n = s.read(&mut got).unwrap_or(0);
            got.truncate(n);
            let _ = s.write_all(&reply);
            if then_stall {
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            got
        });
        (addr, h)
    }

    fn soon() -> Instant {
        Instant::now() + std::time::Duration::from_millis(200)
    }

    #[test]
    fn greeting_outcomes() {
        let auth = Auth {
            user: "u".into(),
            pass: "p".into(),
        };
        let (a, h) = scripted(vec![5, 0], false);
        let mut s = TcpStream::connect(a).unwrap();
        greet(&mut s, None, soon()).unwrap();
        assert_eq!(h.join().unwrap(), [5, 1, 0]);

        let (a, _h) = scripted(vec![5, 0xff], false);
        let mut s = TcpStream::connect(a).unwrap();
        let e = greet(&mut s, None, soon()).unwrap_err();
        assert!(
            matches!(
                e,
                SocksError::NoMethod {
                    offered_auth: false
                }
            ),
            "{e}"
        );

        let (a, _h) = scripted(vec![5, 2, 1, 1], false);
        let mut s = TcpStream::connect(a).unwrap();
        let e = greet(&mut s, Some(&auth), soon()).unwrap_err();
        assert!(matches!(e, SocksError::AuthRefused), "{e}");

        let (a, _h) = scripted(b"HTTP/1.1 400 Bad".to_vec(), false);
        let mut s = TcpStream::connect(a).unwrap();
        let e = greet(&mut s, None, soon()).unwrap_err();
        assert!(matches!(e, SocksError::Malformed(_)), "{e}");

        let (a, _h) = scripted(vec![5], true);
        let mut s = TcpStream::connect(a).unwrap();
        let e = greet(&mut s, None, soon()).unwrap_err();
        assert!(matches!(e, SocksError::Stalled("greeting")), "{e}");
    }

    #[test]
    fn connect_replies() {
        let target: SocketAddr = "127.0.0.9:6881".parse().unwrap();
        let (a, h) = scripted(vec![5, 0, 0, 1, 127, 0, 0, 1, 0x1a, 0xe1], false);
        let mut s = TcpStream::connect(a).unwrap();
        let bound = request_connect(&mut s, target, soon()).unwrap();
        assert_eq!(bound, "127.0.0.1:6881".parse().unwrap());
        assert_eq!(h.join().unwrap(), [5, 1, 0, 1, 127, 0, 0, 9, 0x1a, 0xe1]);

        let (a, _h) = scripted(vec![5, 0, 0, 3, 3, b'a', b'b', b'c', 0, 80], false);
        let mut s = TcpStream::connect(a).unwrap();
        request_connect(&mut s, target, soon()).unwrap();

        let (a, _h) = scripted(vec![5, 5, 0, 1, 0, 0, 0, 0, 0, 0], false);
        let mut s = TcpStream::connect(a).unwrap();
        let e = request_connect(&mut s, target, soon()).unwrap_err();
        assert!(matches!(e, SocksError::Refused(5)) && !e.is_fatal(), "{e}");
        assert!(e.to_string().contains("connection refused"), "{e}");

        let (a, _h) = scripted(vec![5, 0, 0, 9, 0, 0], false);
        let mut s = TcpStream::connect(a).unwrap();
        let e = request_connect(&mut s, target, soon()).unwrap_err();
        assert!(matches!(e, SocksError::Malformed(_)), "{e}");

        let (a, _h) = scripted(vec![5, 0, 0, 1, 127], true);
        let mut s = TcpStream::connect(a).unwrap();
        let e = request_connect(&mut s, target, soon()).unwrap_err();
        assert!(matches!(e, SocksError::Stalled("CONNECT")), "{e}");
    }

    #[test]
    fn a_host_name_is_sent_for_the_proxy_to_resolve() {
        let (a, h) = scripted(vec![5, 0, 0, 1, 127, 0, 0, 1, 0, 80], false);
        let mut s = TcpStream::connect(a).unwrap();
        request_connect_to(&mut s, Target::Name("tr.example", 80), soon()).unwrap();
        let mut want = vec![5, 1, 0, 3, 10];
        want.extend_from_slice(b"tr.example");
        want.extend_from_slice(&[0, 80]);
        assert_eq!(h.join().unwrap(), want);

        let long = "a".repeat(256);
        let (a, _h) = scripted(vec![], false);
        let mut s = TcpStream::connect(a).unwrap();
        let e = request_connect_to(&mut s, Target::Name(&long, 80), soon()).unwrap_err();
        assert!(e.to_string().contains("255"), "{e}");
    }
}

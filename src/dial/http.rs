//! The HTTP side of the route: ureq agents whose every connection is made
//! by [`super::connect_to`], so `--proxy` and `--bind` hold for HTTP(S)
//! trackers, torrent URLs and web seeds as they do for peers.
//!
//! ureq 3 opens its sockets itself and has no setting for a local address,
//! so the agents are built with ureq's connector interface
//! (`ureq::unversioned::transport`; Cargo.lock pins the version, whose
//! interface may change between minor releases): [`Route`] opens the TCP
//! connection (bound, or a CONNECT through our SOCKS5 client) and ureq's
//! rustls connector wraps it for https. [`RouteResolver`] resolves nothing
//! behind a proxy, which is handed the host name instead.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::time::Duration;

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, RustlsConnector, Transport,
};
use ureq::{Agent, Error, Timeout};

use crate::socks::Target;

/// The connect deadline when ureq was given none.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A ureq agent with `config` whose connections follow the route.
pub fn agent(config: Config) -> Agent {
    Agent::with_parts(
        config,
        Route.chain(RustlsConnector::default()),
        RouteResolver(DefaultResolver::default()),
    )
}

/// Opens the TCP connection of an HTTP request the way the route says.
pub struct Route;

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tget::dial::Route")
    }
}

impl Connector<()> for Route {
    type Out = Conn;

    fn connect(
        &self,
        details: &ConnectionDetails,
        _chained: Option<()>,
    ) -> Result<Option<Conn>, Error> {
        let timeout = details
            .timeout
            .not_zero()
            .map(|t| *t)
            .unwrap_or(CONNECT_TIMEOUT);
        let stream = if super::proxied() {
            let (host, port) = host_port(details.uri)?;
            let target = match host.parse::<IpAddr>() {
                Ok(ip) => Target::Addr((ip, port).into()),
                Err(_) => Target::Name(&host, port),
            };
            super::connect_to(target, timeout).map_err(connect_error)?
        } else {
            direct(&details.addrs, timeout)?
        };
        if details.config.no_delay() {
            stream.set_nodelay(true)?;
        }
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(Conn {
            stream,
            buffers,
            read_timeout: None,
            write_timeout: None,
        }))
    }
}

/// One HTTP connection's socket and ureq's buffers for it.
pub struct Conn {
    stream: TcpStream,
    buffers: LazyBuffers,
    /// The socket's timeouts as last set (a system call only on a change).
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("peer", &self.stream.peer_addr().ok())
            .finish()
    }
}

/// The wait `t` allows (`None`: no limit), or the timeout it has reached.
fn wait(t: NextTimeout) -> Result<Option<Duration>, Error> {
    if t.after.is_zero() {
        return Err(Error::Timeout(t.reason));
    }
    Ok(t.not_zero().map(|d| *d))
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

impl Transport for Conn {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), Error> {
        let t = timeout.for_write();
        let d = wait(t)?;
        if d != self.write_timeout {
            self.stream.set_write_timeout(d)?;
            self.write_timeout = d;
        }
        let out = &self.buffers.output()[..amount];
        self.stream.write_all(out).map_err(|e| {
            if timed_out(&e) {
                Error::Timeout(t.reason)
            } else {
                Error::Io(e)
            }
        })
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, Error> {
        let t = timeout.for_read();
        let d = wait(t)?;
        if d != self.read_timeout {
            self.stream.set_read_timeout(d)?;
            self.read_timeout = d;
        }
        let n = loop {
            match self.stream.read(self.buffers.input_append_buf()) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if timed_out(&e) => return Err(Error::Timeout(t.reason)),
                Err(e) => return Err(Error::Io(e)),
            }
        };
        self.buffers.input_appended(n);
        Ok(n > 0)
    }

    /// Whether a kept-alive connection may be used again: nothing to read
    /// and not closed. One non-blocking peek (a system call per request,
    /// where switching the socket to non-blocking and back took three).
    fn is_open(&mut self) -> bool {
        let mut b = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        let flags = libc::MSG_PEEK | libc::MSG_DONTWAIT;
        let r = socket2::SockRef::from(&self.stream).recv_with_flags(&mut b, flags);
        matches!(r, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// Tries the resolved addresses in turn (from the bound address, if any),
/// within `timeout` in all.
fn direct(addrs: &ResolvedSocketAddrs, timeout: Duration) -> Result<TcpStream, Error> {
    let deadline = std::time::Instant::now() + timeout;
    let mut last = None;
    for addr in addrs.iter() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match super::connect(addr, left) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => connect_error(e),
        None => Error::HostNotFound,
    })
}

fn connect_error(e: io::Error) -> Error {
    if matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    ) {
        Error::Timeout(Timeout::Connect)
    } else {
        Error::Io(e)
    }
}

/// The host (without IPv6 brackets) and port of `uri`.
fn host_port(uri: &Uri) -> Result<(String, u16), Error> {
    let host = uri.host().ok_or(Error::HostNotFound)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = match uri.port_u16() {
        Some(p) => p,
        None if uri.scheme_str() == Some("https") => 443,
        None => 80,
    };
    Ok((host.to_string(), port))
}

/// ureq's resolver, except behind a proxy: no lookup (the proxy is given
/// the name), so no DNS query leaves the host for an HTTP URL.
struct RouteResolver(DefaultResolver);

impl fmt::Debug for RouteResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tget::dial::RouteResolver")
    }
}

impl Resolver for RouteResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, Error> {
        if super::proxied() {
            return Ok(self.empty());
        }
        self.0.resolve(uri, config, timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_ports_of_urls() {
        let u: Uri = "http://[::1]:8080/a".parse().unwrap();
        assert_eq!(host_port(&u).unwrap(), ("::1".to_string(), 8080));
        let u: Uri = "https://tr.example/announce".parse().unwrap();
        assert_eq!(host_port(&u).unwrap(), ("tr.example".to_string(), 443));
        let u: Uri = "http://127.0.0.1/x".parse().unwrap();
        assert_eq!(host_port(&u).unwrap(), ("127.0.0.1".to_string(), 80));
    }
}

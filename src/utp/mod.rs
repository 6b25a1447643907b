//! uTP (BEP 29): BitTorrent's reliable stream over UDP, with LEDBAT
//! congestion control so a download yields to the user's other traffic.
//!
//! - `packet.rs`: the header and the selective-ack extension, both ways;
//!   decoding never panics.
//! - `conn.rs`: one connection as a state machine with no socket (packets
//!   and time in, packets and bytes out), unit-tested alone.
//! - `config.rs`: the connection's knobs, constants, `Outbox` and `Stats`.
//! - `endpoint.rs`: one UDP socket and its thread, many connections;
//!   `UtpStream` is a connection as a blocking [`Transport`].
//!
//! [`dial`] is what the peer dial calls: it connects from a process-wide
//! endpoint (the session's, once it [`install`]s one bound to its port;
//! otherwise one started on first use on an ephemeral port, which accepts
//! nothing).

pub mod config;
pub mod conn;
pub mod endpoint;
pub mod packet;

pub use endpoint::{Endpoint, UtpStream};

use crate::transport::Transport;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Whether outgoing connections fall back to uTP when TCP fails: off in
/// the library until the binary turns it on (unless `--no-utp`).
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns the uTP fallback of `transport::dial` on or off, for the process.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether `transport::dial` falls back to uTP.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The endpoints `dial` uses: [IPv4, IPv6].
static SHARED: Mutex<[Option<Endpoint>; 2]> = Mutex::new([None, None]);

/// Makes `ep` the endpoint `dial` uses for its address family (the
/// session's endpoint, bound to the listen port, so peers see one port).
pub fn install(ep: Endpoint) -> io::Result<()> {
    let v6 = ep.local_addr()?.is_ipv6();
    SHARED.lock().unwrap_or_else(|e| e.into_inner())[usize::from(v6)] = Some(ep);
    Ok(())
}

fn shared(v6: bool) -> io::Result<Endpoint> {
    let mut eps = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(ep) = &eps[usize::from(v6)] {
        return Ok(ep.clone());
    }
    // Behind --proxy nothing may leave but through the proxy: no uTP.
    let Some(local) = crate::dial::udp_local(v6, 0) else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "uTP is off behind a proxy",
        ));
    };
    let ep = Endpoint::bind(local)?;
    ep.set_accepting(false);
    eps[usize::from(v6)] = Some(ep.clone());
    Ok(ep)
}

/// A uTP connection to `addr`, made within `limit`, as a transport.
pub fn dial(addr: SocketAddr, limit: Duration) -> io::Result<Box<dyn Transport>> {
    let ep = shared(addr.is_ipv6())?;
    Ok(Box::new(ep.connect(addr, limit)?))
}

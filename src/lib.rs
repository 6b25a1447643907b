//! tget: a BitTorrent client built on blocking sockets and plain OS threads.
//!
//! The binary in `main.rs` is glue; everything it does is here, one module
//! per part of the protocol. `docs/ARCHITECTURE.md` has the map.
#![deny(unsafe_code)]

pub mod addr;
pub mod ban;
pub mod bencode;
pub mod blocklist;
pub mod choker;
pub mod coordinator;
pub mod create;
pub mod demo;
pub mod dht;
pub mod dial;
pub mod extension;
pub mod fast;
pub mod hub;
pub mod json;
pub mod layout;
pub mod listen;
pub mod listener;
pub mod lock;
pub mod magnet;
pub mod messages;
pub mod metadata;
pub mod metainfo;
pub mod mse;
pub mod ownip;
pub mod peer;
pub mod pex;
pub mod picker;
pub mod ratelimit;
pub mod report;
pub mod resume;
pub mod rng;
pub mod select;
pub mod session;
pub mod socks;
pub mod source;
pub mod space;
pub mod statedir;
pub mod storage;
pub mod tracker;
pub mod transport;
pub mod units;
pub mod utp;
pub mod verify;
pub mod webseed;
pub mod wire;

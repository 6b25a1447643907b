//! tget: a BitTorrent client built on blocking sockets and plain OS threads.
#![deny(unsafe_code)]

pub mod tracker;

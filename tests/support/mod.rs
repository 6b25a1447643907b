#![allow(dead_code)]
pub mod hostile;
pub mod http;
pub mod socks;
pub mod swarm;
pub mod tracker;

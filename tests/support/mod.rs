#![allow(dead_code)]
pub mod hostile;
pub mod swarm;
pub mod tracker;

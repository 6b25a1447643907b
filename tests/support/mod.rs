#![allow(dead_code)]
pub mod swarm;
pub mod tracker;

#![allow(dead_code)]
pub mod tracker;

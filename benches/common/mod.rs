//! The test suite's local network peers, shared with the benchmarks.

#![allow(dead_code)]

use std::path::PathBuf;

pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures")).join(rel)
}

#[path = "../../tests/common/pds/mod.rs"]
pub mod pds;

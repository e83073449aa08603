//! Fuzz target `mfs_msg`: the properties are in `src/checks.rs` (`checks::mfs_msg`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mosix_fuzz::checks::mfs_msg(data));

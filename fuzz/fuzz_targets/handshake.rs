//! Fuzz target `handshake`: the properties are in `src/checks.rs` (`checks::handshake`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mosix_fuzz::checks::handshake(data));

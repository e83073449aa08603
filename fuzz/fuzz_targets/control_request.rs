//! Fuzz target `control_request`: the properties are in `src/checks.rs` (`checks::control_request`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mosix_fuzz::checks::control_request(data));

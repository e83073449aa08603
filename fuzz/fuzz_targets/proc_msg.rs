//! Fuzz target `proc_msg`: the properties are in `src/checks.rs` (`checks::proc_msg`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mosix_fuzz::checks::proc_msg(data));

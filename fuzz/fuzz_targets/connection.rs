//! Fuzz target `connection`: the server's connection loop over a socket pair, with probe services.
//! The body and its properties are `shimgate::fuzz::connection`, shared with the CI test
//! `tests/fuzz_corpus.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shimgate::fuzz::connection(data));

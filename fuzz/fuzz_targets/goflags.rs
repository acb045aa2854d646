//! Fuzz target `goflags`: the Go flag parser and the typed v1/v2 command lines. The body and its
//! properties are `shimgate::fuzz::goflags`, shared with the CI test `tests/fuzz_corpus.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shimgate::fuzz::goflags(data));

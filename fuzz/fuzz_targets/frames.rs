//! Fuzz target `frames`: ttrpc frame decoding of the server (header, length limit, stream ids,
//! envelope). The body and its properties are `shimgate::fuzz::frames`, shared with the CI test
//! `tests/fuzz_corpus.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shimgate::fuzz::frames(data));

//! Fuzz target `requests`: generated payload decoding of every task v2/v3 and shim v1 method, then
//! the adapters' translation into core values. The body and its properties are
//! `shimgate::fuzz::requests`, shared with the CI test `tests/fuzz_corpus.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shimgate::fuzz::requests(data));

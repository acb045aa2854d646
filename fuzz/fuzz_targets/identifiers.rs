//! Fuzz target `identifiers`: container and exec id validation. The body and its properties are
//! `shimgate::fuzz::identifiers`, shared with the CI test `tests/fuzz_corpus.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shimgate::fuzz::identifiers(data));

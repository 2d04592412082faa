//! Replays the fuzz corpus (`fuzz/corpus/reader/`) through the fuzz target's function, so every
//! input the fuzzer ever kept, crashers included once fixed, stays a regression test in CI.

#[test]
fn fuzz_corpus_replays_without_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/reader");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        // A panic fails the test and names no input, so say which one is running.
        let result = std::panic::catch_unwind(|| kvferry::format::exercise::read_everything(&data));
        assert!(result.is_ok(), "reader panicked on {}", path.display());
        n += 1;
    }
    assert!(n >= 20, "the corpus has only {n} inputs");
}

/// Every prefix of a valid file (a copy cut at any byte) is handled without a panic.
#[test]
fn every_prefix_of_a_file_is_handled() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/good/parts/src0-db0.0000.kvf");
    let data = std::fs::read(path).unwrap();
    for cut in 0..data.len() {
        kvferry::format::exercise::read_everything(&data[..cut]);
    }
}

//! Fuzz target: any bytes, read as a shard file through every reader path, must not panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kvferry::format::exercise::read_everything(data);
});

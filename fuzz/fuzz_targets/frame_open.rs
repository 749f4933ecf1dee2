#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sealcast_fuzz::frame_open(data));

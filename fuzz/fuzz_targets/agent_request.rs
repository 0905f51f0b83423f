#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| failback_fuzz::agent_request(data));

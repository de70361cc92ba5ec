//! The streaming usage scanner: any chunking of any body, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llmproxy::providers::usage::UsageScanner;

fuzz_target!(|data: &[u8]| {
    let split = data.first().copied().unwrap_or(1).max(1) as usize;
    let mut s = UsageScanner::default();
    for chunk in data.chunks(split) {
        s.feed(chunk);
    }
    let _ = s.usage();
});

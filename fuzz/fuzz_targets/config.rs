//! The config loader: any text yields a config or a list of errors, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llmproxy::config::{self, Env};

struct FuzzEnv;
impl Env for FuzzEnv {
    fn var(&self, name: &str) -> Option<String> {
        (name.len() % 2 == 0).then(|| format!("value-of-{name}"))
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match config::parse(text, &FuzzEnv) {
            Ok(cfg) => {
                let _ = cfg.summary();
            }
            Err(errs) => assert!(!errs.0.is_empty()),
        }
    }
});

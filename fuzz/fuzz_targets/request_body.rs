//! The request-body parser: never panics; a body it accepts is re-serialised as JSON the parser accepts
//! again, with the new model and without the gateway's control fields; and when the original is
//! valid for serde_json's `Value` (which refuses, e.g., numbers beyond f64), so is the rewrite.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llmproxy::body::{ModelRequest, CONTROL_FIELDS};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = ModelRequest::parse(data) {
        let out = req.body.with_model("fuzz-model", data.len());
        let again = ModelRequest::parse(&out).expect("the rewritten body parses again");
        assert_eq!(again.model, "fuzz-model");
        assert!(!again.has_controls);
        if serde_json::from_slice::<serde_json::Value>(data).is_ok() {
            let v: serde_json::Value = serde_json::from_slice(&out).expect("rewrite keeps JSON valid");
            assert_eq!(v["model"], "fuzz-model");
            for f in CONTROL_FIELDS {
                assert!(v.get(f).is_none());
            }
        }
    }
});

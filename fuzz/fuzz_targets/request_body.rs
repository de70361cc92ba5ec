//! The request-body parser: never panics, and a body it accepts is re-serialised as valid JSON with the
//! new model and without the gateway's control fields.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llmproxy::proxy::body::{ModelRequest, CONTROL_FIELDS};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = ModelRequest::parse(data) {
        let out = req.body.with_model("fuzz-model", data.len());
        let v: serde_json::Value = serde_json::from_slice(&out).expect("re-serialised body is JSON");
        assert_eq!(v["model"], "fuzz-model");
        for f in CONTROL_FIELDS {
            assert!(v.get(f).is_none());
        }
    }
});

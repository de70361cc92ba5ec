//! `systemd-analyze verify` accepts the unit (with ExecStart pointing at this build's binary).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test stops at the first surprise and prints what it measured"
)]
mod common;
use common::*;

#[test]
fn unit_verifies() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/llmproxy.service"
    ))
    .unwrap();
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    assert!(unit.contains("Type=notify"));
    let dir = tmp_path("unit");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("llmproxy.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/llmproxy", LLMPROXY)).unwrap();
    let out = match std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!("systemd-analyze is needed for this test (apt-get install systemd): {e}"),
    };
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

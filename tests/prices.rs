//! `llmproxy prices [MODEL]`: the built-in price table from the real binary.

use std::process::{Command, Output};

fn prices(args: &[&str]) -> Output {
    match Command::new(env!("CARGO_BIN_EXE_llmproxy"))
        .arg("prices")
        .args(args)
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!("running llmproxy prices: {e}"),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The data rows of the listing (after the `#` note and the column header), split into columns.
fn rows(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .filter(|l| !l.starts_with('#'))
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn lists_the_whole_table() {
    let out = prices(&[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("# USD per million tokens"), "{stdout}");
    let header = stdout.lines().nth(1).unwrap_or_default();
    for col in [
        "PROVIDER",
        "MODEL",
        "INPUT",
        "CACHED",
        "CACHE WRITE",
        "OUTPUT",
        "BATCH",
    ] {
        assert!(header.contains(col), "{header}");
    }
    let rows = rows(&stdout);
    assert!(rows.len() > 60, "{} rows", rows.len());
    for provider in [
        "openai",
        "azure",
        "anthropic",
        "bedrock",
        "gemini",
        "vertex",
    ] {
        assert!(rows.iter().any(|r| r[0] == provider), "{provider}");
    }
    let gpt4o = rows
        .iter()
        .find(|r| r[0] == "openai" && r[1] == "gpt-4o")
        .map(|r| r[2..7].join(" "));
    assert_eq!(gpt4o.as_deref(), Some("$2.50 $1.25 $2.50 $10.00 -50%"));
    let sonnet = rows
        .iter()
        .find(|r| r[0] == "anthropic" && r[1] == "claude-sonnet-4-5-20250929")
        .map(|r| r[2..6].join(" "));
    assert_eq!(sonnet.as_deref(), Some("$3.00 $0.30 $3.75 $15.00"));
}

#[test]
fn lists_the_rows_for_one_model() {
    let out = prices(&["gpt-4o-mini"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = rows(&text(&out.stdout));
    let ids: Vec<String> = listed
        .iter()
        .map(|r| format!("{} {}", r[0], r[1]))
        .collect();
    assert_eq!(ids, ["openai gpt-4o-mini", "azure gpt-4o-mini"]);
    assert_eq!(listed[0][2..6].join(" "), "$0.15 $0.075 $0.15 $0.60");

    // A Bedrock cross-region profile id finds the model's row.
    let out = prices(&["us.anthropic.claude-3-7-sonnet-20250219-v1:0"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = rows(&text(&out.stdout));
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0][1], "anthropic.claude-3-7-sonnet-20250219-v1:0");

    // Part of an id lists every row containing it.
    let out = prices(&["nova"]);
    assert!(out.status.success());
    assert_eq!(rows(&text(&out.stdout)).len(), 3);
}

#[test]
fn an_unknown_model_fails_with_a_message() {
    let out = prices(&["no-such-model-xyz"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("no built-in price for `no-such-model-xyz`")
            && stderr.contains("models[].pricing"),
        "{stderr}"
    );
}

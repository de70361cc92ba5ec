//! Conformance (issue 8): the official SDKs, unchanged but for their base URL, through llmproxy in front
//! of each provider's mock.
//!
//! * OpenAI Python SDK (`tests/sdk/openai_sdk.py`) and OpenAI Node SDK (`tests/sdk/openai_sdk.mjs`, the
//!   same cases, arguments and output) against `provider: openai`, `provider: azure` and `provider:
//!   anthropic` upstreams (clients speak OpenAI chat; the gateway translates), and over a TLS listener.
//! * Anthropic Python SDK (`tests/sdk/anthropic_sdk.py`) against `POST /v1/messages` (passthrough to
//!   `provider: anthropic`).
//! * Both OpenAI SDKs and the Anthropic SDK against `provider: gemini`, `provider: vertex` (OAuth2
//!   tokens from a service-account key whose token URI is the mock's) and `provider:
//!   text_generation` (a TGI server: chat and completions only, answers of generated tokens).
//! * Both against `provider: bedrock` (the mock verifying every SigV4 signature): OpenAI chat, streams,
//!   tools and Cohere embeddings translated to Converse / InvokeModel, Anthropic clients through the chat
//!   translation.
//!
//! Each run prints one line `sdk matrix: provider=... client=... case=pass|skip(why) ...` (see it with
//! `cargo test --test sdk -- --nocapture`): `skip(n/a)` = the provider has no such API, `skip(mock)` =
//! the mock upstream cannot answer it yet ([`MOCK_GAPS`]). Every case not skipped must pass.
//!
//! `scripts/install-deps --test` installs the SDKs: a venv in `target/sdk-venv` (or the python named
//! by `LLMPROXY_SDK_PYTHON`) and `openai` in `target/sdk-node/node_modules` (or
//! `LLMPROXY_SDK_NODE_MODULES`; `node` from PATH or `LLMPROXY_SDK_NODE`). Without them these tests fail
//! and say so; `LLMPROXY_SKIP_SDK=1` skips them knowingly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test stops at the first surprise and prints what it measured"
)]
mod common;
use common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// Every client call uses the gateway's master key; the wrong-key case must get 401.
const MASTER: &str = "sk-master-sdk-0123456789";
const MODEL: &str = "gpt-4o-mini";
const EMBED_MODEL: &str = "text-embedding-3-small";
const CLAUDE: &str = "claude-sonnet";
const INSTALL: &str = "run `scripts/install-deps --test` (CI's scripts/test does)";

/// The cases both OpenAI SDK scripts run, in order (each script checks its own; this keeps them twins).
const OPENAI_CASES: &[&str] = &[
    "chat",
    "stream",
    "tools",
    "tools_stream",
    "tool_result",
    "embeddings",
    "embeddings_base64",
    "responses",
    "responses_stream",
    "models_list",
    "models_retrieve",
    "error_401",
    "error_404",
    "error_429",
];

/// Cases the OpenAI-dialect mock cannot answer yet, with what it lacks.
const MOCK_GAPS: &[(&str, &str)] = &[];
/// What Anthropic does not have (no embeddings API; the Responses API is OpenAI's and Azure's).
const ANTHROPIC_NA: &[(&str, &str)] = &[
    ("embeddings", "n/a"),
    ("embeddings_base64", "n/a"),
    ("responses", "n/a"),
    ("responses_stream", "n/a"),
];

/// What Gemini and Vertex AI do not have (the Responses API is OpenAI's and Azure's).
const GOOGLE_NA: &[(&str, &str)] = &[("responses", "n/a"), ("responses_stream", "n/a")];
/// What a text-generation server does not have: tools, embeddings, the Responses API.
const TGI_NA: &[(&str, &str)] = &[
    ("tools", "n/a"),
    ("tools_stream", "n/a"),
    ("tool_result", "n/a"),
    ("embeddings", "n/a"),
    ("embeddings_base64", "n/a"),
    ("responses", "n/a"),
    ("responses_stream", "n/a"),
];
/// The same cases of the Anthropic SDK script.
const TGI_ANTHROPIC_NA: &[(&str, &str)] = &[
    ("tools", "n/a"),
    ("tool_result", "n/a"),
    ("tools_stream", "n/a"),
];
/// A text-generation server's whole answer: the generated tokens.
const TGI_CONTENT: &str = "tok0 tok1 tok2 tok3 tok4 ";
const GEMINI_KEY: &str = "gk-sdk-upstream-key";
const SA_EMAIL: &str = "sdk@mock-project.iam.gserviceaccount.com";
const PUBLISHER: &str = "/v1/projects/mock-project/locations/us-central1/publishers/google";
/// What Bedrock does not have here (the Responses API is OpenAI's and Azure's).
const BEDROCK_NA: &[(&str, &str)] = &[("responses", "n/a"), ("responses_stream", "n/a")];
/// The SigV4 keys the mock checks for `provider: bedrock`.
const AWS_KEY_ID: &str = "AKIDSDKCONFORMANCE";
const AWS_SECRET: &str = "sdk-conformance-secret-key-0123456789";

#[derive(Clone, Copy, PartialEq)]
enum Provider {
    OpenAi,
    Azure,
    Anthropic,
    Gemini,
    Vertex,
    TextGeneration,
    Bedrock,
}

impl Provider {
    fn name(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Azure => "azure",
            Provider::Anthropic => "anthropic",
            Provider::Gemini => "gemini",
            Provider::Vertex => "vertex",
            Provider::TextGeneration => "text_generation",
            Provider::Bedrock => "bedrock",
        }
    }

    /// The provider's mock (Bedrock's verifies SigV4).
    fn mock(self) -> Mock {
        match self {
            Provider::Bedrock => Mock::start_with(
                "M",
                &[
                    "--aws-access-key-id",
                    AWS_KEY_ID,
                    "--aws-secret-access-key",
                    AWS_SECRET,
                ],
            ),
            _ => Mock::start("M"),
        }
    }

    /// The whole chat answer's text, when the provider's mock dialect says something else.
    fn content(self) -> Option<&'static str> {
        (self == Provider::TextGeneration).then_some(TGI_CONTENT)
    }

    /// The chat model clients ask for.
    fn model(self) -> &'static str {
        match self {
            Provider::Anthropic => CLAUDE,
            _ => MODEL,
        }
    }

    /// Cases the OpenAI SDK scripts skip for this provider, with why.
    fn skips(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Provider::Anthropic => ANTHROPIC_NA,
            Provider::Gemini | Provider::Vertex => GOOGLE_NA,
            Provider::TextGeneration => TGI_NA,
            Provider::Bedrock => BEDROCK_NA,
            _ => MOCK_GAPS,
        }
    }

    /// The upstream entry (named `up`) on the mock.
    fn upstream(self, mock: &Mock) -> String {
        let hc = "{interval: 200ms, timeout: 1s, unhealthy_after: 1, healthy_after: 1}";
        match self {
            Provider::OpenAi => openai_upstream("up", mock),
            Provider::Azure => format!(
                "  - {{name: up, provider: azure, url: \"{}\", api_version: \"2024-10-21\", auth: {{type: header, name: api-key, value: az-secret-key}}, health_check: {hc}}}\n",
                mock.base()
            ),
            Provider::Anthropic => format!(
                "  - {{name: up, provider: anthropic, url: \"{}\", auth: {{type: header, name: x-api-key, value: sk-ant-upstream}}, health_check: {hc}}}\n",
                mock.url()
            ),
            Provider::Gemini => format!(
                "  - {{name: up, provider: gemini, url: \"{}/v1beta\", auth: {{type: header, name: x-goog-api-key, value: {GEMINI_KEY}}}, health_check: {hc}}}\n",
                mock.base()
            ),
            Provider::Vertex => {
                let key = tmp_path("sdk-sa.json");
                std::fs::write(
                    &key,
                    mock_upstream::gcp_test_key::service_account_json(
                        SA_EMAIL,
                        &format!("{}/token", mock.base()),
                    ),
                )
                .unwrap();
                format!(
                    "  - {{name: up, provider: vertex, url: \"{}{PUBLISHER}\", auth: {{type: gcp, credentials_file: \"{}\"}}}}\n",
                    mock.base(),
                    key.display()
                )
            }
            Provider::TextGeneration => format!(
                "  - {{name: up, provider: text_generation, url: \"{}\", auth: {{type: none}}, health_check: {hc}}}\n",
                mock.base()
            ),
            Provider::Bedrock => format!(
                "  - {{name: up, provider: bedrock, url: \"{}\", auth: {{type: aws_sigv4, region: us-east-1, access_key_id: {AWS_KEY_ID}, secret_access_key: {AWS_SECRET}}}, health_check: {hc}}}\n",
                mock.base()
            ),
        }
    }

    fn models(self) -> &'static [&'static str] {
        match self {
            Provider::Anthropic => &[CLAUDE],
            Provider::TextGeneration => &[MODEL],
            _ => &[MODEL, EMBED_MODEL],
        }
    }

    fn model_entries(self) -> String {
        match self {
            Provider::Anthropic => format!(
                "  - {{name: {CLAUDE}, deployments: [{{upstream: up, model: claude-sonnet-4-5}}]}}\n"
            ),
            // The SDK scripts expect the mock's 8-dimension vectors.
            Provider::Gemini | Provider::Vertex => format!(
                "  - {{name: {MODEL}, deployments: [{{upstream: up, model: gemini-2.5-flash}}]}}\n  - {{name: {EMBED_MODEL}, deployments: [{{upstream: up, model: text-embedding-004, params: {{dimensions: 8}}}}]}}\n"
            ),
            Provider::TextGeneration => format!(
                "  - {{name: {MODEL}, deployments: [{{upstream: up, model: tgi-model}}]}}\n"
            ),
            Provider::Bedrock => format!(
                "  - {{name: {MODEL}, deployments: [{{upstream: up, model: \"anthropic.claude-3-haiku-20240307-v1:0\"}}]}}\n  - {{name: {EMBED_MODEL}, deployments: [{{upstream: up, model: cohere.embed-english-v3}}]}}\n"
            ),
            _ => format!(
                "  - {{name: {MODEL}, deployments: [{{upstream: up, model: mini-dep}}]}}\n  - {{name: {EMBED_MODEL}, deployments: [{{upstream: up, model: embed-dep}}]}}\n"
            ),
        }
    }

    /// Paths the mock must have been sent (POST) by the runs that do not skip them.
    fn upstream_paths(self) -> &'static [&'static str] {
        match self {
            Provider::OpenAi => &["/v1/chat/completions", "/v1/embeddings", "/v1/responses"],
            Provider::Azure => &[
                "/openai/deployments/mini-dep/chat/completions",
                "/openai/deployments/embed-dep/embeddings",
                "/openai/v1/responses",
            ],
            Provider::Anthropic => &["/v1/messages"],
            Provider::Gemini => &[
                "/v1beta/models/gemini-2.5-flash:generateContent",
                "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
                "/v1beta/models/text-embedding-004:batchEmbedContents",
            ],
            Provider::Vertex => &[
                "/v1/projects/mock-project/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent",
                "/v1/projects/mock-project/locations/us-central1/publishers/google/models/gemini-2.5-flash:streamGenerateContent",
                "/v1/projects/mock-project/locations/us-central1/publishers/google/models/text-embedding-004:predict",
                "/token",
            ],
            Provider::TextGeneration => &["/generate", "/generate_stream"],
            Provider::Bedrock => &[
                "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
                "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream",
                "/model/cohere.embed-english-v3/invoke",
            ],
        }
    }

    /// The upstream saw its own credential, never a client's.
    fn assert_upstream_auth(self, rec: &Value) {
        let h = &rec["headers"];
        match self {
            Provider::OpenAi => assert_eq!(h["authorization"], "Bearer sk-up-up", "{rec}"),
            Provider::Azure => {
                assert_eq!(h["api-key"], "az-secret-key", "{rec}");
                assert!(h.get("authorization").is_none(), "{rec}");
            }
            Provider::Anthropic => {
                assert_eq!(h["x-api-key"], "sk-ant-upstream", "{rec}");
                assert!(h.get("authorization").is_none(), "{rec}");
            }
            Provider::Gemini => {
                assert_eq!(h["x-goog-api-key"], GEMINI_KEY, "{rec}");
                assert!(h.get("authorization").is_none(), "{rec}");
            }
            // The token grant itself, then the token it gave.
            Provider::Vertex if rec["path"] == "/token" => assert_eq!(rec["auth"]["ok"], true),
            Provider::Vertex => {
                assert!(
                    h["authorization"]
                        .as_str()
                        .unwrap()
                        .starts_with("Bearer ya29.mock."),
                    "{rec}"
                );
                assert_eq!(rec["auth"]["issued_by_mock"], true, "{rec}");
            }
            Provider::TextGeneration => assert!(h.get("authorization").is_none(), "{rec}"),
            Provider::Bedrock => {
                let auth = h["authorization"].as_str().unwrap_or_default();
                assert!(
                    auth.starts_with(&format!("AWS4-HMAC-SHA256 Credential={AWS_KEY_ID}/")),
                    "{rec}"
                );
                assert_eq!(
                    rec["auth"]["ok"], true,
                    "the mock refused the signature: {rec}"
                );
            }
        }
    }

    fn config(self, mock: &Mock) -> String {
        config(&format!(
            "state: {{database: \"sqlite://{}\"}}\nupstreams:\n{}models:\n{}",
            tmp_path("sdk-keys.db").display(),
            self.upstream(mock),
            self.model_entries()
        ))
        .replace(
            "  threads: 2\n",
            &format!("  threads: 2\n  master_key: \"{MASTER}\"\n"),
        )
    }
}

#[derive(Clone, Copy)]
enum Sdk {
    OpenAiPython,
    OpenAiNode,
    AnthropicPython,
}

/// Where the SDKs are, checked before a run: a missing one fails the test with what to do.
struct Tools {
    python: PathBuf,
    node: String,
    node_modules: PathBuf,
}

fn from_manifest(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// `None` when `LLMPROXY_SKIP_SDK` is set (a knowing skip); otherwise the SDKs `sdk` needs, or a
/// panic saying how to install them.
async fn tools(sdk: Sdk) -> Option<Tools> {
    if std::env::var_os("LLMPROXY_SKIP_SDK").is_some() {
        eprintln!("LLMPROXY_SKIP_SDK set: skipping the official SDK conformance test");
        return None;
    }
    let t = Tools {
        python: std::env::var_os("LLMPROXY_SDK_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| from_manifest("target/sdk-venv/bin/python")),
        node: std::env::var("LLMPROXY_SDK_NODE").unwrap_or_else(|_| "node".into()),
        node_modules: std::env::var_os("LLMPROXY_SDK_NODE_MODULES")
            .map(PathBuf::from)
            .unwrap_or_else(|| from_manifest("target/sdk-node/node_modules")),
    };
    match sdk {
        Sdk::OpenAiPython | Sdk::AnthropicPython => {
            let module = match sdk {
                Sdk::AnthropicPython => "anthropic",
                _ => "openai",
            };
            let out = tokio::process::Command::new(&t.python)
                .args(["-c", &format!("import {module}")])
                .output()
                .await;
            let ok = out.as_ref().is_ok_and(|o| o.status.success());
            assert!(
                ok,
                "the {module} Python SDK is not installed ({} -c 'import {module}': {}): {INSTALL}",
                t.python.display(),
                match &out {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                    Err(e) => e.to_string(),
                }
            );
        }
        Sdk::OpenAiNode => {
            let out = tokio::process::Command::new(&t.node)
                .arg("--version")
                .output()
                .await;
            assert!(
                out.as_ref().is_ok_and(|o| o.status.success()),
                "Node.js is not installed (`{} --version`: {:?}): {INSTALL}",
                t.node,
                out.map(|o| o.status)
            );
            let pkg = t.node_modules.join("openai/package.json");
            assert!(
                pkg.exists(),
                "the OpenAI Node SDK is not installed ({} is missing): {INSTALL}",
                pkg.display()
            );
        }
    }
    Some(t)
}

/// One script run's report: the SDK and its version, each case's result in the script's order, and
/// what each passing case saw.
struct Report {
    client: String,
    cases: Vec<(String, String)>,
    values: Value,
}

/// Runs an SDK script with `args` (after the script's path), the master key, and `skips`; prints the
/// matrix line; asserts every case not skipped passed (and the skipped ones were skipped).
async fn run(
    t: &Tools,
    sdk: Sdk,
    provider: &str,
    args: &[&str],
    skips: &[(&str, &str)],
    ca_file: Option<&str>,
    content: Option<&str>,
) -> Report {
    let (program, script) = match sdk {
        Sdk::OpenAiPython => (t.python.as_os_str(), "tests/sdk/openai_sdk.py"),
        Sdk::AnthropicPython => (t.python.as_os_str(), "tests/sdk/anthropic_sdk.py"),
        Sdk::OpenAiNode => (std::ffi::OsStr::new(&t.node), "tests/sdk/openai_sdk.mjs"),
    };
    let skip_list: Vec<&str> = skips.iter().map(|(c, _)| *c).collect();
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg(from_manifest(script))
        .args(args)
        .args(ca_file)
        .env("LLMPROXY_SDK_KEY", MASTER)
        .env("LLMPROXY_SDK_SKIP", skip_list.join(","))
        // Bedrock's Cohere model answers 1024-value vectors (the OpenAI mock: its default 8).
        .env(
            "LLMPROXY_SDK_EMBED_DIM",
            if provider == "bedrock" { "1024" } else { "8" },
        )
        .env("LLMPROXY_SDK_NODE_MODULES", &t.node_modules)
        .kill_on_drop(true);
    if let Some(c) = content {
        cmd.env("LLMPROXY_SDK_CONTENT", c);
    }
    if let (Sdk::OpenAiNode, Some(ca)) = (sdk, ca_file) {
        cmd.env("NODE_EXTRA_CA_CERTS", ca);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the SDK script did not finish within 120 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let v: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "{script} printed no report ({}):\n{stdout}\n{stderr}",
                out.status
            )
        });
    let cases: Vec<(String, String)> = v["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let c = c.as_str().unwrap().to_string();
            let r = v["cases"][&c].as_str().unwrap_or("missing").to_string();
            (c, r)
        })
        .collect();
    if !matches!(sdk, Sdk::AnthropicPython) {
        let order: Vec<&str> = cases.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(
            order, OPENAI_CASES,
            "{script}: the OpenAI SDK scripts' cases"
        );
    }
    let report = Report {
        client: format!(
            "{}@{}",
            v["sdk"].as_str().unwrap(),
            v["version"].as_str().unwrap()
        ),
        cases,
        values: v["values"].clone(),
    };
    let matrix: Vec<String> = report
        .cases
        .iter()
        .map(|(case, r)| match skips.iter().find(|(c, _)| c == case) {
            Some((_, why)) if r == "skip" => format!("{case}=skip({why})"),
            _ if r.starts_with("fail") => format!("{case}=FAIL"),
            _ => format!("{case}={r}"),
        })
        .collect();
    println!(
        "sdk matrix: provider={provider} client={} {}",
        report.client,
        matrix.join(" ")
    );
    let wrong: Vec<String> = report
        .cases
        .iter()
        .filter(|(case, r)| {
            let want = if skip_list.contains(&case.as_str()) {
                "skip"
            } else {
                "pass"
            };
            r != want
        })
        .map(|(case, r)| format!("  {case}: {r}"))
        .collect();
    assert!(
        wrong.is_empty() && out.status.success(),
        "{} against provider {provider} ({}):\n{}\nstderr:\n{stderr}",
        report.client,
        out.status,
        wrong.join("\n")
    );
    report
}

/// The OpenAI SDK (`sdk`) through the gateway in front of `provider`'s mock.
async fn openai_sdk_against(sdk: Sdk, provider: Provider) {
    let Some(t) = tools(sdk).await else {
        return;
    };
    let mock = provider.mock();
    let gw = gateway(&provider.config(&mock)).await;
    let base = gw.url("/v1");
    let report = run(
        &t,
        sdk,
        provider.name(),
        &[&base, provider.model(), EMBED_MODEL],
        provider.skips(),
        None,
        provider.content(),
    )
    .await;
    assert_eq!(
        report.values["models_list"]["ids"],
        serde_json::json!(provider.models())
    );
    assert_upstream_saw(&mock, provider).await;
}

/// The mock was sent each of `provider`'s paths, always with the upstream's credential and never
/// with a client's key.
async fn assert_upstream_saw(mock: &Mock, provider: Provider) {
    let seen = mock.requests().await;
    let text = serde_json::to_string(&seen).unwrap();
    assert!(
        !text.contains(MASTER),
        "the client's key reached the upstream"
    );
    assert!(
        !text.contains("sk-wrong-key"),
        "the client's key reached the upstream"
    );
    let posts: Vec<&Value> = seen.iter().filter(|r| r["method"] == "POST").collect();
    for path in provider.upstream_paths() {
        assert!(
            posts.iter().any(|r| r["path"] == *path),
            "no POST {path} reached the {} mock",
            provider.name()
        );
    }
    for rec in posts {
        provider.assert_upstream_auth(rec);
    }
}

#[tokio::test]
async fn openai_upstream_openai_python_sdk() {
    openai_sdk_against(Sdk::OpenAiPython, Provider::OpenAi).await;
}

#[tokio::test]
async fn openai_upstream_openai_node_sdk() {
    openai_sdk_against(Sdk::OpenAiNode, Provider::OpenAi).await;
}

#[tokio::test]
async fn azure_upstream_openai_python_sdk() {
    openai_sdk_against(Sdk::OpenAiPython, Provider::Azure).await;
}

#[tokio::test]
async fn azure_upstream_openai_node_sdk() {
    openai_sdk_against(Sdk::OpenAiNode, Provider::Azure).await;
}

/// Anthropic upstream, OpenAI-format clients (issue 8 item 2: the gateway translates chat, streams,
/// tools and errors to and from Anthropic Messages).
#[tokio::test]
async fn anthropic_upstream_openai_python_sdk() {
    openai_sdk_against(Sdk::OpenAiPython, Provider::Anthropic).await;
}

/// As [`anthropic_upstream_openai_python_sdk`], with the Node SDK.
#[tokio::test]
async fn anthropic_upstream_openai_node_sdk() {
    openai_sdk_against(Sdk::OpenAiNode, Provider::Anthropic).await;
}

/// The Anthropic Python SDK on the gateway's `POST /v1/messages` (issue 8 item 3: passthrough to
/// `provider: anthropic` deployments, with routing and keys): messages with a system prompt, tool
/// use and a tool result, the stream helper and raw events, and 401 / 404 / 429 as the SDK's errors.
#[tokio::test]
async fn anthropic_messages_endpoint_anthropic_python_sdk() {
    let Some(t) = tools(Sdk::AnthropicPython).await else {
        return;
    };
    let mock = Mock::start("M");
    let gw = gateway(&Provider::Anthropic.config(&mock)).await;
    let base = gw.url("");
    run(
        &t,
        Sdk::AnthropicPython,
        "anthropic",
        &[&base, CLAUDE],
        &[],
        None,
        None,
    )
    .await;
    assert_upstream_saw(&mock, Provider::Anthropic).await;
    let messages = mock.requests_to("/v1/messages").await;
    assert!(
        messages.iter().all(|r| r["model"] == "claude-sonnet-4-5"),
        "the deployment's model name reaches the upstream: {messages:?}"
    );
}

/// The Anthropic SDK on `/v1/messages` for a model served by OpenAI: translated to a chat
/// completion and back (messages, tools, streams, errors in Anthropic's shape).
#[tokio::test]
async fn openai_upstream_anthropic_python_sdk() {
    let Some(t) = tools(Sdk::AnthropicPython).await else {
        return;
    };
    let mock = Mock::start("M");
    let gw = gateway(&Provider::OpenAi.config(&mock)).await;
    let base = gw.url("");
    run(
        &t,
        Sdk::AnthropicPython,
        "openai",
        &[&base, MODEL],
        &[],
        None,
        None,
    )
    .await;
    let seen = mock.requests().await;
    let text = serde_json::to_string(&seen).unwrap();
    assert!(
        !text.contains(MASTER),
        "the client's key reached the upstream"
    );
    let chats: Vec<&Value> = seen
        .iter()
        .filter(|r| r["method"] == "POST" && r["path"] == "/v1/chat/completions")
        .collect();
    assert!(chats.len() >= 5, "{seen:?}");
    assert!(seen.iter().all(|r| r["path"] != "/v1/messages"));
    for rec in chats {
        Provider::OpenAi.assert_upstream_auth(rec);
    }
}

/// Issue 10: the OpenAI SDKs over HTTPS to a TLS listener, trusting the test's self-signed
/// certificate (Python: its own HTTP client's trust store; Node: `NODE_EXTRA_CA_CERTS`).
async fn openai_sdk_over_tls(sdk: Sdk) {
    let Some(t) = tools(sdk).await else {
        return;
    };
    let mock = Mock::start("M");
    let (cert, key) = self_signed_cert("sdk");
    let template = Provider::OpenAi.config(&mock).replace(
        "listen: \"127.0.0.1:{PORT}\"}",
        &format!(
            "listen: \"127.0.0.1:{{PORT}}\", tls: {{cert: \"{}\", key: \"{}\"}}}}",
            cert.display(),
            key.display()
        ),
    );
    let (gw, _log) = gateway_with_log_admin_ready(&template, &[]).await;
    let base = format!("https://localhost:{}/v1", gw.port);
    run(
        &t,
        sdk,
        "openai-tls",
        &[&base, MODEL, EMBED_MODEL],
        MOCK_GAPS,
        Some(cert.to_str().unwrap()),
        None,
    )
    .await;
    assert_upstream_saw(&mock, Provider::OpenAi).await;
}

#[tokio::test]
async fn tls_listener_openai_python_sdk() {
    openai_sdk_over_tls(Sdk::OpenAiPython).await;
}

#[tokio::test]
async fn tls_listener_openai_node_sdk() {
    openai_sdk_over_tls(Sdk::OpenAiNode).await;
}

/// Bedrock upstream, OpenAI-format clients: chat, streams, tools and embeddings translated to Converse and
/// InvokeModel (Cohere), every request signed and verified by the mock.
#[tokio::test]
async fn bedrock_upstream_openai_python_sdk() {
    openai_sdk_against(Sdk::OpenAiPython, Provider::Bedrock).await;
}

/// As [`bedrock_upstream_openai_python_sdk`], with the Node SDK.
#[tokio::test]
async fn bedrock_upstream_openai_node_sdk() {
    openai_sdk_against(Sdk::OpenAiNode, Provider::Bedrock).await;
}

#[tokio::test]
async fn gemini_upstream_openai_python_sdk() {
    openai_sdk_against(Sdk::OpenAiPython, Provider::Gemini).await;
}

#[tokio::test]
async fn gemini_upstream_openai_node_sdk() {
    openai_sdk_against(Sdk::OpenAiNode, Provider::Gemini).await;
}

#[tokio::test]
async fn vertex_upstream_openai_python_sdk() {
    openai_sdk_against(Sdk::OpenAiPython, Provider::Vertex).await;
}

#[tokio::test]
async fn vertex_upstream_openai_node_sdk() {
    openai_sdk_against(Sdk::OpenAiNode, Provider::Vertex).await;
}

#[tokio::test]
async fn text_generation_upstream_openai_python_sdk() {
    openai_sdk_against(Sdk::OpenAiPython, Provider::TextGeneration).await;
}

#[tokio::test]
async fn text_generation_upstream_openai_node_sdk() {
    openai_sdk_against(Sdk::OpenAiNode, Provider::TextGeneration).await;
}

/// The Anthropic SDK on `/v1/messages` for a model served by `provider` (which speaks neither
/// Anthropic's API nor OpenAI's): Messages → chat → the provider's API, and back.
async fn anthropic_sdk_against(provider: Provider, skips: &[(&str, &str)]) {
    let Some(t) = tools(Sdk::AnthropicPython).await else {
        return;
    };
    let mock = provider.mock();
    let gw = gateway(&provider.config(&mock)).await;
    let base = gw.url("");
    run(
        &t,
        Sdk::AnthropicPython,
        provider.name(),
        &[&base, MODEL],
        skips,
        None,
        provider.content(),
    )
    .await;
    let seen = mock.requests().await;
    let text = serde_json::to_string(&seen).unwrap();
    assert!(
        !text.contains(MASTER),
        "the client's key reached the upstream"
    );
    let posts: Vec<&Value> = seen.iter().filter(|r| r["method"] == "POST").collect();
    assert!(posts.len() >= 5, "{seen:?}");
    for rec in posts {
        provider.assert_upstream_auth(rec);
    }
}

#[tokio::test]
async fn gemini_upstream_anthropic_python_sdk() {
    anthropic_sdk_against(Provider::Gemini, &[]).await;
}

#[tokio::test]
async fn vertex_upstream_anthropic_python_sdk() {
    anthropic_sdk_against(Provider::Vertex, &[]).await;
}

#[tokio::test]
async fn text_generation_upstream_anthropic_python_sdk() {
    anthropic_sdk_against(Provider::TextGeneration, TGI_ANTHROPIC_NA).await;
}

#[tokio::test]
async fn bedrock_upstream_anthropic_python_sdk() {
    anthropic_sdk_against(Provider::Bedrock, &[]).await;
}

/// Seed 002's way in: a LiteLLM proxy config (`model_list` with `litellm_params`, the upstream key
/// from `environment_variables` through `os.environ/`, `general_settings.master_key` and
/// `database_url`) started with `llmproxy --config FILE --host --port`, then the OpenAI Python SDK's
/// whole case list through it, unchanged but for its base URL.
#[tokio::test]
async fn litellm_config_openai_python_sdk() {
    let Some(t) = tools(Sdk::OpenAiPython).await else {
        return;
    };
    let mock = Provider::OpenAi.mock();
    let yaml = format!(
        r#"model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/mini-dep
      api_base: "{base}/v1"
      api_key: os.environ/SDK_UPSTREAM_KEY
  - model_name: {EMBED_MODEL}
    litellm_params:
      model: openai/embed-dep
      api_base: "{base}/v1"
      api_key: os.environ/SDK_UPSTREAM_KEY
general_settings:
  master_key: "{MASTER}"
  database_url: "sqlite://{db}"
environment_variables:
  SDK_UPSTREAM_KEY: sk-up-up
"#,
        base = mock.base(),
        db = tmp_path("sdk-litellm-keys.db").display(),
    );
    let path = tmp_path("litellm-sdk.yaml");
    std::fs::write(&path, yaml).unwrap();
    let gw = Gateway::spawn_config_file(path, &[]).await;
    let base = gw.url("/v1");
    let report = run(
        &t,
        Sdk::OpenAiPython,
        "openai (LiteLLM config)",
        &[&base, MODEL, EMBED_MODEL],
        MOCK_GAPS,
        None,
        None,
    )
    .await;
    assert_eq!(
        report.values["models_list"]["ids"],
        serde_json::json!([MODEL, EMBED_MODEL])
    );
    assert_upstream_saw(&mock, Provider::OpenAi).await;
}

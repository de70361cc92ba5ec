//! `mock_upstream` — a fast, controllable fake LLM upstream: OpenAI, Azure OpenAI, Anthropic,
//! AWS Bedrock, Google's Gemini API and Vertex AI, and text-generation servers (Hugging Face TGI),
//! each in its own wire format.
//!
//! The gateway's test oracle and the baseline of its load tests. It shares no code with the
//! gateway (`llmproxy`): what it answers comes from the providers' documentation, written down
//! here a second time, so a misunderstanding in the gateway cannot hide in a shared helper.
//!
//! It is a plain hyper 1 HTTP/1.1 server (keep-alive, TCP_NODELAY, one task per connection) on a
//! tokio multi-thread runtime of its own, with no per-request logging. Two ways to run it:
//!
//! * in-process, as a library: [`MockServer::start`] takes the command-line arguments below,
//!   binds, serves on its own thread and runtime, and shuts down when dropped (the listener is
//!   closed and every open connection dropped, so in-flight streams break as they would if the
//!   upstream died). The gateway's integration tests use this.
//! * as the binary `mock_upstream` (`cargo build --release -p mock-upstream --bin
//!   mock_upstream`), for the load tests.
//!
//! # Modules
//!
//! | module | owns |
//! | --- | --- |
//! | `server` | shared state, the accept loop, the per-request dispatch |
//! | `openai` | `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/responses`, `/v1/models` |
//! | `azure` | Azure OpenAI's paths, refusals and rate-limit answers |
//! | `anthropic` | Anthropic's Messages API |
//! | `bedrock` | AWS Bedrock: Converse, ConverseStream, InvokeModel (embeddings), ListFoundationModels |
//! | `eventstream` | AWS's event-stream binary framing (Bedrock's streams) |
//! | `sigv4` | AWS Signature Version 4 verification |
//! | `gemini` | Google's Gemini API, and its wire format on Vertex AI (generation, streaming, embeddings, models) |
//! | `vertex` | Vertex AI's authentication: the OAuth2 token endpoint (JWT bearer grant), the metadata server, bearer checks |
//! | `tgi` | a text-generation server (Hugging Face TGI): `/generate`, `/generate_stream`, `/health`, `/info` |
//! | `batch` | the Files and Batch API |
//! | `limits` | `--rpm` / `--tpm`: token buckets and `x-ratelimit-*` headers |
//! | `tokens` | the token estimate a request is charged against `--tpm` |
//! | `control` | `/__mock/*` and the request recording |
//! | `content` | what an answer says: content, chunking, pacing, usage |
//! | `body` | response bodies (full, or paced SSE frames) and the shared error answers |
//!
//! # CLI
//!
//! ```text
//! mock_upstream [--listen 127.0.0.1:0] [--name NAME] [--threads N]
//!               [--latency-ms N] [--ttft-ms N] [--chunks N]
//!               [--chunk-interval-ms N] [--tokens-per-sec N]
//!               [--response-bytes N] [--fail-status CODE]
//!               [--embedding-dim N] [--no-record]
//!               [--rpm N] [--tpm N] [--limit-mode bucket|sliding]
//!               [--default-max-tokens N] [--echo] [--max-input-tokens N]
//!               [--aws-access-key-id ID --aws-secret-access-key SECRET]
//!               [--aws-session-token TOKEN] [--aws-region REGION]
//!               [--bedrock-api-key KEY] [--gemini-api-key KEY]
//!               [--gcp-sa-public-key FILE] [--gcp-sa-email EMAIL]
//!               [--gcp-token-ttl SECS] [--gcp-token-uri URI]
//!               [--tgi-model-id ID]
//! ```
//!
//! * `--listen` (default `127.0.0.1:0`): after binding, the binary prints exactly one line
//!   `listening on <addr>` (the real bound address) to stdout; in-process,
//!   [`MockServer::addr`] says it.
//! * `--name` (default `mock`): sent back in the `x-mock-name` header of every
//!   response.
//! * `--threads` (default 1): tokio worker threads.
//! * `--latency-ms` (default 0): delay before the response headers are sent
//!   (applies to every non-`/__mock` response, streaming or not, errors too).
//!   Can be changed at runtime with `POST /__mock/latency?ms=N`.
//! * `--ttft-ms` (default 0): streaming only; delay between the response
//!   headers and the first content event.
//! * `--chunks` (default 5): number of content events in a stream; also the
//!   completion token count reported in usage (see `content`).
//! * `--chunk-interval-ms` (default 0): delay between consecutive content
//!   events.
//! * `--tokens-per-sec` (default 0 = unlimited): when set and no chunk interval
//!   is given (CLI or header), the interval is `1/tps` seconds
//!   (microsecond resolution, so tps > 1000 works).
//! * `--response-bytes` (default 0): 0 = the fixed content `Hello from mock`
//!   (non-stream) or `tok<i> ` per event (stream); N = exactly N bytes of ASCII
//!   filler content, spread across the content events of a stream.
//! * `--fail-status` (default 0 = never): initial value of the global failure
//!   status (see `POST /__mock/fail`).
//! * `--fail-code`, `--fail-message`: the `error.code` / `error.message` of every
//!   failure answer (e.g. `--fail-status 400 --fail-code context_length_exceeded`);
//!   `--retry-after N` adds `Retry-After: N` to failure answers.
//! * `--embedding-dim` (default 8): length of every embedding vector.
//! * `--no-record`: do not record requests for `GET /__mock/requests`
//!   (recording is on by default; turn it off for load tests).
//! * `--rpm N`, `--tpm N` (default 0 = unlimited): requests / tokens per minute,
//!   enforced as OpenAI documents it ("a per-minute limit may be enforced over
//!   shorter periods"); see `limits`. Changeable at runtime with
//!   `POST /__mock/limits`.
//! * `--limit-mode bucket|sliding` (default `bucket`): how `--rpm` / `--tpm` are enforced —
//!   token buckets refilling continuously, or hard ceilings over any sliding 1-second window
//!   (at most `rpm / 60` requests and `tpm / 60` tokens start in any second); see `limits`.
//!   Changeable at runtime with `POST /__mock/limits?mode=...`.
//! * `--default-max-tokens N` (default 1024): the output allowance charged
//!   against `--tpm` when a request sets no `max_tokens` /
//!   `max_completion_tokens` / `max_output_tokens`.
//! * `--echo` (default off; runtime `POST /__mock/echo?on=true|false`): chat
//!   completions answer with the last `user` message as their content (its
//!   string, or its `text` parts joined; spread over the chunks of a stream)
//!   instead of `Hello from mock` / filler, so each answer can be matched to
//!   its request. Batch lines follow the same setting. Bedrock's Converse answers with the last
//!   user message's text blocks, Gemini / Vertex with the last user turn's text parts, a
//!   text-generation server with its whole `inputs`.
//! * `--max-input-tokens N` (default 0 = none): a generation request of the Bedrock, Gemini /
//!   Vertex AI or text-generation-server dialects whose prompt exceeds N tokens gets that
//!   dialect's context-length error (see each module).
//! * `--aws-access-key-id`, `--aws-secret-access-key`, `--aws-session-token`, `--aws-region`
//!   (default `us-east-1`), `--bedrock-api-key`: Bedrock requests must be signed with these
//!   credentials (SigV4, signing name `bedrock`) or carry the API key; see `bedrock`.
//! * `--gemini-api-key KEY`: the only Gemini API key accepted (any, when unset; a key is always
//!   required); see `gemini`.
//! * `--gcp-sa-public-key FILE` (PEM), `--gcp-sa-email EMAIL`, `--gcp-token-ttl SECS` (default
//!   3600), `--gcp-token-uri URI`: Vertex AI's service account — `POST /token` verifies the JWT
//!   assertion against them and issues tokens living that long, and (with a public key) Vertex
//!   paths accept only those tokens; see `vertex`. [`gcp_test_key`] is a key pair for tests.
//! * `--no-stream-usage`: the OpenAI dialect ignores `stream_options.include_usage` (a server
//!   that predates it): chat and completions streams carry no usage at all.
//! * `--tgi-model-id ID` (default `mock/tgi-model`): the text-generation server's `model_id` in
//!   `GET /info`; see `tgi`.
//!
//! # Per-request override headers (win over the CLI / runtime defaults)
//!
//! * `x-mock-latency-ms`, `x-mock-ttft-ms`, `x-mock-chunks`,
//!   `x-mock-chunk-interval-ms`, `x-mock-tokens-per-sec`,
//!   `x-mock-response-bytes`: as the CLI options above.
//! * `x-mock-status: CODE`: respond with CODE (only codes >= 400 are honoured)
//!   and the OpenAI-shaped body
//!   `{"error":{"message":"mock error","type":"mock_error","param":null,"code":"mock_<CODE>"}}`
//!   (Anthropic, Azure's 429, Bedrock, Gemini / Vertex AI and text-generation servers answer in
//!   their own error shapes, see their modules; so do `--fail-status` and `/__mock/fail`).
//! * `x-mock-drop-after-chunks: K`: streaming only; send the leading events and
//!   K content events (at most all of them) and then abort the connection (the
//!   chunked body is truncated: no terminating chunk, no finish event, no
//!   `[DONE]`). Ignored for non-stream requests.
//! * `x-mock-tool-call: NAME`, `x-mock-tool-input: {JSON}`: answer with a call of that tool
//!   (chat, Anthropic, Bedrock's `toolUse`, Gemini's `functionCall`).
//! * `x-mock-finish-reason: R` (Bedrock, Gemini / Vertex, text-generation servers): the
//!   answer's stop / finish reason, in the dialect's own words.
//! * `x-mock-cache-read-tokens: N`, `x-mock-cache-write-tokens: N` (Bedrock, Anthropic; Gemini /
//!   Vertex and OpenAI chat read only): cached prompt tokens reported in the usage — OpenAI's
//!   `prompt_tokens` includes them (`prompt_tokens_details.cached_tokens`), Anthropic's and
//!   Bedrock's input count excludes them. `x-mock-reasoning-tokens: N` (OpenAI chat): N more
//!   output tokens, reported as `completion_tokens_details.reasoning_tokens`.
//! * `x-mock-prompt-tokens: N`: report N (uncached) prompt tokens instead of body length / 4.
//!
//! The dialects' own faults (Bedrock's event-stream faults, Gemini's blocks, ...) are documented
//! in their modules.

mod anthropic;
mod azure;
mod batch;
mod bedrock;
mod body;
mod content;
mod control;
mod eventstream;
mod gemini;
mod limits;
mod openai;
mod server;
mod sigv4;
mod tgi;
mod tokens;
mod vertex;

use std::io;
use std::net::SocketAddr;
use std::thread::JoinHandle;

use clap::Parser;

/// The command-line options (see the crate docs for what each does).
#[derive(Parser, Debug, Clone)]
#[command(
    name = "mock_upstream",
    about = "Fast fake LLM upstream (OpenAI, Azure, Anthropic, Bedrock, Gemini, Vertex AI, TGI)"
)]
pub struct Options {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Returned in the `x-mock-name` response header.
    #[arg(long, default_value = "mock")]
    pub name: String,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Delay before response headers (ms).
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Streaming: delay before the first content event (ms).
    #[arg(long, default_value_t = 0)]
    pub ttft_ms: u64,
    /// Number of content chunks.
    #[arg(long, default_value_t = 5)]
    pub chunks: u64,
    /// Delay between content chunks (ms).
    #[arg(long)]
    pub chunk_interval_ms: Option<u64>,
    /// Stream pacing in tokens (chunks) per second; 0 = unlimited.
    #[arg(long, default_value_t = 0)]
    pub tokens_per_sec: u64,
    /// Content size in bytes; 0 = short fixed content.
    #[arg(long, default_value_t = 0)]
    pub response_bytes: u64,
    /// Fail every request with this status; 0 = never.
    #[arg(long, default_value_t = 0)]
    pub fail_status: u16,
    /// `error.code` of the failure answers (default `mock_<status>`), e.g. `context_length_exceeded`.
    #[arg(long)]
    pub fail_code: Option<String>,
    /// `error.message` of the failure answers (default "mock error").
    #[arg(long)]
    pub fail_message: Option<String>,
    /// Send `Retry-After: N` (seconds) with failure answers.
    #[arg(long)]
    pub retry_after: Option<u64>,
    /// Embedding vector length.
    #[arg(long, default_value_t = 8)]
    pub embedding_dim: usize,
    /// Do not record requests (for load tests).
    #[arg(long)]
    pub no_record: bool,
    /// Requests per minute, enforced per second; 0 = unlimited.
    #[arg(long, default_value_t = 0)]
    pub rpm: u64,
    /// Tokens per minute (estimated), enforced per second; 0 = unlimited.
    #[arg(long, default_value_t = 0)]
    pub tpm: u64,
    /// Output tokens charged against --tpm when a request sets no maximum.
    #[arg(long, default_value_t = 1024)]
    pub default_max_tokens: u64,
    /// Chat answers echo the last user message as their content.
    #[arg(long)]
    pub echo: bool,
    /// How --rpm / --tpm are enforced: token buckets, or hard ceilings over any sliding second.
    #[arg(long, value_enum, default_value_t = LimitMode::Bucket)]
    pub limit_mode: LimitMode,
    /// Answer a generation request whose prompt is longer than this many tokens with the
    /// dialect's context-length error (Bedrock, Gemini / Vertex, text-generation servers); 0 = no
    /// limit.
    #[arg(long, default_value_t = 0)]
    pub max_input_tokens: u64,
    /// A server that predates `stream_options` (older self-hosted servers): chat and completions
    /// streams never carry usage, `include_usage` or not.
    #[arg(long)]
    pub no_stream_usage: bool,
    /// Bedrock: require SigV4 signatures made with this access key id.
    #[arg(long, requires = "aws_secret_access_key")]
    pub aws_access_key_id: Option<String>,
    /// Bedrock: the secret access key of --aws-access-key-id.
    #[arg(long, requires = "aws_access_key_id")]
    pub aws_secret_access_key: Option<String>,
    /// Bedrock: the session token signed requests must carry in `x-amz-security-token`.
    #[arg(long, requires = "aws_access_key_id")]
    pub aws_session_token: Option<String>,
    /// Bedrock: the region of the signatures' credential scope.
    #[arg(long, default_value = "us-east-1")]
    pub aws_region: String,
    /// Bedrock: also accept `Authorization: Bearer KEY` (a Bedrock API key).
    #[arg(long)]
    pub bedrock_api_key: Option<String>,
    /// Gemini API: the only API key accepted (any key when unset).
    #[arg(long)]
    pub gemini_api_key: Option<String>,
    /// Vertex AI: the service account's public key (PEM); when set, `/token` verifies JWT
    /// signatures and Vertex paths accept only tokens this mock issued.
    #[arg(long)]
    pub gcp_sa_public_key: Option<std::path::PathBuf>,
    /// Vertex AI: the service account's email, the JWT's required `iss`.
    #[arg(long)]
    pub gcp_sa_email: Option<String>,
    /// Vertex AI: lifetime of the access tokens issued, seconds.
    #[arg(long, default_value_t = 3600)]
    pub gcp_token_ttl: u64,
    /// Vertex AI: a JWT `aud` accepted besides Google's token URI and this mock's `/token`.
    #[arg(long)]
    pub gcp_token_uri: Option<String>,
    /// Text-generation server: the `model_id` of `GET /info`.
    #[arg(long, default_value = "mock/tgi-model")]
    pub tgi_model_id: String,
}

/// How `--rpm` / `--tpm` are enforced (see the `limits` module).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LimitMode {
    /// Token buckets refilling continuously, each holding one second's worth.
    #[default]
    Bucket,
    /// At most `rpm / 60` requests and `tpm / 60` tokens start in any 1-second window.
    Sliding,
}

impl LimitMode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LimitMode::Bucket => "bucket",
            LimitMode::Sliding => "sliding",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<LimitMode> {
        match s {
            "bucket" => Some(LimitMode::Bucket),
            "sliding" => Some(LimitMode::Sliding),
            _ => None,
        }
    }
}

impl Options {
    /// Parse command-line arguments (without the program name), as the binary does.
    pub fn from_args(args: &[&str]) -> Result<Options, clap::Error> {
        Options::try_parse_from(std::iter::once("mock_upstream").chain(args.iter().copied()))
    }
}

/// A throwaway RSA key pair for tests of the Vertex AI dialect (never used anywhere else): the
/// private key goes into a service-account JSON file for the client under test, the public key is
/// given to the mock with `--gcp-sa-public-key` [`gcp_test_key::PUBLIC_KEY_PATH`].
pub mod gcp_test_key {
    /// The private key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), as in a service-account file.
    pub const PRIVATE_KEY_PEM: &str = include_str!("../fixtures/gcp-test-sa-key.pem");
    /// The public key, PEM SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`).
    pub const PUBLIC_KEY_PEM: &str = include_str!("../fixtures/gcp-test-sa-key.pub.pem");
    /// The public key's file, for `--gcp-sa-public-key`.
    pub const PUBLIC_KEY_PATH: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/gcp-test-sa-key.pub.pem"
    );

    /// A service-account key file (JSON) with the test private key, for `client_email`, whose
    /// tokens are to be fetched from `token_uri` (e.g. `http://127.0.0.1:PORT/token`).
    pub fn service_account_json(client_email: &str, token_uri: &str) -> String {
        serde_json::json!({
            "type": "service_account",
            "project_id": "mock-project",
            "private_key_id": "mock-key-1",
            "private_key": PRIVATE_KEY_PEM,
            "client_email": client_email,
            "client_id": "100000000000000000000",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "universe_domain": "googleapis.com",
        })
        .to_string()
    }
}

/// A running mock upstream: its own thread and tokio runtime, serving until dropped.
///
/// Dropping it stops the accept loop, closes the listener and drops every open connection (a
/// stream being sent breaks off mid-body), and returns once all of that is done, so the port
/// refuses connections from then on.
pub struct MockServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MockServer {
    /// Start a mock with these command-line arguments (e.g. `["--name", "A", "--rpm", "600"]`);
    /// returns once it listens. Bad arguments are an [`io::ErrorKind::InvalidInput`] error that
    /// carries clap's message.
    pub fn start(args: &[&str]) -> io::Result<MockServer> {
        let options = Options::from_args(args)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        MockServer::start_with(options)
    }

    /// Start a mock with these options; returns once it listens.
    pub fn start_with(options: Options) -> io::Result<MockServer> {
        let (addr, stop, thread) = server::spawn(options)?;
        Ok(MockServer {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Block until the server stops, which it does only if its thread fails (the binary serves
    /// this way until it is killed).
    pub fn wait(mut self) -> io::Result<()> {
        match self.thread.take().map(JoinHandle::join) {
            Some(Err(_)) => Err(io::Error::other("the mock server thread panicked")),
            _ => Ok(()),
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // An error means the server has stopped already.
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // A panic on the server thread has been reported by the panic hook already.
            let _ = thread.join();
        }
    }
}

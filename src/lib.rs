//! llmproxy: an OpenAI-compatible LLM API gateway on Cloudflare Pingora.
//!
//! Clients keep their OpenAI SDK and change `base_url`. Each request is routed by the `model` in its
//! JSON body to one of that model's deployments (an upstream and the model name it knows), with the
//! upstream's own credentials, and the answer is streamed back untouched.
//!
//! | Pingora phase | what happens | module |
//! | --- | --- | --- |
//! | `early_request_filter` | client timeouts | [`proxy`] |
//! | `request_filter` | request id; listener; route by path; read and parse the body; resolve the model; pick a deployment; the upstream exchange (connect, send, relay the response chunk by chunk, usage) | [`route`], [`proxy::body`], [`balance`], [`proxy::exchange`], [`providers`] |
//! | `upstream_peer` … `response_body_filter` | passthrough routes only: Pingora's proxy loop with the upstream's auth and header ops | [`proxy`] |
//! | `fail_to_connect` / `fail_to_proxy` | next address; OpenAI-shaped errors | [`proxy`], [`error`] |
//! | `logging` | metrics, access log | [`metrics`], [`proxy`] |
//!
//! Background services: upstream DNS refresh and active health checks ([`balance::health`]); the
//! Batch API coalescer ([`batch`]), which answers opted-in requests from provider batch jobs.
//! What requests cost — the built-in price table and exact cost arithmetic — is [`pricing`].
//! The admin listener ([`admin`]) serves health, metrics and the redacted config.
//!
//! Configs are native or LiteLLM-format (translated by [`config::litellm`]); LiteLLM's
//! command line adds [`curl`] (`--detailed_debug` lines) and [`probe`] (`--test`, `--health`).

pub mod admin;
pub mod app;
pub mod auth;
pub mod balance;
pub mod batch;
pub mod body;
pub mod cache;
pub mod config;
pub mod curl;
pub mod error;
pub mod exchange;
pub mod keys;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod otel;
pub mod pricing;
pub mod probe;
pub mod providers;
pub mod proxy;
pub mod redis_conn;
pub mod reload;
pub mod route;
pub mod sched;
pub mod sd_notify;
pub mod state;

//! `llmproxy`: command line → config → server (see `llmproxy --help`).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the command line: its answers go to stdout, its errors to stderr"
)]

use clap::{Args, Parser, Subcommand};
use llmproxy::app::{self, ProcessOptions};
use llmproxy::config;
use llmproxy::reload::{Origin, Source};
use std::path::PathBuf;
use std::process::ExitCode;

/// jemalloc instead of glibc's malloc: per-thread caches without arena locks or consolidation passes
/// on the request path (~6% less CPU per proxied request), and no arena per thread. mimalloc saved as
/// much CPU but held ~60% more memory through a 1,000-stream storm (loadtest/results/perf.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "llmproxy",
    version,
    about = "An OpenAI-compatible LLM API gateway on Pingora",
    after_help = "LiteLLM style: `llmproxy --model ollama/llama3`, `llmproxy --config litellm.yaml`, \
`llmproxy --test`, `llmproxy --health`. Flags with `_` also take `-` (`--api_base` = `--api-base`)."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    seed: SeedArgs,
}

/// LiteLLM's proxy flags (`litellm --model ... --port ...`).
#[derive(Args, Clone, Default)]
struct SeedArgs {
    /// Serve this one model without a config file: `provider/id` (`openai/x` for any
    /// OpenAI-compatible server with --api_base, `azure/<deployment>`, `ollama/llama3`,
    /// `anthropic/claude-...`, ...), or a name served by the OpenAI-compatible server at --api_base.
    /// With --test: the model to test.
    #[arg(short = 'm', long)]
    model: Option<String>,
    /// The model's base URL, e.g. http://127.0.0.1:8000/v1 (with --model).
    #[arg(long = "api_base", visible_alias = "api-base")]
    api_base: Option<String>,
    /// Azure OpenAI's api-version (with --model azure/...).
    #[arg(long = "api_version", visible_alias = "api-version")]
    api_version: Option<String>,
    /// The name clients use for --model (default: --model as written; its bare id works too).
    #[arg(long)]
    alias: Option<String>,
    /// The listening address [default: 0.0.0.0, or the config's]. With --test/--health: the
    /// gateway's.
    #[arg(long)]
    host: Option<std::net::IpAddr>,
    /// The listening port [default: 4000, or the config's]. With --test/--health: the gateway's.
    #[arg(long)]
    port: Option<u16>,
    /// The admin listener address [default: 127.0.0.1:9000, or the config's].
    #[arg(long = "admin-listen", visible_alias = "admin_listen")]
    admin_listen: Option<String>,
    /// Worker threads (LiteLLM's uvicorn workers) [default: one per CPU].
    #[arg(long = "num_workers", visible_alias = "num-workers")]
    num_workers: Option<u64>,
    /// Default temperature for requests that do not set one.
    #[arg(long)]
    temperature: Option<f64>,
    /// Default max_tokens for requests that do not set it.
    #[arg(long = "max_tokens", visible_alias = "max-tokens")]
    max_tokens: Option<u64>,
    /// Seconds a request may take (every model's timeout). With --test: how long to wait.
    #[arg(long = "request_timeout", visible_alias = "request-timeout")]
    request_timeout: Option<f64>,
    /// Drop request parameters the provider does not support instead of refusing them.
    #[arg(long = "drop_params", visible_alias = "drop-params")]
    drop_params: bool,
    /// For providers without tool support: describe the request's tools in the system prompt.
    #[arg(
        long = "add_function_to_prompt",
        visible_alias = "add-function-to-prompt"
    )]
    add_function_to_prompt: bool,
    /// Debug logs, and every upstream request logged as a curl command (keys masked).
    #[arg(long = "detailed_debug", visible_alias = "detailed-debug")]
    detailed_debug: bool,
    /// Accepted for compatibility and ignored: llmproxy sends no telemetry anywhere.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = parse_bool)]
    telemetry: Option<bool>,
    /// Send one chat request to the running gateway (--host/--port, or the config's listener),
    /// print the answer; exit 1 with the error.
    #[arg(long)]
    test: bool,
    /// Print the running gateway's upstream health report (healthy_endpoints /
    /// unhealthy_endpoints) from its admin listener.
    #[arg(long)]
    health: bool,
}

/// `True`/`False` as LiteLLM writes them, and the usual spellings.
fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("expected True or False, got `{s}`")),
    }
}

#[derive(Args, Clone)]
struct RunArgs {
    /// Config file, native or LiteLLM format (default: the embedded conf/llmproxy.yaml).
    #[arg(short = 'c', long = "config", visible_alias = "conf")]
    config: Option<PathBuf>,
    /// Run in the background (Pingora daemon mode).
    #[arg(short, long)]
    daemon: bool,
    /// Graceful upgrade: take over the listening sockets of a running instance.
    #[arg(short, long)]
    upgrade: bool,
    /// Raise the log level to debug.
    #[arg(long)]
    debug: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Start the gateway.
    Run(RunArgs),
    /// Validate a config file (native or LiteLLM format): every error with its key path (exit 1),
    /// or `ok` and a summary; unsupported LiteLLM keys are listed as warnings.
    Check {
        #[arg(short = 'c', long = "config", visible_alias = "conf")]
        config: PathBuf,
    },
    /// Print a LiteLLM-format config in llmproxy's native format.
    Convert {
        #[arg(short = 'c', long = "config", visible_alias = "conf")]
        config: PathBuf,
    },
    /// Manage virtual keys in the configured database (`state.database`), printing JSON.
    Keys {
        #[command(subcommand)]
        action: Box<KeysAction>,
    },
    /// The audit log of the configured database (`state.database`): every change to keys, teams
    /// and end users, and every config reload, newest first.
    Audit(AuditArgs),
    /// The built-in price table (USD per million tokens: input, cached input, cache write, output;
    /// batch discount). With MODEL: the rows its lookup finds at any provider, then every row whose id
    /// or alias contains MODEL; exit 1 when none does.
    Prices {
        /// A model id, or part of one (case ignored).
        model: Option<String>,
    },
}

#[derive(Args, Clone)]
struct KeysDb {
    /// Config file whose `state.database` names the database (default: $LLMPROXY_DATABASE_URL or
    /// sqlite://./data/llmproxy.db).
    #[arg(short = 'c', long = "config", visible_alias = "conf")]
    config: Option<PathBuf>,
    /// Use this database URL instead of the config's.
    #[arg(long)]
    database: Option<String>,
}

#[derive(Args, Clone)]
struct AuditArgs {
    #[command(flatten)]
    db: KeysDb,
    /// Only entries about this table: keys, teams, customers, config.
    #[arg(long)]
    table: Option<String>,
    /// Only entries about this object (a key_id, team_id or end-user id).
    #[arg(long)]
    object: Option<String>,
    /// Only this action: created, updated, deleted, reloaded, reload_failed.
    #[arg(long)]
    action: Option<String>,
    /// Only entries at or after this date or time (YYYY-MM-DD, ISO 8601 UTC, or unix seconds).
    #[arg(long)]
    since: Option<String>,
    /// Only entries before this date or time (a date alone includes that whole day).
    #[arg(long)]
    until: Option<String>,
    /// At most this many entries.
    #[arg(long, default_value_t = 50)]
    limit: u64,
    /// Print the entries as JSON (the `GET /audit/logs` shape) instead of one line each.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum KeysAction {
    /// Create a key; prints it once (`key`), with its `key_id`.
    Generate {
        #[command(flatten)]
        db: KeysDb,
        /// Models the key may use, comma-separated (default: all).
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        /// Passthrough route prefixes the key may use, comma-separated (default: none).
        #[arg(long, value_delimiter = ',')]
        routes: Vec<String>,
        /// Lifetime, e.g. 30s, 20m, 30h, 30d (default: no expiry).
        #[arg(long)]
        duration: Option<String>,
        /// Budget in USD.
        #[arg(long)]
        max_budget: Option<f64>,
        /// Budget period, e.g. 30d (default: the budget never resets).
        #[arg(long)]
        budget_duration: Option<String>,
        #[arg(long)]
        rpm: Option<u64>,
        #[arg(long)]
        tpm: Option<u64>,
        /// A name for the key.
        #[arg(long)]
        alias: Option<String>,
        /// Per-key model aliases, REQUESTED=MODEL, comma-separated.
        #[arg(long, value_delimiter = ',')]
        aliases: Vec<String>,
        /// Metadata as a JSON object.
        #[arg(long)]
        metadata: Option<String>,
    },
    /// Show a key's spend, expiry, models and limits.
    Info {
        #[command(flatten)]
        db: KeysDb,
        /// The key (sk-...), or its key_id.
        #[arg(long)]
        key: String,
    },
    /// List keys (key ids and settings; never secrets).
    List {
        #[command(flatten)]
        db: KeysDb,
    },
    /// Delete keys.
    Delete {
        #[command(flatten)]
        db: KeysDb,
        /// The key (sk-...) or key_id; repeat or comma-separate for several.
        #[arg(long, required = true, value_delimiter = ',')]
        key: Vec<String>,
    },
}

fn init_logging(level: log::LevelFilter, debug: bool, detailed: bool) {
    llmproxy::logging::init(level, debug, detailed);
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check { config }) => check(&config),
        Some(Command::Convert { config }) => convert(&config),
        Some(Command::Keys { action }) => keys_command(*action),
        Some(Command::Audit(args)) => audit_command(args),
        Some(Command::Prices { model }) => prices(model.as_deref()),
        Some(Command::Run(args)) => {
            let overrides = config::Overrides {
                debug: args.debug,
                ..Default::default()
            };
            run(args, None, overrides, false)
        }
        None if cli.seed.test || cli.seed.health => probe(&cli.run, &cli.seed),
        None => {
            let seed = cli.seed;
            if seed.model.is_some() && cli.run.config.is_some() {
                eprintln!("--model serves one model without a config file: use either --model or --config");
                return ExitCode::FAILURE;
            }
            if seed.model.is_none() {
                for (given, flag) in [
                    (seed.api_base.is_some(), "--api_base"),
                    (seed.api_version.is_some(), "--api_version"),
                    (seed.alias.is_some(), "--alias"),
                ] {
                    if given {
                        eprintln!("{flag} describes the model of --model: give --model too");
                        return ExitCode::FAILURE;
                    }
                }
            }
            if seed.telemetry == Some(true) {
                eprintln!("note: --telemetry has no effect: llmproxy sends no telemetry anywhere");
            }
            let overrides = config::Overrides {
                host: seed.host,
                port: seed.port,
                admin_listen: seed.admin_listen.clone(),
                threads: seed.num_workers,
                temperature: seed.temperature,
                max_tokens: seed.max_tokens,
                request_timeout: seed.request_timeout,
                drop_params: seed.drop_params,
                add_function_to_prompt: seed.add_function_to_prompt,
                debug: cli.run.debug || seed.detailed_debug,
            };
            let quick = seed.model.map(|model| config::QuickStart {
                model,
                api_base: seed.api_base,
                api_version: seed.api_version,
                alias: seed.alias,
            });
            run(cli.run, quick, overrides, seed.detailed_debug)
        }
    }
}

fn print_warnings(warnings: &config::ConfigErrors) {
    for w in &warnings.0 {
        eprintln!("warning: {w}");
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    let report = config::report(path, &config::Overrides::default(), &config::ProcessEnv);
    let format = if report.litellm {
        " (LiteLLM format)"
    } else {
        ""
    };
    match report.config {
        Ok(cfg) => {
            print_warnings(&report.warnings);
            println!("ok: {}{format}", path.display());
            print!("{}", cfg.summary());
            ExitCode::SUCCESS
        }
        Err(errs) => {
            eprintln!("{}{format}: {} error(s)", path.display(), errs.0.len());
            eprintln!("{errs}");
            print_warnings(&report.warnings);
            ExitCode::FAILURE
        }
    }
}

/// `llmproxy convert -c litellm.yaml`: the native YAML on stdout.
fn convert(path: &std::path::Path) -> ExitCode {
    let doc = match config::read_file(path) {
        Ok(d) => d,
        Err(errs) => {
            eprintln!("{errs}");
            return ExitCode::FAILURE;
        }
    };
    if !config::litellm::is_litellm(&doc) {
        eprintln!(
            "{}: not a LiteLLM config (it has no top-level `model_list`); llmproxy reads it as it is",
            path.display()
        );
        return ExitCode::FAILURE;
    }
    match config::litellm::convert(&doc, &config::ProcessEnv, &path.display().to_string()) {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(errs) => {
            eprintln!("{}: {} error(s)", path.display(), errs.0.len());
            eprintln!("{errs}");
            ExitCode::FAILURE
        }
    }
}

/// `llmproxy prices [MODEL]`: the built-in price table as an aligned text table.
fn prices(model: Option<&str>) -> ExitCode {
    use llmproxy::pricing::{self, PriceTable};
    let table = PriceTable::builtin();
    let entries: Vec<&pricing::Entry> = match model {
        None => table.entries().iter().collect(),
        Some(q) => table.search(q),
    };
    if entries.is_empty() {
        eprintln!(
            "no built-in price for `{}`; `llmproxy prices` lists every model the table knows, and models[].pricing prices any other",
            model.unwrap_or_default()
        );
        return ExitCode::FAILURE;
    }
    let mut rows = vec![[
        "PROVIDER".to_string(),
        "MODEL".into(),
        "INPUT".into(),
        "CACHED".into(),
        "CACHE WRITE".into(),
        "OUTPUT".into(),
        "BATCH".into(),
        "CHECKED".into(),
        "ALIASES".into(),
    ]];
    for e in &entries {
        let p = &e.price;
        let batch = if p.batch_discount.0 == 0 {
            "-".to_string()
        } else {
            format!("-{}", p.batch_discount)
        };
        rows.push([
            e.provider.clone(),
            e.model.clone(),
            p.input.to_string(),
            p.cached_input.to_string(),
            p.cache_write.to_string(),
            p.output.to_string(),
            batch,
            e.checked.as_str().to_string(),
            e.aliases.join(" "),
        ]);
    }
    let mut widths = [0usize; 9];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    println!(
        "# USD per million tokens; built-in table compiled {} (sources and notes: src/pricing/prices.csv); models[].pricing overrides it",
        pricing::COMPILED
    );
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            // Names left-aligned, prices right-aligned, the last column unpadded.
            match i {
                2..=6 => line.push_str(&format!("{cell:>w$}  ")),
                8 => line.push_str(cell),
                _ => line.push_str(&format!("{cell:<w$}  ")),
            }
        }
        println!("{}", line.trim_end());
    }
    ExitCode::SUCCESS
}

/// `--test` / `--health` against a running gateway: its addresses from --host/--port/--admin-listen,
/// else from the config (-c), else LiteLLM's defaults (0.0.0.0:4000, admin 127.0.0.1:9000).
fn probe(run: &RunArgs, seed: &SeedArgs) -> ExitCode {
    use llmproxy::probe;
    use std::net::SocketAddr;
    init_logging(log::LevelFilter::Warn, false, false);
    let cfg = match &run.config {
        Some(path) => match config::load(path) {
            Ok(c) => Some(c),
            Err(errs) => {
                eprintln!("{}: {errs}", path.display());
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let listen = cfg
        .as_ref()
        .and_then(|c| c.server.listeners.first())
        .map(|l| l.listen)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 4000)));
    let listener = SocketAddr::new(
        seed.host.unwrap_or(listen.ip()),
        seed.port.unwrap_or(listen.port()),
    );
    let admin = match &seed.admin_listen {
        Some(a) => match a.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                eprintln!("--admin-listen: `{a}` is not an IP:port address");
                return ExitCode::FAILURE;
            }
        },
        None => cfg
            .as_ref()
            .map(|c| c.admin.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9000))),
    };
    let key = cfg
        .as_ref()
        .and_then(|c| c.server.master_key.as_ref().map(|k| k.expose().to_string()))
        .or_else(|| {
            std::env::var("LLMPROXY_MASTER_KEY")
                .ok()
                .filter(|k| !k.is_empty())
        });
    let admin_token = cfg
        .as_ref()
        .and_then(|c| c.admin.token.as_ref().map(|t| t.expose().to_string()))
        .or_else(|| {
            std::env::var("LLMPROXY_ADMIN_TOKEN")
                .ok()
                .filter(|k| !k.is_empty())
        });
    let target = probe::Target {
        listener,
        admin,
        key,
        admin_token,
        timeout: std::time::Duration::try_from_secs_f64(
            seed.request_timeout.unwrap_or(600.0).clamp(1.0, 1e9),
        )
        .unwrap_or(std::time::Duration::from_secs(600)),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if seed.health {
        match rt.block_on(probe::health(&target)) {
            Ok(report) => println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_else(|_| report.to_string())
            ),
            Err(e) => {
                eprintln!("llmproxy --health: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if seed.test {
        let model = seed.alias.as_deref().or(seed.model.as_deref());
        match rt.block_on(probe::test(&target, model)) {
            Ok((model, answer)) => {
                eprintln!(
                    "llmproxy --test: `{model}` at http://{}/v1/chat/completions answered:",
                    probe::reachable(target.listener)
                );
                println!("{answer}");
            }
            Err(e) => {
                eprintln!("llmproxy --test: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

/// The database URL for `llmproxy keys`: `--database`, else the config's `state.database` (with
/// `${VAR:-fallback}` expanded), else `$LLMPROXY_DATABASE_URL`, else `sqlite://./data/llmproxy.db`.
fn keys_database(db: &KeysDb) -> Result<String, String> {
    const DEFAULT: &str = "${LLMPROXY_DATABASE_URL:-sqlite://./data/llmproxy.db}";
    let env = config::reader::ProcessEnv;
    if let Some(url) = &db.database {
        return Ok(url.clone());
    }
    let configured = match &db.config {
        None => None,
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let doc: serde_yaml::Value =
                serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            // A LiteLLM file: its general_settings.database_url, as the gateway reads it.
            if config::litellm::is_litellm(&doc) {
                let t = config::litellm::translate(&doc, &env);
                let raw = t
                    .native
                    .get("state")
                    .and_then(|s| s.get("database"))
                    .and_then(serde_yaml::Value::as_str)
                    .unwrap_or(DEFAULT);
                let url = config::reader::expand_env(raw, &t.env(&env))
                    .map_err(|e| format!("general_settings.database_url: {e}"))?;
                return Ok(if url.is_empty() {
                    config::reader::expand_env(DEFAULT, &env)
                        .map_err(|e| format!("state.database: {e}"))?
                } else {
                    url
                });
            }
            match doc.get("state").and_then(|s| s.get("database")) {
                None | Some(serde_yaml::Value::Null) => None,
                Some(serde_yaml::Value::String(s)) => Some(s.clone()),
                Some(_) => {
                    return Err(format!(
                        "{}: state.database must be a string",
                        path.display()
                    ))
                }
            }
        }
    };
    let raw = configured.unwrap_or_else(|| DEFAULT.to_string());
    let url = config::reader::expand_env(&raw, &env).map_err(|e| format!("state.database: {e}"))?;
    if url.is_empty() {
        return config::reader::expand_env(DEFAULT, &env)
            .map_err(|e| format!("state.database: {e}"));
    }
    Ok(url)
}

/// `llmproxy keys ...`: the same handlers as the `/key/*` endpoints, against the database directly.
fn keys_command(action: KeysAction) -> ExitCode {
    use llmproxy::keys::{self, Keys, KeysOptions};
    use serde_json::{json, Map, Value};

    init_logging(log::LevelFilter::Warn, false, false);
    let (db, method, path, query, body) = match action {
        KeysAction::Generate {
            db,
            models,
            routes,
            duration,
            max_budget,
            budget_duration,
            rpm,
            tpm,
            alias,
            aliases,
            metadata,
        } => {
            let mut b = Map::new();
            if !models.is_empty() {
                b.insert("models".into(), json!(models));
            }
            if !routes.is_empty() {
                b.insert("routes".into(), json!(routes));
            }
            if !aliases.is_empty() {
                let mut m = Map::new();
                for a in &aliases {
                    let Some((from, to)) = a.split_once('=') else {
                        eprintln!("--aliases: expected REQUESTED=MODEL, got {a:?}");
                        return ExitCode::FAILURE;
                    };
                    m.insert(from.to_string(), json!(to));
                }
                b.insert("aliases".into(), Value::Object(m));
            }
            let opt = [
                ("duration", duration.map(Value::from)),
                ("max_budget", max_budget.map(Value::from)),
                ("budget_duration", budget_duration.map(Value::from)),
                ("rpm", rpm.map(Value::from)),
                ("tpm", tpm.map(Value::from)),
                ("key_alias", alias.map(Value::from)),
            ];
            for (k, v) in opt {
                if let Some(v) = v {
                    b.insert(k.into(), v);
                }
            }
            if let Some(m) = metadata {
                match serde_json::from_str::<Value>(&m) {
                    Ok(v) => {
                        b.insert("metadata".into(), v);
                    }
                    Err(e) => {
                        eprintln!("--metadata: not JSON: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            (
                db,
                http::Method::POST,
                "/key/generate",
                None,
                Value::Object(b),
            )
        }
        KeysAction::Info { db, key } => {
            let q = format!("key={}", percent_encode(&key));
            (db, http::Method::GET, "/key/info", Some(q), Value::Null)
        }
        KeysAction::List { db } => (db, http::Method::GET, "/key/list", None, Value::Null),
        KeysAction::Delete { db, key } => (
            db,
            http::Method::POST,
            "/key/delete",
            None,
            json!({ "keys": key }),
        ),
    };
    let url = match keys_database(&db) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let (status, out) = rt.block_on(async {
        let keys = Keys::open(&url, KeysOptions::default()).await?;
        Ok::<_, keys::StoreError>(
            keys::handle_as(
                &keys,
                keys::Actor::Cli,
                &method,
                path,
                query.as_deref(),
                &body,
            )
            .await,
        )
    })
    .unwrap_or_else(|e| (503, json!({"error": {"message": e.to_string(), "type": "server_error", "param": null, "code": "state_unavailable"}})));
    println!(
        "{}",
        serde_json::to_string_pretty(&out).unwrap_or_else(|_| out.to_string())
    );
    if status == 200 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `llmproxy audit`: the audit log through the `GET /audit/logs` handler, against the database.
fn audit_command(a: AuditArgs) -> ExitCode {
    use llmproxy::keys::{self, Keys, KeysOptions};
    init_logging(log::LevelFilter::Warn, false, false);
    let url = match keys_database(&a.db) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut query = vec![format!("page_size={}", a.limit.clamp(1, 1000))];
    for (name, v) in [
        ("table_name", &a.table),
        ("object_id", &a.object),
        ("action", &a.action),
        ("start_date", &a.since),
        ("end_date", &a.until),
    ] {
        if let Some(v) = v {
            query.push(format!("{name}={}", percent_encode(v)));
        }
    }
    let query = query.join("&");
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let keys = Keys::open(&url, KeysOptions::default()).await?;
        Ok::<_, keys::StoreError>(
            keys::handle_as(
                &keys,
                keys::Actor::Cli,
                &http::Method::GET,
                "/audit/logs",
                Some(&query),
                &[],
            )
            .await,
        )
    });
    let (status, out) = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if status != 200 {
        eprintln!("{out}");
        return ExitCode::FAILURE;
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&out).unwrap_or_else(|_| out.to_string())
        );
        return ExitCode::SUCCESS;
    }
    let empty = Vec::new();
    let entries = out["data"].as_array().unwrap_or(&empty);
    for e in entries {
        let text = |k: &str| e[k].as_str().unwrap_or("-").to_string();
        let change = match text("action").as_str() {
            "deleted" => e["before_value"].to_string(),
            _ => e["updated_values"].to_string(),
        };
        println!(
            "{}  {:<11} {:<13} {:<9} {:<28} {change}",
            text("updated_at"),
            text("changed_by"),
            text("action"),
            text("table_name"),
            text("object_id"),
        );
    }
    if entries.is_empty() {
        eprintln!("no audit entries match");
    }
    ExitCode::SUCCESS
}

/// Percent-encodes a query value.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn run(
    args: RunArgs,
    quick: Option<config::QuickStart>,
    overrides: config::Overrides,
    detailed_debug: bool,
) -> ExitCode {
    // A SIGHUP before the reload service installs its handler must not kill the process (the
    // default action); the reload service replaces this disposition once it runs.
    ignore_sighup();
    let origin = match (quick, &args.config) {
        (Some(q), _) => Origin::QuickStart(q),
        (None, Some(path)) => Origin::File(path.clone()),
        (None, None) => Origin::Embedded,
    };
    let source = Source { origin, overrides };
    let cfg = match source.load() {
        Ok(c) => c,
        Err(errs) => {
            init_logging(log::LevelFilter::Info, false, false);
            eprintln!("invalid configuration:\n{errs}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(cfg.logging.level, args.debug, detailed_debug);
    if matches!(source.origin, Origin::Embedded) {
        log::info!("no -c given: running the embedded default config (conf/llmproxy.yaml)");
    }
    for w in &cfg.warnings.0 {
        log::warn!("config: {w}");
    }
    // A LiteLLM file's environment_variables go into the process environment too (LiteLLM sets
    // `os.environ`), for what reads it directly (e.g. a provider's credential chain). This runs
    // before any thread exists; reloads lay the file's values over the environment instead.
    for (name, value) in &cfg.environment {
        std::env::set_var(name, value.expose());
    }
    drop(cfg);
    let process = ProcessOptions {
        daemon: args.daemon,
        upgrade: args.upgrade,
    };
    match app::run(source, process) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn ignore_sighup() {
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
}

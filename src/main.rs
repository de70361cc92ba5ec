//! `llmproxy`: command line → config → server (see `llmproxy --help`).

use clap::{Args, Parser, Subcommand};
use llmproxy::app::{self, ProcessOptions};
use llmproxy::config;
use llmproxy::reload::Source;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "llmproxy",
    version,
    about = "An OpenAI-compatible LLM API gateway on Pingora"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
    /// Quick start: serve this one model (no config file).
    #[arg(long, requires = "api_base")]
    model: Option<String>,
    /// Quick start: the OpenAI-compatible base URL of the model, e.g. http://127.0.0.1:8000/v1.
    #[arg(long)]
    api_base: Option<String>,
    /// Quick start: the listening port.
    #[arg(long, default_value_t = 4000)]
    port: u16,
    /// Quick start: the admin listener address.
    #[arg(long, default_value = "127.0.0.1:9000")]
    admin_listen: String,
}

#[derive(Args, Clone)]
struct RunArgs {
    /// Config file (default: the embedded conf/llmproxy.yaml).
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
    /// Validate a config file: every error with its key path (exit 1), or `ok` and a summary.
    Check {
        #[arg(short = 'c', long = "config", visible_alias = "conf")]
        config: PathBuf,
    },
    /// Manage virtual keys in the configured database (`state.database`), printing JSON.
    Keys {
        #[command(subcommand)]
        action: Box<KeysAction>,
    },
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

fn init_logging(level: log::LevelFilter, debug: bool) {
    llmproxy::logging::init(level, debug);
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check { config }) => check(&config),
        Some(Command::Keys { action }) => keys_command(*action),
        Some(Command::Prices { model }) => prices(model.as_deref()),
        Some(Command::Run(args)) => run(args, None),
        None => {
            let quick = match (cli.model, cli.api_base) {
                (Some(m), Some(u)) => Some(QuickStart {
                    model: m,
                    api_base: u,
                    port: cli.port,
                    admin: cli.admin_listen,
                }),
                _ => None,
            };
            run(cli.run, quick)
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(cfg) => {
            println!("ok: {}", path.display());
            print!("{}", cfg.summary());
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

    init_logging(log::LevelFilter::Warn, false);
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
            keys::handle(&keys, &method, path, query.as_deref(), &body).await,
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

/// `--model/--api-base` quick start settings.
struct QuickStart {
    model: String,
    api_base: String,
    port: u16,
    admin: String,
}

fn run(args: RunArgs, quick: Option<QuickStart>) -> ExitCode {
    // A SIGHUP before the reload service installs its handler must not kill the process (the
    // default action); the reload service replaces this disposition once it runs.
    ignore_sighup();
    let source = match (quick, &args.config) {
        (Some(q), _) => Source::QuickStart {
            model: q.model,
            api_base: q.api_base,
            port: q.port,
            admin: q.admin,
        },
        (None, Some(path)) => Source::File(path.clone()),
        (None, None) => Source::Embedded,
    };
    let cfg = match source.load() {
        Ok(c) => c,
        Err(errs) => {
            init_logging(log::LevelFilter::Info, false);
            eprintln!("invalid configuration:\n{errs}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(cfg.logging.level, args.debug);
    if matches!(source, Source::Embedded) {
        log::info!("no -c given: running the embedded default config (conf/llmproxy.yaml)");
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

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
}

fn init_logging(level: log::LevelFilter, debug: bool) {
    let level = if debug {
        log::LevelFilter::Debug
    } else {
        level
    };
    let mut b = env_logger::Builder::new();
    b.filter_level(level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        b.parse_filters(&spec);
    }
    let _ = b.try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check { config }) => check(&config),
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

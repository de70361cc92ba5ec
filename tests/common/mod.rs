//! Test harness: boots the real `llmproxy` binary on loopback with ephemeral ports, and the mock
//! upstream in-process (the `mock-upstream` crate, on its own thread and runtime); waits for
//! readiness with bounded polling (never fixed sleeps).
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "shared by every test binary (each uses part of it); a test stops at the first surprise"
)]

pub mod governance;

use serde_json::Value;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const LLMPROXY: &str = env!("CARGO_BIN_EXE_llmproxy");

/// A port that was free a moment ago, for a gateway to listen on. Chosen below the kernel's
/// ephemeral range (32768–60999): a port from that range can be taken in the meantime as the local
/// port of one of the many short-lived client connections the tests make (seen in CI: the gateway
/// then failed to bind).
pub fn free_port() -> u16 {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    for _ in 0..1000 {
        let p: u16 = rng.gen_range(20_000..32_000);
        if TcpListener::bind(("0.0.0.0", p)).is_ok() && TcpListener::bind(("127.0.0.1", p)).is_ok()
        {
            return p;
        }
    }
    panic!("no free port below the ephemeral range");
}

pub fn tmp_path(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!(
        "{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        name
    ))
}

/// A mock upstream, serving until dropped (then its port refuses connections and its open streams
/// break off).
pub struct Mock {
    /// Serves until dropped with the `Mock`.
    server: mock_upstream::MockServer,
    pub port: u16,
    pub name: String,
}

impl Mock {
    pub fn start(name: &str) -> Mock {
        Mock::start_with(name, &[])
    }

    pub fn start_with(name: &str, args: &[&str]) -> Mock {
        let mut argv = vec!["--listen", "127.0.0.1:0", "--name", name];
        argv.extend_from_slice(args);
        let server = mock_upstream::MockServer::start(&argv).expect("start mock_upstream");
        Mock {
            port: server.port(),
            server,
            name: name.to_string(),
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The upstream URL for a config (`.../v1`).
    pub fn url(&self) -> String {
        format!("{}/v1", self.base())
    }

    pub async fn requests(&self) -> Vec<Value> {
        get_json(format!("{}/__mock/requests", self.base())).await
    }

    /// The recorded requests to `path`.
    pub async fn requests_to(&self, path: &str) -> Vec<Value> {
        self.requests()
            .await
            .into_iter()
            .filter(|r| r["path"] == path)
            .collect()
    }

    pub async fn reset(&self) {
        client()
            .post(format!("{}/__mock/reset", self.base()))
            .send()
            .await
            .unwrap();
    }

    /// `GET /__mock/stats`.
    pub async fn stats(&self) -> Value {
        get_json(format!("{}/__mock/stats", self.base())).await
    }

    /// `GET /__mock/admissions`: requests admitted by the mock's rate limiter, in order.
    pub async fn admissions(&self) -> Vec<Value> {
        get_json(format!("{}/__mock/admissions", self.base())).await
    }

    /// Make every request fail with `status` (0 restores).
    pub async fn fail(&self, status: u16) {
        let r = client()
            .post(format!("{}/__mock/fail?status={status}", self.base()))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    /// `POST /__mock/batch`: change the simulated Batch API (fields left out keep their value,
    /// `null` restores a default); returns the settings now in force.
    pub async fn batch_config(&self, cfg: Value) -> Value {
        let r = client()
            .post(format!("{}/__mock/batch", self.base()))
            .json(&cfg)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "batch config refused: {cfg}");
        r.json::<Value>().await.unwrap()["config"].clone()
    }

    /// `GET /__mock/batches`: every batch (oldest first) with its status, custom_ids, poll count
    /// and whether cancel was called.
    pub async fn batches(&self) -> Vec<Value> {
        get_json(format!("{}/__mock/batches", self.base())).await
    }

    /// Echo mode: chat answers carry the last user message as their content (sync and batch).
    pub async fn echo(&self, on: bool) {
        let r = client()
            .post(format!("{}/__mock/echo?on={on}", self.base()))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
}

pub struct Gateway {
    child: Child,
    pub port: u16,
    pub admin_port: u16,
    pub config: PathBuf,
}

/// Fill `{PORT}` and `{ADMIN}` in a config template and start the gateway on it.
pub async fn gateway(template: &str) -> Gateway {
    gateway_with(template, &[], Stdio::inherit()).await
}

/// Like [`gateway`], with extra command-line arguments and the gateway's stderr written to a file
/// (returned), for tests that read the log.
pub async fn gateway_with_log(template: &str, extra_args: &[&str]) -> (Gateway, PathBuf) {
    let log = tmp_path("stderr.log");
    let file = std::fs::File::create(&log).unwrap();
    (gateway_with(template, extra_args, file.into()).await, log)
}

async fn gateway_with(template: &str, extra_args: &[&str], stderr: Stdio) -> Gateway {
    let port = free_port();
    let admin = free_port();
    let yaml = template
        .replace("{PORT}", &port.to_string())
        .replace("{ADMIN}", &admin.to_string());
    let path = tmp_path("llmproxy.yaml");
    std::fs::write(&path, yaml).unwrap();
    let p = path.to_str().unwrap().to_string();
    let mut args = vec!["run", "-c", p.as_str()];
    args.extend_from_slice(extra_args);
    Gateway::spawn_with_stderr(&args, port, admin, path, stderr).await
}

/// Like [`gateway`], with extra environment variables for the gateway process.
pub async fn gateway_with_env(template: &str, env: &[(&str, &str)]) -> Gateway {
    let port = free_port();
    let admin = free_port();
    let yaml = template
        .replace("{PORT}", &port.to_string())
        .replace("{ADMIN}", &admin.to_string());
    let path = tmp_path("llmproxy.yaml");
    std::fs::write(&path, yaml).unwrap();
    let p = path.to_str().unwrap().to_string();
    Gateway::spawn_with_env(&["run", "-c", &p], env, port, admin, path).await
}

/// Like [`gateway_with_log`], with environment variables changed on the gateway process only
/// (`Some` sets one, `None` removes it): credentials the gateway reads from its environment.
pub async fn gateway_with_env_log(
    template: &str,
    extra_args: &[&str],
    env: &[(&str, Option<&str>)],
) -> (Gateway, PathBuf) {
    let port = free_port();
    let admin = free_port();
    let yaml = template
        .replace("{PORT}", &port.to_string())
        .replace("{ADMIN}", &admin.to_string());
    let path = tmp_path("llmproxy.yaml");
    std::fs::write(&path, yaml).unwrap();
    let p = path.to_str().unwrap().to_string();
    let mut args = vec!["run", "-c", p.as_str()];
    args.extend_from_slice(extra_args);
    Gateway::spawn_with_env_log(&args, port, admin, path, env).await
}

/// Wait (bounded) for a line containing `needle` in the log file; returns the line.
pub async fn wait_for_line(log: &std::path::Path, needle: &str) -> String {
    let t = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap();
        if let Some(l) = text.lines().find(|l| l.contains(needle)) {
            return l.to_string();
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no log line with `{needle}`:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A config with one `main` listener and the admin port, plus `rest` (upstreams, models, ...).
/// Tests play many clients from one loopback address, so the per-address connection cap is
/// raised (`tests/hardening.rs` tests the cap itself).
pub fn config(rest: &str) -> String {
    format!(
        "server:\n  listeners: [{{name: main, listen: \"127.0.0.1:{{PORT}}\"}}]\n  threads: 2\n  max_connections_per_ip: 100000\nadmin: {{listen: \"127.0.0.1:{{ADMIN}}\"}}\nlogging: {{level: warn, access_log: off}}\n{rest}"
    )
}

/// An upstream entry with OpenAI's accounting (`provider: openai`: token estimates stand, no
/// reconciliation) for a mock with fast health checks.
pub fn openai_upstream(name: &str, mock: &Mock) -> String {
    upstream(name, mock).replacen("{name: ", "{provider: openai, name: ", 1)
}

/// An upstream entry for a mock with fast health checks.
pub fn upstream(name: &str, mock: &Mock) -> String {
    format!(
        "  - {{name: {name}, url: \"{}\", auth: {{type: bearer, token: sk-up-{name}}}, health_check: {{interval: 200ms, timeout: 1s, unhealthy_after: 1, healthy_after: 1}}}}\n",
        mock.url()
    )
}

impl Gateway {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Send a signal to the gateway process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Wait (bounded) for the process to exit; its exit status when it did.
    /// Poll (without blocking the test's runtime: its load tasks must keep running) until the
    /// gateway exits or `limit` passes.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Start the gateway with `args` and extra environment variables; ready when it answers.
    pub async fn spawn_with_env(
        args: &[&str],
        env: &[(&str, &str)],
        port: u16,
        admin_port: u16,
        config: PathBuf,
    ) -> Gateway {
        let child = Command::new(LLMPROXY)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start llmproxy");
        let gw = Gateway {
            child,
            port,
            admin_port,
            config,
        };
        gw.wait_ready().await;
        gw
    }

    /// Started the way seed 002 starts its proxy: `--config FILE --host 127.0.0.1 --port P
    /// --admin-listen 127.0.0.1:A` on free ports, with `env` added to its environment.
    pub async fn spawn_config_file(config: PathBuf, env: &[(&str, &str)]) -> Gateway {
        let (port, admin) = (free_port(), free_port());
        let (p, port_s, admin_s) = (
            config.to_str().expect("a UTF-8 path").to_string(),
            port.to_string(),
            format!("127.0.0.1:{admin}"),
        );
        let args = [
            "--config",
            p.as_str(),
            "--host",
            "127.0.0.1",
            "--port",
            port_s.as_str(),
            "--admin-listen",
            admin_s.as_str(),
        ];
        Gateway::spawn_with_env(&args, env, port, admin, config).await
    }

    pub async fn spawn(args: &[&str], port: u16, admin_port: u16, config: PathBuf) -> Gateway {
        Gateway::spawn_with_stderr(args, port, admin_port, config, Stdio::inherit()).await
    }

    pub async fn spawn_with_stderr(
        args: &[&str],
        port: u16,
        admin_port: u16,
        config: PathBuf,
        stderr: Stdio,
    ) -> Gateway {
        let child = Command::new(LLMPROXY)
            .args(args)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start llmproxy");
        let gw = Gateway {
            child,
            port,
            admin_port,
            config,
        };
        gw.wait_ready().await;
        gw
    }

    /// [`Gateway::spawn_with_stderr`] with environment changes (see [`gateway_with_env`]); the
    /// stderr goes to a log file, returned.
    pub async fn spawn_with_env_log(
        args: &[&str],
        port: u16,
        admin_port: u16,
        config: PathBuf,
        env: &[(&str, Option<&str>)],
    ) -> (Gateway, PathBuf) {
        let log = tmp_path("stderr.log");
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(LLMPROXY);
        cmd.args(args).stdout(Stdio::null()).stderr(file);
        for (k, v) in env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let gw = Gateway {
            child: cmd.spawn().expect("start llmproxy"),
            port,
            admin_port,
            config,
        };
        gw.wait_ready().await;
        (gw, log)
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let c = client();
        loop {
            // 401: the admin listener serves, behind `admin.token`.
            let admin = c
                .get(self.admin("/health"))
                .send()
                .await
                .map(|r| r.status().is_success() || r.status() == 401)
                .unwrap_or(false);
            let main = c
                .get(self.url("/v1/models"))
                .send()
                .await
                .map(|r| r.status().as_u16() != 0)
                .unwrap_or(false);
            if admin && main {
                return;
            }
            assert!(Instant::now() < deadline, "llmproxy did not become ready");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    pub async fn chat(&self, model: &str) -> reqwest::Response {
        client()
            .post(self.url("/v1/chat/completions"))
            .json(&serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap()
    }

    /// `GET /stats` on the admin listener.
    pub async fn stats(&self) -> Value {
        get_json(self.admin("/stats")).await
    }

    pub async fn metrics(&self) -> String {
        client()
            .get(self.admin("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn upstreams(&self) -> Value {
        get_json(self.admin("/health/upstreams")).await
    }

    /// Poll until `cond` holds on `/health/upstreams`, within `limit`.
    pub async fn wait_upstreams(&self, limit: Duration, cond: impl Fn(&Value) -> bool) -> Duration {
        let start = Instant::now();
        loop {
            if cond(&self.upstreams().await) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "condition on /health/upstreams not met within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET url` and its JSON body.
pub async fn get_json<T: serde::de::DeserializeOwned>(url: impl reqwest::IntoUrl) -> T {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The JSON of every `data:` event of an SSE text, in order (`[DONE]` left out).
pub fn sse_data(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The value of a metric sample line `name{labels} value`, matching every `label="value"` given.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Assert an OpenAI-shaped error body and return it.
pub async fn assert_openai_error(resp: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    assert!(resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("application/json")));
    let v: Value = resp.json().await.unwrap();
    let e = &v["error"];
    assert!(e["message"].is_string(), "{v}");
    assert!(e["type"].is_string(), "{v}");
    assert!(e.get("param").is_some(), "{v}");
    assert_eq!(e["code"], code, "{v}");
    v
}

/// Which mock answered.
pub fn served_by(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("x-mock-name")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// A throwaway `redis-server` on a free loopback port, without persistence; killed on drop.
pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    pub fn start() -> Redis {
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/install-deps --test installs it)");
        let t = Instant::now();
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                use std::io::{Read, Write};
                let _ = s.write_all(b"PING\r\n");
                let mut buf = [0u8; 7];
                if s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n" {
                    break;
                }
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, port }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A throwaway PostgreSQL server (Debian's `postgresql` package, binaries in
/// /usr/lib/postgresql/*/bin) on a free loopback port, trust authentication, no fsync; killed and
/// its directory removed on drop. Postgres refuses to run as root, so it runs as user `postgres`
/// (via `runuser`) in a temporary directory owned by that user.
pub struct Postgres {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

impl Postgres {
    fn bin_dir() -> PathBuf {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("/usr/lib/postgresql (scripts/install-deps --test installs postgresql)")
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let v = e.file_name().to_str()?.parse::<u32>().ok()?;
                let bin = e.path().join("bin");
                bin.join("postgres").exists().then_some((v, bin))
            })
            .collect();
        versions.sort();
        versions
            .pop()
            .expect("no postgres binary in /usr/lib/postgresql/*/bin")
            .1
    }

    /// Runs a postgres tool as user `postgres`; panics with its output on failure.
    fn as_postgres(&self, tool: &str, args: &[&str]) {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool))
            .args(args)
            .output()
            .expect("runuser");
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn start() -> Postgres {
        static N: AtomicUsize = AtomicUsize::new(0);
        let bin = Postgres::bin_dir();
        let dir = std::env::temp_dir().join(format!(
            "llmproxy-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sock")).unwrap();
        let st = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(st.success(), "chown {}", dir.display());
        let data = dir.join("data");
        let sock = dir.join("sock");
        let port = free_port();
        let mut pg = Postgres {
            // Replaced below; a placeholder child keeps Drop simple if initdb panics.
            child: Command::new("true").spawn().unwrap(),
            port,
            dir: dir.clone(),
            bin: bin.clone(),
        };
        pg.as_postgres(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let log = std::fs::File::create(dir.join("postgres.log")).unwrap();
        let _ = pg.child.wait();
        pg.child = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("postgres"))
            .args(["-D", data.to_str().unwrap()])
            .args(["-p", &port.to_string()])
            .args(["-k", sock.to_str().unwrap()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("runuser postgres");
        let t = Instant::now();
        loop {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                break;
            }
            if let Ok(Some(st)) = pg.child.try_wait() {
                panic!(
                    "postgres exited ({st}): {}",
                    std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default()
                );
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "postgres did not become ready: {}",
                std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        pg
    }

    /// Creates a database and returns its URL.
    pub fn create_db(&self, name: &str) -> String {
        self.as_postgres(
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                name,
            ],
        );
        self.url(name)
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGQUIT to the postmaster: immediate shutdown (runuser is only its parent; killing runuser
        // alone could leave the server running).
        let pid = std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().map(str::to_string));
        if let Some(pid) = pid {
            let _ = Command::new("kill").args(["-QUIT", &pid]).status();
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Like [`gateway_with_log`], for gateways whose main listener a plain HTTP probe cannot use (PROXY
/// protocol, TLS): ready once the admin listener answers and the main port accepts connections.
pub async fn gateway_with_log_admin_ready(
    template: &str,
    extra_args: &[&str],
) -> (Gateway, PathBuf) {
    let port = free_port();
    let admin = free_port();
    let yaml = template
        .replace("{PORT}", &port.to_string())
        .replace("{ADMIN}", &admin.to_string());
    let path = tmp_path("llmproxy.yaml");
    std::fs::write(&path, yaml).unwrap();
    let log = tmp_path("stderr.log");
    let file = std::fs::File::create(&log).unwrap();
    let p = path.to_str().unwrap().to_string();
    let mut args = vec!["run", "-c", p.as_str()];
    args.extend_from_slice(extra_args);
    let child = Command::new(LLMPROXY)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::from(file))
        .spawn()
        .expect("start llmproxy");
    let gw = Gateway {
        child,
        port,
        admin_port: admin,
        config: path,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let c = client();
    loop {
        let admin_up = c
            .get(gw.admin("/health"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if admin_up
            && tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "llmproxy did not become ready:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    (gw, log)
}

/// A self-signed certificate for `localhost` and `127.0.0.1` (openssl, RSA 2048, one day) written
/// to `{stem}.crt` and `{stem}.key` in a fresh directory; returns both paths.
pub fn self_signed_cert(stem: &str) -> (PathBuf, PathBuf) {
    let dir = tmp_path("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    );
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
        ])
        .args([
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-days",
            "1",
        ])
        // An end-entity certificate: openssl marks self-signed ones as CAs by default, which rustls's
        // webpki refuses as a server's own certificate.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (scripts/install-deps --test installs it)");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// HAProxy (Debian's package) on a config written to a temp file, in the foreground (`-db`); killed
/// on drop.
pub struct Haproxy {
    child: Child,
    pub config: PathBuf,
}

pub const HAPROXY: &str = "/usr/sbin/haproxy";

impl Haproxy {
    /// Start HAProxy on `cfg` and wait (bounded) until each of `ports` accepts connections.
    pub async fn start(cfg: &str, ports: &[u16]) -> Haproxy {
        let config = tmp_path("haproxy.cfg");
        std::fs::write(&config, cfg).unwrap();
        let check = Command::new(HAPROXY)
            .arg("-c")
            .arg("-f")
            .arg(&config)
            .output()
            .expect("haproxy (scripts/install-deps --test installs it)");
        assert!(
            check.status.success(),
            "haproxy -c: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new(HAPROXY)
            .arg("-f")
            .arg(&config)
            .arg("-db")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy");
        let h = Haproxy { child, config };
        let deadline = Instant::now() + Duration::from_secs(10);
        for p in ports {
            while tokio::net::TcpStream::connect(("127.0.0.1", *p))
                .await
                .is_err()
            {
                assert!(Instant::now() < deadline, "haproxy did not listen on {p}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        h
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

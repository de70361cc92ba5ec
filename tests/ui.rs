//! The web console (`GET /ui` on the admin listener, `admin_ui`).
//!
//! * In a real browser: `tests/ui/console.py` drives Debian's Chromium with Playwright for Python
//!   against the gateway and the mock upstream (see the script's docs for every step), saves a
//!   screenshot of each page in `target/ui-screenshots/` (or `LLMPROXY_UI_SCREENSHOTS`; the current
//!   ones are committed in `docs/`), and prints the page weight and load times (`cargo test --test ui
//!   -- --nocapture | grep '^ui:'`).
//! * Over plain HTTP: headers, sessions, CSRF, sign-in limits, the off switch, and that no secret or
//!   key hash leaves through the console's API.
//!
//! `scripts/install-deps --test` installs Chromium (`/usr/bin/chromium`, or `LLMPROXY_UI_CHROMIUM`)
//! and Playwright in the SDK venv (`target/sdk-venv`, or the python named by `LLMPROXY_SDK_PYTHON`).
//! Without them the browser test fails and says so.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test stops at the first surprise and prints what it measured"
)]
mod common;
use common::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

const MASTER: &str = "sk-master-ui-0123456789";
const ADMIN_TOKEN: &str = "admin-token-ui-0123456789";
const UPSTREAM_SECRET: &str = "sk-up-never-on-the-page-0123456789";
const MODEL: &str = "gpt-4o-mini";
/// A model name and alias that are XSS payloads: the console must show them as text.
const XSS_MODEL: &str = "<script>window.__xss=1</script>";
const XSS_ALIAS: &str = "\"><img src=x onerror=\"window.__xss=2\">";
const INSTALL: &str = "run `scripts/install-deps --test` (CI's scripts/test does)";

fn from_manifest(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The gateway's config: master key (virtual keys on SQLite), optionally the admin token, one
/// priced model, one model named by payloads. `models:` stays in block style (the browser test
/// inserts a broken entry after it).
fn console_config(mock: &Mock, admin_token: bool) -> String {
    let db = tmp_path("ui-keys.db");
    let admin = if admin_token {
        format!("admin: {{listen: \"127.0.0.1:{{ADMIN}}\", token: {ADMIN_TOKEN}}}\n")
    } else {
        "admin: {listen: \"127.0.0.1:{ADMIN}\"}\n".to_string()
    };
    format!(
        "server:\n  listeners: [{{name: main, listen: \"127.0.0.1:{{PORT}}\"}}]\n  threads: 2\n  master_key: \"{MASTER}\"\n\
         {admin}\
         logging: {{level: warn, access_log: off}}\n\
         state: {{database: \"sqlite://{}\", key_refresh: 200ms}}\n\
         cache: {{max_entries: 1000}}\n\
         upstreams:\n  - {{name: openai-main, provider: openai, url: \"{}\", auth: {{type: bearer, token: {UPSTREAM_SECRET}}}, health_check: {{interval: 500ms, timeout: 5s, unhealthy_after: 3, healthy_after: 1}}, limits: {{rpm: 100000}}}}\n\
         models:\n  - {{name: {MODEL}, pricing: {{input_per_mtok: 0.15, output_per_mtok: 0.6}}, cache: {{enabled: true, ttl: 60s}}, deployments: [{{upstream: openai-main, model: gpt-4o-mini, rpm: 60000, tpm: 5000000}}]}}\n\
         \x20 - name: '{XSS_MODEL}'\n    aliases: ['{XSS_ALIAS}']\n    deployments: [{{upstream: openai-main, model: gpt-4o}}]\n",
        db.display(),
        mock.url()
    )
}

/// Chromium and Playwright, or a panic saying how to install them.
async fn browser_tools() -> (PathBuf, PathBuf) {
    let python = std::env::var_os("LLMPROXY_SDK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| from_manifest("target/sdk-venv/bin/python"));
    let chromium = std::env::var_os("LLMPROXY_UI_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        chromium.exists(),
        "Chromium is not installed ({} is missing): {INSTALL}",
        chromium.display()
    );
    let out = tokio::process::Command::new(&python)
        .args(["-c", "import playwright.sync_api"])
        .output()
        .await;
    assert!(
        out.as_ref().is_ok_and(|o| o.status.success()),
        "Playwright for Python is not installed ({} -c 'import playwright': {}): {INSTALL}",
        python.display(),
        match &out {
            Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
            Err(e) => e.to_string(),
        }
    );
    (python, chromium)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_real_browser() {
    let (python, chromium) = browser_tools().await;
    let mock = Mock::start_with(
        "ui",
        &[
            "--latency-ms",
            "12",
            "--ttft-ms",
            "20",
            "--chunk-interval-ms",
            "3",
        ],
    );
    let gw = gateway(&console_config(&mock, false)).await;
    let shots = std::env::var_os("LLMPROXY_UI_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| from_manifest("target/ui-screenshots"));
    let out = tokio::process::Command::new(&python)
        .arg(from_manifest("tests/ui/console.py"))
        .env("LLMPROXY_UI_ADMIN", gw.admin(""))
        .env("LLMPROXY_UI_PROXY", gw.url(""))
        .env("LLMPROXY_UI_MASTER", MASTER)
        .env("LLMPROXY_UI_CONFIG", &gw.config)
        .env("LLMPROXY_UI_SCREENSHOTS", &shots)
        .env("LLMPROXY_UI_CHROMIUM", &chromium)
        .env("LLMPROXY_UI_NEVER", format!("{UPSTREAM_SECRET},{MASTER}"))
        .env("LLMPROXY_UI_MODEL", MODEL)
        .env("LLMPROXY_UI_XSS_MODEL", XSS_MODEL)
        .env("LLMPROXY_UI_XSS_ALIAS", XSS_ALIAS)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(600), out)
        .await
        .expect("the browser test took over 10 minutes")
        .expect("run tests/ui/console.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stdout.lines() {
        println!("{line}");
    }
    assert!(
        out.status.success() && stdout.contains("ui: all passed"),
        "the browser test failed ({}):\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
}

/// A console call with the session cookie and CSRF token as a browser sends them.
struct Browser {
    base: String,
    cookie: Option<String>,
    csrf: String,
}

impl Browser {
    fn new(gw: &Gateway) -> Browser {
        Browser {
            base: gw.admin(""),
            cookie: None,
            csrf: String::new(),
        }
    }

    async fn get(&self, path: &str) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut r = client().get(format!("{}/ui/api/{path}", self.base));
        if let Some(c) = &self.cookie {
            r = r.header("cookie", c);
        }
        let r = r.send().await.unwrap();
        let h = r.headers().clone();
        (
            r.status().as_u16(),
            r.json().await.unwrap_or(Value::Null),
            h,
        )
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value, reqwest::header::HeaderMap) {
        self.post_with(path, body, Some(&self.csrf), "application/json", None)
            .await
    }

    async fn post_with(
        &self,
        path: &str,
        body: Value,
        csrf: Option<&str>,
        content_type: &str,
        origin: Option<&str>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut r = client()
            .post(format!("{}/ui/api/{path}", self.base))
            .header("content-type", content_type)
            .body(body.to_string());
        if let Some(c) = &self.cookie {
            r = r.header("cookie", c);
        }
        if let Some(t) = csrf {
            r = r.header("x-csrf-token", t);
        }
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        let r = r.send().await.unwrap();
        let h = r.headers().clone();
        (
            r.status().as_u16(),
            r.json().await.unwrap_or(Value::Null),
            h,
        )
    }

    /// Keep the cookie a response set.
    fn keep_cookie(&mut self, h: &reqwest::header::HeaderMap) -> String {
        let set = h
            .get("set-cookie")
            .expect("a Set-Cookie header")
            .to_str()
            .unwrap()
            .to_string();
        self.cookie = Some(set.split(';').next().unwrap().to_string());
        set
    }
}

#[tokio::test]
async fn console_headers_sign_in_sessions_and_csrf() {
    let mock = Mock::start("ui-http");
    let gw = gateway(&console_config(&mock, true)).await;
    let c = client();

    // The page: its files, with a strict CSP, cacheable by ETag.
    let page = c.get(gw.admin("/ui")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'")
            && csp.contains("script-src 'self'")
            && !csp.contains("unsafe"),
        "{csp}"
    );
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let html = page.text().await.unwrap();
    assert!(html.contains("<script src=\"/ui/app.js\" defer></script>"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the page loads nothing from elsewhere"
    );
    let js = c.get(gw.admin("/ui/app.js")).send().await.unwrap();
    assert_eq!(
        js.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let etag = js.headers()["etag"].to_str().unwrap().to_string();
    let js_text = js.text().await.unwrap();
    assert!(
        !js_text.contains("innerHTML") && !js_text.contains("eval("),
        "the page builds its DOM as text"
    );
    let again = c
        .get(gw.admin("/ui/app.js"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    // No session: data calls are refused; bearer auth does not open the console's API.
    let mut b = Browser::new(&gw);
    let (s, v, _) = b.get("overview").await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("sign_in_required"))
    );
    let r = c
        .get(gw.admin("/ui/api/overview"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (s, v, h) = b.get("session").await;
    assert_eq!(s, 200);
    assert_eq!(v["sign_in_required"], true);
    assert_eq!(v["signed_in"], false);
    assert_eq!(v["credentials"], json!(["master_key", "admin_token"]));
    assert!(h.get("set-cookie").is_none(), "no session before sign-in");
    b.csrf = v["csrf"].as_str().unwrap().to_string();

    // Sign-in needs the sign-in CSRF token, JSON, this origin, and the right secret.
    let secret = json!({"secret": ADMIN_TOKEN});
    let (s, _, _) = b
        .post_with("login", secret.clone(), None, "application/json", None)
        .await;
    assert_eq!(s, 403);
    let (s, _, _) = b
        .post_with(
            "login",
            secret.clone(),
            Some("0f".repeat(32).as_str()),
            "application/json",
            None,
        )
        .await;
    assert_eq!(s, 403);
    let (s, _, _) = b
        .post_with("login", secret.clone(), Some(&b.csrf), "text/plain", None)
        .await;
    assert_eq!(s, 415);
    let (s, _, _) = b
        .post_with(
            "login",
            secret.clone(),
            Some(&b.csrf),
            "application/json",
            Some("http://evil.example"),
        )
        .await;
    assert_eq!(s, 403);
    let (s, v, _) = b.post("login", json!({"secret": "not-it"})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    let origin = gw.admin("");
    let (s, v, h) = b
        .post_with(
            "login",
            secret.clone(),
            Some(&b.csrf),
            "application/json",
            Some(&origin),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let set = b.keep_cookie(&h);
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=43200"] {
        assert!(set.contains(attr), "{set}");
    }
    let sign_in_token = std::mem::replace(&mut b.csrf, v["csrf"].as_str().unwrap().to_string());
    assert_ne!(sign_in_token, b.csrf, "each session has its own CSRF token");

    // Signed in: data flows; every POST needs this session's token.
    let (s, v, h) = b.get("overview").await;
    assert_eq!(s, 200);
    assert_eq!(h["cache-control"], "no-store");
    assert!(h["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    assert_eq!(
        v["timeline"]["series"]["rps"].as_array().unwrap().len(),
        360
    );
    let (s, _, _) = b
        .post_with("reload", json!({}), None, "application/json", None)
        .await;
    assert_eq!(s, 403);
    let (s, _, _) = b
        .post_with(
            "reload",
            json!({}),
            Some(&sign_in_token),
            "application/json",
            None,
        )
        .await;
    assert_eq!(s, 403, "the sign-in token is not this session's");
    let (s, v, _) = b.post("reload", json!({})).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")), "{v}");

    // Keys through the console: the secret once, never a hash; it works on the listener.
    let (s, k, _) = b
        .post(
            "manage/key/generate",
            json!({"key_alias": "<b>bold</b>", "models": [MODEL], "max_budget": 1}),
        )
        .await;
    assert_eq!(s, 200, "{k}");
    let key = k["key"].as_str().unwrap().to_string();
    let hash = {
        use sha2::Digest;
        let d = sha2::Sha256::digest(key.as_bytes());
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (s, list, _) = b.get("manage/key/list?return_full_object=true").await;
    assert_eq!(s, 200);
    assert_eq!(list["keys"][0]["key_alias"], "<b>bold</b>");
    let (s, _, _) = b.get("manage/team/list").await;
    assert!(s == 200 || s == 404, "{s}");
    let (s, v, _) = b.get("manage/v1/chat/completions").await;
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("not_found")));

    // No configured secret, no key hash, in anything the console's API answers.
    let mut bodies = Vec::new();
    for path in [
        "session",
        "overview",
        "models",
        "requests",
        "spend",
        "config",
        "manage/key/list?return_full_object=true",
        &format!(
            "manage/key/info?key={}",
            list["keys"][0]["key_id"].as_str().unwrap()
        ),
    ] {
        let (s, v, _) = b.get(path).await;
        assert_eq!(s, 200, "{path}: {v}");
        bodies.push((path.to_string(), v.to_string()));
    }
    for (path, body) in &bodies {
        for secret in [
            UPSTREAM_SECRET,
            MASTER,
            ADMIN_TOKEN,
            hash.as_str(),
            key.as_str(),
        ] {
            assert!(!body.contains(secret), "{path} holds a secret: {body}");
        }
    }
    assert!(bodies
        .iter()
        .any(|(p, b)| p == "config" && b.contains("***")));

    // The admin listener's own JSON of the same data, behind the bearer token.
    let r = c.get(gw.admin("/stats/timeline")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let t: Value = c
        .get(gw.admin("/stats/timeline?window=60"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(t["summary"]["requests"].as_u64().unwrap() >= 1, "{t}");
    let rq: Value = c
        .get(gw.admin("/stats/requests?model=gpt-4o-mini&limit=5"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rq["requests"][0]["model"], MODEL);
    assert_eq!(rq["requests"][0]["status"], 200);

    // Sign out: the session is gone.
    let (s, _, h) = b.post("logout", json!({})).await;
    assert_eq!(s, 200);
    assert!(h["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    let (s, _, _) = b.get("overview").await;
    assert_eq!(s, 401);

    // Guessing is cut short.
    let mut g = Browser::new(&gw);
    g.csrf = sign_in_token;
    let mut last = 0;
    for _ in 0..12 {
        last = g.post("login", json!({"secret": "guess"})).await.0;
    }
    assert_eq!(last, 429);
}

#[tokio::test]
async fn console_open_without_credentials_and_its_off_switch() {
    let mock = Mock::start("ui-open");
    let template = config(&format!(
        "upstreams:\n{}models:\n  - {{name: m, deployments: [{{upstream: a, model: x}}]}}\n",
        upstream("a", &mock)
    ));
    let gw = gateway(&template).await;
    let _ = gw.chat("m").await;
    let mut b = Browser::new(&gw);
    // No credential configured: the session comes without sign-in; POSTs still need its token.
    let (s, v, h) = b.get("session").await;
    assert_eq!(
        (s, v["sign_in_required"].as_bool(), v["signed_in"].as_bool()),
        (200, Some(false), Some(true))
    );
    b.keep_cookie(&h);
    b.csrf = v["csrf"].as_str().unwrap().to_string();
    let (s, v, _) = b.get("models").await;
    assert_eq!(s, 200);
    assert_eq!(v["models"][0]["deployments"][0]["upstream"], "a");
    assert!(v["upstreams"][0]["health_check"]["active"]
        .as_bool()
        .unwrap());
    let (s, _, _) = b
        .post_with("reload", json!({}), None, "application/json", None)
        .await;
    assert_eq!(s, 403);
    let (s, _, _) = b.post("reload", json!({})).await;
    assert_eq!(s, 200);
    let (s, v, _) = b.get("manage/key/list").await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("not_available"))
    );
    let (s, v, _) = b.get("requests?model=m").await;
    assert_eq!(s, 200);
    assert_eq!(v["requests"][0]["model"], "m");

    // admin_ui: false (reloaded): no console, and the ring buffers are no longer fed.
    let before =
        get_json::<Value>(gw.admin("/stats/timeline")).await["summary"]["requests"].clone();
    std::fs::write(
        &gw.config,
        format!(
            "{}admin_ui: false\n",
            std::fs::read_to_string(&gw.config).unwrap()
        ),
    )
    .unwrap();
    let r = client().post(gw.admin("/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client().get(gw.admin("/ui")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let (s, _, _) = b.get("overview").await;
    assert_eq!(s, 404);
    let _ = gw.chat("m").await;
    let after = get_json::<Value>(gw.admin("/stats/timeline")).await["summary"]["requests"].clone();
    assert_eq!(before, after);
}

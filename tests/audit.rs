//! Issue: the audit log, through the real gateway against SQLite and a real PostgreSQL: every
//! create, update and delete of keys, teams and end users and every config reload is recorded with
//! who did it and what changed (never a secret); `GET /audit/logs` filters and pages it, a virtual
//! key may not read it, and `llmproxy audit` prints it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a test stops at the first surprise and prints what it measured"
)]

mod common;

use common::governance::*;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const ADMIN_TOKEN: &str = "admin-token-governance-0123456789";

fn cfg(mock: &Mock, database: &str) -> String {
    keyed(
        database,
        &format!(
            "upstreams:\n{}models:\n  - {{name: m, deployments: [{{upstream: a, model: gpt-4o-mini}}]}}\n",
            upstream("a", mock)
        ),
        "",
        "",
    )
}

/// `POST /reload` on the admin listener, with the admin token when given.
async fn admin_reload(gw: &Gateway, token: Option<&str>) -> u16 {
    let mut r = client().post(gw.admin("/reload"));
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    r.send().await.unwrap().status().as_u16()
}

/// `GET /audit/logs?{query}`'s entries.
async fn audit(gw: &Gateway, query: &str) -> Vec<Value> {
    let (s, v) = manage(gw, "GET", &format!("/audit/logs?{query}"), Value::Null).await;
    assert_eq!(s, 200, "{v}");
    v["data"].as_array().unwrap().clone()
}

/// Waits until the newest entry has `action` on `table_name` (reloads are recorded as they end).
async fn newest(gw: &Gateway, table_name: &str, action: &str) -> Value {
    let t = Instant::now();
    loop {
        let all = audit(gw, &format!("table_name={table_name}&page_size=1")).await;
        if let Some(e) = all.first().filter(|e| e["action"] == action) {
            return e.clone();
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "no {action} {table_name}: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn suite(database: &str) {
    let mock = Mock::start("A");
    let gw = gateway(&cfg(&mock, database)).await;

    // --- keys ---
    let key = new_key(&gw, json!({"models": ["m"], "rpm": 5, "key_alias": "ci"})).await;
    let key_id = key_id_of(&gw, &key).await;
    let (s, _) = manage(&gw, "POST", "/key/update", json!({"key": key, "rpm": 10})).await;
    assert_eq!(s, 200);
    let other = new_key(&gw, json!({})).await;
    let (s, _) = manage(&gw, "POST", "/key/delete", json!({"keys": [other]})).await;
    assert_eq!(s, 200);
    // --- teams ---
    let (s, _) = manage(
        &gw,
        "POST",
        "/team/new",
        json!({"team_id": "research", "max_budget": 10}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = manage(
        &gw,
        "POST",
        "/team/update",
        json!({"team_id": "research", "tpm": 1000}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = manage(
        &gw,
        "POST",
        "/team/delete",
        json!({"team_ids": ["research"]}),
    )
    .await;
    assert_eq!(s, 200);
    // --- end users ---
    let (s, _) = manage(
        &gw,
        "POST",
        "/customer/new",
        json!({"user_id": "alice", "max_budget": 1}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = manage(
        &gw,
        "POST",
        "/customer/block",
        json!({"user_ids": ["alice"]}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = manage(
        &gw,
        "POST",
        "/customer/delete",
        json!({"user_ids": ["alice"]}),
    )
    .await;
    assert_eq!(s, 200);
    // A refused change is not an entry.
    let (s, _) = manage(
        &gw,
        "POST",
        "/team/update",
        json!({"team_id": "nope", "tpm": 1}),
    )
    .await;
    assert_eq!(s, 404);

    let entries = audit(&gw, "page_size=100").await;
    let seen: Vec<(String, String, String)> = entries
        .iter()
        .rev()
        .map(|e| {
            (
                e["table_name"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
                e["object_id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let other_id = seen[2].2.clone();
    let want: Vec<(String, String, String)> = [
        ("keys", "created", key_id.as_str()),
        ("keys", "updated", key_id.as_str()),
        ("keys", "created", other_id.as_str()),
        ("keys", "deleted", other_id.as_str()),
        ("teams", "created", "research"),
        ("teams", "updated", "research"),
        ("teams", "deleted", "research"),
        ("customers", "created", "alice"),
        ("customers", "updated", "alice"),
        ("customers", "deleted", "alice"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(seen, want);
    assert!(entries.iter().all(|e| e["changed_by"] == "master"));
    assert!(entries
        .iter()
        .all(|e| e["updated_at"].as_str().unwrap().ends_with('Z')));
    // What changed: only the changed fields, before and after.
    let upd = &entries[entries.len() - 2];
    assert_eq!(upd["before_value"], json!({"rpm": 5}), "{upd}");
    assert_eq!(upd["updated_values"], json!({"rpm": 10}));
    let created = &entries[entries.len() - 1];
    assert_eq!(created["updated_values"]["key_alias"], "ci");
    assert_eq!(created["updated_values"]["models"], json!(["m"]));
    let blocked = audit(&gw, "table_name=customers&action=updated").await;
    assert_eq!(blocked[0]["updated_values"], json!({"blocked": true}));
    // Filters and pages.
    assert_eq!(audit(&gw, &format!("object_id={key_id}")).await.len(), 2);
    assert_eq!(audit(&gw, "table_name=teams").await.len(), 3);
    let (_, p) = manage(&gw, "GET", "/audit/logs?page=2&page_size=4", Value::Null).await;
    assert_eq!(
        (p["total"].clone(), p["total_pages"].clone()),
        (json!(10), json!(3))
    );
    assert_eq!(p["data"].as_array().unwrap().len(), 4);

    // --- reloads: the admin listener (no token yet), SIGHUP, with the admin token, a failed one ---
    assert_eq!(admin_reload(&gw, None).await, 200);
    let e = newest(&gw, "config", "reloaded").await;
    assert_eq!(e["changed_by"], "admin");
    assert_eq!(e["updated_values"]["changed_count"], 0);
    let text = std::fs::read_to_string(&gw.config).unwrap();
    let with_token = text
        .replace("{name: m, ", "{name: m, aliases: [mm], ")
        .replace(
            "admin: {listen: ",
            &format!("admin: {{token: \"{ADMIN_TOKEN}\", listen: "),
        );
    std::fs::write(&gw.config, with_token).unwrap();
    gw.signal(libc::SIGHUP);
    let t = Instant::now();
    let e = loop {
        let e = newest(&gw, "config", "reloaded").await;
        if e["changed_by"] == "sighup" {
            break e;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The paths of what changed, never the values (the token is one).
    assert_eq!(
        e["updated_values"]["changed"],
        json!(["admin.token", "models[0].aliases"]),
        "{e}"
    );
    assert_eq!(admin_reload(&gw, None).await, 401);
    assert_eq!(admin_reload(&gw, Some(ADMIN_TOKEN)).await, 200);
    let e = newest(&gw, "config", "reloaded").await;
    assert_eq!(e["changed_by"], "admin_token");
    let text = std::fs::read_to_string(&gw.config).unwrap();
    std::fs::write(
        &gw.config,
        text.replace("{name: m, ", "{name: m, strategy: sk-looks-like-a-secret, "),
    )
    .unwrap();
    assert_eq!(admin_reload(&gw, Some(ADMIN_TOKEN)).await, 400);
    let e = newest(&gw, "config", "reload_failed").await;
    assert_eq!(e["changed_by"], "admin_token");
    assert_eq!(
        e["updated_values"]["paths"],
        json!(["models[0].strategy"]),
        "{e}"
    );

    // --- a virtual key may not read it; no secret in any of it ---
    let (s, v) = manage_as(&gw, &key, "GET", "/audit/logs", Value::Null).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("master_key_required"))
    );
    let (_, all) = manage(&gw, "GET", "/audit/logs?page_size=1000", Value::Null).await;
    let text = all.to_string();
    for secret in [
        key.as_str(),
        &key[3..],
        other.as_str(),
        MASTER,
        ADMIN_TOKEN,
        "sk-up-a",
        "sk-looks-like-a-secret",
    ] {
        assert!(
            !text.contains(secret),
            "`{secret}` in the audit log: {text}"
        );
    }

    // --- `llmproxy audit` prints the same log from the configured database ---
    let run = |args: &[&str]| {
        let out = std::process::Command::new(LLMPROXY)
            .arg("audit")
            .arg("-c")
            .arg(&gw.config)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // (The config is invalid now; its `state.database` is still read.)
    let lines = run(&["--table", "keys"]);
    assert_eq!(lines.lines().count(), 4, "{lines}");
    assert!(lines.lines().next().unwrap().contains("deleted"), "{lines}");
    assert!(
        lines.contains(&key_id) && !lines.contains(&key[3..]),
        "{lines}"
    );
    let v: Value = serde_json::from_str(&run(&["--json", "--table", "config"])).unwrap();
    assert_eq!(v["total"], 4);
    assert_eq!(v["data"][0]["action"], "reload_failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_against_sqlite() {
    let db = tmp_path("audit.db");
    suite(&format!("sqlite://{}", db.display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_against_postgres() {
    let pg = Postgres::start();
    let url = pg.create_db("audit");
    suite(&url).await;
}

/// Changes made with `llmproxy keys` are recorded as the command line's.
#[test]
fn cli_changes_are_audited() {
    let dir = tmp_path("audit-cli");
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}/keys.db", dir.display());
    let out = std::process::Command::new(LLMPROXY)
        .args(["keys", "generate", "--database", &db, "--rpm", "3"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let g: Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = std::process::Command::new(LLMPROXY)
        .args(["audit", "--database", &db, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["data"][0]["changed_by"], "cli");
    assert_eq!(v["data"][0]["object_id"], g["key_id"]);
    assert_eq!(v["data"][0]["updated_values"]["rpm"], 3);
    assert!(!v.to_string().contains(g["key"].as_str().unwrap()));
}

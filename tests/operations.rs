//! Operations: SIGHUP / POST /reload under load, SIGTERM draining, graceful upgrade with `-u`.
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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Load {
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    streams_ok: Arc<AtomicUsize>,
    streams_bad: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Mixed load: `workers` request loops and `streamers` loops of 2 s streams (20 chunks 100 ms apart).
/// `fresh` opens a new connection per request (as clients do across a process handover).
fn start_load(port: u16, workers: usize, streamers: usize, fresh: bool) -> Load {
    let l = Load {
        ok: Arc::default(),
        failed: Arc::default(),
        streams_ok: Arc::default(),
        streams_bad: Arc::default(),
        stop: Arc::default(),
        tasks: Vec::new(),
    };
    let mut tasks = Vec::new();
    let mk = move || {
        let b = reqwest::Client::builder().timeout(Duration::from_secs(30));
        if fresh {
            b.pool_max_idle_per_host(0)
        } else {
            b
        }
        .build()
        .unwrap()
    };
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    for _ in 0..workers {
        let (ok, failed, stop, url, c) = (
            l.ok.clone(),
            l.failed.clone(),
            l.stop.clone(),
            url.clone(),
            mk(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = c
                    .post(&url)
                    .json(&json!({"model": "m", "messages": []}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        eprintln!("request failed: {}", r.status());
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("request failed: {e:?}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for _ in 0..streamers {
        let (good, bad, stop, url, c) = (
            l.streams_ok.clone(),
            l.streams_bad.clone(),
            l.stop.clone(),
            url.clone(),
            mk(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = c
                    .post(&url)
                    .header("x-mock-chunks", "20")
                    .header("x-mock-chunk-interval-ms", "100")
                    .json(&json!({"model": "m", "stream": true, "messages": []}))
                    .send()
                    .await;
                // What went wrong, when it did: the status, the transport error, or the body cut.
                let text = match r {
                    Ok(r) if r.status() == 200 => match r.text().await {
                        Ok(t) => t,
                        Err(e) => format!("body cut: {e:?}"),
                    },
                    Ok(r) => format!("status {}", r.status()),
                    Err(e) => format!("request failed: {e:?}"),
                };
                if text.matches("tok").count() == 20
                    && text.ends_with("data: [DONE]\n\n")
                    && !text.contains("\"error\"")
                {
                    good.fetch_add(1, Ordering::Relaxed);
                } else {
                    eprintln!("stream incomplete: {text:.200}");
                    bad.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    Load { tasks, ..l }
}

impl Load {
    async fn stop(self) -> (usize, usize, usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.streams_ok.load(Ordering::Relaxed),
            self.streams_bad.load(Ordering::Relaxed),
        )
    }

    /// Wait (bounded) until `n` more streams completed.
    async fn stream_progress(&self, n: usize) {
        let start =
            self.streams_ok.load(Ordering::Relaxed) + self.streams_bad.load(Ordering::Relaxed);
        let t = Instant::now();
        while self.streams_ok.load(Ordering::Relaxed) + self.streams_bad.load(Ordering::Relaxed)
            < start + n
        {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "streams made no progress"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Wait (bounded) until `n` more requests completed: progress, not wall time, paces the test.
    async fn progress(&self, n: usize) {
        let start = self.ok.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed);
        let t = Instant::now();
        while self.ok.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed) < start + n {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "load made no progress"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn two_configs(a: &Mock, b: &Mock) -> (String, String) {
    let one = config(&format!(
        "upstreams:\n{}models:\n  - {{name: m, deployments: [{{upstream: a, model: m}}]}}\n",
        upstream("a", a)
    ));
    let two = config(&format!(
        "upstreams:\n{}{}models:\n  - {{name: m, deployments: [{{upstream: b, model: m}}]}}\n  - {{name: extra, deployments: [{{upstream: a, model: x}}]}}\n",
        upstream("a", a),
        upstream("b", b)
    ));
    (one, two)
}

#[tokio::test]
async fn sighup_reloads_under_load_lose_nothing() {
    let a = Mock::start_with("A", &["--no-record"]);
    let b = Mock::start_with("B", &["--no-record"]);
    let (one, two) = two_configs(&a, &b);
    let gw = gateway(&one).await;
    let write = |text: &str| {
        let yaml = text
            .replace("{PORT}", &gw.port.to_string())
            .replace("{ADMIN}", &gw.admin_port.to_string());
        std::fs::write(&gw.config, yaml).unwrap();
    };
    let load = start_load(gw.port, 4, 4, false);
    let mut served = Vec::new();
    for i in 0..10 {
        // Each reload lands while long streams are mid-flight.
        load.progress(50).await;
        load.stream_progress(2).await;
        write(if i % 2 == 0 { &two } else { &one });
        gw.signal(libc::SIGHUP);
        // The swap is visible in the metrics: wait for it (bounded).
        let t = Instant::now();
        loop {
            let m = gw.metrics().await;
            if metric(&m, "llmproxy_config_reloads_total", &[("result", "ok")])
                == Some((i + 1) as f64)
            {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "reload {} not applied",
                i + 1
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        served.push(served_by(&gw.chat("m").await));
    }
    load.progress(50).await;
    // An invalid config: reported, and the running one keeps serving.
    std::fs::write(
        &gw.config,
        "server: {listeners: []}\nmodels: [{name: m, deployments: [{upstream: nope, model: m}]}]\n",
    )
    .unwrap();
    gw.signal(libc::SIGHUP);
    let t = Instant::now();
    while metric(
        &gw.metrics().await,
        "llmproxy_config_reloads_total",
        &[("result", "error")],
    ) != Some(1.0)
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the failed reload was not counted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = client().post(gw.admin("/reload")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    let errors = v["errors"].as_array().unwrap();
    assert!(
        errors.iter().any(|e| e
            .as_str()
            .unwrap()
            .contains("models[0].deployments[0].upstream")),
        "{v}"
    );
    load.progress(50).await;
    let (ok, failed, streams_ok, streams_bad) = load.stop().await;
    eprintln!("reload test: {ok} requests ok, {failed} failed, {streams_ok} streams complete, {streams_bad} broken");
    assert_eq!(failed, 0);
    assert_eq!(streams_bad, 0);
    assert!(
        ok >= 550 && streams_ok >= 20,
        "{ok} requests, {streams_ok} streams"
    );
    // Each reload switched the deployment: A, B, A, B ... (config two routes m to B).
    assert_eq!(served, ["B", "A", "B", "A", "B", "A", "B", "A", "B", "A"]);
    assert_eq!(
        served_by(&gw.chat("m").await),
        "A",
        "the last valid config still serves"
    );
    // POST /reload with a valid file.
    write(&two);
    let r = client().post(gw.admin("/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(served_by(&gw.chat("m").await), "B");
}

#[tokio::test]
async fn sigterm_drains_streams_and_refuses_new_connections() {
    let a = Mock::start("A");
    let mut gw = gateway(
        &config(&format!(
            "upstreams:\n{}models:\n  - {{name: m, deployments: [{{upstream: a, model: m}}]}}\n",
            upstream("a", &a)
        ))
        .replace("  threads: 2\n", "  threads: 2\n  grace_period: 3s\n"),
    )
    .await;
    let url = gw.url("/v1/chat/completions");
    let mut streams = Vec::new();
    for _ in 0..5 {
        let url = url.clone();
        streams.push(tokio::spawn(async move {
            let r = client()
                .post(url)
                .header("x-mock-chunks", "10")
                .header("x-mock-chunk-interval-ms", "100")
                .json(&json!({"model": "m", "stream": true, "messages": []}))
                .send()
                .await
                .unwrap();
            r.text().await.unwrap()
        }));
    }
    // All five are streaming (the mock holds them) before the signal.
    let t = Instant::now();
    loop {
        let v: Value = client()
            .get(format!("{}/__mock/stats", a.base()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["in_flight"].as_i64().unwrap() == 5 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let term = Instant::now();
    gw.signal(libc::SIGTERM);
    // New connections are refused at once.
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", gw.port)).is_ok() {
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "still accepting after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for s in streams {
        let text = s.await.unwrap();
        assert_eq!(text.matches("tok").count(), 10, "{text}");
        assert!(text.ends_with("data: [DONE]\n\n"));
    }
    let status = gw.wait_exit(Duration::from_secs(15)).await.expect("exited");
    let took = term.elapsed();
    eprintln!("SIGTERM: exited {status:?} after {took:?}");
    assert!(
        took < Duration::from_secs(3) + Duration::from_secs(7),
        "exit within the grace (+ runtime shutdown)"
    );
}

#[tokio::test]
async fn graceful_upgrade_hands_over_listeners_without_failures() {
    let a = Mock::start_with("A", &["--no-record"]);
    let sock = tmp_path("upgrade.sock");
    let template = config(&format!(
        "upstreams:\n{}models:\n  - {{name: m, deployments: [{{upstream: a, model: m}}]}}\n",
        upstream("a", &a)
    ))
    .replace(
        "  threads: 2\n",
        &format!(
            "  threads: 2\n  grace_period: 4s\n  upgrade_sock: \"{}\"\n",
            sock.display()
        ),
    );
    let mut old = gateway(&template).await;
    let load = start_load(old.port, 4, 2, false);
    load.progress(100).await;
    // The new process waits for the listening sockets of the old one.
    let cfg = old.config.to_str().unwrap().to_string();
    let new_child = std::process::Command::new(LLMPROXY)
        .args(["run", "-c", &cfg, "-u"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    // Wait until the new process listens on the upgrade socket, then hand over.
    let t = Instant::now();
    while !sock.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "new process never opened the upgrade socket"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    old.signal(libc::SIGQUIT);
    assert!(
        old.wait_exit(Duration::from_secs(20)).await.is_some(),
        "old process did not exit"
    );
    load.progress(200).await;
    let (ok, failed, streams_ok, streams_bad) = load.stop().await;
    eprintln!("upgrade test: {ok} requests ok, {failed} failed, {streams_ok} streams ok, {streams_bad} broken");
    let mut new_child = new_child;
    let _ = new_child.kill();
    let _ = new_child.wait();
    assert_eq!(failed, 0);
    assert_eq!(streams_bad, 0);
}

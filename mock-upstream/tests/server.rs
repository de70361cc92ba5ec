//! The mock's lifecycle, in-process and as the binary: it answers once started, and a dropped
//! mock breaks its open streams and refuses connections.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step should panic"
)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use mock_upstream::MockServer;

/// Send a raw HTTP/1.1 request; the connection, for reading the answer.
fn send(addr: SocketAddr, request: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    s
}

fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = send(
        addr,
        &format!("GET {path} HTTP/1.1\r\nhost: mock\r\nconnection: close\r\n\r\n"),
    );
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn answers_and_names_itself() {
    let mock = MockServer::start(&["--name", "unit"]).unwrap();
    assert_eq!(mock.addr().port(), mock.port());
    assert!(mock.addr().ip().is_loopback());
    let answer = get(mock.addr(), "/v1/models");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("x-mock-name: unit"), "{answer}");
    assert!(answer.contains(r#""id":"mock-model""#), "{answer}");
    let stats = get(mock.addr(), "/__mock/stats");
    assert!(stats.contains(r#""requests":1"#), "{stats}");
}

#[test]
fn bad_arguments_are_refused() {
    let e = MockServer::start(&["--chunks", "many"]).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = MockServer::start(&["--name", "bad\nname"]).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[test]
fn dropping_breaks_streams_and_closes_the_port() {
    let mock = MockServer::start(&[
        "--chunks",
        "50",
        "--chunk-interval-ms",
        "100",
        "--name",
        "dropped",
    ])
    .unwrap();
    let addr = mock.addr();
    let body = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut s = send(
        addr,
        &format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: mock\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    // Wait for the first event, then drop the mock mid-stream.
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("data: ") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the first event");
        seen.extend_from_slice(&buf[..n]);
    }
    drop(mock);
    // The rest of the stream: whatever was in flight, then the connection ends (EOF or reset)
    // without the stream's end.
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let seen = String::from_utf8_lossy(&seen);
    assert!(!seen.contains("[DONE]"), "{seen}");
    assert!(!seen.ends_with("0\r\n\r\n"), "{seen}");
    // The port is closed: a connection is refused. Tests run in parallel, so the freed port may
    // already be another test's mock (or the connection may meet itself, when the kernel picks the
    // port as its source): whatever answers then must not be this mock.
    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused),
        Ok(s) if s.local_addr().ok() == Some(addr) => {}
        Ok(mut s) => {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let _ =
                s.write_all(b"GET /v1/models HTTP/1.1\r\nhost: mock\r\nconnection: close\r\n\r\n");
            let mut answer = Vec::new();
            let _ = s.read_to_end(&mut answer);
            let answer = String::from_utf8_lossy(&answer);
            assert!(!answer.contains("x-mock-name: dropped"), "{answer}");
        }
    }
}

#[test]
fn the_binary_announces_its_address() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mock_upstream"))
        .args(["--listen", "127.0.0.1:0", "--name", "bin"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    let answer = get(addr, "/v1/models");
    let _ = child.kill();
    let _ = child.wait();
    assert!(answer.contains("x-mock-name: bin"), "{answer}");
}

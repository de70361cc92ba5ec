//! `mock_upstream`: the mock upstream as a process, for the load tests and manual runs. The CLI is
//! documented in the library (`mock_upstream` crate docs); once listening, the process prints
//! `listening on <addr>` on stdout (harnesses read the port from it) and serves until killed.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the command line: `listening on ADDR` is what harnesses read"
)]

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;
use mock_upstream::{MockServer, Options};

fn main() -> ExitCode {
    let server = match MockServer::start_with(Options::parse()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mock_upstream: {e}");
            return ExitCode::FAILURE;
        }
    };
    let announced = {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", server.addr()).and_then(|()| out.flush())
    };
    if let Err(e) = announced {
        eprintln!("mock_upstream: stdout: {e}");
        return ExitCode::FAILURE;
    }
    match server.wait() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mock_upstream: {e}");
            ExitCode::FAILURE
        }
    }
}

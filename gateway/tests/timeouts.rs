//! Connection hardening on a real gateway: a client that is slow to send its headers, idles on
//! a keep-alive connection, or trickles its body is cut off after the configured time instead
//! of holding a connection forever (the body case with a 408 `request_timeout` error).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn server() -> common::TestServer {
    common::start(|c| {
        c.limits.header_timeout_secs = 1;
        c.limits.body_timeout_secs = 1;
    })
}

fn connect(url: &str) -> TcpStream {
    let s = TcpStream::connect(url.trim_start_matches("http://")).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

/// Reads until the server closes the connection; returns what it sent and how long it took.
fn read_to_close(s: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
    }
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn slow_headers_idle_connections_and_slow_bodies_are_cut_off() {
    let srv = server();

    // Half a request line, then nothing.
    let mut s = connect(&srv.url);
    s.write_all(b"GET /healthz HT").expect("write");
    let (_, took) = read_to_close(&mut s);
    assert!(took < Duration::from_secs(5), "closed after {took:?}");

    // One whole request on a keep-alive connection, then idle.
    let mut s = connect(&srv.url);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let (answer, took) = read_to_close(&mut s);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        took < Duration::from_secs(5),
        "idle connection closed after {took:?}"
    );

    // Headers promising 100 bytes of body, then only 10.
    let mut s = connect(&srv.url);
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\":",
    )
    .expect("write");
    let (answer, took) = read_to_close(&mut s);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
    assert!(took < Duration::from_secs(5), "answered after {took:?}");

    // The server still serves.
    let mut s = connect(&srv.url);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    assert!(read_to_close(&mut s).0.starts_with("HTTP/1.1 200"));
}

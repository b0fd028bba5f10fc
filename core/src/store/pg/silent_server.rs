//! A database that goes silent without closing the connection (a host down, a network cut):
//! the test server behind a proxy that stops forwarding on request. Callers of the store get
//! `store_timeout` within the call timeout instead of waiting for good.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::store::testing::{record, PgDatabase};
use crate::store::{FeedbackLabel, NewFeedback, StoreError, StoreHandle, StoreLocation};

/// Forwards `from` to `to` until `silent`, then reads and drops everything.
fn pump(mut from: TcpStream, mut to: TcpStream, silent: Arc<AtomicBool>) {
    let mut buf = [0u8; 8192];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            return;
        }
        if !silent.load(Ordering::SeqCst) && to.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// A proxy to `upstream` on a loopback port; returns its address and the switch.
fn proxy(upstream: String) -> (String, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let silent = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&silent);
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let (c2, s2) = (
                client.try_clone().expect("clone"),
                server.try_clone().expect("clone"),
            );
            let (a, b) = (Arc::clone(&s), Arc::clone(&s));
            std::thread::spawn(move || pump(client, server, a));
            std::thread::spawn(move || pump(s2, c2, b));
        }
    });
    (addr, silent)
}

#[test]
fn a_silent_database_gives_a_timeout_not_a_hang() {
    // The blocking PostgreSQL client of the fixture runs outside the runtime.
    let db = PgDatabase::new();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(silent(&db));
}

async fn silent(db: &PgDatabase) {
    let rest = db.url.split_once("://").expect("url").1;
    let (credentials, rest) = rest.rsplit_once('@').expect("credentials");
    let (host_port, path) = rest.split_once('/').expect("path");
    let (addr, silent) = proxy(host_port.to_owned());
    let url = format!("postgres://{credentials}@{addr}/{path}");
    let handle = StoreHandle::open(
        StoreLocation::parse(&url).expect("url"),
        Default::default(),
        8,
    )
    .expect("open through the proxy")
    .with_call_timeout(Duration::from_secs(2));
    handle
        .record_response(record("chatcmpl-silent", 1_700_000_000))
        .await
        .expect("recorded while the database answers");

    silent.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let outcome = tokio::time::timeout(
        Duration::from_secs(20),
        handle.feedback(NewFeedback {
            response_id: "chatcmpl-silent".into(),
            label: FeedbackLabel::OverRefusal,
            comment: None,
            caller: None,
        }),
    )
    .await
    .expect("the call returned instead of hanging");
    assert_eq!(outcome, Err(StoreError::Timeout { secs: 2 }));
    assert!(started.elapsed() < Duration::from_secs(10));
    // The store thread is still blocked on the silent connection: joining it on drop would
    // wait for the TCP timeouts, which this test does not need to see.
    std::mem::forget(handle);
}

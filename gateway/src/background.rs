//! A gateway on a thread of its own with its own runtime, for programs that embed one next to
//! blocking code (the test suites of both crates): it listens on a loopback port from the
//! start, and dropping the handle shuts it down gracefully and waits for it.

use std::net::SocketAddr;
use std::thread::JoinHandle;

use crate::Config;

/// A running background gateway; dropping it stops it.
#[derive(Debug)]
pub struct Background {
    /// Where it listens: `127.0.0.1` and a free port.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    /// Binds `127.0.0.1:0` and serves `config` there on a new thread. A gateway that fails to
    /// start or stops with an error panics its thread, which the caller sees as a server that
    /// never becomes ready.
    pub fn spawn(config: Config) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                crate::run(listener, config, async {
                    let _ = stopped.await;
                })
                .await
                .expect("gateway runs");
            });
        });
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://` and the address.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

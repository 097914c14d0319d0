//! The topology every contender shares: its server side on one thread, its
//! client side on another (the main thread), each a current-thread tokio
//! runtime with a `LocalSet` — the only setup capnp-rpc (!Send) allows, so
//! the same for all.

use std::future::Future;
use std::sync::mpsc;

type Job = Box<dyn FnOnce() + Send>;

pub struct ServerThread {
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
}

impl ServerThread {
    pub fn start() -> ServerThread {
        let (jobs, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("bench-server".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let local = tokio::task::LocalSet::new();
                ready_tx.send(()).unwrap();
                local.block_on(&rt, async move {
                    while let Some(job) = rx.recv().await {
                        job();
                    }
                });
            })
            .unwrap();
        ready_rx.recv().unwrap();
        ServerThread { jobs }
    }

    /// Runs `make()` on the server thread and spawns the future it returns there.
    pub fn spawn<F, Fut>(&self, make: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let job: Job = Box::new(move || {
            tokio::task::spawn_local(make());
        });
        if self.jobs.send(job).is_err() {
            panic!("the server thread is gone");
        }
    }
}

/// A loopback listener bound now (so its address is known at once), to be
/// moved to the server thread.
pub fn listener() -> (std::net::TcpListener, std::net::SocketAddr) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

pub fn tokio_listener(std: std::net::TcpListener) -> tokio::net::TcpListener {
    tokio::net::TcpListener::from_std(std).unwrap()
}

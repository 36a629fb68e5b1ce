//! The threads that serve proxy connections. Each runs a current-thread
//! runtime with its own pool of upstream connections, so a request is parsed,
//! forwarded and answered on one thread without touching another thread's
//! scheduler or pool (DESIGN §8). Each worker accepts on its own socket
//! (see `listen`), so a connection never crosses threads.

use std::future::Future;
use std::sync::Arc;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::Upstream;
use crate::metrics::Metrics;
use crate::tls::TlsError;
use crate::upstream::client::{self, UpstreamClient};

/// A problem starting the worker threads.
#[derive(Debug, thiserror::Error)]
pub enum WorkersError {
    #[error("cannot start a proxy worker thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// One worker: where its connections run and the upstream pool they share.
pub struct Worker {
    handle: Handle,
    pub client: UpstreamClient,
}

/// The running workers.
pub struct Workers {
    workers: Vec<Worker>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// How many workers `workers = N` means (0: one per CPU).
pub fn count(configured: usize) -> usize {
    match configured {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

impl Workers {
    /// Starts `count` workers.
    pub fn start(
        count: usize,
        upstream: &Upstream,
        metrics: &Arc<Metrics>,
    ) -> Result<Workers, WorkersError> {
        let mut workers = Workers {
            workers: Vec::with_capacity(count),
            stops: Vec::with_capacity(count),
            threads: Vec::with_capacity(count),
        };
        for i in 0..count {
            let runtime = Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(WorkersError::Thread)?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("safedelete-worker-{i}"))
                .spawn(move || {
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                    // Dropping the runtime drops whatever tasks are left; the
                    // server has joined or cut every connection by now.
                })
                .map_err(WorkersError::Thread)?;
            workers.workers.push(Worker {
                handle,
                client: client::build(upstream, metrics.clone())?,
            });
            workers.stops.push(stop);
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    pub fn count(&self) -> usize {
        self.workers.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Worker> {
        self.workers.iter()
    }

    /// Stops every worker thread and waits for it to end.
    pub async fn stop(self) {
        for stop in self.stops {
            let _ = stop.send(());
        }
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

impl Worker {
    /// Runs `task` on this worker's thread.
    pub fn run<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(task)
    }
}

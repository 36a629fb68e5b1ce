//! The threads that serve proxy connections. Each runs a current-thread
//! runtime with its own pool of upstream connections, so a request is parsed,
//! forwarded and answered on one thread without touching another thread's
//! scheduler or pool (DESIGN §8). The accept loop hands each new connection to
//! the worker with the fewest open connections.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

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
    open: Arc<AtomicUsize>,
}

/// The running workers.
pub struct Workers {
    workers: Vec<Worker>,
    /// Where the next search for the least busy worker starts, so that ties
    /// (all idle, say) rotate instead of piling onto the first worker.
    next: AtomicUsize,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts `count` workers (0 means one per CPU).
    pub fn start(
        count: usize,
        upstream: &Upstream,
        metrics: &Arc<Metrics>,
    ) -> Result<Workers, WorkersError> {
        let count = match count {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let mut workers = Workers {
            workers: Vec::with_capacity(count),
            next: AtomicUsize::new(0),
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
                open: Arc::default(),
            });
            workers.stops.push(stop);
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    pub fn count(&self) -> usize {
        self.workers.len()
    }

    /// The worker with the fewest open connections.
    pub fn least_busy(&self) -> &Worker {
        let n = self.workers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        (0..n)
            .map(|i| &self.workers[(start + i) % n])
            .min_by_key(|w| w.open.load(Ordering::Relaxed))
            .expect("at least one worker runs")
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
    /// Runs a connection on this worker, tracked in `set` and counted as
    /// open until it ends.
    pub fn spawn(
        &self,
        set: &mut JoinSet<()>,
        connection: impl Future<Output = ()> + Send + 'static,
    ) {
        let open = OpenConnection::new(self.open.clone());
        set.spawn_on(
            async move {
                let _open = open;
                connection.await;
            },
            &self.handle,
        );
    }
}

/// Counts a connection as open for as long as it lives.
struct OpenConnection(Arc<AtomicUsize>);

impl OpenConnection {
    fn new(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        OpenConnection(count)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

//! Graceful shutdown: one signal for every task, and a wait until all have let go.
//!
//! Every task holds a [`Shutdown`]; cloning it also clones a hidden `mpsc::Sender`, so the
//! controller knows all tasks are gone when its receiver yields `None`. This is the
//! mini-redis pattern, with a `watch` channel instead of `broadcast` so that a task that
//! subscribes after the signal still sees it.

use std::future::Future;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// A task's view of the shutdown signal. Dropping every clone tells the controller that
/// all tasks have finished.
#[derive(Debug, Clone)]
pub struct Shutdown {
    /// Turns `true` once, when shutdown starts.
    signal: watch::Receiver<bool>,
    /// Held only to be dropped: the controller waits until no clone is alive.
    _alive: mpsc::Sender<()>,
}

impl Shutdown {
    /// Resolves once shutdown has started (at once if it already has).
    pub async fn wait(&mut self) {
        // An error means the controller is gone, which also means: stop.
        let _ = self.signal.wait_for(|started| *started).await;
    }

    /// Whether shutdown has started.
    pub fn is_started(&self) -> bool {
        *self.signal.borrow()
    }
}

/// Owns the signal; [`ShutdownController::shutdown`] fires it and waits for the tasks.
#[derive(Debug)]
pub struct ShutdownController {
    signal: watch::Sender<bool>,
    alive_tx: mpsc::Sender<()>,
    alive_rx: mpsc::Receiver<()>,
}

impl Default for ShutdownController {
    fn default() -> Self {
        let (signal, _) = watch::channel(false);
        let (alive_tx, alive_rx) = mpsc::channel(1);
        ShutdownController {
            signal,
            alive_tx,
            alive_rx,
        }
    }
}

impl ShutdownController {
    /// A handle for one more task.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            signal: self.signal.subscribe(),
            _alive: self.alive_tx.clone(),
        }
    }

    /// Fires the signal and waits up to `grace` for every [`Shutdown`] to be dropped.
    ///
    /// Returns `false` if some task was still running when the grace period ran out, so
    /// the caller can log it; shutdown never hangs.
    pub async fn shutdown(self, grace: Duration) -> bool {
        let ShutdownController {
            signal,
            alive_tx,
            mut alive_rx,
        } = self;
        signal.send_replace(true);
        drop(alive_tx);
        tokio::time::timeout(grace, alive_rx.recv()).await.is_ok()
    }
}

/// The shutdown future `main` hands to `run`: resolves on Ctrl-C (SIGINT) or SIGTERM.
///
/// The handlers are installed when this is called, not when the future is first polled: a
/// tokio signal stream only sees signals that arrive after it exists, and until then the
/// default action kills the process. `main` calls this before it prints its address, so
/// "the address is printed" means "SIGTERM is graceful from now on".
///
/// # Panics
/// Outside a tokio runtime with signals enabled (as `#[tokio::main]` provides).
pub fn signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        for (name, handler) in [("SIGINT", &interrupt), ("SIGTERM", &terminate)] {
            if let Err(err) = handler {
                // Without a handler that signal keeps its default action (the process
                // dies); the other one still stops the servers gracefully.
                tracing::warn!(cause = %err, "cannot listen for {name}");
            }
        }
        async move {
            let wait = |handler: std::io::Result<tokio::signal::unix::Signal>| async move {
                match handler {
                    Ok(mut stream) => {
                        stream.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(interrupt) => {}
                _ = wait(terminate) => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        // FIXME: elsewhere Ctrl-C is caught only once the future is first polled; the
        // servers are deployed on Unix, where the handlers are eager.
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

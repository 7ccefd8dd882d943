//! The pause switch of a process's listeners: open while they read their sockets, closed
//! while a successor serves on the same sockets (the handover). A primitive the listeners and
//! the metrics endpoint wait on; who opens and closes it is the process's business.

use tokio::sync::watch;

/// Whether this process's listeners read their sockets: closed while a successor serves.
#[derive(Clone)]
pub struct Gate(watch::Receiver<bool>);

impl Gate {
    /// An open gate and its switch.
    pub fn new() -> (watch::Sender<bool>, Gate) {
        let (tx, rx) = watch::channel(true);
        (tx, Gate(rx))
    }

    /// Whether this process's listeners read (false once a successor serves).
    pub fn is_open(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves at once while open, else when it opens again.
    pub async fn opened(&mut self) {
        if self.0.wait_for(|open| *open).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Resolves when the gate closes.
    pub async fn closed(&mut self) {
        if self.0.wait_for(|open| !*open).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

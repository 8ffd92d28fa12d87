//! The daemon-wide "shutting down" signal.
//!
//! Long-lived calls (event subscriptions, health watches, waits) end when it
//! fires, so a graceful shutdown is not held open by clients that would
//! otherwise never hang up.

use tokio::sync::watch;

/// Fires once; every clone sees it.
#[derive(Clone, Debug)]
pub struct ShutdownSignal {
    receiver: watch::Receiver<bool>,
}

/// The side that fires the signal.
#[derive(Debug)]
pub struct ShutdownTrigger {
    sender: watch::Sender<bool>,
}

/// A signal and its trigger.
pub fn channel() -> (ShutdownTrigger, ShutdownSignal) {
    let (sender, receiver) = watch::channel(false);
    (ShutdownTrigger { sender }, ShutdownSignal { receiver })
}

impl ShutdownTrigger {
    /// Fires the signal.
    pub fn fire(&self) {
        self.sender.send_replace(true);
    }
}

impl ShutdownSignal {
    /// A signal that never fires (tests, tools).
    pub fn never() -> Self {
        let (sender, receiver) = watch::channel(false);
        // Keep the channel open forever so `fired` never resolves.
        std::mem::forget(sender);
        Self { receiver }
    }

    /// Whether shutdown has begun.
    pub fn is_fired(&self) -> bool {
        *self.receiver.borrow()
    }

    /// Resolves once shutdown begins (or the trigger is dropped).
    pub async fn fired(&self) {
        let mut receiver = self.receiver.clone();
        let _ = receiver.wait_for(|fired| *fired).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn fires_for_every_clone() {
        let (trigger, signal) = channel();
        let other = signal.clone();
        assert!(!signal.is_fired());
        let waiter = tokio::spawn(async move { other.fired().await });
        trigger.fire();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(signal.is_fired());
    }

    #[tokio::test]
    async fn never_does_not_fire() {
        let signal = ShutdownSignal::never();
        assert!(
            tokio::time::timeout(Duration::from_millis(20), signal.fired())
                .await
                .is_err()
        );
    }
}

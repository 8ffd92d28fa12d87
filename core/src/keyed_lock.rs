//! Per-key async locks: operations on the same names wait for each other,
//! everything else runs in parallel.
//!
//! Snapshot operations do their slow filesystem work (copying a tree,
//! syncing a layer) outside any metadata transaction, so two requests for
//! the same key must not interleave; requests for other keys never wait.
//! Keys are taken in sorted order, so two operations locking overlapping
//! sets cannot deadlock. An entry lives only while someone holds or waits
//! for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

/// A set of named async locks.
#[derive(Debug, Default)]
pub struct KeyedLocks {
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// Holds some keys; they are released on drop.
#[derive(Debug)]
pub struct KeyedGuard {
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    held: Vec<(String, OwnedMutexGuard<()>)>,
}

impl KeyedLocks {
    /// No locks held.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits until every key is free, then holds them all. Duplicate and
    /// empty keys are ignored.
    pub async fn lock(&self, keys: impl IntoIterator<Item = String>) -> KeyedGuard {
        let mut keys: Vec<String> = keys.into_iter().filter(|k| !k.is_empty()).collect();
        keys.sort();
        keys.dedup();
        let mut held = Vec::with_capacity(keys.len());
        for key in keys {
            let mutex = {
                let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
                Arc::clone(locks.entry(key.clone()).or_default())
            };
            held.push((key, mutex.lock_owned().await));
        }
        KeyedGuard {
            locks: Arc::clone(&self.locks),
            held,
        }
    }

    /// How many keys have an entry (held or awaited); for tests.
    pub fn len(&self) -> usize {
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no key has an entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for KeyedGuard {
    fn drop(&mut self) {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        for (key, guard) in self.held.drain(..) {
            drop(guard);
            // The map's Arc is the only one left: nobody holds or waits.
            if locks.get(&key).is_some_and(|m| Arc::strong_count(m) == 1) {
                locks.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn the_same_key_waits_other_keys_do_not() {
        let locks = Arc::new(KeyedLocks::new());
        let held = locks.lock(["a".to_string(), "b".to_string()]).await;
        let other = tokio::time::timeout(Duration::from_millis(100), locks.lock(["c".to_string()])).await;
        assert!(other.is_ok(), "an unrelated key is free");
        drop(other);
        let waiting = {
            let locks = Arc::clone(&locks);
            tokio::spawn(async move { locks.lock(["b".to_string(), "z".to_string()]).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "an overlapping set waits");
        drop(held);
        let guard = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        drop(guard);
        assert!(locks.is_empty(), "entries go once nobody holds them");
    }
}

//! The digests of tenants' tokens, as the database last gave them
//! (`voxanne.webhook_credential_digests()`), so that a tenant's token is authenticated from the
//! headers alone, before its body is read, like a platform token.
//!
//! The set is loaded when a token misses it: a new credential works from its first request. A
//! miss waits for the next load, and loads happen one at a time and at most once per
//! [`MIN_RELOAD`], so tokens nobody registered cost one query a second at most, whatever their
//! number. A revoked credential can stay in the set until the next load; the database refuses it
//! anyway (28000), which also triggers a load.
//!
//! A set lookup is not constant-time, and needs not be: the key is the SHA-256 of the presented
//! token, which a sender cannot steer towards a stored one.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

/// How often the set may be loaded at most.
pub const MIN_RELOAD: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct TenantCredentials {
    digests: RwLock<HashSet<[u8; 32]>>,
    /// When the last load finished, whether or not it succeeded.
    loaded_at: Mutex<Option<Instant>>,
    loading: tokio::sync::Mutex<()>,
}

impl TenantCredentials {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn contains(&self, digest: &[u8; 32]) -> bool {
        self.digests.read().unwrap_or_else(|e| e.into_inner()).contains(digest)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.digests.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Replaces the set; a value that is no SHA-256 digest is skipped.
    pub fn replace(&self, digests: impl IntoIterator<Item = Vec<u8>>) {
        let set = digests.into_iter().filter_map(|d| <[u8; 32]>::try_from(d).ok()).collect();
        *self.digests.write().unwrap_or_else(|e| e.into_inner()) = set;
    }

    fn loaded_at(&self) -> Option<Instant> {
        *self.loaded_at.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads the set with `load` for a request that missed it at `missed`, unless a load
    /// finished since; waits for a load in flight, and until [`MIN_RELOAD`] has passed since the
    /// last. False when `load` failed (None): the old set stays.
    pub async fn reload_after_miss<F, Fut>(&self, missed: Instant, load: F) -> bool
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Option<Vec<Vec<u8>>>>,
    {
        let _one_at_a_time = self.loading.lock().await;
        let last = self.loaded_at();
        if last.is_some_and(|at| at > missed) {
            return true;
        }
        if let Some(next) = last.map(|at| at + MIN_RELOAD).filter(|&next| next > Instant::now()) {
            tokio::time::sleep_until(next).await;
        }
        let loaded = load().await;
        let ok = loaded.is_some();
        if let Some(digests) = loaded {
            self.replace(digests);
        }
        *self.loaded_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        ok
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn misses_share_one_load_and_loads_come_at_most_once_a_second() {
        let tenants = Arc::new(TenantCredentials::new());
        let loads = Arc::new(AtomicUsize::new(0));
        let load = |loads: Arc<AtomicUsize>| async move {
            loads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Some(vec![vec![7u8; 32], vec![1, 2, 3]])
        };
        // a burst of misses: one load
        let missed = Instant::now();
        let burst: Vec<_> = (0..20)
            .map(|_| {
                let (tenants, loads) = (tenants.clone(), loads.clone());
                tokio::spawn(async move { tenants.reload_after_miss(missed, || load(loads)).await })
            })
            .collect();
        for miss in burst {
            assert!(miss.await.unwrap());
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert!(tenants.contains(&[7u8; 32]));
        assert_eq!(tenants.len(), 1, "a value that is no digest is skipped");

        // the next miss waits for the second to pass
        let before = Instant::now();
        assert!(tenants.reload_after_miss(Instant::now(), || load(loads.clone())).await);
        assert_eq!(loads.load(Ordering::SeqCst), 2);
        assert!(before.elapsed() >= MIN_RELOAD - Duration::from_millis(60), "{:?}", before.elapsed());

        // a failed load keeps the old set
        assert!(!tenants.reload_after_miss(Instant::now(), || async { None }).await);
        assert!(tenants.contains(&[7u8; 32]));
    }
}

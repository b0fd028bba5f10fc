//! The response cache (`moka`): deterministic requests (greedy, or a fixed seed) are answered
//! from memory when the same request was answered before by the same model, adapter and policy.
//!
//! Bounds: `max_bytes` and `max_entries` at once. moka bounds one weight, so every entry weighs
//! at least `max_bytes / max_entries`: the total weight stays under `max_bytes`, which also
//! caps the count at `max_entries`. Entries expire after `ttl_secs`; an adapter swap empties the
//! cache (the adapter version is part of the key too, so no stale entry can answer even before
//! the eviction finishes). With `per_key`, each API key has its own namespace and one tenant
//! never receives an answer computed for another.

mod entry;
mod key;

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

pub use entry::{Entry, Recorder};
pub use key::{cacheable, Key, KeyBuilder};

/// `[cache]` in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Answer repeated deterministic requests from memory.
    pub enabled: bool,
    /// Most entries kept.
    pub max_entries: u64,
    /// Most bytes of cached responses kept (approximate: text, decision and bookkeeping).
    pub max_bytes: u64,
    /// Seconds an entry stays valid after it was stored.
    pub ttl_secs: u64,
    /// One namespace per API key (requests by different keys never share entries). Without
    /// auth every request is in the same namespace.
    pub per_key: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_entries: 10_000,
            max_bytes: 64 << 20,
            ttl_secs: 600,
            per_key: true,
        }
    }
}

impl CacheConfig {
    /// Checks the bounds, naming the bad key.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if !self.enabled {
            return Ok(());
        }
        if self.max_entries == 0 {
            return Err((
                "cache.max_entries",
                "must be positive (or set cache.enabled = false)",
            ));
        }
        if self.max_bytes < 1024 {
            return Err(("cache.max_bytes", "must be at least 1024"));
        }
        if self.ttl_secs == 0 {
            return Err((
                "cache.ttl_secs",
                "must be positive (or set cache.enabled = false)",
            ));
        }
        Ok(())
    }
}

/// What the cache did for a request (the `x-cache` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    /// Not cacheable (sampling without a seed) or the cache is off.
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Bypass => "bypass",
        }
    }
}

/// The cache of finished responses.
#[derive(Clone)]
pub struct ResponseCache {
    inner: moka::sync::Cache<Key, Arc<Entry>>,
    per_key: bool,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("entries", &self.inner.entry_count())
            .field("bytes", &self.inner.weighted_size())
            .finish()
    }
}

impl ResponseCache {
    /// The cache `config` describes, or `None` when it is disabled.
    pub fn new(config: &CacheConfig) -> Option<Self> {
        if !config.enabled {
            return None;
        }
        let floor = u32::try_from((config.max_bytes / config.max_entries.max(1)).max(1))
            .unwrap_or(u32::MAX);
        let inner = moka::sync::Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(move |_: &Key, e: &Arc<Entry>| {
                u32::try_from(e.bytes()).unwrap_or(u32::MAX).max(floor)
            })
            .time_to_live(Duration::from_secs(config.ttl_secs))
            .build();
        Some(Self {
            inner,
            per_key: config.per_key,
        })
    }

    /// The namespace of a caller: its key name when caches are per key.
    pub fn namespace<'a>(&self, key_name: Option<&'a str>) -> &'a str {
        if self.per_key {
            key_name.unwrap_or("")
        } else {
            ""
        }
    }

    pub fn get(&self, key: &Key) -> Option<Arc<Entry>> {
        self.inner.get(key)
    }

    pub fn insert(&self, key: Key, entry: Entry) {
        self.inner.insert(key, Arc::new(entry));
    }

    /// Drops every entry (an adapter or policy change).
    pub fn clear(&self) {
        self.inner.invalidate_all();
    }

    /// (entries, bytes) now, after applying pending evictions.
    pub fn size(&self) -> (u64, u64) {
        self.inner.run_pending_tasks();
        (self.inner.entry_count(), self.inner.weighted_size())
    }
}

/// The outcome of looking a request up.
#[derive(Debug)]
pub enum Lookup {
    /// Answered before: replay this.
    Hit(Arc<Entry>),
    /// Cacheable but not cached: serve it live and fill the cache.
    Miss(Box<Fill>),
    /// Not cacheable, or no cache.
    Bypass,
}

impl Lookup {
    /// Looks up a request whose sampling is `params` and whose key `key` completes (starting
    /// from the caller's namespace and the endpoint).
    pub fn of(
        cache: Option<&ResponseCache>,
        caller: Option<&str>,
        endpoint: &str,
        params: &cada_core::GenerationParams,
        key: impl FnOnce(KeyBuilder) -> KeyBuilder,
    ) -> Self {
        let Some(cache) = cache.filter(|_| cacheable(params)) else {
            return Lookup::Bypass;
        };
        let key = key(KeyBuilder::new(cache.namespace(caller), endpoint)).finish();
        match cache.get(&key) {
            Some(entry) => Lookup::Hit(entry),
            None => Lookup::Miss(Box::new(Fill {
                cache: cache.clone(),
                key,
                recorder: Recorder::default(),
            })),
        }
    }

    /// (the entry to replay, the fill of a live answer): at most one is present.
    pub fn into_parts(self) -> (Option<Arc<Entry>>, Option<Box<Fill>>) {
        match self {
            Lookup::Hit(entry) => (Some(entry), None),
            Lookup::Miss(fill) => (None, Some(fill)),
            Lookup::Bypass => (None, None),
        }
    }

    pub fn status(&self) -> CacheStatus {
        match self {
            Lookup::Hit(_) => CacheStatus::Hit,
            Lookup::Miss(_) => CacheStatus::Miss,
            Lookup::Bypass => CacheStatus::Bypass,
        }
    }
}

/// A response to store in the cache once it ends well.
#[derive(Debug)]
pub struct Fill {
    pub cache: ResponseCache,
    pub key: Key,
    pub recorder: Recorder,
}

impl Fill {
    /// Notes an event of the live response; stores the entry at its end.
    pub fn saw(&mut self, out: &crate::events::Out) {
        if let Some(entry) = self.recorder.saw(out) {
            self.cache.insert(self.key, entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use cada_core::{FinishReason, Usage};

    use super::*;

    fn entry(text: &str) -> Entry {
        Entry {
            decision: None,
            reasoning: Vec::new(),
            content: vec![text.to_owned()],
            finish: FinishReason::Stop,
            usage: Usage::default(),
            reasoning_tokens: 0,
        }
    }

    fn key(i: u64) -> Key {
        KeyBuilder::new("", "t").field("i", &i.to_string()).finish()
    }

    #[test]
    fn both_bounds_hold() {
        let by_count = ResponseCache::new(&CacheConfig {
            max_entries: 10,
            max_bytes: 1 << 20,
            ..CacheConfig::default()
        })
        .unwrap();
        for i in 0..100 {
            by_count.insert(key(i), entry("short"));
        }
        let (entries, bytes) = by_count.size();
        assert!(entries <= 10, "{entries} entries kept, at most 10 allowed");
        assert!(bytes <= 1 << 20);

        let by_bytes = ResponseCache::new(&CacheConfig {
            max_entries: 1000,
            max_bytes: 64 << 10,
            ..CacheConfig::default()
        })
        .unwrap();
        let big = "x".repeat(8 << 10);
        for i in 0..100 {
            by_bytes.insert(key(i), entry(&big));
        }
        let (entries, bytes) = by_bytes.size();
        assert!(bytes <= 64 << 10, "{bytes} bytes kept");
        assert!((1..=8).contains(&entries), "{entries} entries of 8 KiB");
    }

    #[test]
    fn entries_expire_and_clear() {
        let cache = ResponseCache::new(&CacheConfig {
            ttl_secs: 1,
            ..CacheConfig::default()
        })
        .unwrap();
        cache.insert(key(1), entry("a"));
        assert!(cache.get(&key(1)).is_some());
        cache.clear();
        assert!(cache.get(&key(1)).is_none(), "cleared");
        cache.insert(key(2), entry("b"));
        std::thread::sleep(Duration::from_millis(1100));
        assert!(cache.get(&key(2)).is_none(), "expired after ttl_secs");
    }

    #[test]
    fn namespaces_follow_per_key() {
        let on = ResponseCache::new(&CacheConfig::default()).unwrap();
        assert_eq!(on.namespace(Some("app-a")), "app-a");
        let off = ResponseCache::new(&CacheConfig {
            per_key: false,
            ..CacheConfig::default()
        })
        .unwrap();
        assert_eq!(off.namespace(Some("app-a")), "");
        let disabled = CacheConfig {
            enabled: false,
            ..CacheConfig::default()
        };
        assert!(ResponseCache::new(&disabled).is_none());
    }
}

//! The read cache: admitted tokens and rendered SCIM answers, kept in
//! memory in front of the projections and never served stale.
//!
//! Every entry carries the database's change generation
//! (`SqliteLog::generation`: the WAL-index header every commit rewrites)
//! read *before* the read that produced it, and is served only while the generation is the
//! same. Any commit to the file moves it (this process's writer, the CLI,
//! another server), so a revocation, a PATCH or a tenant deleted from
//! another process is seen at the very next request, exactly as without
//! the cache. The price of that freshness is coarseness: any write empties
//! the cache for every tenant. It pays where reads come in runs (an IdP's
//! matching lookups, a scrape, a page reloaded), and costs one failed
//! probe where they do not.
//!
//! Bounded: tokens by count ([`TOKENS_MAX`]), answers by bytes
//! (`serve --read-cache-mib`, [`ANSWERS_MIB_DEFAULT`]); past the bound the
//! cache evicts (CLOCK-Pro, by quick_cache), it never grows. Nothing here
//! reads the database or decides what an answer is: callers do, and hand
//! the bytes in.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use projections::tenancy::TokenRecord;
use quick_cache::Weighter;
use quick_cache::sync::Cache;

/// Admitted tokens kept at most (each a few hundred bytes).
pub const TOKENS_MAX: usize = 4096;
/// Default bound of the rendered answers, in MiB.
pub const ANSWERS_MIB_DEFAULT: u64 = 32;
/// An answer larger than this is never kept: a group with thousands of
/// members would push out hundreds of users for one reader.
pub const ANSWER_BYTES_MAX: usize = 64 * 1024;
/// What an entry costs beyond its key and body (the map's slot, the Arc
/// and its counts, the allocator's rounding of three allocations), so the
/// bound is close to the memory the answers really take.
const ENTRY_OVERHEAD_BYTES: u64 = 192;

/// The change generation a request read at, taken once as it was
/// admitted: its handler keeps what it renders under this one.
#[derive(Debug, Clone, Copy)]
pub struct Generation(pub u64);

/// A rendered answer: its body and the ETag it goes out with.
#[derive(Debug)]
pub struct Answer {
    pub body: Bytes,
    pub etag: Option<String>,
}

impl Answer {
    /// An answer holding exactly its bytes: an encoder's buffer has grown
    /// by doubling, and up to half of it would be kept for nothing.
    pub fn new(mut body: Vec<u8>, etag: Option<String>) -> Answer {
        body.shrink_to_fit();
        Answer { body: Bytes::from(body), etag }
    }
}

#[derive(Clone)]
struct Tagged<T> {
    generation: u64,
    value: T,
}

#[derive(Clone)]
struct AnswerWeight;

impl Weighter<String, Tagged<Arc<Answer>>> for AnswerWeight {
    fn weight(&self, key: &String, value: &Tagged<Arc<Answer>>) -> u64 {
        let etag = value.value.etag.as_ref().map_or(0, String::len);
        (key.len() + value.value.body.len() + etag) as u64 + ENTRY_OVERHEAD_BYTES
    }
}

/// The cache of one server.
pub struct ReadCache {
    tokens: Cache<[u8; 32], Tagged<TokenRecord>>,
    /// `None` when answers are not cached (`--read-cache-mib 0`).
    answers: Option<Cache<String, Tagged<Arc<Answer>>, AnswerWeight>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for ReadCache {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ReadCache")
            .field("tokens", &self.tokens.len())
            .field("answer_bytes", &self.answer_bytes())
            .finish()
    }
}

impl ReadCache {
    /// A cache whose answers take at most `answer_bytes_max` bytes (0: none
    /// kept).
    pub fn new(answer_bytes_max: u64) -> ReadCache {
        let answers = (answer_bytes_max > 0).then(|| {
            // The estimate only sizes the map up front: a 2 KiB user.
            let estimated = usize::try_from(answer_bytes_max / 2048).unwrap_or(1024).max(16);
            Cache::with_weighter(estimated, answer_bytes_max, AnswerWeight)
        });
        ReadCache {
            tokens: Cache::new(TOKENS_MAX),
            answers,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn counted<T>(&self, found: Option<T>) -> Option<T> {
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Probes so far: (hits, misses), a stale entry counted a miss.
    pub fn probes(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }

    /// The token whose secret hashes to `hash`, as read at `generation`.
    pub fn token(&self, hash: &[u8; 32], generation: u64) -> Option<TokenRecord> {
        self.counted(
            self.tokens
                .get(hash)
                .filter(|entry| entry.generation == generation)
                .map(|entry| entry.value),
        )
    }

    pub fn keep_token(&self, hash: [u8; 32], generation: u64, token: TokenRecord) {
        self.tokens.insert(hash, Tagged { generation, value: token });
    }

    /// The answer kept under `key`, if it was rendered at `generation`.
    pub fn answer(&self, key: &str, generation: u64) -> Option<Arc<Answer>> {
        let answers = self.answers.as_ref()?;
        self.counted(
            answers
                .get(key)
                .filter(|entry| entry.generation == generation)
                .map(|entry| entry.value),
        )
    }

    /// Keeps an answer rendered from a read that began after `generation`
    /// was taken; too large an answer is not kept.
    pub fn keep_answer(&self, mut key: String, generation: u64, answer: Arc<Answer>) {
        if let Some(answers) = &self.answers
            && answer.body.len() <= ANSWER_BYTES_MAX
        {
            key.shrink_to_fit();
            answers.insert(key, Tagged { generation, value: answer });
        }
    }

    /// Bytes the answers take now, by the same measure as the bound.
    pub fn answer_bytes(&self) -> u64 {
        self.answers.as_ref().map_or(0, Cache::weight)
    }

    /// The bound of the answers, in bytes.
    pub fn answer_bytes_max(&self) -> u64 {
        self.answers.as_ref().map_or(0, Cache::capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(bytes: usize) -> Arc<Answer> {
        Arc::new(Answer::new(vec![b'x'; bytes], Some("W/\"1\"".to_owned())))
    }

    #[test]
    fn an_answer_is_served_only_at_the_generation_it_was_read_at() {
        let cache = ReadCache::new(1024 * 1024);
        cache.keep_answer("k".to_owned(), 7, answer(10));
        assert!(cache.answer("k", 7).is_some());
        assert!(cache.answer("k", 8).is_none(), "a later generation never sees it");
        assert!(cache.answer("other", 7).is_none());
    }

    #[test]
    fn under_pressure_the_answers_evict_and_never_pass_their_bound() {
        let bound = 256 * 1024;
        let cache = ReadCache::new(bound);
        for n in 0..10_000 {
            cache.keep_answer(format!("key-{n}"), 1, answer(700));
            assert!(cache.answer_bytes() <= bound, "{} > {bound} after {n}", cache.answer_bytes());
        }
        assert!(cache.answer_bytes() > bound / 2, "it does keep answers up to its bound");
        let kept = (0..10_000).filter(|n| cache.answer(&format!("key-{n}"), 1).is_some()).count();
        assert!(kept > 0 && kept < 10_000 / 2, "kept {kept}");
    }

    #[test]
    fn an_answer_too_large_or_a_cache_of_size_zero_keeps_nothing() {
        let cache = ReadCache::new(16 * 1024 * 1024);
        cache.keep_answer("big".to_owned(), 1, answer(ANSWER_BYTES_MAX + 1));
        assert!(cache.answer("big", 1).is_none());
        let none = ReadCache::new(0);
        none.keep_answer("k".to_owned(), 1, answer(10));
        assert!(none.answer("k", 1).is_none());
        assert_eq!(none.answer_bytes_max(), 0);
    }
}

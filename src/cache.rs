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
pub const ANSWERS_MIB_DEFAULT: u64 = 64;
/// An answer larger than this is never kept: a group with thousands of
/// members would push out hundreds of users for one reader.
pub const ANSWER_BYTES_MAX: usize = 64 * 1024;
/// What an entry costs beyond its key and packed bytes (the map's slot
/// with its key, generation and pointer, the Arc's counts, the
/// allocator's rounding of two allocations, the table's spare slots), so
/// the bound is close to the memory the answers really take: measured
/// as the resident memory 95,000 lookups' answers added to a server
/// (47 MiB), over their number.
const ENTRY_OVERHEAD_BYTES: u64 = 224;

/// What every kept answer is compressed against (an LZ4 dictionary): the
/// words and the shape SCIM answers repeat, in the order rollcall renders
/// them (sorted keys). An answer then keeps little but its own values: a
/// 640-byte lookup of one user packs to about a third of that, and the
/// default bound holds the matching lookups of every user of a
/// 100,000-user tenant (about 50 MiB). Only constant text: no value of any resource is in it.
const DICTIONARY: &[u8] = br#"{"Resources":[{"active":false,"addresses":[{"country":"","formatted":"","locality":"","postalCode":"","primary":true,"region":"","streetAddress":"","type":"work"}],"displayName":"","emails":[{"display":"","primary":false,"type":"home","value":""}],"entitlements":[{"value":""}],"externalId":"","groups":[{"$ref":"/scim/v2/Groups/","display":"","type":"direct","value":""}],"ims":[{"value":""}],"locale":"en-US","members":[{"$ref":"/scim/v2/Users/","display":"","type":"User","value":""}],"meta":{"created":"2026-","lastModified":"","location":"http://","resourceType":"Group","version":"W/\"1\""},"name":{"familyName":"","formatted":"","givenName":"","honorificPrefix":"","honorificSuffix":"","middleName":""},"nickName":"","phoneNumbers":[{"primary":true,"type":"mobile","value":"+1 "}],"photos":[{"type":"photo","value":"https://"}],"preferredLanguage":"en","profileUrl":"","roles":[{"value":""}],"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"timezone":"","title":"","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"costCenter":"","department":"","division":"","employeeNumber":"","manager":{"$ref":"","displayName":"","value":""},"organization":""},"userName":"","userType":"Employee","x509Certificates":[{"value":""}]}],"itemsPerPage":0,"schemas":["urn:ietf:params:scim:api:messages:2.0:ListResponse"],"startIndex":1,"totalResults":0}{"Resources":[{"active":true,"displayName":"","emails":[{"primary":true,"type":"work","value":"@example.com"}],"id":"","meta":{"created":"2026-","lastModified":"2026-","location":"http://127.0.0.1:8080/scim/v2/Users/","resourceType":"User","version":"W/\"1\""},"name":{"familyName":"","givenName":""},"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],"userName":""}],"itemsPerPage":1,"schemas":["urn:ietf:params:scim:api:messages:2.0:ListResponse"],"startIndex":1,"totalResults":1}"#;

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
    pub fn new(body: Vec<u8>, etag: Option<String>) -> Answer {
        Answer { body: Bytes::from(body), etag }
    }

    /// The answer as the cache keeps it, in one allocation: the body's
    /// length (4 bytes), the ETag's length (1 byte) and the ETag, then
    /// the body compressed against [`DICTIONARY`]. `None` when it does
    /// not fit that layout (never for an answer the cache would keep).
    fn pack(&self) -> Option<Arc<[u8]>> {
        let etag = self.etag.as_deref().unwrap_or("").as_bytes();
        let body_len = u32::try_from(self.body.len()).ok()?;
        let etag_len = u8::try_from(etag.len()).ok()?;
        let compressed = lz4_flex::block::compress_with_dict(&self.body, DICTIONARY);
        let mut packed = Vec::with_capacity(5 + etag.len() + compressed.len());
        packed.extend_from_slice(&body_len.to_le_bytes());
        packed.push(etag_len);
        packed.extend_from_slice(etag);
        packed.extend_from_slice(&compressed);
        Some(Arc::from(packed))
    }

    /// The answer [`Answer::pack`] packed; `None` if the bytes are not
    /// such a packing (a miss, never a panic).
    fn unpack(packed: &[u8]) -> Option<Answer> {
        let (body_len, rest) = packed.split_first_chunk::<4>()?;
        let (etag_len, rest) = rest.split_first()?;
        let (etag, compressed) = rest.split_at_checked(usize::from(*etag_len))?;
        let body_len = usize::try_from(u32::from_le_bytes(*body_len)).ok()?;
        let body = lz4_flex::block::decompress_with_dict(compressed, body_len, DICTIONARY).ok()?;
        if body.len() != body_len {
            return None;
        }
        let etag = match etag {
            [] => None,
            etag => Some(std::str::from_utf8(etag).ok()?.to_owned()),
        };
        Some(Answer { body: Bytes::from(body), etag })
    }
}

#[derive(Clone)]
struct Tagged<T> {
    generation: u64,
    value: T,
}

/// An answer as kept: its generation and its packing ([`Answer::pack`]).
type Packed = Tagged<Arc<[u8]>>;

#[derive(Clone)]
struct AnswerWeight;

impl Weighter<String, Packed> for AnswerWeight {
    fn weight(&self, key: &String, value: &Packed) -> u64 {
        (key.len() + value.value.len()) as u64 + ENTRY_OVERHEAD_BYTES
    }
}

/// The cache of one server.
pub struct ReadCache {
    tokens: Cache<[u8; 32], Tagged<TokenRecord>>,
    /// `None` when answers are not cached (`--read-cache-mib 0`).
    answers: Option<Cache<String, Packed, AnswerWeight>>,
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
            // The estimate only sizes the map up front: a 1 KiB entry.
            let estimated = usize::try_from(answer_bytes_max / 1024).unwrap_or(1024).max(16);
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
    pub fn answer(&self, key: &str, generation: u64) -> Option<Answer> {
        let answers = self.answers.as_ref()?;
        self.counted(
            answers
                .get(key)
                .filter(|entry| entry.generation == generation)
                .and_then(|entry| Answer::unpack(&entry.value)),
        )
    }

    /// Keeps an answer rendered from a read that began after `generation`
    /// was taken; too large an answer is not kept.
    pub fn keep_answer(&self, mut key: String, generation: u64, answer: &Answer) {
        if let Some(answers) = &self.answers
            && answer.body.len() <= ANSWER_BYTES_MAX
            && let Some(packed) = answer.pack()
        {
            key.shrink_to_fit();
            answers.insert(key, Tagged { generation, value: packed });
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

    /// An answer of `bytes` bytes that compresses as badly as a body can
    /// (no repeats), so the bound is tested on the most it can weigh.
    fn answer(bytes: usize) -> Answer {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let body = (0..bytes)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[0]
            })
            .collect();
        Answer::new(body, Some("W/\"1\"".to_owned()))
    }

    #[test]
    fn an_answer_comes_back_as_it_was_kept() {
        let cache = ReadCache::new(1024 * 1024);
        let lookup = br#"{"Resources":[{"active":true,"displayName":"Load User 0","emails":[{"primary":true,"type":"work","value":"load-atqtxg-0000000@example.com"}],"id":"01m8w14sb4depte0jpj5tk9tbj","meta":{"created":"2026-12-02T18:44:19.429Z","lastModified":"2026-12-02T18:44:19.429Z","location":"http://127.0.0.1:33731/scim/v2/Users/01m8w14sb4depte0jpj5tk9tbj","resourceType":"User","version":"W/\"1\""},"name":{"familyName":"User0","givenName":"Load"},"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"load-atqtxg-0000000"}],"itemsPerPage":1,"schemas":["urn:ietf:params:scim:api:messages:2.0:ListResponse"],"startIndex":1,"totalResults":1}"#;
        for (key, kept) in [
            ("lookup", Answer::new(lookup.to_vec(), None)),
            ("user", Answer::new(lookup.to_vec(), Some("W/\"7\"".to_owned()))),
            ("empty", Answer::new(Vec::new(), None)),
            ("noise", answer(5000)),
        ] {
            cache.keep_answer(key.to_owned(), 3, &kept);
            let served = cache.answer(key, 3).expect("kept");
            assert_eq!(served.body, kept.body, "{key}");
            assert_eq!(served.etag, kept.etag, "{key}");
        }
        // What the dictionary is for: a user's lookup keeps its values and
        // little else (a third of its size, where it alone packs to 60 %).
        let packed = Answer::new(lookup.to_vec(), None).pack().expect("packs");
        assert!(packed.len() * 3 <= lookup.len(), "{} of {} bytes", packed.len(), lookup.len());
    }

    #[test]
    fn bytes_that_are_not_a_packing_are_a_miss() {
        let packed = answer(300).pack().expect("packs");
        for cut in 0..packed.len() {
            assert!(Answer::unpack(packed.get(..cut).unwrap_or_default()).is_none(), "cut {cut}");
        }
        let mut wrong_length = packed.to_vec();
        wrong_length[0] ^= 1;
        assert!(Answer::unpack(&wrong_length).is_none());
    }

    #[test]
    fn an_answer_is_served_only_at_the_generation_it_was_read_at() {
        let cache = ReadCache::new(1024 * 1024);
        cache.keep_answer("k".to_owned(), 7, &answer(10));
        assert!(cache.answer("k", 7).is_some());
        assert!(cache.answer("k", 8).is_none(), "a later generation never sees it");
        assert!(cache.answer("other", 7).is_none());
    }

    #[test]
    fn under_pressure_the_answers_evict_and_never_pass_their_bound() {
        let bound = 256 * 1024;
        let cache = ReadCache::new(bound);
        for n in 0..10_000 {
            cache.keep_answer(format!("key-{n}"), 1, &answer(700));
            assert!(cache.answer_bytes() <= bound, "{} > {bound} after {n}", cache.answer_bytes());
        }
        assert!(cache.answer_bytes() > bound / 2, "it does keep answers up to its bound");
        let kept = (0..10_000).filter(|n| cache.answer(&format!("key-{n}"), 1).is_some()).count();
        assert!(kept > 0 && kept < 10_000 / 2, "kept {kept}");
    }

    #[test]
    fn an_answer_too_large_or_a_cache_of_size_zero_keeps_nothing() {
        let cache = ReadCache::new(16 * 1024 * 1024);
        cache.keep_answer("big".to_owned(), 1, &answer(ANSWER_BYTES_MAX + 1));
        assert!(cache.answer("big", 1).is_none());
        let none = ReadCache::new(0);
        none.keep_answer("k".to_owned(), 1, &answer(10));
        assert!(none.answer("k", 1).is_none());
        assert_eq!(none.answer_bytes_max(), 0);
    }
}

//! Sealing personal values: the crypto-shredding of ARCHITECTURE.md's
//! "Erasure". A personal value of an event (a user's document, a member's
//! name and properties, a recorded request body) is stored sealed under
//! its subject's data key; destroying the key forgets the value while the
//! stored bytes, and so every hash and checkpoint over them, stay as they
//! are.
//!
//! This module owns the sealed form and its associated data; it knows
//! nothing of where keys are kept (that is the application's key store,
//! behind [`Keyring`]) nor of which fields are personal (that is
//! [`crate::event`]'s table).
//!
//! The AEAD is ChaCha20-Poly1305 from `ring`, which rollcall already links
//! for TLS. Its nonces are 96 random bits: safe here because one key seals
//! one person's values, thousands of messages at most, far below the 2^32
//! at which random 96-bit nonces would start to risk a collision.

use std::sync::Arc;

use base64::Engine;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde_json::Value;

/// The length of a data key, in bytes.
pub const KEY_LEN: usize = 32;

/// The JSON member naming the key a value is sealed with.
const KEY_MEMBER: &str = "key";
/// The JSON member holding nonce, ciphertext and tag, base64url.
const SEALED_MEMBER: &str = "sealed";

/// One subject's data key, by its id in the key store.
pub struct SubjectKey {
    pub id: u64,
    key: LessSafeKey,
}

impl std::fmt::Debug for SubjectKey {
    // Never the key bytes.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("SubjectKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl SubjectKey {
    /// The key `id` with the given bytes; `None` when they are not
    /// [`KEY_LEN`] long (a damaged key store row).
    pub fn new(id: u64, bytes: &[u8]) -> Option<SubjectKey> {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, bytes).ok()?;
        Some(SubjectKey { id, key: LessSafeKey::new(unbound) })
    }

    /// Fresh random key bytes, from the operating system.
    pub fn generate_bytes() -> Result<[u8; KEY_LEN], SealError> {
        let mut bytes = [0u8; KEY_LEN];
        getrandom::fill(&mut bytes).map_err(|error| SealError::Random(error.to_string()))?;
        Ok(bytes)
    }

    /// The bytes of `count` fresh keys, [`KEY_LEN`] each, from one call to
    /// the operating system's random source.
    pub fn generate_many(count: usize) -> Result<Vec<u8>, SealError> {
        let mut bytes = vec![0u8; count.saturating_mul(KEY_LEN)];
        getrandom::fill(&mut bytes).map_err(|error| SealError::Random(error.to_string()))?;
        Ok(bytes)
    }
}

/// What a sealed value is bound to: it opens only in the event and field
/// it was sealed for, so it cannot be copied into another event (or into
/// another field of the same one) and read there.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub tenant: &'a str,
    pub stream: &'a str,
    /// The event's version within its stream: with tenant and stream, it
    /// names one event.
    pub version: u64,
    /// Where in the event: `payload.document`, `metadata.request.body`.
    pub field: &'a str,
}

impl Binding<'_> {
    /// The associated data: a label, then each part length-prefixed, so
    /// no two bindings give the same bytes.
    fn associated_data(&self) -> Vec<u8> {
        let mut data =
            Vec::with_capacity(16 + self.tenant.len() + self.stream.len() + self.field.len() + 32);
        data.extend_from_slice(b"rollcall.seal.1");
        for part in [self.tenant, self.stream, self.field] {
            data.extend_from_slice(&(part.len() as u64).to_be_bytes());
            data.extend_from_slice(part.as_bytes());
        }
        data.extend_from_slice(&self.version.to_be_bytes());
        data
    }
}

/// Where the keys are found when values are opened.
pub trait Keyring: Send + Sync {
    /// The key `id`.
    fn key(&self, id: u64) -> Result<KeyState, SealError>;
}

/// The key store as the write path sees it: the keys to open with, and
/// a new subject's key.
pub trait KeySource: Keyring + std::fmt::Debug {
    /// A key no subject has had, for a new one: durable in the key store
    /// before this returns, and never handed out again, by this process or
    /// any other on the same key store.
    fn fresh(&self) -> Result<Arc<SubjectKey>, SealError>;
}

/// The keyring of a reader without a key store: every sealed value fails
/// to open with [`SealError::NoKeyring`]; values in clear read as ever.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoKeys;

impl Keyring for NoKeys {
    fn key(&self, _id: u64) -> Result<KeyState, SealError> {
        Err(SealError::NoKeyring)
    }
}

/// What the key store holds for a key id.
#[derive(Debug, Clone)]
pub enum KeyState {
    Live(Arc<SubjectKey>),
    /// Destroyed by an erasure: what it sealed is gone for good.
    Erased,
}

/// A value read back from its sealed form.
#[derive(Debug, Clone, PartialEq)]
pub enum Opened {
    Value(Value),
    /// Its key was destroyed by an erasure.
    Erased,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the operating system's random source failed: {0}")]
    Random(String),
    #[error("a sealed value is not in the sealed form: {0}")]
    Malformed(&'static str),
    /// The key store has no row for the key at all: not an erasure (that
    /// leaves a tombstone) but a key store missing or restored from an
    /// older backup than the log.
    #[error(
        "data key {0} is not in the key store: restore the key store from a backup \
         at least as recent as the log"
    )]
    MissingKey(u64),
    /// The key is there but the value does not open with it: edited, or
    /// moved from another event or field.
    #[error("a value sealed with key {0} does not open here: edited or moved")]
    Tampered(u64),
    #[error("the key store: {0}")]
    Store(String),
    /// A key asked for to seal with had been erased.
    #[error("data key {0} was erased")]
    Erased(u64),
    #[error("a sealed value was read without the key store")]
    NoKeyring,
    #[error("a personal value is stored in clear in a sealed schema version")]
    InClear,
}

/// The nonce, ciphertext and tag of `plaintext` sealed under `key` for
/// `binding`, base64url.
fn seal_bytes(
    key: &SubjectKey,
    binding: Binding<'_>,
    plaintext: &str,
) -> Result<String, SealError> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|error| SealError::Random(error.to_string()))?;
    let mut in_out = Vec::with_capacity(plaintext.len() + CHACHA20_POLY1305.tag_len());
    in_out.extend_from_slice(plaintext.as_bytes());
    key.key
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(binding.associated_data()),
            &mut in_out,
        )
        .map_err(|_| SealError::Malformed("the value is too long to seal"))?;
    let mut bytes = Vec::with_capacity(NONCE_LEN + in_out.len());
    bytes.extend_from_slice(&nonce);
    bytes.extend_from_slice(&in_out);
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes))
}

/// Seals `plaintext` (a JSON text) under `key` for `binding`: the sealed
/// form, `{"key": ID, "sealed": "<base64url of nonce, ciphertext, tag>"}`.
pub fn seal(key: &SubjectKey, binding: Binding<'_>, plaintext: &str) -> Result<Value, SealError> {
    let mut sealed = serde_json::Map::with_capacity(2);
    sealed.insert(KEY_MEMBER.to_owned(), Value::from(key.id));
    sealed.insert(SEALED_MEMBER.to_owned(), Value::String(seal_bytes(key, binding, plaintext)?));
    Ok(Value::Object(sealed))
}

/// [`seal`], as JSON text: what the write path splices into a payload.
pub fn seal_text(
    key: &SubjectKey,
    binding: Binding<'_>,
    plaintext: &str,
) -> Result<String, SealError> {
    // base64url needs no escaping inside a JSON string.
    Ok(format!(
        "{{\"{KEY_MEMBER}\":{},\"{SEALED_MEMBER}\":\"{}\"}}",
        key.id,
        seal_bytes(key, binding, plaintext)?
    ))
}

/// The key id of a value in the sealed form, if it is one.
pub fn sealed_key(value: &Value) -> Option<u64> {
    let object = value.as_object()?;
    if object.len() != 2 || !object.get(SEALED_MEMBER)?.is_string() {
        return None;
    }
    object.get(KEY_MEMBER)?.as_u64()
}

/// The sealed form, as stored.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedForm<'a> {
    key: u64,
    #[serde(borrow)]
    sealed: std::borrow::Cow<'a, str>,
}

/// Opens a value [`seal`] made, for the same `binding`.
pub fn open(keys: &dyn Keyring, binding: Binding<'_>, sealed: &Value) -> Result<Opened, SealError> {
    let id = sealed_key(sealed).ok_or(SealError::Malformed("no key and sealed members"))?;
    let text = sealed
        .get(SEALED_MEMBER)
        .and_then(Value::as_str)
        .ok_or(SealError::Malformed("no sealed member"))?;
    match open_bytes(keys, binding, id, text)? {
        None => Ok(Opened::Erased),
        Some(plaintext) => serde_json::from_str(&plaintext)
            .map(Opened::Value)
            .map_err(|_| SealError::Malformed("the opened value is not JSON")),
    }
}

/// Opens the sealed form `sealed` (JSON text): the JSON text sealed in it,
/// or `None` when its key was erased. `Err(InClear)` when `sealed` is not
/// in the sealed form at all.
pub fn open_text(
    keys: &dyn Keyring,
    binding: Binding<'_>,
    sealed: &str,
) -> Result<Option<String>, SealError> {
    let form: SealedForm<'_> = serde_json::from_str(sealed).map_err(|_| SealError::InClear)?;
    open_bytes(keys, binding, form.key, &form.sealed)
}

fn open_bytes(
    keys: &dyn Keyring,
    binding: Binding<'_>,
    id: u64,
    text: &str,
) -> Result<Option<String>, SealError> {
    let key = match keys.key(id)? {
        KeyState::Live(key) => key,
        KeyState::Erased => return Ok(None),
    };
    let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| SealError::Malformed("the sealed member is not base64url"))?;
    if bytes.len() < NONCE_LEN + CHACHA20_POLY1305.tag_len() {
        return Err(SealError::Malformed("the sealed member is too short"));
    }
    let nonce = bytes
        .get(..NONCE_LEN)
        .and_then(|nonce| Nonce::try_assume_unique_for_key(nonce).ok())
        .ok_or(SealError::Malformed("the sealed member is too short"))?;
    // Opened where it lies, then moved to the front: one buffer in all.
    let length = key
        .key
        .open_within(nonce, Aad::from(binding.associated_data()), &mut bytes, NONCE_LEN..)
        .map_err(|_| SealError::Tampered(id))?
        .len();
    bytes.truncate(length);
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| SealError::Malformed("the opened value is not text"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Keys(HashMap<u64, KeyState>);

    impl Keyring for Keys {
        fn key(&self, id: u64) -> Result<KeyState, SealError> {
            self.0.get(&id).cloned().ok_or(SealError::MissingKey(id))
        }
    }

    fn keys() -> (Arc<SubjectKey>, Keys) {
        let key = Arc::new(SubjectKey::new(7, &SubjectKey::generate_bytes().unwrap()).unwrap());
        let mut map = HashMap::new();
        map.insert(7, KeyState::Live(Arc::clone(&key)));
        map.insert(8, KeyState::Erased);
        (key, Keys(map))
    }

    const HERE: Binding<'static> =
        Binding { tenant: "t1", stream: "user:u1", version: 3, field: "payload.document" };

    #[test]
    fn a_sealed_value_opens_where_it_was_sealed() {
        let (key, keys) = keys();
        let value =
            serde_json::json!({"userName": "alice@example.com", "emails": [{"value": "a"}]});
        let sealed = seal(&key, HERE, &value.to_string()).unwrap();
        assert_eq!(sealed_key(&sealed), Some(7));
        assert!(!sealed.to_string().contains("alice"), "{sealed}");
        assert_eq!(open(&keys, HERE, &sealed), Ok(Opened::Value(value.clone())));
        // Two seals of one value differ: a fresh nonce each time.
        assert_ne!(seal(&key, HERE, &value.to_string()).unwrap(), sealed);
    }

    #[test]
    fn a_sealed_value_moved_to_another_event_or_field_does_not_open() {
        let (key, keys) = keys();
        let sealed = seal(&key, HERE, "\"alice\"").unwrap();
        for elsewhere in [
            Binding { tenant: "t2", ..HERE },
            Binding { stream: "user:u2", ..HERE },
            Binding { version: 4, ..HERE },
            Binding { field: "metadata.request.body", ..HERE },
        ] {
            assert_eq!(open(&keys, elsewhere, &sealed), Err(SealError::Tampered(7)));
        }
        // One flipped byte of the ciphertext.
        let text = sealed["sealed"].as_str().unwrap();
        let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).unwrap();
        bytes[NONCE_LEN] ^= 1;
        let edited = serde_json::json!({
            "key": 7,
            "sealed": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes),
        });
        assert_eq!(open(&keys, HERE, &edited), Err(SealError::Tampered(7)));
    }

    #[test]
    fn an_erased_key_opens_to_erased_and_a_missing_one_is_an_error() {
        let (key, keys) = keys();
        let sealed = seal(&key, HERE, "1").unwrap();
        let mut erased = sealed.clone();
        erased["key"] = Value::from(8);
        assert_eq!(open(&keys, HERE, &erased), Ok(Opened::Erased));
        erased["key"] = Value::from(9);
        assert_eq!(open(&keys, HERE, &erased), Err(SealError::MissingKey(9)));
    }

    #[test]
    fn damaged_sealed_forms_are_errors_not_panics() {
        let (_, keys) = keys();
        for damaged in [
            serde_json::json!("text"),
            serde_json::json!({"key": 7}),
            serde_json::json!({"key": 7, "sealed": "!!"}),
            serde_json::json!({"key": 7, "sealed": "AAAA"}),
            serde_json::json!({"key": -1, "sealed": "AAAA"}),
        ] {
            assert!(
                matches!(open(&keys, HERE, &damaged), Err(SealError::Malformed(_))),
                "{damaged}"
            );
        }
        assert!(SubjectKey::new(1, &[0u8; 5]).is_none());
    }
}

//! The hash chain: how an event's bytes and its predecessor's hash make its
//! own hash.
//!
//! Each tenant has its own chain (workspace-wide events chain in
//! [`crate::SYSTEM_TENANT`]): an event's `prev_hash` is the hash of the
//! previous event of the same tenant, or [`ZERO_HASH`] for the first. The
//! hash is SHA-256 over the previous hash and the event's canonical bytes:
//! every stored field, each as a big-endian length followed by the bytes as
//! stored. Length prefixes make the encoding unambiguous (no two different
//! events share canonical bytes), and hashing the stored bytes, not a
//! re-serialisation, means a later change of serde never breaks old chains.

use sha2::{Digest, Sha256};

use crate::Position;

/// A SHA-256 chain hash.
pub type ChainHash = [u8; 32];

/// The `prev_hash` of the first event of every tenant's chain.
pub const ZERO_HASH: ChainHash = [0; 32];

/// The fields of one event that its hash covers, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct CanonicalEvent<'a> {
    pub position: Position,
    pub tenant: &'a str,
    pub stream: &'a str,
    pub version: u64,
    pub event_type: &'a str,
    pub schema_version: u32,
    pub payload: &'a str,
    pub metadata: &'a str,
    pub recorded_at: &'a str,
}

impl CanonicalEvent<'_> {
    /// The chain hash of this event after `prev_hash`.
    pub fn chain_hash(&self, prev_hash: &ChainHash) -> ChainHash {
        let mut hasher = Sha256::new();
        hasher.update(prev_hash);
        hasher.update(self.position.to_be_bytes());
        hash_field(&mut hasher, self.tenant.as_bytes());
        hash_field(&mut hasher, self.stream.as_bytes());
        hasher.update(self.version.to_be_bytes());
        hash_field(&mut hasher, self.event_type.as_bytes());
        hasher.update(self.schema_version.to_be_bytes());
        hash_field(&mut hasher, self.recorded_at.as_bytes());
        hash_field(&mut hasher, self.metadata.as_bytes());
        hash_field(&mut hasher, self.payload.as_bytes());
        hasher.finalize().into()
    }
}

fn hash_field(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}

/// Lower-case hex, the form hashes take in reports and checkpoints.
pub fn to_hex(hash: &ChainHash) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(64);
    for byte in hash {
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Parses 64 hex digits back into a hash.
pub fn from_hex(text: &str) -> Option<ChainHash> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = ZERO_HASH;
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let high = char::from(*pair.first()?).to_digit(16)?;
        let low = char::from(*pair.get(1)?).to_digit(16)?;
        *slot = u8::try_from(high * 16 + low).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let mut hash = ZERO_HASH;
        for (index, byte) in hash.iter_mut().enumerate() {
            *byte = u8::try_from(index * 7).unwrap_or(0);
        }
        assert_eq!(from_hex(&to_hex(&hash)), Some(hash));
        assert_eq!(from_hex("zz"), None);
    }

    /// Known answers, computed outside this code (Python's `hashlib` and
    /// `struct`, following the formula in ARCHITECTURE.md, "The hash
    /// chain"). Every stored chain and every checkpoint an auditor wrote
    /// down rests on this encoding: a reordered field, a changed prefix
    /// width or a missing field changes these hashes.
    #[test]
    fn chain_hashes_match_known_answers() {
        let first = CanonicalEvent {
            position: 1,
            tenant: "acme",
            stream: "user:01J0",
            version: 1,
            event_type: "UserCreated",
            schema_version: 1,
            payload: r#"{"userName":"ann@example.com"}"#,
            metadata: r#"{"event_id":"01J0","actor":{"kind":"system"}}"#,
            recorded_at: "2026-01-01T00:00:00.000Z",
        };
        let first_hash = first.chain_hash(&ZERO_HASH);
        assert_eq!(
            to_hex(&first_hash),
            "4cf01842fb73fbd887f6a07f19fd46fbc21ed1ac6ef92ee443999c17a2e2dbff"
        );
        let second = CanonicalEvent {
            position: 2,
            version: 2,
            event_type: "UserDeleted",
            payload: "{}",
            metadata: "{}",
            recorded_at: "2026-01-01T00:00:01.500Z",
            ..first
        };
        let second_hash = second.chain_hash(&first_hash);
        assert_eq!(
            to_hex(&second_hash),
            "ba0bdae092ec46c7a71424f936e3bc1330d715cc981cdcbfa874fc08fbf669b1"
        );
        // Multi-byte text is hashed as its UTF-8 bytes, lengths in bytes.
        let third = CanonicalEvent {
            position: 7,
            stream: "group:Ünïcode",
            version: 1,
            event_type: "GroupCreated",
            schema_version: 3,
            payload: r#"{"displayName":"Ünïcode ✓"}"#,
            recorded_at: "2026-06-30T23:59:59.999Z",
            ..second
        };
        assert_eq!(
            to_hex(&third.chain_hash(&second_hash)),
            "9deb749284e1485a1e087b4d148483bd560a6642d376400ded0c90aeff4a255c"
        );
    }

    #[test]
    fn length_prefixes_keep_fields_apart() {
        let base = CanonicalEvent {
            position: 1,
            tenant: "ab",
            stream: "c",
            version: 1,
            event_type: "T",
            schema_version: 1,
            payload: "{}",
            metadata: "{}",
            recorded_at: "2026-01-01T00:00:00.000Z",
        };
        let shifted = CanonicalEvent { tenant: "a", stream: "bc", ..base };
        assert_ne!(base.chain_hash(&ZERO_HASH), shifted.chain_hash(&ZERO_HASH));
    }
}

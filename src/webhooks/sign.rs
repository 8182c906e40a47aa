//! Standard Webhooks signatures (standardwebhooks.com): secrets, and the
//! three headers every delivery carries.
//!
//! A secret is `whsec_` and the base64 of 32 random bytes; the signature
//! of a message is `v1,` and the base64 HMAC-SHA256, under the secret's
//! bytes, of `{webhook-id}.{webhook-timestamp}.{body}`. While a rotated
//! secret overlaps the new one, both sign, space-separated, newest first,
//! so a receiver that knows either accepts the message.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::error::Error;

pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a new secret (the specification asks for 24 to 64).
const SECRET_BYTES: usize = 32;

/// A new signing secret.
pub fn new_secret() -> Result<String, Error> {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes)
        .map_err(|error| Error::Internal(format!("no randomness for a webhook secret: {error}")))?;
    Ok(format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes)))
}

/// The key bytes of a secret, or `None` if it is not one.
fn key_of(secret: &str) -> Option<Vec<u8>> {
    STANDARD.decode(secret.strip_prefix(SECRET_PREFIX)?).ok()
}

/// `v1,<base64 signature>` of one message under one secret.
pub fn sign(secret: &str, message_id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = key_of(secret)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(message_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
}

/// The `webhook-signature` header: every secret's signature, space-separated.
pub fn signature_header(
    secrets: &[String],
    message_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .filter_map(|secret| sign(secret, message_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's published example (its libraries' tests use the
    /// same secret, id, timestamp and payload).
    #[test]
    fn the_specifications_test_vector() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let signature =
            sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, br#"{"test": 2432232314}"#);
        assert_eq!(signature.as_deref(), Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="));
    }

    #[test]
    fn new_secrets_are_well_formed_and_two_secrets_both_sign() {
        let one = new_secret().unwrap();
        let two = new_secret().unwrap();
        assert_ne!(one, two);
        assert_eq!(key_of(&one).map(|key| key.len()), Some(SECRET_BYTES));
        let header = signature_header(&[one.clone(), two.clone()], "id", 1, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(Some(parts[0].to_owned()), sign(&one, "id", 1, b"{}"));
        assert_eq!(sign("not a secret", "id", 1, b"{}"), None);
    }
}

#[cfg(test)]
mod against_the_reference_library {
    use super::*;

    /// The Standard Webhooks reference crate verifies what rollcall signs,
    /// and rejects it once the body is changed.
    #[test]
    fn the_reference_library_verifies_rollcalls_signatures() {
        let secret = new_secret().unwrap();
        let body = br#"{"id":"01J","type":"member.joined"}"#;
        let timestamp = jiff::Timestamp::now().as_second();
        let mut headers = http::HeaderMap::new();
        headers.insert("webhook-id", "01J".parse().unwrap());
        headers.insert("webhook-timestamp", timestamp.to_string().parse().unwrap());
        let other = new_secret().unwrap();
        let signature = signature_header(&[other, secret.clone()], "01J", timestamp, body);
        headers.insert("webhook-signature", signature.parse().unwrap());
        let verifier = standardwebhooks::Webhook::new(&secret).unwrap();
        assert!(verifier.verify(body, &headers).is_ok(), "either of two signatures verifies");
        assert!(verifier.verify(br#"{"id":"01J","type":"member.left"}"#, &headers).is_err());
    }
}

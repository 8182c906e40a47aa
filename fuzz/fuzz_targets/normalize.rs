//! The document normaliser (`rollcall::scim::document::normalize`), for a
//! User and a Group.
//!
//! Invariants: no input panics; normalising a normalised document gives the
//! same document (idempotence).
#![no_main]

use libfuzzer_sys::fuzz_target;
use projections::directory::schema::ResourceKind;
use rollcall::scim::document::normalize;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<Value>(data) else { return };
    for kind in [ResourceKind::User, ResourceKind::Group] {
        let Ok(once) = normalize(kind, &body) else { continue };
        let once = Value::Object(once);
        match normalize(kind, &once) {
            Ok(twice) => {
                let twice = Value::Object(twice);
                assert!(
                    twice == once,
                    "{kind:?}: normalize is not idempotent\n body:  {body}\n once:  {once}\n twice: {twice}"
                );
            }
            Err(error) => panic!(
                "{kind:?}: a normalised document does not normalise\n body:  {body}\n once:  {once}\n error: {error}"
            ),
        }
    }
});

//! Events stored at an older schema version are upcast on read.

use events::event::{TokenIssued, TokenScope};
use events::log::flatten_append;
use events::{Event, EventLog, ExpectedVersion, NewEvent};

use crate::util::{TestDb, context};

#[test]
fn a_stored_token_issued_v1_row_reads_as_v2() {
    let db = TestDb::new();
    let log = db.open();
    // Exactly the bytes a v1 build wrote: a relative lifetime in days.
    let v1 = NewEvent {
        event_type: "TokenIssued".to_owned(),
        schema_version: 1,
        payload: r#"{"token_id":"01TOKEN","scope":"audit","secret_sha256":"ab","ttl_days":30}"#
            .to_owned(),
    };
    flatten_append(
        log.append("t1", "token:01TOKEN", ExpectedVersion::NoStream, vec![v1], context()).wait(),
    )
    .unwrap();

    let stored = log.read_stream("t1", "token:01TOKEN").unwrap();
    assert_eq!(stored[0].schema_version, 1, "the row itself is never rewritten");
    let issued_at: jiff::Timestamp = stored[0].recorded_at.parse().unwrap();
    let expected_expiry =
        events::time::format_millis(issued_at + jiff::SignedDuration::from_hours(30 * 24));
    assert_eq!(
        stored[0].decode(&events::seal::NoKeys).unwrap(),
        Event::TokenIssued(TokenIssued {
            token_id: "01TOKEN".to_owned(),
            scope: TokenScope::Audit,
            secret_sha256: "ab".to_owned(),
            expires_at: Some(expected_expiry),
            label: None,
            client_id: None,
        })
    );
}

/// The run lifecycle's words became enums without a new schema version:
/// payloads written when they were strings decode into them and encode
/// back to the very same bytes (the chain hashes those bytes), and a word
/// no build ever wrote is refused, not read as a default.
#[test]
fn run_words_written_as_strings_still_decode_to_the_same_bytes() {
    use events::event::{Decision, DeferReason, RunEnd, RunTrigger};
    let stored = [
        (
            "SyncStarted",
            r#"{"run_id":"01RUN","trigger":"scheduled","from_position":0,"to_position":9,"scheduled_for":"2026-01-01T02:00:00.000Z"}"#,
        ),
        (
            "SyncCompleted",
            r#"{"run_id":"01RUN","status":"held","position":9,"counts":{"join":1},"duration_ms":5,"held_reason":"why"}"#,
        ),
        ("SyncDecided", r#"{"run_id":"01RUN","decision":"rejected"}"#),
        (
            "MemberChangeDeferred",
            r#"{"run_id":"01RUN","user_id":"u1","reason":"held","detail":"held by the deprovisioning safeguard"}"#,
        ),
    ];
    for (event_type, payload) in stored {
        let event = Event::decode(event_type, 1, payload, "2026-01-01T02:00:00.000Z").unwrap();
        assert_eq!(event.encode().payload, payload, "{event_type}");
        match event {
            Event::SyncStarted(started) => assert_eq!(started.trigger, RunTrigger::Scheduled),
            Event::SyncCompleted(completed) => assert_eq!(completed.status, RunEnd::Held),
            Event::SyncDecided(decided) => assert_eq!(decided.decision, Decision::Rejected),
            Event::MemberChangeDeferred(deferred) => {
                assert_eq!(deferred.reason, DeferReason::Held);
            }
            other => panic!("{other:?}"),
        }
    }
    for word in RunTrigger::ALL {
        let payload =
            format!(r#"{{"run_id":"r","trigger":"{word}","from_position":0,"to_position":0}}"#);
        assert!(Event::decode("SyncStarted", 1, &payload, "2026-01-01T00:00:00.000Z").is_ok());
    }
    let unknown = r#"{"run_id":"r","trigger":"whenever","from_position":0,"to_position":0}"#;
    assert!(Event::decode("SyncStarted", 1, unknown, "2026-01-01T00:00:00.000Z").is_err());
}

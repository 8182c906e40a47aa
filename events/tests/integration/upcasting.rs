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
        stored[0].decode().unwrap(),
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

//! The log cannot be edited: triggers refuse it, and an edit made behind
//! their back is named by verify.

use events::log::{VerifyProblem, flatten_append};
use events::{EventLog, ExpectedVersion, VerifyScope};

use crate::util::{TestDb, context, event};

fn seed(db: &TestDb) {
    let log = db.open();
    for n in 0..5 {
        let tenant = if n % 2 == 0 { "a" } else { "b" };
        flatten_append(
            log.append(
                tenant,
                "s",
                ExpectedVersion::Any,
                vec![event("A", n)],
                context(),
            )
            .wait(),
        )
        .unwrap();
    }
}

#[test]
fn update_and_delete_are_refused_by_triggers() {
    let db = TestDb::new();
    seed(&db);
    let raw = db.raw_connection();
    let update = raw
        .execute(
            "UPDATE events SET payload = '{\"n\":99}' WHERE position = 2",
            [],
        )
        .unwrap_err();
    assert!(update.to_string().contains("append-only"), "{update}");
    let delete = raw
        .execute("DELETE FROM events WHERE position = 5", [])
        .unwrap_err();
    assert!(delete.to_string().contains("append-only"), "{delete}");
    let count: i64 = raw
        .query_row("SELECT count(*) FROM events", [], |row| row.get(0))
        .unwrap();
    assert_eq!(count, 5);
}

#[test]
fn verify_names_an_edited_event() {
    let db = TestDb::new();
    seed(&db);
    let raw = db.raw_connection();
    raw.execute_batch("DROP TRIGGER events_refuse_update")
        .unwrap();
    raw.execute(
        "UPDATE events SET payload = '{\"n\":99}' WHERE position = 3",
        [],
    )
    .unwrap();

    let log = db.open();
    let report = log.verify(VerifyScope::All).unwrap();
    let failure = report.failure.expect("the edit is found");
    assert_eq!(
        (failure.position, failure.problem),
        (3, VerifyProblem::HashMismatch)
    );
    assert_eq!(
        report.events_checked, 2,
        "the walk stops at the first bad event"
    );
    let tenant_report = log.verify(VerifyScope::Tenant("b".to_owned())).unwrap();
    assert_eq!(tenant_report.failure, None, "tenant b's chain is untouched");
    // Reading the edited event is refused too (the pair of the append check).
    let read: Result<Vec<_>, _> = log.read_forward(0, None).collect();
    assert!(
        matches!(
            read,
            Err(events::LogError::HashMismatch { position: 3, .. })
        ),
        "{read:?}"
    );
}

#[test]
fn verify_names_a_deleted_event() {
    let db = TestDb::new();
    seed(&db);
    let raw = db.raw_connection();
    raw.execute_batch("DROP TRIGGER events_refuse_delete")
        .unwrap();
    raw.execute("DELETE FROM events WHERE position = 3", [])
        .unwrap();
    let log = db.open();
    let failure = log
        .verify(VerifyScope::All)
        .unwrap()
        .failure
        .expect("the gap is found");
    assert_eq!(
        (failure.position, failure.problem),
        (4, VerifyProblem::PositionGap)
    );
    // Within tenant a (positions 1, 3, 5) the chain link to 5 is broken.
    let failure = log
        .verify(VerifyScope::Tenant("a".to_owned()))
        .unwrap()
        .failure
        .expect("the link is broken");
    assert_eq!(
        (failure.position, failure.problem),
        (5, VerifyProblem::BrokenLink)
    );
}

//! rollcall's read models, folded from the event log.
//!
//! # Brief overview
//!
//! A projection turns events into tables that answer questions quickly.
//! Folding decides nothing: every decision was made before the event was
//! appended, so [`apply`] only writes down what an event says, and folding
//! the same log always gives the same tables.
//!
//! * [`directory`] is the SCIM directory; today its shared filter AST.
//! * [`schema`] creates the projection tables beside the events table.
//! * [`members`] is the member directory the application reads, with the
//!   Synchronize runs, checkpoints and settings that drive it.
//! * [`feed`] is the event feed the application tails: each member
//!   change as a public event (docs/events.md).
//! * [`audit`] is joiners and leavers: every movement of a member with the
//!   SCIM event that asked for it.
//! * [`requests`] is the request log: SCIM requests as answered
//!   (telemetry, not folded from events).
//! * [`webhooks`] holds the webhook endpoints (and, beside them, their
//!   signing secrets).
//! * [`tenancy`] holds tenants and tokens: the lookup of a bearer token's
//!   hash, the tenant list, the token list.
//!
//! Inline projections are updated by the command that appends the events,
//! inside the writer's transaction (see `events::sqlite::SqliteLog::execute`),
//! so a read right after a write sees it. This crate depends on `events` and
//! on nothing of rollcall's application: it knows no HTTP and no CLI.

pub mod audit;
pub mod console;
pub mod directory;
pub mod feed;
pub mod functions;
pub mod members;
pub mod requests;
pub mod schema;
pub mod tenancy;
pub mod webhooks;

use events::db::{Db, DbError};
use events::{Event, RecordedEvent};

/// Errors of the projection layer: a storage error, or an event that no
/// longer decodes (which means a bug or a damaged log, never bad input).
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("projection storage error while {context}: {source}")]
    Storage { context: &'static str, source: DbError },
    #[error(transparent)]
    Decode(#[from] events::DecodeError),
    #[error("the metadata of the event at position {position} does not decode: {reason}")]
    Metadata { position: u64, reason: String },
}

/// A count or position as SQLite's signed integer: saturating, since no
/// count rollcall keeps comes near `i64::MAX`.
pub fn sql_integer(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Reads a column holding one of a closed set of words: a word no build
/// wrote is an error, never a default.
pub(crate) fn word_column<T>(
    row: &events::db::Row<'_>,
    index: usize,
    parse: fn(&str) -> Option<T>,
) -> Result<T, DbError> {
    let text: String = row.get(index)?;
    parse(&text).ok_or_else(|| DbError::Column {
        index,
        message: format!("{text:?} is not a word this column holds"),
    })
}

impl ProjectionError {
    pub fn storage<E: Into<DbError>>(context: &'static str) -> impl FnOnce(E) -> ProjectionError {
        move |source| ProjectionError::Storage { context, source: source.into() }
    }
}

/// Folds one recorded event into every inline projection.
pub fn apply(
    connection: &dyn Db,
    recorded: &RecordedEvent,
    event: &Event,
) -> Result<(), ProjectionError> {
    tenancy::apply(connection, recorded, event)?;
    webhooks::apply(connection, recorded, event)?;
    directory::store::apply(connection, recorded, event)?;
    // Before the members fold: it reads who the member was (held by
    // `tests::the_audit_is_folded_before_the_members`).
    audit::apply(connection, recorded, event)?;
    let before = feed::before(connection, recorded, event)?;
    members::apply(connection, recorded, event)?;
    // After the members fold: a feed event carries the member as it is
    // after the change.
    feed::apply(connection, recorded, event, before)
}

/// Folds one recorded event into the SCIM directory and the member
/// directory only: the tables a past state is read from, without the
/// tokens and the audit trail that would only be thrown away.
pub fn apply_directories(
    connection: &dyn Db,
    recorded: &RecordedEvent,
    event: &Event,
) -> Result<(), ProjectionError> {
    directory::store::apply(connection, recorded, event)?;
    members::apply(connection, recorded, event)
}

/// A fold of one event: [`apply`] or [`apply_directories`].
pub type Apply = fn(&dyn Db, &RecordedEvent, &Event) -> Result<(), ProjectionError>;

#[cfg(test)]
mod tests {
    use events::event::{MemberJoined, MemberPurged, UserCreated};

    use super::*;

    fn recorded(position: u64, event: &Event) -> RecordedEvent {
        recorded_with(
            position,
            event,
            r#"{"event_id":"e","actor":{"kind":"system"}}"#,
            format!("2026-01-0{position}T00:00:00.000Z"),
        )
    }

    /// `event` as the log would hand it to a fold: tenant `t`, stream
    /// `member:m-1` at version `position`, no chain.
    pub(crate) fn recorded_with(
        position: u64,
        event: &Event,
        metadata: &str,
        recorded_at: String,
    ) -> RecordedEvent {
        let encoded = event.encode();
        RecordedEvent {
            position,
            tenant: "t".to_owned(),
            stream: "member:m-1".to_owned(),
            version: position,
            event_type: encoded.event_type,
            schema_version: encoded.schema_version,
            payload: encoded.payload,
            metadata: metadata.to_owned(),
            recorded_at,
            prev_hash: events::ZERO_HASH,
            hash: events::ZERO_HASH,
        }
    }

    /// `apply` folds the audit trail before the member directory: a
    /// movement is recorded with who the member was, which the member fold
    /// would already have changed (a purge blanks the userName and
    /// externalId). Swap the two and the purge names nobody.
    #[test]
    fn the_audit_is_folded_before_the_members() {
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        functions::register(&connection).unwrap();
        schema::migrate(&connection).unwrap();
        let joined = Event::MemberJoined(MemberJoined {
            member_id: "m-1".to_owned(),
            user_id: "u-1".to_owned(),
            external_id: Some("ext-1".to_owned()),
            user_name: "ann@example.com".to_owned(),
            properties: serde_json::Map::new(),
            roles: Vec::new(),
        });
        let purged = Event::MemberPurged(MemberPurged { member_id: "m-1".to_owned() });
        apply(&connection, &recorded(1, &joined), &joined).unwrap();
        apply(&connection, &recorded(2, &purged), &purged).unwrap();
        let named: (Option<String>, Option<String>) = connection
            .query_row(
                "SELECT user_name, external_id FROM audit_movements WHERE kind = 'purged'",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        assert_eq!(named, (Some("ann@example.com".to_owned()), Some("ext-1".to_owned())));
        let left: (String, String) = connection
            .query_row("SELECT status, user_name FROM members", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .unwrap();
        assert_eq!(left, ("purged".to_owned(), String::new()), "the purge was folded too");
    }

    /// The feed's body of a join carries `members::joined_row` instead of
    /// reading the row back: it must be the row the fold wrote.
    #[test]
    fn a_joins_row_is_the_row_the_fold_writes() {
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        functions::register(&connection).unwrap();
        schema::migrate(&connection).unwrap();
        let joined = MemberJoined {
            member_id: "m-1".to_owned(),
            user_id: "u-1".to_owned(),
            external_id: Some("ext-1".to_owned()),
            user_name: "ann@example.com".to_owned(),
            properties: serde_json::from_value(serde_json::json!({"email": "ann@example.com"}))
                .unwrap(),
            roles: vec!["viewer".to_owned()],
        };
        let event = Event::MemberJoined(joined.clone());
        let recorded = recorded(1, &event);
        apply(&connection, &recorded, &event).unwrap();
        assert_eq!(
            members::member(&connection, "t", "m-1").unwrap(),
            Some(members::joined_row(&recorded, &joined))
        );
    }

    /// Synchronize reads a batch's members in one range of the user index
    /// (`members::members_of_users_in_range`); for every user it must
    /// answer with the member `members::member_of_user` answers, also for
    /// a user with several members that are not purged, and skip purged
    /// ones. A range holding more rows than the limit says so.
    #[test]
    fn a_range_of_users_gets_the_members_one_lookup_each_would() {
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        functions::register(&connection).unwrap();
        schema::migrate(&connection).unwrap();
        let join = |position: u64, member: &str, user: &str| {
            let joined = Event::MemberJoined(MemberJoined {
                member_id: member.to_owned(),
                user_id: user.to_owned(),
                external_id: None,
                user_name: format!("{member}@example.com"),
                properties: serde_json::Map::new(),
                roles: Vec::new(),
            });
            let mut recorded = recorded(position, &joined);
            recorded.stream = format!("member:{member}");
            recorded.version = 1;
            apply(&connection, &recorded, &joined).unwrap();
        };
        // u-2 has three members; the first of them in the index is purged.
        join(1, "m-a", "u-1");
        join(2, "m-b", "u-2");
        join(3, "m-c", "u-2");
        join(4, "m-d", "u-2");
        join(5, "m-e", "u-4");
        let purged = Event::MemberPurged(MemberPurged { member_id: "m-b".to_owned() });
        let mut recorded_purge = recorded(6, &purged);
        recorded_purge.stream = "member:m-b".to_owned();
        recorded_purge.version = 2;
        apply(&connection, &recorded_purge, &purged).unwrap();

        let (ranged, complete) =
            members::members_of_users_in_range(&connection, "t", "u-1", "u-4", 100).unwrap();
        assert!(complete);
        for user in ["u-1", "u-2", "u-3", "u-4"] {
            let one = members::member_of_user(&connection, "t", user).unwrap();
            let from_range = ranged.iter().find(|member| member.user_id == user);
            assert_eq!(from_range, one.as_ref(), "{user}");
        }
        assert_eq!(
            ranged.iter().map(|member| member.member_id.as_str()).collect::<Vec<_>>(),
            ["m-a", "m-c", "m-e"]
        );
        let (_, complete) =
            members::members_of_users_in_range(&connection, "t", "u-1", "u-4", 3).unwrap();
        assert!(!complete, "four rows in range, three read");
    }

    /// A full Synchronize walks `directory::store::all_ids`, which reads a
    /// secondary index in creation order: it must still hand out the
    /// tenant's ids of that kind in the primary key's order, which is not
    /// the order they were created in.
    #[test]
    fn every_id_of_a_kind_comes_in_the_primary_keys_order() {
        let connection = rusqlite::Connection::open_in_memory().unwrap();
        functions::register(&connection).unwrap();
        schema::migrate(&connection).unwrap();
        for (position, id) in ["u-c", "u-a", "u-é", "u-B", "u-b"].into_iter().enumerate() {
            let created = Event::UserCreated(UserCreated {
                user_id: id.to_owned(),
                document: serde_json::from_value(serde_json::json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": format!("{position}-{id}@example.com"),
                }))
                .unwrap(),
                key: None,
            });
            let mut recorded = recorded(position as u64 + 1, &created);
            recorded.stream = format!("user:{id}");
            recorded.version = 1;
            apply(&connection, &recorded, &created).unwrap();
        }
        let in_key_order: Vec<String> = connection
            .prepare_cached(
                "SELECT id FROM scim_resources WHERE tenant_id = 't' AND kind = 'User' ORDER BY id",
            )
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(in_key_order, ["u-B", "u-a", "u-b", "u-c", "u-é"]);
        assert_eq!(
            directory::store::all_ids(&connection, "t", directory::schema::ResourceKind::User)
                .unwrap(),
            in_key_order
        );
        assert!(
            directory::store::all_ids(&connection, "other", directory::schema::ResourceKind::User)
                .unwrap()
                .is_empty()
        );
    }
}

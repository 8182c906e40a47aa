//! Appending and reading back: the round trip, expected versions, and the
//! race between two appenders to one stream.

use events::log::flatten_append;
use events::{AppendError, EventLog, ExpectedVersion, LogTransaction, Metadata};

use events::sqlite::{LogOptions, SqliteLog};

use crate::util::{TestDb, context, event};

#[test]
fn append_then_read_round_trip() {
    let db = TestDb::new();
    let log = db.open();
    let recorded = flatten_append(
        log.append(
            "t1",
            "user:1",
            ExpectedVersion::NoStream,
            vec![event("A", 1), event("B", 2)],
            context(),
        )
        .wait(),
    )
    .unwrap();
    assert_eq!(
        recorded.iter().map(|e| (e.position, e.version)).collect::<Vec<_>>(),
        vec![(1, 1), (2, 2)]
    );
    assert_eq!(recorded[1].prev_hash, recorded[0].hash, "events of one tenant chain");

    let stream = log.read_stream("t1", "user:1").unwrap();
    assert_eq!(stream, recorded);
    let metadata: Metadata = stream[0].metadata().unwrap();
    assert_eq!(metadata.request_id.as_deref(), Some("req-1"));
    assert_ne!(metadata.event_id, stream[1].metadata().unwrap().event_id);
    assert!(
        stream[0].recorded_at.ends_with('Z') && stream[0].recorded_at.len() == 24,
        "{}",
        stream[0].recorded_at
    );
    assert_eq!(log.head().unwrap(), 2);
    assert!(log.read_stream("t2", "user:1").unwrap().is_empty(), "streams are per tenant");
}

#[test]
fn expected_version_is_enforced() {
    let db = TestDb::new();
    let log = db.open();
    let append = |expected, n| {
        flatten_append(log.append("t1", "s", expected, vec![event("A", n)], context()).wait())
    };
    append(ExpectedVersion::NoStream, 1).unwrap();
    let conflict = append(ExpectedVersion::NoStream, 2).unwrap_err();
    assert!(
        matches!(
            conflict,
            AppendError::Conflict { actual: Some(1), expected: ExpectedVersion::NoStream, .. }
        ),
        "{conflict:?}"
    );
    assert!(matches!(
        append(ExpectedVersion::Exact(3), 3),
        Err(AppendError::Conflict { actual: Some(1), .. })
    ));
    append(ExpectedVersion::Exact(1), 4).unwrap();
    append(ExpectedVersion::Any, 5).unwrap();
    assert_eq!(log.read_stream("t1", "s").unwrap().len(), 3);
    assert_eq!(log.head().unwrap(), 3, "refused appends leave no trace");
}

#[test]
fn several_events_in_one_append_land_all_or_none() {
    let db = TestDb::new();
    let log = db.open();
    let bad = events::NewEvent {
        event_type: "B".to_owned(),
        schema_version: 1,
        payload: "not json".to_owned(),
    };
    let result = flatten_append(
        log.append("t1", "s", ExpectedVersion::Any, vec![event("A", 1), bad], context()).wait(),
    );
    assert!(matches!(result, Err(AppendError::InvalidEvent { .. })), "{result:?}");
    assert_eq!(log.head().unwrap(), 0);

    // A command that appends to two streams and then fails keeps neither.
    let result = log
        .execute(|tx| {
            tx.append("t1", "a", ExpectedVersion::NoStream, &[event("A", 1)], &context())?;
            tx.append("t1", "b", ExpectedVersion::Exact(7), &[event("B", 1)], &context())
        })
        .wait();
    assert!(result.is_err());
    assert_eq!(log.head().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_appenders_to_one_stream_exactly_one_wins() {
    let db = TestDb::new();
    let log = std::sync::Arc::new(db.open());
    for round in 0..50u64 {
        let stream = format!("user:{round}");
        let attempts: Vec<_> = (0..2)
            .map(|n| {
                let log = log.clone();
                let stream = stream.clone();
                tokio::spawn(async move {
                    flatten_append(
                        log.append(
                            "t1",
                            &stream,
                            ExpectedVersion::NoStream,
                            vec![event("Created", n)],
                            context(),
                        )
                        .await,
                    )
                })
            })
            .collect();
        let mut wins = 0;
        let mut conflicts = 0;
        for attempt in attempts {
            match attempt.await.unwrap() {
                Ok(_) => wins += 1,
                Err(AppendError::Conflict { .. }) => conflicts += 1,
                Err(other) => panic!("unexpected error: {other}"),
            }
        }
        assert_eq!((wins, conflicts), (1, 1), "round {round}");
        assert_eq!(log.read_stream("t1", &stream).unwrap().len(), 1);
    }
}

#[test]
fn forward_reads_page_through_everything_in_order() {
    let db = TestDb::new();
    let log =
        db.open_with(events::sqlite::LogOptions { read_page_events: 3, ..Default::default() });
    for n in 0..10 {
        let tenant = if n % 2 == 0 { "even" } else { "odd" };
        flatten_append(
            log.append(tenant, "s", ExpectedVersion::Any, vec![event("A", n)], context()).wait(),
        )
        .unwrap();
    }
    let all: Vec<u64> = log.read_forward(0, None).map(|e| e.unwrap().position).collect();
    assert_eq!(all, (1..=10).collect::<Vec<_>>());
    let after_four: Vec<u64> = log.read_forward(4, None).map(|e| e.unwrap().position).collect();
    assert_eq!(after_four, (5..=10).collect::<Vec<_>>());
    let odd: Vec<u64> = log.read_forward(0, Some("odd")).map(|e| e.unwrap().position).collect();
    assert_eq!(odd, vec![2, 4, 6, 8, 10]);
}

const CHILD_APPENDS: u64 = 300;

/// Not a test of its own: the writer process that
/// `two_writer_processes_on_one_file_wait_for_each_other` starts twice.
#[test]
#[ignore = "run as a child process by two_writer_processes_on_one_file_wait_for_each_other"]
fn child_writer_process() {
    use std::io::BufRead;
    let (Ok(path), Ok(name)) = (std::env::var("CHILD_DB"), std::env::var("CHILD_NAME")) else {
        return;
    };
    let log = SqliteLog::open(std::path::Path::new(&path), LogOptions::default()).unwrap();
    println!("ready");
    let mut go = String::new();
    std::io::stdin().lock().read_line(&mut go).unwrap();
    let micros =
        || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros();
    println!("\nstarted={}", micros());
    for n in 0..CHILD_APPENDS {
        let expected = if n == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(n) };
        flatten_append(
            log.append("t1", &format!("s-{name}"), expected, vec![event("A", n)], context()).wait(),
        )
        .unwrap();
    }
    println!("\nfinished={}", micros());
}

/// The server and the CLI are two processes with a writer each on one
/// file: they serialise on SQLite's write lock (SQLITE_BUSY, waited out),
/// and neither trusts a cached head or hash across batches, so the log
/// stays gapless and one chain.
#[test]
fn two_writer_processes_on_one_file_wait_for_each_other() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    let db = TestDb::new();
    drop(db.open()); // the schema exists before either child opens the file
    let mut children: Vec<_> = ["a", "b"]
        .iter()
        .map(|name| {
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "append::child_writer_process", "--ignored", "--nocapture"])
                .args(["--test-threads", "1"])
                .env("CHILD_DB", db.path())
                .env("CHILD_NAME", name)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            assert!(lines.by_ref().map_while(Result::ok).any(|line| line.ends_with("ready")));
            (child, lines)
        })
        .collect();
    // Both are open: start them together.
    for (child, _) in &mut children {
        writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
    }
    let mut spans = Vec::new();
    for (mut child, lines) in children {
        let said: Vec<String> = lines.map_while(Result::ok).collect();
        assert!(child.wait().unwrap().success(), "{said:?}");
        let at = |key: &str| -> u128 {
            said.iter().find_map(|line| line.strip_prefix(key)).expect(key).parse().unwrap()
        };
        spans.push((at("started="), at("finished=")));
    }
    // Both were writing at once: whichever came second to the lock was
    // refused with SQLITE_BUSY and waited it out.
    let latest_start = spans.iter().map(|span| span.0).max().unwrap();
    let earliest_end = spans.iter().map(|span| span.1).min().unwrap();
    assert!(latest_start < earliest_end, "the writers never overlapped: {spans:?}");
    let log = db.open();
    let all: Vec<_> = log.read_forward(0, None).map(Result::unwrap).collect();
    assert_eq!(
        all.iter().map(|event| event.position).collect::<Vec<_>>(),
        (1..=2 * CHILD_APPENDS).collect::<Vec<_>>()
    );
    for name in ["a", "b"] {
        let stream = log.read_stream("t1", &format!("s-{name}")).unwrap();
        let versions: Vec<u64> = stream.iter().map(|event| event.version).collect();
        assert_eq!(versions, (1..=CHILD_APPENDS).collect::<Vec<_>>());
    }
    let report = log.verify(events::VerifyScope::All).unwrap();
    assert_eq!(report.failure, None);
    assert_eq!(report.events_checked, 2 * CHILD_APPENDS);
}

#[test]
fn two_writers_on_one_file_interleave_without_gaps() {
    // The server and the CLI each have a writer on the same file.
    let db = TestDb::new();
    let first = db.open();
    let second = db.open();
    for n in 0..20 {
        let log = if n % 2 == 0 { &first } else { &second };
        flatten_append(
            log.append("t1", "s", ExpectedVersion::Any, vec![event("A", n)], context()).wait(),
        )
        .unwrap();
    }
    let stream = first.read_stream("t1", "s").unwrap();
    assert_eq!(stream.iter().map(|e| e.version).collect::<Vec<_>>(), (1..=20).collect::<Vec<_>>());
    let report = second.verify(events::VerifyScope::All).unwrap();
    assert_eq!(report.failure, None);
    assert_eq!(report.events_checked, 20);
}

/// A clock stepped back never records an event before the one ahead of it,
/// so a window of time is a range of positions, and `first_position_at`
/// finds its edges.
#[test]
fn recorded_times_never_go_back_and_find_positions() {
    let db = TestDb::new();
    fn early() -> jiff::Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }
    fn late() -> jiff::Timestamp {
        "2026-03-01T00:00:00Z".parse().unwrap()
    }
    fn back() -> jiff::Timestamp {
        "2025-12-01T00:00:00Z".parse().unwrap()
    }
    let mut recorded = Vec::new();
    for clock in [early as fn() -> jiff::Timestamp, late, back] {
        let log = db.open_with(LogOptions { clock, ..LogOptions::default() });
        for n in 0..2 {
            let events = flatten_append(
                log.append("t1", "s", ExpectedVersion::Any, vec![event("A", n)], context()).wait(),
            )
            .unwrap();
            recorded.extend(events.into_iter().map(|event| event.recorded_at));
        }
        log.shutdown();
    }
    assert_eq!(
        recorded,
        [
            "2026-01-01T00:00:00.000Z",
            "2026-01-01T00:00:00.000Z",
            "2026-03-01T00:00:00.000Z",
            "2026-03-01T00:00:00.000Z",
            "2026-03-01T00:00:00.000Z",
            "2026-03-01T00:00:00.000Z"
        ]
    );
    let log = db.open();
    assert_eq!(log.first_position_at("2025-01-01T00:00:00.000Z").unwrap(), 1);
    assert_eq!(log.first_position_at("2026-01-01T00:00:00.000Z").unwrap(), 1);
    assert_eq!(log.first_position_at("2026-01-01T00:00:00.001Z").unwrap(), 3);
    assert_eq!(log.first_position_at("2026-03-01T00:00:00.000Z").unwrap(), 3);
    assert_eq!(log.first_position_at("2027-01-01T00:00:00.000Z").unwrap(), 7);
    assert_eq!(log.read_at(3).unwrap().unwrap().position, 3);
    assert!(log.read_at(7).unwrap().is_none());
}

//! Group commit under load: many concurrent appenders, one writer, and the
//! promise that a failing command fails alone.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use events::log::flatten_append;
use events::sqlite::{Durability, LogOptions, SqliteLog};
use events::{
    AppendError, EventLog, ExecuteError, ExpectedVersion, LogTransaction, NestedError, VerifyScope,
};

use crate::util::{TestDb, context, event};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_appenders_times_five_hundred_are_gapless_durable_and_chained() {
    sixty_four_appenders(Durability::Full).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_appenders_with_pipelined_fsync_are_gapless_durable_and_chained() {
    sixty_four_appenders(Durability::Pipelined).await;
}

/// The durability check above discriminates: without fsyncs nothing is
/// ever reported durable, so the same appenders fail it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fsyncs_no_answer_claims_durability() {
    for durability in [Durability::Off, Durability::Normal] {
        let db = TestDb::new();
        let log = db.open_with(LogOptions { durability, ..LogOptions::default() });
        let recorded = flatten_append(
            log.append("t", "s", ExpectedVersion::NoStream, vec![event("A", 0)], context()).await,
        )
        .unwrap();
        assert_eq!(recorded[0].position, 1);
        assert_eq!(log.stats().durable_position.load(Ordering::Acquire), 0, "{durability:?}");
    }
}

/// `Durability::Full` rests on SQLite's own fsync inside COMMIT: the write
/// connection really is in WAL mode with `synchronous=FULL`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_durability_commits_with_synchronous_full() {
    let db = TestDb::new();
    let log = db.open_with(LogOptions { durability: Durability::Full, ..LogOptions::default() });
    let (synchronous, journal): (i64, String) = log
        .execute(|tx| {
            let connection = tx.connection();
            let synchronous = connection.query_row("PRAGMA synchronous", [], |row| row.get(0));
            let journal = connection.query_row("PRAGMA journal_mode", [], |row| row.get(0));
            Ok::<_, rusqlite::Error>((synchronous?, journal?))
        })
        .await
        .unwrap();
    assert_eq!((synchronous, journal.as_str()), (2, "wal"), "2 is FULL");
}

async fn sixty_four_appenders(durability: Durability) {
    const TASKS: u64 = 64;
    const APPENDS_PER_TASK: u64 = 500;
    let db = TestDb::new();
    let log = Arc::new(db.open_with(LogOptions { durability, ..LogOptions::default() }));
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let log = log.clone();
            tokio::spawn(async move {
                let tenant = format!("tenant-{}", task % 4);
                let stream = format!("stream-{task}");
                let mut positions = Vec::with_capacity(APPENDS_PER_TASK as usize);
                for n in 0..APPENDS_PER_TASK {
                    let expected =
                        if n == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(n) };
                    let recorded = flatten_append(
                        log.append(&tenant, &stream, expected, vec![event("A", n)], context())
                            .await,
                    )
                    .unwrap();
                    assert_eq!(recorded[0].version, n + 1);
                    // Answered only once its batch is on disk.
                    let durable = log.stats().durable_position.load(Ordering::Acquire);
                    assert!(
                        durable >= recorded[0].position,
                        "position {} answered with only {durable} durable",
                        recorded[0].position
                    );
                    positions.push(recorded[0].position);
                }
                positions
            })
        })
        .collect();
    let mut positions = Vec::new();
    for task in tasks {
        positions.extend(task.await.unwrap());
    }
    assert_eq!(positions.len() as u64, TASKS * APPENDS_PER_TASK, "every caller answered");
    positions.sort_unstable();
    assert_eq!(positions, (1..=TASKS * APPENDS_PER_TASK).collect::<Vec<_>>(), "unique and gapless");
    let batches = log.stats().batches_committed.load(Ordering::Relaxed);
    assert!(batches < TASKS * APPENDS_PER_TASK / 4, "appends were batched: {batches} batches");

    // Everything is on disk: reopen the file and read it all back.
    drop(Arc::into_inner(log).expect("all tasks are done"));
    let reopened = db.open();
    let mut count = 0;
    let mut previous = 0;
    for recorded in reopened.read_forward(0, None) {
        let recorded = recorded.unwrap();
        assert_eq!(recorded.position, previous + 1);
        previous = recorded.position;
        count += 1;
    }
    assert_eq!(count, TASKS * APPENDS_PER_TASK);
    let report = reopened.verify(VerifyScope::All).unwrap();
    assert_eq!(report.failure, None);
    assert_eq!(report.events_checked, TASKS * APPENDS_PER_TASK);
    assert_eq!(report.heads.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_in_a_batch_does_not_take_the_others_down() {
    let db = TestDb::new();
    let log = Arc::new(db.open());
    // Hold the writer inside a batch so the next commands queue up into one.
    let (blocker, release) = hold_the_writer(&log);
    let batches_before = log.stats().batches_committed.load(Ordering::Relaxed);

    let good_one =
        log.append("t1", "good-1", ExpectedVersion::NoStream, vec![event("A", 1)], context());
    let fails_after_writing = log.execute(|tx| {
        tx.append("t1", "bad", ExpectedVersion::NoStream, &[event("A", 2)], &context())?;
        Err::<(), AppendError>(AppendError::InvalidEvent {
            stream: "bad".to_owned(),
            reason: "decided to fail".to_owned(),
        })
    });
    let conflict =
        log.append("t1", "blocker", ExpectedVersion::NoStream, vec![event("A", 3)], context());
    let panics_after_writing = log.execute(|tx| -> Result<(), AppendError> {
        tx.append("t1", "panicky", ExpectedVersion::NoStream, &[event("A", 4)], &context())?;
        panic!("a bug in a command");
    });
    let good_two =
        log.append("t1", "good-2", ExpectedVersion::NoStream, vec![event("A", 5)], context());

    // Everything above is queued behind the blocker (`execute` enqueues
    // before it returns): let the writer go on.
    release.send(()).unwrap();
    flatten_append(blocker.await).unwrap();
    let good_one = flatten_append(good_one.await).unwrap();
    assert!(matches!(
        fails_after_writing.await,
        Err(ExecuteError::Command(AppendError::InvalidEvent { .. }))
    ));
    assert!(matches!(flatten_append(conflict.await), Err(AppendError::Conflict { .. })));
    assert!(
        matches!(panics_after_writing.await, Err(ExecuteError::Panicked(message)) if message.contains("a bug"))
    );
    let good_two = flatten_append(good_two.await).unwrap();

    assert_eq!(
        log.stats().batches_committed.load(Ordering::Relaxed),
        batches_before + 2,
        "the blocker's batch, then one transaction for the five queued commands"
    );
    assert_eq!(log.stats().commands_rolled_back.load(Ordering::Relaxed), 3);
    assert_eq!(
        (good_one[0].position, good_two[0].position),
        (2, 3),
        "failed commands leave no gap"
    );
    assert!(log.read_stream("t1", "bad").unwrap().is_empty());
    assert!(log.read_stream("t1", "panicky").unwrap().is_empty());
    assert_eq!(log.verify(VerifyScope::All).unwrap().failure, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_of_a_command_is_undone_alone() {
    let db = TestDb::new();
    let log = db.open();
    let outcomes = log
        .execute(|tx| {
            // As commands hold it: the transaction of either engine.
            let tx: &mut dyn LogTransaction = tx;
            let first = tx.nested(|tx| {
                tx.append("t1", "one", ExpectedVersion::NoStream, &[event("A", 1)], &context())
            });
            let second = tx.nested(|tx| {
                tx.append("t1", "two", ExpectedVersion::NoStream, &[event("A", 2)], &context())?;
                Err::<(), AppendError>(AppendError::InvalidEvent {
                    stream: "two".to_owned(),
                    reason: "decided to fail".to_owned(),
                })
            });
            let panicked = tx.nested(|tx| -> Result<(), AppendError> {
                tx.append("t1", "panicky", ExpectedVersion::NoStream, &[event("A", 9)], &context())?;
                panic!("a bug in one step");
            });
            assert!(
                matches!(&panicked, Err(NestedError::Panicked(message)) if message.contains("a bug"))
            );
            let third = tx.nested(|tx| {
                tx.append("t1", "three", ExpectedVersion::NoStream, &[event("A", 3)], &context())
            });
            Ok::<_, AppendError>((
                first.is_ok(),
                matches!(second, Err(NestedError::Step(_))),
                third,
            ))
        })
        .await
        .unwrap();
    let (first_kept, second_failed, third) = outcomes;
    assert!(first_kept && second_failed);
    assert_eq!(third.unwrap()[0].position, 2, "the undone step left no gap");
    assert!(log.read_stream("t1", "two").unwrap().is_empty());
    assert!(log.read_stream("t1", "panicky").unwrap().is_empty(), "a panicking step is undone");
    assert_eq!(log.read_stream("t1", "three").unwrap().len(), 1);
    assert_eq!(
        log.verify(VerifyScope::All).unwrap().failure,
        None,
        "the chain skips the undone step"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_transaction_was_lost_fails_whole_and_the_writer_goes_on() {
    // A command that ends the transaction behind the writer's back stands in
    // for SQLite rolling it back by itself (a full disk, an I/O error).
    let db = TestDb::new();
    let log = Arc::new(db.open());
    let (blocker, release) = hold_the_writer(&log);
    let before =
        log.append("t1", "before", ExpectedVersion::NoStream, vec![event("A", 1)], context());
    let rogue = log.execute(|tx| -> Result<(), AppendError> {
        tx.append("t1", "rogue", ExpectedVersion::NoStream, &[event("A", 2)], &context())?;
        tx.connection().execute_batch("ROLLBACK").unwrap();
        Ok(())
    });
    let after =
        log.append("t1", "after", ExpectedVersion::NoStream, vec![event("A", 3)], context());
    // Everything above is queued behind the blocker (`execute` enqueues
    // before it returns): let the writer go on.
    release.send(()).unwrap();
    flatten_append(blocker.await).unwrap();
    assert!(
        matches!(flatten_append(before.await), Err(AppendError::Log(_))),
        "its work was rolled back with the batch"
    );
    assert!(matches!(rogue.await, Err(ExecuteError::Log(_))));
    assert!(
        matches!(flatten_append(after.await), Err(AppendError::Log(_))),
        "not committed on its own in autocommit"
    );
    for stream in ["before", "rogue", "after"] {
        assert!(log.read_stream("t1", stream).unwrap().is_empty(), "{stream} left no event");
    }
    // The next batch is a normal one.
    let next = flatten_append(
        log.append("t1", "next", ExpectedVersion::NoStream, vec![event("A", 4)], context()).await,
    )
    .unwrap();
    assert_eq!(next[0].position, 2);
    assert_eq!(log.verify(VerifyScope::All).unwrap().failure, None);
}

/// Starts a command that holds the writer inside its batch until `release`
/// is sent, so that every command submitted meanwhile queues up for the next
/// batch (`execute` enqueues before it returns). Returns once the writer is
/// held.
fn hold_the_writer(
    log: &SqliteLog,
) -> (events::Pending<Vec<events::RecordedEvent>, AppendError>, std::sync::mpsc::Sender<()>) {
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (started, has_started) = std::sync::mpsc::channel::<()>();
    let blocker = log.execute(move |tx| {
        started.send(()).unwrap();
        released.recv_timeout(Duration::from_secs(30)).unwrap();
        tx.append("t1", "blocker", ExpectedVersion::NoStream, &[event("A", 0)], &context())
    });
    has_started.recv_timeout(Duration::from_secs(30)).unwrap();
    (blocker, release)
}

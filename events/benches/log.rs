//! The log's benchmark: durable appends per second with 1 and with 64
//! concurrent appenders (group commit), and replay of 1,000,000 events
//! (events/s without and with JSON decode, peak RSS).
//!
//! Run: `cargo bench -p events --bench log` (figures in BENCHMARKS.md).
//! `BENCH_DURABILITY=pipelined` measures the appends under
//! `Durability::Pipelined` instead of the default `Full`;
//! `BENCH_ONLY=append|concurrent|replay|postgres` runs one part. The
//! PostgreSQL part (only when asked for) measures `PgWriter` and one
//! transaction per append, 64 appenders over 8 and over 64 tenants, on a
//! fresh database in the cluster `PGHOST`, `PGPORT`, `PGUSER` name (fsync
//! and `synchronous_commit` as the cluster has them); `BENCH_PG_LANES`
//! sets the writer's lanes (default 8).
//! Knobs (environment): `BENCH_DIR` (where the database files go, default a
//! temp dir), `BENCH_REPLAY_EVENTS` (default 1,000,000),
//! `BENCH_APPENDS_PER_TASK` (default 1,000 with 64 appenders).
//!
//! The replay runs in a child process (this binary again, with
//! `--replay-child`), so its peak RSS is the replay's own and not the
//! populating phase's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use events::event::{TokenIssued, TokenScope};
use events::log::flatten_append;
use events::sqlite::{Durability, LogOptions, SqliteLog};
use events::{Actor, CommandContext, Event, EventLog, ExpectedVersion, LogTransaction};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

fn context() -> CommandContext {
    CommandContext {
        request_id: Some("01JBENCHREQUEST00000000000".to_owned()),
        user_agent: Some("Azure Active Directory SCIM Client".to_owned()),
        ..CommandContext::new(Actor::Token { token_id: "01JBENCHTOKEN0000000000000".to_owned() })
    }
}

/// A realistic payload: a TokenIssued, about the size of a small SCIM event.
fn sample_event(n: u64) -> Event {
    Event::TokenIssued(TokenIssued {
        token_id: format!("01JBENCH{n:018}"),
        scope: TokenScope::Scim,
        secret_sha256: "5f".repeat(32),
        expires_at: Some("2027-01-01T00:00:00.000Z".to_owned()),
        label: Some(format!("bench token {n}")),
        client_id: None,
    })
}

/// What the append after `n` earlier ones expects.
fn after(n: u64) -> ExpectedVersion {
    if n == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(n) }
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn fresh(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    path
}

fn one_appender(dir: &Path) {
    let path = fresh(dir, "one-appender.db");
    let log = SqliteLog::open(&path, LogOptions::default()).unwrap();
    let appends = 2_000u64;
    let event = sample_event(0).encode();
    let started = Instant::now();
    for n in 0..appends {
        flatten_append(
            log.append(
                "tenant",
                &format!("stream-{n}"),
                ExpectedVersion::NoStream,
                vec![event.clone()],
                context(),
            )
            .wait(),
        )
        .unwrap();
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "append  durable, 1 appender:    {appends:>9} appends in {seconds:6.2} s = {:>9.0} appends/s",
        appends as f64 / seconds
    );
}

fn concurrent_appenders(dir: &Path, tasks: u64) {
    let path = fresh(dir, "concurrent-appenders.db");
    let durability = match std::env::var("BENCH_DURABILITY").as_deref() {
        Ok("off") => Durability::Off,
        Ok("normal") => Durability::Normal,
        Ok("pipelined") => Durability::Pipelined,
        _ => Durability::Full,
    };
    let log = Arc::new(
        SqliteLog::open(&path, LogOptions { durability, ..LogOptions::default() }).unwrap(),
    );
    let per_task = env_number("BENCH_APPENDS_PER_TASK", 1_000);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let event = sample_event(0).encode();
    let started = Instant::now();
    runtime.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|task| {
                let log = log.clone();
                let event = event.clone();
                tokio::spawn(async move {
                    let tenant = format!("tenant-{}", task % 8);
                    let stream = format!("stream-{task}");
                    for n in 0..per_task {
                        let expected = after(n);
                        flatten_append(
                            log.append(&tenant, &stream, expected, vec![event.clone()], context())
                                .await,
                        )
                        .unwrap();
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.await.unwrap();
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    let total = tasks * per_task;
    let batches = log.stats().batches_committed.load(Ordering::Relaxed);
    println!(
        "append  durable, {tasks} appenders:  {total:>9} appends in {seconds:6.2} s = {:>9.0} appends/s \
         ({batches} commits, {:.1} appends per commit)",
        total as f64 / seconds,
        total as f64 / batches.max(1) as f64
    );
}

fn populate(path: &Path, events: u64) {
    let log =
        SqliteLog::open(path, LogOptions { durability: Durability::Off, ..LogOptions::default() })
            .unwrap();
    let per_command = 5_000u64;
    let started = Instant::now();
    let mut written = 0;
    let mut pending = Vec::new();
    while written < events {
        let count = per_command.min(events - written);
        let batch: Vec<_> = (written..written + count).map(|n| sample_event(n).encode()).collect();
        let tenant = format!("tenant-{}", (written / per_command) % 8);
        pending.push(log.execute(move |tx| {
            tx.append(
                &tenant,
                &format!("stream-{written}"),
                ExpectedVersion::NoStream,
                &batch,
                &context(),
            )
        }));
        written += count;
        if pending.len() >= 8 {
            for answer in pending.drain(..) {
                flatten_append(answer.wait()).unwrap();
            }
        }
    }
    for answer in pending.drain(..) {
        flatten_append(answer.wait()).unwrap();
    }
    println!(
        "populate (synchronous=OFF, 5,000 events per command): {events} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn replay_child(path: &Path, mode: &str) {
    let log = SqliteLog::open(path, LogOptions::default()).unwrap();
    let started = Instant::now();
    let mut count = 0u64;
    let mut checksum = 0usize;
    match mode {
        "visit" | "visit-hash" | "visit-decode" => {
            log.visit_forward(0, None, |event| {
                count += 1;
                match mode {
                    "visit-hash" => checksum += usize::from(event.hash_is_consistent()),
                    "visit-decode" => {
                        checksum += usize::from(matches!(
                            event.decode(&events::seal::NoKeys),
                            Ok(Event::TokenIssued(_))
                        ))
                    }
                    _ => checksum += event.payload.len(),
                }
                Ok::<(), ()>(())
            })
            .unwrap();
        }
        _ => {
            for event in log.read_forward(0, None) {
                let event = event.unwrap();
                count += 1;
                checksum += usize::from(matches!(
                    event.decode(&events::seal::NoKeys),
                    Ok(Event::TokenIssued(_))
                ));
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    std::hint::black_box(checksum);
    let label = match mode {
        "visit" => "raw (visit_forward)",
        "visit-hash" => "raw + hash check",
        "visit-decode" => "JSON decode",
        _ => "owned + hash + decode",
    };
    println!(
        "replay  {label:<25} {count:>9} events in {seconds:6.2} s = {:>10.0} events/s, peak RSS {:.1} MiB",
        count as f64 / seconds,
        peak_rss_kib() as f64 / 1024.0
    );
}

/// A fresh database in the cluster the environment names.
fn postgres_database() -> String {
    let host =
        std::env::var("PGHOST").expect("BENCH_ONLY=postgres needs PGHOST (and PGPORT, PGUSER)");
    let mut cluster = format!("host={host}");
    for (variable, key) in [("PGPORT", "port"), ("PGUSER", "user"), ("PGPASSWORD", "password")] {
        if let Ok(value) = std::env::var(variable) {
            cluster.push_str(&format!(" {key}={value}"));
        }
    }
    let admin = events::postgres::PgPool::new(&format!("{cluster} dbname=postgres"), 1).unwrap();
    let name = format!("rollcall_bench_{}", std::process::id());
    let connection = admin.get().unwrap();
    use events::db::Db;
    connection.execute_batch(&format!("DROP DATABASE IF EXISTS {name}")).unwrap();
    connection.execute_batch(&format!("CREATE DATABASE {name}")).unwrap();
    format!("{cluster} dbname={name}")
}

/// `tasks` appenders over `tenants`, through the writer (group commit per
/// tenant) and then each append in a transaction of its own.
fn postgres_appenders(tasks: u64, tenants: u64) {
    use events::postgres::{PgLog, PgWriter, PgWriterOptions};
    let per_task = env_number("BENCH_APPENDS_PER_TASK", 200);
    let lanes = env_number("BENCH_PG_LANES", 8) as usize;
    let event = sample_event(0).encode();
    for batched in [true, false] {
        let log = PgLog::connect(&postgres_database(), 72).unwrap();
        let writer =
            Arc::new(PgWriter::start(log.pool().clone(), PgWriterOptions::default()).unwrap());
        let started = Instant::now();
        let threads: Vec<_> = (0..tasks)
            .map(|task| {
                let (log, writer, event) = (log.clone(), writer.clone(), event.clone());
                std::thread::spawn(move || {
                    let tenant = format!("tenant-{}", task % tenants);
                    let stream = format!("stream-{task}");
                    for n in 0..per_task {
                        let expected = after(n);
                        if batched {
                            let (tenant, stream, event) =
                                (tenant.clone(), stream.clone(), event.clone());
                            writer
                                .execute(&tenant.clone(), move |tx| {
                                    tx.append(&tenant, &stream, expected, &[event], &context())
                                })
                                .wait()
                                .unwrap();
                        } else {
                            log.append(
                                &tenant,
                                &stream,
                                expected,
                                std::slice::from_ref(&event),
                                &context(),
                            )
                            .unwrap();
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let seconds = started.elapsed().as_secs_f64();
        let total = tasks * per_task;
        let how = if batched {
            format!("PgWriter ({lanes} lanes)")
        } else {
            "a transaction each".to_owned()
        };
        println!(
            "postgres {how}, {tasks} appenders over {tenants} tenants: {total} appends in \
             {seconds:.2} s = {:.0} appends/s",
            total as f64 / seconds
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|arg| arg == "--replay-child") {
        let path = PathBuf::from(&args[at + 1]);
        replay_child(&path, &args[at + 2]);
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let dir =
        std::env::var("BENCH_DIR").map(PathBuf::from).unwrap_or_else(|_| temp.path().to_owned());
    std::fs::create_dir_all(&dir).unwrap();
    println!("events log benchmark, database files in {}", dir.display());

    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only == "postgres" {
        postgres_appenders(64, 8);
        postgres_appenders(64, 64);
        return;
    }
    if only.is_empty() || only == "append" {
        one_appender(&dir);
    }
    if only.is_empty() || only == "append" || only == "concurrent" {
        concurrent_appenders(&dir, 64);
    }
    if !only.is_empty() && only != "replay" {
        return;
    }

    let replay_events = env_number("BENCH_REPLAY_EVENTS", 1_000_000);
    let path = fresh(&dir, "replay.db");
    populate(&path, replay_events);
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!("        database file: {:.0} MiB", size as f64 / 1024.0 / 1024.0);
    let me = std::env::current_exe().unwrap();
    for mode in ["visit", "visit-hash", "visit-decode", "read-forward"] {
        let status = std::process::Command::new(&me)
            .args(["--replay-child", path.to_str().unwrap(), mode])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

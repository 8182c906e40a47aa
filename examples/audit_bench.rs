//! The audit benchmark of BENCHMARKS.md: two simulated years of one tenant
//! (100,000 users created week by week, renamed, moved between bound
//! groups, deactivated, reactivated and deleted, with a Synchronize every
//! week), about a million events, pushed over real SCIM HTTP (Bulk) into a
//! real server; then the auditor's questions, timed.
//!
//!     cargo run --release --example audit_bench -- /tmp/audit-bench [--populate-only]
//!
//! The log's clock is simulated (`LogOptions::clock`): events are recorded
//! at their simulated week, so a quarter holds a quarter's events. An
//! existing database in the directory is measured again, not refilled.

#![allow(clippy::expect_used, clippy::indexing_slicing, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use events::event::TokenScope;
use events::sqlite::{Durability, LogOptions};
use events::{Actor, CommandContext, VerifyScope};
use rollcall::audit::report;
use rollcall::state::{AppState, ServerConfig};
use rollcall::store::Store;
use rollcall::store::replay;
use rollcall::store::snapshots::{DEFAULT_EVERY, Snapshots};
use rollcall::tenancy::{self, TenantRef, TokenRequest};
use serde_json::{Value, json};

// The allocator the rollcall binary uses, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The simulated now, in Unix milliseconds.
static NOW_MS: AtomicI64 = AtomicI64::new(0);

fn simulated_now() -> jiff::Timestamp {
    jiff::Timestamp::from_millisecond(NOW_MS.load(Ordering::Relaxed))
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

const WEEKS: i64 = 104;
const USERS: usize = 100_000;
const GROUPS: usize = 20;
const WEEK_MS: i64 = 7 * 24 * 3600 * 1000;
const START: &str = "2024-10-01T00:00:00Z";

/// A small deterministic generator, so every run builds the same history.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    scim: String,
    admin: String,
}

impl Client {
    async fn bulk(&self, operations: Vec<Value>) -> Vec<Value> {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
            "Operations": operations,
        });
        let response = self
            .http
            .post(format!("{}/scim/v2/Bulk", self.base))
            .bearer_auth(&self.scim)
            .header("content-type", "application/scim+json")
            .header("user-agent", "Azure-AD-SCIM-Provisioning/1.0")
            .body(body.to_string())
            .send()
            .await
            .expect("bulk request");
        let answer: Value = response.json().await.expect("bulk answer");
        answer["Operations"].as_array().cloned().unwrap_or_default()
    }

    async fn admin_put(&self, path: &str, body: Value) {
        let response = self
            .http
            .put(format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await
            .expect("admin request");
        assert!(
            response.status().is_success(),
            "PUT {path}: {}",
            response.text().await.unwrap_or_default()
        );
    }
}

fn user_body(n: usize) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "userName": format!("user{n}@example.com"),
        "externalId": format!("ext{n}"),
        "active": true,
        "name": {"givenName": format!("Given{n}"), "familyName": "Family"},
        "displayName": format!("User {n}"),
        "title": "Engineer",
        "emails": [{"value": format!("user{n}@example.com"), "type": "work", "primary": true}],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Dept0"}
    })
}

fn patch(id: &str, operations: Value) -> Value {
    json!({"method": "PATCH", "path": format!("/Users/{id}"),
           "data": {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": operations}})
}

async fn populate(store: Arc<Store>) {
    let context = || CommandContext::new(Actor::System);
    tenancy::create_tenant(&store, "bench", context()).await.expect("tenant");
    let token = |scope| {
        tenancy::issue_token(
            &store,
            TenantRef::Name("bench".to_owned()),
            TokenRequest { scope, lifetime: None, label: None, client_id: None },
            context(),
        )
    };
    let (_, scim) = token(TokenScope::Scim).await.expect("token");
    let (_, admin) = token(TokenScope::Admin).await.expect("token");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let config = ServerConfig { bulk_operations_max: 1000, ..ServerConfig::default() };
    let state = AppState::new(store.clone(), config).unwrap();
    tokio::spawn(rollcall::server::run(listener, state, std::future::pending()));
    let client = Client {
        http: {
            rollcall::webhooks::deliver::install_tls_provider();
            reqwest::Client::new()
        },
        base,
        scim: scim.expose().to_owned(),
        admin: admin.expose().to_owned(),
    };
    let roles: Vec<Value> = (0..GROUPS)
        .map(|g| {
            let role = ["editor", "viewer", "billing"][g % 3];
            json!({"group": format!("Team {g}"), "role": role})
        })
        .collect();
    client
        .admin_put(
            "/provisioning/role-bindings",
            json!({"roles": ["admin", "editor", "viewer", "billing", "auditor"], "default_role": "viewer", "bindings": roles}),
        )
        .await;
    client
        .admin_put(
            "/provisioning/settings",
            json!({"schedule": null, "safeguard": {"share_percent": 100, "minimum": 1000000}, "grace_days": 30}),
        )
        .await;
    let groups: Vec<String> = client
        .bulk(
            (0..GROUPS)
                .map(|g| {
                    json!({"method": "POST", "path": "/Groups", "bulkId": format!("g{g}"),
                                "data": {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                                         "displayName": format!("Team {g}")}})
                })
                .collect(),
        )
        .await
        .iter()
        .map(|operation| {
            operation["location"]
                .as_str()
                .unwrap_or_default()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut live: Vec<(usize, String, bool)> = Vec::new();
    let mut next_user = 0usize;
    let started = Instant::now();
    for week in 0..WEEKS {
        let week_start = NOW_MS.load(Ordering::Relaxed);
        let tick = || {
            NOW_MS.fetch_add(60_000, Ordering::Relaxed);
        };
        // New hires.
        let hires = (USERS - next_user) / (WEEKS - week) as usize;
        let mut operations = Vec::new();
        for _ in 0..hires {
            operations.push(json!({"method": "POST", "path": "/Users", "bulkId": format!("u{next_user}"), "data": user_body(next_user)}));
            next_user += 1;
        }
        for chunk in operations.chunks(1000) {
            tick();
            for (operation, answer) in chunk.iter().zip(client.bulk(chunk.to_vec()).await) {
                let n: usize =
                    operation["bulkId"].as_str().unwrap_or("u0")[1..].parse().unwrap_or(0);
                if let Some(id) =
                    answer["location"].as_str().and_then(|location| location.rsplit('/').next())
                {
                    live.push((n, id.to_owned(), true));
                }
            }
        }
        // Changes: titles and departments, renames, deactivations and back.
        let mut operations = Vec::new();
        for _ in 0..4000.min(live.len() * 2) {
            let (n, id, _) = &live[rng.below(live.len())];
            let operation = match rng.below(10) {
                0 => {
                    json!([{"op": "replace", "path": "userName", "value": format!("user{n}.{week}@example.com")}])
                }
                1..=5 => {
                    json!([{"op": "replace", "path": "title", "value": format!("Title {}", rng.below(50))}])
                }
                _ => {
                    json!([{"op": "replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
                             "value": format!("Dept{}", rng.below(30))}])
                }
            };
            operations.push(patch(id, operation));
        }
        if week >= 4 {
            for _ in 0..150 {
                let index = rng.below(live.len());
                let (_, id, active) = &mut live[index];
                operations.push(patch(
                    id,
                    json!([{"op": "replace", "path": "active", "value": !*active}]),
                ));
                *active = !*active;
            }
        }
        for chunk in operations.chunks(1000) {
            tick();
            client.bulk(chunk.to_vec()).await;
        }
        // Group moves: each group gains some members and loses others.
        let mut operations = Vec::new();
        for group in &groups {
            let adds: Vec<Value> =
                (0..25).map(|_| json!({"value": live[rng.below(live.len())].1})).collect();
            let mut ops = vec![json!({"op": "add", "path": "members", "value": adds})];
            for _ in 0..5 {
                ops.push(json!({"op": "remove", "path": format!("members[value eq \"{}\"]", live[rng.below(live.len())].1)}));
            }
            operations.push(json!({"method": "PATCH", "path": format!("/Groups/{group}"),
                                   "data": {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops}}));
        }
        tick();
        client.bulk(operations).await;
        // Leavers.
        if week >= 8 {
            let mut operations = Vec::new();
            for _ in 0..200 {
                let index = rng.below(live.len());
                let (_, id, _) = live.swap_remove(index);
                operations.push(json!({"method": "DELETE", "path": format!("/Users/{id}")}));
            }
            tick();
            client.bulk(operations).await;
        }
        // The weekly Synchronize, on Monday morning of the next week.
        NOW_MS.store(week_start + WEEK_MS - 3600 * 1000, Ordering::Relaxed);
        let run_store = store.clone();
        tokio::task::spawn_blocking(move || {
            let store = run_store;
            let tenant = store
                .read(|connection| TenantRef::Name("bench".to_owned()).resolve(connection))
                .expect("tenant")
                .tenant_id;
            rollcall::sync::run(
                &store,
                &tenant,
                rollcall::sync::Trigger::Scheduled,
                CommandContext::new(Actor::Scheduler),
                Default::default(),
            )
            .expect("synchronize")
        })
        .await
        .expect("synchronize task");
        NOW_MS.store(week_start + WEEK_MS, Ordering::Relaxed);
        if week % 8 == 7 {
            eprintln!(
                "week {}: {} users pushed, log head {}, {:.0} s",
                week + 1,
                next_user,
                store.log().head().unwrap_or(0),
                started.elapsed().as_secs_f64()
            );
        }
    }
}

fn timed<T>(label: &str, work: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let value = work();
    println!("{label:<48} {:>9.1} ms", started.elapsed().as_secs_f64() * 1000.0);
    value
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "/tmp/audit-bench".to_owned()));
    let rest: Vec<String> = args.collect();
    let populate_only = rest.iter().any(|arg| arg == "--populate-only");
    // `--only joiners|as-of|verify|rebuild` times one question (for profiles).
    let only =
        rest.iter().position(|arg| arg == "--only").and_then(|index| rest.get(index + 1)).cloned();
    std::fs::create_dir_all(&dir).expect("bench directory");
    let db = dir.join("bench.db");
    let fresh = !db.exists();
    NOW_MS.store(
        START.parse::<jiff::Timestamp>().expect("start").as_millisecond(),
        Ordering::Relaxed,
    );
    let options =
        LogOptions { durability: Durability::Off, clock: simulated_now, ..LogOptions::default() };
    let store = Arc::new(Store::open(&db, options).expect("open"));
    if fresh {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
        let started = Instant::now();
        runtime.block_on(populate(store.clone()));
        eprintln!("populated in {:.0} s", started.elapsed().as_secs_f64());
    }
    let head = store.log().head().expect("head");
    println!("log: {head} events in {}", db.display());
    if populate_only {
        return;
    }
    measure(&store, &db, only.as_deref());
}

fn measure(store: &Store, db: &Path, only: Option<&str>) {
    let wanted = |name: &str| only.is_none_or(|only| only == name);
    let tenant = store
        .read(|connection| TenantRef::Name("bench".to_owned()).resolve(connection))
        .expect("tenant")
        .tenant_id;
    for (from, to) in [("2025-07-01", "2025-09-30"), ("2026-04-01", "2026-06-30")] {
        if !wanted("joiners") {
            break;
        }
        let window = report::Window::parse(from, to).expect("window");
        let movements = timed(&format!("joiners-leavers {from}..{to}"), || {
            report::joiners_leavers(store, &tenant, window).expect("report")
        });
        println!("  {:?}", report::counts(&movements));
    }
    if wanted("as-of") {
        // Cold: no snapshot yet, a full fold that leaves one every
        // DEFAULT_EVERY positions. Then arbitrary instants, from the cache.
        let snapshots = Snapshots::beside(db, DEFAULT_EVERY);
        let _ = std::fs::remove_dir_all(snapshots.dir());
        for (at, note) in [
            ("2026-09-01T00:00:00Z", "cold, keeps snapshots"),
            ("2025-06-15T12:00:00Z", "from a snapshot"),
            ("2025-12-24T17:45:00Z", "from a snapshot"),
            ("2026-09-01T00:00:00Z", "from a snapshot"),
            ("2026-10-30T09:13:00Z", "from a snapshot"),
        ] {
            let position =
                rollcall::audit::position_at_or_before(store, &tenant, at).expect("position");
            // What the API answers: the counts and a page of 100 members.
            let (counts, page) =
                timed(&format!("as-of {at} (position {position}, {note})"), || {
                    let folded =
                        replay::as_of(store, &tenant, position, &snapshots).expect("as-of");
                    let page = folded.page(replay::View::Members, 0, Some(100)).expect("page");
                    (folded.counts().expect("counts"), page.len())
                });
            println!(
                "  {} users, {} groups, {} members; a page of {page}",
                counts.0, counts.1, counts.2
            );
        }
        let kept = std::fs::read_dir(snapshots.dir()).map(|dir| dir.count()).unwrap_or(0);
        let bytes: u64 = std::fs::read_dir(snapshots.dir())
            .map(|dir| dir.filter_map(|entry| entry.ok()?.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0);
        println!("  {kept} snapshots, {} MiB", bytes / (1024 * 1024));
    }
    if wanted("verify") {
        let report =
            timed("verify (whole chain)", || store.log().verify(VerifyScope::All).expect("verify"));
        println!("  {} events checked, ok: {}", report.events_checked, report.is_ok());
    }
    if !wanted("rebuild") {
        return;
    }
    let rebuilt = timed("rebuild (all projections)", || {
        let names: Vec<&str> = replay::PROJECTIONS.iter().map(|(name, _)| *name).collect();
        replay::rebuild(store, db, &names, None, &mut |_, _| {}).expect("rebuild")
    });
    println!("  up to position {}", rebuilt.position);
}

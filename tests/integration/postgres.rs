//! The projections on a real PostgreSQL (issue 22): the same folds give the
//! same tables on both engines. A story is told to a SQLite-backed server
//! over SCIM and the admin API; `rollcall migrate` then moves its file
//! into a fresh PostgreSQL database, and every folded table is compared
//! row by row. The rest runs stores and servers on PostgreSQL itself.
//!
//! Each test makes a database of its own in the cluster the environment
//! names (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`: `scripts/test` runs
//! the suite under Debian's `pg_virtualenv`). Without one the tests say so
//! and pass, unless `ROLLCALL_REQUIRE_POSTGRES` is set, as scripts/test
//! sets it.

use events::EventLog;
use events::db::Db;
use events::postgres::PgLog;
use serde_json::json;

use crate::scim::Scim;
use crate::synchronize::{Admin, disable_delete_and_move, group, user};
use crate::util::TestServer;

fn database() -> Option<String> {
    crate::util::postgres_database()
}

/// The tables folded from the log (the operational ones, such as the
/// request log and console sessions, are not).
const FOLDED: &[&str] = &[
    "tenants",
    "tokens",
    "oauth_clients",
    "scim_resources",
    "scim_members",
    "members",
    "member_settings",
    "member_checkpoints",
    "member_deferred",
    "sync_runs",
    "audit_movements",
    "audit_causes",
    "erasures",
    "feed_rows",
    "webhooks",
];

/// Every row of `table`, each column as its debug text, in the order of
/// all its columns (bytewise on both engines).
fn rows(db: &dyn Db, table: &str, columns: &[String]) -> Vec<Vec<String>> {
    let order: Vec<String> = (1..=columns.len()).map(|n| n.to_string()).collect();
    let sql = format!("SELECT {} FROM {table} ORDER BY {}", columns.join(", "), order.join(", "));
    let mut statement = db.prepare_cached(&sql).unwrap();
    let mut rows = statement.query([]).unwrap();
    let mut out = Vec::new();
    while let Some(row) = rows.next().unwrap() {
        out.push((0..columns.len()).map(|i| format!("{:?}", row.get_ref(i).unwrap())).collect());
    }
    out
}

/// A story touching every folded table: tenants and tokens, users and
/// groups, role bindings, two Synchronize runs with joins, a disable, a
/// leave and a change, a webhook endpoint, an erasure, a second tenant.
async fn story(server: &TestServer) {
    let scim = Scim::new(server, "acme").await;
    let admin = Admin::new(server, "acme").await;
    admin
        .put(
            "/provisioning/role-bindings",
            json!({
                "roles": ["admin", "editor", "viewer"],
                "default_role": "viewer",
                "bindings": [{"group": "engineering", "role": "editor"}]
            }),
        )
        .await;
    let alice = user(&scim, "alice@example.com", "ext-alice", "R&D").await;
    let bob = user(&scim, "Bob@example.com", "ext-bob", "Sales").await;
    let carol = user(&scim, "carol@example.com", "ext-carol", "Ops").await;
    group(&scim, "Engineering", &[&alice, &bob]).await;
    assert_eq!(admin.sync().await["status"], "completed");
    disable_delete_and_move(&scim, &bob, &carol, &alice).await;
    assert_eq!(admin.sync().await["status"], "completed");
    let hook = json!({"url": "http://127.0.0.1:9/hook", "description": "the app"});
    let (status, body) = admin.send(reqwest::Method::POST, "/webhooks", Some(hook)).await;
    assert_eq!(status, 201, "{body}");
    let carol =
        admin.members().await["carol@example.com"]["member_id"].as_str().unwrap().to_owned();
    let erase = format!("/members/{carol}/erase");
    let (status, body) = admin.send(reqwest::Method::POST, &erase, None).await;
    assert_eq!(status, 200, "{body}");
    let other = Scim::new(server, "globex").await;
    user(&other, "zoe@globex.example", "ext-zoe", "Legal").await;
}

/// The queries over the folded tables answer alike: member lists (each
/// filter, the name order, paging), the feed (all, by type, after a
/// cursor), the audit's movements.
fn same_answers(sqlite: &dyn Db, postgres: &dyn Db) {
    use projections::feed::Cursor;
    use projections::members::{MemberQuery, MemberStatus, list_members};
    use projections::tenancy::{TokenRecord, list_tenants, list_tokens, tenant_by_name};
    // Tenant names compare with ASCII case folded (SQLite's NOCASE).
    let tenant = tenant_by_name(sqlite, "ACME").unwrap().unwrap().tenant_id;
    assert_eq!(tenant_by_name(postgres, "ACME").unwrap().unwrap().tenant_id, tenant);
    assert_eq!(list_tenants(postgres).unwrap(), list_tenants(sqlite).unwrap());
    // When a token was last used is operational, not folded.
    let unused = |db: &dyn Db| -> Vec<_> {
        let tokens = list_tokens(db, None).unwrap();
        tokens.into_iter().map(|token| TokenRecord { last_used_at: None, ..token }).collect()
    };
    assert_eq!(unused(postgres), unused(sqlite));
    let queries = [
        MemberQuery { status: None, role: None, search: None, offset: 0, limit: 100 },
        MemberQuery {
            status: Some(MemberStatus::Disabled),
            role: None,
            search: None,
            offset: 0,
            limit: 100,
        },
        MemberQuery {
            status: None,
            role: Some("editor".to_owned()),
            search: None,
            offset: 0,
            limit: 100,
        },
        MemberQuery {
            status: None,
            role: None,
            search: Some("PLATFORM".to_owned()),
            offset: 0,
            limit: 100,
        },
        MemberQuery { status: None, role: None, search: None, offset: 1, limit: 1 },
    ];
    for query in &queries {
        let expected = list_members(sqlite, &tenant, query).unwrap();
        assert!(expected.0 > 0, "{query:?} finds someone");
        assert_eq!(list_members(postgres, &tenant, query).unwrap(), expected, "{query:?}");
    }
    let types = ["member.joined".to_owned(), "member.left".to_owned()];
    for (after, types) in [
        (Cursor::default(), None),
        (Cursor::default(), Some(&types[..])),
        (Cursor { position: 20, seq: 0 }, None),
    ] {
        let expected = projections::feed::page(sqlite, &tenant, after, types, 100).unwrap();
        assert!(!expected.events.is_empty(), "the feed after {after:?} has events");
        let found = projections::feed::page(postgres, &tenant, after, types, 100).unwrap();
        assert_eq!(found, expected, "the feed after {after:?}, of {types:?}");
    }
    let expected = projections::audit::movements(sqlite, &tenant, 0, u64::MAX >> 1).unwrap();
    assert!(expected.len() >= 4, "joins, a disable, a leave: {expected:?}");
    assert_eq!(
        projections::audit::movements(postgres, &tenant, 0, u64::MAX >> 1).unwrap(),
        expected
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrated_log_folds_into_the_same_tables_on_postgresql_as_on_sqlite() {
    if crate::util::sqlite_only("compares a SQLite server's folds with PostgreSQL's") {
        return;
    }
    let Some(url) = database() else { return };
    let server = TestServer::start_with(crate::webhooks::quick_config()).await;
    story(&server).await;

    // The server's file, moved onto PostgreSQL by `rollcall migrate` while
    // the server is stopped.
    let db = server.db_path();
    let (stopped, dir) = server.stop_keeping_files().await;
    stopped.unwrap();
    let db_text = db.to_str().unwrap().to_owned();
    let migrated =
        crate::util::rollcall_ok(&db, &["migrate", "--from", &db_text, "--to", &url, "--json"]);
    let migrated: serde_json::Value = serde_json::from_slice(&migrated.stdout).unwrap();
    assert_eq!(migrated["verified"], true, "{migrated}");
    assert!(migrated["events"].as_u64().unwrap() > 20, "{migrated}");
    assert!(migrated["keys"].as_u64().unwrap() >= 1024, "the key store came along: {migrated}");
    assert_eq!(migrated["webhook_cursors"], 0, "the endpoint never delivered: {migrated}");
    // A second migration into the same database is refused, writing nothing.
    let again = crate::util::rollcall(&db, &["migrate", "--from", &db_text, "--to", &url]);
    assert_eq!(again.status.code(), Some(2));
    assert!(crate::util::stderr(&again).contains("already holds events"));
    let store = std::sync::Arc::new(crate::util::open_store(&db));
    let _dir = dir;
    tokio::task::spawn_blocking(move || {
        // The migrated database opens as a node (its key store is this
        // database's), and its events open with the copied keys.
        let node = rollcall::store::Store::open_postgres(
            &url,
            rollcall::store::PostgresOptions::default(),
        )
        .unwrap();
        assert_eq!(node.log().verify(events::VerifyScope::All).unwrap().failure, None);
        let log = PgLog::connect(&url, 2).unwrap();
        for tenant in log.tenants().unwrap() {
            for event in log.read_forward(&tenant, 0, 10_000).unwrap() {
                event.decode(node.keys()).unwrap();
            }
        }

        let connection = log.pool().get().unwrap();
        let postgres: &dyn Db = &*connection;
        store
            .read(|sqlite| {
                for table in FOLDED {
                    let columns: Vec<String> = sqlite
                        .prepare_cached("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
                        .unwrap()
                        .query_map([table], |row| row.get(0))
                        .unwrap()
                        .collect::<Result<_, _>>()
                        .unwrap();
                    let expected = rows(sqlite, table, &columns);
                    assert_eq!(rows(postgres, table, &columns), expected, "table {table}");
                }
                let members = rows(sqlite, "members", &["user_name".to_owned()]);
                assert!(members.len() >= 3, "the story made members: {members:?}");
                same_answers(sqlite, postgres);
                Ok(())
            })
            .unwrap();
    })
    .await
    .unwrap();
}

/// The store itself on PostgreSQL, as two nodes on one database: both open
/// it at once (the schema is made once), a tenant created on one is found
/// on the other and cannot be created twice by racing nodes, a token issued
/// on one admits on the other, a sealed user recorded on one opens with
/// the other's keys, the Synchronize lock is one lock across nodes, and an
/// erasure's destroyed key reads as erased on the other node too.
#[test]
fn two_nodes_share_one_store_on_postgresql() {
    use events::event::{TokenScope, UserCreated};
    use events::{Actor, CommandContext, Event, ExpectedVersion};
    use rollcall::store::{PostgresOptions, Store};
    use rollcall::tenancy::{self, TenantRef, TokenRequest};

    let Some(url) = database() else { return };
    let context = || CommandContext::new(Actor::System);
    let opening: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || Store::open_postgres(&url, PostgresOptions::default()))
        })
        .collect();
    let nodes: Vec<Store> = opening.into_iter().map(|node| node.join().unwrap().unwrap()).collect();
    let (a, b) = (&nodes[0], &nodes[1]);

    // Racing creates of one name through both nodes: exactly one tenant.
    let racing: Vec<_> = nodes
        .iter()
        .flat_map(|node| (0..4).map(move |_| tenancy::create_tenant(node, "acme", context())))
        .collect();
    let created: Vec<_> = racing.into_iter().map(events::Pending::wait).collect();
    assert_eq!(created.iter().filter(|outcome| outcome.is_ok()).count(), 1, "{created:?}");
    let tenant = b
        .read(|db| Ok(projections::tenancy::tenant_by_name(db, "ACME")?))
        .unwrap()
        .expect("node B finds node A's tenant, by any case");

    // A's readers that tail the log wake at B's commits, not only at A's.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut heard = a.log().watch_commits();
    heard.borrow_and_update();
    // A token issued on B admits on A.
    let request =
        TokenRequest { scope: TokenScope::Scim, lifetime: None, label: None, client_id: None };
    let (_, secret) =
        tenancy::issue_token(b, TenantRef::Id(tenant.tenant_id.clone()), request, context())
            .wait()
            .unwrap();
    let hash = tenancy::secret_hash(secret.expose());
    let token = a
        .read(|db| Ok(projections::tenancy::token_by_secret_hash(db, &hash)?))
        .unwrap()
        .expect("node A admits node B's token");
    assert_eq!(token.tenant_id, tenant.tenant_id);
    let waited = std::time::Instant::now();
    while !heard.has_changed().unwrap() {
        assert!(waited.elapsed() < std::time::Duration::from_secs(5), "A never heard B's commit");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }

    // A user sealed on A opens on B; keys made on two nodes never collide.
    let record = |node: &Store, user: &str| {
        let (tenant_id, user) = (tenant.tenant_id.clone(), user.to_owned());
        node.command(Some(&tenant.tenant_id), move |tx| {
            let mut document = serde_json::Map::new();
            document.insert("userName".to_owned(), json!(format!("{user}@example.com")));
            let created =
                Event::UserCreated(UserCreated { user_id: user.clone(), document, key: None });
            let recorded = rollcall::store::record(
                tx,
                &tenant_id,
                &format!("user:{user}"),
                ExpectedVersion::NoStream,
                &[created],
                &CommandContext::new(Actor::System),
            )?;
            Ok(recorded)
        })
        .wait()
        .unwrap()
    };
    let on_a = record(a, "u1");
    let on_b = record(b, "u2");
    // The token came first, at 1.
    assert_eq!((on_a[0].position, on_b[0].position), (2, 3), "one tenant, one order across nodes");
    assert!(!on_a[0].payload.contains("u1@example.com"), "the userName is sealed");
    let key_of = |event: &events::RecordedEvent, keys: &dyn events::seal::Keyring| match event
        .decode(keys)
        .unwrap()
    {
        Event::UserCreated(created) => (created.key.unwrap(), created.document["userName"].clone()),
        other => panic!("{other:?}"),
    };
    let stream = b.log().read_stream(&tenant.tenant_id, "user:u1").unwrap();
    let (key_a, name) = key_of(&stream[0], b.keys());
    assert_eq!(name, json!("u1@example.com"));
    let (key_b, _) = key_of(&on_b[0], a.keys());
    assert_ne!(key_a, key_b, "each node leases keys of its own");

    // One Synchronize lock across nodes, released with its holder.
    let held = a.try_lock("sync-acme").unwrap().expect("the first takes it");
    assert!(b.try_lock("sync-acme").unwrap().is_none(), "the other node waits");
    drop(held);
    assert!(b.try_lock("sync-acme").unwrap().is_some(), "dropped, it is free");

    // A key destroyed on A reads as erased on B (after B's revalidation).
    assert_eq!(a.key_store().erase(&[key_a], "2026-12-04T00:00:00.000Z").unwrap(), 1);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(matches!(
        events::seal::Keyring::key(b.keys(), key_a).unwrap(),
        events::seal::KeyState::Erased
    ));
    assert!(b.key_store().live_among(&[key_a, key_b]).unwrap() == [key_b]);

    // Both nodes verify the whole log, guards and all.
    for node in [a, b] {
        let report = node.log().verify(events::VerifyScope::All).unwrap();
        assert_eq!(report.failure, None);
        assert_eq!(report.events_checked, 1 + 1 + 2, "the tenant, its token, two users");
        assert!(report.missing_guards.is_empty(), "{report:?}");
    }
}

/// Every kind of SCIM filter and sort answers the same on PostgreSQL as on
/// SQLite: users and groups are told over SCIM to a SQLite server, its log
/// is folded into PostgreSQL, and each filter (columns, JSON strings with
/// Unicode case, lists and value paths, numbers, booleans, instants, a
/// custom extension, members and groups, not/and/or, presence) and each
/// sort is run on both, the ids and totals compared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim_filters_and_sorts_answer_the_same_on_postgresql() {
    if crate::util::sqlite_only("compares a SQLite server's answers with PostgreSQL's") {
        return;
    }
    use projections::directory::query::{Sort, search_sorted};
    use projections::directory::schema::ResourceKind;

    let Some(url) = database() else { return };
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
    const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    const CUSTOM: &str = "urn:example:params:scim:schemas:extension:acme:2.0:User";
    let people = [
        ("Émile@Example.com", "ext-1", true, "Straße", 3, "2024-01-02T03:04:05Z"),
        ("ZOË@example.com", "ext-2", false, "ÖKONOMIE", 12, "2023-06-01T00:00:00+02:00"),
        ("bob@example.org", "EXT-3", true, "sales", 7, "2025-12-31T23:59:59.500Z"),
        ("İsmail@example.com", "ext-4", true, "", 0, "not a date"),
        ("carol@example.com", "ext-5", false, "Ops", -4, "2024-01-02T03:04:05.001Z"),
    ];
    let mut ids = Vec::new();
    for (index, (name, external, active, department, level, hired)) in people.iter().enumerate() {
        let mut user = json!({
            "schemas": [USER, ENTERPRISE, CUSTOM],
            "userName": name, "externalId": external, "active": active,
            "displayName": name.to_uppercase(),
            "title": if index % 2 == 0 { json!("Engineer") } else { json!(null) },
            "name": {"givenName": name.split('@').next().unwrap(), "familyName": "Test"},
            "emails": [
                {"value": format!("home-{name}"), "type": "home"},
                {"value": name, "type": if index == 1 { "WORK" } else { "work" }, "primary": index != 2}
            ],
            ENTERPRISE: {"department": department, "employeeNumber": format!("{}", 100 - index)},
            CUSTOM: {"level": level, "hired": hired, "tags": ["a", format!("T{index}")]}
        });
        if index == 3 {
            user.as_object_mut().unwrap().remove("emails");
        }
        let answer = scim.post("/Users", user).await;
        assert_eq!(answer.status, 201, "{}", answer.body);
        ids.push(answer.body["id"].as_str().unwrap().to_owned());
    }
    for (name, members) in
        [("Engineering", &ids[0..3]), ("Ünits", &ids[2..5]), ("empty", &ids[0..0])]
    {
        let members: Vec<_> = members.iter().map(|id| json!({"value": id})).collect();
        let body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                          "displayName": name, "members": members});
        assert_eq!(scim.post("/Groups", body).await.status, 201);
    }

    let user_filters = [
        "userName eq \"émile@example.com\"",
        "userName sw \"z\"",
        "userName ew \"ORG\"",
        "userName co \"İ\"",
        "userName co \"i̇\"",
        "userName gt \"c\"",
        "externalId eq \"ext-3\"",
        "externalId eq \"EXT-3\"",
        "id eq \"not-an-id\"",
        "displayName co \"ZOË\"",
        "displayName co \"zoë\"",
        "title pr",
        "not (title pr)",
        "title eq null",
        "name.givenName sw \"é\"",
        "name pr",
        "emails pr",
        "emails co \"HOME-\"",
        "emails.type eq \"work\"",
        "emails[type eq \"work\" and value ew \".org\"]",
        "emails[primary eq true]",
        "emails[primary eq false] or active eq false",
        "active eq true",
        "active ne true",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq \"strasse\"",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq \"straße\"",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department pr",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department ge \"o\"",
        "urn:example:params:scim:schemas:extension:acme:2.0:User:level gt 2",
        "urn:example:params:scim:schemas:extension:acme:2.0:User:level le 0",
        "urn:example:params:scim:schemas:extension:acme:2.0:User:level eq 7",
        "urn:example:params:scim:schemas:extension:acme:2.0:User:hired co \"2024\"",
        "urn:example:params:scim:schemas:extension:acme:2.0:User:tags eq \"t1\"",
        "urn:example:params:scim:schemas:extension:acme:2.0:User:tags pr",
        "meta.created gt \"2000-01-01T00:00:00Z\"",
        "meta.lastModified lt \"2000-01-01T00:00:00Z\"",
        "meta.resourceType eq \"User\"",
        "groups eq \"nothing\"",
        "groups pr",
        "not (groups pr)",
        "groups[display eq \"engineering\"]",
        "groups.display co \"ÜN\"",
        "groups[type eq \"DIRECT\"]",
        "(active eq true and emails pr) or externalId sw \"EXT\"",
        "not (userName co \"example.com\") and not (title pr)",
    ];
    let group_filters = [
        "displayName eq \"ünits\"",
        "displayName sw \"E\"",
        "members pr",
        "not (members pr)",
        "members eq \"nope\"",
        "members[type eq \"user\"]",
        "members.display co \"ZOË\"",
        "members[value eq \"ID2\"]".replace("ID2", &ids[2]).leak(),
        "members.display ew \".org\" or displayName eq \"empty\"",
    ];
    let sorts = [
        ("userName", false),
        ("userName", true),
        ("displayName", false),
        ("title", false),
        ("title", true),
        ("name.givenName", true),
        ("emails", false),
        ("emails.type", true),
        ("active", false),
        ("externalId", true),
        ("meta.lastModified", false),
        ("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", false),
        ("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber", true),
        ("urn:example:params:scim:schemas:extension:acme:2.0:User:level", false),
        ("urn:example:params:scim:schemas:extension:acme:2.0:User:hired", true),
    ];

    let store = server.store.clone();
    tokio::task::spawn_blocking(move || {
        let log = PgLog::connect(&url, 2).unwrap();
        let tx = log.transaction().unwrap();
        projections::schema::migrate(&**tx.connection()).unwrap();
        for recorded in store.log().sqlite().unwrap().read_forward(0, None) {
            let recorded = recorded.unwrap();
            let event = recorded.decode(store.keys()).unwrap();
            projections::apply(&**tx.connection(), &recorded, &event).unwrap();
        }
        tx.commit().unwrap();
        let connection = log.pool().get().unwrap();
        let postgres: &dyn Db = &*connection;
        let tenant = store
            .read(|db| Ok(projections::tenancy::tenant_by_name(db, "acme")?))
            .unwrap()
            .unwrap()
            .tenant_id;
        let answer = |db: &dyn Db, kind, filter: Option<&str>, sort: Option<&Sort>, page| {
            let filter = filter.map(|text| rollcall::model::filter::parse_filter(text).unwrap());
            let (offset, limit) = page;
            match search_sorted(db, &tenant, kind, filter.as_ref(), sort, offset, limit) {
                Ok(page) => Ok((
                    page.total_results,
                    page.resources.into_iter().map(|row| row.id).collect::<Vec<_>>(),
                )),
                Err(error) => Err(error.to_string()),
            }
        };
        store
            .read(|sqlite| {
                let mut matched = 0;
                let kinds = user_filters
                    .iter()
                    .map(|filter| (ResourceKind::User, *filter))
                    .chain(group_filters.iter().map(|filter| (ResourceKind::Group, *filter)));
                for (kind, filter) in kinds {
                    for page in [(0, 100), (1, 2)] {
                        let expected = answer(sqlite, kind, Some(filter), None, page);
                        let expected = expected.unwrap_or_else(|error| panic!("{filter}: {error}"));
                        matched += usize::from(expected.0 > 0 && expected.0 < 5);
                        assert_eq!(
                            answer(postgres, kind, Some(filter), None, page),
                            Ok(expected),
                            "{filter}, page {page:?}"
                        );
                    }
                }
                assert!(matched > 40, "most filters match some but not all: {matched}");
                for (path, descending) in sorts {
                    let sort = Sort {
                        path: rollcall::model::filter::attribute_path(path).unwrap(),
                        descending,
                    };
                    for filter in [None, Some("active eq true")] {
                        let expected =
                            answer(sqlite, ResourceKind::User, filter, Some(&sort), (0, 100));
                        assert_eq!(
                            answer(postgres, ResourceKind::User, filter, Some(&sort), (0, 100)),
                            expected,
                            "sorted by {path}, descending {descending}, {filter:?}"
                        );
                    }
                }
                Ok(())
            })
            .unwrap();
    })
    .await
    .unwrap();
}

/// The daily Synchronize on two nodes: both schedulers find the tenant due
/// at the same instant and tick at once; exactly one run happens (the
/// advisory lock, and the check under it that the instant has not run),
/// and a later tick on either node runs nothing more.
#[test]
fn two_nodes_schedulers_run_a_daily_synchronize_once() {
    use rollcall::store::{PostgresOptions, Store};
    use rollcall::sync::settings::{Setting, set};
    use rollcall::sync::{RunOptions, scheduler};

    let Some(url) = database() else { return };
    let nodes: Vec<Store> =
        (0..2).map(|_| Store::open_postgres(&url, PostgresOptions::default()).unwrap()).collect();
    let context = || events::CommandContext::new(events::Actor::System);
    let tenant = rollcall::tenancy::create_tenant(&nodes[0], "acme", context()).wait().unwrap();
    let schedule = json!({"schedule": {"time": "02:30", "time_zone": "UTC"}});
    set(&nodes[1], &tenant.tenant_id, Setting::Sync, schedule, context()).wait().unwrap();
    // A day after the tenant was made, past 02:30.
    let now = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(25);
    assert_eq!(scheduler::due_tenants(&nodes[0], now).unwrap().len(), 1);
    let ran: usize = std::thread::scope(|scope| {
        let ticks: Vec<_> = nodes
            .iter()
            .map(|node| scope.spawn(move || scheduler::tick(node, now, RunOptions::default())))
            .collect();
        ticks.into_iter().map(|tick| tick.join().unwrap().unwrap()).sum()
    });
    assert_eq!(ran, 1, "one of the two nodes ran it");
    for node in &nodes {
        assert_eq!(scheduler::tick(node, now, RunOptions::default()).unwrap(), 0);
        assert!(scheduler::due_tenants(node, now).unwrap().is_empty());
    }
    let (total, _) =
        nodes[1].read(|db| Ok(projections::members::runs(db, &tenant.tenant_id, 0, 10)?)).unwrap();
    assert_eq!(total, 1, "one run recorded");
}

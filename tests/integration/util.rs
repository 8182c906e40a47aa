//! The test harness: a server over a fresh database, and the CLI binary.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use events::event::TokenScope;
use events::sqlite::{Durability, LogOptions};
use events::{Actor, CommandContext};
use projections::tenancy::Tenant;
use rollcall::state::{AppState, ServerConfig};
use rollcall::store::Store;
use rollcall::tenancy::{self, TenantRef, TokenRequest};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestServer {
    pub dir: tempfile::TempDir,
    /// The PostgreSQL database of a PostgreSQL run (its URL).
    pub postgres: Option<String>,
    pub store: Arc<Store>,
    /// The server's read cache, to see that it is used.
    pub cache: Arc<rollcall::cache::ReadCache>,
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub base: String,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

pub fn test_log_options() -> LogOptions {
    // Tests check behaviour, not power-cut durability: skip the fsyncs.
    LogOptions { durability: Durability::Off, ..LogOptions::default() }
}

/// A clock a test moves by hand: the real time plus an offset. The
/// server's clock (`LogOptions::clock`) is a plain `fn`, so each test that
/// moves time keeps a `static Skew` of its own and passes a `fn` reading
/// it to [`TestServer::start_with_clock`]:
///
/// ```ignore
/// static SKEW: Skew = Skew::new();
/// fn clock() -> jiff::Timestamp { SKEW.now() }
/// ```
pub struct Skew(std::sync::atomic::AtomicI64);

impl Skew {
    pub const fn new() -> Skew {
        Skew(std::sync::atomic::AtomicI64::new(0))
    }

    pub fn now(&self) -> jiff::Timestamp {
        let offset = self.0.load(std::sync::atomic::Ordering::SeqCst);
        jiff::Timestamp::now() + jiff::SignedDuration::from_millis(offset)
    }

    /// Moves this clock forward.
    pub fn advance(&self, by: std::time::Duration) {
        let millis = i64::try_from(by.as_millis()).unwrap();
        self.0.fetch_add(millis, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Whether this run tells its stories to a PostgreSQL-backed server
/// (`ROLLCALL_TEST_BACKEND=postgres`, as scripts/test's second run sets):
/// a fresh database of the cluster the environment names, per server.
pub fn postgres_backend() -> Option<String> {
    if std::env::var("ROLLCALL_TEST_BACKEND").ok()? != "postgres" {
        return None;
    }
    Some(postgres_database().expect("ROLLCALL_TEST_BACKEND=postgres needs PGHOST"))
}

/// Opens the database a server ran on (`TestServer::db_path`) again.
pub fn open_store(db: &Path) -> Store {
    match db.to_str().filter(|text| text.starts_with("postgres://")) {
        Some(url) => Store::open_postgres(url, rollcall::store::PostgresOptions::default()),
        None => Store::open_read_only(db, test_log_options()),
    }
    .unwrap()
}

/// Whether the test calling it is about the SQLite file itself (its bytes,
/// backups, WAL, writer statistics): on a PostgreSQL run it says why it is
/// skipped and the test returns.
pub fn sqlite_only(why: &str) -> bool {
    let skipped = std::env::var("ROLLCALL_TEST_BACKEND").is_ok_and(|backend| backend == "postgres");
    if skipped {
        eprintln!("skipped on PostgreSQL: {why}");
    }
    skipped
}

/// A fresh database's settings in the cluster the environment names
/// (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`: `scripts/test` runs the
/// suite under Debian's `pg_virtualenv`), or `None` where there is none.
pub fn postgres_database() -> Option<String> {
    let Ok(host) = std::env::var("PGHOST") else {
        assert!(
            std::env::var_os("ROLLCALL_REQUIRE_POSTGRES").is_none(),
            "ROLLCALL_REQUIRE_POSTGRES is set but PGHOST is not: no cluster to test against"
        );
        eprintln!("no PostgreSQL cluster (PGHOST unset): the PostgreSQL tests are skipped");
        return None;
    };
    // A URL, as `--db` takes one: the CLI runs against the same database.
    let encode = |text: &str| -> String {
        text.bytes()
            .map(|byte| match byte {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    char::from(byte).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect()
    };
    let user = encode(&std::env::var("PGUSER").unwrap_or_else(|_| "postgres".to_owned()));
    let password =
        std::env::var("PGPASSWORD").map(|p| format!(":{}", encode(&p))).unwrap_or_default();
    let port = std::env::var("PGPORT").unwrap_or_else(|_| "5432".to_owned());
    let cluster = format!("postgres://{user}{password}@{host}:{port}");
    let admin = events::postgres::PgPool::new(&format!("{cluster}/postgres"), 1).unwrap();
    let name = format!("rollcall_{}", ulid::Ulid::generate().to_string().to_lowercase());
    admin.get().unwrap().execute_batch(&format!("CREATE DATABASE {name}")).unwrap();
    Some(format!("{cluster}/{name}"))
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(ServerConfig::default()).await
    }

    pub async fn start_with(config: ServerConfig) -> TestServer {
        TestServer::open_in(
            tempfile::tempdir().unwrap(),
            config,
            test_log_options(),
            postgres_backend(),
        )
        .await
    }

    /// A server whose every decision about time reads `clock` (see [`Skew`]).
    pub async fn start_with_clock(
        config: ServerConfig,
        clock: fn() -> jiff::Timestamp,
    ) -> TestServer {
        let options = LogOptions { clock, ..test_log_options() };
        TestServer::open_in(tempfile::tempdir().unwrap(), config, options, postgres_backend()).await
    }

    async fn open_in(
        dir: tempfile::TempDir,
        config: ServerConfig,
        options: LogOptions,
        postgres: Option<String>,
    ) -> TestServer {
        if std::env::var_os("ROLLCALL_TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt().with_env_filter("warn").with_test_writer().try_init();
        }
        let path = dir.path().join("rollcall.db");
        let url = postgres.clone();
        let store = tokio::task::spawn_blocking(move || match url {
            Some(url) => Store::open_postgres(
                &url,
                // A small node: the suite runs many servers at once on
                // one cluster.
                rollcall::store::PostgresOptions { clock: options.clock, pool_size: 6, lanes: 4 },
            ),
            None => Store::open(&path, options),
        })
        .await
        .unwrap()
        .unwrap();
        let store = Arc::new(store);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (shutdown, stop) = oneshot::channel::<()>();
        let state = AppState::new(store.clone(), config).unwrap();
        let cache = state.cache.clone();
        let task = tokio::spawn(rollcall::server::run(listener, state, async move {
            let _ = stop.await;
        }));
        TestServer {
            dir,
            postgres,
            store,
            cache,
            base,
            client: {
                rollcall::webhooks::deliver::install_tls_provider();
                reqwest::Client::new()
            },
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    /// The log's head position: "wrote nothing" means it did not move.
    pub fn log_head(&self) -> u64 {
        self.store.log().head().unwrap()
    }

    /// Every event after `after` (of `tenant`, or all), as (type, stream).
    pub fn events_after(&self, after: u64, tenant: Option<&str>) -> Vec<(String, String)> {
        let mut found = Vec::new();
        self.store
            .log()
            .visit_forward(after, tenant, |event| {
                found.push((event.event_type.to_owned(), event.stream.to_owned()));
                Ok::<_, ()>(())
            })
            .unwrap();
        found
    }

    /// The commands the SQLite writer has committed or rolled back (`None`
    /// on PostgreSQL, whose writer keeps no such count).
    pub fn writer_commands(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = self.store.log().sqlite()?.stats();
        Some(stats.commands_committed.load(Relaxed) + stats.commands_rolled_back.load(Relaxed))
    }

    /// The id of the tenant named `name`.
    pub fn tenant_id(&self, name: &str) -> String {
        self.store
            .read(|db| Ok(projections::tenancy::tenant_by_name(db, name)?))
            .unwrap()
            .unwrap()
            .tenant_id
    }

    /// What `--db` names: the file, or on a PostgreSQL run the URL.
    pub fn db_path(&self) -> PathBuf {
        match &self.postgres {
            Some(url) => PathBuf::from(url),
            None => self.dir.path().join("rollcall.db"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn tenant(&self, name: &str) -> Tenant {
        tenancy::create_tenant(&self.store, name, CommandContext::new(Actor::System)).await.unwrap()
    }

    /// Issues a token and returns (token id, secret).
    pub async fn token(&self, tenant: &str, scope: TokenScope) -> (String, String) {
        let request = TokenRequest { scope, lifetime: None, label: None, client_id: None };
        let (record, secret) = tenancy::issue_token(
            &self.store,
            TenantRef::Name(tenant.to_owned()),
            request,
            CommandContext::new(Actor::System),
        )
        .await
        .unwrap();
        (record.token_id, secret.expose().to_owned())
    }

    pub async fn get(&self, path: &str, secret: Option<&str>) -> reqwest::Response {
        let mut request = self.client.get(self.url(path));
        if let Some(secret) = secret {
            request = request.bearer_auth(secret);
        }
        request.send().await.unwrap()
    }

    /// Stops the server, hands its closed file to `between` (to make it what
    /// an earlier build left, say), and starts a new server on that file.
    pub async fn reopen_after(self, between: impl FnOnce(&Path) + Send + 'static) -> TestServer {
        let path = self.db_path();
        let TestServer { dir, store, shutdown, task, postgres, .. } = self;
        if let Some(shutdown) = shutdown {
            let _ = shutdown.send(());
        }
        task.unwrap().await.unwrap().unwrap();
        tokio::task::spawn_blocking(move || {
            store.shutdown();
            drop(store);
            between(&path);
        })
        .await
        .unwrap();
        TestServer::open_in(dir, ServerConfig::default(), test_log_options(), postgres).await
    }

    /// Stops the server the way a signal does, and waits for it to drain.
    pub async fn stop(self) -> std::io::Result<()> {
        self.stop_keeping_files().await.0
    }

    /// [`TestServer::stop`], handing back the directory the database is in.
    pub async fn stop_keeping_files(mut self) -> (std::io::Result<()>, tempfile::TempDir) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let stopped = self.task.take().unwrap().await.unwrap();
        (stopped, self.dir)
    }
}

/// Runs the real `rollcall` binary against `db`.
pub fn rollcall(db: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(args)
        .env("ROLLCALL_DB", db)
        .env("ROLLCALL_DURABILITY", "off")
        .env_remove("ROLLCALL_TENANT")
        .output()
        .unwrap()
}

/// Runs the binary and insists it succeeded, showing its stderr if not.
pub fn rollcall_ok(db: &Path, args: &[&str]) -> Output {
    let output = rollcall(db, args);
    assert!(output.status.success(), "rollcall {args:?} failed: {}", stderr(&output));
    output
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A JSON body, with the status and content type checked first.
pub async fn json_body(
    response: reqwest::Response,
    status: u16,
    content_type: &str,
) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status, "unexpected status");
    let header = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(header.as_deref(), Some(content_type));
    response.json().await.unwrap()
}

/// `rollcall serve` from the built binary, on `127.0.0.1:0`, its log kept;
/// killed when dropped, so a failed assertion leaves no server running.
pub struct ServedBinary {
    pub child: std::process::Child,
    /// `host:port`.
    pub address: String,
    /// `http` or `https`, as the server said it listens.
    pub scheme: String,
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for ServedBinary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServedBinary {
    pub fn start(db: &Path, args: &[&std::ffi::OsStr]) -> ServedBinary {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("ROLLCALL_DB", db)
            .env("ROLLCALL_DURABILITY", "off")
            .env("ROLLCALL_SCHEDULER_INTERVAL_SECONDS", "0")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut said = Vec::new();
        let (scheme, address) = loop {
            let Some(line) = lines.next() else { panic!("the server stopped: {said:?}") };
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("rollcall: listening on ") {
                let url = rest.split_whitespace().next().unwrap();
                let (scheme, address) = url.split_once("://").unwrap();
                break (scheme.to_owned(), address.to_owned());
            }
            said.push(line);
        };
        let log = Arc::new(std::sync::Mutex::new(said));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        ServedBinary { child, address, scheme, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.address)
    }

    /// How many log lines contain `text`.
    pub fn logged(&self, text: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|line| line.contains(text)).count()
    }
}

//! The command line: `serve`; `tenant`, `token`, `client` and `admin
//! login-link`; `sync`, `mapping`, `roles`, `schedule` (their arguments and
//! commands live in [`sync`]); `verify`, `audit`, `export`, `rebuild` (in
//! [`audit`]); `webhook` (in [`webhooks`]). This module owns the top-level
//! clap structs and the dispatch; it decides nothing a command module
//! decides. Command modules share [`common`] and never import this one.
//!
//! Arguments pass two stages, as in ripgrep: the clap structs ([`Args`])
//! are close to the flags; [`Args::settings`] turns them once into checked
//! values. Every flag can also come from a `ROLLCALL_*` environment
//! variable. A command's own output goes to stdout (for `token issue`, only
//! the secret, so `TOKEN=$(rollcall token issue ...)` works); everything
//! said to a human goes to stderr. Errors print their whole chain and exit
//! with status 2; a failed check (verify) exits with 1.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use events::event::TokenScope;
use events::sqlite::{Durability, LogOptions};
use projections::tenancy as tenancy_projection;

pub mod audit;
pub mod common;
pub mod sync;
pub mod webhooks;

use self::audit::{AuditCommand, ExportArgs, RebuildArgs, VerifyArgs, verify_command};
use self::common::{cli_context, print_table};
use self::sync::{SettingCommand, SyncArgs};
use crate::state::{AppState, ServerConfig};
use crate::store::Store;
use crate::sync::settings::Setting;
use crate::tenancy::{self, Revoked, TenantRef, TokenRequest};

/// Threads `serve` runs blocking work on, at most (docs/operations.md).
pub const BLOCKING_THREADS_MAX: usize = 64;

/// rollcall: an event-sourced SCIM 2.0 provisioning engine.
#[derive(Debug, Parser)]
#[command(name = "rollcall", version, about, long_about = None)]
pub struct Args {
    /// The database: an SQLite file (created, with its tables, on first
    /// use), or a PostgreSQL URL (`postgres://user@host/dbname`), shared by
    /// any number of rollcall nodes; its tables are made on first use.
    #[arg(long, env = "ROLLCALL_DB", default_value = "rollcall.db", global = true)]
    pub db: String,
    /// Connections each node keeps to PostgreSQL at most (writer lanes and
    /// reads); see README.md, "More than one machine".
    #[arg(long, env = "ROLLCALL_PG_POOL", default_value_t = crate::store::PostgresOptions::default().pool_size, global = true)]
    pub pg_pool: usize,
    /// Writer lanes on PostgreSQL: tenants whose writes commit at once.
    #[arg(long, env = "ROLLCALL_PG_LANES", default_value_t = crate::store::PostgresOptions::default().lanes, global = true)]
    pub pg_lanes: usize,
    /// How hard each commit works to survive a power cut.
    #[arg(long, env = "ROLLCALL_DURABILITY", value_enum, default_value_t = DurabilityArg::Full, global = true)]
    pub durability: DurabilityArg,
    /// Log positions between the as-of snapshots kept in `<db>.as-of/`, a
    /// disposable cache that makes `audit as-of` fold only the events since
    /// the nearest one; 0 keeps none.
    #[arg(long, env = "ROLLCALL_AS_OF_SNAPSHOT_EVERY", default_value_t = crate::store::snapshots::DEFAULT_EVERY, global = true)]
    pub as_of_snapshot_every: u64,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    /// fsync every commit (default): an answered write survives a power cut.
    Full,
    /// The same promise as full, faster under concurrent writes: the fsync
    /// of one batch overlaps the next batch's work.
    Pipelined,
    /// Survives a crash of rollcall; a power cut may lose the last commits.
    Normal,
    /// No fsync: tests and throwaway imports only.
    Off,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (SCIM, admin and audit APIs).
    Serve(Box<ServeArgs>),
    /// Create and list tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Issue, list and revoke bearer tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Register, list and revoke OAuth 2.0 clients (client-credentials grant).
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// Walk the hash chain and name the first event that does not match;
    /// `--since` a checkpoint proves the log only grew since, `--file`
    /// checks an export offline.
    Verify(VerifyArgs),
    /// Answers for auditors, from the log alone: joiners and leavers, one
    /// person's history, the chain head to write down.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Write a tenant's events as NDJSON, one event per line with its
    /// hash (`rollcall verify --file` checks it offline).
    Export(ExportArgs),
    /// Refold projections from the log and replace them in one
    /// transaction; an interrupted rebuild resumes where it stopped.
    Rebuild(RebuildArgs),
    /// Synchronize pending directory changes into the members, or preview
    /// them (`--preview`); `sync history`, `sync approve RUN`, `sync reject RUN`.
    Sync(SyncArgs),
    /// Show or set a tenant's attribute mapping (JSON; docs/api.md).
    Mapping {
        #[command(subcommand)]
        command: SettingCommand,
    },
    /// Show or set a tenant's group-to-role bindings (JSON; docs/api.md).
    Roles {
        #[command(subcommand)]
        command: SettingCommand,
    },
    /// The admin console: `admin login-link` prints a one-time sign-in link.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Webhook endpoints: create, list, show, pause, resume, delete,
    /// rotate the secret, redeliver.
    Webhook {
        #[command(subcommand)]
        command: self::webhooks::WebhookCommand,
    },
    /// Show or set a tenant's Synchronize settings: daily schedule,
    /// deprovisioning safeguard, grace before purge (JSON; docs/api.md).
    Schedule {
        #[command(subcommand)]
        command: SettingCommand,
    },
    /// Move an SQLite deployment onto PostgreSQL: every event copied byte
    /// for byte (hashes, checkpoints and exports still verify), the
    /// projections folded again there, the data keys and the webhook
    /// delivery state copied. The target must hold no events yet.
    Migrate {
        /// The SQLite database file (stop the server on it first).
        #[arg(long)]
        from: PathBuf,
        /// The PostgreSQL URL, `postgres://user:password@host:port/dbname`.
        #[arg(long)]
        to: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Copy the database (while a server runs on it) to a new file, with
    /// its webhook delivery state, and check the copy: integrity and every
    /// tenant's hash chain.
    Backup {
        /// The new file to write.
        #[arg(long)]
        to: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Put a backup in place of the database (no server may have it open);
    /// the database replaced is kept beside it.
    Restore {
        /// The backup to restore.
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Erase a person (GDPR): destroy their data keys so their values in
    /// the log and its exports no longer open, take them out of
    /// every projection, and tell the application (`member.erased`).
    /// Refused while the identity provider still provisions the user or
    /// the member has not left yet (docs/audit.md, "Erasure").
    Erase {
        #[arg(long, env = "ROLLCALL_TENANT")]
        tenant: String,
        /// The SCIM user's id, externalId or userName, or the member's id.
        #[arg(long)]
        user: String,
        /// Why (recorded in clear in the log: name no one in it).
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Print the OpenAPI 3.1 document of /api/v1 (as the server serves it
    /// at /api/v1/openapi.json, and docs/openapi.json holds it).
    Openapi,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register a client. Prints `client_id=...` and `client_secret=...` on
    /// stdout; the secret is shown once.
    Create {
        #[arg(long, env = "ROLLCALL_TENANT")]
        tenant: String,
        /// A note for admins, such as "Entra ID gallery app".
        #[arg(long)]
        label: Option<String>,
    },
    /// List clients (never their secrets).
    List {
        #[arg(long, env = "ROLLCALL_TENANT")]
        tenant: Option<String>,
    },
    /// Revoke a client and every access token it holds.
    Revoke { client_id: String },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Print a one-time link that signs in to the console at /admin as a
    /// new admin token of the tenant (the link works once, for 15 minutes).
    LoginLink {
        #[arg(long, env = "ROLLCALL_TENANT")]
        tenant: String,
        /// The URL the browser reaches rollcall by.
        #[arg(long, env = "ROLLCALL_PUBLIC_URL", default_value = "http://127.0.0.1:8080")]
        base_url: String,
        /// Hours the console session it starts may last.
        #[arg(long, default_value_t = 8)]
        session_hours: u64,
    },
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The address to listen on.
    #[arg(long, env = "ROLLCALL_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Request bodies larger than this get 413 before they are read.
    #[arg(long, env = "ROLLCALL_BODY_LIMIT_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub body_limit_bytes: usize,
    /// Seconds in-flight requests may run after a shutdown signal.
    #[arg(long, env = "ROLLCALL_SHUTDOWN_GRACE_SECONDS", default_value_t = 30)]
    pub shutdown_grace_seconds: u64,
    /// The URL clients reach rollcall by, for resource locations behind a
    /// proxy (default: built from each request's Host header).
    #[arg(long, env = "ROLLCALL_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Seconds a client has to send a request head; a keep-alive connection
    /// idle this long is closed too.
    #[arg(long, env = "ROLLCALL_HEADER_TIMEOUT_SECONDS", default_value_t = 30)]
    pub header_timeout_seconds: u64,
    /// Seconds a client has to send a request body, whole (408 past it).
    #[arg(long, env = "ROLLCALL_BODY_TIMEOUT_SECONDS", default_value_t = 30)]
    pub body_timeout_seconds: u64,
    /// Connections served at once; one more is answered 503 and closed.
    #[arg(long, env = "ROLLCALL_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Write a checked backup into this directory at start and then every
    /// --backup-every (files rollcall-<time>.db, the oldest beyond
    /// --backup-keep removed).
    #[arg(long, env = "ROLLCALL_BACKUP_DIR")]
    pub backup_dir: Option<PathBuf>,
    /// How often a scheduled backup is taken: 30m, 12h, 1d, 1w.
    #[arg(long, env = "ROLLCALL_BACKUP_EVERY", default_value = "1d", value_parser = backup_every)]
    pub backup_every: Duration,
    /// How many scheduled backups are kept.
    #[arg(long, env = "ROLLCALL_BACKUP_KEEP", default_value_t = 7)]
    pub backup_keep: usize,
    /// Serve Prometheus metrics at /metrics on this address (a listener of
    /// its own, off by default: keep it off the IdPs' port).
    #[arg(long, env = "ROLLCALL_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// /readyz answers 503 below this many MiB free on the database's disk.
    #[arg(long, env = "ROLLCALL_READY_MIN_FREE_MB", default_value_t = 256)]
    pub ready_min_free_mb: u64,
    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs
    /// --tls-key. Read again on SIGHUP and when the file changes.
    #[arg(long, env = "ROLLCALL_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, RSA or EC).
    #[arg(long, env = "ROLLCALL_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Seconds an access token from POST /oauth/token lives.
    #[arg(long, env = "ROLLCALL_OAUTH_TOKEN_LIFETIME_SECONDS", default_value_t = 3600)]
    pub oauth_token_lifetime_seconds: u64,
    /// A group PATCH answers 204 instead of the group when the group has
    /// more members than this.
    #[arg(long, env = "ROLLCALL_PATCH_RESPONSE_MEMBERS_MAX", default_value_t = 1000)]
    pub patch_response_members_max: usize,
    /// The most operations one SCIM Bulk request may carry.
    #[arg(long, env = "ROLLCALL_BULK_OPERATIONS_MAX", default_value_t = 1000)]
    pub bulk_operations_max: usize,
    /// Log lines as human text or as JSON objects.
    #[arg(long, env = "ROLLCALL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Hours a console session lasts after sign-in (never longer than its
    /// token).
    #[arg(long, env = "ROLLCALL_CONSOLE_SESSION_HOURS", default_value_t = 8)]
    pub console_session_hours: u64,
    /// Seconds between the scheduler's checks for due daily runs; 0 turns
    /// the daily runs off in this process.
    #[arg(long, env = "ROLLCALL_SCHEDULER_INTERVAL_SECONDS", default_value_t = 60)]
    pub scheduler_interval_seconds: u64,
    /// The waits before each retry of a failed webhook message
    /// (comma-separated: ms, s, m, h, d); past the end, the last again.
    #[arg(
        long,
        env = "ROLLCALL_WEBHOOK_RETRY_SCHEDULE",
        default_value = "5s,5m,30m,2h,5h,10h,14h,20h,24h",
        value_parser = crate::webhooks::parse_schedule
    )]
    pub webhook_retry_schedule: std::vec::Vec<Duration>,
    /// Milliseconds one statement of a list, search or other scanning read
    /// may run for a SCIM client or the application before it is refused
    /// (400, scimType tooMany).
    #[arg(long, env = "ROLLCALL_QUERY_BUDGET_MS", default_value_t = 10_000)]
    pub query_budget_ms: u64,
    /// MiB of memory the read cache may keep rendered SCIM answers in
    /// (lookups by userName and by id); 0 keeps none. Never served stale:
    /// any commit to the database, from any process, empties it.
    #[arg(long, env = "ROLLCALL_READ_CACHE_MIB", default_value_t = crate::cache::ANSWERS_MIB_DEFAULT)]
    pub read_cache_mib: u64,
    /// Seconds a webhook endpoint has to answer 2xx.
    #[arg(long, env = "ROLLCALL_WEBHOOK_TIMEOUT_SECONDS", default_value_t = 15)]
    pub webhook_timeout_seconds: u64,
    /// Hours an endpoint may fail without a break before it is disabled.
    #[arg(long, env = "ROLLCALL_WEBHOOK_DISABLE_AFTER_HOURS", default_value_t = 120)]
    pub webhook_disable_after_hours: u64,
    /// Deliver to loopback, private and link-local addresses too (local
    /// development and tests); refused otherwise.
    #[arg(long, env = "ROLLCALL_WEBHOOK_ALLOW_PRIVATE_TARGETS")]
    pub webhook_allow_private_targets: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant (a-z, 0-9 and '-', at most 63 characters).
    Create { name: String },
    /// List tenants.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScopeArg {
    /// The identity provider's SCIM endpoint.
    Scim,
    /// The admin API.
    Admin,
    /// The read-only audit API.
    Audit,
    /// The application: members, the event feed, app-owned properties.
    App,
}

impl From<ScopeArg> for TokenScope {
    fn from(scope: ScopeArg) -> TokenScope {
        match scope {
            ScopeArg::Scim => TokenScope::Scim,
            ScopeArg::Admin => TokenScope::Admin,
            ScopeArg::Audit => TokenScope::Audit,
            ScopeArg::App => TokenScope::App,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a token. Prints only the secret on stdout; it is shown once.
    Issue {
        #[arg(long, env = "ROLLCALL_TENANT")]
        tenant: String,
        #[arg(long, value_enum)]
        scope: ScopeArg,
        /// Lifetime such as 90d, 12h, 2w; absent: the token never expires.
        #[arg(long)]
        expires: Option<String>,
        /// A note for admins, such as "Entra ID production".
        #[arg(long)]
        label: Option<String>,
    },
    /// List tokens (never their secrets).
    List {
        #[arg(long, env = "ROLLCALL_TENANT")]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id; it stops working at the next request.
    Revoke { token_id: String },
}

/// Where the database is.
#[derive(Clone)]
pub enum Database {
    File(PathBuf),
    /// A PostgreSQL URL; it may hold a password, so it is shown only
    /// through [`Database::describe`].
    Postgres(String),
}

impl std::fmt::Debug for Database {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.describe())
    }
}

impl Database {
    /// `--db`: a `postgres://` or `postgresql://` URL, else a file path.
    pub fn parse(text: &str) -> Database {
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            Database::Postgres(text.to_owned())
        } else {
            Database::File(PathBuf::from(text))
        }
    }

    /// What to call it in messages: the file, or the URL without its
    /// password.
    pub fn describe(&self) -> String {
        match self {
            Database::File(path) => path.display().to_string(),
            Database::Postgres(url) => redact_password(url),
        }
    }

    /// The file, for what works on an SQLite file only (`what`); on
    /// PostgreSQL an error that says what to use instead.
    pub fn file(&self, what: &str) -> anyhow::Result<&Path> {
        match self {
            Database::File(path) => Ok(path),
            Database::Postgres(_) => anyhow::bail!(
                "{what} works on an SQLite file; a database on PostgreSQL is backed up, \
                 restored and rebuilt with PostgreSQL's own tools (pg_dump, base backups \
                 with point-in-time recovery) -- see README.md, \"More than one machine\""
            ),
        }
    }
}

/// `postgres://user:secret@host/db` as `postgres://user:***@host/db`.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, path) = rest.split_once('/').map_or((rest, None), |(a, p)| (a, Some(p)));
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let query_free = path.map(|path| path.split('?').next().unwrap_or_default());
    match query_free {
        Some(path) => format!("{scheme}://{authority}/{path}"),
        None => format!("{scheme}://{authority}"),
    }
}

/// Checked settings for opening the database.
#[derive(Debug, Clone)]
pub struct Settings {
    pub db: Database,
    pub log_options: LogOptions,
    pub postgres: crate::store::PostgresOptions,
    pub as_of_snapshot_every: u64,
}

impl Args {
    pub fn settings(&self) -> Settings {
        let durability = match self.durability {
            DurabilityArg::Full => Durability::Full,
            DurabilityArg::Pipelined => Durability::Pipelined,
            DurabilityArg::Normal => Durability::Normal,
            DurabilityArg::Off => Durability::Off,
        };
        Settings {
            db: Database::parse(&self.db),
            log_options: LogOptions { durability, ..LogOptions::default() },
            postgres: crate::store::PostgresOptions {
                pool_size: self.pg_pool.max(2),
                lanes: self.pg_lanes.max(1),
                ..crate::store::PostgresOptions::default()
            },
            as_of_snapshot_every: self.as_of_snapshot_every,
        }
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("rollcall: error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(default_filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ROLLCALL_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
}

fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    match &settings.db {
        Database::File(path) => Store::open(path, settings.log_options.clone()),
        Database::Postgres(url) => Store::open_postgres(url, settings.postgres.clone()),
    }
    .with_context(|| format!("opening the database {}", settings.db.describe()))
}

/// On PostgreSQL, where nothing is migrated behind a reader's back, the
/// same as [`open_store`].
fn open_store_read_only(settings: &Settings) -> anyhow::Result<Store> {
    match &settings.db {
        Database::File(path) => Store::open_read_only(path, settings.log_options.clone()),
        Database::Postgres(url) => Store::open_postgres(url, settings.postgres.clone()),
    }
    .with_context(|| format!("opening the database {} to read it", settings.db.describe()))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let settings = args.settings();
    match args.command {
        Command::Serve(serve) => {
            init_logging("info", serve.log_format);
            self::serve(&settings, &serve)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Tenant { command } => {
            init_logging("warn", LogFormat::Text);
            let store = match command {
                TenantCommand::List { .. } => open_store_read_only(&settings)?,
                TenantCommand::Create { .. } => open_store(&settings)?,
            };
            tenant_command(&store, command)
        }
        Command::Token { command } => {
            init_logging("warn", LogFormat::Text);
            let store = match command {
                TokenCommand::List { .. } => open_store_read_only(&settings)?,
                TokenCommand::Issue { .. } | TokenCommand::Revoke { .. } => open_store(&settings)?,
            };
            token_command(&store, command)
        }
        Command::Admin { command: AdminCommand::LoginLink { tenant, base_url, session_hours } } => {
            init_logging("warn", LogFormat::Text);
            let store = open_store(&settings)?;
            let lifetime = Duration::from_secs(session_hours.clamp(1, 24 * 30) * 3600);
            let (code, token) =
                crate::console::session::issue_link(&store, &tenant, lifetime, cli_context())?;
            println!("{}/admin/sign-in/link?code={code}", base_url.trim_end_matches('/'));
            eprintln!(
                "rollcall: the link above signs in once, within 15 minutes, as admin token {} of \
                 tenant {}; revoke the token to end its session",
                token.token_id, token.tenant_name
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Client { command } => {
            init_logging("warn", LogFormat::Text);
            let store = match command {
                ClientCommand::List { .. } => open_store_read_only(&settings)?,
                ClientCommand::Create { .. } | ClientCommand::Revoke { .. } => {
                    open_store(&settings)?
                }
            };
            client_command(&store, command)
        }
        Command::Verify(verify) => {
            init_logging("warn", LogFormat::Text);
            // Read-only: verify must neither create a missing file nor
            // repair the guards whose absence it is there to report.
            if let Some(file) = &verify.file {
                return self::audit::verify_file_command(file, &verify);
            }
            if verify.projections {
                return self::audit::verify_projections_command(
                    &open_store_read_only(&settings)?,
                    &verify,
                );
            }
            verify_command(&open_store_read_only(&settings)?, &verify)
        }
        Command::Audit { command } => {
            init_logging("warn", LogFormat::Text);
            self::audit::audit_command(
                &open_store_read_only(&settings)?,
                command,
                match &settings.db {
                    Database::File(path) => Some(crate::store::snapshots::Snapshots::beside(
                        path,
                        settings.as_of_snapshot_every,
                    )),
                    Database::Postgres(_) => None,
                }
                .as_ref(),
            )
        }
        Command::Erase { tenant, user, reason, json } => {
            init_logging("warn", LogFormat::Text);
            let store = open_store(&settings)?;
            let tenant_id = self::common::tenant_id(&store, &tenant)?;
            let erased = crate::erase::erase(
                &store,
                &tenant_id,
                crate::erase::Target::User(user),
                reason,
                self::common::cli_context(),
            )?;
            if json {
                self::common::print_json(&erased)?;
            } else {
                println!(
                    "erased user {}{} at position {}: {} key(s) destroyed",
                    erased.user_id,
                    erased
                        .member_id
                        .as_ref()
                        .map(|id| format!(" (member {id})"))
                        .unwrap_or_default(),
                    erased.position,
                    erased.keys_destroyed
                );
                println!("{}", erased.message);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { from, to, json } => {
            init_logging("warn", LogFormat::Text);
            let Database::Postgres(url) = Database::parse(&to) else {
                anyhow::bail!("--to must be a postgres:// URL");
            };
            anyhow::ensure!(from.is_file(), "{} is not a database file", from.display());
            // Not while a server writes to the file: its later events would
            // be left behind.
            let _serving = crate::backup::ServeLock::acquire(&from)?;
            let migrated = crate::migrate::migrate(&from, &url)?;
            if json {
                self::common::print_json(&migrated)?;
            } else {
                println!(
                    "migrated {} events of {} tenants, {} keys and {} webhook cursors to {}; \
                     every chain verified: {}",
                    migrated.events,
                    migrated.tenants,
                    migrated.keys,
                    migrated.webhook_cursors,
                    Database::Postgres(url).describe(),
                    migrated.verified
                );
            }
            Ok(if migrated.verified { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Backup { to, json } => {
            init_logging("warn", LogFormat::Text);
            let checked = crate::backup::backup(settings.db.file("backup")?, &to)?;
            print_backup(&checked, json, "backed up")
        }
        Command::Restore { from, json } => {
            init_logging("warn", LogFormat::Text);
            let restored = crate::backup::restore(settings.db.file("restore")?, &from)?;
            if let (Some(replaced), false) = (&restored.replaced, json) {
                eprintln!("rollcall: the database replaced is kept as {replaced}");
            }
            print_backup(&restored.restored, json, "restored")
        }
        Command::Openapi => {
            print!("{}", crate::admin::openapi::document_json());
            Ok(ExitCode::SUCCESS)
        }
        Command::Rebuild(rebuild) => {
            init_logging("warn", LogFormat::Text);
            let file = settings.db.file("rebuild")?;
            self::audit::rebuild_command(&open_store(&settings)?, file, &rebuild)
        }
        Command::Export(export) => {
            init_logging("warn", LogFormat::Text);
            self::audit::export_command(&open_store_read_only(&settings)?, &export)
        }
        Command::Sync(sync) => {
            init_logging("warn", LogFormat::Text);
            let store = if sync.preview && sync.command.is_none() {
                open_store_read_only(&settings)?
            } else {
                open_store(&settings)?
            };
            self::sync::sync_command(&store, sync)
        }
        Command::Webhook { command } => {
            init_logging("warn", LogFormat::Text);
            self::webhooks::webhook_command(&open_store(&settings)?, command)
        }
        Command::Mapping { command } => setting_command(&settings, Setting::Mapping, command),
        Command::Roles { command } => setting_command(&settings, Setting::Roles, command),
        Command::Schedule { command } => setting_command(&settings, Setting::Sync, command),
    }
}

fn setting_command(
    settings: &Settings,
    setting: Setting,
    command: SettingCommand,
) -> anyhow::Result<ExitCode> {
    init_logging("warn", LogFormat::Text);
    let store = match command {
        SettingCommand::Show { .. } => open_store_read_only(settings)?,
        SettingCommand::Set { .. } => open_store(settings)?,
    };
    self::sync::setting_command(&store, setting, command)
}

fn describe_db(path: &Path, existed: bool) -> String {
    let shown = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    format!("{} ({})", shown.display(), if existed { "existing" } else { "created" })
}

fn serve(settings: &Settings, serve: &ServeArgs) -> anyhow::Result<()> {
    let listen: SocketAddr = serve.listen.parse().with_context(|| {
        format!("--listen {:?} is not an address like 127.0.0.1:8080", serve.listen)
    })?;
    // Held while serving a file: `restore` refuses to replace the file
    // under a server, and a second server on the same file is refused
    // here. Any number of nodes serve one PostgreSQL database.
    let serving = match &settings.db {
        Database::File(path) => {
            let existed = path.exists();
            let lock = crate::backup::ServeLock::acquire(path)?;
            let store = Arc::new(open_store(settings)?);
            eprintln!("rollcall: database {}", describe_db(path, existed));
            Some((lock, store))
        }
        Database::Postgres(_) => {
            if serve.backup_dir.is_some() {
                settings.db.file("--backup-dir")?;
            }
            None
        }
    };
    let store = match &serving {
        Some((_, store)) => store.clone(),
        None => {
            let store = Arc::new(open_store(settings)?);
            eprintln!("rollcall: database {} (PostgreSQL)", settings.db.describe());
            store
        }
    };
    let config = ServerConfig {
        body_limit_bytes: serve.body_limit_bytes,
        shutdown_grace: Duration::from_secs(serve.shutdown_grace_seconds),
        public_url: serve.public_url.clone(),
        console_session_lifetime: Duration::from_secs(
            serve.console_session_hours.clamp(1, 24 * 30) * 3600,
        ),
        patch_response_members_max: serve.patch_response_members_max,
        bulk_operations_max: serve.bulk_operations_max,
        as_of_snapshot_every: settings.as_of_snapshot_every,
        // Clamped to what a token may live at all, so the expiry stored and
        // the `expires_in` answered always agree.
        oauth_token_lifetime: Duration::from_secs(serve.oauth_token_lifetime_seconds.clamp(
            1,
            u64::try_from(tenancy::TOKEN_LIFETIME_DAYS_MAX * 24 * 3600).unwrap_or(u64::MAX),
        )),
        query_budget: Duration::from_millis(serve.query_budget_ms.clamp(10, 3_600_000)),
        tls: serve.tls_cert.is_some(),
        ready_min_free_bytes: serve.ready_min_free_mb.saturating_mul(1024 * 1024),
        connections: crate::http::ConnectionLimits {
            header_timeout: Duration::from_secs(serve.header_timeout_seconds.clamp(1, 3600)),
            max_connections: serve.max_connections.max(1),
        },
        body_timeout: Duration::from_secs(serve.body_timeout_seconds.clamp(1, 3600)),
        count_requests: serve.metrics_listen.is_some(),
        read_cache_bytes: serve.read_cache_mib.min(64 * 1024).saturating_mul(1024 * 1024),
        webhooks: crate::webhooks::DeliveryConfig {
            retry_schedule: serve.webhook_retry_schedule.clone(),
            timeout: Duration::from_secs(serve.webhook_timeout_seconds.clamp(1, 300)),
            disable_after: Duration::from_secs(serve.webhook_disable_after_hours.max(1) * 3600),
            allow_private_targets: serve.webhook_allow_private_targets,
        },
        ..ServerConfig::default()
    };
    // Blocking work (heavy reads, exports, Synchronize, backups) waits for
    // one of a bounded set of threads rather than growing one per request
    // (tokio's default allows 512, each with its stack and allocator arena).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS_MAX)
        .build()
        .context("starting the runtime")?;
    // Read before anything listens: a certificate that cannot be served is
    // a start-up error, not a first handshake's.
    let certificates = match (&serve.tls_cert, &serve.tls_key) {
        (Some(cert), Some(key)) => Some(
            crate::tls::Certificates::open(crate::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })
            .context("loading the TLS certificate")?,
        ),
        _ => None,
    };
    // Scheduled backups copy the file (refused above on PostgreSQL).
    let backups = match (&settings.db, &serve.backup_dir) {
        (Database::File(path), Some(dir)) => Some((path.clone(), dir.clone())),
        _ => None,
    };
    let (backup_every, backup_keep) = (serve.backup_every, serve.backup_keep);
    let metrics_listen = serve.metrics_listen;
    runtime.block_on(async move {
        let shutdown = shutdown_signal();
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let bound = listener.local_addr().context("reading the bound address")?;
        let scheme = if certificates.is_some() { "https" } else { "http" };
        // One write of the whole line: scripts poll the server's stderr for it,
        // and `eprintln!` writes the pieces of a formatted line separately, so a
        // reader could see "http://127.0.0" before the rest arrived.
        let line = format!(
            "rollcall: listening on {scheme}://{bound}  (SCIM base URL {scheme}://{bound}/scim/v2)\n"
        );
        {
            use std::io::Write as _;
            let mut stderr = std::io::stderr().lock();
            stderr.write_all(line.as_bytes()).context("writing to stderr")?;
            stderr.flush().context("writing to stderr")?;
        }
        tracing::info!(%bound, "listening");
        if serve.scheduler_interval_seconds > 0 {
            tokio::spawn(crate::sync::scheduler::run_forever(
                store.clone(),
                Arc::new(crate::sync::scheduler::SystemClock),
                Duration::from_secs(serve.scheduler_interval_seconds),
            ));
        }
        let state = AppState::new(store, config)?;
        if let Some(address) = metrics_listen {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("listening for metrics on {address}"))?;
            let bound = listener.local_addr().context("reading the metrics address")?;
            eprintln!("rollcall: metrics on http://{bound}/metrics");
            tokio::spawn(crate::metrics::serve(listener, state.metrics.clone()));
        }
        if let Some((db, dir)) = &backups {
            let schedule = crate::backup::Schedule { dir: dir.clone(), every: backup_every, keep: backup_keep };
            tokio::spawn(crate::backup::run_scheduled(
                db.clone(),
                schedule,
                state.metrics.clone(),
                state.stopping.subscribe(),
            ));
        }
        match certificates {
            Some(certificates) => {
                let tls = certificates.server_config().context("configuring TLS")?;
                tokio::spawn(certificates.watch(state.stopping.subscribe()));
                let listener = crate::tls::TlsListener::new(listener, tls)?;
                crate::server::run(listener, state, shutdown).await
            }
            None => crate::server::run(listener, state, shutdown).await,
        }
        .context("serving HTTP")
    })
}

fn backup_every(text: &str) -> Result<Duration, String> {
    let lifetime = tenancy::parse_lifetime(text).map_err(|error| error.to_string())?;
    Ok(lifetime.unsigned_abs())
}

/// A backup's report: what the copy holds, checked.
fn print_backup(
    checked: &crate::backup::Checked,
    json: bool,
    done: &str,
) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(checked)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{done} {} ({} bytes, {} events, integrity {}, every chain verified, {} ms)",
        checked.file, checked.bytes, checked.events, checked.integrity, checked.took_ms
    );
    for head in &checked.heads {
        println!(
            "  tenant {}: {} events, head {}:{}",
            head.tenant_id, head.events, head.position, head.hash
        );
    }
    if let Some(deliveries) = &checked.deliveries {
        println!("  webhook delivery state: {deliveries}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled: called before the server
/// says it listens, a SIGTERM that follows the first answer at once is
/// never met by the default action (death without draining).
#[cfg(unix)]
fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let interrupt = signal(SignalKind::interrupt()).ok();
    let terminate = signal(SignalKind::terminate()).ok();
    async move {
        let wait = |signal: Option<tokio::signal::unix::Signal>| async move {
            match signal {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = wait(interrupt) => {}
            () = wait(terminate) => {}
        }
    }
}

#[cfg(not(unix))]
fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn tenant_command(store: &Store, command: TenantCommand) -> anyhow::Result<ExitCode> {
    match command {
        TenantCommand::Create { name } => {
            let tenant = tenancy::create_tenant(store, &name, cli_context())
                .wait()
                .map_err(crate::error::Error::from)?;
            println!("{}", tenant.tenant_id);
            eprintln!("rollcall: created tenant {} ({})", tenant.name, tenant.tenant_id);
        }
        TenantCommand::List { json } => {
            let tenants =
                store.read(|connection| Ok(tenancy_projection::list_tenants(connection)?))?;
            if json {
                let items: Vec<_> = tenants
                    .iter()
                    .map(|t| serde_json::json!({"tenant_id": t.tenant_id, "name": t.name, "created_at": t.created_at}))
                    .collect();
                println!("{}", serde_json::Value::from(items));
            } else {
                let rows = tenants
                    .iter()
                    .map(|t| vec![t.name.clone(), t.tenant_id.clone(), t.created_at.clone()]);
                print_table(&["NAME", "TENANT ID", "CREATED"], rows)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn token_command(store: &Store, command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Issue { tenant, scope, expires, label } => {
            let scope = TokenScope::from(scope);
            let request = TokenRequest::parse(scope.as_str(), expires.as_deref(), label)?;
            let (token, secret) =
                tenancy::issue_token(store, TenantRef::Name(tenant), request, cli_context())
                    .wait()
                    .map_err(crate::error::Error::from)?;
            println!("{}", secret.expose());
            eprintln!(
                "rollcall: issued {} token {} for tenant {} ({}); the secret above is shown once",
                token.scope.as_str(),
                token.token_id,
                token.tenant_name,
                token
                    .expires_at
                    .as_deref()
                    .map_or("never expires".to_owned(), |at| format!("expires {at}")),
            );
        }
        TokenCommand::List { tenant, json } => {
            let tokens = store.read(|connection| {
                let tenant_id = match &tenant {
                    Some(name) => {
                        Some(TenantRef::Name(name.clone()).resolve(connection)?.tenant_id)
                    }
                    None => None,
                };
                Ok(tenancy_projection::list_tokens(connection, tenant_id.as_deref())?)
            })?;
            let now = store.now();
            if json {
                let items: Vec<_> =
                    tokens.iter().map(|token| crate::admin::token_view(token, now)).collect();
                println!("{}", serde_json::Value::from(items));
            } else {
                let rows = tokens.iter().map(|t| {
                    vec![
                        t.token_id.clone(),
                        t.tenant_name.clone(),
                        t.scope.as_str().to_owned(),
                        tenancy::token_status(t, now).as_str().to_owned(),
                        t.created_at.clone(),
                        t.last_used_at.clone().unwrap_or_else(|| "never".to_owned()),
                        t.expires_at.clone().unwrap_or_else(|| "never".to_owned()),
                        t.label.clone().unwrap_or_default(),
                    ]
                });
                print_table(
                    &[
                        "TOKEN ID",
                        "TENANT",
                        "SCOPE",
                        "STATUS",
                        "CREATED",
                        "LAST USED",
                        "EXPIRES",
                        "LABEL",
                    ],
                    rows,
                )?;
            }
        }
        TokenCommand::Revoke { token_id } => {
            let revoked = tenancy::revoke_token(store, &token_id, None, cli_context())
                .wait()
                .map_err(crate::error::Error::from)?;
            match revoked {
                Revoked::Now => eprintln!("rollcall: revoked token {token_id}"),
                Revoked::Already => eprintln!("rollcall: token {token_id} was already revoked"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn client_command(store: &Store, command: ClientCommand) -> anyhow::Result<ExitCode> {
    match command {
        ClientCommand::Create { tenant, label } => {
            let (client, secret) =
                tenancy::register_client(store, TenantRef::Name(tenant), label, cli_context())
                    .wait()
                    .map_err(crate::error::Error::from)?;
            println!("client_id={}", client.client_id);
            println!("client_secret={}", secret.expose());
            eprintln!(
                "rollcall: registered OAuth client {} for tenant {}; the secret above is shown once. \
                 Token endpoint: POST <server>/oauth/token (grant_type=client_credentials)",
                client.client_id, client.tenant_name
            );
        }
        ClientCommand::List { tenant } => {
            let clients = store.read(|connection| {
                let tenant_id = match &tenant {
                    Some(name) => {
                        Some(TenantRef::Name(name.clone()).resolve(connection)?.tenant_id)
                    }
                    None => None,
                };
                Ok(tenancy_projection::list_clients(connection, tenant_id.as_deref())?)
            })?;
            let rows = clients.iter().map(|c| {
                vec![
                    c.client_id.clone(),
                    c.tenant_name.clone(),
                    if c.revoked_at.is_some() { "revoked" } else { "active" }.to_owned(),
                    c.created_at.clone(),
                    c.label.clone().unwrap_or_default(),
                ]
            });
            print_table(&["CLIENT ID", "TENANT", "STATUS", "CREATED", "LABEL"], rows)?;
        }
        ClientCommand::Revoke { client_id } => {
            match tenancy::revoke_client(store, &client_id, cli_context())
                .wait()
                .map_err(crate::error::Error::from)?
            {
                Revoked::Now => eprintln!("rollcall: revoked client {client_id} and its tokens"),
                Revoked::Already => eprintln!("rollcall: client {client_id} was already revoked"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

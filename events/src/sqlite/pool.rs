//! A small pool of read-only WAL connections.
//!
//! WAL lets readers run beside the one writer without blocking it, each on
//! a consistent snapshot. Connections are opened lazily up to a bound and
//! handed back on drop. A borrowed connection must never be held across an
//! `.await`: callers use it synchronously and return it, which is why a
//! plain `std::sync::Mutex` is enough here. (Hand-written: the pool crates
//! for rusqlite pin rusqlite versions and bring more than these forty
//! lines.)

use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};

use rusqlite::{Connection, OpenFlags};

use crate::LogError;

pub struct ReadPool {
    path: PathBuf,
    /// Upper bound on open read connections; a caller beyond it waits.
    connections_max: usize,
    busy_timeout_ms: u64,
    connection_setup: Option<fn(&Connection) -> rusqlite::Result<()>>,
    state: Mutex<PoolState>,
    returned: Condvar,
}

struct PoolState {
    idle: Vec<Connection>,
    open: usize,
    /// Callers blocked in `get`: a returned connection wakes one only if
    /// there is one (an unneeded wake is still a futex syscall per read).
    waiting: usize,
}

impl ReadPool {
    pub fn new(path: PathBuf, connections_max: usize, busy_timeout_ms: u64) -> ReadPool {
        ReadPool {
            path,
            connections_max: connections_max.max(1),
            busy_timeout_ms,
            connection_setup: None,
            state: Mutex::new(PoolState { idle: Vec::new(), open: 0, waiting: 0 }),
            returned: Condvar::new(),
        }
    }

    /// The pool a log at `path` with `options` reads through.
    pub fn for_log(path: &std::path::Path, options: &super::LogOptions) -> ReadPool {
        ReadPool {
            connection_setup: options.connection_setup,
            ..ReadPool::new(path.to_owned(), options.read_connections_max, options.busy_timeout_ms)
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // A panic while holding this lock leaves only a Vec of connections
        // behind, which stays valid: recover it rather than fail every read.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Borrows a connection, opening one if under the bound.
    pub fn get(&self) -> Result<PooledConnection<'_>, LogError> {
        let mut state = self.lock();
        loop {
            if let Some(connection) = state.idle.pop() {
                return Ok(PooledConnection { pool: self, connection: Some(connection) });
            }
            if state.open < self.connections_max {
                state.open += 1;
                drop(state);
                return match self.open_connection() {
                    Ok(connection) => {
                        Ok(PooledConnection { pool: self, connection: Some(connection) })
                    }
                    Err(error) => {
                        let mut state = self.lock();
                        state.open -= 1;
                        if state.waiting > 0 {
                            self.returned.notify_one();
                        }
                        Err(error)
                    }
                };
            }
            state.waiting += 1;
            state = self.returned.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
            state.waiting -= 1;
        }
    }

    fn open_connection(&self) -> Result<Connection, LogError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let connection = Connection::open_with_flags(&self.path, flags)
            .map_err(|error| LogError::storage("opening a read connection", error))?;
        connection
            .busy_timeout(std::time::Duration::from_millis(self.busy_timeout_ms))
            .map_err(|error| LogError::storage("configuring a read connection", error))?;
        connection.set_prepared_statement_cache_capacity(64);
        super::stable_query_plans(&connection)?;
        if let Some(setup) = self.connection_setup {
            setup(&connection)
                .map_err(|error| LogError::storage("setting up a read connection", error))?;
        }
        Ok(connection)
    }
}

/// A borrowed read connection; goes back to the pool on drop.
pub struct PooledConnection<'a> {
    pool: &'a ReadPool,
    connection: Option<Connection>,
}

impl std::ops::Deref for PooledConnection<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        // Invariant: `connection` is `Some` from construction until drop.
        #[allow(clippy::expect_used)]
        self.connection.as_ref().expect("a pooled connection is present until dropped")
    }
}

impl Drop for PooledConnection<'_> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            let mut state = self.pool.lock();
            state.idle.push(connection);
            if state.waiting > 0 {
                self.pool.returned.notify_one();
            }
        }
    }
}

//! A small pool of read-only WAL connections.
//!
//! WAL lets readers run beside the one writer without blocking it, each on
//! a consistent snapshot. Connections are opened lazily up to a bound and
//! handed back on drop. Reads come in two lanes: [`Lane::Heavy`] (a read
//! that may scan: a list, a search, a report) may hold all connections but
//! a reserve, which stays for [`Lane::Quick`] reads (a token check, a
//! lookup by key), so a quick read never queues behind long ones. A
//! borrow may carry a time budget: SQLite's progress handler interrupts a
//! statement that runs past it, and the statement fails with
//! `SQLITE_INTERRUPT` ([`crate::LogError::Interrupted`] above). A borrowed connection must never be held across an
//! `.await`: callers use it synchronously and return it, which is why a
//! plain `std::sync::Mutex` is enough here. (Hand-written: the pool crates
//! for rusqlite pin rusqlite versions and bring more than these forty
//! lines.)

use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use crate::LogError;

/// Which reads a connection is borrowed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// A short read by key: may take any connection.
    Quick,
    /// A read that may scan: never takes the quick reserve.
    Heavy,
}

/// Virtual machine steps between two looks at a borrow's deadline: a few
/// microseconds of work, so a budget is kept to within a millisecond.
const BUDGET_CHECK_STEPS: i32 = 4096;

pub struct ReadPool {
    path: PathBuf,
    /// Upper bound on open read connections; a caller beyond it waits.
    connections_max: usize,
    /// Connections heavy reads leave to quick ones.
    quick_reserved: usize,
    busy_timeout_ms: u64,
    connection_setup: Option<fn(&Connection) -> rusqlite::Result<()>>,
    state: Mutex<PoolState>,
    returned: Condvar,
}

struct PoolState {
    idle: Vec<Connection>,
    open: usize,
    /// Callers blocked in `get`: a returned connection wakes them only if
    /// there are some (an unneeded wake is still a futex syscall per read).
    waiting: usize,
    /// Connections borrowed for heavy reads.
    heavy: usize,
}

impl ReadPool {
    pub fn new(path: PathBuf, connections_max: usize, busy_timeout_ms: u64) -> ReadPool {
        let connections_max = connections_max.max(1);
        ReadPool {
            path,
            connections_max,
            // A quarter, at least one; none when there is only one.
            quick_reserved: (connections_max / 4).max(1).min(connections_max - 1),
            busy_timeout_ms,
            connection_setup: None,
            state: Mutex::new(PoolState { idle: Vec::new(), open: 0, waiting: 0, heavy: 0 }),
            returned: Condvar::new(),
        }
    }

    /// How many heavy reads may run at once.
    pub fn heavy_max(&self) -> usize {
        self.connections_max - self.quick_reserved
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

    /// Borrows a connection for a quick read, opening one if under the
    /// bound; no time budget.
    pub fn get(&self) -> Result<PooledConnection<'_>, LogError> {
        self.get_in(Lane::Quick, None)
    }

    /// Borrows a connection in `lane`, its statements interrupted once
    /// `budget` has passed.
    pub fn get_in(
        &self,
        lane: Lane,
        budget: Option<Duration>,
    ) -> Result<PooledConnection<'_>, LogError> {
        let heavy = lane == Lane::Heavy;
        let mut state = self.lock();
        loop {
            let lane_open = !heavy || state.heavy < self.heavy_max();
            if lane_open && let Some(connection) = state.idle.pop() {
                state.heavy += usize::from(heavy);
                drop(state);
                return self.lend(connection, heavy, budget);
            }
            if lane_open && state.open < self.connections_max {
                state.open += 1;
                state.heavy += usize::from(heavy);
                drop(state);
                return match self.open_connection() {
                    Ok(connection) => self.lend(connection, heavy, budget),
                    Err(error) => {
                        let mut state = self.lock();
                        state.open -= 1;
                        state.heavy -= usize::from(heavy);
                        if state.waiting > 0 {
                            self.returned.notify_all();
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

    fn lend(
        &self,
        connection: Connection,
        heavy: bool,
        budget: Option<Duration>,
    ) -> Result<PooledConnection<'_>, LogError> {
        // Lent first: should installing the budget fail, the drop gives the
        // connection back.
        let mut lent =
            PooledConnection { pool: self, connection: Some(connection), heavy, budgeted: false };
        if let (Some(budget), Some(connection)) = (budget, lent.connection.as_mut()) {
            let deadline = Instant::now() + budget;
            connection
                .progress_handler(BUDGET_CHECK_STEPS, Some(move || Instant::now() >= deadline))
                .map_err(|error| LogError::storage("setting a read's time budget", error))?;
            lent.budgeted = true;
        }
        Ok(lent)
    }

    pub(super) fn open_connection(&self) -> Result<Connection, LogError> {
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
    heavy: bool,
    budgeted: bool,
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
        if let Some(mut connection) = self.connection.take() {
            // The next borrower sets its own budget, or none; a connection
            // whose handler cannot be cleared is closed rather than kept.
            if self.budgeted && connection.progress_handler(0, None::<fn() -> bool>).is_err() {
                let mut state = self.pool.lock();
                state.open -= 1;
                state.heavy -= usize::from(self.heavy);
                if state.waiting > 0 {
                    self.pool.returned.notify_all();
                }
                return;
            }
            let mut state = self.pool.lock();
            state.idle.push(connection);
            state.heavy -= usize::from(self.heavy);
            // Both lanes wait on one condition: wake them all (there are
            // rarely more than a few), so a returned connection is never
            // handed to a heavy waiter that may not take it while a quick
            // one sleeps.
            if state.waiting > 0 {
                self.pool.returned.notify_all();
            }
        }
    }
}

//! What every command module prints and stamps: the CLI's actor, tables,
//! JSON, and a tenant's id by name. Command modules import this, never
//! each other nor the dispatch in `cli`.

use std::io::Write;

use anyhow::Context;
use events::{Actor, CommandContext};

use crate::store::Store;
use crate::tenancy::TenantRef;

/// The actor of every command the CLI records: the operating-system user.
pub fn cli_context() -> CommandContext {
    let user = std::env::var("USER").ok().or_else(|| std::env::var("LOGNAME").ok());
    CommandContext::new(Actor::Cli { user })
}

/// Prints rows as left-aligned columns under a header.
pub fn print_table(
    headers: &[&str],
    rows: impl Iterator<Item = Vec<String>>,
) -> anyhow::Result<()> {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut widths: Vec<usize> = headers.iter().map(|header| header.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    let mut write_row = |cells: Vec<String>| -> std::io::Result<()> {
        let line: Vec<String> =
            cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        writeln!(out, "{}", line.join("  ").trim_end())
    };
    write_row(headers.iter().map(|header| (*header).to_owned()).collect())?;
    for row in rows {
        write_row(row)?;
    }
    Ok(())
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value).context("printing JSON")?);
    Ok(())
}

/// A tenant's id, by its name.
pub fn tenant_id(store: &Store, name: &str) -> anyhow::Result<String> {
    Ok(store.read(|connection| TenantRef::Name(name.to_owned()).resolve(connection))?.tenant_id)
}

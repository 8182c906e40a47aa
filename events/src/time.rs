//! The one way rollcall writes instants: UTC, RFC 3339, millisecond precision.
//!
//! Every stored timestamp goes through [`format_millis`], so stored instants
//! compare correctly as strings and read the same on every replay.

use jiff::Timestamp;

/// Formats an instant as `2026-03-01T09:30:00.123Z`, always with exactly three
/// fractional digits.
pub fn format_millis(instant: Timestamp) -> String {
    format!("{:.3}", instant.round(jiff::Unit::Millisecond).unwrap_or(instant))
}

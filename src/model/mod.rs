//! The SCIM data model that the SCIM routes and Synchronize's mapping both
//! stand on: the filter grammar (`filter`, parsed into the AST of
//! `projections::directory::filter`), attribute paths with value filters
//! (`path`), and filters evaluated against a resource in memory (`eval`).
//! Nothing here knows HTTP, a request or the store; it sits below both of
//! its users, so neither imports the other for it.

pub mod eval;
pub mod filter;
pub mod path;

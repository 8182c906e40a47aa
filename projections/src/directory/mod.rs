//! The SCIM directory: what the identity provider said, as it will be served
//! back to it.
//!
//! * [`filter`]: the one filter AST that SCIM requests are parsed into (by
//!   `src/scim`) and that this projection translates to SQL.
//! * [`store`]: the directory tables, folded from the SCIM events, and the
//!   lookups by id, name and membership.
//! * [`query`]: a filter translated to SQL over those tables, with bind
//!   parameters only.
//! * [`schema`]: the SCIM schemas (core User, Enterprise User, Group) with
//!   each attribute's characteristics, which decide how values compare and
//!   how names are written back.

pub mod filter;
pub mod query;
pub mod schema;
pub mod store;

//! The SCIM directory: what the identity provider said, as it will be served
//! back to it.
//!
//! * [`filter`]: the one filter AST that SCIM requests are parsed into (by
//!   `src/scim`) and that this projection translates to SQL.
//! * [`schema`]: the SCIM schemas (core User, Enterprise User, Group) with
//!   each attribute's characteristics, which decide how values compare and
//!   how names are written back.

pub mod filter;
pub mod schema;

//! The SCIM directory: what the identity provider said, as it will be served
//! back to it.
//!
//! For now this holds the shared query language, [`filter`]: the one filter
//! AST that SCIM requests are parsed into (by `src/scim`) and that this
//! projection translates to SQL over its tables.

pub mod filter;

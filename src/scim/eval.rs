//! In-memory evaluation of SCIM filters against one JSON value (work in progress).

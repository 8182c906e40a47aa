//! The SCIM PATCH engine (work in progress).

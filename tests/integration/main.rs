//! rollcall's integration tests: a real server on 127.0.0.1 with a random
//! port, a real SQLite file in a temp dir, real HTTP clients, and the real
//! binary for the CLI. One test binary, a module per theme (each extra file
//! in tests/ would be one more binary to link).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod audit;
mod auth;
mod backup;
mod browser;
mod bulk;
mod cache;
mod cli;
mod console;
mod deploy;
mod dialects;
mod directory;
mod erasure;
mod feed;
mod isolation;
mod membership;
mod metrics;
mod oauth;
mod openapi;
mod postgres;
mod scim;
mod sealing;
mod sequences;
mod server;
mod synchronize;
mod tidy;
mod tls;
mod util;
mod webhooks;

//! rollcall: an event-sourced SCIM 2.0 provisioning engine.
//!
//! # Brief overview
//!
//! This crate is the application: it turns HTTP requests and CLI commands
//! into decisions, decisions into events (through `events`), and answers
//! from the read models of `projections`.
//!
//! * [`cli`] parses the command line and runs a command; `serve` starts
//!   [`server::run`].
//! * [`server`] assembles the router ([`server::app`]) and the middleware
//!   every request passes (request id, body limit, logging); [`state`] is
//!   what every handler reaches, below the routes.
//! * [`auth`] admits bearer tokens by the hash of their secret.
//! * [`scim`] and [`admin`] (all of `/api/v1`) are the families of routes,
//!   each behind gates for its token scopes; [`oauth`] is the token
//!   endpoint of the client-credentials grant; [`console`] the admin pages.
//! * [`model`] is the SCIM data model (filters, paths, in-memory
//!   evaluation) that SCIM and Synchronize both stand on; [`sync`],
//!   [`audit`] and [`webhooks`] decide, and know no route.
//! * [`requests`] writes the request log (each SCIM request as answered)
//!   in batches beside the requests.
//! * [`tenancy`] holds the tenant and token commands; [`store`] the one
//!   write path ([`store::record`]) every command uses.
//! * [`webhooks`] pushes the event feed to the application's endpoints,
//!   signed per Standard Webhooks, in order, retried until delivered.
//! * [`error`] is the one error enum and its mapping to responses.
//!
//! Modules import downwards only (ARCHITECTURE.md, "Code map"); a tidy
//! test fails on any circle between them.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod cache;
pub mod cli;
pub mod console;
pub mod erase;
pub mod error;
pub mod http;
pub mod metrics;
pub mod migrate;
pub mod model;
pub mod oauth;
pub mod reads;
pub mod requests;
pub mod scim;
pub mod server;
pub mod state;
pub mod stop;
pub mod store;
pub mod sync;
pub mod tenancy;
pub mod tls;
pub mod webhooks;

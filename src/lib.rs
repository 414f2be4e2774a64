//! ordersync keeps a PostgreSQL database in step with shops' orders on five marketplaces and pushes the
//! shops' decisions back to them.
//!
//! Module map:
//! - [`config`]: layered configuration, accounts, secrets, validation.
//! - [`domain`]: marketplaces, canonical order states, the normalized order.
//! - [`http`]: the shared HTTP client, failure classification, redaction.
//! - [`marketplace`]: the adapter trait and one module per marketplace.
//! - [`store`]: the PostgreSQL schema and plain functions over it.
//! - [`poller`]: a poll run of one account; [`daemon`] schedules them.
//! - [`outbox`]: queued order transitions and the worker that pushes them to the marketplaces.
//! - [`ops`]: health and readiness endpoints, Prometheus metrics, the systemd watchdog.
//! - [`sandbox`]: fake marketplaces over real HTTP, for tests and demos; [`demo`] runs the daemon against them.
//! - `allocator` (private): the global allocator, jemalloc.
//!
//! See ARCHITECTURE.md for how data flows.

mod allocator;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod domain;
pub mod embedded_pg;
pub mod http;
pub mod marketplace;
pub mod ops;
pub mod outbox;
pub mod poller;
pub mod progress;
pub mod sandbox;
pub mod store;
pub mod telemetry;

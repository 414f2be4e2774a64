//! ordersync keeps a PostgreSQL database in step with shops' orders on five marketplaces and pushes the
//! shops' decisions back to them.
//!
//! Module map:
//! - [`config`]: layered configuration, accounts, secrets, validation.
//! - [`domain`]: marketplaces, canonical order states, the normalized order.
//! - [`http`]: the shared HTTP client, failure classification, redaction.
//! - [`marketplace`]: the adapter trait and one module per marketplace.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod domain;
pub mod embedded_pg;
pub mod http;
pub mod marketplace;
pub mod poller;
pub mod progress;
pub mod sandbox;
pub mod store;
pub mod telemetry;

//! ordersync keeps a PostgreSQL database in step with shops' orders on five marketplaces.
pub mod domain;
pub mod sandbox;

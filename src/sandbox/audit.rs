//! The sandbox's audit log: one [`AuditEntry`] per HTTP request any fake marketplace received, in arrival
//! order, so tests can assert what a client sent, what it was answered, and which calls changed state.
//!
//! Handlers annotate their responses with two extensions the per-API middleware in `mod.rs` reads:
//! [`Operation`] (a stable name for the call, e.g. `"orders.list"`) and [`Effect`] (present only when the
//! call changed sandbox state).

use std::sync::Mutex;

use chrono::{DateTime, Utc};

use super::Api;
use super::faults::Fault;

/// One request as the sandbox saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub api: Api,
    pub method: String,
    /// The path relative to the API's prefix (e.g. `/orders/` for i1, `/orders` for labs).
    pub path: String,
    pub query: Option<String>,
    /// The handler's [`Operation`] name, or `"METHOD path"` when the handler named none (e.g. a 404 or a
    /// request answered by an injected fault).
    pub operation: String,
    pub status: u16,
    /// The fault injected into this request, if any.
    pub fault: Option<Fault>,
    /// What the call changed, when it changed anything.
    pub effect: Option<String>,
    /// The request body as text (lossy UTF-8); `None` when empty.
    pub body: Option<String>,
    /// When the request arrived.
    pub at: DateTime<Utc>,
}

/// Response extension naming the operation a handler performed, copied into [`AuditEntry::operation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operation(pub &'static str);

/// Response extension describing a state change, copied into [`AuditEntry::effect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effect(pub String);

/// The shared, append-only log of requests.
#[derive(Debug, Default)]
pub struct AuditLog {
    entries: Mutex<Vec<AuditEntry>>,
}

impl AuditLog {
    pub fn record(&self, entry: AuditEntry) {
        super::lock(&self.entries).push(entry);
    }

    /// A copy of every entry so far, in arrival order.
    pub fn entries(&self) -> Vec<AuditEntry> {
        super::lock(&self.entries).clone()
    }

    pub fn clear(&self) {
        super::lock(&self.entries).clear();
    }
}

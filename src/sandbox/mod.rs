//! The marketplace sandbox: in-process fake marketplaces served over real HTTP on 127.0.0.1, for tests,
//! `ordersync demo` and benchmarks.
//!
//! Each fake (`allesgo`, `c2c`, `i1`, `labs`, `gittigidiyor`) is written from the published documents and
//! the digest alone; the sandbox shares no code with the production adapters, so a misreading on either side
//! shows up as a failing test. This module owns what the fakes have in common: the [`Sandbox`] handle, the
//! shared state ([`Shared`]), and one middleware per API that injects faults ([`faults`]), fires
//! change-while-paging triggers and records every request in the audit log ([`audit`]).
//!
//! Architecture Invariant: nothing here imports `crate::domain`, `crate::marketplace` or anything else
//! outside `crate::sandbox`.

pub mod audit;
pub mod faults;
pub mod generator;

mod allesgo;
mod c2c;
mod gittigidiyor;
mod i1;
mod labs;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use audit::{AuditEntry, AuditLog, Effect, Operation};
use faults::{Fault, FaultPlan};
use generator::Generator;

/// The fake marketplaces. The sandbox's own enum: it deliberately does not reuse the domain's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Api {
    Allesgo,
    C2c,
    I1,
    Labs,
    Gittigidiyor,
}

impl Api {
    pub const ALL: [Api; 5] = [
        Api::Allesgo,
        Api::C2c,
        Api::I1,
        Api::Labs,
        Api::Gittigidiyor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Api::Allesgo => "allesgo",
            Api::C2c => "c2c",
            Api::I1 => "i1",
            Api::Labs => "labs",
            Api::Gittigidiyor => "gittigidiyor",
        }
    }

    /// Where the API's router is nested on the sandbox's server.
    fn prefix(self) -> &'static str {
        match self {
            Api::Allesgo => "/allesgo",
            Api::C2c => "/c2c",
            Api::I1 => "/i1/api/i1",
            Api::Labs => "/labs/v1",
            Api::Gittigidiyor => "/gittigidiyor/listingapi/ws/IndividualSaleService",
        }
    }

    /// A body that parses as nothing this API sends, for [`Fault::Malformed`].
    fn malformed_body(self) -> (&'static str, &'static str) {
        match self {
            Api::Allesgo => ("application/json", r#"{"data": [{"code": "#),
            Api::C2c => (
                "application/json; charset=utf-8",
                r#"[{"siparisKodu": "SP-"#,
            ),
            Api::I1 => (
                "application/json",
                r#"{"count": 12, "next": null, "results": [{"id": "#,
            ),
            Api::Labs => ("application/json", r#"{"items": [{"id": 26632"#),
            Api::Gittigidiyor => (
                "text/xml; charset=utf-8",
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><env:Envelope><env:Body><sales><sale><",
            ),
        }
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How to start a [`Sandbox`].
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// 0 picks a free port.
    pub port: u16,
    pub seed: u64,
    /// Orders seeded into each API, spread over the last 90 days.
    pub orders_per_api: usize,
    pub credentials: Credentials,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            port: 0,
            seed: 42,
            orders_per_api: 200,
            credentials: Credentials::default(),
        }
    }
}

/// The credentials each fake accepts; anything else gets that API's authentication error.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub allesgo_store_id: String,
    pub allesgo_access_token: String,
    pub c2c_domain: String,
    pub c2c_api_key: String,
    pub c2c_api_password: String,
    /// Sent as `Authorization: Bearer <token>`.
    pub i1_token: String,
    /// Sent as `Authorization: Bearer <token>`.
    pub labs_token: String,
    pub gg_api_key: String,
    pub gg_secret_key: String,
    /// HTTP basic auth user.
    pub gg_role_name: String,
    /// HTTP basic auth password.
    pub gg_role_password: String,
}

impl Default for Credentials {
    fn default() -> Self {
        Credentials {
            allesgo_store_id: "4242".into(),
            allesgo_access_token: "sandbox-allesgo-token".into(),
            c2c_domain: "www.sandbox-shop.com".into(),
            c2c_api_key: "sandbox-c2c-key".into(),
            c2c_api_password: "sandbox-c2c-password".into(),
            i1_token: "sandbox-i1-token".into(),
            labs_token: "sandbox-labs-token".into(),
            gg_api_key: "sandbox-gg-apikey".into(),
            gg_secret_key: "sandbox-gg-secret".into(),
            gg_role_name: "sandbox-gg-role".into(),
            gg_role_password: "sandbox-gg-rolepass".into(),
        }
    }
}

/// An order as the sandbox holds it, reduced to what "the database equals the sandbox" checks compare.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxOrder {
    /// The identifier the API exposes for the order (each fake's module doc says which field).
    pub external_id: String,
    /// The raw status as the API shows it (code or text).
    pub status: String,
    pub updated_at: DateTime<Utc>,
    pub total: Decimal,
    pub line_count: usize,
}

/// What every fake marketplace's store offers the sandbox handle.
pub(crate) trait FakeApi: Send + 'static {
    /// Places `n` new orders at `now`; returns their external ids.
    fn add_orders(
        &mut self,
        generator: &mut Generator,
        n: usize,
        now: DateTime<Utc>,
    ) -> Vec<String>;
    /// Moves up to `n` non-final orders one status forward (change time `now`); returns their ids.
    fn change_orders(
        &mut self,
        generator: &mut Generator,
        n: usize,
        now: DateTime<Utc>,
    ) -> Vec<String>;
    /// Moves this order one status forward; false when it is unknown or already final.
    fn change_order(
        &mut self,
        generator: &mut Generator,
        external_id: &str,
        now: DateTime<Utc>,
    ) -> bool;
    /// Changes one of this order's items without touching the order's own record (the warehouse
    /// moving an item's estimated delivery); false when it is unknown, or where items are part of the
    /// order's record.
    fn change_item(&mut self, external_id: &str, now: DateTime<Utc>) -> bool {
        let _ = (external_id, now);
        false
    }
    fn snapshot(&self) -> Vec<SandboxOrder>;
}

/// Locks a sandbox mutex. A handler that panicked while holding a lock leaves plain data behind (no
/// invariant spans an unlock), so a poisoned lock is still used rather than failing every later request.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A pending "change orders while the client is paging" trigger.
#[derive(Debug)]
struct PagingTrigger {
    remaining_reads: usize,
    orders: usize,
}

/// State shared by the sandbox handle, the middleware and every handler.
///
/// The locks are `std::sync::Mutex`: every critical section is short, synchronous and never spans an
/// `.await`, which is what a std mutex is right for in async code. Lock order: at most one API store, then
/// `generator`; `generator` is always taken last and nothing is locked while holding it. The stores are
/// private to `sandbox`, which includes the fake modules (they hold module-private `Store` types).
pub(crate) struct Shared {
    pub credentials: Credentials,
    allesgo: Mutex<allesgo::Store>,
    c2c: Mutex<c2c::Store>,
    i1: Mutex<i1::Store>,
    labs: Mutex<labs::Store>,
    gittigidiyor: Mutex<gittigidiyor::Store>,
    pub generator: Mutex<Generator>,
    pub audit: AuditLog,
    faults: Mutex<BTreeMap<Api, FaultPlan>>,
    paging: Mutex<BTreeMap<Api, Vec<PagingTrigger>>>,
}

impl Shared {
    fn seeded(config: &SandboxConfig, now: DateTime<Utc>) -> Shared {
        let mut generator = Generator::new(config.seed);
        let n = config.orders_per_api;
        Shared {
            credentials: config.credentials.clone(),
            allesgo: Mutex::new(allesgo::Store::seeded(&mut generator, n, now)),
            c2c: Mutex::new(c2c::Store::seeded(&mut generator, n, now)),
            i1: Mutex::new(i1::Store::seeded(&mut generator, n, now)),
            labs: Mutex::new(labs::Store::seeded(&mut generator, n, now)),
            gittigidiyor: Mutex::new(gittigidiyor::Store::seeded(&mut generator, n, now)),
            generator: Mutex::new(generator),
            audit: AuditLog::default(),
            faults: Mutex::new(BTreeMap::new()),
            paging: Mutex::new(BTreeMap::new()),
        }
    }

    /// Runs `f` on the API's store with the generator, honouring the lock order.
    fn with_store<R>(&self, api: Api, f: impl FnOnce(&mut dyn FakeApi, &mut Generator) -> R) -> R {
        fn run<S: FakeApi, R>(
            store: &Mutex<S>,
            generator: &Mutex<Generator>,
            f: impl FnOnce(&mut dyn FakeApi, &mut Generator) -> R,
        ) -> R {
            let mut store = lock(store);
            let mut generator = lock(generator);
            f(&mut *store, &mut generator)
        }
        match api {
            Api::Allesgo => run(&self.allesgo, &self.generator, f),
            Api::C2c => run(&self.c2c, &self.generator, f),
            Api::I1 => run(&self.i1, &self.generator, f),
            Api::Labs => run(&self.labs, &self.generator, f),
            Api::Gittigidiyor => run(&self.gittigidiyor, &self.generator, f),
        }
    }

    fn next_fault(&self, api: Api) -> Option<Fault> {
        let mut plans = lock(&self.faults);
        let plan = plans.get_mut(&api)?;
        plan.next_fault(&mut lock(&self.generator))
    }

    /// Counts one served read of `api` and fires the triggers it completes.
    fn count_read(&self, api: Api) {
        let due: usize = {
            let mut paging = lock(&self.paging);
            let Some(triggers) = paging.get_mut(&api) else {
                return;
            };
            let mut due = 0;
            triggers.retain_mut(|trigger| {
                trigger.remaining_reads = trigger.remaining_reads.saturating_sub(1);
                if trigger.remaining_reads == 0 {
                    due += trigger.orders;
                    false
                } else {
                    true
                }
            });
            due
        };
        if due > 0 {
            self.with_store(api, |store, generator| {
                store.change_orders(generator, due, Utc::now())
            });
        }
    }
}

/// A running sandbox. Dropping it stops the server as well; [`Sandbox::shutdown`] also waits for it.
pub struct Sandbox {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Sandbox {
    /// Seeds every API's orders and serves them on `127.0.0.1:config.port`.
    pub async fn start(config: SandboxConfig) -> std::io::Result<Sandbox> {
        let shared = Arc::new(Shared::seeded(&config, Utc::now()));
        let listener = TcpListener::bind(("127.0.0.1", config.port)).await?;
        let addr = listener.local_addr()?;
        let app = Api::ALL.into_iter().fold(Router::new(), |app, api| {
            let router = match api {
                Api::Allesgo => allesgo::router(shared.clone()),
                Api::C2c => c2c::router(shared.clone()),
                Api::I1 => i1::router(shared.clone()),
                Api::Labs => labs::router(shared.clone()),
                Api::Gittigidiyor => gittigidiyor::router(shared.clone()),
            };
            let layer = middleware::from_fn_with_state((shared.clone(), api), per_api);
            // `nest_service` rather than `nest`: the nested router then answers every path under the prefix
            // itself (its own fallback included), so the middleware sees unknown paths as well.
            app.nest_service(api.prefix(), router.layer(layer))
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    // A dropped sender means the handle was dropped: stop as well.
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Sandbox {
            shared,
            addr,
            stop: Some(stop),
            server,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL an adapter for `api` is configured with (see the digest's table).
    pub fn base_url(&self, api: Api) -> String {
        let addr = self.addr;
        match api {
            Api::I1 => format!("http://{addr}{}/", api.prefix()),
            _ => format!("http://{addr}{}", api.prefix()),
        }
    }

    pub fn credentials(&self) -> &Credentials {
        &self.shared.credentials
    }

    /// Every request received so far, in arrival order.
    pub fn audit(&self) -> Vec<AuditEntry> {
        self.shared.audit.entries()
    }

    pub fn clear_audit(&self) {
        self.shared.audit.clear();
    }

    /// Replaces `api`'s fault plan.
    pub fn set_faults(&self, api: Api, plan: FaultPlan) {
        lock(&self.shared.faults).insert(api, plan);
    }

    /// Places `n` new orders now; returns their external ids.
    pub fn add_orders(&self, api: Api, n: usize) -> Vec<String> {
        self.add_orders_at(api, n, Utc::now())
    }

    /// Places `n` new orders at `at` (a busy moment in the shop's past, say); returns their external ids.
    pub fn add_orders_at(&self, api: Api, n: usize, at: DateTime<Utc>) -> Vec<String> {
        self.shared
            .with_store(api, |store, generator| store.add_orders(generator, n, at))
    }

    /// Moves `n` non-final orders one status forward (their change time is now); returns their ids.
    pub fn change_orders(&self, api: Api, n: usize) -> Vec<String> {
        self.shared.with_store(api, |store, generator| {
            store.change_orders(generator, n, Utc::now())
        })
    }

    /// Moves one order one status forward; false when it is unknown or already final.
    pub fn change_order(&self, api: Api, external_id: &str) -> bool {
        self.shared.with_store(api, |store, generator| {
            store.change_order(generator, external_id, Utc::now())
        })
    }

    /// Changes one of this order's items without touching the order's own record (i1, whose items
    /// are a resource of their own); false when it is unknown or `api` keeps items in the order.
    pub fn change_item(&self, api: Api, external_id: &str) -> bool {
        self.shared
            .with_store(api, |store, _| store.change_item(external_id, Utc::now()))
    }

    /// After `after_list_requests` more successful read requests to `api` have been answered, change `n`
    /// orders, as if the shop worked while a client was paging. A read is a call that reached the handler,
    /// got a 2xx status and changed nothing; the change happens before that read's response is sent, so the
    /// client's next request already sees it. `after_list_requests == 0` changes the orders now.
    pub fn change_while_paging(&self, api: Api, after_list_requests: usize, n: usize) {
        if after_list_requests == 0 {
            self.change_orders(api, n);
            return;
        }
        lock(&self.shared.paging)
            .entry(api)
            .or_default()
            .push(PagingTrigger {
                remaining_reads: after_list_requests,
                orders: n,
            });
    }

    /// A snapshot of `api`'s orders.
    pub fn orders(&self, api: Api) -> Vec<SandboxOrder> {
        self.shared.with_store(api, |store, _| store.snapshot())
    }

    /// Stops accepting connections, lets in-flight requests finish and waits for the server to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.server).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(error = %error, "sandbox server ended with an error"),
            Err(error) => tracing::warn!(error = %error, "sandbox server task failed"),
        }
    }
}

/// Request bodies above this size are refused: no client of these APIs sends anything near it.
const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// The per-API middleware: fault injection, change-while-paging triggers and the audit entry.
async fn per_api(
    State((shared, api)): State<(Arc<Shared>, Api)>,
    request: Request,
    next: Next,
) -> Response {
    let at = Utc::now();
    let (parts, body) = request.into_parts();
    let method = parts.method.to_string();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(str::to_owned);
    let (response, body, fault, served) = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Err(_) => (
            plain(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large"),
            None,
            None,
            false,
        ),
        Ok(bytes) => {
            let text = (!bytes.is_empty()).then(|| String::from_utf8_lossy(&bytes).into_owned());
            let request = Request::from_parts(parts, Body::from(bytes));
            let fault = shared.next_fault(api);
            let (response, served) =
                match fault.as_ref().and_then(|f| fault_response(&shared, api, f)) {
                    Some(response) => (response, false),
                    None => {
                        if let Some(Fault::Slow(delay)) = &fault {
                            tokio::time::sleep(*delay).await;
                        }
                        let response = next.run(request).await;
                        if fault == Some(Fault::Truncated) {
                            (truncated(response).await, true)
                        } else {
                            (response, true)
                        }
                    }
                };
            (response, text, fault, served)
        }
    };
    let operation = response
        .extensions()
        .get::<Operation>()
        .map_or_else(|| format!("{method} {path}"), |op| op.0.to_string());
    let effect = response.extensions().get::<Effect>().map(|e| e.0.clone());
    let status = response.status();
    if served && effect.is_none() && status.is_success() {
        shared.count_read(api);
    }
    shared.audit.record(AuditEntry {
        api,
        method,
        path,
        query,
        operation,
        status: status.as_u16(),
        fault,
        effect,
        body,
        at,
    });
    response
}

fn plain(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// The response standing in for the handler's under an injected fault; `None` for the faults that let the
/// handler run ([`Fault::Slow`], [`Fault::Truncated`]).
fn fault_response(shared: &Shared, api: Api, fault: &Fault) -> Option<Response> {
    let response = match fault {
        Fault::ServerError => {
            if lock(&shared.generator).chance(0.5) {
                plain(StatusCode::SERVICE_UNAVAILABLE, "Service Temporarily Unavailable")
            } else {
                plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
            }
        }
        Fault::RateLimited { retry_after_secs } => {
            let mut response = plain(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            response
        }
        Fault::Malformed => {
            let (content_type, body) = api.malformed_body();
            (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Fault::WrongContentType => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>\
             <body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>",
        )
            .into_response(),
        Fault::Slow(_) | Fault::Truncated => return None,
    };
    Some(response)
}

/// The handler's response with only the first half of its body.
async fn truncated(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes.slice(..bytes.len() / 2)))
}

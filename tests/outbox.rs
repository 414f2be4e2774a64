//! The outbox's guarantees, against a real PostgreSQL: the worker's mechanics with an in-memory marketplace
//! whose failures are scripted (ordering, leases and fencing, retry, read-back, validation of SQL rows, no
//! secrets); the real adapters against the HTTP sandbox (every kind of allesgo, c2c, i1 and labs once in
//! effect and read back, injected 5xx, each API's permanent refusal with its message); the `[outbox]`
//! configuration; and the running daemon pushing a transition queued with `ordersync outbox add`.
//!
//! Tests never sleep to wait for work: they drive the worker with `run_once`, or wait on a notification.
//! Where time must pass (a backoff, a lease expiry) the test moves the row's clock in SQL instead.

mod common;

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ordersync::domain::{MarketplaceKind, Order, OrderState, RawStatus};
use ordersync::marketplace::{
    AppliedTransition, Marketplace, MarketplaceError, Page, PageRequest, StreamSpec, Transition,
    TransitionRefusal,
};
use ordersync::outbox::worker::WorkerAccount;
use ordersync::outbox::{
    self, EnqueueRequest, Enqueued, OutboxError, OutboxSettings, OutboxWorker, Outcome,
};
use ordersync::store::accounts;
use ordersync::store::outbox::{self as store_outbox, OperatorAction, Resolution};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "fake-secret-token-0123";

/// What the fake does on the next send.
#[derive(Debug, Clone, PartialEq)]
enum Script {
    Transient {
        retry_after: Option<Duration>,
    },
    Reject(&'static str),
    /// Times out after sending: applied or not.
    Ambiguous {
        applied: bool,
    },
    /// Applies the transition, then never answers (the worker is killed while waiting).
    ApplyAndHang,
    /// Answers with a body that cannot be read: applied or not.
    Malformed {
        applied: bool,
    },
}

#[derive(Default)]
struct FakeState {
    /// Per order, the idempotency keys applied, in order.
    applied: HashMap<String, Vec<String>>,
    script: VecDeque<Script>,
    sends: usize,
    in_flight_keys: HashMap<String, usize>,
    in_flight_orders: HashMap<String, usize>,
    /// The most sends of one transition, of one order, and of any, in flight at once.
    max_same_key: usize,
    max_same_order: usize,
    in_flight: usize,
    max_in_flight: usize,
    cancelled_orders: Vec<String>,
    /// Orders the fake cannot read back (`fetch_order` answers `None`).
    unreadable: Vec<String>,
    /// Orders whose read fails (`fetch_order` answers a transient error).
    read_failing: Vec<String>,
    /// How long each send takes.
    send_time: Duration,
}

/// An in-memory marketplace with one kind, `step` (argument `n`, digits), read-back and scripted failures.
#[derive(Default)]
struct Fake {
    state: Mutex<FakeState>,
    /// Raised when a send has been applied and hangs.
    applied_signal: Notify,
    /// Raised on every read of an order (a worker reads the order after each success).
    read_signal: Notify,
    /// Raised when a send has been answered.
    answered_signal: Notify,
}

impl Fake {
    fn script(&self, steps: impl IntoIterator<Item = Script>) {
        self.state.lock().unwrap().script.extend(steps);
    }
    fn applied(&self, order: &str) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .applied
            .get(order)
            .cloned()
            .unwrap_or_default()
    }
    fn sends(&self) -> usize {
        self.state.lock().unwrap().sends
    }
    fn order(&self, external_id: &str) -> Order {
        let state = self.state.lock().unwrap();
        let keys = state.applied.get(external_id).cloned().unwrap_or_default();
        Order {
            external_id: external_id.to_owned(),
            order_number: None,
            state: if state.cancelled_orders.iter().any(|o| o == external_id) {
                OrderState::Cancelled
            } else {
                OrderState::Approved
            },
            status: RawStatus {
                code: Some(keys.len().to_string()),
                text: None,
            },
            total_amount: None,
            shipping_amount: None,
            currency: None,
            customer_name: None,
            customer_email: None,
            shipping_city: None,
            placed_at: None,
            source_updated_at: None,
            lines: Vec::new(),
            packages: Vec::new(),
            raw: serde_json::json!({ "applied": keys }).into(),
        }
    }
}

#[async_trait]
impl Marketplace for Fake {
    fn streams(&self) -> Vec<StreamSpec> {
        Vec::new()
    }

    async fn fetch_page(&self, _: &str, _: &PageRequest) -> Result<Page, MarketplaceError> {
        Ok(Page {
            orders: Vec::new(),
            next: None,
            requests: 0,
            more: None,
        })
    }

    fn validate_transition(
        &self,
        transition: &Transition,
        current: Option<&Order>,
    ) -> Result<(), TransitionRefusal> {
        if transition.kind != "step" {
            return Err(TransitionRefusal(format!(
                "the fake has no transition `{}` (it knows: step)",
                transition.kind
            )));
        }
        match transition.args.get("n").and_then(|n| n.as_str()) {
            Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {}
            _ => {
                return Err(TransitionRefusal(
                    "`step` needs the argument `n` (digits)".into(),
                ));
            }
        }
        if current.is_some_and(|o| o.state == OrderState::Cancelled) {
            return Err(TransitionRefusal(format!(
                "order `{}` is cancelled",
                transition.order_external_id
            )));
        }
        Ok(())
    }

    async fn apply_transition(
        &self,
        transition: &Transition,
    ) -> Result<AppliedTransition, MarketplaceError> {
        let key = transition.idempotency_key.clone();
        let order = transition.order_external_id.clone();
        let script = {
            let mut s = self.state.lock().unwrap();
            s.sends += 1;
            let same_key = {
                let n = s.in_flight_keys.entry(key.clone()).or_default();
                *n += 1;
                *n
            };
            let same_order = {
                let n = s.in_flight_orders.entry(order.clone()).or_default();
                *n += 1;
                *n
            };
            s.max_same_key = s.max_same_key.max(same_key);
            s.max_same_order = s.max_same_order.max(same_order);
            s.in_flight += 1;
            s.max_in_flight = s.max_in_flight.max(s.in_flight);
            s.script.pop_front()
        };
        // Let other workers run while this send is "on the wire".
        tokio::task::yield_now().await;
        let send_time = self.state.lock().unwrap().send_time;
        tokio::time::sleep(send_time).await;
        let apply = |fake: &Fake| {
            let mut s = fake.state.lock().unwrap();
            s.applied
                .entry(order.clone())
                .or_default()
                .push(key.clone());
        };
        let done = |fake: &Fake| {
            let mut s = fake.state.lock().unwrap();
            *s.in_flight_keys.get_mut(&key).unwrap() -= 1;
            *s.in_flight_orders.get_mut(&order).unwrap() -= 1;
            s.in_flight -= 1;
        };
        let what = format!("POST /step/{order}?token={SECRET}");
        let result = match script {
            None => {
                apply(self);
                Ok(AppliedTransition {
                    request_summary: what,
                    http_status: 200,
                    response_excerpt: format!("{{\"ok\":true,\"echo\":\"{SECRET}\"}}"),
                })
            }
            Some(Script::Transient { retry_after }) => Err(MarketplaceError::Transient {
                what,
                detail: "HTTP 503: Service Unavailable".into(),
                retry_after,
                ambiguous: false,
            }),
            Some(Script::Reject(message)) => Err(MarketplaceError::Rejected {
                what,
                status: Some(400),
                message: format!("{message} (token {SECRET})"),
            }),
            Some(Script::Ambiguous { applied }) => {
                if applied {
                    apply(self);
                }
                Err(MarketplaceError::Transient {
                    what,
                    detail: "timed out: operation timed out".into(),
                    retry_after: None,
                    ambiguous: true,
                })
            }
            Some(Script::Malformed { applied }) => {
                if applied {
                    apply(self);
                }
                Err(MarketplaceError::Malformed {
                    what,
                    reason: "expected JSON".into(),
                    raw_body: format!("<html>proxy error for {SECRET}</html>"),
                })
            }
            Some(Script::ApplyAndHang) => {
                apply(self);
                self.applied_signal.notify_one();
                std::future::pending::<()>().await;
                unreachable!("a pending future never completes")
            }
        };
        done(self);
        self.answered_signal.notify_one();
        result
    }

    async fn fetch_order(&self, external_id: &str) -> Result<Option<Order>, MarketplaceError> {
        self.read_signal.notify_one();
        let state = self.state.lock().unwrap();
        if state.read_failing.iter().any(|o| o == external_id) {
            return Err(MarketplaceError::Transient {
                what: format!("read {external_id}"),
                detail: "unavailable".into(),
                retry_after: None,
                ambiguous: false,
            });
        }
        let unreadable = state.unreadable.iter().any(|o| o == external_id);
        drop(state);
        Ok((!unreadable).then(|| self.order(external_id)))
    }

    fn transition_took_effect(&self, transition: &Transition, order: &Order) -> bool {
        order.raw.value()["applied"]
            .as_array()
            .is_some_and(|keys| keys.iter().any(|k| k == &transition.idempotency_key))
    }
}

struct Setup {
    db: common::TestDb,
    account_id: i64,
    fake: Arc<Fake>,
}

async fn setup() -> Setup {
    let db = common::test_db().await;
    let ids = accounts::sync_with_config(
        &db.pool,
        &[common::account(
            "shop",
            MarketplaceKind::Labs,
            "http://127.0.0.1:1/v1",
        )],
    )
    .await
    .unwrap();
    Setup {
        db,
        account_id: ids["shop"],
        fake: Arc::new(Fake::default()),
    }
}

fn fast() -> OutboxSettings {
    OutboxSettings {
        min_backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
        ..OutboxSettings::default()
    }
}

/// A worker of [`Setup`]'s account running with a listener of notifications, its polling an hour away:
/// within a test only a notification, or its own work, wakes it.
struct Woken {
    shutdown: CancellationToken,
    running: tokio::task::JoinHandle<()>,
    listener: tokio::task::JoinHandle<()>,
}

impl Woken {
    /// Stops the worker (claimed work finishes) and its listener.
    async fn stop(self) {
        self.shutdown.cancel();
        self.running.await.unwrap();
        self.listener.await.unwrap();
    }
}

impl Setup {
    fn run_woken_by_notifications(&self) -> Woken {
        let worker = Arc::new(self.worker(
            "w",
            OutboxSettings {
                poll_interval: Duration::from_secs(3600),
                ..fast()
            },
        ));
        let wake = Arc::new(Notify::new());
        let shutdown = CancellationToken::new();
        let listener = tokio::spawn(ordersync::outbox::worker::listen(
            self.db.pool.clone(),
            HashMap::from([(self.account_id, wake.clone())]),
            shutdown.clone(),
        ));
        let running = tokio::spawn(worker.run(wake, shutdown.clone()));
        Woken {
            shutdown,
            running,
            listener,
        }
    }

    fn worker(&self, owner: &str, settings: OutboxSettings) -> OutboxWorker {
        OutboxWorker::new(
            self.db.pool.clone(),
            WorkerAccount {
                account_id: self.account_id,
                name: "shop".into(),
                kind: MarketplaceKind::Labs,
                marketplace: self.fake.clone(),
                secrets: vec![SECRET.to_owned()],
            },
            owner.to_owned(),
            settings,
            None,
        )
    }

    async fn enqueue(
        &self,
        order: &str,
        n: u32,
        max_attempts: i32,
    ) -> Result<Enqueued, OutboxError> {
        let mut args = serde_json::Map::new();
        args.insert("n".into(), serde_json::json!(n.to_string()));
        outbox::enqueue(
            &self.db.pool,
            self.fake.as_ref(),
            &EnqueueRequest {
                account_id: self.account_id,
                transition: Transition {
                    order_external_id: order.into(),
                    kind: "step".into(),
                    args,
                    idempotency_key: format!("{order}-{n}"),
                },
                max_attempts,
                queued_by: "test".into(),
            },
        )
        .await
    }
}

impl Setup {
    /// Starts the running worker `owner` with `concurrency` slots and waits until the fake has answered
    /// `sends` sends; `stopped` is the failure when it stops short. Returns its shutdown and its task.
    async fn run_until_sent(
        &self,
        owner: &str,
        concurrency: usize,
        sends: usize,
        stopped: &str,
    ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let settings = OutboxSettings {
            concurrency,
            ..fast()
        };
        self.run_with_until_sent(owner, settings, sends, stopped)
            .await
    }

    /// [`Setup::run_until_sent`] with any settings.
    async fn run_with_until_sent(
        &self,
        owner: &str,
        settings: OutboxSettings,
        sends: usize,
        stopped: &str,
    ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let worker = Arc::new(self.worker(owner, settings));
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(worker.run(Arc::new(Notify::new()), shutdown.clone()));
        // Each answered send raises the signal; the timeout only keeps a broken worker from hanging the
        // test.
        while self.fake.sends() < sends {
            tokio::time::timeout(
                Duration::from_secs(30),
                self.fake.answered_signal.notified(),
            )
            .await
            .expect(stopped);
        }
        (shutdown, running)
    }
}

impl Setup {
    /// Starts recording `batch` as successes beside the open transaction `under_way`, and returns once
    /// that recording waits for it.
    async fn record_beside(
        &self,
        under_way: &mut sqlx::PgConnection,
        batch: &[store_outbox::Sent],
    ) -> tokio::task::JoinHandle<HashMap<i64, Option<bool>>> {
        let holder: i32 = sqlx::query_scalar("select pg_backend_pid()")
            .fetch_one(&mut *under_way)
            .await
            .unwrap();
        let pool = self.db.pool.clone();
        let batch = batch.to_vec();
        let recording =
            tokio::spawn(
                async move { store_outbox::succeed_all(&pool, "w", &batch).await.unwrap() },
            );
        let waiting = async {
            loop {
                let waits: bool = sqlx::query_scalar(
                    "select exists (select 1 from pg_stat_activity where $1 = any(pg_blocking_pids(pid)))",
                )
                .bind(holder)
                .fetch_one(&self.db.pool)
                .await
                .unwrap();
                if waits {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .expect("the second recording never waited for the first");
        recording
    }
}

async fn row(pool: &PgPool, id: i64) -> store_outbox::OutboxRow {
    store_outbox::get(pool, id).await.unwrap().unwrap()
}

/// Time passes for the outbox: every scheduled attempt and every lease falls due now.
async fn make_due(pool: &PgPool) {
    sqlx::query(
        "update outbox set
            next_attempt_at = case when next_attempt_at is not null then now() - interval '1 second' end,
            lease_expires_at = case when lease_expires_at is not null then now() - interval '1 second' end",
    )
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn transitions_run_in_order_per_order_and_once_with_many_workers() {
    let s = setup().await;
    let orders: Vec<String> = (0..12).map(|i| format!("O{i}")).collect();
    for n in 0..5 {
        for order in &orders {
            s.enqueue(order, n, 10).await.unwrap();
        }
    }
    // Every fourth send fails transiently: retries must not break the order.
    s.fake
        .script((0..15).map(|_| Script::Transient { retry_after: None }));
    let mut tasks = Vec::new();
    for w in 0..4 {
        let worker = s.worker(&format!("worker-{w}"), fast());
        let pool = s.db.pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut handled = 0;
            loop {
                match worker.run_once().await.unwrap() {
                    Some(_) => handled += 1,
                    None => {
                        let open: i64 = sqlx::query_scalar(
                            "select count(*) from outbox where state not in ('succeeded')",
                        )
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                        if open == 0 {
                            return handled;
                        }
                        tokio::task::yield_now().await;
                    }
                }
            }
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    assert_eq!(
        total,
        60 + 15,
        "each transition once, plus one claim per injected failure"
    );
    for order in &orders {
        let expected: Vec<String> = (0..5).map(|n| format!("{order}-{n}")).collect();
        assert_eq!(s.fake.applied(order), expected, "order {order}");
    }
    let state = s.fake.state.lock().unwrap();
    assert_eq!(state.max_same_key, 1, "a transition was sent twice at once");
    assert_eq!(
        state.max_same_order, 1,
        "two transitions of one order were in flight at once"
    );
}

#[tokio::test]
async fn the_running_worker_records_successes_in_groups_and_sends_within_its_concurrency() {
    let s = setup().await;
    let orders: Vec<String> = (0..40).map(|i| format!("O{i}")).collect();
    for n in 0..3 {
        for order in &orders {
            s.enqueue(order, n, 10).await.unwrap();
        }
    }
    let (shutdown, running) = s
        .run_until_sent("w", 2, 120, "the worker stopped sending")
        .await;
    // Shutdown lets the transitions in flight finish: their successes are recorded.
    shutdown.cancel();
    running.await.unwrap();

    let (succeeded, commits, attempts): (i64, i64, i64) = sqlx::query_as(
        "select count(*), count(distinct xmin::text),
            (select count(*) from outbox_attempts where action = 'send' and outcome = 'succeeded')
         from outbox where state = 'succeeded'",
    )
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(succeeded, 120);
    assert_eq!(attempts, 120, "one attempt row per transition");
    assert!(
        commits < succeeded,
        "successes were recorded one commit each ({commits} commits)"
    );
    for order in &orders {
        let expected: Vec<String> = (0..3).map(|n| format!("{order}-{n}")).collect();
        assert_eq!(s.fake.applied(order), expected, "order {order}");
    }
    let state = s.fake.state.lock().unwrap();
    assert_eq!(state.sends, 120, "a transition was sent twice");
    assert!(
        state.max_in_flight <= 2,
        "{} sends at once with a concurrency of 2",
        state.max_in_flight
    );
    assert_eq!(
        state.max_same_order, 1,
        "two transitions of one order were in flight at once"
    );
}

#[tokio::test]
async fn an_order_that_cannot_be_read_back_after_its_success_asks_for_a_poll() {
    let s = setup().await;
    s.fake
        .state
        .lock()
        .unwrap()
        .unreadable
        .push("HIDDEN".into());
    let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = polls.clone();
    let worker = OutboxWorker::new(
        s.db.pool.clone(),
        WorkerAccount {
            account_id: s.account_id,
            name: "shop".into(),
            kind: MarketplaceKind::Labs,
            marketplace: s.fake.clone(),
            secrets: vec![SECRET.to_owned()],
        },
        "w".into(),
        fast(),
        Some(Arc::new(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        })),
    );
    let stored = |order: &'static str| {
        sqlx::query_scalar::<_, bool>(
            "select exists (select 1 from orders where account_id = $1 and external_id = $2)",
        )
        .bind(s.account_id)
        .bind(order)
        .fetch_one(&s.db.pool)
    };

    s.enqueue("SHOWN", 0, 10).await.unwrap();
    let outcome = worker.run_once().await.unwrap();
    assert!(
        matches!(outcome, Some(Outcome::Succeeded { .. })),
        "{outcome:?}"
    );
    assert!(
        stored("SHOWN").await.unwrap(),
        "the order read back is stored"
    );
    assert_eq!(polls.load(std::sync::atomic::Ordering::SeqCst), 0);

    s.enqueue("HIDDEN", 0, 10).await.unwrap();
    let outcome = worker.run_once().await.unwrap();
    assert!(
        matches!(outcome, Some(Outcome::Succeeded { .. })),
        "{outcome:?}"
    );
    assert!(!stored("HIDDEN").await.unwrap());
    assert_eq!(
        polls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "an order the marketplace cannot read back is left to a poll"
    );

    s.fake
        .state
        .lock()
        .unwrap()
        .read_failing
        .push("BROKEN".into());
    s.enqueue("BROKEN", 0, 10).await.unwrap();
    let outcome = worker.run_once().await.unwrap();
    assert!(
        matches!(outcome, Some(Outcome::Succeeded { .. })),
        "{outcome:?}"
    );
    assert_eq!(
        polls.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "an order whose read back failed is left to a poll too"
    );
}

#[tokio::test]
async fn sends_go_on_while_earlier_successes_wait_to_be_recorded() {
    let s = setup().await;
    // 60 orders of one transition each: nothing waits for an earlier transition of its order.
    for i in 0..60 {
        s.enqueue(&format!("O{i}"), 0, 10).await.unwrap();
    }
    // Recording a success waits for an advisory lock the test holds: every outcome stays uncommitted.
    sqlx::raw_sql(
        "create function hold_attempts() returns trigger language plpgsql as $$
         begin perform pg_advisory_xact_lock_shared(4242); return new; end $$;
         create trigger hold_attempts before insert on outbox_attempts
             for each row execute function hold_attempts();",
    )
    .execute(&s.db.pool)
    .await
    .unwrap();
    let mut holder = s.db.pool.acquire().await.unwrap();
    sqlx::query("select pg_advisory_lock(4242)")
        .execute(&mut *holder)
        .await
        .unwrap();

    // One slot: the worker keeps 16 claims waiting for it at first.
    let stopped = "the sends stopped while the successes waited to be recorded";
    let (shutdown, running) = s.run_until_sent("w", 1, 60, stopped).await;
    let recorded: i64 = sqlx::query_scalar("select count(*) from outbox where state = 'succeeded'")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(
        recorded, 0,
        "a success was recorded while the lock was held"
    );

    sqlx::query("select pg_advisory_unlock(4242)")
        .execute(&mut *holder)
        .await
        .unwrap();
    drop(holder);
    shutdown.cancel();
    running.await.unwrap();
    let (succeeded, attempts): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where state = 'succeeded'),
            (select count(*) from outbox_attempts where action = 'send' and outcome = 'succeeded')
         from outbox",
    )
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(
        succeeded, 60,
        "every success recorded once the lock was released"
    );
    assert_eq!(attempts, 60, "one attempt row per transition");
    assert_eq!(s.fake.sends(), 60, "a transition was sent twice");
}

#[tokio::test]
async fn claims_waiting_for_a_slow_marketplace_keep_their_leases() {
    let s = setup().await;
    // 20 sends of 100 ms each, one at a time, with a lease of 1 s: the claims waiting longest would
    // outlive their lease.
    s.fake.state.lock().unwrap().send_time = Duration::from_millis(100);
    for n in 0..20 {
        s.enqueue(&format!("O{n}"), 1, 10).await.unwrap();
    }
    let settings = OutboxSettings {
        concurrency: 1,
        lease_ttl: Duration::from_secs(1),
        ..fast()
    };
    let (shutdown, running) = s
        .run_with_until_sent("w", settings, 20, "the worker stopped sending")
        .await;
    shutdown.cancel();
    running.await.unwrap();

    let (succeeded, read_backs): (i64, i64) = sqlx::query_as(
        "select (select count(*) from outbox where state = 'succeeded'),
            (select count(*) from outbox_attempts where action = 'read_back')",
    )
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(succeeded, 20);
    assert_eq!(
        read_backs, 0,
        "claims expired while they waited and were taken again"
    );
    assert_eq!(s.fake.sends(), 20);
}

#[tokio::test]
async fn claims_not_yet_sent_are_given_back_unspent_at_shutdown() {
    let s = setup().await;
    let mut ids = Vec::new();
    for order in ["A", "B", "C", "D", "E", "F"] {
        ids.push(s.enqueue(order, 1, 10).await.unwrap().id);
    }
    // The first send takes effect and never answers; the other claims wait for the only slot.
    s.fake.script([Script::ApplyAndHang]);
    let worker = Arc::new(s.worker(
        "w",
        OutboxSettings {
            concurrency: 1,
            shutdown_grace: Duration::from_millis(100),
            ..fast()
        },
    ));
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(Arc::new(Notify::new()), shutdown.clone()));
    tokio::time::timeout(Duration::from_secs(30), s.fake.applied_signal.notified())
        .await
        .expect("the worker sent nothing");
    let claimed: i64 = sqlx::query_scalar("select count(*) from outbox where state = 'running'")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(claimed, 6, "the worker claims ahead of its slots");
    shutdown.cancel();
    running.await.unwrap();

    assert_eq!(s.fake.sends(), 1, "nothing is sent once shutdown began");
    let mut hung = None;
    for &id in &ids {
        if row(&s.db.pool, id).await.state == "unknown" {
            assert!(hung.is_none(), "one send was in flight");
            hung = Some(id);
        }
    }
    // The send in flight at the deadline is to be read back.
    let hung = hung.expect("the hung send's claim was released as unknown");
    for &id in ids.iter().filter(|&&id| id != hung) {
        let r = row(&s.db.pool, id).await;
        assert_eq!(
            (r.state.as_str(), r.attempts, r.lease_owner.is_none()),
            ("pending", 0, true),
            "transition {id} given back as it was"
        );
        assert!(r.next_attempt_at.is_some_and(|at| at <= chrono::Utc::now()));
    }

    // A fresh worker reads the hung one back (it took effect) and sends the others once each.
    let worker = s.worker("w2", fast());
    let mut outcomes = Vec::new();
    while let Some(outcome) = worker.run_once().await.unwrap() {
        outcomes.push(outcome);
    }
    assert!(outcomes.contains(&Outcome::Confirmed { id: hung }));
    assert_eq!(s.fake.sends(), 6);
    for order in ["A", "B", "C", "D", "E", "F"] {
        assert_eq!(s.fake.applied(order), vec![format!("{order}-1")]);
    }
}

#[tokio::test]
async fn transient_failures_back_off_honour_retry_after_and_end_dead() {
    let s = setup().await;
    let worker = s.worker("w", OutboxSettings::default());
    let id = s.enqueue("A", 1, 3).await.unwrap().id;
    s.fake.script([
        Script::Transient { retry_after: None },
        Script::Transient {
            retry_after: Some(Duration::from_secs(600)),
        },
        Script::Transient { retry_after: None },
    ]);

    let Some(Outcome::Retrying { delay, .. }) = worker.run_once().await.unwrap() else {
        panic!("expected a retry");
    };
    assert!(
        delay >= Duration::from_secs(5) && delay <= Duration::from_secs(10),
        "{delay:?}"
    );
    let r = row(&s.db.pool, id).await;
    assert_eq!(r.state, "pending");
    let wait = r.next_attempt_at.unwrap() - chrono::Utc::now();
    assert!(
        wait > chrono::TimeDelta::seconds(4),
        "the schedule is persisted: {wait}"
    );
    assert_eq!(worker.run_once().await.unwrap(), None, "not due yet");

    make_due(&s.db.pool).await;
    let Some(Outcome::Retrying { delay, .. }) = worker.run_once().await.unwrap() else {
        panic!("expected a retry");
    };
    assert!(
        delay >= Duration::from_secs(600),
        "Retry-After honoured: {delay:?}"
    );

    make_due(&s.db.pool).await;
    let Some(Outcome::Dead { error, .. }) = worker.run_once().await.unwrap() else {
        panic!("expected dead");
    };
    assert!(error.contains("gave up after 3 attempts"), "{error}");
    let r = row(&s.db.pool, id).await;
    assert_eq!((r.state.as_str(), r.attempts), ("dead", 3));
    assert!(r.finished_at.is_some());
    assert_eq!(s.fake.sends(), 3);
    let dead: i64 = sqlx::query_scalar("select count(*) from outbox_dead")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(dead, 1);

    // An operator retries: a fresh budget, sent now.
    assert_eq!(
        store_outbox::retry(&s.db.pool, id).await.unwrap(),
        OperatorAction::Done
    );
    assert_eq!(
        worker.run_once().await.unwrap(),
        Some(Outcome::Succeeded { id })
    );
    assert_eq!(s.fake.applied("A"), vec!["A-1"]);
    let attempts = store_outbox::attempts(&s.db.pool, id).await.unwrap();
    assert_eq!(attempts.len(), 4);
    assert_eq!(attempts[0].http_status, Some(503));
    assert_eq!(attempts[3].outcome, "succeeded");
}

#[tokio::test]
async fn a_refusal_fails_with_the_api_message_blocks_the_order_until_cancelled() {
    let s = setup().await;
    let worker = s.worker("w", fast());
    let first = s.enqueue("A", 1, 10).await.unwrap().id;
    let second = s.enqueue("A", 2, 10).await.unwrap().id;
    let other = s.enqueue("B", 1, 10).await.unwrap().id;
    s.fake
        .script([Script::Reject("package 77 is already shipped")]);

    let Some(Outcome::Failed { id, error }) = worker.run_once().await.unwrap() else {
        panic!("expected a failure");
    };
    assert_eq!(id, first);
    assert!(error.contains("package 77 is already shipped"), "{error}");
    let r = row(&s.db.pool, first).await;
    assert_eq!(r.state, "failed");
    assert!(
        r.last_error
            .unwrap()
            .contains("package 77 is already shipped")
    );

    // The other order proceeds; the blocked one does not, and nothing is retried.
    assert_eq!(
        worker.run_once().await.unwrap(),
        Some(Outcome::Succeeded { id: other })
    );
    assert_eq!(worker.run_once().await.unwrap(), None);
    assert_eq!(s.fake.sends(), 2);
    let blocked: (String, i64, i64) =
        sqlx::query_as("select order_external_id, blocking_id, waiting from outbox_blocked_orders")
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    assert_eq!(blocked, ("A".to_owned(), first, 1));

    // Cancel what cannot be cancelled, then what can.
    assert_eq!(
        store_outbox::cancel(&s.db.pool, other).await.unwrap(),
        OperatorAction::NotAllowed {
            state: "succeeded".into()
        }
    );
    assert_eq!(
        store_outbox::cancel(&s.db.pool, 9999).await.unwrap(),
        OperatorAction::NotFound
    );
    assert_eq!(
        store_outbox::cancel(&s.db.pool, first).await.unwrap(),
        OperatorAction::Done
    );
    assert_eq!(
        worker.run_once().await.unwrap(),
        Some(Outcome::Succeeded { id: second })
    );
    assert_eq!(s.fake.applied("A"), vec!["A-2"]);
}

#[tokio::test]
async fn a_success_whose_re_read_was_left_to_a_later_transition_is_read_when_that_one_fails() {
    let s = setup().await;
    let worker = s.worker("w", fast());
    let stored_status = async || -> Option<String> {
        sqlx::query_scalar("select status_code from orders where external_id = 'A'")
            .fetch_optional(&s.db.pool)
            .await
            .unwrap()
    };
    let first = s.enqueue("A", 1, 10).await.unwrap().id;
    let second = s.enqueue("A", 2, 10).await.unwrap().id;
    assert_eq!(
        worker.run_once().await.unwrap(),
        Some(Outcome::Succeeded { id: first })
    );
    assert_eq!(stored_status().await, None, "the next transition re-reads");

    s.fake
        .script([Script::Reject("package 77 is already shipped")]);
    assert!(matches!(
        worker.run_once().await.unwrap(),
        Some(Outcome::Failed { id, .. }) if id == second
    ));
    assert_eq!(
        stored_status().await.as_deref(),
        Some("1"),
        "the order as the first transition left it"
    );

    // A failure with no success before it reads nothing (a read would store the order).
    let other = s.enqueue("B", 1, 10).await.unwrap().id;
    s.fake.script([Script::Reject("no such package")]);
    assert!(matches!(
        worker.run_once().await.unwrap(),
        Some(Outcome::Failed { id, .. }) if id == other
    ));
    let stored: i64 = sqlx::query_scalar("select count(*) from orders where external_id = 'B'")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn an_ambiguous_send_is_read_back_instead_of_sent_blindly() {
    let s = setup().await;
    let worker = s.worker("w", fast());
    let took = s.enqueue("A", 1, 10).await.unwrap().id;
    let lost = s.enqueue("B", 1, 10).await.unwrap().id;
    s.fake.script([
        Script::Ambiguous { applied: true },
        Script::Ambiguous { applied: false },
    ]);

    assert_eq!(
        worker.run_once().await.unwrap(),
        Some(Outcome::Confirmed { id: took })
    );
    assert_eq!(s.fake.applied("A"), vec!["A-1"], "not sent twice");
    assert_eq!(
        attempts_of(&s.db.pool, took).await,
        ["send:ambiguous", "read_back:took_effect"]
    );

    assert!(matches!(
        worker.run_once().await.unwrap(),
        Some(Outcome::Retrying { id, .. }) if id == lost
    ));
    assert_eq!(
        worker.run_once().await.unwrap(),
        Some(Outcome::Succeeded { id: lost })
    );
    assert_eq!(s.fake.applied("B"), vec!["B-1"]);
}

/// An answer to a send that cannot be read is ambiguous (read back before any resend), and its body is
/// recorded with the attempt (redacted), not only the error's description.
#[tokio::test]
async fn an_unreadable_answer_to_a_send_is_recorded_with_its_body() {
    let s = setup().await;
    let worker = s.worker("w", fast());
    let id = s.enqueue("A", 1, 10).await.unwrap().id;
    s.fake.script([Script::Malformed { applied: true }]);
    assert_eq!(
        worker.run_once().await.unwrap(),
        Some(Outcome::Confirmed { id })
    );
    let attempts = store_outbox::attempts(&s.db.pool, id).await.unwrap();
    assert_eq!(
        (attempts[0].action.as_str(), attempts[0].outcome.as_str()),
        ("send", "ambiguous")
    );
    assert_eq!(
        attempts[0].response_excerpt.as_deref(),
        Some("<html>proxy error for ***</html>")
    );
    assert_eq!(s.fake.applied("A"), vec!["A-1"], "not sent twice");
}

#[tokio::test]
async fn a_worker_killed_mid_flight_is_taken_over_after_its_lease_and_applied_once() {
    let s = setup().await;
    let id = s.enqueue("A", 1, 10).await.unwrap().id;
    s.fake.script([Script::ApplyAndHang]);
    let doomed = s.worker("doomed", fast());
    let task = tokio::spawn(async move { doomed.run_once().await });
    s.fake.applied_signal.notified().await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());

    let rescuer = s.worker("rescuer", fast());
    assert_eq!(
        rescuer.run_once().await.unwrap(),
        None,
        "the lease still holds"
    );
    let r = row(&s.db.pool, id).await;
    assert_eq!(
        (r.state.as_str(), r.lease_owner.as_deref()),
        ("running", Some("doomed"))
    );

    make_due(&s.db.pool).await;
    assert_eq!(
        rescuer.run_once().await.unwrap(),
        Some(Outcome::Confirmed { id })
    );
    assert_eq!(s.fake.applied("A"), vec!["A-1"], "applied once in effect");
    assert_eq!(s.fake.sends(), 1);
    assert_eq!(row(&s.db.pool, id).await.fence, 2);
}

#[tokio::test]
async fn completion_is_fenced_against_a_late_worker() {
    let s = setup().await;
    let id = s.enqueue("A", 1, 10).await.unwrap().id;
    let ttl = Duration::from_secs(60);
    let late = store_outbox::claim(&s.db.pool, s.account_id, "late", ttl, 10)
        .await
        .unwrap()
        .transitions;
    assert_eq!(late.len(), 1);
    assert!(
        store_outbox::claim(&s.db.pool, s.account_id, "other", ttl, 10)
            .await
            .unwrap()
            .transitions
            .is_empty(),
        "a held claim is not handed out twice"
    );
    make_due(&s.db.pool).await;
    let fresh = store_outbox::claim(&s.db.pool, s.account_id, "fresh", ttl, 10)
        .await
        .unwrap()
        .transitions;
    assert_eq!(
        fresh[0].previous_state, "running",
        "taken over: read back first"
    );
    assert!(fresh[0].fence > late[0].fence);
    assert!(
        !store_outbox::resolve(
            &s.db.pool,
            id,
            late[0].fence,
            Resolution::Failed { error: "late" }
        )
        .await
        .unwrap(),
        "the late worker's outcome is refused"
    );
    assert!(
        !store_outbox::extend(&s.db.pool, id, late[0].fence, ttl)
            .await
            .unwrap()
    );
    assert!(
        store_outbox::resolve(&s.db.pool, id, fresh[0].fence, Resolution::Succeeded)
            .await
            .unwrap()
    );
    assert_eq!(row(&s.db.pool, id).await.state, "succeeded");
}

/// Rows of `outbox` the connection's transaction has read so far (by index or by scan).
async fn outbox_rows_read(db: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar(
        "select coalesce(idx_tup_fetch, 0) + seq_tup_read from pg_stat_xact_user_tables
         where relid = 'outbox'::regclass",
    )
    .fetch_one(db)
    .await
    .unwrap()
}

/// 300 transitions claimed by `w`, after a history of 20,000 delivered ones; the table's statistics were
/// taken while nothing ran, as after a queue has just been filled.
async fn claims_held_over_a_history(pool: &PgPool, account_id: i64) -> Vec<store_outbox::Claimed> {
    sqlx::query(
        "insert into outbox (account_id, order_external_id, kind, args, validated_at, state,
            next_attempt_at, finished_at)
         select $1, 'H-' || n, 'step', jsonb_build_object('n', n::text), now(), 'succeeded', null, now()
         from generate_series(1, 20000) n",
    )
    .bind(account_id)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "insert into outbox (account_id, order_external_id, kind, args, validated_at)
         select $1, 'O-' || n, 'step', jsonb_build_object('n', n::text), now()
         from generate_series(1, 300) n",
    )
    .bind(account_id)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("analyze outbox").execute(pool).await.unwrap();
    let ttl = Duration::from_secs(60);
    let claims = store_outbox::claim(pool, account_id, "w", ttl, 300)
        .await
        .unwrap()
        .transitions;
    assert_eq!(claims.len(), 300);
    claims
}

#[tokio::test]
async fn an_outcome_reads_its_own_row_however_many_claims_are_held() {
    let s = setup().await;
    let claims = claims_held_over_a_history(&s.db.pool, s.account_id).await;
    let ttl = Duration::from_secs(60);
    let mut tx = s.db.pool.begin().await.unwrap();
    let mut read = outbox_rows_read(&mut tx).await;
    let mut rows_read_by = async |tx: &mut sqlx::PgConnection, what: &str, most: i64| {
        let now = outbox_rows_read(tx).await;
        assert!(
            now - read <= most,
            "{what} read {} rows of the outbox, at most {most} expected",
            now - read
        );
        read = now;
    };
    let (c, f) = (&claims[0], Resolution::Failed { error: "refused" });
    assert!(
        store_outbox::resolve(&mut *tx, c.id, c.fence, f)
            .await
            .unwrap()
    );
    rows_read_by(&mut tx, "resolve", 1).await;
    let c = &claims[1];
    assert!(
        store_outbox::extend(&mut *tx, c.id, c.fence, ttl)
            .await
            .unwrap()
    );
    rows_read_by(&mut tx, "extend", 1).await;
    let c = &claims[2];
    assert!(
        store_outbox::mark_validated(&mut *tx, c.id, c.fence)
            .await
            .unwrap()
    );
    rows_read_by(&mut tx, "mark_validated", 1).await;
    let c = &claims[3];
    let pending = store_outbox::OutboxState::Pending;
    assert!(
        store_outbox::give_back(&mut *tx, c.id, c.fence, pending)
            .await
            .unwrap()
    );
    rows_read_by(&mut tx, "give_back", 1).await;
    let batch: Vec<store_outbox::Sent> = claims[4..14].iter().map(sent).collect();
    let recorded = store_outbox::succeed_all(&mut *tx, "w", &batch)
        .await
        .unwrap();
    assert_eq!(recorded.len(), 10);
    assert!(recorded.values().all(|later| *later == Some(false)));
    // Each success: its row, the attempt's foreign-key check, and the probe for a later transition.
    rows_read_by(&mut tx, "succeed_all", 3 * 10).await;
    tx.commit().await.unwrap();
}

/// A success as the worker hands it to the group commit.
fn sent(claim: &store_outbox::Claimed) -> store_outbox::Sent {
    store_outbox::Sent {
        outbox_id: claim.id,
        attempt: claim.attempts,
        fence: claim.fence,
        request_summary: "POST /step".into(),
        http_status: 200,
        response_excerpt: "{}".into(),
        started_at: chrono::Utc::now(),
        duration: Duration::from_millis(1),
    }
}

/// The attempt rows of transition `id`, as `action:outcome`.
async fn attempts_of(pool: &PgPool, id: i64) -> Vec<String> {
    store_outbox::attempts(pool, id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| format!("{}:{}", a.action, a.outcome))
        .collect()
}

#[tokio::test]
async fn a_group_commit_run_again_records_each_success_once_even_beside_the_first_run() {
    let s = setup().await;
    let a = s.enqueue("A", 1, 10).await.unwrap().id;
    s.enqueue("A", 2, 10).await.unwrap();
    let b = s.enqueue("B", 1, 10).await.unwrap().id;
    let ttl = Duration::from_secs(60);
    let claim = async |owner: &str| {
        let mut claims = store_outbox::claim(&s.db.pool, s.account_id, owner, ttl, 10)
            .await
            .unwrap()
            .transitions;
        claims.sort_by_key(|c| c.id);
        claims
    };
    let claims = claim("w").await;
    assert_eq!(claims.iter().map(|c| c.id).collect::<Vec<_>>(), [a, b]);
    let batch: Vec<_> = claims.iter().map(sent).collect();
    let first = store_outbox::succeed_all(&s.db.pool, "w", &batch)
        .await
        .unwrap();
    assert_eq!(first, HashMap::from([(a, Some(true)), (b, Some(false))]));

    // The statement committed, but its worker saw it fail: it runs it again.
    let again = store_outbox::succeed_all(&s.db.pool, "w", &batch)
        .await
        .unwrap();
    assert_eq!(
        again, first,
        "recorded successes count as recorded, not lost"
    );
    for id in [a, b] {
        assert_eq!(attempts_of(&s.db.pool, id).await, ["send:succeeded"]);
        assert_eq!(row(&s.db.pool, id).await.state, "succeeded");
    }

    // The first run is still under way when the second starts (the connection it ran on broke, but
    // PostgreSQL has not noticed yet): the second waits for it, then finds what it recorded.
    let a2 = claim("w").await;
    let batch = [sent(&a2[0])];
    let mut under_way = s.db.pool.begin().await.unwrap();
    let first = store_outbox::succeed_all(&mut *under_way, "w", &batch)
        .await
        .unwrap();
    assert_eq!(first, HashMap::from([(a2[0].id, Some(false))]));
    let second = s.record_beside(&mut under_way, &batch).await;
    under_way.commit().await.unwrap();
    assert_eq!(second.await.unwrap(), first);
    assert_eq!(attempts_of(&s.db.pool, a2[0].id).await, ["send:succeeded"]);
    assert_eq!(row(&s.db.pool, a2[0].id).await.state, "succeeded");

    // The same for the attempt row alone: written by a run still under way, it is not written again.
    let b2 = s.enqueue("B", 2, 10).await.unwrap().id;
    let batch = [sent(&claim("w").await[0])];
    let mut under_way = s.db.pool.begin().await.unwrap();
    sqlx::query(
        "insert into outbox_attempts (outbox_id, attempt, fence, worker, action, outcome,
            started_at, duration_ms)
         values ($1, $2, $3, 'w', 'send', 'succeeded', now(), 1)",
    )
    .bind(batch[0].outbox_id)
    .bind(batch[0].attempt)
    .bind(batch[0].fence)
    .execute(&mut *under_way)
    .await
    .unwrap();
    let second = s.record_beside(&mut under_way, &batch).await;
    under_way.commit().await.unwrap();
    assert_eq!(second.await.unwrap(), HashMap::from([(b2, Some(false))]));
    assert_eq!(attempts_of(&s.db.pool, b2).await, ["send:succeeded"]);

    // A claim another worker took over, and recorded as its own success, stays lost however often the
    // first holder's success is recorded.
    let c = s.enqueue("C", 1, 10).await.unwrap().id;
    let late = claim("late").await;
    make_due(&s.db.pool).await;
    let fresh = claim("fresh").await;
    let fresh_batch = [sent(&fresh[0])];
    store_outbox::succeed_all(&s.db.pool, "fresh", &fresh_batch)
        .await
        .unwrap();
    for _ in 0..2 {
        let recorded = store_outbox::succeed_all(&s.db.pool, "late", &[sent(&late[0])])
            .await
            .unwrap();
        assert_eq!(recorded, HashMap::from([(c, None)]));
    }
    assert_eq!(row(&s.db.pool, c).await.fence, fresh[0].fence);
}

#[tokio::test]
async fn a_group_commit_that_fails_for_a_passing_reason_is_tried_again() {
    let s = setup().await;
    // The first attempt row written fails its statement as a serialization failure would (a sequence
    // counts the rows tried: its numbers are not taken back when the statement's transaction is).
    sqlx::raw_sql(
        "create sequence attempt_rows_tried;
         create function fail_once() returns trigger language plpgsql as $$
         begin
             if nextval('attempt_rows_tried') = 1 then
                 raise exception 'could not serialize access' using errcode = '40001';
             end if;
             return new;
         end $$;
         create trigger fail_once before insert on outbox_attempts
             for each row execute function fail_once();",
    )
    .execute(&s.db.pool)
    .await
    .unwrap();
    let id = s.enqueue("A", 1, 10).await.unwrap().id;
    let worker = s.worker("w", fast());

    assert_eq!(
        worker.run_once().await.unwrap(),
        Some(Outcome::Succeeded { id })
    );
    let tried: i64 = sqlx::query_scalar("select last_value from attempt_rows_tried")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(tried, 2, "the group commit did not fail once, then succeed");
    assert_eq!(s.fake.applied("A"), vec!["A-1"], "sent once");
    assert_eq!(attempts_of(&s.db.pool, id).await, ["send:succeeded"]);
    assert_eq!(row(&s.db.pool, id).await.state, "succeeded");
}

/// The account's next due time, asserting that finding it read at most two rows of the outbox.
async fn next_due_reading_two_rows_at_most(
    pool: &PgPool,
    account_id: i64,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let mut tx = pool.begin().await.unwrap();
    let before = outbox_rows_read(&mut tx).await;
    let due = store_outbox::next_due(&mut *tx, account_id, None)
        .await
        .unwrap();
    let read = outbox_rows_read(&mut tx).await - before;
    assert!(read <= 2, "next_due read {read} rows of the outbox");
    due
}

#[tokio::test]
async fn the_next_due_time_is_read_without_the_history() {
    let s = setup().await;
    let claims = claims_held_over_a_history(&s.db.pool, s.account_id).await;
    let c = &claims[0];
    let retry = Resolution::Retry {
        delay: Duration::from_secs(5),
        error: "busy",
    };
    assert!(
        store_outbox::resolve(&s.db.pool, c.id, c.fence, retry)
            .await
            .unwrap()
    );
    let due = next_due_reading_two_rows_at_most(&s.db.pool, s.account_id).await;
    let retry_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("select next_attempt_at from outbox where id = $1")
            .bind(c.id)
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    assert_eq!(due, Some(retry_at), "the retry, before any lease ends");
}

/// The workers of one process share their owner: the one of an account that is done at shutdown gives
/// back its own claims, not those of another account's worker, which may still be sending them.
#[tokio::test]
async fn a_worker_releases_only_its_own_accounts_claims_at_shutdown() {
    let s = setup().await;
    let labs = |name| common::account(name, MarketplaceKind::Labs, "http://127.0.0.1:1/v1");
    let ids = accounts::sync_with_config(&s.db.pool, &[labs("shop"), labs("other")])
        .await
        .unwrap();
    let ttl = Duration::from_secs(600);
    let mut held = Vec::new();
    for account_id in [ids["shop"], ids["other"]] {
        sqlx::query(
            "insert into outbox (account_id, order_external_id, kind, args, validated_at)
             values ($1, 'A', 'step', '{}', now())",
        )
        .bind(account_id)
        .execute(&s.db.pool)
        .await
        .unwrap();
        let claims = store_outbox::claim(&s.db.pool, account_id, "host:1:w", ttl, 1)
            .await
            .unwrap()
            .transitions;
        assert_eq!(claims.len(), 1);
        held.push(claims[0].id);
    }
    let released = store_outbox::release(&s.db.pool, ids["shop"], "host:1:w")
        .await
        .unwrap();
    assert_eq!(released, 1);
    assert_eq!(row(&s.db.pool, held[0]).await.state, "unknown");
    assert_eq!(row(&s.db.pool, held[1]).await.state, "running");
}

#[tokio::test]
async fn the_next_due_time_is_read_without_other_accounts_claims() {
    let s = setup().await;
    let labs = |name| common::account(name, MarketplaceKind::Labs, "http://127.0.0.1:1/v1");
    let ids = accounts::sync_with_config(&s.db.pool, &[labs("shop"), labs("other")])
        .await
        .unwrap();
    // The other account holds 300 claims whose leases end before this account's one claim's.
    claims_held_over_a_history(&s.db.pool, ids["other"]).await;
    sqlx::query(
        "insert into outbox (account_id, order_external_id, kind, args, validated_at)
         values ($1, 'MINE', 'step', '{}', now())",
    )
    .bind(s.account_id)
    .execute(&s.db.pool)
    .await
    .unwrap();
    let ttl = Duration::from_secs(600);
    let mine = store_outbox::claim(&s.db.pool, s.account_id, "w", ttl, 1)
        .await
        .unwrap()
        .transitions;
    assert_eq!(mine.len(), 1);

    let due = next_due_reading_two_rows_at_most(&s.db.pool, s.account_id).await;
    let lease_end: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("select lease_expires_at from outbox where id = $1")
            .bind(mine[0].id)
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    assert_eq!(
        due,
        Some(lease_end),
        "its own lease's end, not another account's"
    );
}

#[tokio::test]
async fn enqueue_refuses_with_the_reason_and_keys_are_idempotent() {
    let s = setup().await;
    let refused = |kind: &str, args: serde_json::Value| {
        let s = &s;
        let transition = Transition {
            order_external_id: "A".into(),
            kind: kind.into(),
            args: args.as_object().unwrap().clone(),
            idempotency_key: uuid::Uuid::new_v4().to_string(),
        };
        async move {
            outbox::enqueue(
                &s.db.pool,
                s.fake.as_ref(),
                &EnqueueRequest {
                    account_id: s.account_id,
                    transition,
                    max_attempts: 10,
                    queued_by: "test".into(),
                },
            )
            .await
            .unwrap_err()
            .to_string()
        }
    };
    assert!(
        refused("fly", serde_json::json!({}))
            .await
            .contains("the fake has no transition `fly`")
    );
    assert!(
        refused("step", serde_json::json!({"n": "x"}))
            .await
            .contains("needs the argument `n`")
    );

    // The order's last known state counts: a cancelled order refuses.
    s.fake
        .state
        .lock()
        .unwrap()
        .cancelled_orders
        .push("A".into());
    let order = s.fake.order("A");
    ordersync::store::orders::write_page(
        &s.db.pool,
        ordersync::store::orders::PageWrite {
            account_id: s.account_id,
            marketplace: MarketplaceKind::Labs,
            orders: std::slice::from_ref(&order),
            window_from: None,
            checkpoint: None,
            lease: None,
        },
    )
    .await
    .unwrap();
    assert!(
        refused("step", serde_json::json!({"n": "1"}))
            .await
            .contains("order `A` is cancelled")
    );

    let first = s.enqueue("B", 1, 10).await.unwrap();
    assert!(first.created);
    let again = s.enqueue("B", 1, 10).await.unwrap();
    assert_eq!(
        again,
        Enqueued {
            id: first.id,
            created: false
        }
    );
    let count: i64 = sqlx::query_scalar("select count(*) from outbox")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

/// A transition due while an earlier one of its order failed waits for an operator without keeping the
/// worker busy: the running worker claims once and sleeps (it used to look for work again at once, a
/// claim and a due-time query after another, for as long as the order stayed blocked); an operator's
/// cancelling of the failed transition wakes it, and the waiting one is sent.
#[tokio::test]
async fn a_transition_blocked_by_a_failed_one_leaves_the_worker_idle_until_an_operator_acts() {
    let s = setup().await;
    let failed = s.enqueue("A", 1, 10).await.unwrap().id;
    let waiting = s.enqueue("A", 2, 10).await.unwrap().id;
    // Each statement updating the outbox is counted: a claim is one, whatever it takes.
    for statement in [
        "update outbox set state = 'failed', next_attempt_at = null, finished_at = now(),
            last_error = 'refused' where order_external_id = 'A' and idempotency_key = 'A-1'",
        "create table outbox_updates (at timestamptz not null default clock_timestamp())",
        "create function count_outbox_update() returns trigger language plpgsql as
            $$ begin insert into outbox_updates default values; return null; end $$",
        "create trigger count_outbox_update after update on outbox
            for each statement execute function count_outbox_update()",
    ] {
        sqlx::query(statement).execute(&s.db.pool).await.unwrap();
    }
    let woken = s.run_woken_by_notifications();

    tokio::time::sleep(Duration::from_secs(1)).await;
    let updates: i64 = sqlx::query_scalar("select count(*) from outbox_updates")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert!(
        updates <= 2,
        "{updates} statements updated the outbox in a second with nothing to send"
    );
    assert_eq!(row(&s.db.pool, waiting).await.state, "pending");
    assert_eq!(s.fake.sends(), 0);

    assert_eq!(
        store_outbox::cancel(&s.db.pool, failed).await.unwrap(),
        OperatorAction::Done
    );
    let sent = tokio::time::timeout(Duration::from_secs(30), async {
        while row(&s.db.pool, waiting).await.state != "succeeded" {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    woken.stop().await;
    assert!(sent.is_ok(), "the cancellation did not wake the worker");
    assert_eq!(s.fake.applied("A"), vec!["A-2"]);
}

#[tokio::test]
async fn rows_queued_by_sql_are_checked_by_the_worker_and_wake_it() {
    let s = setup().await;
    let woken = s.run_woken_by_notifications();

    let mut events = sqlx::postgres::PgListener::connect_with(&s.db.pool)
        .await
        .unwrap();
    events.listen("ordersync_outbox").await.unwrap();

    let invalid: i64 = sqlx::query_scalar("select ordersync_enqueue('shop', 'A', 'fly', '{}')")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    let valid: i64 = sqlx::query_scalar(
        "insert into outbox (account_id, order_external_id, kind, args)
         values ($1, 'B', 'step', '{\"n\": \"7\"}') returning id",
    )
    .bind(s.account_id)
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(
        events.recv().await.unwrap().payload(),
        s.account_id.to_string()
    );

    // The worker reads the order back after the valid row succeeded; the invalid row was claimed no later
    // (it was queued first), and shutdown lets claimed work finish. The timeout only keeps a broken worker
    // from hanging the test.
    tokio::time::timeout(Duration::from_secs(30), s.fake.read_signal.notified())
        .await
        .expect("the worker was not woken by the notification");
    woken.stop().await;

    let r = row(&s.db.pool, invalid).await;
    assert_eq!(r.state, "failed");
    assert!(
        r.last_error
            .unwrap()
            .contains("invalid transition: the fake has no transition `fly`")
    );
    assert_eq!(row(&s.db.pool, valid).await.state, "succeeded");
    assert_eq!(
        s.fake.applied("B"),
        vec![row(&s.db.pool, valid).await.idempotency_key]
    );

    // Arguments that are not an object never get in.
    let bad = sqlx::query(
        "insert into outbox (account_id, order_external_id, kind, args) values ($1, 'C', 'step', '[]')",
    )
    .bind(s.account_id)
    .execute(&s.db.pool)
    .await;
    assert!(bad.is_err());
    // An unknown account is refused by the function.
    let unknown = sqlx::query("select ordersync_enqueue('nobody', 'A', 'step')")
        .execute(&s.db.pool)
        .await
        .unwrap_err();
    assert!(unknown.to_string().contains("no account named nobody"));
}

/// Collects log output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_secret_reaches_the_attempts_table_or_the_logs() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let s = setup().await;
    let worker = s.worker("w", fast());
    s.enqueue("A", 1, 10).await.unwrap();
    s.enqueue("B", 1, 10).await.unwrap();
    s.enqueue("C", 1, 10).await.unwrap();
    s.fake.script([
        Script::Reject("refused"),
        Script::Transient { retry_after: None },
    ]);
    while worker.run_once().await.unwrap().is_some() {}

    let dump: String = sqlx::query_scalar(
        "select coalesce(string_agg(t::text, ' '), '') from (
            select a::text as t from outbox_attempts a union all select o::text from outbox o) x",
    )
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert!(dump.contains("***"), "redacted values are recorded: {dump}");
    assert!(!dump.contains(SECRET), "secret in the database: {dump}");
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("refused"), "{logs}");
    assert!(!logs.contains(SECRET), "secret in the logs: {logs}");
}

/// The real adapters against the sandbox.
mod live {
    use super::*;
    use ordersync::http::HttpClient;
    use ordersync::poller::{AccountPoller, NoProgress, PollSettings, RunMode};
    use ordersync::sandbox::faults::FaultPlan;
    use ordersync::sandbox::{Api, Sandbox, SandboxConfig};
    use serde_json::json;

    pub struct Live {
        pub db: common::TestDb,
        pub sandbox: Sandbox,
        pub account_id: i64,
        pub kind: MarketplaceKind,
        pub marketplace: Arc<dyn Marketplace>,
    }

    /// A sandbox, a database holding the account's orders (polled once), and the account's adapter.
    pub async fn live(api: Api, kind: MarketplaceKind) -> Live {
        let sandbox = Sandbox::start(SandboxConfig {
            // Enough orders that every package status a transition starts from is present.
            orders_per_api: 600,
            ..SandboxConfig::default()
        })
        .await
        .unwrap();
        // Fresh orders await the seller's approval.
        sandbox.add_orders(api, 10);
        let db = common::test_db().await;
        let account = common::account("shop", kind, &sandbox.base_url(api));
        let ids = accounts::sync_with_config(&db.pool, std::slice::from_ref(&account))
            .await
            .unwrap();
        let http = HttpClient::new(
            &account.http_settings(),
            account.credentials.secret_values(),
        )
        .unwrap();
        let marketplace: Arc<dyn Marketplace> = Arc::from(ordersync::marketplace::build(
            &account,
            http,
            &HashMap::new(),
        ));
        let poller = AccountPoller::new(
            db.pool.clone(),
            ids["shop"],
            account,
            marketplace.clone(),
            "test".into(),
            PollSettings::default(),
        );
        poller
            .poll(RunMode::Live, &CancellationToken::new(), &NoProgress)
            .await;
        Live {
            db,
            sandbox,
            account_id: ids["shop"],
            kind,
            marketplace,
        }
    }

    impl Live {
        pub fn worker(&self, settings: OutboxSettings) -> OutboxWorker {
            OutboxWorker::new(
                self.db.pool.clone(),
                WorkerAccount {
                    account_id: self.account_id,
                    name: "shop".into(),
                    kind: self.kind,
                    marketplace: self.marketplace.clone(),
                    secrets: Vec::new(),
                },
                "live-worker".into(),
                settings,
                None,
            )
        }

        pub async fn enqueue(
            &self,
            order: &str,
            kind: &str,
            args: serde_json::Value,
        ) -> Result<Enqueued, OutboxError> {
            outbox::enqueue(
                &self.db.pool,
                self.marketplace.as_ref(),
                &EnqueueRequest {
                    account_id: self.account_id,
                    transition: Transition {
                        order_external_id: order.into(),
                        kind: kind.into(),
                        args: args.as_object().unwrap().clone(),
                        idempotency_key: uuid::Uuid::new_v4().to_string(),
                    },
                    max_attempts: 50,
                    queued_by: "test".into(),
                },
            )
            .await
        }

        /// (order, package) pairs whose package has one of `codes`, each order only once.
        pub async fn packages(&self, codes: &[&str]) -> Vec<(String, String)> {
            sqlx::query_as(
                "select distinct on (o.external_id) o.external_id, p.external_id
                 from order_packages p join orders o on o.id = p.order_id
                 where o.account_id = $1 and p.status_code = any($2)
                 order by o.external_id, p.external_id",
            )
            .bind(self.account_id)
            .bind(codes)
            .fetch_all(&self.db.pool)
            .await
            .unwrap()
        }

        /// Orders all of whose packages have one of `codes`.
        pub async fn orders_all_in(&self, codes: &[&str]) -> Vec<String> {
            sqlx::query_scalar(
                "select o.external_id from orders o
                 where o.account_id = $1
                   and exists (select 1 from order_packages p where p.order_id = o.id)
                   and not exists (select 1 from order_packages p
                                   where p.order_id = o.id and not (p.status_code = any($2)))
                 order by o.external_id",
            )
            .bind(self.account_id)
            .bind(codes)
            .fetch_all(&self.db.pool)
            .await
            .unwrap()
        }

        /// Runs the worker until nothing is due.
        pub async fn drain(&self, worker: &OutboxWorker) -> Vec<Outcome> {
            let mut outcomes = Vec::new();
            while let Some(outcome) = worker.run_once().await.unwrap() {
                outcomes.push(outcome);
            }
            outcomes
        }
    }

    /// Queues one transition of every allesgo kind, each on an order of its own, where the order's state
    /// allows it. Returns (kind, outbox id, order).
    async fn queue_every_allesgo_kind(l: &Live) -> Vec<(&'static str, i64, String)> {
        let mut used: Vec<String> = Vec::new();
        let mut queued = Vec::new();
        let package_kinds: [(&str, &[&str], serde_json::Value); 6] = [
            ("accept", &["2"], json!({})),
            (
                "postpone",
                &["2", "3"],
                json!({"reason": "Stok bekleniyor"}),
            ),
            (
                "ship",
                &["3"],
                json!({"company_id": "2", "shipping_code": "TR123456789"}),
            ),
            (
                "reject-cancel",
                &["8"],
                json!({"reason": "Kargoya verilmek üzere"}),
            ),
            (
                "accept-return",
                &["11"],
                json!({"message": "İade kabul edildi"}),
            ),
            (
                "reject-return",
                &["11"],
                json!({"reason": "Ürün kullanılmış"}),
            ),
        ];
        for (kind, codes, extra) in package_kinds {
            let candidates = l.packages(codes).await;
            let (order, package) = candidates
                .into_iter()
                .find(|(o, _)| !used.contains(o))
                .unwrap_or_else(|| panic!("the sandbox has no package for {kind}"));
            let mut args = extra.as_object().unwrap().clone();
            args.insert("package_id".into(), json!(package));
            let id = l
                .enqueue(&order, kind, serde_json::Value::Object(args))
                .await
                .unwrap_or_else(|e| panic!("{kind} of {order}: {e}"))
                .id;
            used.push(order.clone());
            queued.push((kind, id, order));
        }
        for (kind, codes) in [
            ("cancel", &["2", "3", "4", "15"][..]),
            ("accept-cancel", &["8"][..]),
        ] {
            let order = l
                .orders_all_in(codes)
                .await
                .into_iter()
                .find(|o| !used.contains(o))
                .unwrap_or_else(|| panic!("the sandbox has no order for {kind}"));
            let id = l
                .enqueue(&order, kind, json!({"reason": "Müşteri talebi"}))
                .await
                .unwrap_or_else(|e| panic!("{kind} of {order}: {e}"))
                .id;
            used.push(order.clone());
            queued.push((kind, id, order));
        }
        queued
    }

    /// Each transition shows exactly one call that changed the sandbox: the call to its action naming
    /// its package (package actions) or its order (order actions).
    async fn assert_one_effect_each(l: &Live, queued: &[(&str, i64, String)]) {
        let effects: Vec<_> = l
            .sandbox
            .audit()
            .into_iter()
            .filter(|e| e.effect.is_some())
            .collect();
        assert_eq!(effects.len(), queued.len(), "{effects:#?}");
        for (kind, id, order) in queued {
            let args = row(&l.db.pool, *id).await.args;
            let needle = args["package_id"].as_str().unwrap_or(order).to_owned();
            let calls = effects
                .iter()
                .filter(|e| {
                    e.path.contains(&format!("/order/{kind}/"))
                        && e.body.as_deref().is_some_and(|b| b.contains(&needle))
                })
                .count();
            assert_eq!(calls, 1, "{kind} of order {order}: {effects:#?}");
        }
    }

    #[tokio::test]
    async fn every_allesgo_kind_succeeds_with_one_effective_call() {
        let l = live(Api::Allesgo, MarketplaceKind::Allesgo).await;
        let queued = queue_every_allesgo_kind(&l).await;
        l.sandbox.clear_audit();
        let outcomes = l.drain(&l.worker(fast())).await;
        assert_eq!(outcomes.len(), queued.len(), "{outcomes:?}");
        for (kind, id, _) in &queued {
            let r = row(&l.db.pool, *id).await;
            assert_eq!(r.state, "succeeded", "{kind}: {:?}", r.last_error);
        }
        assert_one_effect_each(&l, &queued).await;
        // The orders were read again: the accepted package shows allesgo's new status.
        let (_, accept_id, order) = &queued[0];
        let package = row(&l.db.pool, *accept_id).await.args["package_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let code: String = sqlx::query_scalar(
            "select p.status_code from order_packages p join orders o on o.id = p.order_id
             where o.external_id = $1 and p.external_id = $2",
        )
        .bind(order)
        .bind(&package)
        .fetch_one(&l.db.pool)
        .await
        .unwrap();
        assert_eq!(code, "3", "accepted package is approved in the database");
    }

    #[tokio::test]
    async fn with_injected_server_errors_every_transition_still_succeeds_once() {
        let l = live(Api::Allesgo, MarketplaceKind::Allesgo).await;
        let queued = queue_every_allesgo_kind(&l).await;
        l.sandbox.clear_audit();
        l.sandbox.set_faults(
            Api::Allesgo,
            FaultPlan {
                server_error_rate: 0.1,
                ..FaultPlan::default()
            },
        );
        l.drain(&l.worker(fast())).await;
        for (kind, id, _) in &queued {
            let r = row(&l.db.pool, *id).await;
            assert_eq!(r.state, "succeeded", "{kind}: {:?}", r.last_error);
        }
        assert_one_effect_each(&l, &queued).await;
    }

    #[tokio::test]
    async fn a_permanent_refusal_fails_with_the_api_message_after_one_call() {
        let l = live(Api::Allesgo, MarketplaceKind::Allesgo).await;
        let (order, package) = l.packages(&["3"]).await.remove(0);
        let id = l
            .enqueue(
                &order,
                "ship",
                json!({"package_id": package, "company_id": "99", "shipping_code": "TR1"}),
            )
            .await
            .unwrap()
            .id;
        l.sandbox.clear_audit();
        let outcomes = l.drain(&l.worker(fast())).await;
        assert!(
            matches!(&outcomes[..], [Outcome::Failed { error, .. }] if error.contains("Geçersiz company_id: 99")),
            "{outcomes:?}"
        );
        let r = row(&l.db.pool, id).await;
        assert_eq!(r.state, "failed");
        assert!(r.last_error.unwrap().contains("Geçersiz company_id: 99"));
        let calls = l
            .sandbox
            .audit()
            .into_iter()
            .filter(|e| e.path.contains("/order/ship/"))
            .count();
        assert_eq!(calls, 1, "no retry of a permanent refusal");
        let attempts = store_outbox::attempts(&l.db.pool, id).await.unwrap();
        assert_eq!(attempts[0].http_status, Some(400));
        assert!(
            !format!("{attempts:?}").contains("sandbox-allesgo-token"),
            "{attempts:?}"
        );
    }

    impl Live {
        /// Orders whose stored raw status (the text, else the code) is one of `statuses`, in id order.
        pub async fn orders_in(&self, statuses: &[&str]) -> Vec<String> {
            sqlx::query_scalar(
                "select external_id from orders
                 where account_id = $1 and coalesce(status_text, status_code) = any($2)
                 order by id",
            )
            .bind(self.account_id)
            .bind(statuses)
            .fetch_all(&self.db.pool)
            .await
            .unwrap()
        }

        /// The stored raw status (the text, else the code) and canonical state of an order.
        pub async fn stored(&self, order: &str) -> (String, String) {
            sqlx::query_as(
                "select coalesce(status_text, status_code), state from orders
                 where account_id = $1 and external_id = $2",
            )
            .bind(self.account_id)
            .bind(order)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
        }

        /// The stored status code and state of line `item` of `order`.
        pub async fn stored_line(&self, order: &str, item: &str) -> (Option<String>, String) {
            sqlx::query_as(
                "select l.status_code, l.state from order_lines l join orders o on o.id = l.order_id
                 where o.account_id = $1 and o.external_id = $2 and l.external_id = $3",
            )
            .bind(self.account_id)
            .bind(order)
            .bind(item)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
        }

        /// The requests the sandbox answered with operation `operation`.
        pub fn calls(&self, operation: &str) -> Vec<ordersync::sandbox::audit::AuditEntry> {
            self.sandbox
                .audit()
                .into_iter()
                .filter(|e| e.operation == operation)
                .collect()
        }

        /// The requests that changed the sandbox.
        pub fn effects(&self) -> Vec<ordersync::sandbox::audit::AuditEntry> {
            self.sandbox
                .audit()
                .into_iter()
                .filter(|e| e.effect.is_some())
                .collect()
        }

        /// Queues with the SQL function, as another program would (not checked until the worker takes it).
        pub async fn enqueue_sql(&self, order: &str, kind: &str, args: serde_json::Value) -> i64 {
            sqlx::query_scalar("select ordersync_enqueue('shop', $1, $2, $3)")
                .bind(order)
                .bind(kind)
                .bind(args)
                .fetch_one(&self.db.pool)
                .await
                .unwrap()
        }

        /// Asserts that transition `id` failed after exactly one attempt, with `message` in its error.
        pub async fn assert_failed_once(&self, id: i64, outcomes: &[Outcome], message: &str) {
            assert!(
                matches!(outcomes, [Outcome::Failed { error, .. }] if error.contains(message)),
                "{outcomes:?}"
            );
            let r = row(&self.db.pool, id).await;
            assert_eq!(r.state, "failed");
            assert_eq!(r.attempts, 1, "no retry of a permanent refusal");
            assert!(r.last_error.unwrap().contains(message));
            // Nothing more is due: a failed transition waits for an operator.
            make_due(&self.db.pool).await;
            assert!(self.worker(fast()).run_once().await.unwrap().is_none());
        }
    }

    /// The body of an audited request as JSON (`Null` when it has none or it is not JSON).
    fn body_json(entry: &ordersync::sandbox::audit::AuditEntry) -> serde_json::Value {
        entry
            .body
            .as_deref()
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn every_c2c_state_is_set_with_one_effective_call() {
        let l = live(Api::C2c, MarketplaceKind::C2c).await;
        let mut queued = Vec::new();
        // Each target from a status the document's flow allows it from; the second spelled loosely.
        for (from, target, expected_state) in [
            ("Ödeme Bekliyor", "Onay Bekliyor", "awaiting_approval"),
            ("Onay Bekliyor", "hazirlaniyor", "preparing"),
            ("Hazırlanıyor", "Kargoya Verildi", "shipped"),
        ] {
            let order = l
                .orders_in(&[from])
                .await
                .into_iter()
                .next()
                .unwrap_or_else(|| panic!("the sandbox has no order in {from}"));
            let id = l
                .enqueue(&order, "set-state", json!({ "state": target }))
                .await
                .unwrap_or_else(|e| panic!("{target} of {order}: {e}"))
                .id;
            queued.push((id, order, expected_state));
        }
        l.sandbox.clear_audit();
        let outcomes = l.drain(&l.worker(fast())).await;
        assert_eq!(outcomes.len(), queued.len(), "{outcomes:?}");
        let effects = l.effects();
        assert_eq!(effects.len(), queued.len(), "{effects:#?}");
        for (id, order, expected_state) in &queued {
            let r = row(&l.db.pool, *id).await;
            assert_eq!(r.state, "succeeded", "{order}: {:?}", r.last_error);
            let calls = effects
                .iter()
                .filter(|e| {
                    e.operation == "UpdateOrderStateByOrderCode"
                        && body_json(e)["SiparisKodlari"] == json!([order])
                })
                .count();
            assert_eq!(calls, 1, "{order}: {effects:#?}");
            // Read back after the success: the database shows C2C's new status.
            let (_, state) = l.stored(order).await;
            assert_eq!(&state, expected_state, "{order}");
        }
        assert_eq!(
            l.stored(&queued[2].1).await.0,
            "Kargoya Verildi",
            "the raw status text is the marketplace's"
        );
    }

    #[tokio::test]
    async fn c2c_refuses_a_disallowed_move_per_order_and_it_fails_without_retry() {
        let l = live(Api::C2c, MarketplaceKind::C2c).await;
        // The adapter lets a move back through (the document does not forbid it); C2C's answer decides.
        let order = l.orders_in(&["Hazırlanıyor"]).await.remove(0);
        let id = l
            .enqueue(&order, "set-state", json!({"state": "Onay Bekliyor"}))
            .await
            .unwrap()
            .id;
        l.sandbox.clear_audit();
        let outcomes = l.drain(&l.worker(fast())).await;
        l.assert_failed_once(id, &outcomes, "yapılamaz").await;
        assert_eq!(l.calls("UpdateOrderStateByOrderCode").len(), 1);
        assert!(l.effects().is_empty());
        let r = row(&l.db.pool, id).await;
        assert!(
            r.last_error.unwrap().contains(&order),
            "C2C's own message names the order"
        );
    }

    #[tokio::test]
    async fn i1_rejects_items_with_one_effective_call_each() {
        let l = live(Api::I1, MarketplaceKind::I1).await;
        // One item awaiting approval and one whose package waits: both before packaging.
        let mut queued = Vec::new();
        for code in ["100", "300"] {
            let (order, item): (String, String) = sqlx::query_as(
                "select o.external_id, l.external_id from order_lines l join orders o on o.id = l.order_id
                 where o.account_id = $1 and l.status_code = $2
                 order by o.id, l.position limit 1",
            )
            .bind(l.account_id)
            .bind(code)
            .fetch_one(&l.db.pool)
            .await
            .unwrap_or_else(|e| panic!("no item in {code}: {e}"));
            let id = l
                .enqueue(&order, "reject-item", json!({ "item_id": item }))
                .await
                .unwrap_or_else(|e| panic!("reject {item} of {order}: {e}"))
                .id;
            queued.push((id, order, item));
        }
        l.sandbox.clear_audit();
        let outcomes = l.drain(&l.worker(fast())).await;
        assert_eq!(outcomes.len(), queued.len(), "{outcomes:?}");
        let effects = l.effects();
        assert_eq!(effects.len(), queued.len(), "{effects:#?}");
        for (id, order, item) in &queued {
            let r = row(&l.db.pool, *id).await;
            assert_eq!(r.state, "succeeded", "{item}: {:?}", r.last_error);
            let calls = effects
                .iter()
                .filter(|e| {
                    e.operation == "order-items.reject"
                        && e.path == format!("/order-items/{item}/reject/")
                })
                .count();
            assert_eq!(calls, 1, "{item}: {effects:#?}");
            let attempts = store_outbox::attempts(&l.db.pool, *id).await.unwrap();
            assert_eq!(attempts[0].http_status, Some(204));
            // Read back after the success: the database shows the item rejected.
            let (code, state) = l.stored_line(order, item).await;
            assert_eq!(
                (code.as_deref(), state.as_str()),
                (Some("900"), "rejected"),
                "{item}"
            );
        }
    }

    #[tokio::test]
    async fn i1_orders_succeeding_together_are_each_read_back() {
        let l = live(Api::I1, MarketplaceKind::I1).await;
        // i1 reads one order a request: the default `fetch_orders_by_id`, every order of the batch.
        let items: Vec<(String, String)> = sqlx::query_as(
            "select distinct on (o.id) o.external_id, l.external_id
             from order_lines l join orders o on o.id = l.order_id
             where o.account_id = $1 and l.status_code = '100'
             order by o.id, l.position limit 4",
        )
        .bind(l.account_id)
        .fetch_all(&l.db.pool)
        .await
        .unwrap();
        assert_eq!(
            items.len(),
            4,
            "the sandbox has too few items awaiting approval"
        );
        let queued = items
            .iter()
            .map(|(order, item)| (order.clone(), "reject-item", json!({ "item_id": item })))
            .collect();
        succeed_together(&l, Api::I1, queued).await;
        for (order, item) in &items {
            let (_, state) = l.stored_line(order, item).await;
            assert_eq!(state, "rejected", "{item} of {order} read back");
        }
    }

    #[tokio::test]
    async fn i1_refuses_an_item_packaged_meanwhile_with_400_and_it_fails_without_retry() {
        let l = live(Api::I1, MarketplaceKind::I1).await;
        // Valid when queued (the item waits for its package); packaged before the worker sends it.
        let (order, item): (String, String) = sqlx::query_as(
            "select o.external_id, l.external_id from order_lines l join orders o on o.id = l.order_id
             where o.account_id = $1 and o.status_code = '300' and l.status_code = '300'
             order by o.id, l.position limit 1",
        )
        .bind(l.account_id)
        .fetch_one(&l.db.pool)
        .await
        .unwrap();
        let id = l
            .enqueue(&order, "reject-item", json!({ "item_id": item }))
            .await
            .unwrap()
            .id;
        assert!(l.sandbox.change_order(Api::I1, &order));
        l.sandbox.clear_audit();
        let outcomes = l.drain(&l.worker(fast())).await;
        l.assert_failed_once(id, &outcomes, "Packaged order items cannot be rejected.")
            .await;
        assert_eq!(l.calls("order-items.reject").len(), 1);
        assert!(l.effects().is_empty());
        let attempts = store_outbox::attempts(&l.db.pool, id).await.unwrap();
        assert_eq!(attempts[0].http_status, Some(400));
        assert!(
            !format!("{attempts:?}").contains("sandbox-i1-token"),
            "{attempts:?}"
        );
    }

    #[tokio::test]
    async fn every_labs_kind_succeeds_with_one_effective_call() {
        let l = live(Api::Labs, MarketplaceKind::Labs).await;
        let mut orders = l.orders_in(&["PENDING_APPROVE", "PENDING_APPROVED"]).await;
        let waiting = orders.remove(0);
        let to_delete = orders.remove(0);
        let created = l.orders_in(&["CREATED"]).await.remove(0);
        let preparing = l.orders_in(&["PREPARING"]).await.remove(0);
        let invoiced = l.orders_in(&["COMPLETED"]).await.remove(0);
        let order_id = |o: &str| json!(o.parse::<u64>().unwrap());
        // (order, kind, args, the sandbox operation, the list status read back)
        let plan = [
            (
                &waiting,
                "set-status",
                json!({"status_code": 1}),
                "orders.status",
                Some("CREATED"),
            ),
            (
                &created,
                "set-status",
                json!({"status_code": 2}),
                "orders.status",
                Some("PREPARING"),
            ),
            (
                &preparing,
                "set-status",
                json!({"status_code": 5}),
                "orders.status",
                Some("COMPLETED"),
            ),
            (&to_delete, "delete", json!({}), "orders.delete", None),
            (
                &invoiced,
                "invoice-link",
                json!({
                    "invoice_link": "https://faturalar.example.com/2024/ABC2024000000123.pdf",
                    "invoice_number": "ABC2024000000123",
                    "invoice_date_time": "1717232400",
                    "marketplace": "trendyol",
                }),
                "orders.invoice-link",
                Some("COMPLETED"),
            ),
        ];
        let mut queued = Vec::new();
        for (order, kind, args, operation, status) in plan {
            let id = l
                .enqueue(order, kind, args)
                .await
                .unwrap_or_else(|e| panic!("{kind} of {order}: {e}"))
                .id;
            queued.push((id, order.clone(), kind, operation, status));
        }
        l.sandbox.clear_audit();
        let outcomes = l.drain(&l.worker(fast())).await;
        assert_eq!(outcomes.len(), queued.len(), "{outcomes:?}");
        let effects = l.effects();
        assert_eq!(effects.len(), queued.len(), "{effects:#?}");
        for (id, order, kind, operation, status) in &queued {
            let r = row(&l.db.pool, *id).await;
            assert_eq!(
                r.state, "succeeded",
                "{kind} of {order}: {:?}",
                r.last_error
            );
            let calls = effects
                .iter()
                .filter(|e| {
                    e.operation == *operation
                        && match *kind {
                            "delete" => e.path == format!("/orders/{order}"),
                            "invoice-link" => {
                                body_json(e)["payload"][0]["orderId"] == order_id(order)
                            }
                            _ => body_json(e)["orderId"] == order_id(order),
                        }
                })
                .count();
            assert_eq!(calls, 1, "{kind} of {order}: {effects:#?}");
            if let Some(status) = status {
                // Read back after the success: the database shows Labs' new status.
                assert_eq!(l.stored(order).await.0, *status, "{kind} of {order}");
            }
        }
        assert!(
            !l.sandbox
                .orders(Api::Labs)
                .iter()
                .any(|o| o.external_id == to_delete),
            "the deleted order is gone from Labs"
        );
    }

    /// Sends `queued` (order, kind, args) with that many `run_once` at once, every request of the
    /// marketplace answered 100 ms late so that the successes come in together; returns the outbox ids.
    async fn succeed_together(
        l: &Live,
        api: Api,
        queued: Vec<(String, &str, serde_json::Value)>,
    ) -> Vec<i64> {
        let mut ids = Vec::new();
        for (order, kind, args) in &queued {
            ids.push(l.enqueue(order, kind, args.clone()).await.unwrap().id);
        }
        l.sandbox.set_faults(
            api,
            FaultPlan {
                slow_rate: 1.0,
                slow_delay: Duration::from_millis(100),
                ..FaultPlan::default()
            },
        );
        l.sandbox.clear_audit();
        let worker = Arc::new(l.worker(OutboxSettings {
            concurrency: queued.len(),
            ..fast()
        }));
        let handling: Vec<_> = queued
            .iter()
            .map(|_| {
                let worker = worker.clone();
                tokio::spawn(async move { worker.run_once().await.unwrap() })
            })
            .collect();
        for handled in handling {
            let outcome = handled.await.unwrap();
            assert!(
                matches!(outcome, Some(Outcome::Succeeded { .. })),
                "{outcome:?}"
            );
        }
        ids
    }

    #[tokio::test]
    async fn labs_orders_succeeding_together_are_read_back_by_one_listing() {
        let l = live(Api::Labs, MarketplaceKind::Labs).await;
        let orders = l.orders_in(&["PENDING_APPROVE", "PENDING_APPROVED"]).await;
        let queued: Vec<_> = orders
            .into_iter()
            .take(6)
            .map(|o| (o, "set-status", json!({"status_code": 1})))
            .collect();
        assert_eq!(
            queued.len(),
            6,
            "the sandbox has too few orders awaiting approval"
        );
        succeed_together(&l, Api::Labs, queued.clone()).await;
        // The first success's read takes the first listing; those of the others, arriving while it is
        // under way, share the next.
        let listings = l.calls("orders.list").len();
        assert!(
            (1..=3).contains(&listings),
            "{listings} listings read back 6 orders"
        );
        for (order, _, _) in &queued {
            assert_eq!(l.stored(order).await.0, "CREATED", "{order} read back");
        }
    }

    #[tokio::test]
    async fn c2c_orders_succeeding_together_are_read_back_in_one_request() {
        let l = live(Api::C2c, MarketplaceKind::C2c).await;
        let mut queued = Vec::new();
        let mut expected = Vec::new();
        for (from, target, state) in [
            ("Ödeme Bekliyor", "Onay Bekliyor", "awaiting_approval"),
            ("Onay Bekliyor", "Hazırlanıyor", "preparing"),
        ] {
            for order in l.orders_in(&[from]).await.into_iter().take(4) {
                queued.push((order.clone(), "set-state", json!({ "state": target })));
                expected.push((order, state));
            }
        }
        assert_eq!(
            queued.len(),
            8,
            "the sandbox has too few orders in these states"
        );
        succeed_together(&l, Api::C2c, queued.clone()).await;
        let reads = l.calls("GetOrderInfoByOrdersCode");
        assert!(
            (1..=3).contains(&reads.len()),
            "{} reads of 8 orders",
            reads.len()
        );
        let codes: Vec<serde_json::Value> = reads
            .iter()
            .flat_map(|r| body_json(r)["SiparisKodlari"].as_array().cloned().unwrap())
            .collect();
        assert_eq!(codes.len(), 8, "each order read once: {codes:?}");
        for (order, state) in &expected {
            assert!(codes.contains(&json!(order)), "{order} not read back");
            assert_eq!(l.stored(order).await.1, *state, "{order}");
        }
    }

    #[tokio::test]
    async fn labs_refuses_backwards_before_sending_and_a_stale_move_by_its_answer() {
        let l = live(Api::Labs, MarketplaceKind::Labs).await;
        let created = l.orders_in(&["CREATED"]).await.remove(0);
        // Backwards: refused when queued by ordersync, and failed unsent when queued by SQL.
        let refused = l
            .enqueue(&created, "set-status", json!({"status_code": 0}))
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("only move forward"),
            "{refused}"
        );
        let backwards = l
            .enqueue_sql(&created, "set-status", json!({"status_code": 0}))
            .await;
        l.sandbox.clear_audit();
        let outcomes = l.drain(&l.worker(fast())).await;
        l.assert_failed_once(backwards, &outcomes, "only move forward")
            .await;
        assert!(l.sandbox.audit().is_empty(), "{:#?}", l.sandbox.audit());
        store_outbox::cancel(&l.db.pool, backwards).await.unwrap();

        // Forward when queued, not any more when sent: Labs answers HTTP 200 with an error status.
        let waiting = l
            .orders_in(&["PENDING_APPROVE", "PENDING_APPROVED"])
            .await
            .remove(0);
        let stale = l
            .enqueue(&waiting, "set-status", json!({"status_code": 1}))
            .await
            .unwrap()
            .id;
        assert!(l.sandbox.change_order(Api::Labs, &waiting));
        l.sandbox.clear_audit();
        let outcomes = l.drain(&l.worker(fast())).await;
        l.assert_failed_once(
            stale,
            &outcomes,
            "Sipariş durumu geriye doğru güncellenemez.",
        )
        .await;
        assert_eq!(l.calls("orders.status").len(), 1);
        assert!(l.effects().is_empty());
    }

    #[tokio::test]
    async fn gittigidiyor_refuses_every_transition_with_the_reason() {
        let l = live(Api::Gittigidiyor, MarketplaceKind::Gittigidiyor).await;
        let refused = l.enqueue("123", "accept", json!({})).await.unwrap_err();
        assert!(matches!(refused, OutboxError::Refused(_)));
        assert!(refused.to_string().contains("pull-only"), "{refused}");
    }
}

/// `ordersync outbox …` as an operator uses it: the real binary, a configuration file, real PostgreSQL.
mod cli {
    use std::io::Write;
    use std::process::{Command, Output};

    const CONFIG: &str = r#"
[[accounts]]
name = "shop"
marketplace = "allesgo"
base_url = "http://127.0.0.1:1/allesgo"
store_id = "4242"
access_token = { env = "OUTBOX_TEST_TOKEN" }

[[accounts]]
name = "gg"
marketplace = "gittigidiyor"
base_url = "http://127.0.0.1:1/gg"
api_key = { env = "OUTBOX_TEST_TOKEN" }
secret_key = { env = "OUTBOX_TEST_TOKEN" }
username = "role"
password = { env = "OUTBOX_TEST_TOKEN" }
"#;

    fn ordersync(db_url: &str, config: &std::path::Path, args: &[&str]) -> (i32, String) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ordersync"));
        for (key, _) in std::env::vars() {
            if key.starts_with("ORDERSYNC") || key == "RUST_LOG" {
                command.env_remove(key);
            }
        }
        let output: Output = command
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("--config")
            .arg(config)
            .args(args)
            .env("DATABASE_URL", db_url)
            .env("OUTBOX_TEST_TOKEN", "cli-secret-token-42")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            !text.contains("cli-secret-token-42"),
            "secret leaked: {text}"
        );
        assert!(!text.contains("panicked"), "{text}");
        (output.status.code().unwrap_or(-1), text)
    }

    #[tokio::test]
    async fn add_list_cancel_retry_and_refusals_exit_2() {
        let db = super::common::test_db().await;
        let mut config = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        config.write_all(CONFIG.as_bytes()).unwrap();
        let run = |args: &[&str]| ordersync(&db.url, config.path(), args);

        let (code, out) = run(&["outbox", "add", "--account", "gg", "--order", "1", "accept"]);
        assert_eq!(code, 2, "{out}");
        assert!(out.contains("pull-only"), "{out}");

        let (code, out) = run(&[
            "outbox",
            "add",
            "--account",
            "nope",
            "--order",
            "1",
            "accept",
        ]);
        assert_eq!(code, 2, "{out}");
        assert!(out.contains("no account named `nope`"), "{out}");

        let (code, out) = run(&[
            "outbox",
            "add",
            "--account",
            "shop",
            "--order",
            "1001",
            "accept",
        ]);
        assert_eq!(code, 2, "{out}");
        assert!(
            out.contains("package_id"),
            "the reason names the argument: {out}"
        );

        // The same command twice: the idempotency key makes the second one a no-op.
        const ADD_K1: [&str; 11] = [
            "outbox",
            "add",
            "--account",
            "shop",
            "--order",
            "1001",
            "accept",
            "--arg",
            "package_id=abc",
            "--idempotency-key",
            "k1",
        ];
        let (code, out) = run(&ADD_K1);
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains("queued transition 1: accept of order 1001 on shop"),
            "{out}"
        );
        let (code, out) = run(&ADD_K1);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("already queued as transition 1"), "{out}");

        let (code, out) = run(&["outbox", "list", "--state", "pending"]);
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains("1001") && out.contains("accept") && out.contains("pending"),
            "{out}"
        );
        let (code, out) = run(&["outbox", "list", "--state", "bogus"]);
        assert_eq!(code, 2, "{out}");

        let (code, out) = run(&["outbox", "cancel", "1"]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("transition 1 is cancelled"), "{out}");
        let (code, out) = run(&["outbox", "cancel", "1"]);
        assert_eq!(code, 2, "{out}");
        assert!(out.contains("transition 1 is cancelled: only"), "{out}");
        let (code, out) = run(&["outbox", "retry", "1"]);
        assert_eq!(code, 2, "{out}");
        let (code, out) = run(&["outbox", "retry", "99"]);
        assert_eq!(code, 2, "{out}");
        assert!(out.contains("there is no transition 99"), "{out}");

        sqlx::query("update outbox set state = 'failed', finished_at = now(), next_attempt_at = null where id = 1")
            .execute(&db.pool)
            .await
            .unwrap();
        let (code, out) = run(&["outbox", "retry", "1"]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("transition 1 is pending again"), "{out}");
    }
}

/// The `[outbox]` section of the configuration.
mod config {
    use std::collections::HashMap;
    use std::io::Write;
    use std::time::Duration;

    use ordersync::config::{ConfigError, LoadOptions, OutboxConfig, Settings};

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        Settings::load(&LoadOptions {
            file: Some(file.path().to_owned()),
            base_dir: Some(env!("CARGO_MANIFEST_DIR").into()),
            env: Some(
                env.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<HashMap<_, _>>(),
            ),
        })
        .map(|(settings, _)| settings)
    }

    fn refused(text: &str) -> String {
        match load(text, &[]) {
            Ok(settings) => panic!("accepted: {:?}", settings.outbox),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_shipped_files_hold_the_defaults_and_every_key_can_be_set() {
        assert_eq!(load("", &[]).unwrap().outbox, OutboxConfig::default());
        let example =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml"))
                .unwrap();
        let section = example
            .split("[outbox]")
            .nth(1)
            .unwrap()
            .split("\n[")
            .next()
            .unwrap();
        for key in [
            "concurrency",
            "lease",
            "poll_interval",
            "min_backoff",
            "max_backoff",
            "max_attempts",
        ] {
            assert!(
                section.contains(&format!("\n{key} = ")),
                "config/example.toml describes outbox.{key}"
            );
        }

        let settings = load(
            "[outbox]\nconcurrency = 2\nlease = \"90s\"\npoll_interval = \"1s\"\nmin_backoff = \"250ms\"\nmax_backoff = \"1m\"\nmax_attempts = 3\n",
            &[("ORDERSYNC__OUTBOX__CONCURRENCY", "8")],
        )
        .unwrap();
        assert_eq!(
            settings.outbox,
            OutboxConfig {
                concurrency: 8,
                lease: Duration::from_secs(90),
                poll_interval: Duration::from_secs(1),
                min_backoff: Duration::from_millis(250),
                max_backoff: Duration::from_secs(60),
                max_attempts: 3,
            }
        );
    }

    #[test]
    fn invalid_values_and_unknown_keys_name_the_key() {
        for (text, key) in [
            ("[outbox]\nconcurrency = 0\n", "outbox.concurrency"),
            ("[outbox]\nlease = \"0s\"\n", "outbox.lease"),
            ("[outbox]\nlease = \"soon\"\n", "outbox.lease"),
            ("[outbox]\npoll_interval = \"0s\"\n", "outbox.poll_interval"),
            ("[outbox]\nmin_backoff = \"0s\"\n", "outbox.min_backoff"),
            (
                "[outbox]\nmin_backoff = \"1m\"\nmax_backoff = \"10s\"\n",
                "outbox.max_backoff",
            ),
            ("[outbox]\nmax_attempts = 0\n", "outbox.max_attempts"),
            ("[outbox]\nmax_attempts = 1001\n", "outbox.max_attempts"),
            ("[outbox]\nlease_ttl = \"1m\"\n", "lease_ttl"),
        ] {
            let error = refused(text);
            assert!(error.contains(key), "{text}: {error}");
        }
        let error = refused(
            "[outbox]\nlease = \"20s\"\n[[accounts]]\nname = \"a\"\nmarketplace = \"labs\"\ntoken = \"tok-t\"\ntimeout = \"30s\"\n",
        );
        assert!(
            error.contains("outbox.lease") && error.contains("accounts[0].timeout = 30s"),
            "{error}"
        );
    }
}

/// The running daemon: `ordersync outbox add` queues, the daemon's worker (woken by NOTIFY, its polling
/// an hour away) pushes the transition to the sandbox once, and the shutdown future stops it.
mod daemon {
    use std::collections::HashMap;
    use std::io::Write;
    use std::time::Duration;

    use ordersync::config::{LoadOptions, Settings};
    use ordersync::sandbox::{Api, Sandbox, SandboxConfig};
    use sqlx::postgres::{PgListener, PgPool};
    use tokio_util::sync::CancellationToken;

    const TOKEN_VAR: &str = "DAEMON_TEST_LABS_TOKEN";

    /// Test-only triggers in the test's own database, so the test waits on notifications instead of
    /// polling: `test_runs` when a poll run ends, `test_outbox` when a transition changes state.
    async fn signal_progress(pool: &PgPool) {
        for statement in [
            "create function test_run_ended() returns trigger language plpgsql as $$
             begin
                 if new.outcome <> 'running' then
                     perform pg_notify('test_runs', new.outcome);
                 end if;
                 return null;
             end $$",
            "create trigger test_run_ended after insert or update on sync_runs
             for each row execute function test_run_ended()",
            "create function test_outbox_state() returns trigger language plpgsql as $$
             begin
                 perform pg_notify('test_outbox', new.id || ':' || new.state);
                 return null;
             end $$",
            "create trigger test_outbox_state after insert or update of state on outbox
             for each row execute function test_outbox_state()",
        ] {
            sqlx::query(statement).execute(pool).await.unwrap();
        }
    }

    /// Waits for a notification on `channel` whose payload satisfies `wanted`.
    async fn wait_for(listener: &mut PgListener, channel: &str, wanted: impl Fn(&str) -> bool) {
        tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let n = listener.recv().await.unwrap();
                if n.channel() == channel && wanted(n.payload()) {
                    return;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no matching notification on {channel}"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_transition_queued_by_the_cli_is_pushed_once_by_the_running_daemon() {
        let sandbox = Sandbox::start(SandboxConfig {
            orders_per_api: 40,
            ..SandboxConfig::default()
        })
        .await
        .unwrap();
        sandbox.add_orders(Api::Labs, 3);
        let db = super::common::test_db().await;
        signal_progress(&db.pool).await;
        let mut listener = PgListener::connect_with(&db.pool).await.unwrap();
        listener
            .listen_all(["test_runs", "test_outbox"])
            .await
            .unwrap();

        // The first scheduled poll is a year away at most and the worker's own polling an hour: only the
        // start-up poll and notifications make anything happen while the test runs.
        let config = format!(
            r#"
[http]
listen = "127.0.0.1:0"

[outbox]
poll_interval = "1h"
min_backoff = "100ms"
max_backoff = "1s"

[[accounts]]
name = "shop"
marketplace = "labs"
base_url = "{}"
schedule = "0 0 0 1 1 *"
requests_per_second = 1000
timeout = "5s"
token = {{ env = "{TOKEN_VAR}" }}
"#,
            sandbox.base_url(Api::Labs)
        );
        let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        file.write_all(config.as_bytes()).unwrap();
        let token_value = sandbox.credentials().labs_token.clone();
        let (settings, _) = Settings::load(&LoadOptions {
            file: Some(file.path().to_owned()),
            base_dir: Some(env!("CARGO_MANIFEST_DIR").into()),
            env: Some(HashMap::from([(TOKEN_VAR.to_owned(), token_value.clone())])),
        })
        .unwrap();
        assert_eq!(settings.outbox.poll_interval, Duration::from_secs(3600));

        // The daemon closes its pool when it stops: give it one of its own.
        let daemon_pool = PgPool::connect(&db.url).await.unwrap();
        let shutdown = CancellationToken::new();
        let daemon = tokio::spawn(ordersync::daemon::run(
            settings,
            daemon_pool,
            shutdown.clone().cancelled_owned(),
        ));
        // The start-up poll finished: the daemon is up, its worker found nothing to do and waits.
        wait_for(&mut listener, "test_runs", |outcome| outcome == "succeeded").await;

        let order = sandbox
            .orders(Api::Labs)
            .into_iter()
            .find(|o| o.status.starts_with("PENDING_APPROVE"))
            .expect("an order awaiting approval")
            .external_id;
        sandbox.clear_audit();
        let mut add = tokio::process::Command::new(env!("CARGO_BIN_EXE_ordersync"));
        for (key, _) in std::env::vars() {
            if key.starts_with("ORDERSYNC") || key == "RUST_LOG" {
                add.env_remove(key);
            }
        }
        let output = add
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("--config")
            .arg(file.path())
            .args([
                "outbox",
                "add",
                "--account",
                "shop",
                "--order",
                &order,
                "set-status",
                "--arg",
                "status_code=1",
            ])
            .env("DATABASE_URL", &db.url)
            .env(TOKEN_VAR, &token_value)
            .output()
            .await
            .unwrap();
        let out = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{out}");
        let id: i64 = sqlx::query_scalar("select id from outbox where order_external_id = $1")
            .bind(&order)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        let done = format!("{id}:succeeded");
        wait_for(&mut listener, "test_outbox", |payload| payload == done).await;

        let r = super::row(&db.pool, id).await;
        assert_eq!((r.state.as_str(), r.attempts), ("succeeded", 1));
        let effects: Vec<_> = sandbox
            .audit()
            .into_iter()
            .filter(|e| e.effect.is_some())
            .collect();
        assert_eq!(effects.len(), 1, "{effects:#?}");
        assert_eq!(effects[0].operation, "orders.status");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(effects[0].body.as_deref().unwrap()).unwrap(),
            serde_json::json!({"orderId": order.parse::<u64>().unwrap(), "statusCode": 1})
        );

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), daemon)
            .await
            .expect("the daemon stops within its deadline")
            .unwrap()
            .unwrap();
        let running: i64 =
            sqlx::query_scalar("select count(*) from outbox where state = 'running'")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!(running, 0, "no claim is left behind");
    }
}

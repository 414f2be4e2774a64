//! Orders, their lines, packages and state history, and the unknown values they carried.
//!
//! [`write_pages`] (and [`write_page`], its form for one page) is the only way orders enter the database:
//! one transaction per write — a page, a part of a large page, or several consecutive pages the poller
//! had ready — holding the upserts, the lease check and the cursor checkpoint, with a fixed number of
//! statements per write (never one round trip per order). An order whose content hash is unchanged is
//! not rewritten; a change of canonical state or raw status appends one `order_state_changes` row.
//! Its two halves, [`prepare`] (the write's own orders) and [`PreparedWrite::commit`] (the rows every
//! write of the account shares), let the poller write one page's orders while the write before commits.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use sqlx::{PgExecutor, PgPool};

use super::StoreError;
use super::leases::Lease;
use crate::domain::{Currency, MarketplaceKind, Order, OrderLine, OrderState, Package, RawStatus};

/// What a page write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageCounts {
    pub seen: u32,
    pub inserted: u32,
    pub updated: u32,
    pub unchanged: u32,
}

impl std::ops::AddAssign for PageCounts {
    fn add_assign(&mut self, other: PageCounts) {
        self.seen += other.seen;
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
    }
}

/// A page to write.
#[derive(Debug, Clone, Copy)]
pub struct PageWrite<'a> {
    pub account_id: i64,
    pub marketplace: MarketplaceKind,
    pub orders: &'a [Order],
    /// The start of the request window the page answered, if it answered one.
    pub window_from: Option<DateTime<Utc>>,
    /// The cursor this page justifies, if any: `(stream, value)`.
    pub checkpoint: Option<(&'a str, DateTime<Utc>)>,
    /// When set, the write fails with [`StoreError::LeaseLost`] unless the lease is still ours, and
    /// renews it.
    pub lease: Option<&'a Lease>,
}

/// Pages to write in one transaction.
#[derive(Debug, Clone, Copy)]
pub struct PagesWrite<'a> {
    pub account_id: i64,
    pub marketplace: MarketplaceKind,
    /// The pages (or parts of pages) in the order they were fetched: where an order appears more than
    /// once, the last occurrence is written, with the earliest window that returned it.
    pub pages: &'a [PageOrders<'a>],
    /// The cursor these pages justify, if any: `(stream, value)`.
    pub checkpoint: Option<(&'a str, DateTime<Utc>)>,
    /// When set, the write fails with [`StoreError::LeaseLost`] unless the lease is still ours, and
    /// renews it.
    pub lease: Option<&'a Lease>,
}

/// The orders of one page (or part of one), and the window that returned them.
#[derive(Debug, Clone, Copy)]
pub struct PageOrders<'a> {
    pub orders: &'a [Order],
    /// The start of the request window the page answered, if it answered one.
    pub window_from: Option<DateTime<Utc>>,
}

/// The content hash of an order: SHA-256 over its normalized form and raw payload; and whether it may
/// hold a NUL character (its JSON form holds the `\u0000` escape), which PostgreSQL stores nowhere.
fn content_hash(order: &Order) -> (Vec<u8>, bool) {
    // serde_json maps are sorted, so equal content always serializes to equal bytes. The raw payload
    // is most of them (with the lines' and packages' parts of it): room for it twice over saves
    // growing the buffer step by step.
    let mut bytes = Vec::with_capacity(2 * order.raw.json().len() + 1024);
    if serde_json::to_writer(&mut bytes, order).is_err() {
        bytes.clear();
    }
    let nul = std::str::from_utf8(&bytes).is_ok_and(|json| json.contains("\\u0000"));
    (Sha256::digest(&bytes).to_vec(), nul)
}

struct Existing {
    state: String,
    status_code: Option<String>,
    status_text: Option<String>,
    content_hash: Vec<u8>,
}

/// Writes a page of orders and its checkpoint in one transaction.
pub async fn write_page(pool: &PgPool, page: PageWrite<'_>) -> Result<PageCounts, StoreError> {
    write_pages(
        pool,
        PagesWrite {
            account_id: page.account_id,
            marketplace: page.marketplace,
            pages: &[PageOrders {
                orders: page.orders,
                window_from: page.window_from,
            }],
            checkpoint: page.checkpoint,
            lease: page.lease,
        },
    )
    .await
}

/// An order to write: its last occurrence among the pages, its content hash, and the earliest window
/// that returned it.
struct Row<'a> {
    order: &'a Order,
    hash: &'a [u8],
    window_from: Option<DateTime<Utc>>,
}

/// Writes consecutive pages of orders and their checkpoint in one transaction.
pub async fn write_pages(pool: &PgPool, write: PagesWrite<'_>) -> Result<PageCounts, StoreError> {
    prepare(
        pool.begin().await?,
        write.account_id,
        write.marketplace,
        write.pages,
    )
    .await?
    .commit(write.checkpoint, write.lease)
    .await
}

/// A write whose orders are in an open transaction, not yet committed.
///
/// [`prepare`] touches only the rows of the write's own orders (and their lines, packages and
/// history); what other writes of the account share — the lease, the unknown-value counters, the
/// cursor — waits for [`PreparedWrite::commit`]. So a write prepared while the one before it commits
/// never waits on rows that one holds, nor makes it wait, as long as their orders differ. Dropping it
/// rolls the transaction back.
pub struct PreparedWrite {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    account_id: i64,
    marketplace: MarketplaceKind,
    unknown: UnknownValues,
    counts: PageCounts,
}

/// Writes the orders of consecutive pages in `transaction`, left open for [`PreparedWrite::commit`].
pub async fn prepare(
    transaction: sqlx::Transaction<'static, sqlx::Postgres>,
    account_id: i64,
    marketplace: MarketplaceKind,
    pages: &[PageOrders<'_>],
) -> Result<PreparedWrite, StoreError> {
    let mut write = PreparedWrite {
        tx: transaction,
        account_id,
        marketplace,
        unknown: UnknownValues::default(),
        counts: PageCounts::default(),
    };
    write.add(pages).await?;
    Ok(write)
}

impl PreparedWrite {
    /// Writes the orders of more pages in the transaction, after those written before: an order
    /// written before is written again as these pages have it, with its history.
    pub async fn add(&mut self, pages: &[PageOrders<'_>]) -> Result<(), StoreError> {
        // Each order with its content hash, as the marketplace sent it (so an order that does not
        // change stays unchanged), and the order as it is written: with U+FFFD in place of any NUL
        // character, which PostgreSQL stores nowhere, the only change made to what was sent.
        let sent: Vec<(&Order, Option<DateTime<Utc>>)> = pages
            .iter()
            .flat_map(|page| page.orders.iter().map(|order| (order, page.window_from)))
            .collect();
        let hashed: Vec<(Vec<u8>, Option<Order>)> = sent
            .iter()
            .map(|(order, _)| {
                let (hash, nul) = content_hash(order);
                (hash, nul.then(|| order.without_nul()))
            })
            .collect();
        // The last occurrence of an order wins; the earliest window that returned it is kept, as the
        // writes of those pages one by one would keep it (`least` in the upsert).
        let seen = sent.len();
        let mut by_id: HashMap<&str, Row<'_>> = HashMap::with_capacity(seen);
        for ((order, window_from), (hash, stored)) in sent.iter().zip(&hashed) {
            let order = stored.as_ref().unwrap_or(order);
            by_id
                .entry(order.external_id.as_str())
                .and_modify(|last| {
                    (last.order, last.hash) = (order, hash);
                    last.window_from = earliest(last.window_from, *window_from);
                })
                .or_insert(Row {
                    order,
                    hash,
                    window_from: *window_from,
                });
        }
        let ids: Vec<&str> = by_id.keys().copied().collect();

        let existing: HashMap<String, Existing> =
            sqlx::query_as::<_, (String, String, Option<String>, Option<String>, Vec<u8>)>(
                "select external_id, state, status_code, status_text, content_hash from orders
                 where account_id = $1 and external_id = any($2) for update",
            )
            .bind(self.account_id)
            .bind(&ids)
            .fetch_all(&mut *self.tx)
            .await?
            .into_iter()
            .map(|(id, state, status_code, status_text, content_hash)| {
                (
                    id,
                    Existing {
                        state,
                        status_code,
                        status_text,
                        content_hash,
                    },
                )
            })
            .collect();

        let mut counts = PageCounts {
            seen: seen as u32,
            ..PageCounts::default()
        };
        let distinct = by_id.len();
        let mut to_write: Vec<Row<'_>> = Vec::new();
        for row in by_id.into_values() {
            match existing.get(&row.order.external_id) {
                Some(old) if old.content_hash == row.hash => {
                    counts.unchanged += 1;
                    continue;
                }
                Some(_) => counts.updated += 1,
                None => counts.inserted += 1,
            }
            to_write.push(row);
        }
        // Duplicates within the pages were seen but not written twice.
        counts.unchanged += (seen - distinct) as u32;

        if !to_write.is_empty() {
            let order_ids = upsert_orders(&mut self.tx, self.account_id, &to_write).await?;
            insert_history(&mut self.tx, &to_write, &existing, &order_ids).await?;
            replace_lines_and_packages(&mut self.tx, &to_write, &existing, &order_ids).await?;
        }
        self.unknown.add(&to_write);
        self.counts += counts;
        Ok(())
    }

    /// Renews the lease (failing with [`StoreError::LeaseLost`] if it is no longer ours), counts the
    /// unknown values, advances the cursor to `checkpoint` and commits.
    pub async fn commit(
        mut self,
        checkpoint: Option<(&str, DateTime<Utc>)>,
        lease: Option<&Lease>,
    ) -> Result<PageCounts, StoreError> {
        if let Some(lease) = lease
            && !super::leases::renew(&mut *self.tx, lease).await?
        {
            return Err(StoreError::LeaseLost {
                account_id: lease.account_id,
                stream: lease.stream.clone(),
            });
        }
        self.unknown.record(&mut self.tx, self.marketplace).await?;
        if let Some((stream, value)) = checkpoint {
            super::cursors::advance(&mut *self.tx, self.account_id, stream, value).await?;
        }
        self.tx.commit().await?;
        Ok(self.counts)
    }
}

/// The earlier of two window starts, either of which may be missing.
fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn upsert_orders(
    tx: &mut sqlx::PgConnection,
    account_id: i64,
    rows: &[Row<'_>],
) -> Result<HashMap<String, i64>, sqlx::Error> {
    let mut external_id = Vec::with_capacity(rows.len());
    let mut order_number = Vec::with_capacity(rows.len());
    let mut state = Vec::with_capacity(rows.len());
    let mut status_code = Vec::with_capacity(rows.len());
    let mut status_text = Vec::with_capacity(rows.len());
    let mut total_amount: Vec<Option<Decimal>> = Vec::with_capacity(rows.len());
    let mut shipping_amount: Vec<Option<Decimal>> = Vec::with_capacity(rows.len());
    let mut currency = Vec::with_capacity(rows.len());
    let mut currency_raw = Vec::with_capacity(rows.len());
    let mut customer_name = Vec::with_capacity(rows.len());
    let mut customer_email = Vec::with_capacity(rows.len());
    let mut shipping_city = Vec::with_capacity(rows.len());
    let mut placed_at = Vec::with_capacity(rows.len());
    let mut source_updated_at = Vec::with_capacity(rows.len());
    let mut hash = Vec::with_capacity(rows.len());
    let mut raw = Vec::with_capacity(rows.len());
    let mut window_from = Vec::with_capacity(rows.len());
    for Row {
        order,
        hash: h,
        window_from: w,
    } in rows
    {
        external_id.push(order.external_id.as_str());
        order_number.push(order.order_number.as_deref());
        state.push(order.state.as_str());
        status_code.push(order.status.code.as_deref());
        status_text.push(order.status.text.as_deref());
        total_amount.push(order.total_amount);
        shipping_amount.push(order.shipping_amount);
        currency.push(order.currency.as_ref().and_then(|c| c.iso));
        currency_raw.push(order.currency.as_ref().map(|c| c.raw.as_str()));
        customer_name.push(order.customer_name.as_deref());
        customer_email.push(order.customer_email.as_deref());
        shipping_city.push(order.shipping_city.as_deref());
        placed_at.push(order.placed_at);
        source_updated_at.push(order.source_updated_at);
        hash.push(*h);
        raw.push(order.raw.json());
        window_from.push(*w);
    }
    let ids: Vec<(String, i64)> = sqlx::query_as(
        "insert into orders (account_id, external_id, order_number, state, status_code, status_text,
            total_amount, shipping_amount, currency, currency_raw, customer_name, customer_email,
            shipping_city, placed_at, source_updated_at, content_hash, raw, first_window_from)
         select $1, t.external_id, t.order_number, t.state, t.status_code, t.status_text,
            t.total_amount, t.shipping_amount, t.currency, t.currency_raw, t.customer_name,
            t.customer_email, t.shipping_city, t.placed_at, t.source_updated_at, t.content_hash,
            t.raw::jsonb, t.first_window_from
         from unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::numeric[],
            $8::numeric[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
            $14::timestamptz[], $15::timestamptz[], $16::bytea[], $17::text[], $18::timestamptz[])
            as t(external_id, order_number, state, status_code, status_text, total_amount,
                 shipping_amount, currency, currency_raw, customer_name, customer_email,
                 shipping_city, placed_at, source_updated_at, content_hash, raw, first_window_from)
         on conflict (account_id, external_id) do update set
            order_number = excluded.order_number, state = excluded.state,
            status_code = excluded.status_code, status_text = excluded.status_text,
            total_amount = excluded.total_amount, shipping_amount = excluded.shipping_amount,
            currency = excluded.currency, currency_raw = excluded.currency_raw,
            customer_name = excluded.customer_name, customer_email = excluded.customer_email,
            shipping_city = excluded.shipping_city, placed_at = excluded.placed_at,
            source_updated_at = excluded.source_updated_at, content_hash = excluded.content_hash,
            raw = excluded.raw, last_changed_at = now(),
            first_window_from = least(orders.first_window_from, excluded.first_window_from)
         returning external_id, id",
    )
    .bind(account_id)
    .bind(&external_id)
    .bind(&order_number)
    .bind(&state)
    .bind(&status_code)
    .bind(&status_text)
    .bind(&total_amount)
    .bind(&shipping_amount)
    .bind(&currency)
    .bind(&currency_raw)
    .bind(&customer_name)
    .bind(&customer_email)
    .bind(&shipping_city)
    .bind(&placed_at)
    .bind(&source_updated_at)
    .bind(&hash)
    .bind(&raw)
    .bind(&window_from)
    .fetch_all(&mut *tx)
    .await?;
    Ok(ids.into_iter().collect())
}

async fn insert_history(
    tx: &mut sqlx::PgConnection,
    rows: &[Row<'_>],
    existing: &HashMap<String, Existing>,
    order_ids: &HashMap<String, i64>,
) -> Result<(), sqlx::Error> {
    let mut order_id = Vec::new();
    let mut from_state = Vec::new();
    let mut to_state = Vec::new();
    let mut from_code = Vec::new();
    let mut from_text = Vec::new();
    let mut to_code = Vec::new();
    let mut to_text = Vec::new();
    for Row { order, .. } in rows {
        let (Some(old), Some(id)) = (
            existing.get(&order.external_id),
            order_ids.get(&order.external_id),
        ) else {
            continue;
        };
        let changed = old.state != order.state.as_str()
            || old.status_code.as_deref() != order.status.code.as_deref()
            || old.status_text.as_deref() != order.status.text.as_deref();
        if changed {
            order_id.push(*id);
            from_state.push(old.state.as_str());
            to_state.push(order.state.as_str());
            from_code.push(old.status_code.as_deref());
            from_text.push(old.status_text.as_deref());
            to_code.push(order.status.code.as_deref());
            to_text.push(order.status.text.as_deref());
        }
    }
    if order_id.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "insert into order_state_changes (order_id, from_state, to_state, from_status_code,
            from_status_text, to_status_code, to_status_text)
         select * from unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
            $6::text[], $7::text[])",
    )
    .bind(&order_id)
    .bind(&from_state)
    .bind(&to_state)
    .bind(&from_code)
    .bind(&from_text)
    .bind(&to_code)
    .bind(&to_text)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn replace_lines_and_packages(
    tx: &mut sqlx::PgConnection,
    rows: &[Row<'_>],
    existing: &HashMap<String, Existing>,
    order_ids: &HashMap<String, i64>,
) -> Result<(), sqlx::Error> {
    // Orders new to the database have nothing to replace (a backfill skips this round trip).
    let replaced: Vec<i64> = order_ids
        .iter()
        .filter(|(external_id, _)| existing.contains_key(*external_id))
        .map(|(_, id)| *id)
        .collect();
    if !replaced.is_empty() {
        sqlx::query(
            "with lines as (delete from order_lines where order_id = any($1))
             delete from order_packages where order_id = any($1)",
        )
        .bind(&replaced)
        .execute(&mut *tx)
        .await?;
    }

    let mut l_order = Vec::new();
    let mut l_external = Vec::new();
    let mut l_position = Vec::new();
    let mut l_package = Vec::new();
    let mut l_sku = Vec::new();
    let mut l_name = Vec::new();
    let mut l_quantity = Vec::new();
    let mut l_unit = Vec::new();
    let mut l_total = Vec::new();
    let mut l_currency = Vec::new();
    let mut l_currency_raw = Vec::new();
    let mut l_state = Vec::new();
    let mut l_code = Vec::new();
    let mut l_text = Vec::new();
    let mut l_raw = Vec::new();
    let mut p_order = Vec::new();
    let mut p_external = Vec::new();
    let mut p_state = Vec::new();
    let mut p_code = Vec::new();
    let mut p_text = Vec::new();
    let mut p_carrier = Vec::new();
    let mut p_tracking = Vec::new();
    let mut p_total = Vec::new();
    let mut p_raw = Vec::new();
    for Row { order, .. } in rows {
        let Some(id) = order_ids.get(&order.external_id) else {
            continue;
        };
        let mut seen_lines = std::collections::HashSet::new();
        for (position, line) in order.lines.iter().enumerate() {
            if !seen_lines.insert(line.external_id.as_str()) {
                continue;
            }
            l_order.push(*id);
            l_external.push(line.external_id.as_str());
            l_position.push(position as i32);
            l_package.push(line.package_external_id.as_deref());
            l_sku.push(line.sku.as_deref());
            l_name.push(line.product_name.as_deref());
            l_quantity.push(line.quantity);
            l_unit.push(line.unit_price);
            l_total.push(line.total_price);
            l_currency.push(line.currency.as_ref().and_then(|c| c.iso));
            l_currency_raw.push(line.currency.as_ref().map(|c| c.raw.as_str()));
            l_state.push(line.state.as_str());
            l_code.push(line.status.code.as_deref());
            l_text.push(line.status.text.as_deref());
            l_raw.push(line.raw.json());
        }
        let mut seen_packages = std::collections::HashSet::new();
        for package in &order.packages {
            if !seen_packages.insert(package.external_id.as_str()) {
                continue;
            }
            p_order.push(*id);
            p_external.push(package.external_id.as_str());
            p_state.push(package.state.as_str());
            p_code.push(package.status.code.as_deref());
            p_text.push(package.status.text.as_deref());
            p_carrier.push(package.carrier.as_deref());
            p_tracking.push(package.tracking_number.as_deref());
            p_total.push(package.total_amount);
            p_raw.push(package.raw.json());
        }
    }
    if l_order.is_empty() && p_order.is_empty() {
        return Ok(());
    }
    // One statement for both tables: an empty array inserts nothing.
    sqlx::query(
        "with lines as (
            insert into order_lines (order_id, external_id, position, package_external_id, sku,
                product_name, quantity, unit_price, total_price, currency, currency_raw, state,
                status_code, status_text, raw)
            select t.order_id, t.external_id, t.position, t.package, t.sku, t.name, t.quantity,
                t.unit_price, t.total_price, t.currency, t.currency_raw, t.state, t.code, t.text,
                t.raw::jsonb
            from unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[],
                $7::numeric[], $8::numeric[], $9::numeric[], $10::text[], $11::text[], $12::text[],
                $13::text[], $14::text[], $15::text[])
                as t(order_id, external_id, position, package, sku, name, quantity, unit_price,
                     total_price, currency, currency_raw, state, code, text, raw))
         insert into order_packages (order_id, external_id, state, status_code, status_text,
            carrier, tracking_number, total_amount, raw)
         select t.order_id, t.external_id, t.state, t.code, t.text, t.carrier, t.tracking,
            t.total, t.raw::jsonb
         from unnest($16::bigint[], $17::text[], $18::text[], $19::text[], $20::text[], $21::text[],
            $22::text[], $23::numeric[], $24::text[])
            as t(order_id, external_id, state, code, text, carrier, tracking, total, raw)",
    )
    .bind(&l_order)
    .bind(&l_external)
    .bind(&l_position)
    .bind(&l_package)
    .bind(&l_sku)
    .bind(&l_name)
    .bind(&l_quantity)
    .bind(&l_unit)
    .bind(&l_total)
    .bind(&l_currency)
    .bind(&l_currency_raw)
    .bind(&l_state)
    .bind(&l_code)
    .bind(&l_text)
    .bind(&l_raw)
    .bind(&p_order)
    .bind(&p_external)
    .bind(&p_state)
    .bind(&p_code)
    .bind(&p_text)
    .bind(&p_carrier)
    .bind(&p_tracking)
    .bind(&p_total)
    .bind(&p_raw)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The statuses and currencies without a mapping that a write's orders carried, counted. In key order,
/// so that concurrent writes (of two accounts of one marketplace) update the rows they share in the same
/// order and never deadlock on them.
#[derive(Default)]
struct UnknownValues(BTreeMap<(&'static str, String), i64>);

impl UnknownValues {
    /// Counts those of `rows`.
    fn add(&mut self, rows: &[Row<'_>]) {
        let seen = &mut self.0;
        // A status that was never sent is not an unknown value.
        let raw_of = |status: &RawStatus| status.code.clone().or_else(|| status.text.clone());
        for Row { order, .. } in rows {
            if order.state == OrderState::Unknown
                && let Some(raw) = raw_of(&order.status)
            {
                *seen.entry(("status", raw)).or_default() += 1;
            }
            for line in &order.lines {
                if line.state == OrderState::Unknown
                    && let Some(raw) = raw_of(&line.status)
                {
                    *seen.entry(("line_status", raw)).or_default() += 1;
                }
            }
            let currencies = order
                .currency
                .iter()
                .chain(order.lines.iter().filter_map(|l| l.currency.as_ref()));
            for currency in currencies {
                if currency.iso.is_none() {
                    *seen.entry(("currency", currency.raw.clone())).or_default() += 1;
                }
            }
        }
    }

    /// Adds the counts to `unknown_values`, for operators.
    async fn record(
        self,
        tx: &mut sqlx::PgConnection,
        marketplace: MarketplaceKind,
    ) -> Result<(), sqlx::Error> {
        if self.0.is_empty() {
            return Ok(());
        }
        let (keys, counts): (Vec<_>, Vec<i64>) = self.0.into_iter().unzip();
        let (fields, values): (Vec<&str>, Vec<String>) = keys.into_iter().unzip();
        sqlx::query(
            "insert into unknown_values (marketplace, field, value, occurrences)
             select $1, t.field, t.value, t.n from unnest($2::text[], $3::text[], $4::bigint[])
                as t(field, value, n)
             on conflict (marketplace, field, value) do update
                set occurrences = unknown_values.occurrences + excluded.occurrences,
                    last_seen_at = now()",
        )
        .bind(marketplace.as_str())
        .bind(&fields)
        .bind(&values)
        .bind(&counts)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

/// The names of the final states, as [`OrderState::is_final`] defines them.
/// The canonical states that are final (`true`) or open (`false`), as stored.
fn states(is_final: bool) -> Vec<&'static str> {
    OrderState::ALL
        .into_iter()
        .filter(|s| s.is_final() == is_final)
        .map(OrderState::as_str)
        .collect()
}

/// External ids of the account's orders that are not in a final state, oldest first; with
/// `stored_before`, only those whose content was last stored before it (by the database's [`clock`]).
pub async fn open_order_ids(
    db: impl PgExecutor<'_>,
    account_id: i64,
    stored_before: Option<DateTime<Utc>>,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "select external_id from orders
         where account_id = $1 and state <> all($2)
           and ($3::timestamptz is null or last_changed_at < $3)
         order by placed_at nulls first, id",
    )
    .bind(account_id)
    .bind(states(true))
    .bind(stored_before)
    .fetch_all(db)
    .await
}

/// The database's clock, which stamps stored orders (`first_seen_at`, `last_changed_at`).
pub async fn clock(db: impl PgExecutor<'_>) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar("select now()").fetch_one(db).await
}

/// Where to start re-reading the account's orders that are not final: the earliest of their placement
/// times and of the windows that first returned them.
pub async fn open_orders_start(
    db: impl PgExecutor<'_>,
    account_id: i64,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    // The earliest of each open state, read from the start of `orders_account_state_start_idx`
    // (ascending, nulls last, so the first row has a start whenever one of the state's orders has).
    sqlx::query_scalar(
        "select min(earliest.start) from unnest($2::text[]) as open(state)
         cross join lateral (
            select least(placed_at, first_window_from) as start from orders
            where account_id = $1 and orders.state = open.state
            order by least(placed_at, first_window_from) limit 1
         ) as earliest",
    )
    .bind(account_id)
    .bind(states(false))
    .fetch_one(db)
    .await
}

/// The raw payload ([`Order::raw`], as JSON text) stored for each of `external_ids` the account holds.
pub async fn raw_of(
    db: &PgPool,
    account_id: i64,
    external_ids: &[String],
) -> Result<HashMap<String, String>, StoreError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "select external_id, raw::text from orders where account_id = $1 and external_id = any($2)",
    )
    .bind(account_id)
    .bind(external_ids)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Reads one stored order back into its domain form (lines and packages included), as the outbox needs it
/// to check a transition against the order's last known state.
pub async fn load(
    db: &PgPool,
    account_id: i64,
    external_id: &str,
) -> Result<Option<Order>, StoreError> {
    let Some(row) = sqlx::query_as::<_, StoredOrder>(
        "select id, external_id, order_number, state, status_code, status_text, total_amount,
            shipping_amount, currency_raw, customer_name, customer_email, shipping_city, placed_at,
            source_updated_at, raw
         from orders where account_id = $1 and external_id = $2",
    )
    .bind(account_id)
    .bind(external_id)
    .fetch_optional(db)
    .await?
    else {
        return Ok(None);
    };
    let lines: Vec<StoredLine> = sqlx::query_as(
        "select external_id, package_external_id, sku, product_name, quantity, unit_price,
            total_price, currency_raw, state, status_code, status_text, raw
         from order_lines where order_id = $1 order by position",
    )
    .bind(row.id)
    .fetch_all(db)
    .await?;
    let packages: Vec<StoredPackage> = sqlx::query_as(
        "select external_id, state, status_code, status_text, carrier, tracking_number,
            total_amount, raw
         from order_packages where order_id = $1 order by external_id",
    )
    .bind(row.id)
    .fetch_all(db)
    .await?;
    // The states were written from `OrderState::as_str`; a value the check constraint let through that
    // this build does not know reads as unknown.
    let state = |s: &str| s.parse().unwrap_or(OrderState::Unknown);
    Ok(Some(Order {
        external_id: row.external_id,
        order_number: row.order_number,
        state: state(&row.state),
        status: RawStatus {
            code: row.status_code,
            text: row.status_text,
        },
        total_amount: row.total_amount,
        shipping_amount: row.shipping_amount,
        currency: row.currency_raw.as_deref().map(Currency::parse),
        customer_name: row.customer_name,
        customer_email: row.customer_email,
        shipping_city: row.shipping_city,
        placed_at: row.placed_at,
        source_updated_at: row.source_updated_at,
        lines: lines
            .into_iter()
            .map(|l| OrderLine {
                external_id: l.external_id,
                package_external_id: l.package_external_id,
                sku: l.sku,
                product_name: l.product_name,
                quantity: l.quantity,
                unit_price: l.unit_price,
                total_price: l.total_price,
                currency: l.currency_raw.as_deref().map(Currency::parse),
                state: state(&l.state),
                status: RawStatus {
                    code: l.status_code,
                    text: l.status_text,
                },
                raw: l.raw.into(),
            })
            .collect(),
        packages: packages
            .into_iter()
            .map(|p| Package {
                external_id: p.external_id,
                state: state(&p.state),
                status: RawStatus {
                    code: p.status_code,
                    text: p.status_text,
                },
                carrier: p.carrier,
                tracking_number: p.tracking_number,
                total_amount: p.total_amount,
                raw: p.raw.into(),
            })
            .collect(),
        raw: row.raw.into(),
    }))
}

#[derive(sqlx::FromRow)]
struct StoredOrder {
    id: i64,
    external_id: String,
    order_number: Option<String>,
    state: String,
    status_code: Option<String>,
    status_text: Option<String>,
    total_amount: Option<Decimal>,
    shipping_amount: Option<Decimal>,
    currency_raw: Option<String>,
    customer_name: Option<String>,
    customer_email: Option<String>,
    shipping_city: Option<String>,
    placed_at: Option<DateTime<Utc>>,
    source_updated_at: Option<DateTime<Utc>>,
    raw: serde_json::Value,
}

#[derive(sqlx::FromRow)]
struct StoredLine {
    external_id: String,
    package_external_id: Option<String>,
    sku: Option<String>,
    product_name: Option<String>,
    quantity: Decimal,
    unit_price: Option<Decimal>,
    total_price: Option<Decimal>,
    currency_raw: Option<String>,
    state: String,
    status_code: Option<String>,
    status_text: Option<String>,
    raw: serde_json::Value,
}

#[derive(sqlx::FromRow)]
struct StoredPackage {
    external_id: String,
    state: String,
    status_code: Option<String>,
    status_text: Option<String>,
    carrier: Option<String>,
    tracking_number: Option<String>,
    total_amount: Option<Decimal>,
    raw: serde_json::Value,
}

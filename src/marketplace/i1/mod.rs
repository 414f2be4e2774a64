//! The i1 adapter: Akinon's Seller Center integration API (REST/JSON, `docs/i1-seller.txt`).
//!
//! It owns two streams, both windows of at most one day over `updated_at` (`updated_at__gte = from`,
//! `updated_at__lt = to`, RFC 3339 UTC), `limit = page_size`, following the list's `next` URL as the
//! page token (accepted only on the base URL's scheme, host and port):
//! - `orders` lists the orders changed in the window (and backfills);
//! - `item-changes` (changes only: it starts when the account was registered) lists the order items
//!   changed in the window, since an item can change without its order's `updated_at` moving, and
//!   reads each of their orders (`orders/{id}/`) unless the database holds the order with every one
//!   of those items as listed.
//!
//! The lists are ordered by placement or creation, not by the time they are filtered on: a row that
//! changes while its window is paged leaves the window and moves the rows after it one place
//! forward. A page token carries where its page left off (the list's `count` and the last row's id),
//! and each page is asked for from one row earlier, and from further back until that last row is in
//! the answer or from the first row (`I1::window_page`), so that a row moved into a page already read
//! is read too.
//!
//! An i1 order is incomplete on its own: its items live on `order-items/` and its addresses on
//! `customer-addresses/`. The documented filters take one value each (`order__number`, `id`), so for
//! every page of orders the adapter makes one items request per order, one address request per
//! distinct address id of the page (shipping and billing are usually the same address), and one
//! `cancellation-plans/?order=` request per order that is (or has an item that is) cancelling,
//! cancelled or rejected or carries a `cancel_status` — other orders have no plan worth a request.
//! These requests run a few at a time under the account's rate limit; [`Page::requests`] counts them.
//! On an incremental run an order the database holds as listed needs none of them
//! (`without_unchanged`), so a quiet poll makes two requests, one a stream, not a few an order.
//! Customer addresses carry no change time: an address edited in place is read again only with its
//! order's next change.
//!
//! `Order.raw` is `{"order", "items", "shipping_address", "billing_address"[, "cancellation_plans"]}`,
//! each exactly as received. Amounts are the API's decimal strings (or numbers) read from their
//! literal text; `amount` is the order total. Statuses are the documented codes read as text and
//! mapped with the digest's table; new codes map to `unknown`. The one transition (rejecting an
//! item) and reading one order back are in [`transitions`].

#[cfg(test)]
mod proptests;
mod transitions;
mod wire;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::{StreamExt, TryStreamExt};
use reqwest::Method;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderName, HeaderValue};
use serde_json::Value;
use url::Url;

use super::{
    AppliedTransition, Marketplace, MarketplaceError, Page, PageRequest, StatusMap, StreamPlan,
    StreamSpec, Transition, TransitionRefusal,
};
use crate::config::{AccountConfig, Credentials};
use crate::domain::{Order, OrderState};
use crate::http::HttpClient;
use wire::{
    AddressRef, Assembled, BodyError, FetchedAddress, ListPage, StoredOrder, WireAddress, WireItem,
};
use wire::{WireOrder, WirePlan};

const STREAMS: &[StreamSpec] = &[
    StreamSpec {
        name: "orders",
        plan: StreamPlan::Windows {
            max_window: Some(Duration::from_secs(24 * 60 * 60)),
            adaptive: false,
            reread_open: false,
            changes_only: false,
        },
    },
    StreamSpec {
        name: "item-changes",
        plan: StreamPlan::Windows {
            max_window: Some(Duration::from_secs(24 * 60 * 60)),
            adaptive: false,
            reread_open: false,
            changes_only: true,
        },
    },
];

/// How many related-resource requests of one page are in flight at once. The account's rate limit
/// still paces them; this only bounds the connections one page holds.
const RELATED_CONCURRENCY: usize = 4;

/// The i1 adapter for one account.
pub struct I1 {
    http: HttpClient,
    base_url: Url,
    /// The authentication header, or why the configuration cannot produce one.
    auth: Result<(HeaderName, HeaderValue), String>,
    statuses: StatusMap,
}

impl I1 {
    pub fn new(
        account: &AccountConfig,
        http: HttpClient,
        overrides: &HashMap<String, OrderState>,
    ) -> I1 {
        I1 {
            http,
            base_url: account.base_url.clone(),
            auth: auth_header(&account.credentials),
            statuses: StatusMap::new(wire::STATUS_DEFAULTS, overrides),
        }
    }

    async fn fetch_orders(&self, request: &PageRequest) -> Result<Page, MarketplaceError> {
        let counter = AtomicU32::new(0);
        let requests = &counter;
        let page = self.window_page("orders", request, requests).await?;
        let orders = page
            .results
            .into_iter()
            .map(|raw| self.listed(&page.what, raw, &page.body))
            .collect::<Result<Vec<_>, _>>()?;
        let orders = without_unchanged(request, orders).await;
        self.completed(orders, page.next, request.page_size, requests)
            .await
    }

    /// A page of the items changed in the window, as the orders they belong to, each read in full
    /// (its record, items, addresses and plans) unless the database holds every one of its listed
    /// items as it is now ([`PageRequest::stored`]). An item changes without its order's `updated_at`
    /// moving, so the `orders` stream would not list the order again.
    async fn fetch_item_changes(&self, request: &PageRequest) -> Result<Page, MarketplaceError> {
        let counter = AtomicU32::new(0);
        let requests = &counter;
        let page = self.window_page("order-items", request, requests).await?;
        let mut changed: Vec<(String, Vec<Value>)> = Vec::new();
        let mut position: HashMap<String, usize> = HashMap::new();
        for raw in page.results {
            let item = wire::parse::<WireItem>(&raw).map_err(|reason| {
                self.malformed(&page.what, format!("an item: {reason}"), &page.body)
            })?;
            let Some(order) = item.order else {
                return Err(self.malformed(
                    &page.what,
                    format!("item {} names no order", item.id),
                    &page.body,
                ));
            };
            let at = *position.entry(order.clone()).or_insert_with(|| {
                changed.push((order, Vec::new()));
                changed.len() - 1
            });
            changed[at].1.push(raw);
        }
        let unheld = unheld(request, changed).await;
        let reads: Vec<_> = unheld
            .iter()
            .map(|id| self.order_record(id, requests))
            .collect();
        let found: Vec<Option<Listed>> = futures::stream::iter(reads)
            .buffered(RELATED_CONCURRENCY)
            .try_collect()
            .await?;
        let mut orders = Vec::with_capacity(found.len());
        for (id, order) in unheld.iter().zip(found) {
            match order {
                Some(order) => orders.push(order),
                None => tracing::warn!(order = %id, "the order of a changed item is not found"),
            }
        }
        self.completed(orders, page.next, request.page_size, requests)
            .await
    }

    /// The page of `orders`, completed, with the token of its window's next page.
    async fn completed(
        &self,
        orders: Vec<Listed>,
        next: Option<String>,
        page_size: u32,
        requests: &AtomicU32,
    ) -> Result<Page, MarketplaceError> {
        let orders = self.complete(orders, page_size, requests).await?;
        Ok(Page {
            orders,
            next,
            requests: requests.load(Ordering::Relaxed),
            more: None,
        })
    }

    /// One page of the window `[from, to)` of `segment`'s list by `updated_at`: its first, or the
    /// page of [`PageRequest::page`].
    ///
    /// The lists are ordered by placement or creation, not by the filtered time, so a row that
    /// changes while the window is paged leaves it and moves every later row forward: a row that
    /// crosses into a page already read would be skipped for good (an unchanged order of a backfill
    /// is never listed again). So a page token carries where its page left off ([`Resume`]: the
    /// list's `count` then and its last row's id), and a page is asked for from one row earlier: its
    /// first row must be that last row. When it is not in the answer, the page is asked for again
    /// from further back (doubling, and at least one row more than the count fell by) until it is,
    /// or from the first row (that row itself left); the rows up to it are dropped as read. A row
    /// entering the window only moves later rows back (read twice).
    async fn window_page(
        &self,
        segment: &str,
        request: &PageRequest,
        requests: &AtomicU32,
    ) -> Result<WindowPage, MarketplaceError> {
        let window = format!("{}–{}", rfc3339(request.from), rfc3339(request.to));
        let (url, what, resume) = match &request.page {
            None => (
                window_url(&self.base_url, segment, request),
                format!("GET {segment}/ updated {window}"),
                None,
            ),
            Some(token) => {
                let what = format!("GET {segment}/ updated {window} {}", page_label(token));
                let (url, resume) = self.page_token(&what, token)?;
                (url, what, resume)
            }
        };
        let offset = offset_of(&url);
        let seen = resume.as_ref().and_then(|r| r.count);
        let anchor = resume.and_then(|r| r.last).filter(|last| !last.is_empty());
        let mut back = u64::from(anchor.is_some());
        let (list, body, read_before) = loop {
            let asked = earlier_page(&url, back).unwrap_or_else(|| url.clone());
            let (list, body) = self.get_list(&what, asked, requests).await?;
            let Some(last) = &anchor else {
                break (list, body, 0);
            };
            if let Some(at) = list.results.iter().position(|row| row_id(row) == *last) {
                break (list, body, at + 1);
            }
            // Rows before it left, or it left itself: neither the count (taken apart from the rows,
            // and net of rows entering) nor the rows tell which, so the page is read from further
            // back until the row is in it, or from the first row.
            if offset.is_none_or(|offset| back >= offset) {
                break (list, body, 0);
            }
            let left = seen
                .zip(list.count())
                .map_or(0, |(seen, count)| seen.saturating_sub(count));
            back = (back * 2).max(left + 1);
        };
        let resume = Resume {
            count: list.count(),
            last: list.results.last().map(row_id),
        };
        let next = list
            .next
            .as_deref()
            .map(|next| {
                let mut url = self.same_origin(&what, next, &body)?;
                with_limit(&mut url, request.page_size);
                url.set_fragment(Some(&resume.fragment()));
                Ok(url.to_string())
            })
            .transpose()?;
        let mut results = list.results;
        results.drain(..read_before);
        Ok(WindowPage {
            what,
            results,
            body,
            next,
        })
    }

    /// The URL a page token asks for, and where the page before it left off.
    fn page_token(
        &self,
        what: &str,
        token: &str,
    ) -> Result<(Url, Option<Resume>), MarketplaceError> {
        let mut url = self.same_origin(what, token, token.as_bytes())?;
        let resume = url.fragment().map(Resume::read);
        url.set_fragment(None);
        Ok((url, resume))
    }

    /// An order record as read from `body` (the answer to `what`), with the addresses embedded in it.
    fn listed(&self, what: &str, raw: Value, body: &[u8]) -> Result<Listed, MarketplaceError> {
        let order = wire::parse::<WireOrder>(&raw)
            .map_err(|reason| self.malformed(what, format!("an order: {reason}"), body))?;
        let embedded = [
            self.embedded(what, order.shipping_ref(), body)?,
            self.embedded(what, order.billing_ref(), body)?,
        ];
        Ok(Listed {
            raw,
            order,
            embedded,
        })
    }

    /// One order's record by id; `None` when the API does not know it.
    async fn order_record(
        &self,
        id: &str,
        requests: &AtomicU32,
    ) -> Result<Option<Listed>, MarketplaceError> {
        let what = format!("GET orders/{id}/");
        let Some((raw, body)) = self
            .get_one(&what, order_url(&self.base_url, id), requests)
            .await?
        else {
            return Ok(None);
        };
        self.listed(&what, raw, &body).map(Some)
    }

    /// Fetches what `orders` need to become complete domain orders: their items, addresses and,
    /// where worth it, cancellation plans.
    async fn complete(
        &self,
        orders: Vec<Listed>,
        page_size: u32,
        requests: &AtomicU32,
    ) -> Result<Vec<Order>, MarketplaceError> {
        // The futures are collected before streaming them: a stream over a borrowing closure trips
        // the compiler's `Send` check of the `async_trait` future.
        let items_requests: Vec<_> = orders
            .iter()
            .map(|listed| self.items_of(&listed.order, page_size, requests))
            .collect();
        let items: Vec<Vec<(Value, WireItem)>> = futures::stream::iter(items_requests)
            .buffered(RELATED_CONCURRENCY)
            .try_collect()
            .await?;

        let address_ids: BTreeSet<String> = orders
            .iter()
            .flat_map(|listed| [listed.order.shipping_ref(), listed.order.billing_ref()])
            .filter_map(|r| match r {
                Some(AddressRef::Id(id)) => Some(id),
                _ => None,
            })
            .collect();
        let address_requests: Vec<_> = address_ids
            .into_iter()
            .map(|id| self.address(id, requests))
            .collect();
        let fetched: HashMap<String, FetchedAddress> = futures::stream::iter(address_requests)
            .buffered(RELATED_CONCURRENCY)
            .try_filter_map(|found| async move { Ok(found) })
            .try_collect()
            .await?;

        let plan_requests: Vec<_> = orders
            .iter()
            .zip(&items)
            .map(|(listed, items)| {
                let order = &listed.order;
                let wanted = order.may_have_cancellation_plans(items);
                async move {
                    if wanted {
                        self.plans_of(order, page_size, requests).await.map(Some)
                    } else {
                        Ok(None)
                    }
                }
            })
            .collect();
        let plans: Vec<Option<Vec<Value>>> = futures::stream::iter(plan_requests)
            .buffered(RELATED_CONCURRENCY)
            .try_collect()
            .await?;

        Ok(orders
            .into_iter()
            .zip(items)
            .zip(plans)
            .map(|((listed, items), plans)| {
                let Listed {
                    raw,
                    order,
                    embedded: [ship_embedded, bill_embedded],
                } = listed;
                let shipping_address = resolve(order.shipping_ref(), &fetched, &ship_embedded);
                let billing_address = resolve(order.billing_ref(), &fetched, &bill_embedded);
                Assembled {
                    raw,
                    order,
                    items,
                    shipping_address,
                    billing_address,
                    cancellation_plans: plans,
                }
                .into_order(&self.statuses)
            })
            .collect())
    }

    /// The items of one order, every page of them.
    async fn items_of(
        &self,
        order: &WireOrder,
        page_size: u32,
        requests: &AtomicU32,
    ) -> Result<Vec<(Value, WireItem)>, MarketplaceError> {
        let number = &order.number;
        let url = filtered_url(
            &self.base_url,
            "order-items",
            "order__number",
            number,
            page_size,
        );
        let what = format!("GET order-items/ order__number={number}");
        let mut items = Vec::new();
        for (raw, body) in self.get_all(&what, url, requests).await? {
            let item = wire::parse::<WireItem>(&raw)
                .map_err(|reason| self.malformed(&what, format!("an item: {reason}"), &body))?;
            // Defensive: the filter is by number; keep only the items of this very order.
            if item.order.as_ref().is_none_or(|o| *o == order.id) {
                items.push((raw, item));
            }
        }
        Ok(items)
    }

    /// One customer address by id; `None` when the API does not know it (the order is still
    /// stored, with a null address in its raw payload).
    async fn address(
        &self,
        id: String,
        requests: &AtomicU32,
    ) -> Result<Option<(String, FetchedAddress)>, MarketplaceError> {
        let url = filtered_url(&self.base_url, "customer-addresses", "id", &id, 10);
        let what = format!("GET customer-addresses/ id={id}");
        for (raw, body) in self.get_all(&what, url, requests).await? {
            let address = wire::parse::<WireAddress>(&raw)
                .map_err(|reason| self.malformed(&what, format!("an address: {reason}"), &body))?;
            if address.id.as_deref().is_none_or(|a| a == id) {
                return Ok(Some((id, (raw, address))));
            }
        }
        tracing::warn!(request = %what, "address referenced by an order not found");
        Ok(None)
    }

    /// The cancellation plans of one order, raw.
    async fn plans_of(
        &self,
        order: &WireOrder,
        page_size: u32,
        requests: &AtomicU32,
    ) -> Result<Vec<Value>, MarketplaceError> {
        let url = filtered_url(
            &self.base_url,
            "cancellation-plans",
            "order",
            &order.id,
            page_size,
        );
        let what = format!("GET cancellation-plans/ order={}", order.id);
        let mut plans = Vec::new();
        for (raw, body) in self.get_all(&what, url, requests).await? {
            let plan = wire::parse::<WirePlan>(&raw).map_err(|reason| {
                self.malformed(&what, format!("a cancellation plan: {reason}"), &body)
            })?;
            if plan.order.as_ref().is_none_or(|o| *o == order.id) {
                plans.push(raw);
            }
        }
        Ok(plans)
    }

    /// An address embedded in the order rather than referenced by id, read like a fetched one.
    fn embedded(
        &self,
        what: &str,
        reference: Option<AddressRef<'_>>,
        body: &[u8],
    ) -> Result<Option<FetchedAddress>, MarketplaceError> {
        match reference {
            Some(AddressRef::Embedded(raw)) => wire::parse::<WireAddress>(raw)
                .map(|a| Some((raw.clone(), a)))
                .map_err(|reason| self.malformed(what, format!("an address: {reason}"), body)),
            _ => Ok(None),
        }
    }

    /// Every result of a list, following `next`; each result comes with the body it was read from.
    async fn get_all(
        &self,
        what: &str,
        first: Url,
        requests: &AtomicU32,
    ) -> Result<Vec<(Value, Bytes)>, MarketplaceError> {
        let mut results = Vec::new();
        let mut seen = HashSet::new();
        let mut url = Some(first);
        while let Some(current) = url.take() {
            if !seen.insert(current.clone()) {
                return Err(self.malformed(
                    what,
                    "the `next` links loop",
                    current.as_str().as_bytes(),
                ));
            }
            let (list, body) = self.get_list(what, current, requests).await?;
            if let Some(next) = list.next.as_deref() {
                url = Some(self.same_origin(what, next, &body)?);
            }
            results.extend(list.results.into_iter().map(|raw| (raw, body.clone())));
        }
        Ok(results)
    }

    /// A request to `url` with the account's authentication header; `what` names it in the error
    /// when the configuration cannot produce the header.
    fn authorized(
        &self,
        method: Method,
        what: &str,
        url: &Url,
    ) -> Result<reqwest::RequestBuilder, MarketplaceError> {
        let (name, value) = self
            .auth
            .clone()
            .map_err(|message| MarketplaceError::Rejected {
                what: what.to_owned(),
                status: None,
                message,
            })?;
        Ok(self
            .http
            .request(method, url.as_str())
            .header(name, value)
            .header(ACCEPT, "application/json")
            // The API answers 415 without it, even on a GET.
            .header(CONTENT_TYPE, "application/json"))
    }

    /// One GET of a list endpoint.
    async fn get_list(
        &self,
        what: &str,
        url: Url,
        requests: &AtomicU32,
    ) -> Result<(ListPage, Bytes), MarketplaceError> {
        let request = self.authorized(Method::GET, what, &url)?;
        requests.fetch_add(1, Ordering::Relaxed);
        let response = self.http.send(what, request, wire::api_message).await?;
        match wire::parse_list(response.content_type.as_deref(), &response.body) {
            Ok(list) => Ok((list, response.body)),
            Err(BodyError::Api(message)) => Err(MarketplaceError::Rejected {
                what: what.to_owned(),
                status: None,
                message: self.http.redactor().redact(&message),
            }),
            Err(BodyError::Malformed(reason)) => Err(self.malformed(what, reason, &response.body)),
        }
    }

    /// One GET of a detail route: the object and the body, or `None` on 404.
    async fn get_one(
        &self,
        what: &str,
        url: Url,
        requests: &AtomicU32,
    ) -> Result<Option<(Value, Bytes)>, MarketplaceError> {
        let request = self.authorized(Method::GET, what, &url)?;
        requests.fetch_add(1, Ordering::Relaxed);
        let response = match self.http.send(what, request, wire::api_message).await {
            Err(MarketplaceError::Rejected {
                status: Some(404), ..
            }) => return Ok(None),
            other => other?,
        };
        let value: Value = serde_json::from_slice(&response.body)
            .map_err(|e| self.malformed(what, format!("not JSON: {e}"), &response.body))?;
        if !value.is_object() {
            return Err(self.malformed(what, "expected an order object", &response.body));
        }
        Ok(Some((value, response.body)))
    }

    /// A `next` link, accepted only on the base URL's origin: the token goes with every request.
    fn same_origin(&self, what: &str, link: &str, body: &[u8]) -> Result<Url, MarketplaceError> {
        same_origin(&self.base_url, link).map_err(|reason| self.malformed(what, reason, body))
    }

    fn malformed(
        &self,
        what: &str,
        reason: impl std::fmt::Display,
        body: &[u8],
    ) -> MarketplaceError {
        MarketplaceError::malformed(&self.http, what, reason, body)
    }
}

#[async_trait]
impl Marketplace for I1 {
    fn streams(&self) -> Vec<StreamSpec> {
        STREAMS.to_vec()
    }

    async fn fetch_page(
        &self,
        stream: &str,
        request: &PageRequest,
    ) -> Result<Page, MarketplaceError> {
        match stream {
            "orders" => self.fetch_orders(request).await,
            "item-changes" => self.fetch_item_changes(request).await,
            other => Err(MarketplaceError::Rejected {
                what: format!("i1 stream `{other}`"),
                status: None,
                message: "i1 has no such stream".to_owned(),
            }),
        }
    }
    fn validate_transition(
        &self,
        transition: &Transition,
        current: Option<&Order>,
    ) -> Result<(), TransitionRefusal> {
        let item_id = transitions::parse(transition)?;
        transitions::check_legal(&item_id, current)
    }

    async fn apply_transition(
        &self,
        transition: &Transition,
    ) -> Result<AppliedTransition, MarketplaceError> {
        self.send_reject(transition).await
    }

    async fn fetch_order(&self, external_id: &str) -> Result<Option<Order>, MarketplaceError> {
        self.read_back(external_id).await
    }

    fn transition_took_effect(&self, transition: &Transition, order: &Order) -> bool {
        transitions::parse(transition).is_ok_and(|item| transitions::took_effect(&item, order))
    }
}

/// The configured authentication header: `<auth_header>: <auth_scheme> <token>` (no scheme word when
/// the scheme is empty). The value is marked sensitive so that it never appears in debug output.
fn auth_header(credentials: &Credentials) -> Result<(HeaderName, HeaderValue), String> {
    let Credentials::I1 {
        token,
        auth_header,
        auth_scheme,
    } = credentials
    else {
        return Err("the account has no i1 credentials".to_owned());
    };
    let name = HeaderName::from_bytes(auth_header.trim().as_bytes())
        .map_err(|_| format!("auth_header `{auth_header}` is not a valid header name"))?;
    let scheme = auth_scheme.trim();
    let text = if scheme.is_empty() {
        token.expose().to_owned()
    } else {
        format!("{scheme} {}", token.expose())
    };
    let mut value = HeaderValue::from_str(&text)
        .map_err(|_| "the token contains characters a header cannot carry".to_owned())?;
    value.set_sensitive(true);
    Ok((name, value))
}

/// `orders` without those the database holds as they are listed, on an incremental run
/// ([`PageRequest::stored`]): their items, addresses and plans need no requests, so a quiet run
/// makes one. An order is stored as listed when the stored copy holds the very record listed and
/// cancellation plans wherever it may have some ([`StoredOrder::holds`]). Records are compared, not
/// change times: items are read after the list, so an order listed before a change and read with the
/// changed items must still look changed; a change committed after a later one carries the earlier
/// time; a time may be coarser than the changes it stamps. An item changed without its order is the
/// `item-changes` stream's.
async fn without_unchanged(request: &PageRequest, orders: Vec<Listed>) -> Vec<Listed> {
    let Some(stored) = &request.stored else {
        return orders;
    };
    let ids: Vec<String> = orders.iter().map(|o| o.order.id.clone()).collect();
    let stored = stored.raw(&ids).await;
    orders
        .into_iter()
        .filter(|o| {
            !stored
                .get(&o.order.id)
                .and_then(|text| StoredOrder::read(text))
                .is_some_and(|copy| copy.holds(&o.raw, &o.order))
        })
        .collect()
}

/// The orders of `changed` (each with its items listed as changed) that the database does not hold
/// with every one of those items as listed, and with cancellation plans wherever the order may have
/// some (a plan may be made after the change of its item); all of them without
/// [`PageRequest::stored`].
async fn unheld(request: &PageRequest, changed: Vec<(String, Vec<Value>)>) -> Vec<String> {
    let Some(stored) = &request.stored else {
        return changed.into_iter().map(|(order, _)| order).collect();
    };
    let ids: Vec<String> = changed.iter().map(|(order, _)| order.clone()).collect();
    let stored = stored.raw(&ids).await;
    changed
        .into_iter()
        .filter(|(order, items)| {
            !stored
                .get(order)
                .and_then(|text| StoredOrder::read(text))
                .is_some_and(|copy| copy.holds_items(items))
        })
        .map(|(order, _)| order)
        .collect()
}

/// An order record as listed or read, with the addresses embedded in it read too.
struct Listed {
    raw: Value,
    order: WireOrder,
    /// The shipping and billing addresses, where the record embeds them rather than naming them.
    embedded: [Option<FetchedAddress>; 2],
}

/// Where a page of a window left off, carried in the next page's token (its URL fragment, which is
/// never sent).
#[derive(Debug, PartialEq, Eq)]
struct Resume {
    /// The list's `count` in that page's answer.
    count: Option<u64>,
    /// The id of that page's last row.
    last: Option<String>,
}

impl Resume {
    fn fragment(&self) -> String {
        let mut fragment = url::form_urlencoded::Serializer::new(String::new());
        if let Some(count) = self.count {
            fragment.append_pair("count", &count.to_string());
        }
        if let Some(last) = &self.last {
            fragment.append_pair("last", last);
        }
        fragment.finish()
    }

    fn read(fragment: &str) -> Resume {
        let mut resume = Resume {
            count: None,
            last: None,
        };
        for (key, value) in url::form_urlencoded::parse(fragment.as_bytes()) {
            match key.as_ref() {
                "count" => resume.count = value.parse().ok(),
                "last" => resume.last = Some(value.into_owned()),
                _ => {}
            }
        }
        resume
    }
}

/// A page of a window's list, read so that no row of the window is skipped.
struct WindowPage {
    /// The request, for errors about the answer.
    what: String,
    results: Vec<Value>,
    body: Bytes,
    /// The next page's token: the `next` link, with the list's count as this page saw it.
    next: Option<String>,
}

/// The address an order refers to: fetched by id, or embedded in the order.
fn resolve<'a>(
    reference: Option<AddressRef<'_>>,
    fetched: &'a HashMap<String, FetchedAddress>,
    embedded: &'a Option<FetchedAddress>,
) -> Option<&'a FetchedAddress> {
    match reference {
        Some(AddressRef::Id(id)) => fetched.get(&id),
        _ => embedded.as_ref(),
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// `base_url` + `segment/`, whether or not the base URL ends with a slash.
fn endpoint(base: &Url, segment: &str) -> Url {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().push(segment).push("");
    }
    url
}

/// The first page of a window of `segment`'s list.
fn window_url(base: &Url, segment: &str, request: &PageRequest) -> Url {
    let mut url = endpoint(base, segment);
    url.query_pairs_mut()
        .append_pair("updated_at__gte", &rfc3339(request.from))
        .append_pair("updated_at__lt", &rfc3339(request.to))
        .append_pair("limit", &request.page_size.to_string());
    url
}

/// The `offset` of a page of a limit/offset list.
fn offset_of(url: &Url) -> Option<u64> {
    url.query_pairs()
        .find(|(key, _)| key == "offset")
        .and_then(|(_, value)| value.parse().ok())
}

/// `url`, a page of a limit/offset list, starting `rows` rows earlier (not before the first) and
/// as many rows longer; `None` when it moves nothing (no rows, or no offset to move).
fn earlier_page(url: &Url, rows: u64) -> Option<Url> {
    let offset = offset_of(url)?;
    let start = offset.saturating_sub(rows);
    if start == offset {
        return None;
    }
    let mut earlier = url.clone();
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    earlier
        .query_pairs_mut()
        .clear()
        .extend_pairs(pairs.iter().map(|(key, value)| {
            let value = match key.as_str() {
                "offset" => start.to_string(),
                "limit" => value.parse::<u64>().map_or_else(
                    |_| value.clone(),
                    |limit| (limit + offset - start).to_string(),
                ),
                _ => value.clone(),
            };
            (key, value)
        }));
    Some(earlier)
}

/// Sets `url`'s `limit` (a `next` link after a page asked for from earlier rows repeats the longer
/// limit of that request).
fn with_limit(url: &mut Url, limit: u32) {
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(pairs.iter().map(|(key, value)| {
            let value = if key == "limit" {
                limit.max(1).to_string()
            } else {
                value.clone()
            };
            (key, value)
        }));
}

/// A list row's `id` as text (UUIDs, or numbers on older endpoints).
fn row_id(row: &Value) -> String {
    match row.get("id") {
        Some(Value::String(id)) => id.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// `base_url` + `orders/{id}/`.
fn order_url(base: &Url, id: &str) -> Url {
    let mut url = endpoint(base, "orders");
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().push(id).push("");
    }
    url
}

/// A list of `segment` filtered by one value.
fn filtered_url(base: &Url, segment: &str, filter: &str, value: &str, page_size: u32) -> Url {
    let mut url = endpoint(base, segment);
    url.query_pairs_mut()
        .append_pair(filter, value)
        .append_pair("limit", &page_size.max(1).to_string());
    url
}

/// A `next` link (absolute, or relative to the base URL) if it stays on the base URL's origin.
fn same_origin(base: &Url, link: &str) -> Result<Url, String> {
    let url = base
        .join(link)
        .map_err(|e| format!("`next` is not a URL: {e}"))?;
    if url.scheme() == base.scheme()
        && url.host_str() == base.host_str()
        && url.port_or_known_default() == base.port_or_known_default()
    {
        Ok(url)
    } else {
        Err(format!(
            "`next` points to {}://{}, not to the configured API",
            url.scheme(),
            url.host_str().unwrap_or_default()
        ))
    }
}

/// Which page a `next` token asks for, for request descriptions: its `offset`, `page` or `cursor`.
fn page_label(token: &str) -> String {
    Url::parse(token)
        .ok()
        .and_then(|url| {
            url.query_pairs()
                .find(|(k, _)| matches!(k.as_ref(), "offset" | "page" | "cursor"))
                .map(|(k, v)| format!("{k} {v}"))
        })
        .unwrap_or_else(|| "next page".to_owned())
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::sync::{Arc, Mutex};

    use axum::extract::{Query, State};
    use axum::http::{HeaderMap, StatusCode, Uri};
    use axum::response::IntoResponse;
    use chrono::TimeZone;

    use super::*;
    use crate::config::Secret;
    use crate::domain::MarketplaceKind;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/i1/",
                $name
            ))
        };
    }

    const TOKEN: &str = "i1-test-token-0123456789";

    fn account(base_url: &str, auth_header: &str, auth_scheme: &str) -> AccountConfig {
        AccountConfig {
            name: "shop".into(),
            marketplace: MarketplaceKind::I1,
            base_url: Url::parse(base_url).unwrap(),
            enabled: true,
            schedule: "0 */5 * * * *".into(),
            initial_sync_days: 30,
            overlap: Duration::from_secs(600),
            page_size: 2,
            requests_per_second: NonZeroU32::new(1000).unwrap(),
            timeout: Duration::from_secs(5),
            credentials: Credentials::I1 {
                token: Secret::new(TOKEN),
                auth_header: auth_header.into(),
                auth_scheme: auth_scheme.into(),
            },
        }
    }

    fn adapter(base_url: &str) -> I1 {
        let account = account(base_url, "Authorization", "Bearer");
        let http = HttpClient::new(
            &account.http_settings(),
            account.credentials.secret_values(),
        )
        .unwrap();
        I1::new(&account, http, &HashMap::new())
    }

    fn window(page: Option<String>) -> PageRequest {
        PageRequest {
            from: Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0).unwrap(),
            to: Utc.with_ymd_and_hms(2024, 5, 2, 0, 0, 0).unwrap(),
            page,
            page_size: 2,
            order_ids: Vec::new(),
            changed_since: None,
            stored: None,
        }
    }

    #[test]
    fn orders_and_item_changes_in_day_windows() {
        let names: Vec<&str> = STREAMS.iter().map(|s| s.name).collect();
        assert_eq!(names, ["orders", "item-changes"]);
        for (spec, changes_only) in STREAMS.iter().zip([false, true]) {
            assert_eq!(
                spec.plan,
                StreamPlan::Windows {
                    max_window: Some(Duration::from_secs(86_400)),
                    adaptive: false,
                    reread_open: false,
                    changes_only
                }
            );
        }
    }

    #[test]
    fn a_page_read_again_starts_as_many_rows_earlier() {
        let page = Url::parse(
            "https://example.com/api/i1/orders/?limit=100&offset=300&updated_at__gte=2024-05-01T00%3A00%3A00Z",
        )
        .unwrap();
        let earlier = earlier_page(&page, 3).unwrap();
        assert_eq!(
            earlier.query(),
            Some("limit=103&offset=297&updated_at__gte=2024-05-01T00%3A00%3A00Z")
        );
        assert_eq!(
            earlier_page(&page, 500).unwrap().query(),
            Some("limit=400&offset=0&updated_at__gte=2024-05-01T00%3A00%3A00Z"),
            "never before the first row"
        );
        assert_eq!(earlier_page(&page, 0), None, "no row left");
        let first = Url::parse("https://example.com/api/i1/orders/?limit=100").unwrap();
        assert_eq!(earlier_page(&first, 3), None, "no offset to move");
    }

    #[test]
    fn endpoints_append_to_the_base_path_with_or_without_a_slash() {
        for base in ["http://h:8080/i1/api/i1/", "http://h:8080/i1/api/i1"] {
            let base = Url::parse(base).unwrap();
            assert_eq!(
                endpoint(&base, "order-items").as_str(),
                "http://h:8080/i1/api/i1/order-items/"
            );
        }
        let root = Url::parse("https://seller.example.com").unwrap();
        assert_eq!(
            endpoint(&root, "orders").as_str(),
            "https://seller.example.com/orders/"
        );
    }

    #[test]
    fn the_first_page_asks_for_the_window_in_utc() {
        let base = Url::parse("https://example.com/api/i1/").unwrap();
        let mut request = window(None);
        request.to += chrono::Duration::milliseconds(250);
        let url = window_url(&base, "orders", &request);
        let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(url.path(), "/api/i1/orders/");
        assert_eq!(
            query,
            [
                (
                    "updated_at__gte".to_owned(),
                    "2024-05-01T00:00:00Z".to_owned()
                ),
                (
                    "updated_at__lt".to_owned(),
                    "2024-05-02T00:00:00.250Z".to_owned()
                ),
                ("limit".to_owned(), "2".to_owned()),
            ]
        );
        let items = filtered_url(&base, "order-items", "order__number", "45 243", 100);
        assert_eq!(
            items.as_str(),
            "https://example.com/api/i1/order-items/?order__number=45+243&limit=100"
        );
    }

    #[test]
    fn next_links_must_stay_on_the_api_origin() {
        let base = Url::parse("https://example.com/api/i1/").unwrap();
        let ok = same_origin(&base, "https://example.com/api/i1/orders/?offset=2").unwrap();
        assert_eq!(ok.query(), Some("offset=2"));
        assert!(same_origin(&base, "https://example.com:443/api/i1/orders/").is_ok());
        assert!(same_origin(&base, "/api/i1/orders/?offset=4").is_ok());
        for bad in [
            "https://evil.example.net/api/i1/orders/?offset=2",
            "http://example.com/api/i1/orders/?offset=2",
            "https://example.com:8443/api/i1/orders/",
            "https://[::1",
        ] {
            assert!(same_origin(&base, bad).is_err(), "{bad}");
        }
        assert_eq!(
            page_label("https://example.com/api/i1/orders/?limit=2&offset=4"),
            "offset 4"
        );
        assert_eq!(page_label("nonsense"), "next page");
    }

    #[test]
    fn the_auth_header_is_configurable() {
        let header = |name, scheme| auth_header(&account("http://h/", name, scheme).credentials);
        let (name, value) = header("Authorization", "Bearer").unwrap();
        assert_eq!(name, "authorization");
        assert_eq!(value.to_str().unwrap(), format!("Bearer {TOKEN}"));
        assert!(value.is_sensitive());
        let (name, value) = header("X-Api-Token", "").unwrap();
        assert_eq!(name, "x-api-token");
        assert_eq!(value.to_str().unwrap(), TOKEN);
        let error = header("Bad Header", "Bearer").unwrap_err();
        assert!(!error.contains(TOKEN));
    }

    /// What the fake API saw: the path and query of every request, and whether it was authorized.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<String>>>);

    async fn fake_api(
        State((seen, base)): State<(Seen, String)>,
        uri: Uri,
        headers: HeaderMap,
        Query(query): Query<HashMap<String, String>>,
    ) -> axum::response::Response {
        seen.0.lock().unwrap().push(uri.to_string());
        if headers.get("authorization").and_then(|v| v.to_str().ok())
            != Some(&format!("Bearer {TOKEN}"))
            || headers.get("content-type").is_none()
        {
            return (StatusCode::UNAUTHORIZED, fixture!("error_detail.json")).into_response();
        }
        let get = |k: &str| query.get(k).map(String::as_str);
        let body = match (uri.path(), get("offset")) {
            ("/i1/api/i1/orders/", None) => fixture!("orders_page.json"),
            // The second page, asked for from the first page's last order.
            ("/i1/api/i1/orders/", Some("1")) => &{
                let mut first: Value = serde_json::from_str(fixture!("orders_page.json")).unwrap();
                let mut last: Value =
                    serde_json::from_str(fixture!("orders_last_page.json")).unwrap();
                let overlap = first["results"][1].take();
                last["results"].as_array_mut().unwrap().insert(0, overlap);
                last.to_string()
            },
            ("/i1/api/i1/order-items/", _) => match get("order__number") {
                Some("45243493") => fixture!("order_items_45243493.json"),
                Some("45243494") => fixture!("order_items_45243494.json"),
                _ => fixture!("order_items_empty.json"),
            },
            ("/i1/api/i1/customer-addresses/", _) => match get("id") {
                Some("a4c0eb06-9ad5-40a1-adc2-d4ea4a9aed32") => fixture!("customer_addresses.json"),
                Some("b5d1fc17-0aa6-41b1-bed3-e5ea5b0aea43") => {
                    fixture!("customer_addresses_tr.json")
                }
                _ => fixture!("order_items_empty.json"),
            },
            ("/i1/api/i1/cancellation-plans/", _) => fixture!("cancellation_plans.json"),
            _ => return (StatusCode::NOT_FOUND, "{\"detail\": \"Not found.\"}").into_response(),
        };
        let body = body.replace("https://example.com/i1/api/i1/", &base);
        let body = body.replace("https://example.com/api/i1/", &base);
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }

    async fn serve() -> (String, Seen) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/i1/api/i1/", listener.local_addr().unwrap());
        let seen = Seen::default();
        let app = axum::Router::new()
            .fallback(fake_api)
            .with_state((seen.clone(), base.clone()));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (base, seen)
    }

    #[tokio::test]
    async fn a_window_is_read_page_by_page_with_items_addresses_and_plans() {
        let (base, seen) = serve().await;
        let i1 = adapter(&base);

        let first = i1.fetch_page("orders", &window(None)).await.unwrap();
        let next = first.next.clone().unwrap();
        assert!(
            next.starts_with(&base) && next.contains("offset=2"),
            "{next}"
        );
        assert_eq!(first.orders.len(), 2);
        // 1 orders + 2 items + 2 distinct addresses + 1 plans (only the cancelled order).
        assert_eq!(first.requests, 6);
        let cancelled = &first.orders[1];
        assert_eq!(cancelled.lines.len(), 2);
        assert_eq!(
            cancelled.customer_name.as_deref(),
            Some("Gülşen Çağlayan Öztürk")
        );
        assert_eq!(
            cancelled.raw.value()["cancellation_plans"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(first.orders[0].lines.len(), 1);
        assert_eq!(
            first.orders[0].raw.value()["billing_address"]["first_name"],
            "Akinon"
        );

        let requests = seen.0.lock().unwrap().clone();
        assert_eq!(
            requests[0],
            "/i1/api/i1/orders/?updated_at__gte=2024-05-01T00%3A00%3A00Z&updated_at__lt=2024-05-02T00%3A00%3A00Z&limit=2"
        );
        assert!(
            requests.contains(&"/i1/api/i1/order-items/?order__number=45243494&limit=2".to_owned())
        );
        assert!(requests.contains(
            &"/i1/api/i1/cancellation-plans/?order=6e5877a9-5a03-48e6-8425-d4be178de83e&limit=2"
                .to_owned()
        ));

        let last = i1.fetch_page("orders", &window(Some(next))).await.unwrap();
        assert_eq!(last.next, None);
        assert_eq!(last.orders.len(), 1);
        assert_eq!(last.orders[0].state, OrderState::Unknown);
        assert_eq!(last.requests, 2);
    }

    /// How the list of `serve_moving` changes: rows `r0`…`r99` without `gone`, whose count is
    /// `count` (what the API said, which may lag behind the rows), and two more rows leaving from the
    /// front with every request when `churn`.
    #[derive(Clone)]
    struct Moving {
        gone: Vec<usize>,
        count: Option<u64>,
        churn: bool,
    }

    impl Moving {
        /// The rows without `gone`, counted as `count` (the rows' own count when `None`), nothing
        /// more leaving.
        fn still(gone: Vec<usize>, count: Option<u64>) -> Moving {
            Moving {
                gone,
                count,
                churn: false,
            }
        }
    }

    /// Serves that list as order rows (only their ids), recording each request's offset and limit.
    async fn serve_moving(moving: Moving) -> (String, Seen) {
        async fn list(
            State((seen, moving)): State<(Seen, Moving)>,
            Query(query): Query<HashMap<String, String>>,
        ) -> axum::response::Response {
            let asked = {
                let mut seen = seen.0.lock().unwrap();
                seen.push(format!(
                    "offset={} limit={}",
                    query["offset"], query["limit"]
                ));
                seen.len()
            };
            let mut gone = moving.gone.clone();
            if moving.churn {
                gone.extend(0..2 * asked);
            }
            let rows: Vec<serde_json::Value> = (0..100)
                .filter(|row| !gone.contains(row))
                .map(|row| serde_json::json!({"id": format!("r{row}")}))
                .collect();
            let offset: usize = query["offset"].parse().unwrap();
            let limit: usize = query["limit"].parse().unwrap();
            let count = moving.count.unwrap_or(rows.len() as u64);
            let page: Vec<_> = rows.into_iter().skip(offset).take(limit).collect();
            let next = format!("/api/i1/orders/?limit={limit}&offset={}", offset + limit);
            axum::Json(serde_json::json!({"count": count, "next": next, "results": page}))
                .into_response()
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/api/i1/", listener.local_addr().unwrap());
        let seen = Seen::default();
        let app = axum::Router::new()
            .fallback(list)
            .with_state((seen.clone(), moving));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (base, seen)
    }

    /// The ids of the rows of the page read from the list of `moving` after a page that ended with
    /// row `offset - 1` when the list held 100 rows; and the requests it took.
    async fn page_after(
        moving: Moving,
        offset: usize,
    ) -> (Result<Vec<String>, MarketplaceError>, Vec<String>) {
        let (base, seen) = serve_moving(moving).await;
        let i1 = adapter(&base);
        let last = offset - 1;
        let mut request = window(Some(format!(
            "{base}orders/?limit=2&offset={offset}#count=100&last=r{last}"
        )));
        request.page_size = 3;
        let read = i1.window_page("orders", &request, &AtomicU32::new(0)).await;
        let ids = read.map(|page| page.results.iter().map(row_id).collect());
        let asked = seen.0.lock().unwrap().clone();
        (ids, asked)
    }

    #[tokio::test]
    async fn a_page_is_read_from_where_the_page_before_left_off_whatever_left_the_window() {
        let moving = Moving::still;
        // Nothing moved: one row of overlap, dropped.
        let (ids, asked) = page_after(moving(Vec::new(), None), 6).await;
        assert_eq!(ids.unwrap(), ["r6", "r7"]);
        assert_eq!(asked, ["offset=5 limit=3"]);

        // A row before the page left: r6 moved into the page already read; the page is read again
        // from further back, as counted.
        let (ids, asked) = page_after(moving(vec![2], None), 6).await;
        assert_eq!(ids.unwrap(), ["r6", "r7", "r8"]);
        assert_eq!(asked, ["offset=5 limit=3", "offset=4 limit=4"]);

        // Two rows left: r6 moved two places, past the row of overlap.
        let (ids, asked) = page_after(moving(vec![1, 2], None), 6).await;
        assert_eq!(ids.unwrap(), ["r6", "r7", "r8", "r9"]);
        assert_eq!(asked, ["offset=5 limit=3", "offset=3 limit=5"]);

        // One row left, with a count that does not show it yet (counted before the rows were read).
        let (ids, _) = page_after(moving(vec![2], Some(100)), 6).await;
        assert_eq!(ids.unwrap(), ["r6", "r7", "r8"]);

        // Three rows left and the count shows one (rows entered too, or it lags): read from further
        // back until the last row read is found.
        let (ids, asked) = page_after(moving(vec![1, 2, 3], Some(99)), 6).await;
        assert_eq!(ids.unwrap(), ["r6", "r7", "r8", "r9", "r10"]);
        assert_eq!(
            asked,
            ["offset=5 limit=3", "offset=4 limit=4", "offset=2 limit=6"]
        );

        // The last row read left itself: nothing tells it from rows before it leaving, so the page
        // is read from the first row.
        let (ids, asked) = page_after(moving(vec![5], None), 6).await;
        assert_eq!(
            ids.unwrap(),
            ["r0", "r1", "r2", "r3", "r4", "r6", "r7", "r8"]
        );
        assert_eq!(asked.last().unwrap(), "offset=0 limit=8");
        assert_eq!(asked.len(), 4);

        // Rows that keep leaving: read from further back each time, until the last row read is found.
        let (read, asked) = page_after(
            Moving {
                gone: Vec::new(),
                count: Some(100),
                churn: true,
            },
            60,
        )
        .await;
        assert_eq!(read.unwrap()[0], "r60");
        assert_eq!(asked.len(), 5);
    }

    #[tokio::test]
    async fn a_page_whose_token_names_no_last_row_is_read_as_asked() {
        let (base, seen) = serve_moving(Moving::still(vec![2], None)).await;
        let i1 = adapter(&base);
        for fragment in ["count=100&last=", "count=100", ""] {
            seen.0.lock().unwrap().clear();
            let request = window(Some(format!("{base}orders/?limit=2&offset=6#{fragment}")));
            let page = i1
                .window_page("orders", &request, &AtomicU32::new(0))
                .await
                .unwrap();
            let ids: Vec<String> = page.results.iter().map(row_id).collect();
            assert_eq!(ids, ["r7", "r8"], "#{fragment}");
            assert_eq!(*seen.0.lock().unwrap(), ["offset=6 limit=2"], "#{fragment}");
        }
    }

    #[tokio::test]
    async fn the_next_token_resumes_after_the_last_row_with_the_page_size() {
        let (base, _) = serve_moving(Moving::still(vec![2], None)).await;
        let i1 = adapter(&base);
        let mut request = window(Some(format!(
            "{base}orders/?limit=2&offset=6#count=100&last=r5"
        )));
        request.page_size = 2;
        let next = i1
            .window_page("orders", &request, &AtomicU32::new(0))
            .await
            .unwrap()
            .next
            .unwrap();
        assert!(
            next.ends_with("/api/i1/orders/?limit=2&offset=8#count=99&last=r8"),
            "{next}"
        );
    }

    #[tokio::test]
    async fn failures_are_classified_and_never_leak_the_token() {
        let (base, _) = serve().await;
        let i1 = adapter(&base);

        let foreign = window(Some(
            "https://evil.example.net/i1/api/i1/orders/?offset=2".into(),
        ));
        assert!(matches!(
            i1.fetch_page("orders", &foreign).await,
            Err(MarketplaceError::Malformed { .. })
        ));
        assert!(matches!(
            i1.fetch_page("nope", &window(None)).await,
            Err(MarketplaceError::Rejected { status: None, .. })
        ));

        // The server expects `Bearer`: another scheme word is refused like a wrong token.
        let account = account(&base, "Authorization", "Token");
        let http = HttpClient::new(
            &account.http_settings(),
            account.credentials.secret_values(),
        )
        .unwrap();
        let refused = I1::new(&account, http, &HashMap::new());
        let error = refused
            .fetch_page("orders", &window(None))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, MarketplaceError::Unauthorized { status: 401, message, .. }
                if message == "Geçersiz token: kimlik doğrulama başarısız."),
            "{error:?}"
        );
        assert!(!format!("{error} {error:?}").contains(TOKEN));
    }
}

//! allesgo statuses: mapping a package's or item's status to the canonical state, and deriving the
//! order's state from its packages (allesgo keeps no status on the order itself).
//!
//! allesgo defines its status codes 1–16 only through `GET /v1.0/order/status-codes`, so there is no
//! compiled-in code table. A status is mapped, first match wins:
//! 1. by its code through the operator's `[status_map.allesgo]` table (e.g. `"5" = "shipped"`);
//! 2. by its description text through the same table (e.g. `"Kargoya Verildi" = "shipped"`);
//! 3. by the description (`status_explained`) whose meaning is clear from well-known Turkish or
//!    English words, matched without case and without Turkish diacritics;
//! 4. otherwise [`OrderState::Unknown`].

use std::collections::HashMap;

use crate::domain::OrderState;
use crate::marketplace::StatusMap;
use crate::marketplace::payload::fold;

/// Maps allesgo statuses (code plus description) to canonical states.
#[derive(Debug, Clone)]
pub(super) struct Statuses {
    operator: StatusMap,
}

impl Statuses {
    pub(super) fn new(overrides: &HashMap<String, OrderState>) -> Statuses {
        // No defaults keyed by code: the codes' meanings are published only at run time (see the
        // module documentation); the descriptions carry the defaults instead.
        Statuses {
            operator: StatusMap::new(&[], overrides),
        }
    }

    pub(super) fn state(&self, code: Option<&str>, description: Option<&str>) -> OrderState {
        let by_operator = [code, description]
            .into_iter()
            .flatten()
            .map(|raw| self.operator.map(raw.trim()))
            .find(|state| *state != OrderState::Unknown);
        by_operator
            .or_else(|| description.map(classify))
            .unwrap_or(OrderState::Unknown)
    }
}

/// Words whose presence in a folded description decides its state, checked in this order (the more
/// specific phrases first: "iptal talebi" before "iptal", "iade edildi" before "teslim edildi").
const DESCRIPTION_WORDS: &[(&[&str], OrderState)] = &[
    (&["itiraz", "dispute"], OrderState::Disputed),
    (
        &[
            "iptal tale",
            "iptal iste",
            "cancel request",
            "cancellation request",
        ],
        OrderState::CancelRequested,
    ),
    (
        &[
            "iade tale",
            "iade iste",
            "iade surec",
            "iade bekl",
            "return request",
            "return pending",
        ],
        OrderState::ReturnRequested,
    ),
    (&["iade", "returned", "refunded"], OrderState::Returned),
    (&["iptal", "cancel"], OrderState::Cancelled),
    (&["redded", "reject", "declined"], OrderState::Rejected),
    (
        &[
            "odeme bekl",
            "awaiting payment",
            "payment pending",
            "waiting for payment",
        ],
        OrderState::AwaitingPayment,
    ),
    (
        &[
            "onay bekl",
            "awaiting approval",
            "pending approval",
            "waiting for approval",
            "new order",
            "yeni siparis",
        ],
        OrderState::AwaitingApproval,
    ),
    (
        &["beklet", "ertelen", "on hold", "postpone"],
        OrderState::OnHold,
    ),
    (&["teslim edildi", "delivered"], OrderState::Delivered),
    (
        &[
            "kargoya verildi",
            "kargolandi",
            "kargoda",
            "shipped",
            "in transit",
        ],
        OrderState::Shipped,
    ),
    (&["paketlendi", "packaged", "packed"], OrderState::Packaged),
    (&["hazirlan", "tedarik", "preparing"], OrderState::Preparing),
    (&["tamamlandi", "completed"], OrderState::Completed),
    (&["onaylandi", "approved", "accepted"], OrderState::Approved),
];

/// The state a status description plainly states, or [`OrderState::Unknown`].
fn classify(description: &str) -> OrderState {
    let folded = fold(description);
    DESCRIPTION_WORDS
        .iter()
        .find(|(words, _)| words.iter().any(|w| folded.contains(w)))
        .map_or(OrderState::Unknown, |(_, state)| *state)
}

/// Where a state stands on the ordinary way of an order, for picking the least advanced package.
fn progress(state: OrderState) -> Option<u8> {
    Some(match state {
        OrderState::AwaitingPayment => 0,
        OrderState::AwaitingApproval => 1,
        OrderState::Approved => 2,
        OrderState::Preparing => 3,
        OrderState::Packaged => 4,
        OrderState::Shipped => 5,
        OrderState::Delivered => 6,
        OrderState::Completed => 7,
        _ => return None,
    })
}

/// States that ask for someone's attention, most urgent first.
const ATTENTION: [OrderState; 4] = [
    OrderState::Disputed,
    OrderState::ReturnRequested,
    OrderState::CancelRequested,
    OrderState::OnHold,
];

/// The order's state derived from its packages' states:
/// 1. no packages: unknown;
/// 2. any package needing attention: the most urgent of disputed, return requested, cancel
///    requested, on hold;
/// 3. packages that ended (cancelled, rejected, returned) are ignored while others remain, because
///    the order goes on with those; among the remaining, any unknown makes the order unknown, else
///    the least advanced state wins (an order is shipped only when all its live packages are);
/// 4. when every package ended: returned if any was returned, else rejected if any was rejected,
///    else cancelled.
pub(super) fn derive_order_state(packages: &[OrderState]) -> OrderState {
    if packages.is_empty() {
        return OrderState::Unknown;
    }
    if let Some(state) = ATTENTION.into_iter().find(|s| packages.contains(s)) {
        return state;
    }
    let live: Vec<OrderState> = packages
        .iter()
        .copied()
        .filter(|s| {
            !matches!(
                s,
                OrderState::Cancelled | OrderState::Rejected | OrderState::Returned
            )
        })
        .collect();
    if live.is_empty() {
        return [OrderState::Returned, OrderState::Rejected]
            .into_iter()
            .find(|s| packages.contains(s))
            .unwrap_or(OrderState::Cancelled);
    }
    live.iter()
        .map(|s| progress(*s).map(|p| (p, *s)))
        .collect::<Option<Vec<_>>>()
        .and_then(|ranked| ranked.into_iter().min_by_key(|(p, _)| *p).map(|(_, s)| s))
        .unwrap_or(OrderState::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_with_a_clear_meaning_are_mapped() {
        let s = Statuses::new(&HashMap::new());
        let cases = [
            ("Onay Bekliyor", OrderState::AwaitingApproval),
            ("ÖDEME BEKLİYOR", OrderState::AwaitingPayment),
            ("İptal Talebi Oluşturuldu", OrderState::CancelRequested),
            ("İPTAL EDİLDİ", OrderState::Cancelled),
            ("Iptal edildi", OrderState::Cancelled),
            ("İade Talebi", OrderState::ReturnRequested),
            ("İade Edildi", OrderState::Returned),
            ("Kargoya Verildi", OrderState::Shipped),
            ("Teslim Edildi", OrderState::Delivered),
            ("Hazırlanıyor", OrderState::Preparing),
            ("Sipariş Bekletiliyor", OrderState::OnHold),
            ("Tamamlandı", OrderState::Completed),
            ("Reddedildi", OrderState::Rejected),
            ("Awaiting approval", OrderState::AwaitingApproval),
            ("Shipped", OrderState::Shipped),
            ("Ürün yolda, çok yakında", OrderState::Unknown),
        ];
        for (text, want) in cases {
            assert_eq!(s.state(Some("99"), Some(text)), want, "{text}");
        }
        assert_eq!(s.state(Some("3"), None), OrderState::Unknown);
    }

    #[test]
    fn operator_mapping_wins_by_code_then_by_text() {
        let mut overrides = HashMap::new();
        overrides.insert("7".to_owned(), OrderState::Packaged);
        overrides.insert("Kargo Bekliyor".to_owned(), OrderState::Preparing);
        let s = Statuses::new(&overrides);
        assert_eq!(
            s.state(Some("7"), Some("Kargoya Verildi")),
            OrderState::Packaged
        );
        assert_eq!(
            s.state(Some("8"), Some("Kargo Bekliyor")),
            OrderState::Preparing
        );
        assert_eq!(
            s.state(Some("8"), Some("Kargoya Verildi")),
            OrderState::Shipped
        );
    }

    #[test]
    fn order_state_follows_the_packages() {
        use OrderState::*;
        assert_eq!(derive_order_state(&[]), Unknown);
        assert_eq!(derive_order_state(&[Shipped]), Shipped);
        assert_eq!(derive_order_state(&[Shipped, Preparing]), Preparing);
        assert_eq!(derive_order_state(&[Delivered, Cancelled]), Delivered);
        assert_eq!(
            derive_order_state(&[Delivered, ReturnRequested]),
            ReturnRequested
        );
        assert_eq!(derive_order_state(&[OnHold, Disputed]), Disputed);
        assert_eq!(derive_order_state(&[Cancelled, Cancelled]), Cancelled);
        assert_eq!(derive_order_state(&[Cancelled, Returned]), Returned);
        assert_eq!(derive_order_state(&[Shipped, Unknown]), Unknown);
        assert_eq!(derive_order_state(&[Unknown, Cancelled]), Unknown);
    }
}

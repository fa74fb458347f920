//! Uzum Seller OpenAPI wire types and their conversion to the hub's marketplace types.
//!
//! Uzum counts money in whole sum (UZS) and stock in whole units; we count tiyin and
//! thousandths. Conversions are exact integer arithmetic: a price with a fraction of a sum is
//! read exactly (`"25000.50"` -> 2 500 050 tiyin) and never rounded on the way out.

use chrono::{DateTime, Utc};
use savdo_hub::ConnectorError;
use savdo_hub::connector::{
    MarketplaceItem, MarketplaceOrder, MarketplaceOrderLine, OrderState, OrderStatusChange,
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// Tiyin in one sum.
pub const TIYIN_PER_SUM: i64 = 100;
/// Thousandths in one unit.
pub const MILLI: i64 = 1000;

// ---------------------------------------------------------------- envelope

/// `{payload, errors: [{code, message}], timestamp}` around every answer.
#[derive(Debug, Deserialize)]
pub struct Envelope<T> {
    pub payload: Option<T>,
    #[serde(default)]
    pub errors: Vec<WireError>,
}

/// The error list alone (the payload of a failed answer is `null` or absent).
#[derive(Debug, Default, Deserialize)]
pub struct ErrorsOnly {
    #[serde(default)]
    pub errors: Vec<WireError>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct WireError {
    #[serde(default, deserialize_with = "opt_text")]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

// ---------------------------------------------------------------- shops and products

#[derive(Debug, Deserialize)]
pub struct Shop {
    #[serde(deserialize_with = "text")]
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductPage {
    #[serde(default)]
    pub product_list: Vec<Product>,
    #[serde(default)]
    pub total_products_amount: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    #[serde(deserialize_with = "text")]
    pub product_id: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub sku_list: Vec<Sku>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sku {
    #[serde(deserialize_with = "text")]
    pub sku_id: String,
    #[serde(default)]
    pub sku_title: Option<String>,
    #[serde(default)]
    pub sku_full_title: Option<String>,
    #[serde(default, deserialize_with = "opt_text")]
    pub barcode: Option<String>,
    #[serde(default)]
    pub price: Option<Value>,
    #[serde(default)]
    pub quantity_fbs: Option<i64>,
    #[serde(default)]
    pub quantity: Option<i64>,
}

impl Sku {
    pub fn into_item(self, product: &Product) -> Result<MarketplaceItem, ConnectorError> {
        let price = match &self.price {
            None | Some(Value::Null) => None,
            Some(v) => Some(sum_to_tiyin(v).ok_or_else(|| {
                ConnectorError::protocol(format!("sku {}: price is not an amount", self.sku_id))
            })?),
        };
        // skuFullTitle repeats the product title when the SKU has no title of its own.
        let sku_title = self.sku_title.filter(|s| !s.trim().is_empty());
        let title = match (&product.title, sku_title) {
            (Some(p), Some(s)) if *p != s => format!("{p} {s}"),
            (Some(p), _) => p.clone(),
            (None, s) => s.or(self.sku_full_title).unwrap_or_default(),
        };
        Ok(MarketplaceItem {
            external_id: self.sku_id,
            product_id: Some(product.product_id.clone()),
            title,
            barcodes: self.barcode.into_iter().filter(|b| !b.is_empty()).collect(),
            price,
            stock: self
                .quantity_fbs
                .or(self.quantity)
                .map(|q| q.max(0).saturating_mul(MILLI)),
        })
    }
}

// ---------------------------------------------------------------- stock and prices

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StockRequest<'a> {
    pub sku_amount_list: &'a [StockItem],
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StockItem {
    pub sku_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub barcode: Option<String>,
    pub amount: i64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PriceRequest<'a> {
    pub sku_for_product_list: &'a [PriceItem],
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PriceItem {
    pub sku_id: u64,
    /// Whole sum.
    pub full_price: i64,
    /// Whole sum.
    pub sell_price: i64,
}

/// Whole units to send for `available` thousandths: rounded down, never below zero.
pub fn whole_units(available_milli: i64) -> i64 {
    available_milli.max(0) / MILLI
}

/// Tiyin as whole sum, when it is whole (Uzum takes no fractions of a sum).
pub fn tiyin_to_sum(tiyin: i64) -> Option<i64> {
    (tiyin % TIYIN_PER_SUM == 0).then_some(tiyin / TIYIN_PER_SUM)
}

/// A sum amount (JSON number or string, at most two decimals) as tiyin, exactly.
pub fn sum_to_tiyin(v: &Value) -> Option<i64> {
    let s = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_owned(),
        _ => return None,
    };
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.as_str()),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > 2 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: i64 = int.parse().ok()?;
    let cents: i64 = match frac.len() {
        0 => 0,
        1 => frac.parse::<i64>().ok()? * 10,
        _ => frac.parse().ok()?,
    };
    let t = whole.checked_mul(TIYIN_PER_SUM)?.checked_add(cents)?;
    Some(if neg { -t } else { t })
}

/// Whether `msg` names `needle` as a whole token (not inside a longer number or word), so a
/// refusal like `sku 123: …` is laid at the right item's door.
pub fn mentions(msg: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return false;
    }
    let bytes = msg.as_bytes();
    msg.match_indices(needle).any(|(at, _)| {
        let before = at.checked_sub(1).and_then(|i| bytes.get(i));
        let after = bytes.get(at + needle.len());
        !before.is_some_and(u8::is_ascii_alphanumeric)
            && !after.is_some_and(u8::is_ascii_alphanumeric)
    })
}

// ---------------------------------------------------------------- orders

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderPage {
    #[serde(default)]
    pub orders: Vec<Order>,
    #[serde(default)]
    pub total_amount: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    #[serde(deserialize_with = "text")]
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub date_created: Option<i64>,
    #[serde(default)]
    pub date_status_changed: Option<i64>,
    #[serde(default)]
    pub order_items: Vec<OrderItem>,
    #[serde(default)]
    pub cancel_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderItem {
    #[serde(deserialize_with = "text")]
    pub sku_id: String,
    #[serde(default, deserialize_with = "opt_text")]
    pub barcode: Option<String>,
    #[serde(default)]
    pub sku_title: Option<String>,
    #[serde(default)]
    pub product_title: Option<String>,
    #[serde(default)]
    pub amount: Option<i64>,
    #[serde(default)]
    pub quantity: Option<i64>,
    /// Unit price, sum.
    #[serde(default)]
    pub price: Option<Value>,
    #[serde(default)]
    pub seller_price: Option<Value>,
}

/// Uzum's status word as our state.
pub fn order_state(status: &str) -> OrderState {
    match status {
        "CREATED" => OrderState::New,
        "PACKING" => OrderState::Packing,
        "PENDING_DELIVERY"
        | "DELIVERING"
        | "ACCEPTED_AT_DP"
        | "DELIVERED_TO_CUSTOMER_DELIVERY_POINT" => OrderState::Shipping,
        "DELIVERED" | "COMPLETED" => OrderState::Delivered,
        "CANCELED" | "CANCELLED" => OrderState::Cancelled,
        "RETURNED" => OrderState::Returned,
        // PENDING_CANCELLATION may still be reverted: not a cancellation yet.
        _ => OrderState::Other,
    }
}

fn millis(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.and_then(DateTime::from_timestamp_millis)
}

impl Order {
    pub fn changed_at(&self) -> Option<DateTime<Utc>> {
        millis(self.date_status_changed).or_else(|| millis(self.date_created))
    }

    pub fn status_change(&self) -> OrderStatusChange {
        OrderStatusChange {
            external_id: self.id.clone(),
            state: order_state(&self.status),
            raw_status: self.status.clone(),
            changed_at: self.changed_at(),
            reason: self.cancel_reason.clone().filter(|r| !r.is_empty()),
        }
    }

    pub fn into_order(self) -> Result<MarketplaceOrder, ConnectorError> {
        let mut lines = Vec::with_capacity(self.order_items.len());
        let mut total: i64 = 0;
        for it in self.order_items {
            let units = it.amount.or(it.quantity).unwrap_or(1);
            if units <= 0 {
                return Err(ConnectorError::protocol(format!(
                    "order {}: sku {} has amount {units}",
                    self.id, it.sku_id
                )));
            }
            let price_v = it.seller_price.as_ref().or(it.price.as_ref());
            let price = price_v.and_then(sum_to_tiyin).ok_or_else(|| {
                ConnectorError::protocol(format!(
                    "order {}: sku {} has no readable price",
                    self.id, it.sku_id
                ))
            })?;
            let overflow =
                || ConnectorError::protocol(format!("order {}: total overflows", self.id));
            total = price
                .checked_mul(units)
                .and_then(|l| total.checked_add(l))
                .ok_or_else(overflow)?;
            lines.push(MarketplaceOrderLine {
                external_id: it.sku_id,
                barcode: it.barcode.filter(|b| !b.is_empty()),
                title: it.product_title.or(it.sku_title),
                quantity: units.checked_mul(MILLI).ok_or_else(overflow)?,
                price,
                marking_required: false,
            });
        }
        Ok(MarketplaceOrder {
            state: order_state(&self.status),
            created_at: millis(self.date_created),
            external_id: self.id,
            raw_status: self.status,
            lines,
            total,
            ship_by: None,
        })
    }
}

// ---------------------------------------------------------------- helpers

/// An id Uzum may send as a number or a string.
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "expected an id, got {}",
            kind_of(&other)
        ))),
    }
}

fn opt_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) => Ok(Some(n.to_string())),
        other => Err(serde::de::Error::custom(format!(
            "expected text, got {}",
            kind_of(&other)
        ))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sums_become_tiyin_exactly() {
        assert_eq!(sum_to_tiyin(&json!(25000)), Some(2_500_000));
        assert_eq!(sum_to_tiyin(&json!("25000.5")), Some(2_500_050));
        assert_eq!(sum_to_tiyin(&json!("0.07")), Some(7));
        assert_eq!(sum_to_tiyin(&json!("1.001")), None);
        assert_eq!(sum_to_tiyin(&json!("abc")), None);
        assert_eq!(sum_to_tiyin(&json!(null)), None);
        assert_eq!(tiyin_to_sum(2_500_000), Some(25_000));
        assert_eq!(tiyin_to_sum(2_500_050), None);
    }

    #[test]
    fn stock_rounds_down_and_clamps() {
        assert_eq!(whole_units(2_999), 2);
        assert_eq!(whole_units(3_000), 3);
        assert_eq!(whole_units(999), 0);
        assert_eq!(whole_units(-5_000), 0);
    }

    #[test]
    fn errors_name_items_as_whole_tokens() {
        let m = "sku not found: skuId Some(123), barcode Some(\"4780000000017\")";
        assert!(mentions(m, "123"));
        assert!(!mentions(m, "12"));
        assert!(mentions(m, "4780000000017"));
        assert!(!mentions(m, "478000000001"));
        assert!(mentions("sku 9: amount must be", "9"));
    }

    #[test]
    fn statuses_map() {
        assert_eq!(order_state("CREATED"), OrderState::New);
        assert_eq!(order_state("PACKING"), OrderState::Packing);
        assert_eq!(order_state("DELIVERING"), OrderState::Shipping);
        assert_eq!(order_state("CANCELED"), OrderState::Cancelled);
        assert_eq!(order_state("RETURNED"), OrderState::Returned);
        assert_eq!(order_state("PENDING_CANCELLATION"), OrderState::Other);
    }
}

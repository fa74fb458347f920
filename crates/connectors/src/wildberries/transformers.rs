//! Wildberries wire types and their mapping to the hub's marketplace types.
//!
//! Prices on the wire are minor units of the order's currency (for the sum: tiyin); stock
//! amounts are whole units; one assembly order is one unit of one size (`chrtId`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use savdo_hub::connector::{
    MarketplaceItem, MarketplaceOrder, MarketplaceOrderLine, OrderState, OrderStatusChange,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// ISO 4217 numeric code of the Uzbek sum: minor units are tiyin.
pub const UZS: u32 = 860;
/// Most units WB takes for one size in one warehouse.
pub const MAX_AMOUNT: i64 = 100_000;

// ---------------------------------------------------------------- errors

/// Any of WB's error bodies: marketplace `{code, message}`, gateway `{title, detail}`, content
/// `{errorText}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ErrorBody {
    pub code: Option<Value>,
    pub message: Option<String>,
    pub title: Option<String>,
    pub detail: Option<String>,
    pub error_text: Option<String>,
}

impl ErrorBody {
    pub fn code(&self) -> Option<String> {
        match &self.code {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        }
    }
    pub fn text(&self) -> Option<String> {
        self.message
            .clone()
            .or_else(|| self.detail.clone())
            .or_else(|| self.error_text.clone())
            .or_else(|| self.title.clone())
            .filter(|s| !s.is_empty())
    }
}

/// One entry of a stocks 409: `{code, data: [{chrtId, amount}], message}`.
#[derive(Debug, Deserialize)]
pub struct StockError {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub data: Value,
    #[serde(default)]
    pub message: String,
}

impl StockError {
    /// The sizes this error names (the rest of the request was fine).
    pub fn chrt_ids(&self) -> Vec<u64> {
        match &self.data {
            Value::Array(items) => items
                .iter()
                .filter_map(|i| {
                    i.get("chrtId")
                        .and_then(Value::as_u64)
                        .or_else(|| i.as_u64())
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

// ---------------------------------------------------------------- warehouses

#[derive(Debug, Deserialize)]
pub struct Warehouse {
    pub id: u64,
    #[serde(default)]
    pub name: String,
}

// ---------------------------------------------------------------- cards

#[derive(Debug, Serialize)]
pub struct CardsRequest {
    pub settings: CardsSettings,
}

#[derive(Debug, Serialize)]
pub struct CardsSettings {
    pub cursor: CardsCursor,
    pub filter: CardsFilter,
}

#[derive(Debug, Serialize)]
pub struct CardsFilter {
    /// -1: cards with and without photos (the default hides none only with this).
    #[serde(rename = "withPhoto")]
    pub with_photo: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardsCursor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(rename = "updatedAt", default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    #[serde(rename = "nmID", default, skip_serializing_if = "Option::is_none")]
    pub nm_id: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct CardsResponse {
    #[serde(default)]
    pub cards: Vec<Card>,
    #[serde(default)]
    pub cursor: Option<CardsCursor>,
}

#[derive(Debug, Deserialize)]
pub struct Card {
    #[serde(rename = "nmID")]
    pub nm_id: u64,
    #[serde(rename = "vendorCode", default)]
    pub vendor_code: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub sizes: Vec<CardSize>,
}

#[derive(Debug, Deserialize)]
pub struct CardSize {
    #[serde(rename = "chrtID")]
    pub chrt_id: u64,
    #[serde(rename = "techSize", default)]
    pub tech_size: String,
    #[serde(default)]
    pub skus: Vec<String>,
}

/// Our opaque page cursor: WB's `(updatedAt, nmID)` pair.
pub fn encode_cursor(c: &CardsCursor) -> Option<String> {
    let nm = c.nm_id?;
    let at = c.updated_at.as_deref().unwrap_or("");
    Some(URL_SAFE_NO_PAD.encode(format!("{nm}|{at}")))
}

pub fn decode_cursor(s: &str) -> Option<CardsCursor> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(s.trim()).ok()?).ok()?;
    let (nm, at) = raw.split_once('|')?;
    Some(CardsCursor {
        limit: None,
        updated_at: Some(at.to_owned()).filter(|a| !a.is_empty()),
        nm_id: Some(nm.parse().ok()?),
    })
}

/// One item per size: stock is pushed by `chrtId`.
pub fn card_items(card: &Card) -> impl Iterator<Item = MarketplaceItem> + '_ {
    card.sizes.iter().map(move |s| {
        let base = if card.title.is_empty() {
            &card.vendor_code
        } else {
            &card.title
        };
        let title = match s.tech_size.trim() {
            "" | "0" => base.clone(),
            size => format!("{base} ({size})"),
        };
        MarketplaceItem {
            external_id: s.chrt_id.to_string(),
            product_id: Some(card.nm_id.to_string()),
            title,
            barcodes: s.skus.clone(),
            price: None,
            stock: None,
        }
    })
}

// ---------------------------------------------------------------- stocks

#[derive(Debug, Serialize)]
pub struct StocksPush<'a> {
    pub stocks: &'a [StockAmount],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockAmount {
    #[serde(rename = "chrtId")]
    pub chrt_id: u64,
    pub amount: i64,
}

#[derive(Debug, Serialize)]
pub struct StocksRead<'a> {
    #[serde(rename = "chrtIds")]
    pub chrt_ids: &'a [u64],
}

#[derive(Debug, Deserialize)]
pub struct StocksReadResponse {
    #[serde(default)]
    pub stocks: Vec<StockAmount>,
}

/// Whole units to send for `available` thousandths: rounded down, never below zero.
pub fn whole_units(available: i64) -> i64 {
    available.max(0) / 1000
}

// ---------------------------------------------------------------- orders

#[derive(Debug, Deserialize)]
pub struct OrdersResponse {
    #[serde(default)]
    pub orders: Vec<Order>,
    /// Paging token of `GET /api/v3/orders`.
    #[serde(default)]
    pub next: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub id: u64,
    #[serde(default)]
    pub article: String,
    pub chrt_id: u64,
    #[serde(default)]
    pub nm_id: Option<u64>,
    #[serde(default)]
    pub skus: Vec<String>,
    pub price: i64,
    #[serde(default)]
    pub currency_code: Option<u32>,
    #[serde(default)]
    pub converted_price: Option<i64>,
    #[serde(default)]
    pub converted_currency_code: Option<u32>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub required_meta: Vec<String>,
}

impl Order {
    /// The price in tiyin: the seller's (converted) price when it is in sum, else the buyer's
    /// when that is; otherwise `None` (a foreign-currency order we cannot book).
    pub fn price_tiyin(&self) -> Option<i64> {
        match (self.converted_price, self.converted_currency_code) {
            (Some(p), Some(UZS)) => Some(p),
            _ if self.currency_code == Some(UZS) => Some(self.price),
            // WB leaves the currency out when it is the seller's own.
            (None, None) if self.currency_code.is_none() => Some(self.price),
            _ => None,
        }
    }

    /// Marking codes (`sgtin`) must accompany this order.
    pub fn marking_required(&self) -> bool {
        self.required_meta
            .iter()
            .any(|m| m.eq_ignore_ascii_case("sgtin"))
    }
}

fn parse_time(s: Option<&str>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s?)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// A new assembly order: one line of one unit. `Err` names why it cannot be booked.
pub fn new_order(o: &Order) -> Result<MarketplaceOrder, String> {
    let price = o.price_tiyin().ok_or_else(|| {
        format!(
            "order {}: price is in currency {:?}, not the sum",
            o.id,
            o.converted_currency_code.or(o.currency_code)
        )
    })?;
    Ok(MarketplaceOrder {
        external_id: o.id.to_string(),
        created_at: parse_time(o.created_at.as_deref()),
        state: OrderState::New,
        raw_status: "new".into(),
        lines: vec![MarketplaceOrderLine {
            external_id: o.chrt_id.to_string(),
            barcode: o.skus.first().cloned(),
            title: Some(o.article.clone()).filter(|a| !a.is_empty()),
            quantity: 1000,
            price,
            marking_required: o.marking_required(),
        }],
        total: price,
        ship_by: None,
    })
}

#[derive(Debug, Serialize)]
pub struct StatusRequest<'a> {
    pub orders: &'a [u64],
}

#[derive(Debug, Deserialize)]
pub struct StatusResponse {
    #[serde(default)]
    pub orders: Vec<OrderStatus>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderStatus {
    pub id: u64,
    #[serde(default)]
    pub supplier_status: String,
    #[serde(default)]
    pub wb_status: String,
}

impl OrderStatus {
    /// WB's status pair as our state. WB's side wins once it has cancelled or delivered.
    pub fn state(&self) -> OrderState {
        match self.wb_status.as_str() {
            "canceled" | "canceled_by_client" | "declined_by_client" | "defect" => {
                return OrderState::Cancelled;
            }
            "sold" => return OrderState::Delivered,
            "sorted" | "ready_for_pickup" => return OrderState::Shipping,
            _ => {}
        }
        match self.supplier_status.as_str() {
            "new" => OrderState::New,
            "confirm" => OrderState::Confirmed,
            "complete" => OrderState::Shipping,
            "cancel" => OrderState::Cancelled,
            _ => OrderState::Other,
        }
    }

    pub fn reason(&self) -> Option<String> {
        let why = match self.wb_status.as_str() {
            "canceled" => "cancelled by Wildberries",
            "canceled_by_client" => "cancelled by the buyer",
            "declined_by_client" => "declined by the buyer",
            "defect" => "cancelled: defect",
            _ if self.supplier_status == "cancel" => "cancelled by the seller",
            _ => return None,
        };
        Some(why.to_owned())
    }

    pub fn change(&self) -> OrderStatusChange {
        OrderStatusChange {
            external_id: self.id.to_string(),
            state: self.state(),
            raw_status: format!("{}/{}", self.supplier_status, self.wb_status),
            changed_at: None,
            reason: self.reason(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct NewSupply<'a> {
    pub name: &'a str,
}

#[derive(Debug, Deserialize)]
pub struct SupplyCreated {
    pub id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cursor_round_trips() {
        let c = CardsCursor {
            limit: None,
            updated_at: Some("2026-01-01T10:00:00.000Z".into()),
            nm_id: Some(2003),
        };
        let s = encode_cursor(&c).unwrap();
        assert_eq!(decode_cursor(&s), Some(c));
        assert_eq!(decode_cursor("not a cursor!"), None);
        assert_eq!(
            encode_cursor(&CardsCursor {
                limit: None,
                updated_at: None,
                nm_id: None
            }),
            None
        );
    }

    #[test]
    fn rounding_and_clamping() {
        assert_eq!(whole_units(2999), 2);
        assert_eq!(whole_units(3000), 3);
        assert_eq!(whole_units(999), 0);
        assert_eq!(whole_units(-5000), 0);
    }

    #[test]
    fn statuses_map() {
        let s = |sup: &str, wb: &str| OrderStatus {
            id: 1,
            supplier_status: sup.into(),
            wb_status: wb.into(),
        };
        assert_eq!(s("new", "waiting").state(), OrderState::New);
        assert_eq!(s("confirm", "waiting").state(), OrderState::Confirmed);
        assert_eq!(s("complete", "sorted").state(), OrderState::Shipping);
        assert_eq!(s("complete", "sold").state(), OrderState::Delivered);
        assert_eq!(
            s("confirm", "canceled_by_client").state(),
            OrderState::Cancelled
        );
        assert_eq!(
            s("cancel", "declined_by_client").state(),
            OrderState::Cancelled
        );
        assert_eq!(s("new", "canceled").change().raw_status, "new/canceled");
    }

    #[test]
    fn order_prices_are_tiyin_in_sum_only() {
        let o: Order = serde_json::from_value(json!({"id": 5, "chrtId": 201, "price": 2_500_000,
            "convertedPrice": 2_500_000, "currencyCode": 860, "convertedCurrencyCode": 860,
            "skus": ["4780000000017"], "requiredMeta": ["sgtin"], "article": "CHOY-100",
            "createdAt": "2026-01-01T10:00:00.000Z"}))
        .unwrap();
        let m = new_order(&o).unwrap();
        assert_eq!(m.total, 2_500_000);
        assert_eq!(m.lines[0].quantity, 1000);
        assert!(m.lines[0].marking_required);
        let rub: Order = serde_json::from_value(json!({"id": 6, "chrtId": 201, "price": 100,
            "currencyCode": 643, "convertedPrice": 100, "convertedCurrencyCode": 643}))
        .unwrap();
        assert!(new_order(&rub).is_err());
    }
}

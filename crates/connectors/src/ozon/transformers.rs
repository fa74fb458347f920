//! Ozon Seller API wire types, and the conversions between them and the hub's types.
//!
//! Ozon speaks protobuf JSON: int64 ids may arrive as numbers or strings, absent fields mean
//! zero, and an unknown request field refuses the whole request (so requests carry only the
//! fields named here). Money is a decimal string ("1390.000000").

use chrono::{DateTime, Utc};
use savdo_hub::connector::{
    MarketplaceItem, MarketplaceOrder, MarketplaceOrderLine, OrderState, OrderStatusChange,
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// The currency whose prices are tiyin after `× 100`.
const UZS: &str = "UZS";

// ---------------------------------------------------------------- helpers

/// An int64 id as a number or a string (`""` and `null` read as 0).
fn de_id<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(0),
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| serde::de::Error::custom("expected a non-negative integer id")),
        Value::String(s) if s.is_empty() => Ok(0),
        Value::String(s) => s.trim().parse().map_err(serde::de::Error::custom),
        _ => Err(serde::de::Error::custom("expected an integer id")),
    }
}

/// A decimal as its text, whether Ozon sent a string or a number.
fn de_decimal<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(serde::de::Error::custom("expected a decimal")),
    }
}

/// `null` as the type's default (Ozon sends `null` for empty objects and lists).
fn de_null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A non-negative decimal amount of UZS (`"1390.50"`, `"25000"`, `"1390.000000"`) as tiyin,
/// exactly: digits beyond the second decimal must be zeros. `None` when it is not such a number.
pub fn parse_tiyin(text: &str) -> Option<i64> {
    let t = text.trim();
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || (t.contains('.') && frac.is_empty()) {
        return None;
    }
    let (cents, rest) = frac.split_at(frac.len().min(2));
    if rest.bytes().any(|b| b != b'0') {
        return None;
    }
    let cents: i64 = format!("{cents:0<2}").parse().ok()?;
    whole
        .parse::<i64>()
        .ok()?
        .checked_mul(100)?
        .checked_add(cents)
}

/// A price in tiyin, or why it cannot be one.
fn price_tiyin(text: &str, currency: &str) -> Result<i64, String> {
    if !currency.is_empty() && !currency.eq_ignore_ascii_case(UZS) {
        return Err(format!("price in {currency}, not {UZS}"));
    }
    parse_tiyin(text).ok_or_else(|| format!("price {text:?} is not a whole number of tiyin"))
}

fn parse_time(text: Option<&str>) -> Option<DateTime<Utc>> {
    text.filter(|t| !t.is_empty())
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// Ozon's posting status as our order state.
pub fn order_state(status: &str) -> OrderState {
    match status {
        "awaiting_registration"
        | "acceptance_in_progress"
        | "awaiting_approve"
        | "awaiting_packaging" => OrderState::New,
        "awaiting_deliver" => OrderState::Confirmed,
        "sent_by_seller" | "driver_pickup" | "delivering" => OrderState::Shipping,
        "delivered" => OrderState::Delivered,
        "cancelled" | "not_accepted" => OrderState::Cancelled,
        _ => OrderState::Other,
    }
}

// ---------------------------------------------------------------- errors

/// Ozon's error body: a gRPC code and a message.
#[derive(Debug, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub code: Value,
    #[serde(default)]
    pub message: String,
}

impl ErrorBody {
    /// A stable code: the `UPPER_SNAKE:` prefix of the message when Ozon gives one
    /// (`POSTING_ALREADY_SHIPPED`), else the gRPC code's name.
    pub fn code(&self) -> String {
        if let Some((word, _)) = self.message.split_once(':')
            && !word.is_empty()
            && word.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
        {
            return word.to_owned();
        }
        match self.code.as_i64() {
            Some(3) => "invalid_argument".into(),
            Some(5) => "not_found".into(),
            Some(7) => "permission_denied".into(),
            Some(8) => "resource_exhausted".into(),
            Some(16) => "unauthenticated".into(),
            Some(n) => n.to_string(),
            None => match &self.code {
                Value::String(s) if !s.is_empty() => s.clone(),
                _ => "unknown".into(),
            },
        }
    }
}

// ---------------------------------------------------------------- stocks

#[derive(Debug, Serialize)]
pub struct StocksRequest<'a> {
    pub stocks: Vec<StockItem<'a>>,
}

#[derive(Debug, Serialize)]
pub struct StockItem<'a> {
    pub offer_id: &'a str,
    pub stock: i64,
    pub warehouse_id: u64,
}

#[derive(Debug, Deserialize)]
pub struct StocksResponse {
    #[serde(default, deserialize_with = "de_null_default")]
    pub result: Vec<StockResult>,
}

#[derive(Debug, Deserialize)]
pub struct StockResult {
    #[serde(default)]
    pub offer_id: String,
    #[serde(default)]
    pub updated: bool,
    #[serde(default, deserialize_with = "de_null_default")]
    pub errors: Vec<ItemErrorBody>,
}

#[derive(Debug, Deserialize)]
pub struct ItemErrorBody {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

/// Thousandths of a unit as Ozon's whole units: rounded down, never below zero.
pub fn whole_units(available: i64) -> i64 {
    available.div_euclid(1000).max(0)
}

// ---------------------------------------------------------------- catalogue

#[derive(Debug, Serialize)]
pub struct ProductListRequest<'a> {
    pub filter: ProductFilter,
    pub last_id: &'a str,
    pub limit: u32,
}

#[derive(Debug, Serialize)]
pub struct ProductFilter {
    pub visibility: &'static str,
}

#[derive(Debug, Deserialize)]
pub struct ProductListResponse {
    pub result: ProductListResult,
}

#[derive(Debug, Deserialize)]
pub struct ProductListResult {
    #[serde(default, deserialize_with = "de_null_default")]
    pub items: Vec<ListedProduct>,
    #[serde(default, deserialize_with = "de_null_default")]
    pub last_id: String,
}

#[derive(Debug, Deserialize)]
pub struct ListedProduct {
    #[serde(deserialize_with = "de_id")]
    pub product_id: u64,
}

#[derive(Debug, Serialize)]
pub struct ProductInfoRequest {
    pub product_id: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct ProductInfoResponse {
    #[serde(default, deserialize_with = "de_null_default")]
    pub items: Vec<ProductInfo>,
}

#[derive(Debug, Deserialize)]
pub struct ProductInfo {
    #[serde(deserialize_with = "de_id")]
    pub id: u64,
    #[serde(default)]
    pub offer_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, deserialize_with = "de_null_default")]
    pub barcodes: Vec<String>,
    #[serde(default, deserialize_with = "de_decimal")]
    pub price: String,
    #[serde(default)]
    pub currency_code: String,
    #[serde(default, deserialize_with = "de_null_default")]
    pub stocks: InfoStocks,
}

#[derive(Debug, Default, Deserialize)]
pub struct InfoStocks {
    #[serde(default, deserialize_with = "de_null_default")]
    pub stocks: Vec<InfoStock>,
}

#[derive(Debug, Deserialize)]
pub struct InfoStock {
    #[serde(default)]
    pub present: i64,
}

impl ProductInfo {
    pub fn into_item(self) -> MarketplaceItem {
        let price = match price_tiyin(&self.price, &self.currency_code) {
            Ok(p) => Some(p),
            Err(why) => {
                tracing::warn!(offer_id = %self.offer_id, %why, "ozon: catalogue price left out");
                None
            }
        };
        let present: i64 = self.stocks.stocks.iter().map(|s| s.present.max(0)).sum();
        MarketplaceItem {
            external_id: self.offer_id,
            product_id: Some(self.id.to_string()),
            title: self.name,
            barcodes: self
                .barcodes
                .into_iter()
                .filter(|b| !b.is_empty())
                .collect(),
            price,
            stock: present.checked_mul(1000),
        }
    }
}

// ---------------------------------------------------------------- warehouses

#[derive(Debug, Deserialize)]
pub struct WarehouseListResponse {
    #[serde(default, deserialize_with = "de_null_default")]
    pub result: Vec<Warehouse>,
}

#[derive(Debug, Deserialize)]
pub struct Warehouse {
    #[serde(deserialize_with = "de_id")]
    pub warehouse_id: u64,
    #[serde(default)]
    pub name: String,
}

// ---------------------------------------------------------------- postings

#[derive(Debug, Serialize)]
pub struct PostingListRequest<'a> {
    pub dir: &'static str,
    pub filter: PostingFilter<'a>,
    pub limit: u32,
    pub offset: u64,
}

#[derive(Debug, Serialize)]
pub struct PostingFilter<'a> {
    pub since: String,
    pub to: String,
    pub status: &'a str,
    pub warehouse_id: Vec<u64>,
}

#[derive(Debug, Deserialize)]
pub struct PostingListResponse {
    pub result: PostingListResult,
}

#[derive(Debug, Deserialize)]
pub struct PostingListResult {
    #[serde(default, deserialize_with = "de_null_default")]
    pub postings: Vec<Posting>,
    #[serde(default)]
    pub has_next: bool,
}

#[derive(Debug, Serialize)]
pub struct PostingGetRequest<'a> {
    pub posting_number: &'a str,
}

#[derive(Debug, Deserialize)]
pub struct PostingGetResponse {
    pub result: Posting,
}

#[derive(Debug, Deserialize)]
pub struct Posting {
    pub posting_number: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub in_process_at: Option<String>,
    #[serde(default)]
    pub shipment_date: Option<String>,
    #[serde(default, deserialize_with = "de_null_default")]
    pub products: Vec<PostingProduct>,
    #[serde(default)]
    pub cancellation: Option<Cancellation>,
    #[serde(default)]
    pub requirements: Option<Requirements>,
}

#[derive(Debug, Deserialize)]
pub struct PostingProduct {
    #[serde(default)]
    pub offer_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, deserialize_with = "de_id")]
    pub sku: u64,
    #[serde(default)]
    pub quantity: i64,
    #[serde(default, deserialize_with = "de_decimal")]
    pub price: String,
    #[serde(default)]
    pub currency_code: String,
}

#[derive(Debug, Deserialize)]
pub struct Cancellation {
    #[serde(default)]
    pub cancel_reason: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct Requirements {
    /// SKUs whose marking codes must be given before shipping.
    #[serde(default, deserialize_with = "de_null_default")]
    pub products_requiring_mandatory_mark: Vec<Value>,
}

impl Posting {
    fn marking_required(&self, sku: u64) -> bool {
        self.requirements.as_ref().is_some_and(|r| {
            r.products_requiring_mandatory_mark.iter().any(|v| match v {
                Value::Number(n) => n.as_u64() == Some(sku),
                Value::String(s) => s.trim().parse::<u64>().ok() == Some(sku),
                _ => false,
            })
        })
    }

    fn reason(&self) -> Option<String> {
        self.cancellation
            .as_ref()
            .map(|c| c.cancel_reason.clone())
            .filter(|r| !r.is_empty())
    }

    /// Lines in thousandths and tiyin; a price that is not UZS tiyin refuses the posting.
    pub fn into_order(self) -> Result<MarketplaceOrder, String> {
        let mut lines = Vec::with_capacity(self.products.len());
        let mut total: i64 = 0;
        for p in &self.products {
            let price = price_tiyin(&p.price, &p.currency_code)
                .map_err(|why| format!("posting {}: {}: {why}", self.posting_number, p.offer_id))?;
            let line_total = price.checked_mul(p.quantity).ok_or_else(|| {
                format!(
                    "posting {}: {}: amount overflows",
                    self.posting_number, p.offer_id
                )
            })?;
            total = total
                .checked_add(line_total)
                .ok_or_else(|| format!("posting {}: total overflows", self.posting_number))?;
            lines.push(MarketplaceOrderLine {
                external_id: p.offer_id.clone(),
                barcode: None,
                title: Some(p.name.clone()).filter(|n| !n.is_empty()),
                quantity: p.quantity.checked_mul(1000).ok_or_else(|| {
                    format!("posting {}: quantity overflows", self.posting_number)
                })?,
                price,
                marking_required: self.marking_required(p.sku),
            });
        }
        Ok(MarketplaceOrder {
            state: order_state(&self.status),
            created_at: parse_time(self.in_process_at.as_deref()),
            ship_by: parse_time(self.shipment_date.as_deref()),
            external_id: self.posting_number,
            raw_status: self.status,
            lines,
            total,
        })
    }

    pub fn status_change(&self) -> OrderStatusChange {
        OrderStatusChange {
            external_id: self.posting_number.clone(),
            state: order_state(&self.status),
            raw_status: self.status.clone(),
            changed_at: None,
            reason: self.reason(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ShipRequest<'a> {
    pub posting_number: &'a str,
    pub packages: Vec<Package>,
}

#[derive(Debug, Serialize)]
pub struct Package {
    pub products: Vec<PackageProduct>,
}

/// Ozon calls the SKU `product_id` here.
#[derive(Debug, Serialize)]
pub struct PackageProduct {
    pub product_id: u64,
    pub quantity: i64,
}

impl Posting {
    /// One package holding exactly the posting's products.
    pub fn single_package(&self) -> Package {
        Package {
            products: self
                .products
                .iter()
                .map(|p| PackageProduct {
                    product_id: p.sku,
                    quantity: p.quantity,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_prices_are_exact_tiyin() {
        assert_eq!(parse_tiyin("25000"), Some(2_500_000));
        assert_eq!(parse_tiyin("1390.000000"), Some(139_000));
        assert_eq!(parse_tiyin("1390.5"), Some(139_050));
        assert_eq!(parse_tiyin("0.07"), Some(7));
        assert_eq!(parse_tiyin(" 12.30 "), Some(1_230));
        assert_eq!(parse_tiyin("1.005"), None);
        assert_eq!(parse_tiyin("-1"), None);
        assert_eq!(parse_tiyin(""), None);
        assert_eq!(parse_tiyin("1."), None);
        assert_eq!(parse_tiyin(".5"), None);
        assert_eq!(parse_tiyin("1e3"), None);
        assert_eq!(parse_tiyin("99999999999999999999"), None);
        assert_eq!(
            price_tiyin("10", "RUB"),
            Err("price in RUB, not UZS".into())
        );
        assert_eq!(price_tiyin("10", ""), Ok(1000));
    }

    #[test]
    fn stock_is_whole_units_rounded_down_never_negative() {
        assert_eq!(whole_units(0), 0);
        assert_eq!(whole_units(999), 0);
        assert_eq!(whole_units(1000), 1);
        assert_eq!(whole_units(12_999), 12);
        assert_eq!(whole_units(-1), 0);
        assert_eq!(whole_units(-5000), 0);
    }

    #[test]
    fn error_codes_prefer_the_named_reason() {
        let e = ErrorBody {
            code: 3.into(),
            message: "POSTING_ALREADY_SHIPPED: posting is awaiting_deliver".into(),
        };
        assert_eq!(e.code(), "POSTING_ALREADY_SHIPPED");
        let e = ErrorBody {
            code: 5.into(),
            message: "Posting not found".into(),
        };
        assert_eq!(e.code(), "not_found");
    }

    #[test]
    fn statuses_map_to_states() {
        assert_eq!(order_state("awaiting_packaging"), OrderState::New);
        assert_eq!(order_state("awaiting_deliver"), OrderState::Confirmed);
        assert_eq!(order_state("delivering"), OrderState::Shipping);
        assert_eq!(order_state("delivered"), OrderState::Delivered);
        assert_eq!(order_state("cancelled"), OrderState::Cancelled);
        assert_eq!(order_state("arbitration"), OrderState::Other);
    }
}

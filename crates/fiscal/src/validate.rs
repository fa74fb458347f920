//! Uzbek receipt rules, checked before a receipt is journaled or a device is touched.

use serde::Serialize;
use uuid::Uuid;

use crate::amounts::vat_included;
use crate::model::{Operation, Receipt};

/// Known middlewares and fiscal modules refuse longer receipts.
pub const MAX_POSITIONS: usize = 150;
const MAX_NAME: usize = 255;
const MAX_LABEL: usize = 200;

/// One violated rule, naming the field as the caller sent it (`items[2].mxik`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

fn is_digits(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit())
}

/// Parses an idempotency key, naming `field` when it is not a UUID.
pub fn parse_id(field: &str, s: &str, errors: &mut Vec<FieldError>) -> Option<Uuid> {
    match Uuid::parse_str(s) {
        Ok(u) if !u.is_nil() => Some(u),
        _ => {
            errors.push(FieldError::new(field, "must be a UUID"));
            None
        }
    }
}

/// Checks every rule and reports all violations at once, so a cashier fixes them in one go.
pub fn receipt(r: &Receipt, op: Operation) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    parse_id("id", &r.id, &mut errors);
    if r.device_id.trim().is_empty() {
        errors.push(FieldError::new("device_id", "is required"));
    }
    if r.cashier.trim().is_empty() {
        errors.push(FieldError::new("cashier", "is required"));
    }
    match (op, &r.sale_id) {
        (Operation::Refund, None) => errors.push(FieldError::new(
            "sale_id",
            "a refund must name the sale it returns",
        )),
        (Operation::Refund, Some(s)) => {
            parse_id("sale_id", s, &mut errors);
        }
        (_, Some(_)) => errors.push(FieldError::new("sale_id", "only a refund names a sale")),
        _ => {}
    }
    if r.items.is_empty() {
        errors.push(FieldError::new(
            "items",
            "a receipt needs at least one position",
        ));
    }
    if r.items.len() > MAX_POSITIONS {
        errors.push(FieldError::new(
            "items",
            format!(
                "{} positions; a receipt holds at most {MAX_POSITIONS}, split it",
                r.items.len()
            ),
        ));
    }
    let mut sum: Option<i64> = Some(0);
    for (i, item) in r.items.iter().enumerate() {
        let f = |name: &str| format!("items[{i}].{name}");
        if item.name.trim().is_empty() {
            errors.push(FieldError::new(f("name"), "is required"));
        } else if item.name.chars().count() > MAX_NAME {
            errors.push(FieldError::new(
                f("name"),
                format!("at most {MAX_NAME} characters"),
            ));
        }
        if !is_digits(&item.mxik, 17) {
            errors.push(FieldError::new(
                f("mxik"),
                "MXIK (IKPU) code must be exactly 17 digits",
            ));
        }
        if item.package_code.trim().is_empty() {
            errors.push(FieldError::new(
                f("package_code"),
                "package code of the MXIK record is required",
            ));
        }
        if item.unit == 0 {
            errors.push(FieldError::new(f("unit"), "unit code is required"));
        }
        if item.qty_milli <= 0 {
            errors.push(FieldError::new(f("qty_milli"), "quantity must be positive"));
        }
        if item.price < 0 {
            errors.push(FieldError::new(f("price"), "price cannot be negative"));
        }
        if item.discount < 0 {
            errors.push(FieldError::new(
                f("discount"),
                "discount cannot be negative",
            ));
        }
        if item.vat_percent > 100 {
            errors.push(FieldError::new(
                f("vat_percent"),
                "VAT percent is at most 100",
            ));
        }
        match item.amount() {
            Some(amount) if amount < 0 => {
                errors.push(FieldError::new(
                    f("discount"),
                    "discount is larger than the line amount",
                ));
                sum = None;
            }
            Some(amount) => {
                match vat_included(amount, item.vat_percent) {
                    Some(vat) if vat == item.vat_amount => {}
                    Some(vat) => errors.push(FieldError::new(
                        f("vat_amount"),
                        format!(
                            "VAT of {} % in {amount} tiyin is {vat} tiyin, not {}",
                            item.vat_percent, item.vat_amount
                        ),
                    )),
                    None => {}
                }
                sum = sum.and_then(|s| s.checked_add(amount));
            }
            None => {
                errors.push(FieldError::new(
                    f("price"),
                    "price times quantity is too large",
                ));
                sum = None;
            }
        }
        for (j, label) in item.labels.iter().enumerate() {
            if label.trim().is_empty() || label.len() > MAX_LABEL {
                errors.push(FieldError::new(
                    format!("items[{i}].labels[{j}]"),
                    format!("marking code must be 1 to {MAX_LABEL} characters"),
                ));
            }
        }
        if let Some(tin) = &item.commission_tin
            && !(is_digits(tin, 9) || is_digits(tin, 14))
        {
            errors.push(FieldError::new(
                f("commission_tin"),
                "principal's TIN has 9 digits, PINFL 14",
            ));
        }
    }
    let p = &r.payments;
    for (name, v) in [("cash", p.cash), ("card", p.card), ("other", p.other)] {
        if v < 0 {
            errors.push(FieldError::new(
                format!("payments.{name}"),
                "cannot be negative",
            ));
        }
    }
    if r.total <= 0 {
        errors.push(FieldError::new("total", "must be positive"));
    }
    if let Some(sum) = sum
        && sum != r.total
    {
        errors.push(FieldError::new(
            "total",
            format!(
                "items add up to {sum} tiyin after discounts, not {}",
                r.total
            ),
        ));
    }
    match p.sum() {
        Some(paid) if paid != r.total => errors.push(FieldError::new(
            "payments",
            format!("payments add up to {paid} tiyin, the total is {}", r.total),
        )),
        None => errors.push(FieldError::new("payments", "payments are too large")),
        _ => {}
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Item, Payments};

    fn item(price: i64, qty_milli: i64, discount: i64) -> Item {
        let amount = crate::amounts::line_gross(price, qty_milli).unwrap() - discount;
        Item {
            name: "Non".into(),
            mxik: "10202001001000000".into(),
            package_code: "1508583".into(),
            unit: 1,
            qty_milli,
            price,
            discount,
            vat_percent: 12,
            vat_amount: vat_included(amount, 12).unwrap(),
            labels: vec![],
            commission_tin: None,
        }
    }

    fn receipt(items: Vec<Item>) -> Receipt {
        let total = items.iter().map(|i| i.amount().unwrap()).sum();
        Receipt {
            id: Uuid::now_v7().to_string(),
            device_id: "till-1".into(),
            cashier: "Dilnoza".into(),
            items,
            payments: Payments {
                cash: total,
                ..Default::default()
            },
            total,
            sale_id: None,
        }
    }

    fn fields(r: &Receipt, op: Operation) -> Vec<String> {
        match super::receipt(r, op) {
            Ok(()) => vec![],
            Err(e) => e.into_iter().map(|e| e.field).collect(),
        }
    }

    #[test]
    fn a_correct_receipt_passes() {
        let r = receipt(vec![item(500_000, 2000, 10_000), item(12_345, 333, 0)]);
        assert_eq!(fields(&r, Operation::Sale), Vec::<String>::new());
    }

    #[test]
    fn each_rule_names_its_field() {
        let mut r = receipt(vec![item(500_000, 1000, 0)]);
        r.items[0].mxik = "123".into();
        r.items[0].package_code = " ".into();
        r.items[0].vat_amount += 1;
        r.items[0].commission_tin = Some("12345".into());
        r.payments.card = 1;
        assert_eq!(
            fields(&r, Operation::Sale),
            vec![
                "items[0].mxik",
                "items[0].package_code",
                "items[0].vat_amount",
                "items[0].commission_tin",
                "payments"
            ]
        );
    }

    #[test]
    fn totals_must_add_up() {
        let mut r = receipt(vec![item(500_000, 1000, 0)]);
        r.total += 100;
        r.payments.cash += 100;
        assert_eq!(fields(&r, Operation::Sale), vec!["total"]);
    }

    #[test]
    fn at_most_150_positions() {
        let r = receipt((0..151).map(|_| item(1000, 1000, 0)).collect());
        assert_eq!(fields(&r, Operation::Sale), vec!["items"]);
        let r = receipt((0..150).map(|_| item(1000, 1000, 0)).collect());
        assert!(fields(&r, Operation::Sale).is_empty());
    }

    #[test]
    fn refund_needs_a_sale() {
        let r = receipt(vec![item(1000, 1000, 0)]);
        assert_eq!(fields(&r, Operation::Refund), vec!["sale_id"]);
        let mut r2 = r.clone();
        r2.sale_id = Some("nope".into());
        assert_eq!(fields(&r2, Operation::Refund), vec!["sale_id"]);
        r2.sale_id = Some(Uuid::now_v7().to_string());
        assert!(fields(&r2, Operation::Refund).is_empty());
        assert_eq!(fields(&r2, Operation::Sale), vec!["sale_id"]);
    }

    #[test]
    fn discount_larger_than_line() {
        let mut r = receipt(vec![item(1000, 1000, 0)]);
        r.items[0].discount = 2000;
        assert!(fields(&r, Operation::Sale).contains(&"items[0].discount".to_string()));
    }
}

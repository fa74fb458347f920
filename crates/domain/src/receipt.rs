//! Receipt arithmetic: line amounts, discounts, VAT and payments, exactly in tiyin.
//!
//! Prices include VAT. A line's amount is `round(price × qty) − discount`; its VAT is
//! `round(amount × p / (100 + p))`, half away from zero, computed per line (as the fiscal module
//! does) and summed for the receipt, so the receipt's VAT always equals the sum of its lines.

use serde::{Deserialize, Serialize};

use crate::money::{MAX_TIYIN, line_gross, vat_included};
use crate::qty::Qty;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptType {
    Sale,
    Refund,
}

impl ReceiptType {
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptType::Sale => "sale",
            ReceiptType::Refund => "refund",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    Cash,
    Card,
    Payme,
    Click,
    LoyaltyPoints,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("quantity must be greater than zero")]
    QtyNotPositive,
    #[error("price must not be negative")]
    NegativePrice,
    #[error("discount must not be negative")]
    NegativeDiscount,
    #[error("discount exceeds the line amount")]
    DiscountTooLarge,
    #[error("amount is too large")]
    Overflow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineAmounts {
    /// `round(price × qty)` before discount.
    pub gross: i64,
    /// What the buyer pays for the line.
    pub amount: i64,
    pub vat_amount: i64,
}

pub fn compute_line(
    price: i64,
    qty: Qty,
    discount: i64,
    vat_percent: u8,
) -> Result<LineAmounts, LineError> {
    if !qty.is_positive() {
        return Err(LineError::QtyNotPositive);
    }
    if price < 0 {
        return Err(LineError::NegativePrice);
    }
    if discount < 0 {
        return Err(LineError::NegativeDiscount);
    }
    if price > MAX_TIYIN || discount > MAX_TIYIN {
        return Err(LineError::Overflow);
    }
    let gross = line_gross(price, qty).ok_or(LineError::Overflow)?;
    if discount > gross {
        return Err(LineError::DiscountTooLarge);
    }
    let amount = gross - discount;
    Ok(LineAmounts {
        gross,
        amount,
        vat_amount: vat_included(amount, vat_percent),
    })
}

/// The part of `whole` that `part_qty` of `whole_qty` stands for (refunds of part of a line).
pub fn pro_rata(whole: i64, part_qty: Qty, whole_qty: Qty) -> i64 {
    if whole_qty.milli() == 0 {
        return 0;
    }
    crate::money::div_round(
        whole as i128 * part_qty.milli() as i128,
        whole_qty.milli() as i128,
    ) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_with_discount_and_vat() {
        let l = compute_line(1_120_000, Qty::units(2), 224_000, 12).unwrap();
        assert_eq!(l.gross, 2_240_000);
        assert_eq!(l.amount, 2_016_000);
        assert_eq!(l.vat_amount, 216_000);
        assert_eq!(
            compute_line(100, Qty::ZERO, 0, 12),
            Err(LineError::QtyNotPositive)
        );
        assert_eq!(
            compute_line(100, Qty::ONE, 101, 12),
            Err(LineError::DiscountTooLarge)
        );
        assert_eq!(
            compute_line(i64::MAX, Qty::ONE, 0, 12),
            Err(LineError::Overflow)
        );
    }

    #[test]
    fn weighed_goods() {
        // 0.375 kg at 42,000 UZS/kg = 15,750 UZS
        let l = compute_line(4_200_000, Qty::from_milli(375), 0, 12).unwrap();
        assert_eq!(l.amount, 1_575_000);
        assert_eq!(l.vat_amount, 168_750);
    }

    #[test]
    fn pro_rata_refund() {
        assert_eq!(pro_rata(1000, Qty::units(1), Qty::units(3)), 333);
        assert_eq!(pro_rata(1000, Qty::units(3), Qty::units(3)), 1000);
    }
}

//! Money is integer tiyin (1 UZS = 100 tiyin) everywhere; these are the rules that combine it
//! with quantities and VAT without floats.

use crate::qty::Qty;

/// Largest amount accepted anywhere: 10^15 tiyin (10 trillion UZS) keeps sums far from i64 limits.
pub const MAX_TIYIN: i64 = 1_000_000_000_000_000;

/// Divide rounding half away from zero (the usual commercial rounding).
pub fn div_round(num: i128, den: i128) -> i128 {
    debug_assert!(den > 0);
    let q = num / den;
    let r = num % den;
    if 2 * r.abs() >= den {
        q + num.signum()
    } else {
        q
    }
}

/// `price` per unit × `qty`, rounded to the tiyin (half away from zero). `None` on overflow.
pub fn line_gross(price: i64, qty: Qty) -> Option<i64> {
    let v = div_round(price as i128 * qty.milli() as i128, 1000);
    i64::try_from(v).ok().filter(|v| v.abs() <= MAX_TIYIN)
}

/// VAT contained in a VAT-inclusive `amount` at `percent`:
/// `amount × p / (100 + p)`, rounded half away from zero, per line.
pub fn vat_included(amount: i64, percent: u8) -> i64 {
    if percent == 0 {
        return 0;
    }
    div_round(amount as i128 * percent as i128, 100 + percent as i128) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding() {
        assert_eq!(div_round(5, 2), 3);
        assert_eq!(div_round(-5, 2), -3);
        assert_eq!(div_round(4, 3), 1);
        assert_eq!(line_gross(1999, Qty::from_milli(250)), Some(500)); // 499.75
        assert_eq!(line_gross(1000, Qty::from_milli(1500)), Some(1500));
    }

    #[test]
    fn vat_twelve_percent() {
        assert_eq!(vat_included(11200, 12), 1200);
        assert_eq!(vat_included(100, 12), 11); // 10.714…
        assert_eq!(vat_included(100, 0), 0);
        assert_eq!(vat_included(-11200, 12), -1200);
    }
}

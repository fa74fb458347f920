//! Fixed-point arithmetic on tiyin and thousandths, and the one rounding rule of the gateway.
//!
//! Every division rounds half away from zero (2.5 -> 3, -2.5 -> -3), the rule Uzbek fiscal
//! modules and the tax service's check use for VAT; intermediate products are taken in i128 so
//! no realistic price times quantity can overflow.

/// `num / den` rounded half away from zero. `den` must be positive.
pub fn div_round(num: i128, den: i128) -> i128 {
    let q = num / den;
    let r = num % den;
    if 2 * r.abs() >= den {
        q + num.signum()
    } else {
        q
    }
}

/// Gross amount of a line before its discount: `price * qty_milli / 1000`, in tiyin.
pub fn line_gross(price: i64, qty_milli: i64) -> Option<i64> {
    i64::try_from(div_round(i128::from(price) * i128::from(qty_milli), 1000)).ok()
}

/// VAT contained in a VAT-inclusive `amount`: `amount * p / (100 + p)`.
pub fn vat_included(amount: i64, percent: u32) -> Option<i64> {
    let p = i128::from(percent);
    i64::try_from(div_round(i128::from(amount) * p, 100 + p)).ok()
}

/// Tiyin as a decimal number of sum with two places (`12345` -> `"123.45"`), for wire formats
/// that carry money as JSON numbers; built from integers so no float ever rounds it.
pub fn sum_decimal(tiyin: i64) -> String {
    let sign = if tiyin < 0 { "-" } else { "" };
    let abs = tiyin.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// Thousandths as a decimal with three places (`1500` -> `"1.500"`).
pub fn qty_decimal(milli: i64) -> String {
    let sign = if milli < 0 { "-" } else { "" };
    let abs = milli.unsigned_abs();
    format!("{sign}{}.{:03}", abs / 1000, abs % 1000)
}

/// Parses a decimal number of sum (`"123.45"`, `"7"`, `"0.5"`) into tiyin, exactly.
pub fn parse_sum(text: &str) -> Option<i64> {
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty()
        || frac.len() > 2
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let whole: i64 = int.parse().ok()?;
    let cents: i64 = format!("{frac:0<2}").parse().ok()?;
    let v = whole.checked_mul(100)?.checked_add(cents)?;
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_half_away_from_zero() {
        assert_eq!(div_round(25, 10), 3);
        assert_eq!(div_round(-25, 10), -3);
        assert_eq!(div_round(24, 10), 2);
        assert_eq!(div_round(-24, 10), -2);
        assert_eq!(div_round(0, 7), 0);
    }

    #[test]
    fn vat_of_twelve_percent() {
        // 11 200 sum with 12% VAT inside contains exactly 1 200 sum.
        assert_eq!(vat_included(1_120_000, 12), Some(120_000));
        // 100.00: 10000 * 12 / 112 = 1071.43 -> 1071
        assert_eq!(vat_included(10_000, 12), Some(1071));
        // 1 tiyin * 12 / 112 = 0.107 -> 0
        assert_eq!(vat_included(1, 12), Some(0));
        assert_eq!(vat_included(5000, 0), Some(0));
    }

    #[test]
    fn weighed_line() {
        // 0.333 kg at 12 345 tiyin/kg = 4110.885 -> 4111
        assert_eq!(line_gross(12_345, 333), Some(4111));
        assert_eq!(line_gross(i64::MAX, 1_000_000), None);
    }

    #[test]
    fn decimals_round_trip() {
        assert_eq!(sum_decimal(12_345), "123.45");
        assert_eq!(sum_decimal(5), "0.05");
        assert_eq!(sum_decimal(-250), "-2.50");
        assert_eq!(qty_decimal(1500), "1.500");
        assert_eq!(qty_decimal(7), "0.007");
        for t in [0, 1, 99, 100, 12_345, -250] {
            assert_eq!(parse_sum(&sum_decimal(t)), Some(t));
        }
        assert_eq!(parse_sum("7"), Some(700));
        assert_eq!(parse_sum("0.5"), Some(50));
        assert_eq!(parse_sum("1.234"), None);
        assert_eq!(parse_sum("abc"), None);
        assert_eq!(parse_sum(""), None);
    }
}

//! Exact quantities: fixed point with three decimals (weighed goods), stored as thousandths.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A quantity in thousandths of a unit (`1.250` kg is `Qty(1250)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Qty(i64);

/// Largest magnitude accepted: a billion units is far beyond any shop, and keeps
/// `qty * price` inside i128 comfortably and inside i64 for realistic prices.
pub const MAX_UNITS: i64 = 1_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QtyError {
    #[error("must be a number with at most 3 decimals")]
    TooPrecise,
    #[error("is not a number")]
    NotANumber,
    #[error("is out of range (at most {MAX_UNITS} units)")]
    OutOfRange,
}

impl Qty {
    pub const ZERO: Qty = Qty(0);
    pub const ONE: Qty = Qty(1000);

    pub const fn from_milli(m: i64) -> Qty {
        Qty(m)
    }
    pub const fn units(u: i64) -> Qty {
        Qty(u * 1000)
    }
    pub const fn milli(self) -> i64 {
        self.0
    }
    pub fn is_whole(self) -> bool {
        self.0 % 1000 == 0
    }
    pub fn is_positive(self) -> bool {
        self.0 > 0
    }
    pub fn checked_add(self, o: Qty) -> Option<Qty> {
        self.0.checked_add(o.0).map(Qty)
    }
    pub fn checked_sub(self, o: Qty) -> Option<Qty> {
        self.0.checked_sub(o.0).map(Qty)
    }

    /// Parse decimal text exactly (`"1"`, `"0.25"`, `"-3.125"`, `"1e2"` is refused).
    pub fn parse(s: &str) -> Result<Qty, QtyError> {
        let s = s.trim();
        let (neg, digits) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
            return Err(QtyError::NotANumber);
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(QtyError::NotANumber);
        }
        let frac = frac.trim_end_matches('0');
        if frac.len() > 3 {
            return Err(QtyError::TooPrecise);
        }
        let int = int.trim_start_matches('0');
        if int.len() > 10 {
            return Err(QtyError::OutOfRange);
        }
        let units: i64 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| QtyError::OutOfRange)?
        };
        if units > MAX_UNITS {
            return Err(QtyError::OutOfRange);
        }
        let frac_milli: i64 = format!("{frac:0<3}")
            .parse()
            .map_err(|_| QtyError::NotANumber)?;
        let v = units * 1000 + frac_milli;
        Ok(Qty(if neg { -v } else { v }))
    }

    /// From a JSON number. serde_json keeps numbers as f64; its shortest round-trip text is the
    /// decimal the client wrote (for up to 15 significant digits), which we then parse exactly.
    pub fn from_json(n: &serde_json::Number) -> Result<Qty, QtyError> {
        if let Some(i) = n.as_i64() {
            if i.abs() > MAX_UNITS {
                return Err(QtyError::OutOfRange);
            }
            return Ok(Qty(i * 1000));
        }
        if n.as_u64().is_some() {
            return Err(QtyError::OutOfRange);
        }
        let f = n.as_f64().ok_or(QtyError::NotANumber)?;
        if !f.is_finite() {
            return Err(QtyError::NotANumber);
        }
        if f.abs() > MAX_UNITS as f64 {
            return Err(QtyError::OutOfRange);
        }
        let text = n.to_string();
        if text.contains(['e', 'E']) {
            // Tiny or huge magnitudes in exponent form: small ones are too precise.
            return Err(QtyError::TooPrecise);
        }
        Qty::parse(&text)
    }
}

impl std::ops::Neg for Qty {
    type Output = Qty;
    fn neg(self) -> Qty {
        Qty(-self.0)
    }
}

impl fmt::Display for Qty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let a = self.0.unsigned_abs();
        let (u, m) = (a / 1000, a % 1000);
        if m == 0 {
            write!(f, "{sign}{u}")
        } else {
            let frac = format!("{m:03}");
            write!(f, "{sign}{u}.{}", frac.trim_end_matches('0'))
        }
    }
}

impl Serialize for Qty {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // A JSON number, exactly as the decimal: whole quantities as integers.
        if self.0 % 1000 == 0 {
            s.serialize_i64(self.0 / 1000)
        } else {
            let n: serde_json::Number = self
                .to_string()
                .parse()
                .map_err(serde::ser::Error::custom)?;
            n.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Qty {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = serde_json::Number::deserialize(d)?;
        Qty::from_json(&n).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly() {
        assert_eq!(Qty::parse("1").unwrap(), Qty(1000));
        assert_eq!(Qty::parse("0.25").unwrap(), Qty(250));
        assert_eq!(Qty::parse("1.005").unwrap(), Qty(1005));
        assert_eq!(Qty::parse("1.0050").unwrap(), Qty(1005));
        assert_eq!(Qty::parse("-2.5").unwrap(), Qty(-2500));
        assert_eq!(Qty::parse("1.0001"), Err(QtyError::TooPrecise));
        assert_eq!(Qty::parse("abc"), Err(QtyError::NotANumber));
        assert_eq!(Qty::parse("99999999999"), Err(QtyError::OutOfRange));
    }

    #[test]
    fn json_round_trip() {
        for (text, milli) in [
            ("1", 1000),
            ("0.25", 250),
            ("0.1", 100),
            ("2.333", 2333),
            ("0.001", 1),
        ] {
            let q: Qty = serde_json::from_str(text).unwrap();
            assert_eq!(q, Qty(milli), "{text}");
            assert_eq!(serde_json::to_string(&q).unwrap(), text);
        }
        assert!(serde_json::from_str::<Qty>("1.2345").is_err());
        assert!(serde_json::from_str::<Qty>("1e300").is_err());
        assert!(serde_json::from_str::<Qty>("1e-7").is_err());
        assert!(serde_json::from_str::<Qty>("\"1\"").is_err());
        assert!(serde_json::from_str::<Qty>("18446744073709551615").is_err());
    }
}

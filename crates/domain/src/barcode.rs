//! Product barcodes: EAN-13, EAN-8, UPC-A (GS1 check digits verified) and free-form Code 128.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BarcodeError {
    #[error("barcode is empty")]
    Empty,
    #[error("barcode is longer than 48 characters")]
    TooLong,
    #[error("barcode contains characters that are not printable ASCII")]
    NotPrintable,
    #[error("wrong check digit: expected {expected}, found {found}")]
    CheckDigit { expected: u8, found: u8 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BarcodeKind {
    Ean13,
    Ean8,
    Upca,
    Code128,
}

/// A validated barcode. Numeric codes of GS1 lengths (8, 12, 13) must carry a correct check
/// digit; anything else printable is accepted as Code 128.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Barcode(String);

impl Barcode {
    pub fn parse(s: &str) -> Result<Self, BarcodeError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(BarcodeError::Empty);
        }
        if s.len() > 48 {
            return Err(BarcodeError::TooLong);
        }
        if !s.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(BarcodeError::NotPrintable);
        }
        if s.bytes().all(|b| b.is_ascii_digit()) && matches!(s.len(), 8 | 12 | 13 | 14) {
            let digits: Vec<u8> = s.bytes().map(|b| b - b'0').collect();
            let (body, last) = digits.split_at(digits.len() - 1);
            let expected = gs1_check_digit(body);
            if expected != last[0] {
                return Err(BarcodeError::CheckDigit {
                    expected,
                    found: last[0],
                });
            }
        }
        Ok(Barcode(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn kind(&self) -> BarcodeKind {
        let numeric = self.0.bytes().all(|b| b.is_ascii_digit());
        match (numeric, self.0.len()) {
            (true, 13) => BarcodeKind::Ean13,
            (true, 8) => BarcodeKind::Ean8,
            (true, 12) => BarcodeKind::Upca,
            _ => BarcodeKind::Code128,
        }
    }

    /// The GTIN-14 form of a GS1 barcode (zero-padded), used to match marking codes.
    pub fn gtin14(&self) -> Option<String> {
        match self.kind() {
            BarcodeKind::Code128
                if self.0.len() == 14 && self.0.bytes().all(|b| b.is_ascii_digit()) =>
            {
                Some(self.0.clone())
            }
            BarcodeKind::Code128 => None,
            _ => Some(format!("{:0>14}", self.0)),
        }
    }
}

impl<'de> Deserialize<'de> for Barcode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Barcode::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// GS1 mod-10 check digit over the digits *before* the check digit.
pub fn gs1_check_digit(body: &[u8]) -> u8 {
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| d as u32 * if i % 2 == 0 { 3 } else { 1 })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// `true` if `digits` (ASCII digits, the last one the check digit) has a valid GS1 check digit.
pub fn gs1_valid(digits: &str) -> bool {
    if digits.len() < 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let d: Vec<u8> = digits.bytes().map(|b| b - b'0').collect();
    gs1_check_digit(&d[..d.len() - 1]) == d[d.len() - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ean13_vector() {
        let body: Vec<u8> = "478010116439".bytes().map(|b| b - b'0').collect();
        assert_eq!(gs1_check_digit(&body), 4);
        assert!(Barcode::parse("4780101164394").is_ok());
        assert_eq!(
            Barcode::parse("4780101164395"),
            Err(BarcodeError::CheckDigit {
                expected: 4,
                found: 5
            })
        );
    }

    #[test]
    fn kinds_and_gtin() {
        let b = Barcode::parse("4780101164394").unwrap();
        assert_eq!(b.kind(), BarcodeKind::Ean13);
        assert_eq!(b.gtin14().unwrap(), "04780101164394");
        assert_eq!(
            Barcode::parse("96385074").unwrap().kind(),
            BarcodeKind::Ean8
        );
        assert_eq!(
            Barcode::parse("036000291452").unwrap().kind(),
            BarcodeKind::Upca
        );
        let c = Barcode::parse("ABC-123").unwrap();
        assert_eq!(c.kind(), BarcodeKind::Code128);
        assert_eq!(c.gtin14(), None);
        assert_eq!(Barcode::parse(""), Err(BarcodeError::Empty));
        assert_eq!(Barcode::parse("a b"), Err(BarcodeError::NotPrintable));
    }
}

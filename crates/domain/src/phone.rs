//! Uzbek phone numbers, normalised to `+998XXXXXXXXX`.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("must be an Uzbek number: +998 and 9 digits")]
    Invalid,
}

/// Accepts `+998 90 123-45-67`, `998901234567`, `901234567`, `8 (90) 123 45 67`…
pub fn normalize_phone(s: &str) -> Result<String, PhoneError> {
    if !s
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '(' | ')'))
    {
        return Err(PhoneError::Invalid);
    }
    let digits: String = s.chars().filter(|c| c.is_ascii_digit()).collect();
    let national = match digits.len() {
        12 if digits.starts_with("998") => &digits[3..],
        9 => &digits[..],
        // Old trunk prefix 8 before the operator code.
        10 if digits.starts_with('8') => &digits[1..],
        _ => return Err(PhoneError::Invalid),
    };
    Ok(format!("+998{national}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        for s in [
            "+998 90 123-45-67",
            "998901234567",
            "901234567",
            "8 (90) 123 45 67",
        ] {
            assert_eq!(normalize_phone(s).unwrap(), "+998901234567", "{s}");
        }
        assert!(normalize_phone("12345").is_err());
        assert!(normalize_phone("+7 900 123 45 67").is_err());
        assert!(normalize_phone("90abc1234").is_err());
    }
}

//! A string that never shows itself by accident.
//!
//! `Debug`, `Display` and `Serialize` all print the masked form, so a secret that slips into a log
//! line, an API answer or an event leaks at most its last four characters. The value is zeroed
//! when dropped (through `secrecy`). Only [`Secret::expose`] hands out the real value.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Shortest secret whose last four characters may be shown: below this, four characters are too
/// large a share of the value.
const MIN_LEN_FOR_TAIL: usize = 12;

/// `"****abcd"` for secrets of at least 12 characters, `"****"` otherwise.
pub fn mask(value: &str) -> String {
    let count = value.chars().count();
    if count < MIN_LEN_FOR_TAIL {
        return "****".to_owned();
    }
    let tail: String = value.chars().skip(count - 4).collect();
    format!("****{tail}")
}

#[derive(Clone, Default)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(SecretString::from(value.into()))
    }

    /// The real value. Every call site is a place a secret leaves the type: keep them few.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn masked(&self) -> String {
        mask(self.expose())
    }

    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }

    pub fn len(&self) -> usize {
        self.expose().len()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret::new(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.masked())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.masked())
    }
}

/// Secrets arrive as plain strings (an API request, a decrypted credentials document).
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_short_and_long() {
        assert_eq!(mask(""), "****");
        assert_eq!(mask("short"), "****");
        assert_eq!(mask("elevenchars"), "****");
        assert_eq!(mask("twelve_chars"), "****hars");
        assert_eq!(mask("ключ-секрет-длинный"), "****нный");
    }

    #[test]
    fn never_prints_itself() {
        let s = Secret::new("sk_live_0123456789abcdef");
        assert_eq!(s.expose(), "sk_live_0123456789abcdef");
        for shown in [
            format!("{s:?}"),
            format!("{s:#?}"),
            format!("{s}"),
            serde_json::to_string(&s).unwrap_or_default(),
            serde_json::to_string(&serde_json::json!({ "k": s.clone() })).unwrap_or_default(),
        ] {
            assert!(!shown.contains("0123456789"), "{shown}");
            assert!(shown.contains("****cdef"), "{shown}");
        }
    }

    #[test]
    fn deserializes_from_plain_string() {
        let s: Secret = serde_json::from_str("\"abc\"").unwrap_or_default();
        assert_eq!(s.expose(), "abc");
        assert_eq!(s.to_string(), "****");
    }
}

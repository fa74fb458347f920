//! Which events a subscription may name, and matching.

/// Event types a subscription can name (also as a group wildcard, `receipt.*`, or `*`).
pub const KNOWN_EVENT_TYPES: &[&str] = &[
    "receipt.created",
    "receipt.refunded",
    "receipt.fiscalized",
    "stock.changed",
    "product.created",
    "product.updated",
    "product.deleted",
    "customer.created",
    "customer.updated",
    "invoice.created",
    "invoice.reserved",
    "invoice.shipped",
    "invoice.cancelled",
    "payment.completed",
    "loyalty.accrued",
    "integration.failed",
    "shift.opened",
    "shift.closed",
    "store.created",
    "store.updated",
    "webhook.disabled",
    "webhook.test",
];

/// Whether `pattern` is `*`, a known type, or `<group>.*` for a known group.
pub fn validate_pattern(pattern: &str) -> Result<(), String> {
    if pattern == "*" || KNOWN_EVENT_TYPES.contains(&pattern) {
        return Ok(());
    }
    if let Some(group) = pattern.strip_suffix(".*")
        && KNOWN_EVENT_TYPES
            .iter()
            .any(|t| t.split('.').next() == Some(group))
    {
        return Ok(());
    }
    Err(format!(
        "unknown event type `{pattern}`: use a known type such as `receipt.created`, a group such as `receipt.*`, or `*`"
    ))
}

/// Whether one pattern matches an event type: exact, `*`, or a `<group>.*` prefix.
pub fn pattern_matches(pattern: &str, event_type: &str) -> bool {
    if pattern == "*" || pattern == event_type {
        return true;
    }
    match pattern.strip_suffix(".*") {
        Some(group) => event_type
            .strip_prefix(group)
            .is_some_and(|rest| rest.starts_with('.')),
        None => false,
    }
}

/// Whether a subscription to `patterns` receives `event_type`. `webhook.test` goes only to the
/// endpoint it was made for, never through subscriptions.
pub fn subscribed(patterns: &[String], event_type: &str) -> bool {
    event_type != "webhook.test" && patterns.iter().any(|p| pattern_matches(p, event_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        assert!(pattern_matches("*", "receipt.created"));
        assert!(pattern_matches("receipt.created", "receipt.created"));
        assert!(pattern_matches("receipt.*", "receipt.refunded"));
        assert!(!pattern_matches("receipt.*", "receipts.x"));
        assert!(!pattern_matches("receipt.created", "receipt.refunded"));
        assert!(!subscribed(&["*".into()], "webhook.test"));
    }

    #[test]
    fn validation() {
        assert!(validate_pattern("*").is_ok());
        assert!(validate_pattern("receipt.created").is_ok());
        assert!(validate_pattern("receipt.*").is_ok());
        assert!(validate_pattern("receipt.exploded").is_err());
        assert!(validate_pattern("nothing.*").is_err());
        assert!(validate_pattern("").is_err());
    }
}

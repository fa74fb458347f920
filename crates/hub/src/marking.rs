//! The online marking check as the till's receipt path sees it: "check these codes for this
//! tenant", whatever integration (if any) the tenant has configured. The API holds one of these;
//! the binary wires an implementation that finds the tenant's `aslbelgisi` integration.

use async_trait::async_trait;
use uuid::Uuid;

use crate::connector::{CodeCheck, CodeVerdict, ConnectorError};

#[async_trait]
pub trait MarkingCheck: Send + Sync {
    /// One verdict per code, in order. `Ok(None)`: the tenant has no marking integration, so
    /// there is nothing to check online. `Err`: the service could not give verdicts
    /// (unreachable, timed out, breaker open, refused our credentials…); the tenant's
    /// `marking_offline_policy` decides what happens to the sale.
    async fn check(
        &self,
        tenant: Uuid,
        codes: &[String],
    ) -> Result<Option<Vec<CodeCheck>>, ConnectorError>;
}

/// Why a checked code may not be sold, or `None` when it may. Everything but
/// [`CodeVerdict::Sellable`] is refused: invalid, not found (not genuine), blocked, expired,
/// already sold (retired), or in a state that is not in circulation.
pub fn refusal(c: &CodeCheck) -> Option<String> {
    let detail = |s: &str| match (&c.status, &c.message) {
        (Some(st), Some(m)) if !m.is_empty() => format!("{s} (status {st}: {m})"),
        (Some(st), _) => format!("{s} (status {st})"),
        (None, Some(m)) if !m.is_empty() => format!("{s} ({m})"),
        _ => s.to_owned(),
    };
    let text = match c.verdict {
        CodeVerdict::Sellable => return None,
        CodeVerdict::Invalid => "Asl Belgisi reports the code as invalid",
        CodeVerdict::NotFound => "Asl Belgisi does not know this code: it may be counterfeit",
        CodeVerdict::AlreadySold => "Asl Belgisi reports this unit as already sold (retired)",
        CodeVerdict::Blocked => "Asl Belgisi reports the code as blocked",
        CodeVerdict::Expired => "Asl Belgisi reports the product as expired",
        CodeVerdict::NotSellable => "Asl Belgisi reports the code as not in circulation",
    };
    Some(detail(text))
}

/// The verdict as a word: `sellable`, `not_found`, `blocked`…
pub fn verdict_word(v: CodeVerdict) -> &'static str {
    match v {
        CodeVerdict::Sellable => "sellable",
        CodeVerdict::NotFound => "not_found",
        CodeVerdict::Invalid => "invalid",
        CodeVerdict::AlreadySold => "already_sold",
        CodeVerdict::Blocked => "blocked",
        CodeVerdict::Expired => "expired",
        CodeVerdict::NotSellable => "not_sellable",
    }
}

//! MXIK (IKPU): the 17-digit product class code of Uzbekistan's tax catalogue.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be exactly 17 digits")]
pub struct MxikError;

pub fn validate_mxik(s: &str) -> Result<(), MxikError> {
    if s.len() == 17 && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(MxikError)
    }
}

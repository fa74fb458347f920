//! Tenants (businesses), their settings, and the roles of their tokens.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Manager,
    Cashier,
    Integration,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Manager => "manager",
            Role::Cashier => "cashier",
            Role::Integration => "integration",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "owner" => Role::Owner,
            "manager" => Role::Manager,
            "cashier" => Role::Cashier,
            "integration" => Role::Integration,
            _ => return None,
        })
    }
    /// Back-office rights: catalogue, stock documents, stores, settings of integrations.
    pub fn is_back_office(self) -> bool {
        matches!(self, Role::Owner | Role::Manager)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MarkingOfflinePolicy {
    Refuse,
    #[default]
    Allow,
}

/// Per-tenant behaviour switches. Unknown keys are refused so a typo is not silently ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantSettings {
    /// A sale needs an open shift on its terminal.
    pub require_open_shift: bool,
    /// Refuse sales, write-offs and transfers that would take available stock below zero.
    pub forbid_negative_stock: bool,
    /// What to do with marked goods when the online marking check is unreachable.
    pub marking_offline_policy: MarkingOfflinePolicy,
    /// Default VAT percent for new products.
    pub default_vat_percent: u8,
}

impl Default for TenantSettings {
    fn default() -> Self {
        TenantSettings {
            require_open_shift: false,
            forbid_negative_stock: false,
            marking_offline_policy: MarkingOfflinePolicy::Allow,
            default_vat_percent: 12,
        }
    }
}

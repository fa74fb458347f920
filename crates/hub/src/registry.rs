//! The integration types Savdo knows: what each can do, which credentials and settings it takes
//! (the catalog the API lists), how to validate them, and the factories that build connectors.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::breaker::BreakerPolicy;
use crate::connector::{Connector, ConnectorError};
use crate::http::{ClientConfig, HttpClient, HttpHub, RateLimit, RetryPolicy, RouteLimit};
use crate::secret::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// [`LoyaltyProvider`](crate::connector::LoyaltyProvider)
    Loyalty,
    /// [`PaymentProvider`](crate::connector::PaymentProvider)
    Payments,
    /// [`MarketplaceConnector`](crate::connector::MarketplaceConnector)
    Marketplace,
    /// [`MarkingService`](crate::connector::MarkingService)
    Marking,
    /// The provider calls us at `/hooks/<type>/<integration id>`.
    InboundHooks,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    String,
    Integer,
    Boolean,
    /// An `http` or `https` URL without user info.
    Url,
    /// A string out of `options`.
    Enum,
    /// An array of non-empty strings (store ids).
    List,
    /// An object of string values (store id -> provider's store reference).
    Map,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: FieldType,
    /// For a field in a `group`: required when that group is the one used.
    pub required: bool,
    pub secret: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// Allowed values of an `enum` field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// Alternative credential sets (JOWi: `api_key` or `oauth`): exactly one group is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
}

impl FieldSpec {
    pub fn new(name: &str, ty: FieldType) -> Self {
        FieldSpec {
            name: name.to_owned(),
            ty,
            required: false,
            secret: false,
            description: None,
            default: None,
            options: Vec::new(),
            group: None,
            min: None,
        }
    }
    pub fn string(name: &str) -> Self {
        Self::new(name, FieldType::String)
    }
    pub fn integer(name: &str) -> Self {
        Self::new(name, FieldType::Integer)
    }
    pub fn boolean(name: &str) -> Self {
        Self::new(name, FieldType::Boolean)
    }
    pub fn url(name: &str) -> Self {
        Self::new(name, FieldType::Url)
    }
    pub fn list(name: &str) -> Self {
        Self::new(name, FieldType::List)
    }
    pub fn map(name: &str) -> Self {
        Self::new(name, FieldType::Map)
    }
    pub fn enumeration(name: &str, options: &[&str]) -> Self {
        let mut f = Self::new(name, FieldType::Enum);
        f.options = options.iter().map(|s| (*s).to_owned()).collect();
        f
    }
    /// A required secret string.
    pub fn secret(name: &str) -> Self {
        let mut f = Self::string(name).required();
        f.secret = true;
        f
    }
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }
    pub fn optional(mut self) -> Self {
        self.required = false;
        self
    }
    pub fn describe(mut self, text: &str) -> Self {
        self.description = Some(text.to_owned());
        self
    }
    pub fn default_value(mut self, value: impl Into<Value>) -> Self {
        self.default = Some(value.into());
        self
    }
    pub fn group(mut self, group: &str) -> Self {
        self.group = Some(group.to_owned());
        self
    }
    pub fn min(mut self, min: i64) -> Self {
        self.min = Some(min);
        self
    }
}

/// How the HTTP stack treats a type unless the integration says otherwise. Not part of the
/// catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpDefaults {
    pub timeout: Duration,
    /// A settings field (milliseconds) that overrides `timeout`.
    pub timeout_setting: Option<String>,
    pub rate_limit: Option<RateLimit>,
    /// Endpoints with a tighter limit of their own, on top of `rate_limit`.
    pub route_limits: Vec<RouteLimit>,
    pub retry: RetryPolicy,
    pub breaker: BreakerPolicy,
}

impl Default for HttpDefaults {
    fn default() -> Self {
        HttpDefaults {
            timeout: Duration::from_secs(10),
            timeout_setting: None,
            rate_limit: None,
            route_limits: Vec::new(),
            retry: RetryPolicy::default(),
            breaker: BreakerPolicy::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TypeDescriptor {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub capabilities: Vec<Capability>,
    pub credential_fields: Vec<FieldSpec>,
    pub settings_fields: Vec<FieldSpec>,
    #[serde(skip)]
    pub http: HttpDefaults,
}

impl TypeDescriptor {
    pub fn has(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }

    /// Settings with every missing field that has a default filled in.
    pub fn with_defaults(&self, settings: &Value) -> Value {
        let mut map = settings.as_object().cloned().unwrap_or_default();
        for f in &self.settings_fields {
            if let Some(d) = &f.default
                && map.get(&f.name).is_none_or(Value::is_null)
            {
                map.insert(f.name.clone(), d.clone());
            }
        }
        Value::Object(map)
    }

    /// The values of the secret credential fields: what the exchange log must never show.
    pub fn secret_values(&self, credentials: &Credentials) -> Vec<Secret> {
        self.credential_fields
            .iter()
            .filter(|f| f.secret)
            .filter_map(|f| credentials.secret(&f.name))
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// Check credentials and settings against the field lists. Errors name fields as
    /// `credentials.<name>` / `settings.<name>`.
    pub fn validate(
        &self,
        credentials: &Value,
        settings: &Value,
    ) -> Result<(), Vec<(String, String)>> {
        let mut errors = Vec::new();
        check_object(
            "credentials",
            &self.credential_fields,
            credentials,
            &mut errors,
        );
        check_object("settings", &self.settings_fields, settings, &mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

fn check_object(
    section: &str,
    fields: &[FieldSpec],
    value: &Value,
    errors: &mut Vec<(String, String)>,
) {
    let empty = Map::new();
    let map = match value {
        Value::Null => &empty,
        Value::Object(m) => m,
        _ => {
            errors.push((section.to_owned(), "must be an object".to_owned()));
            return;
        }
    };
    let present = |f: &FieldSpec| map.get(&f.name).is_some_and(|v| !v.is_null());

    // Which alternative group is in use: the groups with any field given.
    let mut groups: Vec<&str> = Vec::new();
    for f in fields {
        if let Some(g) = f.group.as_deref()
            && !groups.contains(&g)
        {
            groups.push(g);
        }
    }
    let used: Vec<&str> = groups
        .iter()
        .copied()
        .filter(|g| {
            fields
                .iter()
                .any(|f| f.group.as_deref() == Some(g) && present(f))
        })
        .collect();
    if used.len() > 1 {
        errors.push((
            section.to_owned(),
            format!(
                "give one set of fields: {}, not several",
                groups.join(" or ")
            ),
        ));
    }
    let active_group = used.first().copied().or(groups.first().copied());

    for f in fields {
        let path = format!("{section}.{}", f.name);
        let required = f.required
            && match f.group.as_deref() {
                None => true,
                Some(g) => Some(g) == active_group,
            };
        match map.get(&f.name) {
            None | Some(Value::Null) => {
                if required {
                    let msg = if used.is_empty() && groups.len() > 1 && f.group.is_some() {
                        let others: Vec<String> = fields
                            .iter()
                            .filter(|o| o.required && o.group.is_some() && o.group != f.group)
                            .map(|o| o.name.clone())
                            .collect();
                        format!("required (or give {} instead)", others.join(", "))
                    } else {
                        "required".to_owned()
                    };
                    errors.push((path, msg));
                }
            }
            Some(v) => {
                if let Err(msg) = check_value(f, v) {
                    errors.push((path, msg));
                }
            }
        }
    }
    for key in map.keys() {
        if !fields.iter().any(|f| &f.name == key) {
            errors.push((format!("{section}.{key}"), "unknown field".to_owned()));
        }
    }
}

fn check_value(f: &FieldSpec, v: &Value) -> Result<(), String> {
    match f.ty {
        FieldType::String => {
            let s = v.as_str().ok_or("must be a string")?;
            if f.required && s.trim().is_empty() {
                return Err("must not be empty".to_owned());
            }
        }
        FieldType::Integer => {
            let n = v.as_i64().ok_or("must be an integer")?;
            if let Some(min) = f.min
                && n < min
            {
                return Err(format!("must be at least {min}"));
            }
        }
        FieldType::Boolean => {
            v.as_bool().ok_or("must be true or false")?;
        }
        FieldType::Url => {
            let s = v.as_str().ok_or("must be a URL string")?;
            let url =
                reqwest::Url::parse(s.trim()).map_err(|_| "must be an absolute URL".to_owned())?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err("must be an http or https URL".to_owned());
            }
            if url.host_str().is_none_or(str::is_empty) {
                return Err("must name a host".to_owned());
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err("must not carry credentials; use the credential fields".to_owned());
            }
        }
        FieldType::Enum => {
            let s = v.as_str().ok_or("must be a string")?;
            if !f.options.iter().any(|o| o == s) {
                return Err(format!("must be one of {}", f.options.join(", ")));
            }
        }
        FieldType::List => {
            let items = v.as_array().ok_or("must be an array of strings")?;
            if items
                .iter()
                .any(|i| i.as_str().is_none_or(|s| s.trim().is_empty()))
            {
                return Err("must be an array of non-empty strings".to_owned());
            }
        }
        FieldType::Map => {
            let m = v.as_object().ok_or("must be an object of strings")?;
            if m.values()
                .any(|i| i.as_str().is_none_or(|s| s.trim().is_empty()))
            {
                return Err("must be an object of non-empty strings".to_owned());
            }
        }
    }
    Ok(())
}

/// Decrypted credentials of one integration. Debug shows field names only; string values are
/// zeroed when dropped.
#[derive(Clone, Default)]
pub struct Credentials(Map<String, Value>);

impl Credentials {
    pub fn from_value(value: Value) -> Result<Self, ConnectorError> {
        match value {
            Value::Object(m) => Ok(Credentials(m)),
            Value::Null => Ok(Credentials::default()),
            _ => Err(ConnectorError::config("credentials must be an object")),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    /// A plain (non-secret) string field such as a merchant id.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }

    pub fn secret(&self, name: &str) -> Option<Secret> {
        self.get_str(name).map(Secret::new)
    }

    pub fn require_str(&self, name: &str) -> Result<&str, ConnectorError> {
        self.get_str(name)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ConnectorError::config(format!("credentials.{name} is missing")))
    }

    pub fn require_secret(&self, name: &str) -> Result<Secret, ConnectorError> {
        self.require_str(name).map(Secret::new)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Drop for Credentials {
    fn drop(&mut self) {
        for v in self.0.values_mut() {
            if let Value::String(s) = v {
                zeroize::Zeroize::zeroize(s);
            }
        }
    }
}

/// Everything a factory needs to build a connector for one integration.
#[derive(Debug, Clone)]
pub struct ConnectorContext {
    pub tenant_id: String,
    pub integration_id: String,
    pub kind: String,
    pub credentials: Credentials,
    /// Validated, with defaults filled in.
    pub settings: Value,
    /// Configured for this integration (timeout, rate limit, retries, breaker, secrets).
    pub http: HttpClient,
}

pub type ConnectorFactory =
    Arc<dyn Fn(ConnectorContext) -> Result<Arc<dyn Connector>, ConnectorError> + Send + Sync>;

/// Integration types and the factories that build their connectors.
#[derive(Clone, Default)]
pub struct Registry {
    types: Vec<TypeDescriptor>,
    factories: BTreeMap<String, ConnectorFactory>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field(
                "types",
                &self.types.iter().map(|t| &t.kind).collect::<Vec<_>>(),
            )
            .field("factories", &self.factories.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Registry {
    /// No types at all.
    pub fn empty() -> Self {
        Registry::default()
    }

    /// The built-in types, without factories (the connectors crate registers them).
    pub fn builtin() -> Self {
        Registry {
            types: builtin_types(),
            factories: BTreeMap::new(),
        }
    }

    /// Add or replace a type.
    pub fn add_type(&mut self, descriptor: TypeDescriptor) {
        match self.types.iter_mut().find(|t| t.kind == descriptor.kind) {
            Some(t) => *t = descriptor,
            None => self.types.push(descriptor),
        }
    }

    /// Register the factory of a type (replacing any earlier one). The type must be known.
    pub fn register<F>(&mut self, kind: &str, factory: F) -> Result<(), ConnectorError>
    where
        F: Fn(ConnectorContext) -> Result<Arc<dyn Connector>, ConnectorError>
            + Send
            + Sync
            + 'static,
    {
        if self.descriptor(kind).is_none() {
            return Err(ConnectorError::config(format!(
                "unknown integration type {kind}"
            )));
        }
        self.factories.insert(kind.to_owned(), Arc::new(factory));
        Ok(())
    }

    /// What `GET /api/v1/integrations/catalog` answers.
    pub fn catalog(&self) -> &[TypeDescriptor] {
        &self.types
    }

    pub fn descriptor(&self, kind: &str) -> Option<&TypeDescriptor> {
        self.types.iter().find(|t| t.kind == kind)
    }

    pub fn has_factory(&self, kind: &str) -> bool {
        self.factories.contains_key(kind)
    }

    pub fn validate(
        &self,
        kind: &str,
        credentials: &Value,
        settings: &Value,
    ) -> Result<(), Vec<(String, String)>> {
        match self.descriptor(kind) {
            Some(d) => d.validate(credentials, settings),
            None => Err(vec![(
                "type".to_owned(),
                format!("unknown integration type {kind}"),
            )]),
        }
    }

    /// The HTTP client configuration of an integration: the type's defaults, the timeout from
    /// its settings, and its secret values for the log scrubber.
    pub fn client_config(
        &self,
        tenant_id: &str,
        integration_id: &str,
        kind: &str,
        credentials: &Credentials,
        settings: &Value,
    ) -> Result<ClientConfig, ConnectorError> {
        let d = self
            .descriptor(kind)
            .ok_or_else(|| ConnectorError::config(format!("unknown integration type {kind}")))?;
        let mut cfg = ClientConfig::new(tenant_id, integration_id, kind);
        cfg.timeout = d
            .http
            .timeout_setting
            .as_ref()
            .and_then(|name| settings.get(name))
            .and_then(Value::as_u64)
            .filter(|ms| *ms > 0)
            .map_or(d.http.timeout, Duration::from_millis);
        cfg.rate_limit = d.http.rate_limit;
        cfg.route_limits = d.http.route_limits.clone();
        cfg.retry = d.http.retry;
        cfg.breaker = d.http.breaker;
        cfg.secrets = d.secret_values(credentials);
        Ok(cfg)
    }

    /// Validate, fill defaults, configure an HTTP client on `hub` and call the type's factory.
    pub fn build(
        &self,
        hub: &HttpHub,
        tenant_id: &str,
        integration_id: &str,
        kind: &str,
        credentials: &Value,
        settings: &Value,
    ) -> Result<Arc<dyn Connector>, ConnectorError> {
        let d = self
            .descriptor(kind)
            .ok_or_else(|| ConnectorError::config(format!("unknown integration type {kind}")))?;
        let factory = self
            .factories
            .get(kind)
            .ok_or_else(|| ConnectorError::config(format!("no connector for type {kind} yet")))?;
        d.validate(credentials, settings).map_err(|errs| {
            let fields: Vec<String> = errs.into_iter().map(|(f, m)| format!("{f}: {m}")).collect();
            ConnectorError::config(fields.join("; "))
        })?;
        let settings = d.with_defaults(settings);
        let credentials = Credentials::from_value(credentials.clone())?;
        let cfg = self.client_config(tenant_id, integration_id, kind, &credentials, &settings)?;
        factory(ConnectorContext {
            tenant_id: tenant_id.to_owned(),
            integration_id: integration_id.to_owned(),
            kind: kind.to_owned(),
            credentials,
            settings,
            http: hub.client(cfg),
        })
    }
}

/// Validate against the built-in types.
pub fn validate(
    kind: &str,
    credentials: &Value,
    settings: &Value,
) -> Result<(), Vec<(String, String)>> {
    static BUILTIN: OnceLock<Registry> = OnceLock::new();
    BUILTIN
        .get_or_init(Registry::builtin)
        .validate(kind, credentials, settings)
}

fn marketplace_settings(id_field: FieldSpec, base_url: &str, push_prices: bool) -> Vec<FieldSpec> {
    let mut v = vec![
        id_field,
        FieldSpec::list("store_ids")
            .required()
            .describe("Our stores whose available stock feeds this marketplace"),
        FieldSpec::integer("safety_buffer")
            .default_value(0)
            .min(0)
            .describe("Units held back from the pushed stock of every item"),
        FieldSpec::boolean("auto_confirm")
            .default_value(false)
            .describe("Confirm imported orders automatically"),
    ];
    if push_prices {
        v.push(
            FieldSpec::boolean("push_prices")
                .default_value(false)
                .describe("Push our prices to the marketplace"),
        );
    }
    v.push(
        FieldSpec::url("base_url")
            .default_value(base_url)
            .describe("API base URL"),
    );
    v
}

fn builtin_types() -> Vec<TypeDescriptor> {
    use Capability::*;
    vec![
        TypeDescriptor {
            kind: "jowi_club".into(),
            name: "JOWi Club".into(),
            capabilities: vec![Loyalty, InboundHooks],
            credential_fields: vec![
                FieldSpec::string("api_key")
                    .required()
                    .group("api_key")
                    .describe("Application key from JOWi's developer cabinet"),
                FieldSpec::secret("api_secret")
                    .group("api_key")
                    .describe("Application secret; signs requests"),
                FieldSpec::string("client_id")
                    .required()
                    .group("oauth")
                    .describe("OAuth 2.0 client id"),
                FieldSpec::secret("client_secret")
                    .group("oauth")
                    .describe("OAuth 2.0 client secret"),
                FieldSpec::url("token_url")
                    .required()
                    .group("oauth")
                    .describe("OAuth 2.0 token endpoint (client credentials)"),
                FieldSpec::secret("webhook_secret")
                    .optional()
                    .describe("Verifies X-Jowi-Signature on JOWi's webhooks"),
            ],
            settings_fields: vec![
                FieldSpec::url("base_url")
                    .default_value("https://api.jowi.club/")
                    .describe("API base URL"),
                FieldSpec::map("store_refs").describe("Our store id -> JOWi store reference"),
                FieldSpec::integer("lookup_timeout_ms")
                    .default_value(800)
                    .min(1)
                    .describe("Customer look-up timeout at the till"),
                FieldSpec::integer("redeem_timeout_ms")
                    .default_value(3000)
                    .min(1)
                    .describe("Timeout of calculate and redeem calls"),
            ],
            http: HttpDefaults {
                timeout: Duration::from_millis(3000),
                timeout_setting: Some("redeem_timeout_ms".into()),
                ..HttpDefaults::default()
            },
        },
        TypeDescriptor {
            kind: "payme".into(),
            name: "Payme".into(),
            capabilities: vec![Payments, InboundHooks],
            credential_fields: vec![
                FieldSpec::string("merchant_id")
                    .required()
                    .describe("Merchant (cash desk) id"),
                FieldSpec::secret("key").describe("Merchant API key (Basic auth of Payme's calls)"),
                FieldSpec::secret("test_key")
                    .optional()
                    .describe("Key of the test environment"),
            ],
            settings_fields: vec![
                FieldSpec::boolean("test_mode")
                    .default_value(false)
                    .describe("Use the test key and the test checkout host"),
                FieldSpec::url("checkout_host")
                    .default_value("https://checkout.paycom.uz/")
                    .describe("Checkout host (test: https://test.paycom.uz/)"),
            ],
            http: HttpDefaults::default(),
        },
        TypeDescriptor {
            kind: "click".into(),
            name: "Click".into(),
            capabilities: vec![Payments, InboundHooks],
            credential_fields: vec![
                FieldSpec::string("service_id")
                    .required()
                    .describe("Service id"),
                FieldSpec::string("merchant_id")
                    .required()
                    .describe("Merchant id"),
                FieldSpec::secret("secret_key")
                    .describe("Signs SHOP API calls and the Auth header"),
                FieldSpec::string("merchant_user_id")
                    .required()
                    .describe("Merchant API user id"),
            ],
            settings_fields: vec![
                FieldSpec::url("base_url")
                    .default_value("https://api.click.uz/v2/merchant/")
                    .describe("Merchant API base URL"),
            ],
            http: HttpDefaults::default(),
        },
        TypeDescriptor {
            kind: "uzum".into(),
            name: "Uzum Market".into(),
            capabilities: vec![Marketplace],
            credential_fields: vec![FieldSpec::secret("token").describe("Seller OpenAPI token")],
            settings_fields: marketplace_settings(
                FieldSpec::string("shop_id")
                    .required()
                    .describe("Uzum shop id"),
                "https://api-seller.uzum.uz/api/seller-openapi",
                true,
            ),
            http: HttpDefaults {
                // Not published; clients see 429 above about one request a second per token.
                rate_limit: Some(RateLimit {
                    requests: 1,
                    per: Duration::from_secs(1),
                    burst: 1,
                    max_wait: Duration::from_secs(60),
                }),
                ..HttpDefaults::default()
            },
        },
        TypeDescriptor {
            kind: "wildberries".into(),
            name: "Wildberries".into(),
            capabilities: vec![Marketplace],
            credential_fields: vec![FieldSpec::secret("token").describe("API token (JWT)")],
            settings_fields: marketplace_settings(
                FieldSpec::string("warehouse_id")
                    .required()
                    .describe("Seller warehouse id"),
                "https://marketplace-api.wildberries.ru",
                false,
            ),
            http: HttpDefaults {
                // 300 a minute, 200 ms apart, burst 20.
                rate_limit: Some(RateLimit::per_minute(300, 20)),
                ..HttpDefaults::default()
            },
        },
        TypeDescriptor {
            kind: "ozon".into(),
            name: "Ozon".into(),
            capabilities: vec![Marketplace],
            credential_fields: vec![
                FieldSpec::string("client_id")
                    .required()
                    .describe("Client-Id"),
                FieldSpec::secret("api_key").describe("Api-Key"),
            ],
            settings_fields: marketplace_settings(
                FieldSpec::string("warehouse_id")
                    .required()
                    .describe("Ozon warehouse id"),
                "https://api-seller.ozon.ru",
                false,
            ),
            http: HttpDefaults {
                // 80 a minute is the stock endpoint's limit; Ozon's methods in general take
                // about 50 a second per Client-Id, counted over a sliding second, where a
                // token bucket lets through its burst plus its rate: 10 + 30 stays under it.
                rate_limit: Some(RateLimit {
                    requests: 30,
                    per: Duration::from_secs(1),
                    burst: 10,
                    max_wait: Duration::from_secs(30),
                }),
                route_limits: vec![RouteLimit {
                    path: "/v2/products/stocks",
                    limit: RateLimit::per_minute(80, 1),
                }],
                ..HttpDefaults::default()
            },
        },
        TypeDescriptor {
            kind: "aslbelgisi".into(),
            name: "Asl Belgisi".into(),
            capabilities: vec![Marking],
            credential_fields: vec![
                FieldSpec::secret("api_key").describe("X-API-KEY of the code check API"),
            ],
            settings_fields: vec![
                FieldSpec::url("base_url")
                    .required()
                    .describe("Code check API host"),
                FieldSpec::integer("check_timeout_ms")
                    .default_value(1500)
                    .min(1)
                    .describe("Online check timeout before the till falls back"),
            ],
            http: HttpDefaults {
                timeout: Duration::from_millis(1500),
                timeout_setting: Some("check_timeout_ms".into()),
                // A cashier is waiting: one try, then the offline policy decides.
                retry: RetryPolicy {
                    max_attempts: 1,
                    ..RetryPolicy::default()
                },
                ..HttpDefaults::default()
            },
        },
    ]
}

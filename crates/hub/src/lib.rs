//! The integration hub without a database: masked secrets, the credential vault, connector
//! capability traits, the registry of integration types and the outbound HTTP stack (timeouts,
//! rate limits, retries, circuit breakers, exchange log).

pub mod breaker;
pub mod connector;
pub mod http;
pub mod marking;
pub mod redact;
pub mod registry;
pub mod secret;
pub mod vault;

pub use breaker::{BreakerPolicy, BreakerSnapshot, BreakerState};
pub use connector::{
    Connector, ConnectorError, Health, HealthStatus, LoyaltyProvider, MarketplaceConnector,
    MarkingService, PaymentProvider,
};
pub use http::{
    ClientConfig, Exchange, ExchangeSink, HttpClient, HttpHub, HttpRequest, HttpResponse,
    MemorySink, NullSink, RateLimit, RetryPolicy, RouteLimit,
};
pub use marking::MarkingCheck;
pub use registry::{
    Capability, ConnectorContext, ConnectorFactory, Credentials, FieldSpec, FieldType, Registry,
    TypeDescriptor,
};
pub use secret::{Secret, mask};
pub use vault::{Vault, VaultError, aad_for};

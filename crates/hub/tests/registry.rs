use std::sync::Arc;

use async_trait::async_trait;
use savdo_domain::clock::SystemClock;
use savdo_hub::registry::validate;
use savdo_hub::{
    Capability, Connector, ConnectorContext, ConnectorError, Health, HttpHub, LoyaltyProvider,
    NullSink, Registry,
};
use serde_json::{Value, json};

fn errs(r: Result<(), Vec<(String, String)>>) -> Vec<(String, String)> {
    r.err().unwrap_or_default()
}

fn fields(r: Result<(), Vec<(String, String)>>) -> Vec<String> {
    errs(r).into_iter().map(|(f, _)| f).collect()
}

#[test]
fn catalog_has_the_api_shape() {
    let reg = Registry::builtin();
    let cat = serde_json::to_value(reg.catalog()).unwrap();
    let kinds: Vec<&str> = cat
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "jowi_club",
            "payme",
            "click",
            "uzum",
            "wildberries",
            "ozon",
            "aslbelgisi"
        ]
    );
    for t in cat.as_array().unwrap() {
        let keys: Vec<&String> = t.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "capabilities",
                "credential_fields",
                "name",
                "settings_fields",
                "type"
            ],
            "{t}"
        );
        for f in t["credential_fields"]
            .as_array()
            .unwrap()
            .iter()
            .chain(t["settings_fields"].as_array().unwrap())
        {
            for k in ["name", "type", "required", "secret"] {
                assert!(f.get(k).is_some(), "{k} missing in {f}");
            }
        }
    }
    let payme = &cat[1];
    assert_eq!(payme["capabilities"], json!(["payments", "inbound_hooks"]));
    let key = &payme["credential_fields"][1];
    assert_eq!(
        (&key["name"], &key["type"], &key["required"], &key["secret"]),
        (&json!("key"), &json!("string"), &json!(true), &json!(true))
    );
    assert_eq!(cat[0]["settings_fields"][2]["default"], 800);
    assert_eq!(cat[6]["settings_fields"][1]["default"], 1500);
    assert!(
        reg.descriptor("wildberries")
            .unwrap()
            .has(Capability::Marketplace)
    );
    // Every secret field is a credential, never a setting.
    for t in reg.catalog() {
        assert!(t.settings_fields.iter().all(|f| !f.secret), "{}", t.kind);
    }
}

#[test]
fn valid_configurations_pass() {
    let ok = [
        (
            "jowi_club",
            json!({"api_key": "k", "api_secret": "s"}),
            json!({"store_refs": {"s1": "J-1"}}),
        ),
        (
            "jowi_club",
            json!({"client_id": "c", "client_secret": "s", "token_url": "https://api.jowi.club/oauth/token", "webhook_secret": "w"}),
            json!(null),
        ),
        (
            "payme",
            json!({"merchant_id": "5e730e8e0b852a417aa49ceb", "key": "k"}),
            json!({"test_mode": true, "checkout_host": "https://test.paycom.uz/"}),
        ),
        (
            "click",
            json!({"service_id": "1", "merchant_id": "2", "secret_key": "s", "merchant_user_id": "3"}),
            json!({}),
        ),
        (
            "uzum",
            json!({"token": "t"}),
            json!({"shop_id": "7", "store_ids": ["a"], "safety_buffer": 2, "auto_confirm": true, "push_prices": false}),
        ),
        (
            "wildberries",
            json!({"token": "t"}),
            json!({"warehouse_id": "1", "store_ids": [], "base_url": "http://127.0.0.1:9000"}),
        ),
        (
            "ozon",
            json!({"client_id": "1", "api_key": "k"}),
            json!({"warehouse_id": "1", "store_ids": ["a", "b"]}),
        ),
        (
            "aslbelgisi",
            json!({"api_key": "k"}),
            json!({"base_url": "https://example.uz", "check_timeout_ms": 900}),
        ),
    ];
    for (kind, c, s) in ok {
        assert_eq!(validate(kind, &c, &s), Ok(()), "{kind}");
    }
}

#[test]
fn errors_name_the_fields() {
    let e = errs(validate(
        "uzum",
        &json!({}),
        &json!({"store_ids": "a", "safety_buffer": -1, "colour": "red", "auto_confirm": "yes"}),
    ));
    let f: Vec<&str> = e.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        f,
        [
            "credentials.token",
            "settings.shop_id",
            "settings.store_ids",
            "settings.safety_buffer",
            "settings.auto_confirm",
            "settings.colour"
        ]
    );
    assert_eq!(e[0].1, "required");
    assert_eq!(e[3].1, "must be at least 0");
    assert_eq!(e[5].1, "unknown field");

    for (url, msg) in [
        ("ftp://x.uz", "must be an http or https URL"),
        ("/relative", "must be an absolute URL"),
        (
            "https://user:pw@x.uz",
            "must not carry credentials; use the credential fields",
        ),
    ] {
        let e = errs(validate(
            "click",
            &json!({"service_id": "1", "merchant_id": "2", "secret_key": "s", "merchant_user_id": "3"}),
            &json!({"base_url": url}),
        ));
        assert_eq!(e, vec![("settings.base_url".to_owned(), msg.to_owned())]);
    }
    assert_eq!(
        fields(validate(
            "payme",
            &json!({"merchant_id": 5, "key": "", "test_key": null}),
            &json!({"test_mode": 1})
        )),
        [
            "credentials.merchant_id",
            "credentials.key",
            "settings.test_mode"
        ]
    );
    assert_eq!(
        fields(validate("payme", &json!("x"), &json!([]))),
        ["credentials", "settings"]
    );
    assert_eq!(
        errs(validate("sberbank", &json!({}), &json!({})))[0].0,
        "type"
    );
    assert_eq!(
        fields(validate(
            "jowi_club",
            &json!({"api_key": "k"}),
            &json!({"store_refs": {"s": 1}, "lookup_timeout_ms": "800"})
        )),
        [
            "credentials.api_secret",
            "settings.store_refs",
            "settings.lookup_timeout_ms"
        ]
    );
}

#[test]
fn jowi_takes_one_credential_set() {
    let none = errs(validate("jowi_club", &json!({}), &json!({})));
    assert_eq!(none.len(), 2);
    assert_eq!(none[0].0, "credentials.api_key");
    assert!(none[0].1.contains("client_id"), "{}", none[0].1);
    assert_eq!(
        fields(validate(
            "jowi_club",
            &json!({"client_id": "c"}),
            &json!({})
        )),
        ["credentials.client_secret", "credentials.token_url"]
    );
    let both = fields(validate(
        "jowi_club",
        &json!({"api_key": "k", "api_secret": "s", "client_id": "c", "client_secret": "s", "token_url": "https://x.uz/t"}),
        &json!({}),
    ));
    assert_eq!(both, ["credentials"]);
}

struct Sample {
    kind: &'static str,
    ctx: ConnectorContext,
}

#[async_trait]
impl Connector for Sample {
    fn kind(&self) -> &'static str {
        self.kind
    }
    async fn test_connection(&self) -> Result<Health, ConnectorError> {
        Ok(Health::ok(chrono::Utc::now(), None))
    }
    fn as_loyalty(&self) -> Option<&dyn LoyaltyProvider> {
        None
    }
}

#[tokio::test]
async fn factories_build_connectors_with_configured_clients() {
    let mut reg = Registry::builtin();
    assert!(
        reg.register("sberbank", |_| Err(ConnectorError::config("x")))
            .is_err()
    );
    let seen = Arc::new(std::sync::Mutex::new(None::<(Value, Vec<String>, u128)>));
    let s = seen.clone();
    reg.register("jowi_club", move |ctx: ConnectorContext| {
        let secrets = ctx
            .http
            .config()
            .secrets
            .iter()
            .map(|x| x.expose().to_owned())
            .collect();
        *s.lock().unwrap() = Some((
            ctx.settings.clone(),
            secrets,
            ctx.http.config().timeout.as_millis(),
        ));
        ctx.credentials.require_secret("api_secret")?;
        Ok(Arc::new(Sample {
            kind: "jowi_club",
            ctx,
        }))
    })
    .unwrap();
    assert!(reg.has_factory("jowi_club"));
    let hub = HttpHub::new(Arc::new(SystemClock), Arc::new(NullSink)).unwrap();

    let c = reg
        .build(
            &hub,
            "t1",
            "i1",
            "jowi_club",
            &json!({"api_key": "kk", "api_secret": "the-api-secret"}),
            &json!({"redeem_timeout_ms": 2500}),
        )
        .unwrap();
    assert_eq!(c.kind(), "jowi_club");
    assert_eq!(
        c.test_connection().await.unwrap().status,
        savdo_hub::HealthStatus::Ok
    );
    assert!(c.as_marketplace().is_none());
    let (settings, secrets, timeout) = seen.lock().unwrap().clone().unwrap();
    assert_eq!(settings["lookup_timeout_ms"], 800, "defaults filled in");
    assert_eq!(settings["base_url"], "https://api.jowi.club/");
    assert_eq!(secrets, ["the-api-secret"]);
    assert_eq!(timeout, 2500, "timeout from settings");

    let e = reg
        .build(
            &hub,
            "t1",
            "i1",
            "jowi_club",
            &json!({"api_key": 1}),
            &json!({}),
        )
        .err()
        .unwrap();
    assert!(
        matches!(&e, ConnectorError::Config { message } if message.contains("credentials.api_key")),
        "{e}"
    );
    assert!(!e.is_retryable());
    let e = reg
        .build(
            &hub,
            "t1",
            "i2",
            "payme",
            &json!({"merchant_id": "m", "key": "k"}),
            &json!({}),
        )
        .err()
        .unwrap();
    assert!(matches!(e, ConnectorError::Config { .. }));

    // The context's Debug never shows credential values.
    let c = reg
        .build(
            &hub,
            "t1",
            "i3",
            "jowi_club",
            &json!({"api_key": "kk", "api_secret": "the-api-secret"}),
            &json!({}),
        )
        .unwrap();
    drop(c);
    let ctx_dbg = format!(
        "{:?}",
        Sample {
            kind: "x",
            ctx: make_ctx(&reg, &hub)
        }
        .ctx
    );
    assert!(!ctx_dbg.contains("the-api-secret"), "{ctx_dbg}");
}

fn make_ctx(reg: &Registry, hub: &HttpHub) -> ConnectorContext {
    let credentials = savdo_hub::Credentials::from_value(
        json!({"api_key": "kk", "api_secret": "the-api-secret"}),
    )
    .unwrap();
    let cfg = reg
        .client_config("t", "i", "jowi_club", &credentials, &json!({}))
        .unwrap();
    ConnectorContext {
        tenant_id: "t".into(),
        integration_id: "i".into(),
        kind: "jowi_club".into(),
        credentials,
        settings: json!({}),
        http: hub.client(cfg),
    }
}

//! `savdo demo`: the whole product on one machine, in one process — the server (SQLite in a
//! demo data directory, in-process bus, workers), the sandbox with every simulator, and a fiscal
//! gateway with a virtual device — plus a demo business created through the real API: two
//! stores, tills with an open shift and the fiscal device, a catalogue with marked goods, stock,
//! customers with JOWi Club cards (seeded into the JOWi simulator too), marking codes in the Asl
//! Belgisi simulator, and the sandbox integrations connected.
//!
//! A second run on the same data directory reuses the tenant and its token (`demo.json` in the
//! data directory) and only re-seeds the simulators, whose state lives in memory; `--fresh`
//! deletes the data directory first.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::config::DbArgs;
use crate::{BusArgs, workers};

#[derive(clap::Args, Clone, Debug)]
pub struct DemoArgs {
    /// Address of the server and the console.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of the sandbox (the simulated external systems).
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub sandbox_listen: SocketAddr,
    /// Address of the fiscal gateway with its virtual device.
    #[arg(long, default_value = "127.0.0.1:8070")]
    pub fiscal_listen: SocketAddr,
    /// Delete the demo data directory first and create everything anew.
    #[arg(long)]
    pub fresh: bool,
    /// Print one JSON object (URLs, token, ids, marking codes) instead of the text summary.
    #[arg(long)]
    pub json: bool,
}

/// The demo's default data directory (not the server's `./savdo-data`).
pub const DEFAULT_DATA_DIR: &str = "./savdo-demo";

/// What the demo made, printed for people (text) or programs (`--json`).
#[derive(Debug, Default, serde::Serialize)]
pub struct Summary {
    pub console_url: String,
    pub api_url: String,
    pub sandbox_url: String,
    pub fiscal_url: String,
    pub data_dir: String,
    pub tenant_id: String,
    pub token: String,
    pub reused: bool,
    pub stores: Vec<Value>,
    pub terminals: Vec<Value>,
    pub fiscal_configured: bool,
    pub integrations: Vec<String>,
    pub notes: Vec<String>,
    pub cards: Vec<String>,
    /// SKU -> unsold marking codes (GS written as `<GS>`, as a keyboard scanner may send it).
    pub marking_codes: std::collections::BTreeMap<String, Vec<String>>,
    pub barcodes: std::collections::BTreeMap<String, String>,
}

pub async fn run(db: DbArgs, bus: BusArgs, args: DemoArgs) -> anyhow::Result<()> {
    let mut db = db;
    let data_dir = db
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    if args.fresh && data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)
            .with_context(|| format!("cannot delete {}", data_dir.display()))?;
    }
    std::fs::create_dir_all(&data_dir)?;
    db.data_dir = Some(data_dir.clone());

    let sandbox = savdo_sandbox::spawn(args.sandbox_listen)
        .await
        .with_context(|| format!("sandbox: cannot listen on {}", args.sandbox_listen))?;
    let fiscal = savdo_fiscal::start(savdo_fiscal::Config {
        listen: args.fiscal_listen,
        data_dir: data_dir.join("fiscal"),
        ..savdo_fiscal::Config::default()
    })
    .await
    .context("fiscal gateway")?;

    // The server, wired as `savdo serve` wires it (keep the two in step).
    let (store, r) = crate::open(&db).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let platform = workers::Platform::new(store.clone(), &r.data_dir)?;
    savdo_webhooks::seal_at_start(&platform.store, &platform.vault).await?;
    let handles = platform.start_workers(&bus, stop_rx.clone()).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    // Demo webhooks may target this machine.
    let state = platform.app_state(true);
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(savdo_api::serve(listener, state, async move {
        let _ = server_stop.wait_for(|s| *s).await;
    }));

    let base = format!("http://{addr}");
    let setup = Setup::new(&base, &sandbox.url(), &fiscal.url())?;
    let summary = setup.run(&store, &data_dir).await?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary);
    }

    crate::shutdown_signal().await;
    let _ = stop_tx.send(true);
    let _ = server.await;
    workers::join(handles).await;
    fiscal.shutdown().await;
    drop(sandbox);
    Ok(())
}

fn print_summary(s: &Summary) {
    println!();
    println!("Savdo demo is running — everything below is the real product against simulators.");
    println!();
    println!("  Console   {}", s.console_url);
    println!("  Token     {}", s.token);
    println!(
        "  API       {}/api/v1  (docs: {}/docs)",
        s.api_url, s.api_url
    );
    println!("  Sandbox   {}", s.sandbox_url);
    println!("  Fiscal    {}", s.fiscal_url);
    println!("  Data      {}", s.data_dir);
    println!();
    if s.reused {
        println!("  Reused the demo business of an earlier run (start over with --fresh).");
    }
    println!("  Integrations: {}", s.integrations.join(", "));
    for n in &s.notes {
        println!("  Note: {n}");
    }
    println!("  Loyalty cards: {}", s.cards.join(", "));
    println!("  Barcodes to scan at the till:");
    for (sku, b) in &s.barcodes {
        println!("    {sku:<14} {b}");
    }
    println!("  Marking codes (one per unit of a marked product):");
    for (sku, codes) in &s.marking_codes {
        for c in codes.iter().take(3) {
            println!("    {sku:<14} {c}");
        }
    }
    println!();
    println!("Press Ctrl-C to stop.");
}

/// A demo product: SKU, name, EAN-13 body (12 digits; the check digit is computed), price in
/// so'm, MXIK, marked.
struct DemoProduct {
    sku: &'static str,
    name: &'static str,
    ean12: &'static str,
    price_som: i64,
    mxik: &'static str,
    marked: bool,
}

const PRODUCTS: &[DemoProduct] = &[
    p(
        "NON-001",
        "Tandir non",
        "478000100001",
        4_000,
        "01905001001000000",
        false,
    ),
    p(
        "GURUCH-LZR-1",
        "Guruch Lazer, 1 kg",
        "478000100002",
        22_000,
        "01006001001000000",
        false,
    ),
    p(
        "YOG-PAXTA-1L",
        "Paxta yog‘i, 1 l",
        "478000100003",
        24_000,
        "01512001001000000",
        false,
    ),
    p(
        "SHAKAR-1",
        "Shakar, 1 kg",
        "478000100004",
        13_000,
        "01701001001000000",
        false,
    ),
    p(
        "UN-OLIY-2",
        "Un, oliy nav, 2 kg",
        "478000100005",
        16_000,
        "01101001001000000",
        false,
    ),
    p(
        "CHOY-95",
        "Ko‘k choy №95, 100 g",
        "478000100006",
        9_000,
        "00902001001000000",
        false,
    ),
    p(
        "CHOY-AHMAD",
        "Ahmad Tea qora choy, 100 g",
        "478000100007",
        18_000,
        "00902002001000000",
        false,
    ),
    p(
        "TUXUM-10",
        "Tuxum, 10 dona",
        "478000100008",
        16_000,
        "00407001001000000",
        false,
    ),
    p(
        "MAKARON-400",
        "Makfa makaron, 400 g",
        "478000100009",
        11_000,
        "01902001001000000",
        false,
    ),
    p(
        "ALPEN-90",
        "Alpen Gold shokolad, 90 g",
        "478000100010",
        14_000,
        "01806001001000000",
        false,
    ),
    p(
        "KARTOSHKA",
        "Kartoshka, 1 kg",
        "478000100011",
        6_000,
        "00701001001000000",
        false,
    ),
    p(
        "SUT-MUSAFFO-1L",
        "Musaffo sut 3,2%, 1 l",
        "478000100012",
        12_000,
        "00401001001000000",
        true,
    ),
    p(
        "SUV-HYDRO-1.5",
        "Hydrolife suv, 1,5 l",
        "478000100013",
        4_500,
        "02201001001000000",
        true,
    ),
    p(
        "COLA-1.5",
        "Coca-Cola, 1,5 l",
        "478000100014",
        12_500,
        "02202001001000000",
        true,
    ),
    p(
        "PIVO-SARBAST",
        "Sarbast pivo, 0,5 l",
        "478000100015",
        11_000,
        "02203001001000000",
        true,
    ),
];

const fn p(
    sku: &'static str,
    name: &'static str,
    ean12: &'static str,
    price_som: i64,
    mxik: &'static str,
    marked: bool,
) -> DemoProduct {
    DemoProduct {
        sku,
        name,
        ean12,
        price_som,
        mxik,
        marked,
    }
}

/// Customers with JOWi Club cards: (name, phone, card, discount %, earn %, balance).
const CUSTOMERS: &[(&str, &str, &str, i64, i64, i64)] = &[
    (
        "Dilnoza Karimova",
        "998901112233",
        "9860100000000011",
        5,
        3,
        12_000,
    ),
    (
        "Jasur Toshmatov",
        "998935554433",
        "9860100000000029",
        0,
        5,
        800,
    ),
    (
        "Malika Yusupova",
        "998977778899",
        "9860100000000037",
        10,
        2,
        45_000,
    ),
];

/// The EAN-13 check digit of a 12-digit body.
pub fn ean13(body: &str) -> String {
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| u32::from(b - b'0') * if i % 2 == 0 { 3 } else { 1 })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

struct Setup {
    http: reqwest::Client,
    base: String,
    sandbox: String,
    fiscal: String,
}

impl Setup {
    fn new(base: &str, sandbox: &str, fiscal: &str) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(Setup {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            base: base.into(),
            sandbox: sandbox.into(),
            fiscal: fiscal.into(),
        })
    }

    /// A call to our own API; `Ok(None)` for 404/405 (an endpoint this build does not have).
    async fn call(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Option<Value>> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}/api/v1{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = res.status();
        if status == reqwest::StatusCode::NOT_FOUND
            || status == reqwest::StatusCode::METHOD_NOT_ALLOWED
        {
            let text = res.text().await.unwrap_or_default();
            // A missing route, not a missing resource.
            if text.contains("route") || status == reqwest::StatusCode::METHOD_NOT_ALLOWED {
                return Ok(None);
            }
            bail!("{method} {path}: {status}: {text}");
        }
        let text = res.text().await?;
        if !status.is_success() {
            bail!("{method} {path}: {status}: {text}");
        }
        Ok(Some(if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        }))
    }

    async fn must(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        self.call(token, method.clone(), path, body)
            .await?
            .with_context(|| format!("{method} {path}: this server has no such route"))
    }

    async fn control(&self, system: &str, what: &str, body: Value) -> anyhow::Result<Value> {
        let res = self
            .http
            .post(format!("{}/_control/{system}/{what}", self.sandbox))
            .json(&body)
            .send()
            .await?;
        let status = res.status();
        let text = res.text().await?;
        if !status.is_success() {
            bail!("sandbox {system}/{what}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn run(
        &self,
        store: &std::sync::Arc<dyn savdo_storage::Storage>,
        data_dir: &Path,
    ) -> anyhow::Result<Summary> {
        use reqwest::Method;
        let state_file = data_dir.join("demo.json");
        let mut s = Summary {
            console_url: format!("{}/", self.base),
            api_url: self.base.clone(),
            sandbox_url: self.sandbox.clone(),
            fiscal_url: self.fiscal.clone(),
            data_dir: data_dir.display().to_string(),
            ..Summary::default()
        };

        // The tenant: reused when the saved token still works.
        let saved: Option<Value> = std::fs::read_to_string(&state_file)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let mut reused = None;
        if let Some(v) = saved {
            let token = v["token"].as_str().unwrap_or_default().to_string();
            if self
                .call(&token, Method::GET, "/stores", None)
                .await
                .is_ok()
            {
                reused = Some((
                    v["tenant_id"].as_str().unwrap_or_default().to_string(),
                    token,
                ));
            }
        }
        let token = match reused {
            Some((tenant, token)) => {
                s.reused = true;
                s.tenant_id = tenant;
                token
            }
            None => {
                let tenant = store.create_tenant("Savdo demo: Baraka market").await?;
                let token = savdo_api::routes::tokens::generate_token();
                store
                    .create_token(
                        &savdo_storage::Actor::system(tenant.id),
                        &savdo_storage::NewToken {
                            name: "demo owner".into(),
                            role: savdo_domain::tenant::Role::Owner,
                            store_id: None,
                        },
                        &savdo_api::extract::hash_token(&token),
                    )
                    .await?;
                s.tenant_id = tenant.id.to_string();
                std::fs::write(
                    &state_file,
                    serde_json::to_vec_pretty(&json!({"tenant_id": tenant.id, "token": token}))?,
                )?;
                token
            }
        };
        s.token = token.clone();
        let t = token.as_str();

        if !s.reused {
            self.create_business(t, &mut s.notes).await?;
        }
        let stores = items(self.must(t, Method::GET, "/stores", None).await?);
        let terminals = items(self.must(t, Method::GET, "/terminals", None).await?);
        // The fiscal device, every run: the gateway's address may have changed.
        for till in &terminals {
            let id = till["id"].as_str().unwrap_or_default();
            let body = json!({"gateway_url": self.fiscal, "device_id": "virtual-1"});
            match self
                .call(
                    t,
                    Method::PUT,
                    &format!("/terminals/{id}/fiscal"),
                    Some(body),
                )
                .await
            {
                Ok(Some(_)) => s.fiscal_configured = true,
                Ok(None) => {
                    s.notes.push(
                        "fiscal device not configured: this server has no PUT /terminals/{id}/fiscal yet"
                            .into(),
                    );
                    break;
                }
                Err(e) => {
                    s.notes.push(format!("fiscal device not configured: {e}"));
                    break;
                }
            }
        }
        // A fresh shift on every till, opened after the fiscal device is known so the device
        // opens its fiscal shift too (an earlier run's shift is closed first, like a new day).
        for till in &terminals {
            let id = till["id"].as_str().unwrap_or_default();
            if !till["open_shift"].is_null() {
                self.must(
                    t,
                    Method::POST,
                    &format!("/terminals/{id}/shifts/close"),
                    Some(json!({})),
                )
                .await?;
            }
            self.must(
                t,
                Method::POST,
                &format!("/terminals/{id}/shifts/open"),
                Some(json!({})),
            )
            .await?;
        }
        s.stores = stores
            .iter()
            .map(|x| json!({"id": x["id"], "name": x["name"]}))
            .collect();
        s.terminals = items(self.must(t, Method::GET, "/terminals", None).await?)
            .iter()
            .map(|x| json!({"id": x["id"], "name": x["name"], "store_id": x["store_id"]}))
            .collect();

        // The simulators keep their state in memory: seed them on every run.
        self.control(
            "jowi-club",
            "seed",
            json!({"customers": CUSTOMERS.iter().map(|(name, phone, card, disc, earn, bal)| json!({
                "name": name, "phone": phone, "card": card, "discount_percent": disc,
                "earn_percent": earn, "balance": bal, "level": if *disc >= 10 { "gold" } else { "silver" },
            })).collect::<Vec<_>>()}),
        )
        .await
        .or_else(|e| if s.reused { Ok(Value::Null) } else { Err(e) })?;
        s.cards = CUSTOMERS.iter().map(|c| c.2.to_string()).collect();
        let run_tag = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
        let mut cises = Vec::new();
        for (pi, prod) in PRODUCTS.iter().enumerate() {
            let ean = ean13(prod.ean12);
            s.barcodes.insert(prod.sku.into(), ean.clone());
            if !prod.marked {
                continue;
            }
            let gtin = format!("0{ean}");
            let mut codes = Vec::new();
            for unit in 0..10 {
                // 13-character serials, unique per run so earlier runs' sales never clash.
                let serial = format!("{}{:02}{:02}", &run_tag[..9], pi, unit);
                cises.push(json!({"cis": format!("01{gtin}21{serial}"), "status": "INTRODUCED"}));
                codes.push(format!("01{gtin}21{serial}<GS>93{}", &run_tag[9..13]));
            }
            s.marking_codes.insert(prod.sku.into(), codes);
        }
        self.control("aslbelgisi", "seed", json!({"codes": cises}))
            .await?;

        self.connect_integrations(t, &stores, &mut s).await?;
        self.seed_marketplaces(t, &mut s).await;
        Ok(s)
    }

    /// Give each marketplace simulator a catalogue of our demo goods (all but the last, plus one
    /// item we do not sell) and an order, then pull the catalogues, so the console shows linked
    /// and unlinked items on both sides and an imported order.
    async fn seed_marketplaces(&self, t: &str, s: &mut Summary) {
        use reqwest::Method;
        let Some(list) = self
            .call(t, Method::GET, "/integrations", None)
            .await
            .ok()
            .flatten()
        else {
            return;
        };
        let sold = &PRODUCTS[..PRODUCTS.len() - 1];
        let foreign = ("4780099000012", "Asal, 500 g", 45_000_i64);
        for i in items(list) {
            let kind = i["type"]
                .as_str()
                .or(i["kind"].as_str())
                .unwrap_or_default();
            let id = i["id"].as_str().unwrap_or_default();
            let catalogue: Vec<(String, &str, i64)> = sold
                .iter()
                .map(|p| (ean13(p.ean12), p.name, p.price_som))
                .chain(std::iter::once((
                    foreign.0.to_string(),
                    foreign.1,
                    foreign.2,
                )))
                .collect();
            // Fixed ids, so a second run on the same data directory finds the same items again
            // instead of leaving stale ones behind.
            let seed = match kind {
                "uzum" => {
                    json!({"clear": true, "products": catalogue.iter().zip(1001_u64..).map(|((b, n, pr), id)| json!({"sku_id": id, "product_id": id, "barcode": b, "title": n, "price": pr, "amount": 0})).collect::<Vec<_>>()})
                }
                "wildberries" => {
                    json!({"clear": true, "products": catalogue.iter().zip(5001_u64..).map(|((b, n, pr), id)| json!({"chrt_id": id, "nm_id": id, "barcode": b, "title": n, "vendor_code": b, "price": pr, "amount": 0})).collect::<Vec<_>>()})
                }
                "ozon" => {
                    json!({"clear": true, "products": catalogue.iter().zip(7001_u64..).map(|((b, n, pr), id)| json!({"product_id": id, "offer_id": b, "barcode": b, "name": n, "price": pr.to_string(), "stock": 0})).collect::<Vec<_>>()})
                }
                _ => continue,
            };
            if let Err(e) = self.control(kind, "seed", seed).await {
                s.notes.push(format!("{kind}: catalogue not seeded: {e}"));
                continue;
            }
            if let Err(e) = self
                .call(
                    t,
                    Method::POST,
                    &format!("/integrations/{id}/sync"),
                    Some(json!({"what": "products"})),
                )
                .await
            {
                s.notes.push(format!("{kind}: catalogue not pulled: {e}"));
            }
            if kind == "uzum" {
                // A buyer's order, for the order import to pick up.
                let order = json!({"items": [{"barcode": ean13(sold[0].ean12), "amount": 2}]});
                let http = self
                    .http
                    .post(format!("{}/_control/uzum/orders", self.sandbox))
                    .json(&order)
                    .send()
                    .await;
                if !http.is_ok_and(|r| r.status().is_success()) {
                    s.notes.push("uzum: demo order not created".into());
                }
            }
        }
    }

    async fn create_business(&self, t: &str, notes: &mut Vec<String>) -> anyhow::Result<()> {
        use reqwest::Method;
        let _ = notes;
        let s1 = self
            .must(t, Method::POST, "/stores", Some(json!({"name": "Baraka market — Chilonzor", "address": "Toshkent, Chilonzor tumani, Bunyodkor ko‘chasi 12"})))
            .await?;
        let s2 = self
            .must(t, Method::POST, "/stores", Some(json!({"name": "Baraka market — Yunusobod", "address": "Toshkent, Yunusobod tumani, Amir Temur ko‘chasi 107"})))
            .await?;
        for (store, name) in [(&s1, "Kassa 1"), (&s2, "Kassa 1")] {
            self.must(
                t,
                Method::POST,
                "/terminals",
                Some(json!({"store_id": store["id"], "name": name})),
            )
            .await?;
        }
        let products: Vec<Value> = PRODUCTS
            .iter()
            .enumerate()
            .map(|(i, p)| {
                json!({
                    "sku": p.sku, "name": p.name, "barcodes": [ean13(p.ean12)],
                    "price": p.price_som * 100, "vat_percent": 12, "mxik": p.mxik, "marked": p.marked,
                    // The MXIK record's package code (a fiscal receipt needs it).
                    "package_code": format!("{}", 1_508_500 + i), "unit": if p.sku == "KARTOSHKA" { 2 } else { 1 },
                })
            })
            .collect();
        self.must(
            t,
            Method::POST,
            "/products/bulk",
            Some(json!({"items": products})),
        )
        .await?;
        let all = items(
            self.must(t, Method::GET, "/products?limit=100", None)
                .await?,
        );
        for (store, qty) in [(&s1, 120), (&s2, 60)] {
            let lines: Vec<Value> = all
                .iter()
                .map(|p| json!({"product_id": p["id"], "qty": qty, "cost": p["price"].as_i64().unwrap_or(0) * 8 / 10}))
                .collect();
            self.must(
                t,
                Method::POST,
                "/stock/supplies",
                Some(
                    json!({"store_id": store["id"], "note": "Demo opening stock", "lines": lines}),
                ),
            )
            .await?;
        }
        for (name, phone, card, ..) in CUSTOMERS {
            self.must(
                t,
                Method::POST,
                "/customers",
                Some(json!({"name": name, "phone": phone, "loyalty_card": card})),
            )
            .await?;
        }
        Ok(())
    }

    async fn connect_integrations(
        &self,
        t: &str,
        stores: &[Value],
        s: &mut Summary,
    ) -> anyhow::Result<()> {
        use reqwest::Method;
        if self
            .call(t, Method::GET, "/integrations/catalog", None)
            .await?
            .is_none()
        {
            s.notes.push(
                "integrations not connected: this server has no /api/v1/integrations yet".into(),
            );
            return Ok(());
        }
        let existing = items(self.must(t, Method::GET, "/integrations", None).await?);
        let sb = &self.sandbox;
        let store_ids: Vec<Value> = stores.iter().map(|x| x["id"].clone()).collect();
        let store_ids = Value::Array(store_ids);
        let wanted = [
            (
                "jowi_club",
                "JOWi Club",
                json!({"api_key": "demo_api_key", "api_secret": "demo_api_secret"}),
                json!({"base_url": format!("{sb}/jowi-club/")}),
            ),
            (
                "aslbelgisi",
                "Asl Belgisi",
                json!({"api_key": "demo-aslbelgisi-key"}),
                json!({"base_url": format!("{sb}/aslbelgisi")}),
            ),
            (
                "payme",
                "Payme",
                json!({"merchant_id": "demo-payme-merchant", "key": "demo-payme-key"}),
                json!({"test_mode": false, "checkout_host": format!("{sb}/payme/")}),
            ),
            (
                "click",
                "Click",
                json!({"service_id": "10001", "merchant_id": "20001", "secret_key": "demo-click-secret", "merchant_user_id": "30001"}),
                json!({"base_url": format!("{sb}/click/v2/merchant/")}),
            ),
            (
                "uzum",
                "Uzum Market",
                json!({"token": "demo-uzum-token"}),
                json!({"shop_id": "1", "store_ids": store_ids, "base_url": format!("{sb}/uzum/api/seller-openapi")}),
            ),
            (
                "wildberries",
                "Wildberries",
                json!({"token": "demo-wb-token"}),
                json!({"warehouse_id": "1", "store_ids": store_ids, "base_url": format!("{sb}/wildberries")}),
            ),
            (
                "ozon",
                "Ozon",
                json!({"client_id": "demo-client", "api_key": "demo-ozon-key"}),
                json!({"warehouse_id": "1", "store_ids": store_ids, "base_url": format!("{sb}/ozon")}),
            ),
        ];
        for (kind, name, credentials, settings) in wanted {
            let found = existing
                .iter()
                .find(|i| i["type"] == kind || i["kind"] == kind)
                .cloned();
            let integration = match found {
                Some(i) => {
                    // Point it at this run's sandbox.
                    let id = i["id"].as_str().unwrap_or_default();
                    let _ = self
                        .call(
                            t,
                            Method::PATCH,
                            &format!("/integrations/{id}"),
                            Some(json!({"settings": settings})),
                        )
                        .await;
                    i
                }
                None => {
                    let body = json!({"type": kind, "name": name, "credentials": credentials, "settings": settings});
                    match self
                        .call(t, Method::POST, "/integrations", Some(body))
                        .await
                    {
                        Ok(Some(i)) => i,
                        Ok(None) => {
                            s.notes
                                .push(format!("{kind}: POST /integrations is not available"));
                            continue;
                        }
                        Err(e) => {
                            s.notes.push(format!("{kind} not connected: {e}"));
                            continue;
                        }
                    }
                }
            };
            let id = integration["id"].as_str().unwrap_or_default().to_string();
            // Payme and Click call us: register our hook URLs with their simulators.
            let hook = format!("{}/hooks/{kind}/{id}", self.base);
            let seeded = match kind {
                "payme" => self
                    .control("payme", "seed", json!({"merchants": [{"merchant_id": "demo-payme-merchant", "key": "demo-payme-key", "endpoint": hook}]}))
                    .await
                    .map(|_| ()),
                "click" => self
                    .control("click", "seed", json!({"services": [{"service_id": "10001", "merchant_id": "20001", "secret_key": "demo-click-secret", "merchant_user_id": "30001", "prepare_url": hook, "complete_url": hook}]}))
                    .await
                    .map(|_| ()),
                _ => Ok(()),
            };
            if let Err(e) = seeded {
                s.notes.push(format!("{kind}: sandbox not seeded: {e}"));
            }
            let _ = self
                .call(
                    t,
                    Method::POST,
                    &format!("/integrations/{id}/test"),
                    Some(json!({})),
                )
                .await;
            s.integrations.push(kind.to_string());
        }
        Ok(())
    }
}

fn items(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        Value::Object(mut m) => match m.remove("items") {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_catalogue_is_valid() {
        assert_eq!(ean13("400638133393"), "4006381333931");
        let mut skus = std::collections::HashSet::new();
        for p in PRODUCTS {
            assert!(skus.insert(p.sku));
            assert_eq!(p.ean12.len(), 12);
            assert!(
                savdo_domain::mxik::validate_mxik(p.mxik).is_ok(),
                "{}",
                p.mxik
            );
            assert!(savdo_domain::barcode::gs1_valid(&ean13(p.ean12)));
        }
        assert_eq!(PRODUCTS.len(), 15);
        assert!(PRODUCTS.iter().filter(|p| p.marked).count() >= 3);
    }
}

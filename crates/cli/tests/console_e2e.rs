//! The back-office console driven in headless Chromium (WebDriver through `fantoccini`) against
//! `savdo demo`: the real server, sandbox and fiscal gateway with the demo business.
//!
//! Skipped unless `SAVDO_TEST_CHROMEDRIVER` names chromedriver (Debian: `chromium` and
//! `chromium-driver`, then `/usr/bin/chromedriver`); when it is set, failures fail.
//! `SAVDO_UPDATE_SCREENSHOTS=1` writes the screenshots into `docs/screenshots/`.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_savdo");
const WAIT: Duration = Duration::from_secs(20);

/// Kills a child process even when an assertion fails.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_demo(dir: &std::path::Path) -> (Proc, Value) {
    let mut cmd = Command::new(BIN);
    for var in [
        "SAVDO_DATABASE_URL",
        "SAVDO_CONFIG",
        "SAVDO_DATA_DIR",
        "SAVDO_LISTEN",
        "SAVDO_NATS_URL",
    ] {
        cmd.env_remove(var);
    }
    let mut child = cmd
        .env("SAVDO_LOG", "warn")
        // Marketplace orders are polled every second, not every minute.
        .env("SAVDO_MARKETPLACE_POLL_SECS", "1")
        .args(["demo", "--json", "--data-dir"])
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--sandbox-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--fiscal-listen", &format!("127.0.0.1:{}", free_port())])
        .stdout(Stdio::piped())
        .spawn()
        .expect("savdo demo starts");
    let stdout = child.stdout.take().unwrap();
    let proc = Proc(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("savdo demo printed its summary");
    let summary: Value = serde_json::from_str(&line).expect("demo --json prints JSON");
    (proc, summary)
}

fn start_chromedriver(path: &str) -> (Proc, u16) {
    let port = free_port();
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    (Proc(child), port)
}

async fn browser(port: u16, profile: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    let mut options = json!({
        "args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--window-size=1280,800", "--lang=en-US",
            format!("--user-data-dir={}", profile.display()),
        ],
    });
    if let Ok(bin) = std::env::var("SAVDO_TEST_CHROMIUM") {
        options["binary"] = json!(bin);
    }
    caps.insert("goog:chromeOptions".into(), options);
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("WebDriver session")
}

/// Waits for a CSS selector to match, with a message that says what was expected.
async fn find(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} did not appear: {e}"))
}

/// Waits until `f` returns true for the page's text inside `css`.
async fn wait_text(c: &Client, css: &str, what: &str, f: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT * 2;
    loop {
        if let Ok(el) = c.find(Locator::Css(css)).await
            && let Ok(text) = el.text().await
            && f(&text)
        {
            return text;
        }
        assert!(Instant::now() < deadline, "{what}: {css} never matched");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn shot(c: &Client, name: &str, dir: &std::path::Path) {
    // Let fonts and late answers settle; show the top of the page (the cashier: its receipt).
    tokio::time::sleep(Duration::from_millis(400)).await;
    if name == "cashier" {
        // Tall enough for the receipt and its fiscal QR under the till controls.
        let _ = c.set_window_size(1280, 1150).await;
    }
    if name == "mappings" || name == "marketplace-orders" {
        // The integration's detail, below the list.
        let _ = c
            .execute(
                "document.querySelector('#integration-detail').scrollIntoView();",
                vec![],
            )
            .await;
    } else {
        let _ = c.execute("window.scrollTo(0, 0);", vec![]).await;
    }
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

async fn sandbox_control(url: &str, body: Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let res = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("sandbox control");
    assert!(res.status().is_success(), "{url}: {}", res.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_end_to_end() {
    let Ok(driver) = std::env::var("SAVDO_TEST_CHROMEDRIVER") else {
        eprintln!("SKIP console e2e: set SAVDO_TEST_CHROMEDRIVER=/usr/bin/chromedriver");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let shots: PathBuf = if std::env::var_os("SAVDO_UPDATE_SCREENSHOTS").is_some() {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots")
    } else {
        tmp.path().join("screenshots")
    };
    std::fs::create_dir_all(&shots).unwrap();
    let (_demo, demo) = start_demo(&tmp.path().join("demo"));
    let (_driver, port) = start_chromedriver(&driver);
    let c = browser(port, &tmp.path().join("profile")).await;
    let result = scenarios(&c, &demo, &shots).await;
    let _ = c.close().await;
    result.unwrap();
}

async fn scenarios(c: &Client, demo: &Value, shots: &std::path::Path) -> Result<(), String> {
    let console = demo["console_url"].as_str().unwrap();
    let sandbox = demo["sandbox_url"].as_str().unwrap();
    let integrations = demo["integrations"].as_array().cloned().unwrap_or_default();

    // Sign in.
    c.goto(console).await.map_err(|e| e.to_string())?;
    find(c, "#token").await;
    shot(c, "signin", shots).await;
    find(c, "#token")
        .await
        .send_keys(demo["token"].as_str().unwrap())
        .await
        .unwrap();
    find(c, "#signin").await.click().await.unwrap();
    find(c, "#nav-integrations[aria-current=page]").await;

    if integrations.is_empty() {
        // The integrations API is missing: the page says so instead of breaking.
        find(c, "#integrations-unavailable").await;
        eprintln!("NOTE console e2e: no integrations API, integration scenarios skipped");
    } else {
        // The catalogue, from the catalog endpoint.
        find(c, "#catalog li[data-type=uzum]").await;
        find(c, "#integrations-list tr[data-type=wildberries]").await;

        // Disconnect Wildberries, then connect it again through the generated form.
        find(
            c,
            "#integrations-list tr[data-type=wildberries] button.disconnect",
        )
        .await
        .click()
        .await
        .unwrap();
        c.accept_alert().await.map_err(|e| e.to_string())?;
        wait_gone(c, "#integrations-list tr[data-type=wildberries]").await;
        find(c, "#catalog li[data-type=wildberries] button.connect")
            .await
            .click()
            .await
            .unwrap();
        // The secret field is a password input.
        let token = find(c, "#f-credentials-token").await;
        assert_eq!(
            token.attr("type").await.unwrap().as_deref(),
            Some("password")
        );
        token.send_keys("demo-wb-token").await.unwrap();
        find(c, "#f-settings-warehouse_id")
            .await
            .send_keys("1")
            .await
            .unwrap();
        let stores: Vec<String> = demo["stores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
        find(c, "#f-settings-store_ids")
            .await
            .send_keys(&stores.join(", "))
            .await
            .unwrap();
        let base = find(c, "#f-settings-base_url").await;
        base.clear().await.unwrap();
        base.send_keys(&format!("{sandbox}/wildberries"))
            .await
            .unwrap();
        find(c, "#connect-submit").await.click().await.unwrap();
        find(c, "#integrations-list tr[data-type=wildberries]").await;
        // Its credentials come back masked.
        find(c, "#tab-settings").await.click().await.unwrap();
        wait_text(c, "#integration-detail", "masked token", |t| {
            t.contains("****") && !t.contains("demo-wb-token")
        })
        .await;
        // Test it and see its health.
        find(
            c,
            "#integrations-list tr[data-type=wildberries] button.test",
        )
        .await
        .click()
        .await
        .unwrap();
        wait_text(
            c,
            "#integrations-list tr[data-type=wildberries] td.health",
            "wildberries health",
            |t| !t.trim().is_empty() && !t.contains("Testing"),
        )
        .await;
        find(c, "#tab-log").await.click().await.unwrap();
        find(c, "#log-table").await;
        shot(c, "integrations", shots).await;

        // A failing integration is flagged: take the marking system down, then test it.
        sandbox_control(
            &format!("{sandbox}/_control/aslbelgisi/faults"),
            json!({"down": true}),
        )
        .await;
        let before = find(c, "#integrations-list tr[data-type=aslbelgisi] td.health")
            .await
            .text()
            .await
            .unwrap_or_default();
        find(c, "#integrations-list tr[data-type=aslbelgisi] button.test")
            .await
            .click()
            .await
            .unwrap();
        // The new check's result (its time differs from the one the demo's check left).
        let health = wait_text(
            c,
            "#integrations-list tr[data-type=aslbelgisi] td.health",
            "aslbelgisi health after the outage",
            |t| !t.contains("Testing") && !t.contains("not tested") && t != before,
        )
        .await;
        let flagged = c
            .find(Locator::Css(
                "#integrations-list tr[data-type=aslbelgisi].row-bad",
            ))
            .await
            .is_ok();
        if health.contains("connector not available") {
            eprintln!("NOTE console e2e: the aslbelgisi connector is not registered yet: {health}");
        } else {
            assert!(flagged, "aslbelgisi not flagged as failing: {health}");
        }
        sandbox_control(
            &format!("{sandbox}/_control/aslbelgisi/faults"),
            json!({"down": false}),
        )
        .await;

        // Uzum: the demo's catalogue pull linked our goods by barcode; one marketplace item
        // (honey) is not ours, and one of our products (the last) is not on the marketplace.
        find(c, "#integrations-list tr[data-type=uzum] button.open")
            .await
            .click()
            .await
            .unwrap();
        find(c, "#tab-mappings").await.click().await.unwrap();
        let deadline = Instant::now() + WAIT * 2;
        while c
            .find(Locator::Css("#mappings tr.row-warn input.link-input"))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "the uzum catalogue was never pulled"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            find(c, "#integration-detail .filters button.secondary")
                .await
                .click()
                .await
                .unwrap();
        }
        wait_text(c, "#unmapped-local", "our unmapped product", |t| {
            t.contains("PIVO-SARBAST")
        })
        .await;
        shot(c, "mappings", shots).await;
        // Link the foreign item to our last product by hand.
        find(c, "#mappings tr.row-warn input.link-input")
            .await
            .send_keys("PIVO-SARBAST")
            .await
            .unwrap();
        find(c, "#mappings tr.row-warn button.link")
            .await
            .click()
            .await
            .unwrap();
        wait_text(c, "#map-message", "link saved", |t| t.contains('1')).await;
        wait_text(c, "#mappings", "manual link shown", |t| {
            t.contains("PIVO-SARBAST")
        })
        .await;
        // The buyer's order the demo placed on Uzum comes in as an invoice.
        find(c, "#tab-orders").await.click().await.unwrap();
        let deadline = Instant::now() + WAIT * 2;
        while c
            .find(Locator::Css("#orders tr[data-order]"))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "the uzum order was never imported"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            find(c, "#integration-detail .filters button.secondary")
                .await
                .click()
                .await
                .unwrap();
        }
        wait_text(c, "#orders", "imported order", |t| t.contains("imported")).await;
        shot(c, "marketplace-orders", shots).await;
    }

    // Webhooks: create one (the secret is shown once), send a test, see its deliveries.
    find(c, "#nav-webhooks").await.click().await.unwrap();
    find(c, "#wh-url")
        .await
        .send_keys(&format!("{sandbox}/webhook-sink"))
        .await
        .unwrap();
    find(c, "#wh-create").await.click().await.unwrap();
    wait_text(c, "#wh-secret", "webhook secret", |t| {
        t.starts_with("whsec_")
    })
    .await;
    find(c, "#webhook-list tr[data-webhook] button.send-test")
        .await
        .click()
        .await
        .unwrap();
    find(c, "#delivery-table").await;
    shot(c, "webhooks", shots).await;

    // Events: the live feed shows what the demo did.
    find(c, "#nav-events").await.click().await.unwrap();
    find(c, "#event-feed li.event[data-type='product.created']").await;
    shot(c, "events", shots).await;

    // Cashier: scan a product, a marked product with its code, a loyalty card; pay cash.
    find(c, "#nav-cashier").await.click().await.unwrap();
    find(c, "#c-till option").await;
    let barcodes = &demo["barcodes"];
    let scan = |code: String| async move {
        let input = find(c, "#c-barcode").await;
        input.send_keys(&format!("{code}\n")).await.unwrap();
    };
    scan(barcodes["NON-001"].as_str().unwrap().to_string()).await;
    find(c, "#cart tr[data-sku='NON-001']").await;
    scan(barcodes["COLA-1.5"].as_str().unwrap().to_string()).await;
    let code = demo["marking_codes"]["COLA-1.5"][0].as_str().unwrap();
    find(c, "#c-marking-code")
        .await
        .send_keys(&format!("{code}\n"))
        .await
        .unwrap();
    find(c, "#cart tr[data-sku='COLA-1.5']").await;
    let card = demo["cards"][0].as_str().unwrap();
    find(c, "#c-card").await.send_keys(card).await.unwrap();
    find(c, "#c-attach").await.click().await.unwrap();
    find(c, "#c-customer").await;
    // The JOWi Club quote: its discount and points are shown.
    wait_text(c, "#c-quote", "loyalty quote", |t| !t.is_empty()).await;
    // Pay by Payme QR: the QR appears, the sandbox pays as the buyer would, the till sees it.
    find(c, "#c-pay-payme").await.click().await.unwrap();
    let link = find(c, "#c-qr-link").await;
    let checkout = link.attr("href").await.unwrap().unwrap_or_default();
    assert!(!checkout.is_empty(), "no checkout link under the QR");
    let paid: serde_json::Value = reqwest::Client::new()
        .post(format!(
            "{}/_control/payme/pay",
            demo["sandbox_url"].as_str().unwrap_or_default()
        ))
        .json(&json!({"checkout_url": checkout, "scenario": "pay"}))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(paid["ok"], json!(true), "the sandbox could not pay: {paid}");
    wait_text(c, "#c-receipt h2", "receipt", |t| t.contains('№')).await;
    if demo["fiscal_configured"].as_bool() == Some(true) {
        c.wait()
            .at_most(Duration::from_secs(40))
            .for_element(Locator::Css("#fiscal-qr-img"))
            .await
            .map_err(|e| format!("the fiscal QR never appeared: {e}"))?;
        let loaded = c
            .execute(
                "const i = document.querySelector('#fiscal-qr-img'); return i.complete && i.naturalWidth > 0;",
                vec![],
            )
            .await
            .map_err(|e| e.to_string())?;
        assert_eq!(loaded, json!(true), "the fiscal QR image did not load");
    } else {
        eprintln!("NOTE console e2e: no fiscal device configured, fiscal QR not checked");
    }
    shot(c, "cashier", shots).await;
    Ok(())
}

async fn wait_gone(c: &Client, css: &str) {
    let deadline = Instant::now() + WAIT;
    while c.find(Locator::Css(css)).await.is_ok() {
        assert!(Instant::now() < deadline, "{css} did not go away");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

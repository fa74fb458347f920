//! `savdo import orders FILE` on a SQLite data directory: the report on stdout, plain progress
//! lines on stderr (not a terminal), a non-zero exit when an order failed, and a second run
//! that only finds duplicates.

use std::path::Path;
use std::process::{Command, Output};

use savdo_storage::{Actor, InvoiceFilter, Storage};
use serde_json::Value;
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_savdo");

fn savdo(dir: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    for var in [
        "SAVDO_DATABASE_URL",
        "SAVDO_CONFIG",
        "SAVDO_DATA_DIR",
        "SAVDO_TENANT",
    ] {
        c.env_remove(var);
    }
    c.env("SAVDO_LOG", "warn")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("run savdo")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A tenant made by the binary, with a store and two products added through the storage.
async fn setup(dir: &Path) -> (Uuid, std::sync::Arc<dyn Storage>) {
    let out = savdo(dir, &["tenant", "create", "--name", "Import shop"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let tenant = Uuid::parse_str(v["tenant_id"].as_str().unwrap()).unwrap();
    let url = format!("sqlite://{}", dir.join("savdo.db").display());
    let store = savdo_storage::connect(&url)
        .await
        .expect("open the data dir");
    let actor = Actor::system(tenant);
    store
        .create_store(&actor, "Chilonzor", None)
        .await
        .expect("store");
    for (sku, price) in [("MILK-1", 1_250_000), ("BREAD-1", 400_000)] {
        store
            .create_product(&actor, &savdo_testkit::product_fields(sku, sku, price))
            .await
            .expect("product");
    }
    (tenant, store)
}

async fn invoice_count(store: &dyn Storage, tenant: Uuid) -> usize {
    let f = InvoiceFilter {
        limit: 500,
        ..Default::default()
    };
    store.list_invoices(tenant, &f).await.unwrap().0.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_orders_then_reimport() {
    let dir = tempfile::tempdir().unwrap();
    let (tenant, store) = setup(dir.path()).await;
    let t = tenant.to_string();
    let file = dir.path().join("orders.csv");
    std::fs::write(
        &file,
        "\u{feff}external_ref;store;sku;qty;price\n\
         SITE-1;Chilonzor;MILK-1;2;12500,00\n\
         SITE-1;Chilonzor;BREAD-1;1;\n\
         SITE-2;Chilonzor;NOPE;1;\n\
         SITE-3;Chilonzor;BREAD-1;0,5;\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();

    let out = savdo(dir.path(), &["import", "orders", f, "--tenant", &t]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "a failed order fails the command");
    assert!(
        stdout.contains("created 2, duplicate 0, failed 1"),
        "{stdout}"
    );
    assert!(stdout.contains("failed: row 4 (SITE-2)"), "{stdout}");
    assert!(stdout.contains("line 4, sku:"), "{stdout}");
    assert!(
        stderr.contains("imported 3/3 orders"),
        "plain progress lines off a terminal: {stderr}"
    );
    assert!(stderr.contains("1 order(s) failed"), "{stderr}");
    assert_eq!(invoice_count(store.as_ref(), tenant).await, 2);

    let out = savdo(
        dir.path(),
        &["import", "orders", f, "--tenant", &t, "--json"],
    );
    assert!(!out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).expect("the report as JSON");
    assert_eq!(
        report["summary"],
        serde_json::json!({"created": 0, "duplicate": 2, "failed": 1})
    );
    assert_eq!(
        invoice_count(store.as_ref(), tenant).await,
        2,
        "nothing new"
    );

    // A clean JSON file (format from the extension), reserving: exit 0.
    let json = dir.path().join("orders.json");
    std::fs::write(
        &json,
        r#"[{"external_ref": "APP-1", "store": "Chilonzor", "lines": [{"sku": "MILK-1", "qty": 1.5}]}]"#,
    )
    .unwrap();
    let out = savdo(
        dir.path(),
        &[
            "import",
            "orders",
            json.to_str().unwrap(),
            "--tenant",
            &t,
            "--reserve",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("created 1, duplicate 0, failed 0"),
        "{}",
        text(&out.stdout)
    );
    let levels = store.stock(tenant, None, None).await.unwrap();
    assert_eq!(levels.len(), 1);
    assert_eq!(levels[0].reserved.milli(), 1_500);

    // Whole-file problems and an unknown tenant: non-zero, nothing imported.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "external_ref;store;sku;qtty\nX;Chilonzor;MILK-1;1\n").unwrap();
    let out = savdo(
        dir.path(),
        &["import", "orders", bad.to_str().unwrap(), "--tenant", &t],
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("qtty"), "{}", text(&out.stderr));
    let out = savdo(
        dir.path(),
        &[
            "import",
            "orders",
            f,
            "--tenant",
            &Uuid::now_v7().to_string(),
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("tenant"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(invoice_count(store.as_ref(), tenant).await, 3);
}

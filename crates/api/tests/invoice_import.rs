//! `POST /api/v1/invoices/import` on a real server, SQLite and (with `SAVDO_TEST_DATABASE_URL`)
//! PostgreSQL: CSV with `;` and `,`, a BOM, decimal commas, orders over several lines, bad rows
//! reported with their lines while the rest is imported, re-import as duplicates, the JSON
//! form, whole-request problems, reservation, tenant isolation and Idempotency-Key.

#[path = "it/common/mod.rs"]
mod common;

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use common::{Resp, Srv, milli, uuid};

const CSV: Option<&str> = Some("text/csv");
const JSON: Option<&str> = Some("application/json");
const MILK_EAN: &str = "4780000000014";
const BREAD_EAN: &str = "4780000000021";

/// A store named "Chilonzor" and three products: MILK (12 500 sum, barcode), BREAD (4 000 sum,
/// barcode), SUGAR (weighed, 15 000 sum).
struct Shop {
    store: Uuid,
    milk: Uuid,
    bread: Uuid,
    sugar: Uuid,
}

async fn shop(srv: &Srv) -> Shop {
    let store = srv.create_store("Chilonzor").await;
    let product = async |sku: &str, price: i64, barcodes: Value| {
        let r = srv
            .post(
                "/api/v1/products",
                json!({"sku": sku, "name": format!("Product {sku}"), "price": price, "barcodes": barcodes}),
            )
            .await;
        r.ok(201);
        r.id()
    };
    let milk = product("MILK-1", 1_250_000, json!([MILK_EAN])).await;
    let bread = product("BREAD-1", 400_000, json!([BREAD_EAN])).await;
    let sugar = product("SUGAR-KG", 1_500_000, json!([])).await;
    Shop {
        store,
        milk,
        bread,
        sugar,
    }
}

async fn import(srv: &Srv, query: &str, ct: Option<&str>, body: impl Into<reqwest::Body>) -> Resp {
    srv.raw(
        Method::POST,
        &format!("/api/v1/invoices/import{query}"),
        ct,
        body,
        &[],
    )
    .await
}

/// Every invoice of the tenant, by external_ref.
async fn invoices(srv: &Srv) -> Vec<Value> {
    let r = srv.get("/api/v1/invoices?limit=500").await;
    r.ok(200)["items"].as_array().unwrap().clone()
}

async fn invoice(srv: &Srv, ext: &str) -> Value {
    let r = srv
        .get(&format!("/api/v1/invoices?external_ref={ext}"))
        .await;
    let items = r.ok(200)["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1, "one invoice {ext}: {items:?}");
    items[0].clone()
}

fn summary(r: &Resp) -> (u64, u64, u64) {
    let s = &r.ok(200)["summary"];
    (
        s["created"].as_u64().unwrap(),
        s["duplicate"].as_u64().unwrap(),
        s["failed"].as_u64().unwrap(),
    )
}

/// The report entry of an order.
fn row<'a>(r: &'a Resp, ext: &str) -> &'a Value {
    r.body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["external_ref"] == json!(ext))
        .unwrap_or_else(|| panic!("no row {ext} in {}", r.text))
}

/// `(row, field)` of every error of a report entry.
fn errors(v: &Value) -> Vec<(Option<u64>, String)> {
    v["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| (e["row"].as_u64(), e["field"].as_str().unwrap().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// `;`, a BOM, CRLF, decimal commas, a quoted note with the delimiter and a line break, and an
/// order over three lines (by sku and by barcode, with and without a price).
async fn csv_semicolon_excel(srv: Srv) {
    let s = shop(&srv).await;
    let known = srv
        .post(
            "/api/v1/customers",
            json!({"name": "Dilnoza", "phone": "+998901234567"}),
        )
        .await
        .id();
    let file = "\u{feff}external_ref;store;sku;barcode;qty;price;channel;customer_phone;note\r\n\
                SITE-1;Chilonzor;MILK-1;;2;12 400,50;site;90 123-45-67;\"ring; then leave\r\nat door\"\r\n\
                SITE-1;;;4780000000021;1;;;;\r\n\
                SITE-1;chilonzor;SUGAR-KG;;0,375;15000;site;;\r\n\
                ;;;;;;;;\r\n\
                SITE-2;Chilonzor;BREAD-1;;3;;telegram;+998 93 000 00 00;\r\n";
    let r = import(&srv, "", CSV, file).await;
    assert_eq!(summary(&r), (2, 0, 0), "{}", r.text);
    let one = row(&r, "SITE-1");
    assert_eq!(one["row"], 2, "the order's first line (header = line 1)");
    assert_eq!(one["status"], "created");
    let inv = invoice(&srv, "SITE-1").await;
    assert_eq!(uuid(&one["invoice_id"]), uuid(&inv["id"]));
    assert_eq!(inv["status"], "draft");
    assert_eq!(uuid(&inv["store_id"]), s.store);
    assert_eq!(inv["channel"], "site");
    assert_eq!(uuid(&inv["customer_id"]), known, "the customer by phone");
    assert_eq!(inv["note"], "ring; then leave\r\nat door");
    let lines = inv["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 3);
    assert_eq!(uuid(&lines[0]["product_id"]), s.milk);
    assert_eq!(milli(&lines[0]["qty"]), 2_000);
    assert_eq!(lines[0]["price"], 1_240_050, "12 400,50 sum in tiyin");
    assert_eq!(lines[0]["amount"], 2_480_100);
    assert_eq!(uuid(&lines[1]["product_id"]), s.bread, "by barcode");
    assert_eq!(lines[1]["price"], 400_000, "the product's price when empty");
    assert_eq!(uuid(&lines[2]["product_id"]), s.sugar);
    assert_eq!(milli(&lines[2]["qty"]), 375);
    assert_eq!(lines[2]["amount"], 562_500);
    assert_eq!(inv["total"], 2_480_100 + 400_000 + 562_500);

    let two = invoice(&srv, "SITE-2").await;
    assert_eq!(row(&r, "SITE-2")["row"], 7, "the quoted line break counts");
    assert!(two["customer_id"].is_null());
    assert_eq!(
        two["note"], "customer phone: +998930000000",
        "an unknown buyer's phone is kept in the note"
    );
}

/// `,` between columns, quoted fields, dot decimals, columns in another order, `store_id`.
async fn csv_comma(srv: Srv) {
    let s = shop(&srv).await;
    let file = format!(
        "qty,price,sku,external_ref,store_id,note\n\
         1.5,\"4,000.00\",BREAD-1,WEB-7,{store},\"call first, please\"\n\
         1,\"12500.5\",MILK-1,WEB-7,{store},\"call first, please\"\n",
        store = s.store
    );
    let r = import(&srv, "", CSV, file.clone()).await;
    assert_eq!(summary(&r), (0, 0, 1), "{}", r.text);
    assert_eq!(
        errors(row(&r, "WEB-7")),
        vec![(Some(2), "price".to_string())],
        "a comma in a number of a `,` file is refused: {}",
        r.text
    );
    let file = file.replace("\"4,000.00\"", "4000.00");
    let r = import(&srv, "", CSV, file).await;
    assert_eq!(summary(&r), (1, 0, 0), "{}", r.text);
    let inv = invoice(&srv, "WEB-7").await;
    assert_eq!(inv["note"], "call first, please");
    let lines = inv["lines"].as_array().unwrap();
    assert_eq!(milli(&lines[0]["qty"]), 1_500);
    assert_eq!(lines[0]["price"], 400_000);
    assert_eq!(lines[1]["price"], 1_250_050);
}

/// Bad rows are reported with their lines and reasons; every good order is imported; a
/// second import of the same file creates nothing.
async fn bad_rows_and_reimport(srv: Srv) {
    let s = shop(&srv).await;
    srv.create_store("Yunusobod").await;
    let file = "external_ref;store;sku;barcode;qty;price\n\
                OK-1;Chilonzor;MILK-1;;1;\n\
                BAD-SKU;Chilonzor;NOPE;;1;\n\
                BAD-QTY;Chilonzor;MILK-1;;1,2345;\n\
                BAD-QTY;Chilonzor;BREAD-1;;0;\n\
                BAD-PRICE;Chilonzor;MILK-1;;1;12,345\n\
                ;Chilonzor;MILK-1;;1;\n\
                BAD-STORE;Samarqand;MILK-1;;1;\n\
                TWO-STORES;Chilonzor;MILK-1;;1;\n\
                TWO-STORES;Yunusobod;BREAD-1;;1;\n\
                BAD-EAN;Chilonzor;;4780000000038;1;\n\
                MISMATCH;Chilonzor;MILK-1;4780000000021;1;\n\
                OK-2;Chilonzor;BREAD-1;;2;3500\n\
                NO-PRODUCT;Chilonzor;;;1;\n";
    let r = import(&srv, "", CSV, file).await;
    assert_eq!(summary(&r), (2, 0, 9), "{}", r.text);
    assert_eq!(r.body["rows"].as_array().unwrap().len(), 11);
    // (external_ref, the order's first line, [(line, field)] of its errors)
    type Case<'a> = (&'a str, u64, Vec<(u64, &'a str)>);
    let cases: &[Case] = &[
        ("BAD-SKU", 3, vec![(3, "sku")]),
        ("BAD-QTY", 4, vec![(4, "qty"), (5, "qty")]),
        ("BAD-PRICE", 6, vec![(6, "price")]),
        ("BAD-STORE", 8, vec![(8, "store")]),
        ("TWO-STORES", 9, vec![(10, "store")]),
        ("BAD-EAN", 11, vec![(11, "barcode")]),
        ("MISMATCH", 12, vec![(12, "barcode")]),
        ("NO-PRODUCT", 14, vec![(14, "sku")]),
    ];
    for (ext, first, errs) in cases {
        let v = row(&r, ext);
        assert_eq!(v["status"], "failed", "{ext}: {v}");
        assert_eq!(v["row"], *first, "{ext}: {v}");
        assert!(v.get("invoice_id").is_none(), "{ext}: {v}");
        let want: Vec<(Option<u64>, String)> = errs
            .iter()
            .map(|(l, f)| (Some(*l), f.to_string()))
            .collect();
        assert_eq!(errors(v), want, "{ext}: {v}");
        for e in v["errors"].as_array().unwrap() {
            assert!(!e["message"].as_str().unwrap().is_empty(), "{v}");
        }
    }
    let missing = r.body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["external_ref"].is_null())
        .expect("the row without a reference");
    assert_eq!(missing["row"], 7);
    assert_eq!(errors(missing), vec![(Some(7), "external_ref".to_string())]);
    assert_eq!(row(&r, "OK-1")["status"], "created");
    assert_eq!(row(&r, "OK-2")["status"], "created");
    let before = invoices(&srv).await;
    assert_eq!(before.len(), 2);
    assert_eq!(invoice(&srv, "OK-2").await["total"], 700_000);
    let _ = s;

    let again = import(&srv, "", CSV, file).await;
    assert_eq!(summary(&again), (0, 2, 9), "{}", again.text);
    for ext in ["OK-1", "OK-2"] {
        assert_eq!(row(&again, ext)["status"], "duplicate");
        assert_eq!(row(&again, ext)["invoice_id"], row(&r, ext)["invoice_id"]);
    }
    let after = invoices(&srv).await;
    assert_eq!(after, before, "a second import changes nothing");
}

/// The JSON array: products by sku, barcode and id, prices in tiyin, the store by id or name;
/// a bad order fails alone.
async fn json_orders(srv: Srv) {
    let s = shop(&srv).await;
    let body = json!([
        {"external_ref": "uzum:1001", "store_id": s.store, "channel": "uzum",
         "lines": [{"sku": "MILK-1", "qty": 2, "price": 1_200_000},
                   {"barcode": BREAD_EAN, "qty": 1},
                   {"product_id": s.sugar, "qty": 0.25}]},
        {"external_ref": "uzum:1002", "store": "Chilonzor", "note": "gift wrap",
         "lines": [{"sku": "BREAD-1", "qty": 1}]},
        {"external_ref": "uzum:1003", "store_id": s.store, "lines": [{"sku": "MILK-1", "qty": 1.0001}]},
        {"external_ref": "uzum:1004", "store_id": s.store, "lines": [{"sku": "MILK-1", "qty": 1, "colour": "red"}]},
        {"external_ref": "uzum:1005", "store_id": Uuid::now_v7(), "lines": [{"product_id": Uuid::now_v7(), "qty": 1}]},
        42,
        {"external_ref": "uzum:1002", "store_id": s.store, "lines": [{"sku": "MILK-1", "qty": 1}]},
        {"store_id": s.store, "lines": [{"sku": "MILK-1", "qty": 1}]},
    ]);
    let r = import(&srv, "", JSON, body.to_string()).await;
    assert_eq!(summary(&r), (2, 0, 6), "{}", r.text);
    let inv = invoice(&srv, "uzum:1001").await;
    assert_eq!(
        row(&r, "uzum:1001")["row"],
        0,
        "JSON rows are array indexes"
    );
    let lines = inv["lines"].as_array().unwrap();
    assert_eq!(lines[0]["price"], 1_200_000);
    assert_eq!(uuid(&lines[1]["product_id"]), s.bread);
    assert_eq!(uuid(&lines[2]["product_id"]), s.sugar);
    assert_eq!(milli(&lines[2]["qty"]), 250);
    assert_eq!(inv["channel"], "uzum");
    assert_eq!(invoice(&srv, "uzum:1002").await["note"], "gift wrap");
    let f = |ext: &str| {
        errors(row(&r, ext))
            .into_iter()
            .map(|(_, f)| f)
            .collect::<Vec<_>>()
    };
    assert_eq!(f("uzum:1003"), ["lines[0].qty"]);
    assert_eq!(f("uzum:1004"), ["lines[0].colour"]);
    assert_eq!(f("uzum:1005"), ["store_id", "lines[0].product_id"]);
    let rows = r.body["rows"].as_array().unwrap();
    assert_eq!(rows[5]["row"], 5);
    assert_eq!(rows[5]["status"], "failed");
    assert_eq!(rows[6]["external_ref"], "uzum:1002");
    assert_eq!(
        rows[6]["status"], "failed",
        "the same order twice in one file"
    );
    assert_eq!(errors(&rows[6]), vec![(None, "external_ref".to_string())]);
    assert_eq!(errors(&rows[7]), vec![(None, "external_ref".to_string())]);

    let again = import(&srv, "", JSON, body.to_string()).await;
    assert_eq!(summary(&again), (0, 2, 6), "{}", again.text);
    assert_eq!(invoices(&srv).await.len(), 2);
}

/// Problems of the whole request are RFC 9457 answers naming the field or column.
async fn whole_request_problems(srv: Srv) {
    shop(&srv).await;
    import(
        &srv,
        "",
        CSV,
        "external_ref;store;sku;qtty\nA;Chilonzor;MILK-1;1\n",
    )
    .await
    .problem(422, Some("qtty"));
    import(
        &srv,
        "",
        CSV,
        "external_ref;store;sku\nA;Chilonzor;MILK-1\n",
    )
    .await
    .problem(422, Some("qty"));
    import(&srv, "", CSV, "external_ref;store;qty\n")
        .await
        .problem(422, Some("sku"));
    import(&srv, "", CSV, "").await.problem(422, Some("header"));
    import(&srv, "", CSV, "just one column\n")
        .await
        .problem(422, Some("header"));
    import(
        &srv,
        "",
        CSV,
        b"external_ref;store;sku;qty\nA;\xc7\xee;MILK-1;1\n".to_vec(),
    )
    .await
    .problem(422, Some("body"));
    import(&srv, "", JSON, r#"{"external_ref": "A"}"#)
        .await
        .problem(422, Some("body"));
    import(&srv, "", JSON, "[{").await.problem(400, None);
    import(&srv, "", Some("text/plain"), "external_ref;store;sku;qty\n")
        .await
        .problem(415, Some("Content-Type"));
    import(&srv, "?reserve=maybe", CSV, "external_ref;store;sku;qty\n")
        .await
        .problem(422, Some("reserve"));

    // Too many rows: 422; too many bytes: 413. Nothing is imported.
    let mut many = String::from("external_ref;store;sku;qty\n");
    for i in 0..10_001 {
        many.push_str(&format!("R{i};Chilonzor;MILK-1;1\n"));
    }
    import(&srv, "", CSV, many).await.problem(422, Some("body"));
    let mut big = String::from("external_ref;store;sku;qty;note\n");
    let note = "x".repeat(900);
    while big.len() <= 1024 * 1024 {
        big.push_str(&format!("R;Chilonzor;MILK-1;1;{note}\n"));
    }
    import(&srv, "", CSV, big).await.problem(413, None);
    assert!(invoices(&srv).await.is_empty());

    // The roles of the invoice routes.
    let (_, cashier) = srv.create_token("cashier", None).await;
    let r = srv
        .with_token(&cashier)
        .raw(
            Method::POST,
            "/api/v1/invoices/import",
            CSV,
            "external_ref;store;sku;qty\nA;Chilonzor;MILK-1;1\n",
            &[],
        )
        .await;
    r.problem(403, None);
    let (_, integration) = srv.create_token("integration", None).await;
    let r = srv
        .with_token(&integration)
        .raw(
            Method::POST,
            "/api/v1/invoices/import",
            CSV,
            "external_ref;store;sku;qty\nA;Chilonzor;MILK-1;1\n",
            &[],
        )
        .await;
    assert_eq!(summary(&r), (1, 0, 0), "{}", r.text);

    // The static route does not swallow invoice ids, and ids do not swallow it.
    let id = uuid(&invoice(&srv, "A").await["id"]);
    srv.get(&format!("/api/v1/invoices/{id}")).await.ok(200);
    let doc = srv.get("/api/v1/openapi.json").await;
    assert!(
        doc.ok(200)["paths"]["/api/v1/invoices/import"]["post"].is_object(),
        "documented"
    );
}

/// `?reserve=true` reserves the stock of created invoices, once: a re-import reserves nothing
/// more. With `forbid_negative_stock`, an order beyond the stock fails alone.
async fn reserve(srv: Srv) {
    let s = shop(&srv).await;
    srv.supply(s.store, s.milk, json!(10)).await;
    let file = "external_ref;store;sku;qty\n\
                R-1;Chilonzor;MILK-1;3\n\
                R-2;Chilonzor;MILK-1;2,5\n";
    let r = import(&srv, "?reserve=true", CSV, file).await;
    assert_eq!(summary(&r), (2, 0, 0), "{}", r.text);
    assert_eq!(invoice(&srv, "R-1").await["status"], "reserved");
    assert_eq!(srv.level(s.store, s.milk).await, (10_000, 5_500, 4_500));
    let r = import(&srv, "?reserve=true", CSV, file).await;
    assert_eq!(summary(&r), (0, 2, 0), "{}", r.text);
    assert_eq!(srv.level(s.store, s.milk).await, (10_000, 5_500, 4_500));

    srv.patch("/api/v1/settings", json!({"forbid_negative_stock": true}))
        .await
        .ok(200);
    let file = "external_ref;store;sku;qty\n\
                R-3;Chilonzor;MILK-1;4\n\
                R-4;Chilonzor;MILK-1;1\n";
    let r = import(&srv, "?reserve=true", CSV, file).await;
    assert_eq!(summary(&r), (1, 0, 1), "{}", r.text);
    assert_eq!(row(&r, "R-3")["status"], "created");
    assert_eq!(errors(row(&r, "R-4")), vec![(Some(3), "qty".to_string())]);
    assert_eq!(srv.level(s.store, s.milk).await, (10_000, 9_500, 500));
    let _ = (s.bread, s.sugar);
}

/// Another tenant's stores and products are unknown here, and the same reference is another
/// tenant's own order.
async fn tenant_isolation(srv: Srv) {
    let mine = shop(&srv).await;
    let (_, token) = srv.new_tenant("Other shop").await;
    let other = srv.with_token(&token);
    let theirs = other.create_store("Sergeli").await;
    let r = other
        .post(
            "/api/v1/products",
            json!({"sku": "THEIRS", "name": "Theirs", "price": 100, "barcodes": ["4780000000038"]}),
        )
        .await;
    let their_product = r.id();
    let file = format!(
        "external_ref;store;sku;barcode;product_id;qty\n\
         X-1;Sergeli;MILK-1;;;1\n\
         X-2;{theirs};MILK-1;;;1\n\
         X-3;Chilonzor;THEIRS;;;1\n\
         X-4;Chilonzor;;4780000000038;;1\n\
         X-5;Chilonzor;;;{their_product};1\n\
         X-6;Chilonzor;MILK-1;;;1\n"
    );
    let r = import(&srv, "", CSV, file.clone()).await;
    assert_eq!(summary(&r), (1, 0, 5), "{}", r.text);
    for (ext, field) in [
        ("X-1", "store"),
        ("X-2", "store"),
        ("X-3", "sku"),
        ("X-4", "barcode"),
        ("X-5", "product_id"),
    ] {
        assert_eq!(
            errors(row(&r, ext))
                .into_iter()
                .map(|e| e.1)
                .collect::<Vec<_>>(),
            [field],
            "{ext}: {}",
            r.text
        );
    }
    // The other tenant imports its own X-6: not a duplicate of ours.
    let r = import(
        &other,
        "",
        CSV,
        "external_ref;store;sku;qty\nX-6;Sergeli;THEIRS;1\n",
    )
    .await;
    assert_eq!(summary(&r), (1, 0, 0), "{}", r.text);
    assert_eq!(invoices(&srv).await.len(), 1);
    assert_eq!(invoices(&other).await.len(), 1);
    let _ = mine;
}

/// A retry with the same Idempotency-Key answers the first report again.
async fn idempotency_key(srv: Srv) {
    shop(&srv).await;
    let file = "external_ref;store;sku;qty\nK-1;Chilonzor;MILK-1;1\n";
    let send = || {
        srv.raw(
            Method::POST,
            "/api/v1/invoices/import",
            CSV,
            file,
            &[("idempotency-key", "import-1")],
        )
    };
    let first = send().await;
    assert_eq!(summary(&first), (1, 0, 0), "{}", first.text);
    let second = send().await;
    assert_eq!(second.body, first.body, "the stored answer");
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    assert_eq!(invoices(&srv).await.len(), 1);
}

backend_tests!(
    csv_semicolon_excel,
    csv_comma,
    bad_rows_and_reimport,
    json_orders,
    whole_request_problems,
    reserve,
    tenant_isolation,
    idempotency_key,
);

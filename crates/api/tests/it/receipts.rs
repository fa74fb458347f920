//! Receipts: the math, idempotency (by id, by Idempotency-Key, under concurrent retries),
//! refunds bounded by the sale, settings that gate a sale, and batches.

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::backend_tests;
use crate::common::{Srv, milli, sale, uuid};

/// VAT included in `amount` at 12%, rounded half away from zero, computed independently.
fn vat12(amount: i64) -> i64 {
    let n = amount as i128 * 12;
    let (q, r) = (n / 112, n % 112);
    (if 2 * r.abs() >= 112 {
        q + n.signum()
    } else {
        q
    }) as i64
}

async fn receipt_math(srv: Srv) {
    let (store, term) = srv.shop().await;
    let bread = srv.create_product("BREAD", 11_200_00).await;
    let meat = srv.create_product("MEAT-KG", 42_000_00).await;
    let gum = srv.create_product("GUM", 42).await;
    let r = srv
        .post(
            "/api/v1/products",
            json!({"sku": "BOOK", "name": "Book", "price": 50_000_00, "vat_percent": 0}),
        )
        .await;
    let book = r.ok(201)["id"].as_str().unwrap().to_string();

    // bread 2 x 11 200.00 - 2 240.00; meat 0.375 kg; gum 42 tiyin (VAT 4.5 -> 5); book 0%.
    let lines = json!([
        {"product_id": bread, "qty": 2, "discount": 2_240_00},
        {"product_id": meat, "qty": 0.375},
        {"product_id": gum, "qty": 1},
        {"product_id": book, "qty": 1},
    ]);
    let amounts = [20_160_00i64, 1_575_000, 42, 50_000_00];
    let total: i64 = amounts.iter().sum();
    let id = Uuid::now_v7();
    let body = json!({
        "id": id, "store_id": store, "terminal_id": term, "lines": lines,
        "payments": [{"method": "cash", "amount": 50_000_00}, {"method": "card", "amount": total - 50_000_00}],
        "note": "first sale",
    });
    // Payments that do not add up are refused, naming `payments`.
    let mut wrong = body.clone();
    wrong["payments"] = json!([{"method": "cash", "amount": total - 1}]);
    let r = srv.post("/api/v1/receipts", wrong).await;
    r.problem(422, Some("payments"));
    assert!(r.text.contains(&total.to_string()), "{}", r.text);

    let r = srv.post("/api/v1/receipts", body.clone()).await;
    let rc = r.ok(201).clone();
    assert_eq!(
        r.header("location"),
        Some(format!("/api/v1/receipts/{id}").as_str())
    );
    assert_eq!(rc["type"], "sale");
    assert_eq!(rc["number"], 1);
    let ls = rc["lines"].as_array().unwrap();
    assert_eq!(ls.len(), 4);
    for (i, l) in ls.iter().enumerate() {
        assert_eq!(l["line_no"], json!(i + 1));
        assert_eq!(l["amount"], json!(amounts[i]), "line {i}");
        let want_vat = if i == 3 { 0 } else { vat12(amounts[i]) };
        assert_eq!(l["vat_amount"], json!(want_vat), "line {i} VAT");
    }
    assert_eq!(ls[0]["vat_amount"], 2_160_00);
    assert_eq!(ls[1]["vat_amount"], 168_750);
    assert_eq!(ls[2]["vat_amount"], 5, "4.5 rounds away from zero");
    assert_eq!(ls[1]["qty"], json!(0.375));
    assert_eq!(ls[0]["price"], 11_200_00, "the product's price by default");
    assert_eq!(ls[0]["sku"], "BREAD");
    assert_eq!(rc["total"], json!(total));
    assert_eq!(
        rc["vat_total"],
        json!(
            ls.iter()
                .map(|l| l["vat_amount"].as_i64().unwrap())
                .sum::<i64>()
        )
    );
    assert_eq!(rc["discount_total"], 2_240_00);
    assert_eq!(rc["payments"].as_array().unwrap().len(), 2);
    assert_eq!(rc["note"], "first sale");
    assert!(rc["shift_id"].is_null());

    // Stock went down, by exact quantities.
    assert_eq!(srv.level(store, meat).await.0, -375);
    assert_eq!(srv.level(store, bread).await.0, -2_000);

    // Stored as answered.
    let g = srv.get(&format!("/api/v1/receipts/{id}")).await;
    assert_eq!(g.ok(200), &rc);
    // Numbers count per store.
    let r = srv
        .post(
            "/api/v1/receipts",
            sale(store, term, &[(gum, json!(1), 42)]),
        )
        .await;
    assert_eq!(r.ok(201)["number"], 2);
    let (store2, term2) = srv.shop().await;
    let r = srv
        .post(
            "/api/v1/receipts",
            sale(store2, term2, &[(gum, json!(1), 42)]),
        )
        .await;
    assert_eq!(r.ok(201)["number"], 1);
    // Lists filter by store and terminal.
    let r = srv.get(&format!("/api/v1/receipts?store_id={store}")).await;
    assert_eq!(r.ok(200)["items"].as_array().unwrap().len(), 2);
    let r = srv
        .get(&format!("/api/v1/receipts?terminal_id={term2}"))
        .await;
    assert_eq!(r.ok(200)["items"].as_array().unwrap().len(), 1);
    let r = srv.get("/api/v1/receipts?limit=1").await;
    assert!(r.ok(200)["next_cursor"].is_string());
    srv.get(&format!("/api/v1/receipts/{}", Uuid::now_v7()))
        .await
        .problem(404, None);
}

async fn receipt_bad_inputs(srv: Srv) {
    let (store, term) = srv.shop().await;
    let (other_store, other_term) = srv.shop().await;
    let p = srv.create_product("P", 1000).await;
    let good = sale(store, term, &[(p, json!(1), 1000)]);
    let with = |path: &[&str], v: Value| {
        let mut b = good.clone();
        b["id"] = json!(Uuid::now_v7());
        let mut cur = &mut b;
        for (i, k) in path.iter().enumerate() {
            if i + 1 == path.len() {
                if v.is_null() {
                    cur.as_object_mut().unwrap().remove(*k);
                } else {
                    cur[*k] = v.clone();
                }
                break;
            }
            cur = if let Ok(n) = k.parse::<usize>() {
                &mut cur[n]
            } else {
                &mut cur[*k]
            };
        }
        b
    };
    let cases: Vec<(Value, &str)> = vec![
        (with(&["lines", "0", "qty"], json!(1.0001)), "lines[0].qty"),
        (with(&["lines", "0", "qty"], json!(0)), "lines[0].qty"),
        (with(&["lines", "0", "qty"], json!(-1)), "lines[0].qty"),
        (with(&["lines", "0", "qty"], json!(1e300)), "lines[0].qty"),
        (with(&["lines", "0", "qty"], json!("1")), "lines[0].qty"),
        (with(&["lines", "0", "price"], json!(-1)), "lines[0].price"),
        (
            with(&["lines", "0", "discount"], json!(1001)),
            "lines[0].discount",
        ),
        (
            with(&["lines", "0", "discount"], json!(-1)),
            "lines[0].discount",
        ),
        (
            with(&["lines", "0", "product_id"], json!(Uuid::now_v7())),
            "lines[0].product_id",
        ),
        (
            with(&["lines", "0", "marking"], json!("x")),
            "lines[0].marking",
        ),
        (with(&["lines"], json!([])), "lines"),
        (with(&["payments"], json!([])), "payments"),
        (
            with(&["payments", "0", "amount"], json!(-1000)),
            "payments[0].amount",
        ),
        (
            with(&["payments", "0", "method"], json!("bitcoin")),
            "payments[0].method",
        ),
        (with(&["terminal_id"], json!(other_term)), "terminal_id"),
        (with(&["terminal_id"], json!(Uuid::now_v7())), "terminal_id"),
        (with(&["store_id"], json!(Uuid::now_v7())), "store_id"),
        (with(&["customer_id"], json!(Uuid::now_v7())), "customer_id"),
        (with(&["refund_of"], json!(Uuid::now_v7())), "refund_of"),
        (with(&["type"], json!("refund")), "refund_of"),
        (with(&["type"], json!("exchange")), "type"),
        (with(&["fiscal"], json!("signed")), "fiscal"),
        (with(&["id"], Value::Null), "id"),
        (with(&["id"], json!("nope")), "id"),
        (with(&["sold_at"], json!("yesterday")), "sold_at"),
    ];
    for (body, field) in cases {
        let r = srv.post("/api/v1/receipts", body.clone()).await;
        assert_eq!(r.status, 422, "{body} -> {}", r.text);
        r.problem(422, Some(field));
    }
    // Nothing was stored or moved.
    let r = srv.get("/api/v1/receipts").await;
    assert_eq!(r.ok(200)["items"].as_array().unwrap().len(), 0);
    assert_eq!(srv.level(store, p).await, (0, 0, 0));
    let _ = other_store;
}

async fn receipt_idempotent_by_id(srv: Srv) {
    let (store, term) = srv.shop().await;
    let p = srv.create_product("P", 1000).await;
    let body = sale(store, term, &[(p, json!(2), 1000)]);
    let first = srv.post("/api/v1/receipts", body.clone()).await;
    first.ok(201);
    let second = srv.post("/api/v1/receipts", body.clone()).await;
    second.ok(200);
    assert_eq!(
        first.text, second.text,
        "a retry answers with identical JSON"
    );
    // Same content, other key order and explicit defaults: still the same request.
    let reordered: Value = serde_json::from_str(&format!(
        r#"{{"payments": {}, "lines": {}, "terminal_id": "{term}", "type": "sale", "store_id": "{store}", "id": {}}}"#,
        body["payments"], body["lines"], body["id"]
    ))
    .unwrap();
    let third = srv.post("/api/v1/receipts", reordered).await;
    third.ok(200);
    assert_eq!(first.text, third.text);
    // Same id, different content: 409 naming `id`, nothing changes.
    let mut other = body.clone();
    other["lines"][0]["qty"] = json!(3);
    other["payments"][0]["amount"] = json!(3000);
    srv.post("/api/v1/receipts", other)
        .await
        .problem(409, Some("id"));
    let r = srv.get("/api/v1/receipts").await;
    assert_eq!(r.ok(200)["items"].as_array().unwrap().len(), 1);
    assert_eq!(srv.level(store, p).await.0, -2_000, "stock moved once");
    // Even after the price changed, a retry returns what was stored.
    srv.patch(&format!("/api/v1/products/{p}"), json!({"price": 5000}))
        .await
        .ok(200);
    let r = srv.post("/api/v1/receipts", body.clone()).await;
    assert_eq!(r.ok(200)["total"], 2000);
}

async fn receipt_concurrent_retries(srv: Srv) {
    let (store, term) = srv.shop().await;
    let p = srv.create_product("P", 1000).await;
    let body = sale(store, term, &[(p, json!(1.5), 1000)]);
    let futs = (0..20).map(|_| {
        let s = srv.clone();
        let b = body.clone();
        async move { s.post("/api/v1/receipts", b).await }
    });
    let rs = futures::future::join_all(futs).await;
    let statuses: Vec<u16> = rs.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        19,
        "{statuses:?}"
    );
    let canonical = &rs.iter().find(|r| r.status == 201).unwrap().body;
    for r in &rs {
        assert_eq!(&r.body, canonical);
    }
    let r = srv.get("/api/v1/receipts").await;
    assert_eq!(r.ok(200)["items"].as_array().unwrap().len(), 1);
    assert_eq!(srv.level(store, p).await.0, -1_500);
    let r = srv
        .get(&format!("/api/v1/stock/movements?product_id={p}"))
        .await;
    assert_eq!(r.ok(200)["items"].as_array().unwrap().len(), 1);

    // Many different receipts at once all land, with distinct numbers.
    let futs = (0..12).map(|_| {
        let s = srv.clone();
        let b = sale(store, term, &[(p, json!(1), 1000)]);
        async move { s.post("/api/v1/receipts", b).await }
    });
    let rs = futures::future::join_all(futs).await;
    let mut numbers: Vec<i64> = rs
        .iter()
        .map(|r| r.ok(201)["number"].as_i64().unwrap())
        .collect();
    numbers.sort();
    assert_eq!(numbers, (2..14).collect::<Vec<_>>());
    assert_eq!(srv.level(store, p).await.0, -13_500);
}

async fn idempotency_key_header(srv: Srv) {
    let key = [("idempotency-key", "k-123")];
    let body = json!({"name": "Keyed"}).to_string();
    let ct = Some("application/json");
    let a = srv
        .raw(Method::POST, "/api/v1/stores", ct, body.clone(), &key)
        .await;
    a.ok(201);
    assert!(a.header("idempotent-replayed").is_none());
    let b = srv
        .raw(Method::POST, "/api/v1/stores", ct, body.clone(), &key)
        .await;
    b.ok(201);
    assert_eq!(b.header("idempotent-replayed"), Some("true"));
    assert_eq!(a.body, b.body);
    let r = srv.get("/api/v1/stores").await;
    let n = r.ok(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == "Keyed")
        .count();
    assert_eq!(n, 1, "the replay did not create a second store");
    // Same key, other body: 422.
    srv.raw(
        Method::POST,
        "/api/v1/stores",
        ct,
        json!({"name": "Other"}).to_string(),
        &key,
    )
    .await
    .problem(422, None);
    // Same key, same body, other route: also a different request.
    srv.raw(Method::POST, "/api/v1/customers", ct, body.clone(), &key)
        .await
        .problem(422, None);
    // …and so is the same route with another query (`?reserve=true` changes what a POST does).
    srv.raw(Method::POST, "/api/v1/stores?x=1", ct, body.clone(), &key)
        .await
        .problem(422, None);
    // Keys belong to a tenant: another tenant may use the same key.
    let (_, tok_b) = srv.new_tenant("B").await;
    let r = srv
        .with_token(&tok_b)
        .raw(Method::POST, "/api/v1/stores", ct, body.clone(), &key)
        .await;
    r.ok(201);
    assert!(r.header("idempotent-replayed").is_none());
    assert_ne!(r.body["id"], a.body["id"]);
    // A refused request's answer is remembered too.
    let bad = [("idempotency-key", "k-bad")];
    let r1 = srv
        .raw(Method::POST, "/api/v1/stores", ct, "{}", &bad)
        .await;
    r1.problem(422, Some("name"));
    let r2 = srv
        .raw(Method::POST, "/api/v1/stores", ct, "{}", &bad)
        .await;
    r2.problem(422, Some("name"));
    assert_eq!(r2.header("idempotent-replayed"), Some("true"));
    // On receipts too: the replay is the stored 201.
    let (store, term) = srv.shop().await;
    let p = srv.create_product("P", 700).await;
    let rb = sale(store, term, &[(p, json!(1), 700)]).to_string();
    let k = [("idempotency-key", "receipt-key")];
    let x = srv
        .raw(Method::POST, "/api/v1/receipts", ct, rb.clone(), &k)
        .await;
    x.ok(201);
    let y = srv
        .raw(Method::POST, "/api/v1/receipts", ct, rb.clone(), &k)
        .await;
    y.ok(201);
    assert_eq!(y.header("idempotent-replayed"), Some("true"));
    assert_eq!(x.text, y.text);
    assert_eq!(srv.level(store, p).await.0, -1_000);
    // An empty key is refused.
    srv.raw(
        Method::POST,
        "/api/v1/stores",
        ct,
        body,
        &[("idempotency-key", " ")],
    )
    .await
    .problem(422, Some("Idempotency-Key"));
}

/// A refund of `lines` (product, qty) against `sale_id`, paid back in cash for `amount`.
fn refund(sale: &Value, lines: &[(Uuid, Value)], amount: i64) -> Value {
    json!({
        "id": Uuid::now_v7(),
        "type": "refund",
        "refund_of": sale["id"],
        "store_id": sale["store_id"],
        "terminal_id": sale["terminal_id"],
        "lines": lines.iter().map(|(p, q)| json!({"product_id": p, "qty": q})).collect::<Vec<_>>(),
        "payments": [{"method": "cash", "amount": amount}],
    })
}

async fn refunds_bounded_by_sale(srv: Srv) {
    let (store, term) = srv.shop().await;
    let p = srv.create_product("P", 1000).await;
    let q = srv.create_product("Q", 2500).await;
    let other = srv.create_product("R", 100).await;
    srv.supply(store, p, json!(10)).await;
    srv.supply(store, q, json!(10)).await;
    let s = json!({
        "id": Uuid::now_v7(), "store_id": store, "terminal_id": term,
        "lines": [
            {"product_id": p, "qty": 3, "discount": 300},
            {"product_id": q, "qty": 0.5},
        ],
        "payments": [{"method": "cash", "amount": 2700 + 1250}],
    });
    let r = srv.post("/api/v1/receipts", s.clone()).await;
    let sale_r = r.ok(201).clone();
    assert_eq!(srv.level(store, p).await.0, 7_000);

    // 1 of 3: price from the sale, discount pro rata (300 / 3).
    let r = srv
        .post("/api/v1/receipts", refund(&sale_r, &[(p, json!(1))], 900))
        .await;
    let r1 = r.ok(201).clone();
    assert_eq!(r1["type"], "refund");
    assert_eq!(r1["refund_of"], sale_r["id"]);
    assert_eq!(r1["total"], 900);
    assert_eq!(r1["lines"][0]["discount"], 100);
    assert_eq!(r1["lines"][0]["vat_amount"], json!(vat12(900)));
    assert_eq!(srv.level(store, p).await.0, 8_000, "stock comes back");
    // The payments of a refund must match too.
    srv.post("/api/v1/receipts", refund(&sale_r, &[(p, json!(1))], 1000))
        .await
        .problem(422, Some("payments"));
    // 1.5 more (partial refunds add up: 2.5 of 3).
    srv.post(
        "/api/v1/receipts",
        refund(&sale_r, &[(p, json!(1.5))], 1350),
    )
    .await
    .ok(201);
    // 0.6 more would be 3.1 of 3.
    let r = srv
        .post("/api/v1/receipts", refund(&sale_r, &[(p, json!(0.6))], 540))
        .await;
    r.problem(422, Some("lines[0].qty"));
    // Two lines that together exceed what is left: the second is named.
    let r = srv
        .post(
            "/api/v1/receipts",
            refund(
                &sale_r,
                &[(q, json!(0.25)), (p, json!(0.5)), (p, json!(0.25))],
                625 + 450 + 225,
            ),
        )
        .await;
    r.problem(422, Some("lines[2].qty"));
    // A product the sale did not have.
    srv.post(
        "/api/v1/receipts",
        refund(&sale_r, &[(other, json!(1))], 100),
    )
    .await
    .problem(422, Some("lines[0].product_id"));
    // The rest: exactly what is left of both.
    let r = srv
        .post(
            "/api/v1/receipts",
            refund(&sale_r, &[(p, json!(0.5)), (q, json!(0.5))], 450 + 1250),
        )
        .await;
    r.ok(201);
    assert_eq!(srv.level(store, p).await.0, 10_000);
    assert_eq!(srv.level(store, q).await.0, 10_000);
    srv.post("/api/v1/receipts", refund(&sale_r, &[(q, json!(0.001))], 3))
        .await
        .problem(422, Some("lines[0].qty"));
    // A refund of a refund, or of a sale in another store, or without a sale.
    srv.post("/api/v1/receipts", refund(&r1, &[(p, json!(1))], 900))
        .await
        .problem(422, Some("refund_of"));
    let (store2, term2) = srv.shop().await;
    let mut elsewhere = refund(&sale_r, &[(p, json!(0.001))], 1);
    elsewhere["store_id"] = json!(store2);
    elsewhere["terminal_id"] = json!(term2);
    srv.post("/api/v1/receipts", elsewhere)
        .await
        .problem(422, Some("store_id"));
    let mut orphan = refund(&sale_r, &[(p, json!(1))], 900);
    orphan.as_object_mut().unwrap().remove("refund_of");
    srv.post("/api/v1/receipts", orphan)
        .await
        .problem(422, Some("refund_of"));
    // The movements of this product add up to its level.
    let r = srv
        .get(&format!(
            "/api/v1/stock/movements?store_id={store}&product_id={p}"
        ))
        .await;
    let sum: i64 = r.ok(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| milli(&m["delta"]))
        .sum();
    assert_eq!(sum, 10_000);
}

async fn settings_gate_sales(srv: Srv) {
    let (store, term) = srv.shop().await;
    let p = srv.create_product("P", 1000).await;
    let r = srv.get("/api/v1/settings").await;
    let s = r.ok(200);
    assert_eq!(s["require_open_shift"], false);
    assert_eq!(s["forbid_negative_stock"], false);
    assert_eq!(s["default_vat_percent"], 12);
    let r = srv
        .patch("/api/v1/settings", json!({"require_open_shift": true}))
        .await;
    assert_eq!(r.ok(200)["require_open_shift"], true);
    assert_eq!(r.body["default_vat_percent"], 12, "other settings kept");
    let r = srv
        .post(
            "/api/v1/receipts",
            sale(store, term, &[(p, json!(1), 1000)]),
        )
        .await;
    r.problem(422, Some("terminal_id"));
    let shift = srv
        .post_empty(&format!("/api/v1/terminals/{term}/shifts/open"))
        .await;
    let shift_id = shift.ok(201)["id"].clone();
    let r = srv
        .post(
            "/api/v1/receipts",
            sale(store, term, &[(p, json!(1), 1000)]),
        )
        .await;
    assert_eq!(r.ok(201)["shift_id"], shift_id);
    srv.post_empty(&format!("/api/v1/terminals/{term}/shifts/close"))
        .await
        .ok(200);
    srv.post(
        "/api/v1/receipts",
        sale(store, term, &[(p, json!(1), 1000)]),
    )
    .await
    .problem(422, Some("terminal_id"));

    // The default VAT applies to new products.
    srv.patch("/api/v1/settings", json!({"default_vat_percent": 0}))
        .await
        .ok(200);
    let r = srv
        .post(
            "/api/v1/products",
            json!({"sku": "Z", "name": "Z", "price": 1}),
        )
        .await;
    assert_eq!(r.ok(201)["vat_percent"], 0);

    // Bad patches name the setting.
    let r = srv
        .patch("/api/v1/settings", json!({"colour": "red"}))
        .await;
    r.problem(422, Some("colour"));
    srv.patch("/api/v1/settings", json!({"require_open_shift": "yes"}))
        .await
        .problem(422, Some("require_open_shift"));
    srv.patch("/api/v1/settings", json!({"default_vat_percent": 51}))
        .await
        .problem(422, Some("default_vat_percent"));
    srv.patch("/api/v1/settings", json!({"default_vat_percent": -1}))
        .await
        .problem(422, Some("default_vat_percent"));
    srv.patch(
        "/api/v1/settings",
        json!({"marking_offline_policy": "maybe"}),
    )
    .await
    .problem(422, Some("marking_offline_policy"));
    srv.patch("/api/v1/settings", json!([1, 2]))
        .await
        .problem(422, None);
    let r = srv
        .patch(
            "/api/v1/settings",
            json!({"marking_offline_policy": "refuse"}),
        )
        .await;
    assert_eq!(r.ok(200)["marking_offline_policy"], "refuse");
    let r = srv.get("/api/v1/settings").await;
    assert_eq!(r.ok(200)["require_open_shift"], true);
    assert_eq!(r.body["default_vat_percent"], 0);
}

async fn receipt_batch(srv: Srv) {
    let (store, term) = srv.shop().await;
    let p = srv.create_product("P", 1000).await;
    let good1 = sale(store, term, &[(p, json!(1), 1000)]);
    let good2 = sale(store, term, &[(p, json!(2), 1000)]);
    let mut unknown_product = sale(store, term, &[(p, json!(1), 1000)]);
    unknown_product["lines"][0]["product_id"] = json!(Uuid::now_v7());
    let mut bad_qty = sale(store, term, &[(p, json!(1), 1000)]);
    bad_qty["lines"][0]["qty"] = json!(1.2345);
    let r = srv
        .post(
            "/api/v1/receipts/batch",
            json!({"receipts": [good1, unknown_product, good2, bad_qty, {"store_id": 1}]}),
        )
        .await;
    let results = r.ok(200)["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 5);
    let statuses: Vec<i64> = results
        .iter()
        .map(|x| x["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [201, 422, 201, 422, 422]);
    assert_eq!(results[0]["id"], good1["id"]);
    assert_eq!(results[0]["receipt"]["total"], 1000);
    assert_eq!(results[2]["receipt"]["total"], 2000);
    assert_eq!(results[1]["id"], unknown_product["id"]);
    let fields = |i: usize| -> Vec<String> {
        results[i]["problem"]["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        fields(1).contains(&"receipts[1].lines[0].product_id".to_string()),
        "{:?}",
        fields(1)
    );
    assert!(
        fields(3).contains(&"receipts[3].lines[0].qty".to_string()),
        "{:?}",
        fields(3)
    );
    assert!(results[4]["id"].is_null());
    assert!(results[1].get("receipt").is_none());
    // The good ones are stored, the bad ones not.
    srv.get(&format!("/api/v1/receipts/{}", uuid(&good1["id"])))
        .await
        .ok(200);
    srv.get(&format!("/api/v1/receipts/{}", uuid(&good2["id"])))
        .await
        .ok(200);
    srv.get(&format!(
        "/api/v1/receipts/{}",
        uuid(&unknown_product["id"])
    ))
    .await
    .problem(404, None);
    assert_eq!(srv.level(store, p).await.0, -3_000);
    // Resending: the stored ones answer 200, nothing moves twice.
    let r = srv
        .post(
            "/api/v1/receipts/batch",
            json!({"receipts": [good1, good2]}),
        )
        .await;
    let statuses: Vec<i64> = r.ok(200)["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [200, 200]);
    assert_eq!(srv.level(store, p).await.0, -3_000);
    srv.post("/api/v1/receipts/batch", json!({"receipts": []}))
        .await
        .problem(422, Some("receipts"));
    srv.post("/api/v1/receipts/batch", json!({"receipt": []}))
        .await
        .problem(422, None);
}

backend_tests!(
    receipt_math,
    receipt_bad_inputs,
    receipt_idempotent_by_id,
    receipt_concurrent_retries,
    idempotency_key_header,
    refunds_bounded_by_sale,
    settings_gate_sales,
    receipt_batch,
);

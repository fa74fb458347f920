//! Stock documents (supplies, write-offs, counts, transfers), levels and movements.

use serde_json::json;
use uuid::Uuid;

use crate::backend_tests;
use crate::common::{Srv, milli, uuid};

async fn stock_documents(srv: Srv) {
    let (a, _) = srv.shop().await;
    let b = srv.create_store("Second").await;
    let p = srv.create_product("RICE", 15_000_00).await;
    let q = srv.create_product("SUGAR", 9_000_00).await;

    let r = srv
        .post(
            "/api/v1/stock/supplies",
            json!({"store_id": a, "note": "from supplier", "lines": [
                {"product_id": p, "qty": 10, "cost": 12_000_00},
                {"product_id": q, "qty": 2.5},
            ]}),
        )
        .await;
    let doc = r.ok(201).clone();
    assert_eq!(doc["kind"], "supply");
    let supply_id = uuid(&doc["id"]);
    let levels = doc["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 2);
    assert_eq!(srv.level(a, p).await, (10_000, 0, 10_000));
    assert_eq!(srv.level(a, q).await, (2_500, 0, 2_500));

    let r = srv
        .post(
            "/api/v1/stock/writeoffs",
            json!({"store_id": a, "lines": [{"product_id": p, "qty": 1.25}]}),
        )
        .await;
    assert_eq!(r.ok(201)["kind"], "writeoff");
    assert_eq!(srv.level(a, p).await.0, 8_750);

    // A count sets on hand to what was counted (here: down, then up, then zero).
    srv.post(
        "/api/v1/stock/counts",
        json!({"store_id": a, "lines": [{"product_id": p, "qty": 7}]}),
    )
    .await
    .ok(201);
    assert_eq!(srv.level(a, p).await.0, 7_000);
    srv.post(
        "/api/v1/stock/counts",
        json!({"store_id": a, "lines": [{"product_id": q, "qty": 4}]}),
    )
    .await
    .ok(201);
    assert_eq!(srv.level(a, q).await.0, 4_000);

    let r = srv
        .post(
            "/api/v1/stock/transfers",
            json!({"store_id": a, "to_store_id": b, "lines": [{"product_id": p, "qty": 3}]}),
        )
        .await;
    let t = r.ok(201).clone();
    assert_eq!(t["kind"], "transfer");
    assert_eq!(t["to_store_id"], json!(b));
    assert_eq!(t["levels"].as_array().unwrap().len(), 2);
    assert_eq!(srv.level(a, p).await.0, 4_000);
    assert_eq!(srv.level(b, p).await.0, 3_000);

    srv.post(
        "/api/v1/stock/counts",
        json!({"store_id": b, "lines": [{"product_id": p, "qty": 0}]}),
    )
    .await
    .ok(201);
    assert_eq!(srv.level(b, p).await.0, 0);

    // Movements: filterable, and they add up to the levels.
    let r = srv
        .get(&format!(
            "/api/v1/stock/movements?store_id={a}&product_id={p}"
        ))
        .await;
    let ms = r.ok(200)["items"].as_array().unwrap().clone();
    let kinds: Vec<&str> = ms.iter().map(|m| m["doc_type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["supply", "writeoff", "count", "transfer"]);
    let deltas: Vec<i64> = ms.iter().map(|m| milli(&m["delta"])).collect();
    assert_eq!(deltas, [10_000, -1_250, -1_750, -3_000]);
    assert_eq!(ms[0]["doc_id"], json!(supply_id));
    assert_eq!(deltas.iter().sum::<i64>(), 4_000);
    let r = srv.get(&format!("/api/v1/stock?store_id={b}")).await;
    assert_eq!(r.ok(200)["items"].as_array().unwrap().len(), 1);
    let r = srv.get(&format!("/api/v1/stock?product_id={p}")).await;
    assert_eq!(r.ok(200)["items"].as_array().unwrap().len(), 2);
}

async fn stock_bad_inputs(srv: Srv) {
    let (a, _) = srv.shop().await;
    let b = srv.create_store("Second").await;
    let p = srv.create_product("RICE", 100).await;
    let ghost = Uuid::now_v7();
    let line = |qty: serde_json::Value| json!([{"product_id": p, "qty": qty}]);
    for path in ["supplies", "writeoffs", "transfers"] {
        let url = format!("/api/v1/stock/{path}");
        let to = if path == "transfers" {
            json!(b)
        } else {
            json!(null)
        };
        srv.post(
            &url,
            json!({"store_id": a, "to_store_id": to, "lines": line(json!(0))}),
        )
        .await
        .problem(422, Some("lines[0].qty"));
        srv.post(
            &url,
            json!({"store_id": a, "to_store_id": to, "lines": line(json!(-1))}),
        )
        .await
        .problem(422, Some("lines[0].qty"));
    }
    let url = "/api/v1/stock/supplies";
    srv.post(url, json!({"store_id": a, "lines": line(json!(1.0005))}))
        .await
        .problem(422, Some("lines[0].qty"));
    srv.post(url, json!({"store_id": a, "lines": line(json!("1"))}))
        .await
        .problem(422, Some("lines[0].qty"));
    srv.post(url, json!({"store_id": a, "lines": line(json!(1e300))}))
        .await
        .problem(422, Some("lines[0].qty"));
    srv.post(url, json!({"store_id": a, "lines": []}))
        .await
        .problem(422, Some("lines"));
    srv.post(url, json!({"store_id": ghost, "lines": line(json!(1))}))
        .await
        .problem(422, Some("store_id"));
    srv.post(
        url,
        json!({"store_id": a, "lines": [{"product_id": ghost, "qty": 1}]}),
    )
    .await
    .problem(422, Some("lines[0].product_id"));
    srv.post(
        url,
        json!({"store_id": a, "lines": [{"product_id": p, "qty": 1, "cost": -5}]}),
    )
    .await
    .problem(422, Some("lines[0].cost"));
    srv.post(
        url,
        json!({"store_id": a, "to_store_id": b, "lines": line(json!(1))}),
    )
    .await
    .problem(422, Some("to_store_id"));
    srv.post(
        "/api/v1/stock/counts",
        json!({"store_id": a, "lines": line(json!(-1))}),
    )
    .await
    .problem(422, Some("lines[0].qty"));
    let t = "/api/v1/stock/transfers";
    srv.post(t, json!({"store_id": a, "lines": line(json!(1))}))
        .await
        .problem(422, Some("to_store_id"));
    srv.post(
        t,
        json!({"store_id": a, "to_store_id": a, "lines": line(json!(1))}),
    )
    .await
    .problem(422, Some("to_store_id"));
    srv.post(
        t,
        json!({"store_id": a, "to_store_id": ghost, "lines": line(json!(1))}),
    )
    .await
    .problem(422, Some("to_store_id"));
    srv.get("/api/v1/stock?store_id=xyz")
        .await
        .problem(422, Some("store_id"));
    // None of that moved anything.
    assert_eq!(srv.level(a, p).await, (0, 0, 0));
    let r = srv.get("/api/v1/stock/movements").await;
    assert_eq!(r.ok(200)["items"].as_array().unwrap().len(), 0);
}

async fn forbid_negative_stock(srv: Srv) {
    let (a, t) = srv.shop().await;
    let b = srv.create_store("Second").await;
    let p = srv.create_product("RICE", 1000).await;
    srv.supply(a, p, json!(2)).await;
    // Allowed by default: stock may go negative.
    srv.post(
        "/api/v1/stock/writeoffs",
        json!({"store_id": a, "lines": [{"product_id": p, "qty": 3}]}),
    )
    .await
    .ok(201);
    assert_eq!(srv.level(a, p).await.0, -1_000);
    srv.post(
        "/api/v1/stock/counts",
        json!({"store_id": a, "lines": [{"product_id": p, "qty": 2}]}),
    )
    .await
    .ok(201);

    srv.patch("/api/v1/settings", json!({"forbid_negative_stock": true}))
        .await
        .ok(200);
    srv.post(
        "/api/v1/stock/writeoffs",
        json!({"store_id": a, "lines": [{"product_id": p, "qty": 3}]}),
    )
    .await
    .problem(422, Some("lines[0].qty"));
    srv.post(
        "/api/v1/stock/transfers",
        json!({"store_id": a, "to_store_id": b, "lines": [{"product_id": p, "qty": 2.001}]}),
    )
    .await
    .problem(422, Some("lines[0].qty"));
    let r = srv
        .post(
            "/api/v1/receipts",
            crate::common::sale(a, t, &[(p, json!(3), 1000)]),
        )
        .await;
    r.problem(422, Some("lines[0].qty"));
    // The same product on several lines: the line that takes it below zero is named, here
    // the third (1 + 0.5 fits in 2, the next 1 does not), and none of the lines is kept.
    let other = srv.create_product("SALT", 500).await;
    srv.supply(a, other, json!(10)).await;
    let r = srv
        .post(
            "/api/v1/receipts",
            crate::common::sale(
                a,
                t,
                &[
                    (p, json!(1), 1000),
                    (other, json!(1), 500),
                    (p, json!(0.5), 1000),
                    (p, json!(1), 1000),
                ],
            ),
        )
        .await;
    let body = r.problem(422, Some("lines[3].qty"));
    assert!(
        body.to_string().contains("-0.5 available"),
        "the level after that line: {body}"
    );
    assert_eq!(srv.level(a, other).await.0, 10_000);
    // Nothing changed, and selling what is there still works.
    assert_eq!(srv.level(a, p).await, (2_000, 0, 2_000));
    srv.post(
        "/api/v1/receipts",
        crate::common::sale(a, t, &[(p, json!(2), 1000)]),
    )
    .await
    .ok(201);
    assert_eq!(srv.level(a, p).await.0, 0);
    let r = srv
        .post(
            "/api/v1/invoices",
            json!({"store_id": a, "lines": [{"product_id": p, "qty": 1}], "reserve": true}),
        )
        .await;
    r.problem(422, Some("lines[0].qty"));
    let r = srv.get("/api/v1/invoices").await;
    assert_eq!(
        r.ok(200)["items"].as_array().unwrap().len(),
        0,
        "the refused reservation leaves no invoice behind"
    );
}

backend_tests!(stock_documents, stock_bad_inputs, forbid_negative_stock);

//! The catalogue: CRUD, filters, cursor pagination, bulk upsert by SKU.

use std::collections::HashSet;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::backend_tests;
use crate::common::{Srv, uuid};

/// A valid EAN-13 from a 12-digit body.
pub fn ean13(body: &str) -> String {
    let d: Vec<u8> = body.bytes().map(|b| b - b'0').collect();
    format!("{body}{}", savdo_domain::barcode::gs1_check_digit(&d))
}

async fn product_crud(srv: Srv) {
    let bc = ean13("478010116439");
    let r = srv
        .post(
            "/api/v1/products",
            json!({"sku": "MILK-1", "name": "Sut 1L", "price": 12_000_00, "barcodes": [bc, bc]}),
        )
        .await;
    let p = r.ok(201).clone();
    let id = uuid(&p["id"]);
    assert_eq!(p["vat_percent"], 12, "tenant default VAT");
    assert_eq!(p["unit"], 1);
    assert_eq!(p["active"], true);
    assert_eq!(p["marked"], false);
    assert_eq!(p["barcodes"], json!([bc]), "duplicates collapsed");

    let g = srv.get(&format!("/api/v1/products/{id}")).await;
    assert_eq!(g.ok(200)["sku"], "MILK-1");

    let u = srv
        .patch(
            &format!("/api/v1/products/{id}"),
            json!({"price": 13_500_00, "name": "Sut 1 litr", "mxik": "10401001001000000"}),
        )
        .await;
    let u = u.ok(200);
    assert_eq!(u["price"], 13_500_00);
    assert_eq!(u["name"], "Sut 1 litr");
    assert_eq!(u["sku"], "MILK-1", "untouched field kept");
    assert_eq!(u["mxik"], "10401001001000000");
    let u = srv
        .patch(&format!("/api/v1/products/{id}"), json!({"mxik": null}))
        .await;
    assert!(u.ok(200)["mxik"].is_null());

    // SKU unique per tenant.
    srv.post(
        "/api/v1/products",
        json!({"sku": "MILK-1", "name": "Dup", "price": 1}),
    )
    .await
    .problem(409, Some("sku"));
    // Barcode unique too.
    let r = srv
        .post(
            "/api/v1/products",
            json!({"sku": "MILK-2", "name": "Dup bc", "price": 1, "barcodes": [bc]}),
        )
        .await;
    r.problem(409, None);

    // Delete: gone, SKU reusable, second delete 404.
    assert_eq!(
        srv.delete(&format!("/api/v1/products/{id}")).await.status,
        204
    );
    srv.get(&format!("/api/v1/products/{id}"))
        .await
        .problem(404, None);
    srv.delete(&format!("/api/v1/products/{id}"))
        .await
        .problem(404, None);
    srv.patch(&format!("/api/v1/products/{id}"), json!({"price": 1}))
        .await
        .problem(404, None);
    srv.create_product("MILK-1", 100).await;
}

async fn product_bad_inputs(srv: Srv) {
    let cases: Vec<(Value, &str)> = vec![
        (json!({"name": "x", "price": 1}), "sku"),
        (json!({"sku": "a", "price": 1}), "name"),
        (json!({"sku": "a", "name": "x"}), "price"),
        (json!({"sku": " ", "name": "x", "price": 1}), "sku"),
        (json!({"sku": "a", "name": "x", "price": -1}), "price"),
        (
            json!({"sku": "a", "name": "x", "price": 1_000_000_000_000_001i64}),
            "price",
        ),
        (json!({"sku": "a", "name": "x", "price": 1.5}), "price"),
        (json!({"sku": "a", "name": "x", "price": "100"}), "price"),
        (
            json!({"sku": "a", "name": "x", "price": 1, "vat_percent": 51}),
            "vat_percent",
        ),
        (
            json!({"sku": "a", "name": "x", "price": 1, "vat_percent": 300}),
            "vat_percent",
        ),
        (
            json!({"sku": "a", "name": "x", "price": 1, "unit": 0}),
            "unit",
        ),
        (
            json!({"sku": "a", "name": "x", "price": 1, "mxik": "123"}),
            "mxik",
        ),
        (
            json!({"sku": "a", "name": "x", "price": 1, "package_code": "a b"}),
            "package_code",
        ),
        (
            json!({"sku": "a", "name": "x", "price": 1, "barcodes": ["4780101164395"]}),
            "barcodes[0]",
        ),
        (
            json!({"sku": "a", "name": "x", "price": 1, "barcodes": ["ok-1", "a b"]}),
            "barcodes[1]",
        ),
        (
            json!({"sku": "a", "name": "x", "price": 1, "colour": "red"}),
            "colour",
        ),
    ];
    for (body, field) in cases {
        let r = srv.post("/api/v1/products", body.clone()).await;
        assert_eq!(r.status, 422, "{body} -> {}", r.text);
        r.problem(422, Some(field));
    }
    // Several problems are reported at once.
    let r = srv
        .post(
            "/api/v1/products",
            json!({"sku": "", "name": "", "price": -5}),
        )
        .await;
    r.problem(422, None);
    let f = r.fields();
    for want in ["sku", "name", "price"] {
        assert!(f.iter().any(|x| x == want), "{f:?}");
    }
    let id = srv.create_product("P1", 100).await;
    srv.patch(&format!("/api/v1/products/{id}"), json!({"price": -1}))
        .await
        .problem(422, Some("price"));
    srv.patch(
        &format!("/api/v1/products/{id}"),
        json!({"id": Uuid::now_v7()}),
    )
    .await
    .problem(422, Some("id"));
}

async fn product_filters_and_pagination(srv: Srv) {
    let mut ids = HashSet::new();
    for i in 0..7 {
        let r = srv
            .post(
                "/api/v1/products",
                json!({
                    "sku": format!("SKU-{i}"),
                    "name": if i % 2 == 0 { format!("Non {i}") } else { format!("Choy {i}") },
                    "price": 1000 + i,
                    "barcodes": [ean13(&format!("47800000000{i}"))],
                }),
            )
            .await;
        ids.insert(r.ok(201)["id"].as_str().unwrap().to_string());
    }
    // q matches name (case-insensitive) and sku.
    let r = srv.get("/api/v1/products?q=choy").await;
    let names: Vec<String> = r.ok(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("Choy")));
    let r = srv.get("/api/v1/products?q=sku-4").await;
    assert_eq!(r.ok(200)["items"].as_array().unwrap().len(), 1);
    // LIKE wildcards are literal.
    let r = srv.get("/api/v1/products?q=%25").await;
    assert_eq!(r.ok(200)["items"].as_array().unwrap().len(), 0);
    // sku and barcode are exact.
    let r = srv.get("/api/v1/products?sku=SKU-3").await;
    let items = r.ok(200)["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["sku"], "SKU-3");
    let bc = ean13("478000000005");
    let r = srv.get(&format!("/api/v1/products?barcode={bc}")).await;
    let items = r.ok(200)["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["sku"], "SKU-5");
    let r = srv.get("/api/v1/products?sku=SKU").await;
    assert_eq!(r.ok(200)["items"].as_array().unwrap().len(), 0);

    // Cursor pagination walks everything exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/products?limit=3&cursor={c}"),
            None => "/api/v1/products?limit=3".to_string(),
        };
        let r = srv.get(&path).await;
        let b = r.ok(200).clone();
        let items = b["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|p| p["id"].as_str().unwrap().to_string()));
        pages += 1;
        match b["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 7);
    assert_eq!(seen.iter().cloned().collect::<HashSet<_>>(), ids);

    srv.get("/api/v1/products?limit=0")
        .await
        .problem(422, Some("limit"));
    srv.get("/api/v1/products?limit=501")
        .await
        .problem(422, Some("limit"));
    srv.get("/api/v1/products?limit=abc")
        .await
        .problem(422, Some("limit"));
    srv.get("/api/v1/products?cursor=garbage")
        .await
        .problem(422, Some("cursor"));
    srv.get("/api/v1/products?colour=red")
        .await
        .problem(422, Some("colour"));
}

async fn bulk_upsert(srv: Srv) {
    let items: Vec<Value> = (0..5)
        .map(|i| json!({"sku": format!("B-{i}"), "name": format!("Bulk {i}"), "price": 100 * (i + 1)}))
        .collect();
    let r = srv
        .post("/api/v1/products/bulk", json!({"items": items}))
        .await;
    let b = r.ok(200).clone();
    assert_eq!(
        (b["created"].clone(), b["updated"].clone()),
        (json!(5), json!(0))
    );
    let first_ids: Vec<Value> = b["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].clone())
        .collect();

    // Again, with new prices and two new SKUs: updates in place, same ids.
    let items: Vec<Value> = (0..7)
        .map(|i| json!({"sku": format!("B-{i}"), "name": format!("Bulk {i}"), "price": 999}))
        .collect();
    let r = srv
        .post("/api/v1/products/bulk", json!({"items": items}))
        .await;
    let b = r.ok(200).clone();
    assert_eq!(
        (b["created"].clone(), b["updated"].clone()),
        (json!(2), json!(5))
    );
    let items = b["items"].as_array().unwrap();
    for (i, id) in first_ids.iter().enumerate() {
        assert_eq!(&items[i]["id"], id);
        assert_eq!(items[i]["price"], 999);
    }
    let r = srv.get("/api/v1/products?sku=B-2").await;
    assert_eq!(r.ok(200)["items"][0]["price"], 999);
    let r = srv.get("/api/v1/products?limit=500").await;
    assert_eq!(r.ok(200)["items"].as_array().unwrap().len(), 7);

    // Refused: empty, over 1000, duplicate SKU, an invalid item; nothing is written.
    srv.post("/api/v1/products/bulk", json!({"items": []}))
        .await
        .problem(422, Some("items"));
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"sku": format!("M-{i}"), "name": "m", "price": 1}))
        .collect();
    srv.post("/api/v1/products/bulk", json!({"items": many}))
        .await
        .problem(422, Some("items"));
    let r = srv
        .post(
            "/api/v1/products/bulk",
            json!({"items": [
                {"sku": "NEW-1", "name": "n", "price": 1},
                {"sku": "NEW-1", "name": "n", "price": 2},
            ]}),
        )
        .await;
    r.problem(422, Some("items[1].sku"));
    let r = srv
        .post(
            "/api/v1/products/bulk",
            json!({"items": [
                {"sku": "NEW-2", "name": "n", "price": 1},
                {"sku": "NEW-3", "name": "n", "price": -1},
            ]}),
        )
        .await;
    r.problem(422, Some("items[1].price"));
    let r = srv
        .post(
            "/api/v1/products/bulk",
            json!({"items": [{"sku": "NEW-4", "name": "n", "price": 1, "bogus": 1}]}),
        )
        .await;
    r.problem(422, None);
    assert!(r.fields()[0].contains("bogus"), "{}", r.text);
    let r = srv.get("/api/v1/products?q=new-").await;
    assert_eq!(
        r.ok(200)["items"].as_array().unwrap().len(),
        0,
        "a refused bulk request writes nothing"
    );
    // 1000 is the limit, and it is accepted.
    let thousand: Vec<Value> = (0..1000)
        .map(|i| json!({"sku": format!("T-{i:04}"), "name": "t", "price": i}))
        .collect();
    let r = srv
        .post("/api/v1/products/bulk", json!({"items": thousand}))
        .await;
    assert_eq!(r.ok(200)["created"], 1000);
}

backend_tests!(
    product_crud,
    product_bad_inputs,
    product_filters_and_pagination,
    bulk_upsert
);

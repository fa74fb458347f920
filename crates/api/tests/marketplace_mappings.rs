//! `GET/PUT /api/v1/integrations/{id}/mappings` over HTTP, on SQLite and (with
//! `SAVDO_TEST_DATABASE_URL`) PostgreSQL: the listing with its filter, paging, counts and our
//! unmapped products; manual links with their 422s, all or nothing, audited; roles; and
//! tenant isolation. The catalogue is stored the way the "products" sync stores it.

#[path = "it/common/mod.rs"]
mod common;

use common::{Srv, uuid};
use savdo_storage::marketplace::CatalogItem;
use serde_json::{Value, json};
use uuid::Uuid;

async fn marketplace(srv: &Srv, store: Uuid) -> Uuid {
    let r = srv
        .post(
            "/api/v1/integrations",
            json!({"type": "wildberries", "name": "WB", "test": false,
                   "credentials": {"token": "wb-token-for-tests"},
                   "settings": {"warehouse_id": "1", "store_ids": [store.to_string()]}}),
        )
        .await;
    r.ok(201);
    r.id()
}

async fn product(srv: &Srv, sku: &str, barcode: &str) -> Uuid {
    let r = srv
        .post(
            "/api/v1/products",
            json!({"sku": sku, "name": format!("Product {sku}"), "price": 10_000, "barcodes": [barcode]}),
        )
        .await;
    r.ok(201);
    r.id()
}

/// A valid EAN-13 (the API checks the digit) numbered `n`.
fn ean(n: u64) -> String {
    let d12 = format!("4601000000{n:02}");
    let sum: u32 = d12
        .chars()
        .enumerate()
        .map(|(i, c)| c.to_digit(10).unwrap() * if i % 2 == 1 { 3 } else { 1 })
        .sum();
    format!("{d12}{}", (10 - sum % 10) % 10)
}

fn item(id: &str, barcode: &str) -> CatalogItem {
    CatalogItem {
        external_id: id.into(),
        product_ext_id: Some(format!("nm-{id}")),
        title: format!("Item {id}"),
        barcodes: vec![barcode.into()],
        price: Some(12_000),
        remote_stock: Some(3_000),
    }
}

/// A tenant with a Wildberries integration whose catalogue has items 1..=4; items 1 and 2
/// match our products by barcode, 3 and 4 match nothing; product Z is on no item.
async fn setup(srv: &Srv) -> (Uuid, Vec<Uuid>) {
    let store = srv.create_store("Main").await;
    let id = marketplace(srv, store).await;
    let a = product(srv, "A", &ean(1)).await;
    let b = product(srv, "B", &ean(2)).await;
    let z = product(srv, "Z", &ean(99)).await;
    let out = srv
        .store
        .upsert_catalog(
            srv.tenant,
            id,
            &[
                item("1", &ean(1)),
                item("2", &ean(2)),
                item("3", &ean(3)),
                item("4", &ean(4)),
            ],
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(out.mapped.len(), 2);
    (id, vec![a, b, z])
}

fn ids(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["external_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn listing(srv: Srv) {
    let (id, p) = setup(&srv).await;
    let path = format!("/api/v1/integrations/{id}/mappings");
    let r = srv.get(&path).await;
    let body = r.ok(200);
    assert_eq!(ids(body), ["1", "2", "3", "4"]);
    assert_eq!(
        body["counts"],
        json!({"items": 4, "mapped": 2, "unmapped": 2, "unmapped_local": 1})
    );
    assert!(body["push"].is_null(), "nothing pushed yet");
    let first = &body["items"][0];
    assert_eq!(uuid(&first["product_id"]), p[0]);
    assert_eq!(first["product_sku"], "A");
    assert_eq!(first["product_name"], "Product A");
    assert_eq!(first["mapped_by"], "barcode");
    assert_eq!(first["barcodes"], json!([ean(1)]));
    assert_eq!(
        first["stock"]["pending"], true,
        "a new link schedules a push"
    );
    assert!(body["items"][2]["note"].as_str().unwrap().contains(&ean(3)));
    let local = body["unmapped_local"]["items"].as_array().unwrap();
    assert_eq!(local.len(), 1);
    assert_eq!(uuid(&local[0]["id"]), p[2]);
    assert_eq!(local[0]["sku"], "Z");

    // Filters.
    let r = srv.get(&format!("{path}?state=mapped")).await;
    assert_eq!(ids(r.ok(200)), ["1", "2"]);
    let r = srv.get(&format!("{path}?state=unmapped")).await;
    assert_eq!(ids(r.ok(200)), ["3", "4"]);
    srv.get(&format!("{path}?state=maybe"))
        .await
        .problem(422, Some("state"));
    srv.get(&format!("{path}?limit=0"))
        .await
        .problem(422, Some("limit"));

    // Paging.
    let r = srv.get(&format!("{path}?limit=3")).await;
    let b = r.ok(200).clone();
    assert_eq!(ids(&b), ["1", "2", "3"]);
    let next = b["next_cursor"].as_str().unwrap();
    let r = srv.get(&format!("{path}?limit=3&cursor={next}")).await;
    let b = r.ok(200).clone();
    assert_eq!(ids(&b), ["4"]);
    assert!(b["next_cursor"].is_null());
    let r = srv.get(&format!("{path}/unmapped-local?limit=1")).await;
    assert_eq!(uuid(&r.ok(200)["items"][0]["id"]), p[2]);

    // Not a marketplace.
    let r = srv
        .post(
            "/api/v1/integrations",
            json!({"type": "payme", "name": "Payme", "test": false,
                   "credentials": {"merchant_id": "m1", "key": "payme-key-123456"}}),
        )
        .await;
    r.ok(201);
    srv.get(&format!("/api/v1/integrations/{}/mappings", r.id()))
        .await
        .problem(409, None);
    srv.get(&format!("/api/v1/integrations/{}/mappings", Uuid::now_v7()))
        .await
        .problem(404, None);
}

async fn manual_links(srv: Srv) {
    let (id, p) = setup(&srv).await;
    let path = format!("/api/v1/integrations/{id}/mappings");
    // 3 -> Z by hand, 1 unlinked by hand.
    let r = srv
        .send(
            reqwest::Method::PUT,
            &path,
            Some(&json!({"links": [{"external_id": "3", "product_id": p[2]},
                                   {"external_id": "1", "product_id": null}]})),
        )
        .await;
    assert_eq!(r.ok(200)["changed"], 2);
    let body = srv.get(&path).await.ok(200).clone();
    let three = &body["items"][2];
    assert_eq!(
        (three["mapped_by"].clone(), uuid(&three["product_id"])),
        (json!("manual"), p[2])
    );
    assert_eq!(
        three["stock"]["pending"], true,
        "a changed link schedules a push"
    );
    assert!(three["note"].is_null());
    let one = &body["items"][0];
    assert!(one["product_id"].is_null());
    assert_eq!(one["mapped_by"], "manual");
    assert_eq!(body["counts"]["mapped"], 2);
    // Product A is unmapped locally now; Z is not.
    let local: Vec<Uuid> = body["unmapped_local"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| uuid(&i["id"]))
        .collect();
    assert_eq!(local, [p[0]]);
    // The same again changes nothing.
    let r = srv
        .send(
            reqwest::Method::PUT,
            &path,
            Some(&json!({"links": [{"external_id": "3", "product_id": p[2]}]})),
        )
        .await;
    assert_eq!(r.ok(200)["changed"], 0);
    // A new pull keeps manual links and unlinks.
    srv.store
        .upsert_catalog(
            srv.tenant,
            id,
            &[item("1", &ean(1)), item("3", &ean(2))],
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    let body = srv.get(&path).await.ok(200).clone();
    assert!(body["items"][0]["product_id"].is_null());
    assert_eq!(uuid(&body["items"][2]["product_id"]), p[2]);
    // Audited.
    let audit = srv.get("/api/v1/audit").await.ok(200).clone();
    let entry = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["entity"] == "marketplace_mapping")
        .expect("audit entry")
        .clone();
    assert_eq!(entry["entity_id"], json!(id.to_string()));

    // 422s name the link and the field; nothing is applied.
    let bad = json!({"links": [
        {"external_id": "2", "product_id": null},
        {"external_id": "nope", "product_id": p[0]},
        {"external_id": "4", "product_id": Uuid::now_v7()},
    ]});
    let r = srv.send(reqwest::Method::PUT, &path, Some(&bad)).await;
    r.problem(422, Some("links[1].external_id"));
    r.problem(422, Some("links[2].product_id"));
    assert_eq!(r.fields().len(), 2, "{}", r.text);
    let body = srv.get(&path).await.ok(200).clone();
    assert_eq!(
        uuid(&body["items"][1]["product_id"]),
        p[1],
        "all or nothing"
    );
    let r = srv
        .send(
            reqwest::Method::PUT,
            &path,
            Some(&json!({"links": [{"external_id": "2"}]})),
        )
        .await;
    r.problem(422, Some("links[0].product_id"));
    let r = srv
        .send(
            reqwest::Method::PUT,
            &path,
            Some(&json!({"links": [{"external_id": "2", "product_id": "not-a-uuid"}]})),
        )
        .await;
    assert!(r.status == 422 || r.status == 400, "{}", r.text);
    assert!(r.text.contains("links[0].product_id"), "{}", r.text);
    let r = srv
        .send(
            reqwest::Method::PUT,
            &path,
            Some(&json!({"links": [{"external_id": " ", "product_id": null}]})),
        )
        .await;
    r.problem(422, Some("links[0].external_id"));
}

async fn roles_and_isolation(srv: Srv) {
    let (id, p) = setup(&srv).await;
    let path = format!("/api/v1/integrations/{id}/mappings");
    // A cashier may not see or change mappings.
    let store = srv.create_store("Till store").await;
    let (_, cashier) = srv.create_token("cashier", Some(store)).await;
    let c = srv.with_token(&cashier);
    c.get(&path).await.problem(403, None);
    c.send(
        reqwest::Method::PUT,
        &path,
        Some(&json!({"links": [{"external_id": "3", "product_id": p[2]}]})),
    )
    .await
    .problem(403, None);
    // A manager may.
    let (_, manager) = srv.create_token("manager", None).await;
    srv.with_token(&manager).get(&path).await.ok(200);

    // Another tenant sees nothing of ours and cannot edit it, nor link our items to theirs.
    let (other_tenant, other_token) = srv.new_tenant("Other shop").await;
    let mut other = srv.with_token(&other_token);
    other.tenant = other_tenant;
    other.get(&path).await.problem(404, None);
    other
        .get(&format!("{path}/unmapped-local"))
        .await
        .problem(404, None);
    other
        .send(
            reqwest::Method::PUT,
            &path,
            Some(&json!({"links": [{"external_id": "3", "product_id": null}]})),
        )
        .await
        .problem(404, None);
    let theirs = product(&other, "THEIRS", &ean(77)).await;
    let their_store = other.create_store("Their store").await;
    let their_mp = marketplace(&other, their_store).await;
    let r = other
        .get(&format!("/api/v1/integrations/{their_mp}/mappings"))
        .await;
    let b = r.ok(200);
    assert_eq!(
        b["counts"],
        json!({"items": 0, "mapped": 0, "unmapped": 0, "unmapped_local": 1})
    );
    // Our integration with their product: the product is unknown here.
    srv.send(
        reqwest::Method::PUT,
        &path,
        Some(&json!({"links": [{"external_id": "3", "product_id": theirs}]})),
    )
    .await
    .problem(422, Some("links[0].product_id"));
    // Nothing changed on our side.
    let body = srv.get(&path).await.ok(200).clone();
    assert!(body["items"][2]["product_id"].is_null());
    assert!(body["items"][2]["mapped_by"].is_null());
}

async fn openapi_documents_mappings(srv: Srv) {
    let doc = srv.get("/api/v1/openapi.json").await.ok(200).clone();
    let paths = &doc["paths"];
    let m = &paths["/api/v1/integrations/{id}/mappings"];
    assert!(m["get"].is_object() && m["put"].is_object(), "{m}");
    assert!(paths["/api/v1/integrations/{id}/mappings/unmapped-local"]["get"].is_object());
    let schemas = &doc["components"]["schemas"];
    for s in [
        "MappingList",
        "Mapping",
        "MappingCounts",
        "LocalPage",
        "PutMappings",
    ] {
        assert!(schemas[s].is_object(), "schema {s} missing");
    }
}

backend_tests!(
    listing,
    manual_links,
    roles_and_isolation,
    openapi_documents_mappings
);

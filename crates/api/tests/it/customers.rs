//! Customers: phone normalisation, filters, patch, bad inputs.

use serde_json::json;
use uuid::Uuid;

use crate::backend_tests;
use crate::common::{Srv, uuid};

async fn customers(srv: Srv) {
    for (i, phone) in [
        "+998 90 123-45-67",
        "998901234568",
        "901234569",
        "8 (90) 123 45 70",
    ]
    .iter()
    .enumerate()
    {
        let r = srv
            .post(
                "/api/v1/customers",
                json!({"name": format!("Aziz {i}"), "phone": phone}),
            )
            .await;
        let want = [
            "+998901234567",
            "+998901234568",
            "+998901234569",
            "+998901234570",
        ][i];
        assert_eq!(r.ok(201)["phone"], want, "{phone}");
    }
    let r = srv
        .post(
            "/api/v1/customers",
            json!({"name": "Dilnoza", "loyalty_card": "JW-0001", "external_ids": {"jowi_club": "c-77"}}),
        )
        .await;
    let c = r.ok(201).clone();
    let id = uuid(&c["id"]);
    assert!(c["phone"].is_null());
    assert_eq!(c["external_ids"]["jowi_club"], "c-77");

    // Filters: phone in any form, card, name.
    let r = srv.get("/api/v1/customers?phone=90%20123%2045%2067").await;
    let items = r.ok(200)["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["name"], "Aziz 0");
    let r = srv.get("/api/v1/customers?card=JW-0001").await;
    assert_eq!(r.ok(200)["items"][0]["id"], json!(id));
    let r = srv.get("/api/v1/customers?q=aziz").await;
    assert_eq!(r.ok(200)["items"].as_array().unwrap().len(), 4);
    let r = srv.get("/api/v1/customers?limit=2").await;
    let b = r.ok(200).clone();
    assert_eq!(b["items"].as_array().unwrap().len(), 2);
    let next = b["next_cursor"].as_str().expect("more pages");
    let r = srv
        .get(&format!("/api/v1/customers?limit=10&cursor={next}"))
        .await;
    assert_eq!(r.ok(200)["items"].as_array().unwrap().len(), 3);

    // Patch: set phone (normalised), clear card, keep the rest.
    let r = srv
        .patch(
            &format!("/api/v1/customers/{id}"),
            json!({"phone": "+998 (93) 555-44-33", "loyalty_card": null}),
        )
        .await;
    let p = r.ok(200);
    assert_eq!(p["phone"], "+998935554433");
    assert!(p["loyalty_card"].is_null());
    assert_eq!(p["name"], "Dilnoza");
    let g = srv.get(&format!("/api/v1/customers/{id}")).await;
    assert_eq!(g.ok(200)["phone"], "+998935554433");

    // Bad inputs.
    for bad in ["12345", "+7 900 123 45 67", "90abc1234", ""] {
        srv.post("/api/v1/customers", json!({"name": "X", "phone": bad}))
            .await
            .problem(422, Some("phone"));
    }
    srv.patch(&format!("/api/v1/customers/{id}"), json!({"phone": "1"}))
        .await
        .problem(422, Some("phone"));
    srv.get("/api/v1/customers?phone=123")
        .await
        .problem(422, Some("phone"));
    srv.post("/api/v1/customers", json!({"phone": "901234567"}))
        .await
        .problem(422, Some("name"));
    srv.post(
        "/api/v1/customers",
        json!({"name": "X", "external_ids": {"jowi_club": 5}}),
    )
    .await
    .problem(422, Some("external_ids.jowi_club"));
    srv.post("/api/v1/customers", json!({"name": "X", "email": "a@b"}))
        .await
        .problem(422, Some("email"));
    srv.get(&format!("/api/v1/customers/{}", Uuid::now_v7()))
        .await
        .problem(404, None);
    srv.patch(
        &format!("/api/v1/customers/{}", Uuid::now_v7()),
        json!({"name": "Y"}),
    )
    .await
    .problem(404, None);
}

backend_tests!(customers);

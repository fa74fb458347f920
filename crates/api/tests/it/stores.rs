//! Stores, terminals and shifts.

use serde_json::json;
use uuid::Uuid;

use crate::backend_tests;
use crate::common::{Srv, uuid};

async fn store_crud(srv: Srv) {
    let r = srv
        .post(
            "/api/v1/stores",
            json!({"name": "  Chilonzor  ", "address": "Bunyodkor 1"}),
        )
        .await;
    let s = r.ok(201).clone();
    assert_eq!(s["name"], "Chilonzor", "name is trimmed");
    assert_eq!(s["address"], "Bunyodkor 1");
    assert_eq!(s["active"], true);
    let id = uuid(&s["id"]);

    let got = srv.get(&format!("/api/v1/stores/{id}")).await;
    assert_eq!(got.ok(200)["name"], "Chilonzor");
    let list = srv.get("/api/v1/stores").await;
    assert!(
        list.ok(200)["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == json!(id))
    );

    let p = srv
        .patch(
            &format!("/api/v1/stores/{id}"),
            json!({"name": "Yunusobod", "active": false}),
        )
        .await;
    let p = p.ok(200);
    assert_eq!(p["name"], "Yunusobod");
    assert_eq!(p["active"], false);
    assert_eq!(p["address"], "Bunyodkor 1", "absent field kept");
    let p = srv
        .patch(&format!("/api/v1/stores/{id}"), json!({"address": null}))
        .await;
    assert_eq!(p.ok(200)["address"], serde_json::Value::Null, "null clears");

    // Bad inputs.
    srv.post("/api/v1/stores", json!({"name": "   "}))
        .await
        .problem(422, Some("name"));
    srv.post("/api/v1/stores", json!({"name": "x".repeat(201)}))
        .await
        .problem(422, Some("name"));
    srv.post("/api/v1/stores", json!({"address": "no name"}))
        .await
        .problem(422, Some("name"));
    srv.post("/api/v1/stores", json!({"name": "A", "colour": "red"}))
        .await
        .problem(422, Some("colour"));
    srv.post("/api/v1/stores", json!({"name": 5}))
        .await
        .problem(422, Some("name"));
    srv.patch(&format!("/api/v1/stores/{id}"), json!({"active": "yes"}))
        .await
        .problem(422, Some("active"));
    srv.get(&format!("/api/v1/stores/{}", Uuid::now_v7()))
        .await
        .problem(404, None);
    srv.patch(
        &format!("/api/v1/stores/{}", Uuid::now_v7()),
        json!({"name": "Ghost"}),
    )
    .await
    .problem(404, None);
}

async fn terminals_and_shifts(srv: Srv) {
    let store = srv.create_store("Main").await;
    let other = srv.create_store("Other").await;
    let r = srv
        .post(
            "/api/v1/terminals",
            json!({"store_id": store, "name": "Till A"}),
        )
        .await;
    let t = r.ok(201).clone();
    let tid = uuid(&t["id"]);
    assert_eq!(t["store_id"], json!(store));
    assert!(t["open_shift"].is_null());
    srv.post(
        "/api/v1/terminals",
        json!({"store_id": other, "name": "Till B"}),
    )
    .await
    .ok(201);

    // Filter by store.
    let l = srv
        .get(&format!("/api/v1/terminals?store_id={store}"))
        .await;
    let items = l.ok(200)["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], json!(tid));
    let all = srv.get("/api/v1/terminals").await;
    assert_eq!(all.ok(200)["items"].as_array().unwrap().len(), 2);
    srv.get("/api/v1/terminals?store_id=nope")
        .await
        .problem(422, Some("store_id"));

    // Bad creates.
    srv.post(
        "/api/v1/terminals",
        json!({"store_id": Uuid::now_v7(), "name": "X"}),
    )
    .await
    .problem(422, Some("store_id"));
    srv.post(
        "/api/v1/terminals",
        json!({"store_id": "not-a-uuid", "name": "X"}),
    )
    .await
    .problem(422, Some("store_id"));
    srv.post("/api/v1/terminals", json!({"store_id": store}))
        .await
        .problem(422, Some("name"));

    // Shifts: open, double open 409, close, double close 409, reopen.
    let open = srv
        .post_empty(&format!("/api/v1/terminals/{tid}/shifts/open"))
        .await;
    let shift = open.ok(201).clone();
    assert_eq!(shift["terminal_id"], json!(tid));
    assert!(shift["closed_at"].is_null());
    let g = srv.get(&format!("/api/v1/terminals/{tid}")).await;
    assert_eq!(g.ok(200)["open_shift"]["id"], shift["id"]);
    srv.post_empty(&format!("/api/v1/terminals/{tid}/shifts/open"))
        .await
        .problem(409, None);
    let closed = srv
        .post_empty(&format!("/api/v1/terminals/{tid}/shifts/close"))
        .await;
    let closed = closed.ok(200);
    assert_eq!(closed["id"], shift["id"]);
    assert!(closed["closed_at"].is_string());
    srv.post_empty(&format!("/api/v1/terminals/{tid}/shifts/close"))
        .await
        .problem(409, None);
    let again = srv
        .post_empty(&format!("/api/v1/terminals/{tid}/shifts/open"))
        .await;
    assert_ne!(again.ok(201)["id"], shift["id"]);
    srv.post_empty(&format!("/api/v1/terminals/{}/shifts/open", Uuid::now_v7()))
        .await
        .problem(404, None);
    srv.get(&format!("/api/v1/terminals/{}", Uuid::now_v7()))
        .await
        .problem(404, None);
}

async fn concurrent_shift_open_has_one_winner(srv: Srv) {
    let (_, tid) = srv.shop().await;
    let path = format!("/api/v1/terminals/{tid}/shifts/open");
    let futs = (0..8).map(|_| {
        let s = srv.clone();
        let p = path.clone();
        async move { s.post_empty(&p).await }
    });
    let rs = futures::future::join_all(futs).await;
    let created = rs.iter().filter(|r| r.status == 201).count();
    let conflicts = rs.iter().filter(|r| r.status == 409).count();
    assert_eq!(
        (created, conflicts),
        (1, 7),
        "{:?}",
        rs.iter().map(|r| r.status).collect::<Vec<_>>()
    );
}

backend_tests!(
    store_crud,
    terminals_and_shifts,
    concurrent_shift_open_has_one_winner
);

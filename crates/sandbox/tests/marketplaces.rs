//! Marketplace simulators (Uzum, Wildberries, Ozon) over HTTP, as a connector sees them.

use reqwest::{Client, Method, StatusCode};
use savdo_sandbox::RunningSandbox;
use serde_json::{Value, json};

struct Ctx {
    _sb: RunningSandbox,
    base: String,
    http: Client,
}

async fn start() -> Ctx {
    // reqwest is built without a default crypto provider; plain http still needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sb = savdo_sandbox::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    Ctx {
        base: sb.url(),
        _sb: sb,
        http: Client::new(),
    }
}

impl Ctx {
    async fn control(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/_control/{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn seed(&self, system: &str, body: Value) -> Value {
        let (s, v) = self
            .control(Method::POST, &format!("{system}/seed"), Some(body))
            .await;
        assert_eq!(s, StatusCode::OK, "seed {system}: {v}");
        v
    }

    async fn stats(&self, system: &str) -> Value {
        self.control(Method::GET, &format!("{system}/stats"), None)
            .await
            .1
    }

    async fn advance(&self, system: &str, ms: u64) {
        let (s, _) = self
            .control(
                Method::POST,
                &format!("{system}/clock"),
                Some(json!({"advance_ms": ms})),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
    }

    /// Stop real time for `system`'s limiters so a burst sees no refill on a slow machine.
    async fn freeze(&self, system: &str) {
        let (s, v) = self
            .control(
                Method::POST,
                &format!("{system}/clock"),
                Some(json!({"freeze": true})),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["frozen"], true);
    }

    /// A protocol call; `headers` are (name, value) pairs.
    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let h = resp.headers().clone();
        let text = resp.text().await.unwrap();
        (
            status,
            h,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }
}

fn hdr<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

// ---------------------------------------------------------------- control plumbing

#[tokio::test]
async fn common_faults_route_still_works_next_to_marketplace_control_routes() {
    let c = start().await;
    for sys in ["uzum", "wildberries", "ozon"] {
        let (s, v) = c.control(Method::GET, &format!("{sys}/faults"), None).await;
        assert_eq!(s, StatusCode::OK, "{sys}: {v}");
        assert_eq!(v["faults"]["down"], json!(false));
        let (s, _) = c
            .control(
                Method::POST,
                &format!("{sys}/faults"),
                Some(json!({"down": true})),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        let (s, _) = c.control(Method::GET, &format!("{sys}/stock"), None).await;
        assert_eq!(s, StatusCode::OK, "{sys} stock");
        let (s, _) = c.control(Method::GET, &format!("{sys}/stats"), None).await;
        assert_eq!(s, StatusCode::OK, "{sys} stats");
    }
    let (s, _, _) = c
        .call(
            Method::GET,
            "/uzum/api/seller-openapi/v1/shops",
            &[("authorization", "demo-uzum-token")],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    let (s, v) = c.control(Method::POST, "uzum/reset", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _, _) = c
        .call(
            Method::GET,
            "/uzum/api/seller-openapi/v1/shops",
            &[("authorization", "demo-uzum-token")],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn control_refuses_unknown_seed_and_limit_fields() {
    let c = start().await;
    let (s, _) = c
        .control(
            Method::POST,
            "wildberries/seed",
            Some(json!({"limits": {"burst": 5}})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = c
        .control(Method::POST, "ozon/seed", Some(json!({"prodcts": []})))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, v) = c
        .control(Method::POST, "uzum/limits", Some(json!({"burst": 7})))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["limits"]["burst"], 7);
    assert_eq!(v["limits"]["per_second"], 1.0);
}

// ---------------------------------------------------------------- Uzum

const UZ: &str = "/uzum/api/seller-openapi";
const UZ_AUTH: (&str, &str) = ("authorization", "demo-uzum-token");

async fn uzum_catalogue(c: &Ctx) {
    c.seed(
        "uzum",
        json!({
            "clear": true,
            "limits": {"burst": 1000, "per_second": 1000.0},
            "products": [
                {"sku_id": 501, "product_id": 50, "barcode": "4780000000501", "title": "Choy", "price": 25000, "amount": 5},
                {"sku_id": 502, "product_id": 50, "barcode": "4780000000502", "title": "Choy", "sku_title": "200 g", "price": 45000},
                {"sku_id": 601, "product_id": 60, "barcode": "4780000000601", "title": "Non", "price": 4000, "amount": 1},
            ],
        }),
    )
    .await;
}

#[tokio::test]
async fn uzum_auth_and_envelope() {
    let c = start().await;
    let (s, _, v) = c
        .call(Method::GET, &format!("{UZ}/v1/shops"), &[], None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v["payload"], Value::Null);
    assert_eq!(v["errors"][0]["code"], "unauthorized");
    assert!(v["timestamp"].is_string());
    let (s, _, _) = c
        .call(
            Method::GET,
            &format!("{UZ}/v1/shops"),
            &[("authorization", "wrong")],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    for auth in ["demo-uzum-token", "Bearer demo-uzum-token"] {
        let (s, _, v) = c
            .call(
                Method::GET,
                &format!("{UZ}/v1/shops"),
                &[("authorization", auth)],
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{auth}: {v}");
        assert_eq!(v["errors"], json!([]));
        assert_eq!(v["payload"][0]["id"], 1);
    }
    // A shop the token does not own.
    let (s, _, v) = c
        .call(
            Method::GET,
            &format!("{UZ}/v1/product/shop/2"),
            &[UZ_AUTH],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
}

#[tokio::test]
async fn uzum_products_list_skus_with_barcodes_and_pages() {
    let c = start().await;
    uzum_catalogue(&c).await;
    let (s, _, v) = c
        .call(
            Method::GET,
            &format!("{UZ}/v1/product/shop/1?size=1&page=0"),
            &[UZ_AUTH],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["payload"]["totalProductsAmount"], 2);
    let p = &v["payload"]["productList"][0];
    assert_eq!(p["productId"], 50);
    assert_eq!(p["skuList"][1]["skuId"], 502);
    assert_eq!(p["skuList"][1]["barcode"], "4780000000502");
    assert_eq!(p["skuList"][1]["skuTitle"], "200 g");
    assert_eq!(p["skuList"][0]["quantity"], 5);
    let (_, _, v) = c
        .call(
            Method::GET,
            &format!("{UZ}/v1/product/shop/1?size=1&page=1"),
            &[UZ_AUTH],
            None,
        )
        .await;
    assert_eq!(v["payload"]["productList"][0]["productId"], 60);

    let (s, _, v) = c
        .call(
            Method::POST,
            &format!("{UZ}/v1/product/1/sendPriceData"),
            &[UZ_AUTH],
            Some(json!({"skuForProductList": [{"skuId": 601, "fullPrice": 5000, "sellPrice": 4500}]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, stock) = c.control(Method::GET, "uzum/stock", None).await;
    assert_eq!(stock["items"][2]["price"], 4500);
}

#[tokio::test]
async fn uzum_stock_update_is_visible_and_unknown_items_refuse_the_request() {
    let c = start().await;
    uzum_catalogue(&c).await;
    let (s, _, v) = c
        .call(
            Method::POST,
            &format!("{UZ}/v2/fbs/sku/stocks"),
            &[UZ_AUTH],
            Some(json!({"skuAmountList": [
                {"barcode": "4780000000501", "amount": 7},
                {"skuId": 601, "barcode": "4780000000601", "amount": 0},
            ]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["payload"]["updatedRecords"], 2);
    let (_, stock) = c.control(Method::GET, "uzum/stock", None).await;
    assert_eq!(stock["by_barcode"]["4780000000501"], 7);
    assert_eq!(stock["by_barcode"]["4780000000601"], 0);

    let (s, _, v) = c
        .call(
            Method::POST,
            &format!("{UZ}/v2/fbs/sku/stocks"),
            &[UZ_AUTH],
            Some(json!({"skuAmountList": [
                {"barcode": "4780000000501", "amount": 9},
                {"barcode": "0000", "amount": 1},
            ]})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["errors"][0]["code"], "sku-not-found");
    let (_, stock) = c.control(Method::GET, "uzum/stock", None).await;
    assert_eq!(stock["by_barcode"]["4780000000501"], 7, "nothing applied");

    let (_, _, v) = c
        .call(
            Method::GET,
            &format!("{UZ}/v2/fbs/sku/stocks"),
            &[UZ_AUTH],
            None,
        )
        .await;
    let list = v["payload"]["skuAmountList"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[0]["amount"], 7);

    let stats = c.stats("uzum").await;
    assert_eq!(stats["stock"]["items_updated"], 2);
    assert_eq!(stats["stock"]["requests_accepted"], 1);
    assert_eq!(
        stats["endpoints"]["POST /api/seller-openapi/v2/fbs/sku/stocks"]["total"],
        2
    );
}

#[tokio::test]
async fn uzum_rate_limit_429_beyond_one_per_second_and_none_when_respected() {
    let c = start().await;
    c.freeze("uzum").await;
    let shops = format!("{UZ}/v1/shops");
    for _ in 0..3 {
        let (s, _, _) = c.call(Method::GET, &shops, &[UZ_AUTH], None).await;
        assert_eq!(s, StatusCode::OK);
    }
    let (s, h, v) = c.call(Method::GET, &shops, &[UZ_AUTH], None).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(hdr(&h, "retry-after"), Some("1"));
    assert_eq!(v["errors"][0]["code"], "too-many-requests");

    // One a second never hits the limit.
    for _ in 0..10 {
        c.advance("uzum", 1000).await;
        let (s, _, _) = c.call(Method::GET, &shops, &[UZ_AUTH], None).await;
        assert_eq!(s, StatusCode::OK);
    }
    let stats = c.stats("uzum").await;
    assert_eq!(stats["responses_429"], 1);
    assert_eq!(
        stats["endpoints"]["GET /api/seller-openapi/v1/shops"]["by_status"]["429"],
        1
    );
}

#[tokio::test]
async fn uzum_orders_list_confirm_cancel_and_error_codes() {
    let c = start().await;
    uzum_catalogue(&c).await;
    let (s, o1) = c
        .control(
            Method::POST,
            "uzum/orders",
            Some(json!({"items": [{"barcode": "4780000000501", "amount": 2}]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{o1}");
    let (_, o2) = c
        .control(
            Method::POST,
            "uzum/orders",
            Some(json!({"items": [{"sku_id": 601}], "reserve": true})),
        )
        .await;
    let (id1, id2) = (o1["id"].as_u64().unwrap(), o2["id"].as_u64().unwrap());

    let (s, _, v) = c
        .call(
            Method::GET,
            &format!("{UZ}/v2/fbs/orders?shopIds=1&status=CREATED&page=0&size=51"),
            &[UZ_AUTH],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, _, v) = c
        .call(
            Method::GET,
            &format!("{UZ}/v2/fbs/orders?shopIds=1&status=CREATED&page=0&size=50"),
            &[UZ_AUTH],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let orders = v["payload"]["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 2);
    assert_eq!(orders[0]["status"], "CREATED");
    assert_eq!(orders[0]["shopId"], 1);
    assert!(orders[0]["dateCreated"].is_i64());
    let item = &orders[0]["orderItems"][0];
    assert_eq!(
        (item["skuId"].clone(), item["barcode"].clone()),
        (json!(501), json!("4780000000501"))
    );
    assert_eq!(
        (item["amount"].clone(), item["price"].clone()),
        (json!(2), json!(25000))
    );

    // The reserved order took its unit off the marketplace stock.
    let (_, stock) = c.control(Method::GET, "uzum/stock", None).await;
    assert_eq!(stock["by_barcode"]["4780000000601"], 0);

    let (s, _, v) = c
        .call(
            Method::POST,
            &format!("{UZ}/v1/fbs/order/{id1}/confirm"),
            &[UZ_AUTH],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["payload"]["status"], "PACKING");
    let (s, _, v) = c
        .call(
            Method::POST,
            &format!("{UZ}/v1/fbs/order/{id1}/confirm"),
            &[UZ_AUTH],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["errors"][0]["code"], "seller-order-02");

    let (s, _, v) = c
        .call(
            Method::GET,
            &format!("{UZ}/v1/fbs/order/999999"),
            &[UZ_AUTH],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["errors"][0]["code"], "seller-order-01");

    let (s, _, _) = c
        .call(
            Method::POST,
            &format!("{UZ}/v1/fbs/order/{id1}/cancel"),
            &[UZ_AUTH],
            Some(json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "reason is required");
    let (s, _, v) = c
        .call(
            Method::POST,
            &format!("{UZ}/v1/fbs/order/{id1}/cancel"),
            &[UZ_AUTH],
            Some(json!({"reason": "OUT_OF_STOCK", "comment": "tugadi"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["payload"]["status"], "CANCELED");
    let (_, _, v) = c
        .call(
            Method::POST,
            &format!("{UZ}/v1/fbs/order/{id1}/cancel"),
            &[UZ_AUTH],
            Some(json!({"reason": "X"})),
        )
        .await;
    assert_eq!(v["errors"][0]["code"], "seller-order-02");

    // The buyer cancels the other one: it leaves CREATED, shows in CANCELED, stock comes back.
    let (s, _) = c
        .control(Method::POST, &format!("uzum/orders/{id2}/cancel"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, _, v) = c
        .call(
            Method::GET,
            &format!("{UZ}/v2/fbs/orders?status=CREATED"),
            &[UZ_AUTH],
            None,
        )
        .await;
    assert_eq!(v["payload"]["orders"], json!([]));
    let (_, _, v) = c
        .call(
            Method::GET,
            &format!("{UZ}/v2/fbs/orders?status=CANCELED"),
            &[UZ_AUTH],
            None,
        )
        .await;
    assert_eq!(v["payload"]["orders"].as_array().unwrap().len(), 2);
    let (_, stock) = c.control(Method::GET, "uzum/stock", None).await;
    assert_eq!(stock["by_barcode"]["4780000000601"], 1);
    let (_, _, v) = c
        .call(
            Method::GET,
            &format!("{UZ}/v1/fbs/order/{id2}"),
            &[UZ_AUTH],
            None,
        )
        .await;
    assert_eq!(v["payload"]["status"], "CANCELED");
}

// ---------------------------------------------------------------- Wildberries

const WB_AUTH: (&str, &str) = ("authorization", "demo-wb-token");
const WB_STOCKS: &str = "/wildberries/api/v3/stocks/1";

async fn wb_catalogue(c: &Ctx, n: u64, fast: bool) {
    let products: Vec<Value> = (1..=n)
        .map(|i| json!({"chrt_id": 9000 + i, "nm_id": 7000 + i.div_ceil(2), "vendor_code": format!("ART-{i}"),
                        "barcode": format!("20000000{i:05}"), "price": 1000 * i}))
        .collect();
    let mut seed = json!({"clear": true, "products": products});
    if fast {
        seed["limits"] = json!({"marketplace_burst": 100000, "marketplace_per_second": 100000.0,
                                "content_burst": 1000, "content_per_second": 1000.0});
    }
    c.seed("wildberries", seed).await;
}

#[tokio::test]
async fn wb_auth() {
    let c = start().await;
    let (s, _, v) = c
        .call(Method::GET, "/wildberries/api/v3/orders/new", &[], None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v["status"], 401);
    assert_eq!(v["title"], "unauthorized");
    let (s, _, _) = c
        .call(
            Method::GET,
            "/wildberries/api/v3/orders/new",
            &[("authorization", "nope")],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, h, v) = c
        .call(
            Method::GET,
            "/wildberries/api/v3/orders/new",
            &[WB_AUTH],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v, json!({"orders": []}));
    assert_eq!(hdr(&h, "x-ratelimit-limit"), Some("20"));
}

#[tokio::test]
async fn wb_stock_put_typos_conflicts_and_the_1000_item_cap() {
    let c = start().await;
    wb_catalogue(&c, 1000, true).await;
    let (s, _, v) = c
        .call(
            Method::PUT,
            WB_STOCKS,
            &[WB_AUTH],
            Some(
                json!({"stocks": [{"chrtId": 9001, "amount": 12}, {"chrtId": 9002, "amount": 0}]}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (_, stock) = c.control(Method::GET, "wildberries/stock", None).await;
    assert_eq!(stock["by_chrt_id"]["9001"], 12);
    assert_eq!(stock["by_barcode"]["2000000000001"], 12);

    // A misspelt field is silently a no-op: 204, nothing changes, only stats tell.
    let (s, _, _) = c
        .call(
            Method::PUT,
            WB_STOCKS,
            &[WB_AUTH],
            Some(json!({"stocks": [{"chrtId": 9001, "amout": 3}]})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, stock) = c.control(Method::GET, "wildberries/stock", None).await;
    assert_eq!(stock["by_chrt_id"]["9001"], 12);
    assert_eq!(c.stats("wildberries").await["stock"]["items_ignored"], 1);

    // An unknown chrtId: 409 with the bad items, nothing from that request applied.
    let (s, _, v) = c
        .call(
            Method::PUT,
            WB_STOCKS,
            &[WB_AUTH],
            Some(json!({"stocks": [{"chrtId": 9001, "amount": 5}, {"chrtId": 1, "amount": 5}]})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(v[0]["code"], "NotFound");
    assert_eq!(v[0]["data"], json!([{"chrtId": 1, "amount": 5}]));
    let (_, stock) = c.control(Method::GET, "wildberries/stock", None).await;
    assert_eq!(stock["by_chrt_id"]["9001"], 12);

    let items = |n: u64| -> Value {
        json!({"stocks": (1..=n).map(|i| json!({"chrtId": 9000 + i, "amount": i})).collect::<Vec<_>>()})
    };
    let (s, _, v) = c
        .call(Method::PUT, WB_STOCKS, &[WB_AUTH], Some(items(1001)))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["code"], "IncorrectRequest");
    let (s, _, _) = c
        .call(Method::PUT, WB_STOCKS, &[WB_AUTH], Some(items(1000)))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, stock) = c.control(Method::GET, "wildberries/stock", None).await;
    assert_eq!(stock["by_chrt_id"]["10000"], 1000);

    let (s, _, v) = c
        .call(
            Method::POST,
            WB_STOCKS,
            &[WB_AUTH],
            Some(json!({"chrtIds": [9001, 9999, 123]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v["stocks"],
        json!([{"chrtId": 9001, "amount": 1}, {"chrtId": 9999, "amount": 999}])
    );

    let (s, _, _) = c
        .call(
            Method::PUT,
            "/wildberries/api/v3/stocks/77",
            &[WB_AUTH],
            Some(items(1)),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let stats = c.stats("wildberries").await;
    assert_eq!(stats["stock"]["items_updated"], 1002);
    assert_eq!(stats["stock"]["rejected_by_code"]["NotFound"], 1);
}

#[tokio::test]
async fn wb_rate_limit_burst_20_refill_5_per_second_and_409_costs_10() {
    let c = start().await;
    c.freeze("wildberries").await;
    let path = "/wildberries/api/v3/orders/new";
    for i in 0..20 {
        let (s, h, _) = c.call(Method::GET, path, &[WB_AUTH], None).await;
        assert_eq!(s, StatusCode::OK, "request {i}");
        assert_eq!(
            hdr(&h, "x-ratelimit-remaining"),
            Some((19 - i).to_string().as_str())
        );
    }
    let (s, h, v) = c.call(Method::GET, path, &[WB_AUTH], None).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(v["status"], 429);
    assert_eq!(hdr(&h, "x-ratelimit-retry"), Some("1"));
    assert_eq!(hdr(&h, "x-ratelimit-remaining"), Some("0"));
    assert_eq!(hdr(&h, "x-ratelimit-limit"), Some("20"));
    assert_eq!(hdr(&h, "x-ratelimit-reset"), Some("4"));

    // 200 ms apart is sustainable indefinitely.
    c.advance("wildberries", 4000).await;
    for _ in 0..60 {
        c.advance("wildberries", 200).await;
        let (s, _, _) = c.call(Method::GET, path, &[WB_AUTH], None).await;
        assert_eq!(s, StatusCode::OK);
    }
    assert_eq!(c.stats("wildberries").await["responses_429"], 1);

    // A 409 takes 10 tokens: from a full bucket, 1 + 9 leaves 10.
    c.advance("wildberries", 4000).await;
    let (s, h, _) = c
        .call(
            Method::PUT,
            WB_STOCKS,
            &[WB_AUTH],
            Some(json!({"stocks": [{"chrtId": 1, "amount": 1}]})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(hdr(&h, "x-ratelimit-remaining"), Some("10"));
    for _ in 0..10 {
        let (s, _, _) = c.call(Method::GET, path, &[WB_AUTH], None).await;
        assert_eq!(s, StatusCode::OK);
    }
    let (s, _, _) = c.call(Method::GET, path, &[WB_AUTH], None).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn wb_orders_new_status_cancel_and_supply() {
    let c = start().await;
    wb_catalogue(&c, 2, true).await;
    let (s, o1) = c
        .control(
            Method::POST,
            "wildberries/orders",
            Some(json!({"chrt_id": 9001, "required_meta": ["sgtin"]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{o1}");
    // A buyer cannot order what is out of stock; once stocked, the order takes a unit.
    let reserve = json!({"barcode": "2000000000002", "reserve": true});
    let (s, _) = c
        .control(Method::POST, "wildberries/orders", Some(reserve.clone()))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let stock_9002 = json!({"stocks": [{"chrtId": 9002, "amount": 3}]});
    let (s, _, _) = c
        .call(Method::PUT, WB_STOCKS, &[WB_AUTH], Some(stock_9002))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, o2) = c
        .control(Method::POST, "wildberries/orders", Some(reserve))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{o2}");
    let (_, o3) = c
        .control(
            Method::POST,
            "wildberries/orders",
            Some(json!({"chrt_id": 9001})),
        )
        .await;
    let (id1, id2, id3) = (
        o1["id"].as_u64().unwrap(),
        o2["id"].as_u64().unwrap(),
        o3["id"].as_u64().unwrap(),
    );

    let (_, _, v) = c
        .call(
            Method::GET,
            "/wildberries/api/v3/orders/new",
            &[WB_AUTH],
            None,
        )
        .await;
    let orders = v["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 3);
    assert_eq!(orders[0]["id"], id1);
    assert_eq!(orders[0]["chrtId"], 9001);
    assert_eq!(orders[0]["skus"], json!(["2000000000001"]));
    assert_eq!(orders[0]["requiredMeta"], json!(["sgtin"]));
    assert_eq!(orders[0]["price"], 100_000);
    assert!(orders[0]["rid"].is_string() && orders[0]["createdAt"].is_string());
    let (_, stock) = c.control(Method::GET, "wildberries/stock", None).await;
    assert_eq!(stock["by_chrt_id"]["9002"], 2);

    // The buyer cancels order 2: gone from /new, visible through /orders/status.
    let (s, _) = c
        .control(
            Method::POST,
            &format!("wildberries/orders/{id2}/cancel"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, _, v) = c
        .call(
            Method::GET,
            "/wildberries/api/v3/orders/new",
            &[WB_AUTH],
            None,
        )
        .await;
    assert_eq!(v["orders"].as_array().unwrap().len(), 2);
    let (s, _, v) = c
        .call(
            Method::POST,
            "/wildberries/api/v3/orders/status",
            &[WB_AUTH],
            Some(json!({"orders": [id1, id2, 5]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v["orders"],
        json!([
            {"id": id1, "supplierStatus": "new", "wbStatus": "waiting"},
            {"id": id2, "supplierStatus": "new", "wbStatus": "canceled_by_client"},
        ])
    );
    let (_, stock) = c.control(Method::GET, "wildberries/stock", None).await;
    assert_eq!(stock["by_chrt_id"]["9002"], 3);

    // Confirm = add to a supply.
    let (s, _, v) = c
        .call(
            Method::POST,
            "/wildberries/api/v3/supplies",
            &[WB_AUTH],
            Some(json!({"name": "Bugun"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let supply = v["id"].as_str().unwrap().to_string();
    let add = format!("/wildberries/api/v3/supplies/{supply}/orders/{id1}");
    let (s, _, _) = c.call(Method::PATCH, &add, &[WB_AUTH], None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, _) = c.call(Method::PATCH, &add, &[WB_AUTH], None).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _, _) = c
        .call(
            Method::PATCH,
            &format!("/wildberries/api/v3/supplies/{supply}/orders/{id2}"),
            &[WB_AUTH],
            None,
        )
        .await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "a cancelled order cannot be supplied"
    );

    // The seller cancels order 3.
    let (s, _, _) = c
        .call(
            Method::PATCH,
            &format!("/wildberries/api/v3/orders/{id3}/cancel"),
            &[WB_AUTH],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, _, v) = c
        .call(
            Method::POST,
            "/wildberries/api/v3/orders/status",
            &[WB_AUTH],
            Some(json!({"orders": [id1, id3]})),
        )
        .await;
    assert_eq!(v["orders"][0]["supplierStatus"], "confirm");
    assert_eq!(v["orders"][1]["supplierStatus"], "cancel");
    let (_, _, v) = c
        .call(
            Method::GET,
            "/wildberries/api/v3/orders/new",
            &[WB_AUTH],
            None,
        )
        .await;
    assert_eq!(v["orders"], json!([]));

    let (s, _, _) = c
        .call(
            Method::GET,
            "/wildberries/api/v3/orders?limit=0&next=0",
            &[WB_AUTH],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, _, v) = c
        .call(
            Method::GET,
            "/wildberries/api/v3/orders?limit=2&next=0",
            &[WB_AUTH],
            None,
        )
        .await;
    assert_eq!(v["orders"].as_array().unwrap().len(), 2);
    assert_eq!(v["next"], id2);
}

#[tokio::test]
async fn wb_cards_list_maps_barcodes_to_chrt_ids() {
    let c = start().await;
    wb_catalogue(&c, 4, true).await;
    let body = |cursor: Value, search: &str| json!({"settings": {"cursor": cursor, "filter": {"withPhoto": -1, "textSearch": search}}});
    let (s, _, v) = c
        .call(
            Method::POST,
            "/wildberries/content/v2/get/cards/list",
            &[WB_AUTH],
            Some(body(json!({"limit": 1}), "")),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let card = &v["cards"][0];
    assert_eq!(card["nmID"], 7001);
    assert_eq!(card["sizes"][0]["chrtID"], 9001);
    assert_eq!(card["sizes"][1]["skus"], json!(["2000000000002"]));
    assert_eq!(v["cursor"]["total"], 1);
    let (_, _, v) = c
        .call(
            Method::POST,
            "/wildberries/content/v2/get/cards/list",
            &[WB_AUTH],
            Some(body(
                json!({"limit": 100, "nmID": 7001, "updatedAt": v["cursor"]["updatedAt"]}),
                "",
            )),
        )
        .await;
    assert_eq!(v["cards"].as_array().unwrap().len(), 1);
    assert_eq!(v["cards"][0]["nmID"], 7002);
    let (_, _, v) = c
        .call(
            Method::POST,
            "/wildberries/content/v2/get/cards/list",
            &[WB_AUTH],
            Some(body(json!({"limit": 100}), "2000000000004")),
        )
        .await;
    assert_eq!(v["cards"][0]["nmID"], 7002);
}

// ---------------------------------------------------------------- Ozon

const OZ_AUTH: [(&str, &str); 2] = [("client-id", "demo-client"), ("api-key", "demo-ozon-key")];

async fn ozon_catalogue(c: &Ctx, n: u64, limits: Value) {
    let products: Vec<Value> = (1..=n)
        .map(|i| json!({"product_id": 800 + i, "offer_id": format!("OF-{i}"), "sku": 5000 + i,
                        "barcode": format!("30000000{i:05}"), "price": "1500.00", "name": format!("Tovar {i}")}))
        .collect();
    c.seed(
        "ozon",
        json!({"clear": true, "products": products, "limits": limits}),
    )
    .await;
}

fn oz_stock(offer: &str, stock: i64) -> Value {
    json!({"offer_id": offer, "stock": stock, "warehouse_id": 1})
}

#[tokio::test]
async fn ozon_auth() {
    let c = start().await;
    let (s, _, v) = c
        .call(
            Method::POST,
            "/ozon/v1/warehouse/list",
            &[],
            Some(json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v["code"], 16);
    assert!(v["details"].is_array());
    let (s, _, v) = c
        .call(
            Method::POST,
            "/ozon/v1/warehouse/list",
            &[("client-id", "demo-client"), ("api-key", "bad")],
            Some(json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(v["code"], 7);
    let (s, _, v) = c
        .call(
            Method::POST,
            "/ozon/v1/warehouse/list",
            &OZ_AUTH,
            Some(json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["result"][0]["warehouse_id"], 1);
}

#[tokio::test]
async fn ozon_stocks_cap_and_the_two_minute_rule_per_item() {
    let c = start().await;
    ozon_catalogue(&c, 101, json!({})).await;
    c.freeze("ozon").await;
    let too_many: Vec<Value> = (1..=101).map(|i| oz_stock(&format!("OF-{i}"), 1)).collect();
    let (s, _, v) = c
        .call(
            Method::POST,
            "/ozon/v2/products/stocks",
            &OZ_AUTH,
            Some(json!({"stocks": too_many})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["code"], 3);

    let first: Vec<Value> = (1..=100).map(|i| oz_stock(&format!("OF-{i}"), i)).collect();
    let (s, _, v) = c
        .call(
            Method::POST,
            "/ozon/v2/products/stocks",
            &OZ_AUTH,
            Some(json!({"stocks": first})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        v["result"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["updated"] == true)
    );
    assert_eq!(v["result"][0]["product_id"], 801);

    // OF-1 again within two minutes is refused, OF-101 (never pushed) in the same request goes in.
    let (s, _, v) = c
        .call(
            Method::POST,
            "/ozon/v2/products/stocks",
            &OZ_AUTH,
            Some(json!({"stocks": [oz_stock("OF-1", 50), {"product_id": "901", "stock": 7, "warehouse_id": 1}]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["result"][0]["updated"], false);
    assert_eq!(v["result"][0]["errors"][0]["code"], "TOO_MANY_REQUESTS");
    assert_eq!(v["result"][1]["updated"], true);
    assert_eq!(v["result"][1]["offer_id"], "OF-101");
    let (_, stock) = c.control(Method::GET, "ozon/stock", None).await;
    assert_eq!(stock["by_offer_id"]["OF-1"], 1);
    assert_eq!(stock["by_offer_id"]["OF-101"], 7);
    assert_eq!(stock["by_barcode"]["3000000000100"], 100);

    c.advance("ozon", 119_000).await;
    let (_, _, v) = c
        .call(
            Method::POST,
            "/ozon/v2/products/stocks",
            &OZ_AUTH,
            Some(json!({"stocks": [oz_stock("OF-1", 50)]})),
        )
        .await;
    assert_eq!(v["result"][0]["updated"], false);
    c.advance("ozon", 1_000).await;
    let (_, _, v) = c
        .call(
            Method::POST,
            "/ozon/v2/products/stocks",
            &OZ_AUTH,
            Some(json!({"stocks": [oz_stock("OF-1", 50)]})),
        )
        .await;
    assert_eq!(v["result"][0]["updated"], true);
    let (_, stock) = c.control(Method::GET, "ozon/stock", None).await;
    assert_eq!(stock["by_offer_id"]["OF-1"], 50);

    // Unknown product: a per-item error; an unknown field: the whole request is refused.
    let (_, _, v) = c
        .call(
            Method::POST,
            "/ozon/v2/products/stocks",
            &OZ_AUTH,
            Some(json!({"stocks": [oz_stock("NOPE", 1)]})),
        )
        .await;
    assert_eq!(v["result"][0]["errors"][0]["code"], "PRODUCT_NOT_FOUND");
    let (s, _, _) = c
        .call(
            Method::POST,
            "/ozon/v2/products/stocks",
            &OZ_AUTH,
            Some(json!({"stocks": [{"offer_id": "OF-2", "stok": 1, "warehouse_id": 1}]})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let stats = c.stats("ozon").await;
    assert_eq!(stats["stock"]["items_updated"], 102);
    assert_eq!(stats["stock"]["rejected_by_code"]["TOO_MANY_REQUESTS"], 2);
    assert_eq!(stats["stock"]["rejected_by_code"]["PRODUCT_NOT_FOUND"], 1);
}

#[tokio::test]
async fn ozon_80_stock_requests_a_minute() {
    let c = start().await;
    ozon_catalogue(&c, 1, json!({"requests_per_second": 100000})).await;
    c.freeze("ozon").await;
    let body = json!({"stocks": [oz_stock("OF-1", 1)]});
    for i in 0..80 {
        let (s, _, _) = c
            .call(
                Method::POST,
                "/ozon/v2/products/stocks",
                &OZ_AUTH,
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "request {i}");
    }
    let (s, _, v) = c
        .call(
            Method::POST,
            "/ozon/v2/products/stocks",
            &OZ_AUTH,
            Some(body.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(v["code"], 8);
    // Other methods are not counted against the stocks window.
    let (s, _, _) = c
        .call(
            Method::POST,
            "/ozon/v1/warehouse/list",
            &OZ_AUTH,
            Some(json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    // 750 ms apart (80 a minute) never hits the limit.
    c.advance("ozon", 60_000).await;
    for _ in 0..100 {
        c.advance("ozon", 750).await;
        let (s, _, _) = c
            .call(
                Method::POST,
                "/ozon/v2/products/stocks",
                &OZ_AUTH,
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    let stats = c.stats("ozon").await;
    assert_eq!(stats["responses_429"], 1);
    assert_eq!(stats["endpoints"]["POST /v2/products/stocks"]["total"], 181);
}

#[tokio::test]
async fn ozon_products_map_offer_ids_to_barcodes() {
    let c = start().await;
    ozon_catalogue(&c, 3, json!({})).await;
    let (s, _, v) = c
        .call(
            Method::POST,
            "/ozon/v3/product/list",
            &OZ_AUTH,
            Some(json!({"filter": {"visibility": "ALL"}, "last_id": "", "limit": 2})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["result"]["total"], 3);
    assert_eq!(v["result"]["items"].as_array().unwrap().len(), 2);
    let last = v["result"]["last_id"].as_str().unwrap().to_string();
    let (_, _, v) = c
        .call(
            Method::POST,
            "/ozon/v3/product/list",
            &OZ_AUTH,
            Some(json!({"last_id": last, "limit": 2})),
        )
        .await;
    assert_eq!(v["result"]["items"][0]["offer_id"], "OF-3");

    let (s, _, v) = c
        .call(
            Method::POST,
            "/ozon/v3/product/info/list",
            &OZ_AUTH,
            Some(json!({"offer_id": ["OF-2"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["items"][0]["id"], 802);
    assert_eq!(v["items"][0]["barcodes"], json!(["3000000000002"]));
    assert_eq!(v["items"][0]["sources"][0]["sku"], 5002);
}

#[tokio::test]
async fn ozon_postings_list_ship_and_cancel() {
    let c = start().await;
    ozon_catalogue(&c, 2, json!({})).await;
    let (s, p1) = c
        .control(
            Method::POST,
            "ozon/orders",
            Some(json!({"items": [{"offer_id": "OF-1", "quantity": 2}, {"offer_id": "OF-2", "price": "990.00"}]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p1}");
    let (_, p2) = c
        .control(
            Method::POST,
            "ozon/orders",
            Some(json!({"items": [{"product_id": 802}]})),
        )
        .await;
    let n1 = p1["posting_number"].as_str().unwrap().to_string();
    let n2 = p2["posting_number"].as_str().unwrap().to_string();

    let now = chrono::Utc::now();
    let list = |status: &str, limit: u64| {
        json!({"dir": "ASC", "filter": {"since": (now - chrono::Duration::days(1)).to_rfc3339(),
               "to": (now + chrono::Duration::days(1)).to_rfc3339(), "status": status},
               "limit": limit, "offset": 0})
    };
    let (s, _, v) = c
        .call(
            Method::POST,
            "/ozon/v3/posting/fbs/list",
            &OZ_AUTH,
            Some(list("awaiting_packaging", 1001)),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["code"], 3);
    let (s, _, _) = c
        .call(
            Method::POST,
            "/ozon/v3/posting/fbs/list",
            &OZ_AUTH,
            Some(json!({"filter": {}, "limit": 10})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "since and to are required");
    let (s, _, v) = c
        .call(
            Method::POST,
            "/ozon/v3/posting/fbs/list",
            &OZ_AUTH,
            Some(list("awaiting_packaging", 1)),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["result"]["has_next"], true);
    let p = &v["result"]["postings"][0];
    assert_eq!(p["posting_number"], n1.as_str());
    assert_eq!(p["status"], "awaiting_packaging");
    assert_eq!(p["products"][0]["offer_id"], "OF-1");
    assert_eq!(p["products"][0]["sku"], 5001);
    assert_eq!(p["products"][0]["quantity"], 2);
    assert_eq!(p["products"][1]["price"], "990.00");

    let ship =
        |number: &str, packages: Value| json!({"posting_number": number, "packages": packages});
    let (s, _, _) = c
        .call(
            Method::POST,
            "/ozon/v4/posting/fbs/ship",
            &OZ_AUTH,
            Some(ship(
                &n1,
                json!([{"products": [{"product_id": 5001, "quantity": 1}]}]),
            )),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "packages must match the posting"
    );
    let full = json!([{"products": [{"product_id": 5001, "quantity": 2}, {"product_id": 5002, "quantity": 1}]}]);
    let (s, _, v) = c
        .call(
            Method::POST,
            "/ozon/v4/posting/fbs/ship",
            &OZ_AUTH,
            Some(ship(&n1, full.clone())),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["result"], json!([n1.as_str()]));
    let (s, _, _) = c
        .call(
            Method::POST,
            "/ozon/v4/posting/fbs/ship",
            &OZ_AUTH,
            Some(ship(&n1, full)),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, _, v) = c
        .call(
            Method::POST,
            "/ozon/v3/posting/fbs/get",
            &OZ_AUTH,
            Some(json!({"posting_number": n1})),
        )
        .await;
    assert_eq!(v["result"]["status"], "awaiting_deliver");

    // The buyer cancels the second posting.
    let (s, _) = c
        .control(Method::POST, &format!("ozon/orders/{n2}/cancel"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, _, v) = c
        .call(
            Method::POST,
            "/ozon/v3/posting/fbs/list",
            &OZ_AUTH,
            Some(list("cancelled", 100)),
        )
        .await;
    assert_eq!(v["result"]["postings"][0]["posting_number"], n2.as_str());
    assert_eq!(
        v["result"]["postings"][0]["cancellation"]["cancellation_initiator"],
        "Клиент"
    );
    assert_eq!(v["result"]["has_next"], false);
    let (_, _, v) = c
        .call(
            Method::POST,
            "/ozon/v3/posting/fbs/list",
            &OZ_AUTH,
            Some(list("awaiting_packaging", 100)),
        )
        .await;
    assert_eq!(v["result"]["postings"], json!([]));

    // The seller cancels the shipped one; a missing posting is code 5.
    let (s, _, v) = c
        .call(
            Method::POST,
            "/ozon/v2/posting/fbs/cancel",
            &OZ_AUTH,
            Some(json!({"posting_number": n1, "cancel_reason_id": 352, "cancel_reason_message": "no stock"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["result"], true);
    let (s, _, v) = c
        .call(
            Method::POST,
            "/ozon/v3/posting/fbs/get",
            &OZ_AUTH,
            Some(json!({"posting_number": "1-1-1"})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["code"], 5);
}

#[tokio::test]
async fn ozon_per_second_limit_covers_every_method() {
    let c = start().await;
    ozon_catalogue(&c, 1, json!({"requests_per_second": 3})).await;
    c.freeze("ozon").await;
    for _ in 0..3 {
        let (s, _, _) = c
            .call(
                Method::POST,
                "/ozon/v1/warehouse/list",
                &OZ_AUTH,
                Some(json!({})),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    let (s, _, v) = c
        .call(
            Method::POST,
            "/ozon/v3/product/list",
            &OZ_AUTH,
            Some(json!({"limit": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(v["code"], 8);
    c.advance("ozon", 1000).await;
    let (s, _, _) = c
        .call(
            Method::POST,
            "/ozon/v3/product/list",
            &OZ_AUTH,
            Some(json!({"limit": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn ozon_reserving_postings_move_marketplace_stock() {
    let c = start().await;
    c.seed(
        "ozon",
        json!({"clear": true, "products": [{"offer_id": "OF-X", "barcode": "123", "stock": 2}]}),
    )
    .await;
    let order = |q: i64| json!({"items": [{"offer_id": "OF-X", "quantity": q}], "reserve": true});
    let (s, _) = c.control(Method::POST, "ozon/orders", Some(order(3))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "more than in stock");
    let (s, p) = c.control(Method::POST, "ozon/orders", Some(order(2))).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let (_, stock) = c.control(Method::GET, "ozon/stock", None).await;
    assert_eq!(stock["by_barcode"]["123"], 0);
    let n = p["posting_number"].as_str().unwrap();
    let (s, _) = c
        .control(
            Method::POST,
            &format!("ozon/orders/{n}/cancel"),
            Some(json!({"initiator": "Ozon"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, stock) = c.control(Method::GET, "ozon/stock", None).await;
    assert_eq!(stock["by_offer_id"]["OF-X"], 2);
    let (s, _) = c
        .control(Method::POST, &format!("ozon/orders/{n}/cancel"), None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "already cancelled");
}

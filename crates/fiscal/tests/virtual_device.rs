//! The virtual fiscal module through the HTTP API: every operation, idempotency, the rules.

mod common;

use std::sync::Arc;

use common::*;
use savdo_fiscal::ManualClock;
use serde_json::json;

const DEV: &str = "till-1";

#[tokio::test]
async fn every_operation_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start(config(dir.path(), vec![virtual_device(DEV)], 5000)).await;
    let api = Api::new(&gw);

    let (code, health) = api.get("/healthz").await;
    assert_eq!((code, health["status"].as_str()), (200, Some("ok")));

    let (code, list) = api.get("/v1/devices").await;
    assert_eq!(code, 200);
    assert_eq!(list["devices"][0]["id"], DEV);
    assert_eq!(list["devices"][0]["driver"], "virtual");
    assert_eq!(list["devices"][0]["shift_open"], false);

    let open = api.open_shift(DEV).await;
    assert_eq!(open["shift_no"], 1);
    let (_, dev) = api.get(&format!("/v1/devices/{DEV}")).await;
    assert_eq!(
        (dev["shift_open"].as_bool(), dev["online"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(dev["terminal_id"], "UZ170703100189");

    let s1 = simple_sale(DEV);
    let (code, r1) = api.post("/v1/receipts/sale", &s1).await;
    assert_eq!(code, 200, "{r1}");
    assert_registered(&r1);
    assert_eq!(r1["receipt_no"], 1);
    assert_eq!(r1["kind"], "sale");
    assert_eq!(r1["total"], s1["total"]);

    let s2 = sale(DEV, vec![item("Choy", 2_500_000, 1000, 0)]);
    let (_, r2) = api.post("/v1/receipts/sale", &s2).await;
    assert_registered(&r2);
    assert_eq!(r2["receipt_no"], 2);
    assert_ne!(r1["fiscal_sign"], r2["fiscal_sign"]);

    let (code, x) = api
        .post(&format!("/v1/devices/{DEV}/reports/x"), &json!({}))
        .await;
    assert_eq!(code, 200, "{x}");
    let sales = s1["total"].as_i64().unwrap() + s2["total"].as_i64().unwrap();
    assert_eq!(x["totals"]["sales_total"], sales);
    assert_eq!(x["totals"]["receipts"], 2);

    let refund = refund_of(&s2);
    let (code, rr) = api.post("/v1/receipts/refund", &refund).await;
    assert_eq!(code, 200, "{rr}");
    assert_registered(&rr);
    assert_eq!(
        (rr["kind"].as_str(), rr["receipt_no"].as_u64()),
        (Some("refund"), Some(3))
    );

    // Returning more than was sold is refused before the device.
    let (code, p) = api.post("/v1/receipts/refund", &refund_of(&s2)).await;
    assert_eq!(code, 422, "{p}");
    assert_eq!(p["errors"][0]["field"], "total");

    let (code, z) = api
        .post(&format!("/v1/devices/{DEV}/shift/close"), &json!({}))
        .await;
    assert_eq!(code, 200, "{z}");
    assert_eq!(z["operation"], "close_shift");
    assert_eq!(z["totals"]["sales_total"], sales);
    assert_eq!(z["totals"]["refunds_total"], s2["total"]);
    assert_eq!(z["totals"]["receipts"], 3);

    let (code, got) = api
        .get(&format!("/v1/receipts/{}", s1["id"].as_str().unwrap()))
        .await;
    assert_eq!(code, 200);
    assert_eq!(got, r1);
    let (code, _) = api
        .get("/v1/receipts/0190a0f0-0000-7000-8000-000000000000")
        .await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn repeats_return_the_first_answer_and_different_bodies_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start(config(dir.path(), vec![virtual_device(DEV)], 5000)).await;
    let api = Api::new(&gw);
    api.open_shift(DEV).await;

    let s = simple_sale(DEV);
    let (_, first) = api.post("/v1/receipts/sale", &s).await;
    assert_registered(&first);
    let (code, again) = api.post("/v1/receipts/sale", &s).await;
    assert_eq!(code, 200);
    assert_eq!(again, first);

    let mut changed = s.clone();
    changed["cashier"] = json!("Someone else");
    let (code, p) = api.post("/v1/receipts/sale", &changed).await;
    assert_eq!(code, 409, "{p}");

    // The same id as a refund is a different request too.
    let mut as_refund = s.clone();
    as_refund["sale_id"] = s["id"].clone();
    let (code, _) = api.post("/v1/receipts/refund", &as_refund).await;
    assert_eq!(code, 409);

    // Nothing was registered twice: the next sale is receipt 2.
    let (_, next) = api.post("/v1/receipts/sale", &simple_sale(DEV)).await;
    assert_eq!(next["receipt_no"], 2);
}

#[tokio::test]
async fn concurrent_repeats_register_once() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start(config(dir.path(), vec![virtual_device(DEV)], 5000)).await;
    let api = Arc::new(Api::new(&gw));
    api.open_shift(DEV).await;
    let s = simple_sale(DEV);
    let mut handles = Vec::new();
    for _ in 0..8 {
        let (api, s) = (api.clone(), s.clone());
        handles.push(tokio::spawn(async move {
            api.post("/v1/receipts/sale", &s).await
        }));
    }
    let mut answers = Vec::new();
    for h in handles {
        let (code, body) = h.await.unwrap();
        assert_eq!(code, 200, "{body}");
        answers.push(body);
    }
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    let (_, next) = api.post("/v1/receipts/sale", &simple_sale(DEV)).await;
    assert_eq!(next["receipt_no"], 2);
}

#[tokio::test]
async fn rule_violations_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start(config(dir.path(), vec![virtual_device(DEV)], 5000)).await;
    let api = Api::new(&gw);
    api.open_shift(DEV).await;

    let mut bad = simple_sale(DEV);
    bad["items"][0]["mxik"] = json!("1020200100");
    bad["items"][1]["package_code"] = json!("");
    bad["items"][1]["vat_amount"] = json!(1);
    bad["payments"]["cash"] = json!(1);
    let (code, p) = api.post("/v1/receipts/sale", &bad).await;
    assert_eq!(code, 422, "{p}");
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "items[0].mxik",
            "items[1].package_code",
            "items[1].vat_amount",
            "payments"
        ]
    );
    assert!(
        p["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("17 digits")
    );

    let many = sale(
        DEV,
        (0..151)
            .map(|i| item(&format!("p{i}"), 1000, 1000, 0))
            .collect(),
    );
    let (code, p) = api.post("/v1/receipts/sale", &many).await;
    assert_eq!(
        (code, p["errors"][0]["field"].as_str()),
        (422, Some("items"))
    );

    let mut wrong_total = simple_sale(DEV);
    wrong_total["total"] = json!(wrong_total["total"].as_i64().unwrap() + 1);
    let (code, p) = api.post("/v1/receipts/sale", &wrong_total).await;
    assert_eq!(code, 422);
    assert!(
        p["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["field"] == "total")
    );

    let mut unknown = simple_sale("nowhere");
    unknown["device_id"] = json!("nowhere");
    let (code, p) = api.post("/v1/receipts/sale", &unknown).await;
    assert_eq!(
        (code, p["errors"][0]["field"].as_str()),
        (422, Some("device_id"))
    );

    // A float where tiyin are expected: the parser names the field.
    let mut float = simple_sale(DEV);
    float["items"][0]["price"] = json!(5000.5);
    let (code, p) = api.post("/v1/receipts/sale", &float).await;
    assert_eq!(
        (code, p["errors"][0]["field"].as_str()),
        (422, Some("items[0].price"))
    );

    let mut missing = simple_sale(DEV);
    missing["items"][0].as_object_mut().unwrap().remove("mxik");
    let (code, p) = api.post("/v1/receipts/sale", &missing).await;
    assert_eq!(
        (code, p["errors"][0]["field"].as_str()),
        (422, Some("items[0].mxik"))
    );

    let refund_unknown = refund_of(&simple_sale(DEV));
    let (code, p) = api.post("/v1/receipts/refund", &refund_unknown).await;
    assert_eq!(
        (code, p["errors"][0]["field"].as_str()),
        (422, Some("sale_id"))
    );

    // Nothing above reached the device.
    let (_, ok) = api.post("/v1/receipts/sale", &simple_sale(DEV)).await;
    assert_eq!(ok["receipt_no"], 1);
}

#[tokio::test]
async fn shift_rules_fail_with_cashier_reasons_and_a_repeat_retries() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let gw = start_with(
        config(dir.path(), vec![virtual_device(DEV)], 5000),
        clock.clone(),
    )
    .await;
    let api = Api::new(&gw);

    let s = simple_sale(DEV);
    let (code, r) = api.post("/v1/receipts/sale", &s).await;
    assert_eq!(code, 200);
    assert_eq!(r["status"], "failed");
    assert!(
        r["reason"].as_str().unwrap().contains("open a shift"),
        "{r}"
    );

    api.open_shift(DEV).await;
    let (_, r) = api.post("/v1/receipts/sale", &s).await;
    assert_registered(&r);

    clock.advance(chrono::Duration::hours(25));
    let late = simple_sale(DEV);
    let (_, r) = api.post("/v1/receipts/sale", &late).await;
    assert_eq!(r["status"], "failed");
    assert!(
        r["reason"].as_str().unwrap().contains("over 24 hours"),
        "{r}"
    );

    let (_, z) = api
        .post(&format!("/v1/devices/{DEV}/shift/close"), &json!({}))
        .await;
    assert_eq!(z["status"], "registered");
    let open = api.open_shift(DEV).await;
    assert_eq!(open["shift_no"], 2);
    let (_, r) = api.post("/v1/receipts/sale", &late).await;
    assert_registered(&r);
    assert_eq!(
        (r["receipt_no"].as_u64(), r["shift_no"].as_u64()),
        (Some(2), Some(2))
    );
}

#[tokio::test]
async fn counters_and_answers_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start(config(dir.path(), vec![virtual_device(DEV)], 5000)).await;
    let api = Api::new(&gw);
    api.open_shift(DEV).await;
    let s = simple_sale(DEV);
    let (_, first) = api.post("/v1/receipts/sale", &s).await;
    assert_registered(&first);
    gw.shutdown().await;

    let gw = start(config(dir.path(), vec![virtual_device(DEV)], 5000)).await;
    let api = Api::new(&gw);
    let (_, again) = api.post("/v1/receipts/sale", &s).await;
    assert_eq!(again, first);
    let (_, next) = api.post("/v1/receipts/sale", &simple_sale(DEV)).await;
    assert_eq!(
        (next["receipt_no"].as_u64(), next["shift_no"].as_u64()),
        (Some(2), Some(1))
    );
}

#[tokio::test]
async fn shift_operations_are_idempotent_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start(config(dir.path(), vec![virtual_device(DEV)], 5000)).await;
    let api = Api::new(&gw);
    let id = uuid::Uuid::now_v7().to_string();
    let body = json!({"id": id, "cashier": "Dilnoza"});
    let (_, a) = api
        .post(&format!("/v1/devices/{DEV}/shift/open"), &body)
        .await;
    let (_, b) = api
        .post(&format!("/v1/devices/{DEV}/shift/open"), &body)
        .await;
    assert_eq!(a["status"], "registered");
    assert_eq!(a, b);
    // Without an id, a second open is a new operation, which the module refuses.
    let (_, c) = api
        .post(&format!("/v1/devices/{DEV}/shift/open"), &json!({}))
        .await;
    assert_eq!(c["status"], "failed");
    assert!(c["reason"].as_str().unwrap().contains("already open"));
    let (code, _) = api.post("/v1/devices/nowhere/shift/open", &json!({})).await;
    assert_eq!(code, 404);
}

/// The worker died after the virtual module registered the receipt but before the journal
/// recorded it: the restarted gateway finds the document by its device ref, no second receipt.
#[tokio::test]
async fn virtual_crash_between_registration_and_commit() {
    use savdo_fiscal::driver::virtual_fm::VirtualFm;
    use savdo_fiscal::driver::{Command, FiscalDriver, Lookup, Outcome};
    use savdo_fiscal::journal::{JobBody, Journal, Submitted};
    use savdo_fiscal::model::{Operation, Receipt};

    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).await.unwrap();
    let fm = VirtualFm::new(
        "UZ170703100189".into(),
        journal.clone(),
        Arc::new(savdo_fiscal::SystemClock),
    );
    let open = Command {
        device_ref: uuid::Uuid::now_v7(),
        op: Operation::OpenShift,
        cashier: "Dilnoza".into(),
        receipt: None,
        original: None,
    };
    assert_eq!(fm.lookup(&open).await.unwrap(), Lookup::NotFound);
    let first = fm.execute(&open).await.unwrap();
    assert!(matches!(first, Outcome::Done(_)));
    assert_eq!(
        fm.execute(&open).await.unwrap(),
        first,
        "same ref, same answer"
    );
    assert_eq!(fm.lookup(&open).await.unwrap(), Lookup::Finished(first));

    let body = simple_sale(DEV);
    let receipt: Receipt = serde_json::from_value(body.clone()).unwrap();
    let id = uuid::Uuid::parse_str(&receipt.id).unwrap();
    let job = match journal
        .submit(
            id,
            DEV,
            Operation::Sale,
            JobBody {
                cashier: receipt.cashier.clone(),
                receipt: Some(receipt.clone()),
            },
        )
        .await
        .unwrap()
    {
        Submitted::New(j) => j,
        other => panic!("unexpected {other:?}"),
    };
    journal.mark_sent(id).await.unwrap();
    let sale = Command {
        device_ref: job.device_ref,
        op: Operation::Sale,
        cashier: receipt.cashier.clone(),
        receipt: Some(receipt),
        original: None,
    };
    let Outcome::Done(printed) = fm.execute(&sale).await.unwrap() else {
        panic!("sale refused");
    };
    journal.close().await;

    let gw = start(config(dir.path(), vec![virtual_device(DEV)], 5000)).await;
    let api = Api::new(&gw);
    let r = api.settled(body["id"].as_str().unwrap()).await;
    assert_registered(&r);
    assert_eq!(r["receipt_no"], printed.receipt_no);
    assert_eq!(r["fiscal_sign"], printed.fiscal_sign.as_str());
    let (_, next) = api.post("/v1/receipts/sale", &simple_sale(DEV)).await;
    assert_eq!(next["receipt_no"], printed.receipt_no + 1);
}

//! The gRPC face on each driver: the same operations and answers as HTTP.

mod common;

use common::*;
use savdo_fiscal::pb::{self, fiscal_client::FiscalClient};
use savdo_fiscal::{DeviceConfig, RunningGateway};
use serde_json::Value;
use tonic::Code;
use tonic::transport::Channel;

const DEV: &str = "till-1";

fn to_pb(v: &Value) -> pb::Receipt {
    pb::Receipt {
        id: v["id"].as_str().unwrap().into(),
        device_id: v["device_id"].as_str().unwrap().into(),
        cashier: v["cashier"].as_str().unwrap().into(),
        items: v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| pb::Item {
                name: i["name"].as_str().unwrap().into(),
                mxik: i["mxik"].as_str().unwrap().into(),
                package_code: i["package_code"].as_str().unwrap().into(),
                unit: 1,
                qty_milli: i["qty_milli"].as_i64().unwrap(),
                price: i["price"].as_i64().unwrap(),
                discount: i["discount"].as_i64().unwrap(),
                vat_percent: 12,
                vat_amount: i["vat_amount"].as_i64().unwrap(),
                labels: vec!["010478001234567821abcdefghijklm".into()],
                commission_tin: String::new(),
            })
            .collect(),
        payments: Some(pb::Payments {
            cash: 0,
            card: v["total"].as_i64().unwrap(),
            other: 0,
        }),
        total: v["total"].as_i64().unwrap(),
        sale_id: v["sale_id"].as_str().unwrap_or("").into(),
    }
}

async fn client(gw: &RunningGateway) -> FiscalClient<Channel> {
    FiscalClient::connect(gw.grpc_url().unwrap()).await.unwrap()
}

fn shift(cashier: &str) -> pb::ShiftRequest {
    pb::ShiftRequest {
        device_id: DEV.into(),
        id: String::new(),
        cashier: cashier.into(),
    }
}

fn check_fiscal(r: &pb::ReceiptResult) {
    assert_eq!(r.status, "registered", "{r:?}");
    assert_eq!(r.fiscal_sign.len(), 12);
    assert_eq!(
        r.qr_url,
        format!(
            "https://ofd.soliq.uz/check?t={}&r={}&c={}&s={}",
            r.terminal_id, r.receipt_no, r.date_time, r.fiscal_sign
        )
    );
}

async fn every_operation(device: DeviceConfig, driver: &str) {
    let dir = tempfile::tempdir().unwrap();
    let gw = start(config(dir.path(), vec![device], 5000)).await;
    let mut c = client(&gw).await;

    let list = c
        .list_devices(pb::ListDevicesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.devices.len(), 1);
    assert_eq!(
        (list.devices[0].id.as_str(), list.devices[0].driver.as_str()),
        (DEV, driver)
    );

    let open = c.open_shift(shift("Aziz")).await.unwrap().into_inner();
    assert_eq!(
        (open.status.as_str(), open.shift_no),
        ("registered", 1),
        "{open:?}"
    );
    let dev = c
        .get_device(pb::GetDeviceRequest { id: DEV.into() })
        .await
        .unwrap()
        .into_inner();
    assert!(dev.online && dev.shift_open, "{dev:?}");

    let sale = simple_sale(DEV);
    let r = c.register_sale(to_pb(&sale)).await.unwrap().into_inner();
    check_fiscal(&r);
    assert_eq!((r.kind.as_str(), r.receipt_no), ("sale", 1));
    let again = c.register_sale(to_pb(&sale)).await.unwrap().into_inner();
    assert_eq!(again, r);

    let x = c.x_report(shift("Aziz")).await.unwrap().into_inner();
    assert_eq!(x.sales_total, sale["total"].as_i64().unwrap(), "{x:?}");

    let refund = c
        .register_refund(to_pb(&refund_of(&sale)))
        .await
        .unwrap()
        .into_inner();
    check_fiscal(&refund);
    assert_eq!((refund.kind.as_str(), refund.receipt_no), ("refund", 2));

    let got = c
        .get_receipt(pb::GetReceiptRequest { id: r.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, r);

    let z = c.close_shift(shift("Aziz")).await.unwrap().into_inner();
    assert_eq!((z.status.as_str(), z.receipts), ("registered", 2), "{z:?}");

    let mut bad = to_pb(&simple_sale(DEV));
    bad.items[0].mxik = "12".into();
    let err = c.register_sale(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("items[0].mxik"), "{}", err.message());

    let mut changed = to_pb(&sale);
    changed.cashier = "Other".into();
    let err = c.register_sale(changed).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    let err = c
        .get_device(pb::GetDeviceRequest {
            id: "nowhere".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn virtual_over_grpc() {
    every_operation(virtual_device(DEV), "virtual").await;
}

#[tokio::test]
async fn atol_over_grpc() {
    let sandbox = savdo_sandbox::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    every_operation(atol_device(DEV, &sandbox.url()), "atol").await;
}

#[tokio::test]
async fn kkmserver_over_grpc() {
    let sandbox = savdo_sandbox::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    every_operation(kkm_device(DEV, &sandbox.url()), "kkmserver").await;
}

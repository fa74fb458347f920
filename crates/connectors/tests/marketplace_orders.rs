//! Marketplace order import against the Uzum, Wildberries and Ozon simulators over HTTP, with
//! the real connectors and the real order poller, on SQLite and (with
//! `SAVDO_TEST_DATABASE_URL`) PostgreSQL: orders become reserved invoices with the
//! marketplace's lines and prices exactly once across repeated polls, a restart, racing
//! pollers, racing importers and a crash between invoice and record; unmapped items and refused
//! reservations put an order into `needs_attention` with a reason and the next poll imports it
//! once mapped; cancellations cancel the invoice and release the stock; `auto_confirm` confirms
//! in the simulators. The orders API is tested in `crates/api/tests/marketplace_orders.rs`.
//!
//! The catalogue links come from the stock half's "products" sync handler, run step by step.

use savdo_connectors::marketplace::orders::{
    ConnectorSource, HubConnectors, ImportOutcome, OrderImporter,
};
use savdo_domain::Qty;
use savdo_storage::InvoiceStatus;
use savdo_storage::marketplace_orders::MarketplaceOrderState;
use savdo_testkit::marketplace::orders::{CHOY, NON, SUV, World, product};
use serde_json::json;
use uuid::Uuid;

savdo_testkit::orders_backend_tests!(
    orders_become_invoices_exactly_once,
    racing_pollers_import_once,
    concurrent_imports_book_once,
    crash_between_invoice_and_record,
    unmapped_items_wait_then_import,
    refused_reservation_needs_attention,
    cancellations_release_the_stock,
    auto_confirm_confirms_in_the_simulators,
);

// ----------------------------------------------------------------------------- engine

async fn orders_become_invoices_exactly_once(w: &World) {
    let uzum = w.integration("uzum", false).await;
    let wb = w.integration("wildberries", false).await;
    let ozon = w.integration("ozon", false).await;
    let u1 = w.order("uzum", &[(CHOY, 2), (NON, 1)]).await;
    let wb1 = w.order("wildberries", &[(CHOY, 1)]).await;
    let o1 = w.order("ozon", &[(NON, 3)]).await;

    let poller = w.poller();
    let polled = w.poll(&poller).await;
    assert_eq!(polled.len(), 3, "each integration polled once: {polled:?}");

    // Uzum: the simulator's prices are in sum, the invoice in tiyin.
    let inv = w.invoice_of("uzum", &u1).await;
    assert_eq!(inv.channel.as_deref(), Some("uzum"));
    assert_eq!(inv.store_id, w.store_id);
    assert_eq!(inv.status, InvoiceStatus::Reserved);
    let lines: Vec<(Uuid, i64, i64)> = inv
        .lines
        .iter()
        .map(|l| (l.product_id, l.qty.milli(), l.price))
        .collect();
    assert_eq!(
        lines,
        vec![
            (w.products[CHOY], 2000, 2_500_000),
            (w.products[NON], 1000, 400_000)
        ]
    );
    assert_eq!(inv.total, 2 * 2_500_000 + 400_000);
    let inv = w.invoice_of("wildberries", &wb1).await;
    assert_eq!(inv.channel.as_deref(), Some("wildberries"));
    assert_eq!(inv.status, InvoiceStatus::Reserved);
    assert_eq!(inv.lines.len(), 1);
    assert_eq!(
        (
            inv.lines[0].product_id,
            inv.lines[0].qty.milli(),
            inv.lines[0].price
        ),
        (w.products[CHOY], 1000, 2_500_000)
    );
    let inv = w.invoice_of("ozon", &o1).await;
    assert_eq!(inv.status, InvoiceStatus::Reserved);
    assert_eq!(
        (
            inv.lines[0].product_id,
            inv.lines[0].qty.milli(),
            inv.lines[0].price
        ),
        (w.products[NON], 3000, 400_000)
    );
    let r = w.record(&uzum, &u1).await;
    assert_eq!(r.state, MarketplaceOrderState::Imported);
    assert_eq!(r.invoice_id, Some(w.invoice_of("uzum", &u1).await.id));
    assert_eq!(
        w.record(&wb, &wb1).await.state,
        MarketplaceOrderState::Imported
    );
    assert_eq!(
        w.record(&ozon, &o1).await.state,
        MarketplaceOrderState::Imported
    );

    // Reserved: Choy 2 (Uzum) + 1 (WB), Non 1 (Uzum) + 3 (Ozon).
    assert_eq!(w.level(CHOY).await, (10, 3, 7));
    assert_eq!(w.level(NON).await, (10, 4, 6));

    // The same orders are still new on the marketplaces: polled again, nothing changes.
    w.poll(&poller).await;
    w.poll(&poller).await;
    // A restart: a new poller on the database opened again.
    let reopened = savdo_storage::connect(&w.db.url).await.unwrap();
    let restarted = w.poller_on(reopened.clone());
    let polled = w.poll(&restarted).await;
    assert_eq!(
        polled.len(),
        3,
        "the cursors and poll rows survive: {polled:?}"
    );
    // A new order after the restart is imported by the new poller.
    let u2 = w.order("uzum", &[(NON, 1)]).await;
    w.poll(&restarted).await;

    assert_eq!(w.invoices().await.len(), 4);
    assert_eq!(
        w.invoice_of("uzum", &u2).await.status,
        InvoiceStatus::Reserved
    );
    assert_eq!(w.level(CHOY).await, (10, 3, 7));
    assert_eq!(w.level(NON).await, (10, 5, 5));
    let imported = w.events("marketplace.order_imported").await;
    assert_eq!(imported.len(), 4, "{imported:?}");
    let ev = imported
        .iter()
        .find(|e| e["external_id"] == u1.as_str())
        .unwrap();
    assert_eq!(ev["type"], "uzum");
    assert_eq!(ev["external_ref"], format!("uzum:{u1}"));
    assert_eq!(ev["integration_id"], uzum.id.to_string());
    assert_eq!(ev["state"], "imported");
    assert!(
        !ev.to_string().contains(savdo_sandbox::uzum::DEFAULT_TOKEN),
        "no credentials in events"
    );
    assert_eq!(w.events("invoice.created").await.len(), 4);
}

async fn racing_pollers_import_once(w: &World) {
    let uzum = w.integration("uzum", false).await;
    let ozon = w.integration("ozon", false).await;
    let mut orders = Vec::new();
    for _ in 0..3 {
        orders.push(("uzum", w.order("uzum", &[(CHOY, 1)]).await));
        orders.push(("ozon", w.order("ozon", &[(NON, 1)]).await));
    }
    // Two processes' pollers on their own connections to the same database.
    let other = savdo_storage::connect(&w.db.url).await.unwrap();
    let (a, b) = (w.poller(), w.poller_on(other));
    let (ra, rb) = tokio::join!(a.poll_due(), b.poll_due());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let polled: Vec<Uuid> = ra.iter().chain(&rb).map(|(i, _)| *i).collect();
    assert_eq!(
        polled.len(),
        2,
        "each integration polled by one of them: {polled:?}"
    );
    assert!(polled.contains(&uzum.id) && polled.contains(&ozon.id));
    // Both again, later: still once.
    w.clock.advance(chrono::Duration::seconds(61));
    let (ra, rb) = tokio::join!(a.poll_due(), b.poll_due());
    ra.unwrap();
    rb.unwrap();
    assert_eq!(w.invoices().await.len(), orders.len());
    for (kind, id) in &orders {
        assert_eq!(w.invoice_of(kind, id).await.status, InvoiceStatus::Reserved);
    }
    assert_eq!(
        w.events("marketplace.order_imported").await.len(),
        orders.len()
    );
    assert_eq!(w.level(CHOY).await, (10, 3, 7));
    assert_eq!(w.level(NON).await, (10, 3, 7));
}

/// The same order imported by two importers at once (no lease between them): one invoice,
/// one record, one event.
async fn concurrent_imports_book_once(w: &World) {
    let uzum = w.integration("uzum", false).await;
    for _ in 0..3 {
        w.order("uzum", &[(CHOY, 1), (NON, 2)]).await;
    }
    let c = HubConnectors::new(w.vault.clone(), w.registry.clone(), w.hub.clone())
        .connector(&uzum)
        .await
        .unwrap();
    let orders = c
        .as_marketplace()
        .unwrap()
        .fetch_new_orders(None)
        .await
        .unwrap();
    assert_eq!(orders.len(), 3);
    let other = savdo_storage::connect(&w.db.url).await.unwrap();
    let (a, b) = (
        OrderImporter::new(w.store.clone()),
        OrderImporter::new(other),
    );
    for o in &orders {
        let (ra, rb) = tokio::join!(a.import(&uzum, o), b.import(&uzum, o));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(ra.record().invoice_id, rb.record().invoice_id);
        let fresh = [&ra, &rb]
            .iter()
            .filter(|r| matches!(r, ImportOutcome::Imported(_, true)))
            .count();
        assert_eq!(fresh, 1, "{ra:?} {rb:?}");
    }
    assert_eq!(w.invoices().await.len(), 3);
    assert_eq!(w.events("marketplace.order_imported").await.len(), 3);
    assert_eq!(w.level(CHOY).await, (10, 3, 7));
    assert_eq!(w.level(NON).await, (10, 6, 4));
}

/// A process that died after creating the invoice and before recording the order: the next
/// poll finds the invoice by its external_ref and records it (no second invoice), and a
/// cancellation of such an order cancels the invoice.
async fn crash_between_invoice_and_record(w: &World) {
    let uzum = w.integration("uzum", false).await;
    let u1 = w.order("uzum", &[(CHOY, 2)]).await;
    let u2 = w.order("uzum", &[(NON, 1)]).await;
    for (id, barcode, qty) in [(&u1, CHOY, 2), (&u2, NON, 1)] {
        w.store
            .create_invoice(
                &w.actor(),
                &savdo_storage::NewInvoice {
                    store_id: w.store_id,
                    customer_id: None,
                    channel: Some("uzum".into()),
                    external_ref: Some(format!("uzum:{id}")),
                    note: None,
                    lines: vec![(w.products[barcode], Qty::units(qty), None)],
                    reserve: true,
                },
            )
            .await
            .unwrap();
    }
    w.cancel_in_sim("uzum", &u2).await;
    let poller = w.poller();
    w.poll(&poller).await;
    let r = w.record(&uzum, &u1).await;
    assert_eq!(r.state, MarketplaceOrderState::Imported);
    assert_eq!(r.invoice_id, Some(w.invoice_of("uzum", &u1).await.id));
    let r = w.record(&uzum, &u2).await;
    assert_eq!(r.state, MarketplaceOrderState::Cancelled);
    assert_eq!(
        w.invoice_of("uzum", &u2).await.status,
        InvoiceStatus::Cancelled
    );
    assert_eq!(w.invoices().await.len(), 2);
    assert_eq!(w.level(CHOY).await, (10, 2, 8));
    assert_eq!(w.level(NON).await, (10, 0, 10));
    assert_eq!(w.events("marketplace.order_imported").await.len(), 1);
    assert_eq!(w.events("marketplace.order_cancelled").await.len(), 1);
}

async fn unmapped_items_wait_then_import(w: &World) {
    let uzum = w.integration("uzum", false).await;
    let ozon = w.integration("ozon", false).await;
    let u1 = w.order("uzum", &[(CHOY, 1), (SUV, 2)]).await;
    let o1 = w.order("ozon", &[(SUV, 1)]).await;
    let poller = w.poller();
    w.poll(&poller).await;

    let r = w.record(&uzum, &u1).await;
    assert_eq!(r.state, MarketplaceOrderState::NeedsAttention);
    assert_eq!(r.invoice_id, None);
    let reason = r.reason.clone().unwrap();
    assert!(
        reason.contains("unmapped item") && reason.contains("103") && reason.contains(SUV),
        "{reason}"
    );
    assert!(
        !reason.contains("101"),
        "only the unmapped item is named: {reason}"
    );
    let r = w.record(&ozon, &o1).await;
    assert_eq!(r.state, MarketplaceOrderState::NeedsAttention);
    assert!(r.reason.unwrap().contains("SUV-1.5"));
    assert!(w.invoices().await.is_empty(), "nothing booked");
    assert_eq!(w.level(CHOY).await, (10, 0, 10));

    // Polled again while still unmapped: retried, still waiting, no second event.
    w.poll(&poller).await;
    assert_eq!(
        w.record(&uzum, &u1).await.state,
        MarketplaceOrderState::NeedsAttention
    );
    assert_eq!(w.events("marketplace.order_needs_attention").await.len(), 2);

    // We start selling Suv: the products sync links it by barcode, the next poll imports.
    let suv = w
        .store
        .create_product(&w.actor(), &product("SUV", "Suv 1.5 l", SUV, 600_000))
        .await
        .unwrap();
    w.products_sync(&uzum, &json!({"token": savdo_sandbox::uzum::DEFAULT_TOKEN}))
        .await;
    w.poll(&poller).await;
    let r = w.record(&uzum, &u1).await;
    assert_eq!(r.state, MarketplaceOrderState::Imported);
    assert_eq!(r.reason, None);
    let inv = w.invoice_of("uzum", &u1).await;
    assert_eq!(inv.status, InvoiceStatus::Reserved);
    let lines: Vec<(Uuid, i64)> = inv
        .lines
        .iter()
        .map(|l| (l.product_id, l.qty.milli()))
        .collect();
    assert_eq!(lines, vec![(w.products[CHOY], 1000), (suv.id, 2000)]);
    // Ozon's catalogue was not synced again: still waiting.
    assert_eq!(
        w.record(&ozon, &o1).await.state,
        MarketplaceOrderState::NeedsAttention
    );
    assert_eq!(w.events("marketplace.order_imported").await.len(), 1);
}

async fn refused_reservation_needs_attention(w: &World) {
    w.store
        .update_settings(&w.actor(), &json!({"forbid_negative_stock": true}))
        .await
        .unwrap();
    let uzum = w.integration("uzum", false).await;
    let u1 = w.order("uzum", &[(NON, 12)]).await;
    let poller = w.poller();
    w.poll(&poller).await;
    let r = w.record(&uzum, &u1).await;
    assert_eq!(r.state, MarketplaceOrderState::NeedsAttention);
    let reason = r.reason.unwrap();
    assert!(
        reason.contains("stock reservation refused") && reason.contains("102"),
        "{reason}"
    );
    assert!(
        w.invoices().await.is_empty(),
        "the refused invoice rolled back"
    );
    assert_eq!(w.level(NON).await, (10, 0, 10));
    // Goods arrive: the next poll books it.
    w.supply(NON, 5).await;
    w.poll(&poller).await;
    assert_eq!(
        w.record(&uzum, &u1).await.state,
        MarketplaceOrderState::Imported
    );
    assert_eq!(w.level(NON).await, (15, 12, 3));
}

async fn cancellations_release_the_stock(w: &World) {
    let uzum = w.integration("uzum", false).await;
    let wb = w.integration("wildberries", false).await;
    let ozon = w.integration("ozon", false).await;
    let u1 = w.order("uzum", &[(CHOY, 2)]).await;
    let u2 = w.order("uzum", &[(CHOY, 1)]).await;
    let wb1 = w.order("wildberries", &[(NON, 1)]).await;
    let o1 = w.order("ozon", &[(NON, 2)]).await;
    let poller = w.poller();
    w.poll(&poller).await;
    assert_eq!(w.level(CHOY).await, (10, 3, 7));
    assert_eq!(w.level(NON).await, (10, 3, 7));

    w.cancel_in_sim("uzum", &u1).await;
    w.cancel_in_sim("wildberries", &wb1).await;
    w.cancel_in_sim("ozon", &o1).await;
    w.poll(&poller).await;
    for (i, kind, id) in [
        (&uzum, "uzum", &u1),
        (&wb, "wildberries", &wb1),
        (&ozon, "ozon", &o1),
    ] {
        let r = w.record(i, id).await;
        assert_eq!(r.state, MarketplaceOrderState::Cancelled, "{kind} {id}");
        assert!(r.cancelled_at.is_some());
        assert!(
            r.reason
                .unwrap()
                .starts_with("cancelled on the marketplace")
        );
        assert_eq!(
            w.invoice_of(kind, id).await.status,
            InvoiceStatus::Cancelled,
            "{kind} {id}"
        );
    }
    // The other Uzum order stays.
    assert_eq!(
        w.record(&uzum, &u2).await.state,
        MarketplaceOrderState::Imported
    );
    assert_eq!(w.level(CHOY).await, (10, 1, 9));
    assert_eq!(w.level(NON).await, (10, 0, 10));

    // The cancellations come again on later polls: applied once.
    w.poll(&poller).await;
    w.poll(&poller).await;
    assert_eq!(w.events("marketplace.order_cancelled").await.len(), 3);
    assert_eq!(w.events("invoice.cancelled").await.len(), 3);
    assert_eq!(w.level(CHOY).await, (10, 1, 9));
    assert_eq!(w.level(NON).await, (10, 0, 10));
    // Releasing the reservation told the rest of Savdo (and the other marketplaces' push).
    let changed = w.events("stock.changed").await;
    assert!(
        changed
            .iter()
            .any(|e| e["product_id"] == w.products[NON].to_string()
                && e["reserved"] == json!(0)
                && e["available"] == json!(10)),
        "{changed:?}"
    );
}

async fn auto_confirm_confirms_in_the_simulators(w: &World) {
    let uzum = w.integration("uzum", true).await;
    let wb = w.integration("wildberries", true).await;
    let ozon = w.integration("ozon", true).await;
    let u1 = w.order("uzum", &[(CHOY, 1)]).await;
    let wb1 = w.order("wildberries", &[(CHOY, 1)]).await;
    let o1 = w.order("ozon", &[(NON, 1)]).await;
    let poller = w.poller();
    let polled = w.poll(&poller).await;
    assert!(
        polled.iter().all(|(_, r)| r.confirmed == 1),
        "one confirm each: {polled:?}"
    );
    for (i, id) in [(&uzum, &u1), (&wb, &wb1), (&ozon, &o1)] {
        let r = w.record(i, id).await;
        assert_eq!(r.state, MarketplaceOrderState::Imported);
        assert!(r.confirmed_at.is_some(), "{} {id} confirmed", i.kind);
        assert_eq!(r.confirm_error, None);
    }
    let sim = w.control_get("uzum", "orders").await;
    let o = sim["orders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["id"] == u1.parse::<u64>().unwrap())
        .unwrap();
    assert_eq!(o["status"], "PACKING");
    let sim = w.control_get("wildberries", "orders").await;
    let list = sim["orders"].as_array().cloned().unwrap_or_default();
    let o = list
        .iter()
        .find(|o| o["id"] == wb1.parse::<u64>().unwrap())
        .unwrap();
    assert_eq!(o["supplierStatus"], "confirm", "{o}");
    let sim = w.control_get("ozon", "orders").await;
    let o = sim["postings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["posting_number"] == o1.as_str())
        .unwrap();
    assert_ne!(o["status"], "awaiting_packaging", "{o}");

    // Confirmed once: the next polls do not confirm again.
    let polled = w.poll(&poller).await;
    assert!(polled.iter().all(|(_, r)| r.confirmed == 0), "{polled:?}");
}

//! Outbound webhooks end to end, on SQLite and (when configured) PostgreSQL, with a manual
//! clock: dispatching, signing, retries, Retry-After, disabling, refusal and rotation.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Duration as Dur;
use common::{Answer, Env, Receiver};
use savdo_bus::{Bus, ConsumerRunner};
use savdo_domain::event::CloudEvent;
use savdo_storage::webhooks::{Delivery, DeliveryStatus, NewWebhook, Webhook, WebhookPatch};
use savdo_storage::{ProductFields, Storage};
use savdo_webhooks::{DeliveryWorker, Dispatcher, RETRY_SCHEDULE, WorkerConfig};
use serde_json::json;

backend_tests!(
    full_path_event_to_signed_delivery,
    dispatcher_matches_and_is_idempotent,
    retries_follow_the_schedule_then_dead,
    retry_after_and_429_back_off,
    disabled_after_five_days_of_failure,
    private_targets_refused_at_delivery,
    rotation_signs_with_both_for_a_day,
    requeue_and_tenant_isolation,
    a_batch_of_events_is_dispatched_together,
);

fn worker(env: &Env, allow_private: bool) -> DeliveryWorker {
    DeliveryWorker::new(
        env.store.clone(),
        env.clock.clone(),
        WorkerConfig {
            allow_private,
            timeout: Duration::from_secs(2),
            ..Default::default()
        },
    )
    .with_vault(env.vault.clone())
}

async fn subscribe(env: &Env, url: &str, events: &[&str]) -> (Webhook, String) {
    let id = savdo_domain::ids::new_id();
    let (secret, sealed) =
        savdo_webhooks::secrets::issue(&env.vault, env.actor.tenant_id, id).unwrap();
    let w = env
        .store
        .create_webhook(
            &env.actor,
            &NewWebhook {
                id,
                url: url.to_string(),
                events: events.iter().map(|s| s.to_string()).collect(),
                description: Some("test".into()),
                secret: sealed,
            },
        )
        .await
        .unwrap();
    assert_eq!(w.id, id);
    (w, secret.expose().to_owned())
}

fn event(env: &Env, kind: &str) -> CloudEvent {
    CloudEvent::new(
        savdo_domain::ids::new_id(),
        env.actor.tenant_id,
        kind,
        env.now(),
        json!({"n": 1}),
    )
}

async fn deliveries(env: &Env, w: &Webhook) -> Vec<Delivery> {
    env.store
        .list_deliveries(env.actor.tenant_id, w.id, 100)
        .await
        .unwrap()
}

async fn only_delivery(env: &Env, w: &Webhook) -> Delivery {
    let d = deliveries(env, w).await;
    assert_eq!(d.len(), 1, "{d:?}");
    d.into_iter().next().unwrap()
}

fn verify_ref(secret: &str, r: &common::Received) {
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(&r.body, &r.headers)
        .expect("the reference library verifies our signature");
}

async fn full_path_event_to_signed_delivery(env: Env) {
    let rx = Receiver::start().await;
    let (w, secret) = subscribe(&env, &rx.url, &["product.created"]).await;
    env.store
        .create_product(
            &env.actor,
            &ProductFields {
                sku: "SKU-1".into(),
                name: "Choy".into(),
                barcodes: vec![],
                price: 1_000_000,
                vat_percent: 12,
                mxik: None,
                package_code: None,
                unit: 796,
                marked: false,
                active: true,
            },
        )
        .await
        .unwrap();
    // Outbox -> bus -> the `webhooks` consumer (through its inbox) -> a delivery row.
    let bus = Bus::in_process();
    savdo_bus::relay::drain(&env.store, &bus).await.unwrap();
    let runner = ConsumerRunner::new(env.store.clone(), env.clock.clone());
    let dispatcher = Dispatcher::with_clock(env.store.clone(), env.clock.clone());
    assert!(runner.poll_outbox(&dispatcher).await.unwrap() >= 1);
    let d = only_delivery(&env, &w).await;
    assert_eq!(d.status, DeliveryStatus::Pending);
    assert_eq!(d.event_type, "product.created");

    assert_eq!(worker(&env, true).run_due_once().await, 1);
    let got = rx.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.headers["webhook-id"], d.event_id.to_string());
    assert_eq!(
        r.headers["webhook-timestamp"],
        env.now().timestamp().to_string()
    );
    let sig = r.headers["webhook-signature"].to_str().unwrap();
    assert!(sig.starts_with("v1,") && !sig.contains(' '), "{sig}");
    // Our own signer and the reference library agree.
    let key = savdo_webhooks::Secret::parse(&secret).unwrap();
    let ts: i64 = r.headers["webhook-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        sig,
        savdo_webhooks::sign(&key, &d.event_id.to_string(), ts, &r.body)
    );
    verify_ref(&secret, r);
    // The body is the CloudEvent.
    let ce: CloudEvent = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(ce.id, d.event_id);
    assert_eq!(ce.kind, "product.created");
    assert_eq!(ce.tenantid, env.actor.tenant_id);
    // The secret appears nowhere in the stored record or the outbox.
    let d = only_delivery(&env, &w).await;
    assert_eq!(d.status, DeliveryStatus::Succeeded);
    assert_eq!(d.attempts, 1);
    assert_eq!(d.response_code, Some(200));
    assert!(d.latency_ms.is_some());
    assert!(d.next_attempt_at.is_none());
    let all = format!("{:?}{:?}", env.outbox(env.actor.tenant_id).await, d);
    assert!(!all.contains(&secret[6..]));
    // Redelivering the same event makes no second delivery.
    assert_eq!(runner.poll_outbox(&dispatcher).await.unwrap(), 0);
    assert_eq!(dispatcher.dispatch(&ce).await.unwrap(), 0);
    assert_eq!(deliveries(&env, &w).await.len(), 1);
}

async fn dispatcher_matches_and_is_idempotent(env: Env) {
    let (exact, _) = subscribe(&env, "http://127.0.0.1:9/a", &["receipt.created"]).await;
    let (all, _) = subscribe(&env, "http://127.0.0.1:9/b", &["*"]).await;
    let (group, _) = subscribe(&env, "http://127.0.0.1:9/c", &["stock.*"]).await;
    let (off, _) = subscribe(&env, "http://127.0.0.1:9/d", &["*"]).await;
    env.store
        .update_webhook(
            &env.actor,
            off.id,
            &WebhookPatch {
                enabled: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let other = env.new_actor("Other shop").await;
    let d = Dispatcher::with_clock(env.store.clone(), env.clock.clone());
    let e = event(&env, "receipt.created");
    assert_eq!(d.dispatch(&e).await.unwrap(), 2);
    assert_eq!(
        d.dispatch(&e).await.unwrap(),
        0,
        "idempotent per (webhook, event)"
    );
    assert_eq!(d.dispatch(&event(&env, "stock.changed")).await.unwrap(), 2);
    assert_eq!(deliveries(&env, &exact).await.len(), 1);
    assert_eq!(deliveries(&env, &all).await.len(), 2);
    assert_eq!(deliveries(&env, &group).await.len(), 1);
    assert_eq!(deliveries(&env, &off).await.len(), 0);
    // Another tenant's event reaches none of these.
    let mut foreign = event(&env, "receipt.created");
    foreign.tenantid = other.tenant_id;
    assert_eq!(d.dispatch(&foreign).await.unwrap(), 0);
    use savdo_bus::Consumer;
    assert_eq!(d.name(), "webhooks");
    assert!(d.accepts("anything.at_all"));
}

async fn retries_follow_the_schedule_then_dead(env: Env) {
    let rx = Receiver::start().await;
    for _ in 0..20 {
        rx.push(Answer {
            body: "x".repeat(5000),
            ..Answer::status(500)
        });
    }
    let (w, _) = subscribe(&env, &rx.url, &["*"]).await;
    let dsp = Dispatcher::with_clock(env.store.clone(), env.clock.clone());
    dsp.dispatch(&event(&env, "receipt.created")).await.unwrap();
    let wk = worker(&env, true);
    for attempt in 1..=8u32 {
        // Nothing is due a moment before its time.
        if attempt > 1 {
            assert_eq!(wk.run_due_once().await, 0, "attempt {attempt} too early");
            let next = only_delivery(&env, &w).await.next_attempt_at.unwrap();
            env.clock.set(next);
        }
        let at = env.now();
        assert_eq!(wk.run_due_once().await, 1, "attempt {attempt}");
        let d = only_delivery(&env, &w).await;
        assert_eq!(d.attempts, attempt);
        assert_eq!(d.response_code, Some(500));
        assert!(d.response_body.as_ref().unwrap().len() <= 2048);
        assert_eq!(d.last_error.as_deref(), Some("HTTP 500"));
        if attempt == 8 {
            assert_eq!(d.status, DeliveryStatus::Dead);
            assert!(d.next_attempt_at.is_none());
        } else {
            assert_eq!(d.status, DeliveryStatus::Failed);
            let wait = (d.next_attempt_at.unwrap() - at).to_std().unwrap();
            let want = RETRY_SCHEDULE[attempt as usize];
            assert!(
                wait >= want.mul_f64(0.9) && wait <= want.mul_f64(1.1),
                "attempt {attempt}: waited {wait:?}, schedule {want:?}"
            );
        }
    }
    env.clock.advance(Dur::days(3));
    assert_eq!(
        wk.run_due_once().await,
        0,
        "dead deliveries are not retried"
    );
    assert_eq!(rx.received().len(), 8);
}

async fn retry_after_and_429_back_off(env: Env) {
    let rx = Receiver::start().await;
    rx.push(Answer {
        headers: vec![("retry-after", "3600".into())],
        ..Answer::status(503)
    });
    rx.push(Answer::status(429));
    let (w, _) = subscribe(&env, &rx.url, &["receipt.created"]).await;
    let dsp = Dispatcher::with_clock(env.store.clone(), env.clock.clone());
    let wk = worker(&env, true);

    dsp.dispatch(&event(&env, "receipt.created")).await.unwrap();
    let t0 = env.now();
    wk.run_due_once().await;
    let d = only_delivery(&env, &w).await;
    assert!(
        d.next_attempt_at.unwrap() - t0 >= Dur::seconds(3600),
        "Retry-After seconds honoured: {d:?}"
    );
    env.clock.set(d.next_attempt_at.unwrap());

    let t1 = env.now();
    wk.run_due_once().await;
    let d = only_delivery(&env, &w).await;
    assert_eq!(d.response_code, Some(429));
    assert!(
        d.next_attempt_at.unwrap() - t1 >= Dur::seconds(60),
        "429 waits at least 60 s"
    );

    // A Retry-After date, on a new event at t1 (the schedule alone would say 5 s).
    let date = (env.now() + Dur::hours(2))
        .to_rfc2822()
        .replace("+0000", "GMT");
    rx.push(Answer {
        headers: vec![("retry-after", date)],
        ..Answer::status(503)
    });
    let (w2, _) = subscribe(&env, &rx.url, &["stock.changed"]).await;
    dsp.dispatch(&event(&env, "stock.changed")).await.unwrap();
    wk.run_due_once().await;
    let d2 = only_delivery(&env, &w2).await;
    let wait = d2.next_attempt_at.unwrap() - env.now();
    assert!(
        wait >= Dur::seconds(7190) && wait <= Dur::seconds(7210),
        "{wait}"
    );
}

async fn disabled_after_five_days_of_failure(env: Env) {
    let rx = Receiver::start().await;
    for _ in 0..10 {
        rx.push(Answer::status(500));
    }
    let (w, secret) = subscribe(&env, &rx.url, &["*"]).await;
    let dsp = Dispatcher::with_clock(env.store.clone(), env.clock.clone());
    let wk = worker(&env, true);
    dsp.dispatch(&event(&env, "receipt.created")).await.unwrap();
    let t0 = env.now();
    wk.run_due_once().await;
    let hook = env
        .store
        .get_webhook(env.actor.tenant_id, w.id)
        .await
        .unwrap();
    assert_eq!(hook.failing_since, Some(t0));
    assert!(hook.enabled);

    // Four days later it still fails but is not disabled yet.
    env.clock.advance(Dur::days(4));
    dsp.dispatch(&event(&env, "receipt.created")).await.unwrap();
    assert!(wk.run_due_once().await >= 1);
    assert!(
        env.store
            .get_webhook(env.actor.tenant_id, w.id)
            .await
            .unwrap()
            .enabled
    );

    env.clock.advance(Dur::days(1) + Dur::minutes(1));
    dsp.dispatch(&event(&env, "receipt.created")).await.unwrap();
    assert!(wk.run_due_once().await >= 1);
    let hook = env
        .store
        .get_webhook(env.actor.tenant_id, w.id)
        .await
        .unwrap();
    assert!(!hook.enabled, "disabled after 5 days of failure");
    assert!(hook.disabled_reason.is_some());
    let outbox = env.outbox(env.actor.tenant_id).await;
    let disabled: Vec<_> = outbox
        .iter()
        .filter(|(t, _)| t == "webhook.disabled")
        .collect();
    assert_eq!(disabled.len(), 1, "{outbox:?}");
    assert_eq!(disabled[0].1["webhook_id"], w.id.to_string());
    assert!(
        !format!("{outbox:?}").contains(&secret[6..]),
        "no secret in events"
    );
    // Disabled endpoints get nothing, not even due retries.
    let n = rx.received().len();
    env.clock.advance(Dur::days(1));
    dsp.dispatch(&event(&env, "receipt.created")).await.unwrap();
    assert_eq!(wk.run_due_once().await, 0);
    assert_eq!(rx.received().len(), n);

    // Re-enabling resets the failure clock; a success keeps it clear.
    let hook = env
        .store
        .update_webhook(
            &env.actor,
            w.id,
            &WebhookPatch {
                enabled: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(hook.enabled && hook.failing_since.is_none() && hook.disabled_reason.is_none());
    rx.script.lock().unwrap().clear();
    dsp.dispatch(&event(&env, "receipt.created")).await.unwrap();
    assert!(wk.run_due_once().await >= 1);
    let hook = env
        .store
        .get_webhook(env.actor.tenant_id, w.id)
        .await
        .unwrap();
    assert!(hook.enabled && hook.failing_since.is_none());
}

async fn private_targets_refused_at_delivery(env: Env) {
    let rx = Receiver::start().await;
    let (w, _) = subscribe(&env, &rx.url, &["*"]).await;
    let dsp = Dispatcher::with_clock(env.store.clone(), env.clock.clone());
    dsp.dispatch(&event(&env, "receipt.created")).await.unwrap();
    assert_eq!(worker(&env, false).run_due_once().await, 1);
    let d = only_delivery(&env, &w).await;
    assert_eq!(d.status, DeliveryStatus::Failed);
    assert!(d.response_code.is_none());
    let err = d.last_error.unwrap();
    assert!(
        err.contains("refused") && err.contains("127.0.0.1"),
        "{err}"
    );
    assert!(rx.received().is_empty(), "nothing was sent");
    // A name that resolves to loopback is refused the same way.
    let url = rx.url.replace("127.0.0.1", "localhost");
    let (w2, _) = subscribe(&env, &url, &["stock.changed"]).await;
    dsp.dispatch(&event(&env, "stock.changed")).await.unwrap();
    worker(&env, false).run_due_once().await;
    assert!(
        only_delivery(&env, &w2)
            .await
            .last_error
            .unwrap()
            .contains("refused")
    );
    assert!(rx.received().is_empty());
}

async fn rotation_signs_with_both_for_a_day(env: Env) {
    let rx = Receiver::start().await;
    let (w, old) = subscribe(&env, &rx.url, &["*"]).await;
    let (new, sealed) =
        savdo_webhooks::secrets::issue(&env.vault, env.actor.tenant_id, w.id).unwrap();
    let new = new.expose().to_owned();
    let rotated = env
        .store
        .rotate_webhook_secret(
            &env.actor,
            w.id,
            &sealed,
            env.now() + savdo_webhooks::ROTATION_OVERLAP,
        )
        .await
        .unwrap();
    assert_eq!(
        rotated.secret,
        format!("whsec_****{}", &new[new.len() - 4..])
    );
    let dsp = Dispatcher::with_clock(env.store.clone(), env.clock.clone());
    let wk = worker(&env, true);
    dsp.dispatch(&event(&env, "receipt.created")).await.unwrap();
    wk.run_due_once().await;
    let r = rx.received().pop().unwrap();
    let sig = r.headers["webhook-signature"].to_str().unwrap().to_string();
    assert_eq!(sig.split(' ').count(), 2, "{sig}");
    verify_ref(&new, &r);
    verify_ref(&old, &r);

    // After 24 hours only the new secret signs. (The reference library checks timestamps
    // against the real time, so this one is checked with our signer.)
    env.clock.advance(Dur::hours(24) + Dur::seconds(1));
    dsp.dispatch(&event(&env, "receipt.created")).await.unwrap();
    wk.run_due_once().await;
    let r = rx.received().pop().unwrap();
    let sig = r.headers["webhook-signature"].to_str().unwrap();
    let id = r.headers["webhook-id"].to_str().unwrap();
    let ts: i64 = r.headers["webhook-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(ts, env.now().timestamp());
    let k = savdo_webhooks::Secret::parse(&new).unwrap();
    assert_eq!(sig, savdo_webhooks::sign(&k, id, ts, &r.body));
}

async fn requeue_and_tenant_isolation(env: Env) {
    let rx = Receiver::start().await;
    rx.push(Answer::status(500));
    let (w, _) = subscribe(&env, &rx.url, &["*"]).await;
    let dsp = Dispatcher::with_clock(env.store.clone(), env.clock.clone());
    dsp.dispatch(&event(&env, "receipt.created")).await.unwrap();
    let wk = worker(&env, true);
    wk.run_due_once().await;
    let d = only_delivery(&env, &w).await;
    assert_eq!(d.status, DeliveryStatus::Failed);
    let other = env.new_actor("Other").await;
    let store: &Arc<dyn Storage> = &env.store;
    assert!(store.get_webhook(other.tenant_id, w.id).await.is_err());
    assert!(
        store
            .requeue_delivery(other.tenant_id, w.id, d.id, env.now())
            .await
            .is_err()
    );
    assert!(
        store
            .list_webhooks(other.tenant_id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.delete_webhook(&other, w.id).await.is_err());
    let q = store
        .requeue_delivery(env.actor.tenant_id, w.id, d.id, env.now())
        .await
        .unwrap();
    assert_eq!(q.status, DeliveryStatus::Pending);
    assert_eq!(q.next_attempt_at, Some(env.now()));
    assert_eq!(wk.run_due_once().await, 1, "re-queued now, sent now");
    let d = only_delivery(&env, &w).await;
    assert_eq!(d.status, DeliveryStatus::Succeeded);
    assert_eq!(d.attempts, 2);
    assert_eq!(rx.received().len(), 2);
    // The same webhook-id across the retry.
    let got = rx.received();
    assert_eq!(got[0].headers["webhook-id"], got[1].headers["webhook-id"]);
    store.delete_webhook(&env.actor, w.id).await.unwrap();
    assert!(store.get_webhook(env.actor.tenant_id, w.id).await.is_err());
}

/// The consumer's batch path: every event of the batch becomes its deliveries (written
/// together), each tenant's only to its own subscriptions, and a redelivered batch adds none.
async fn a_batch_of_events_is_dispatched_together(env: Env) {
    use savdo_bus::Consumer;
    let (receipts, _) = subscribe(&env, "http://127.0.0.1:9/r", &["receipt.created"]).await;
    let (all, _) = subscribe(&env, "http://127.0.0.1:9/all", &["*"]).await;
    let other = env.new_actor("Other shop").await;
    let d = Dispatcher::with_clock(env.store.clone(), env.clock.clone());

    let mut foreign = event(&env, "receipt.created");
    foreign.tenantid = other.tenant_id;
    let batch = [
        event(&env, "receipt.created"),
        event(&env, "stock.changed"),
        foreign,
        event(&env, "receipt.created"),
    ];
    let refs: Vec<&CloudEvent> = batch.iter().collect();
    d.handle_batch(&refs).await.unwrap();
    let ids = |ds: Vec<Delivery>| {
        let mut v: Vec<uuid::Uuid> = ds.into_iter().map(|d| d.event_id).collect();
        v.sort();
        v
    };
    let mut want_receipts = vec![batch[0].id, batch[3].id];
    want_receipts.sort();
    let mut want_all = vec![batch[0].id, batch[1].id, batch[3].id];
    want_all.sort();
    assert_eq!(ids(deliveries(&env, &receipts).await), want_receipts);
    assert_eq!(ids(deliveries(&env, &all).await), want_all);

    // Redelivered (after a crash before the consumer saved its position): nothing new.
    d.handle_batch(&refs).await.unwrap();
    assert_eq!(deliveries(&env, &receipts).await.len(), 2);
    assert_eq!(deliveries(&env, &all).await.len(), 3);
    // A batch nobody subscribed to writes nothing.
    let mut lone = event(&env, "stock.changed");
    lone.tenantid = other.tenant_id;
    d.handle_batch(&[&lone]).await.unwrap();
    assert_eq!(deliveries(&env, &all).await.len(), 3);
}

//! Signing secrets at rest, on SQLite and (when configured) PostgreSQL: sealed by the vault on
//! creation and rotation (nothing readable in the table, the SQLite file or its WAL), re-sealed
//! by a key rotation, rows from before sealing sealed at start, and deliveries verifying with
//! the reference Standard Webhooks library throughout.

mod common;

use std::time::Duration;

use common::{Env, Receiver};
use savdo_domain::event::CloudEvent;
use savdo_storage::webhooks::{NewWebhook, Webhook};
use savdo_webhooks::{DeliveryWorker, Dispatcher, WorkerConfig, reseal_all, seal_at_start};
use serde_json::json;

backend_tests!(
    created_and_rotated_secrets_are_sealed,
    vault_rotation_reseals_and_deliveries_verify,
    plaintext_rows_are_sealed_at_start,
);

fn worker(env: &Env) -> DeliveryWorker {
    DeliveryWorker::new(
        env.store.clone(),
        env.clock.clone(),
        WorkerConfig {
            allow_private: true,
            timeout: Duration::from_secs(2),
            ..Default::default()
        },
    )
    .with_vault(env.vault.clone())
}

async fn subscribe(env: &Env, url: &str) -> (Webhook, String) {
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
                events: vec!["*".into()],
                description: None,
                secret: sealed,
            },
        )
        .await
        .unwrap();
    (w, secret.expose().to_owned())
}

async fn rotate(env: &Env, w: &Webhook) -> String {
    let (new, sealed) =
        savdo_webhooks::secrets::issue(&env.vault, env.actor.tenant_id, w.id).unwrap();
    env.store
        .rotate_webhook_secret(
            &env.actor,
            w.id,
            &sealed,
            env.now() + savdo_webhooks::ROTATION_OVERLAP,
        )
        .await
        .unwrap();
    new.expose().to_owned()
}

/// Send one event and check the reference library verifies it with each of `secrets`.
async fn deliver_and_verify(env: &Env, rx: &Receiver, secrets: &[&str]) {
    let before = rx.received().len();
    let ev = CloudEvent::new(
        savdo_domain::ids::new_id(),
        env.actor.tenant_id,
        "receipt.created",
        env.now(),
        json!({"n": 1}),
    );
    Dispatcher::with_clock(env.store.clone(), env.clock.clone())
        .dispatch(&ev)
        .await
        .unwrap();
    assert_eq!(worker(env).run_due_once().await, 1);
    let got = rx.received();
    assert_eq!(got.len(), before + 1, "one request per delivery");
    let r = got.last().unwrap();
    let sig = r.headers["webhook-signature"].to_str().unwrap();
    assert_eq!(sig.split(' ').count(), secrets.len(), "{sig}");
    for s in secrets {
        standardwebhooks::Webhook::new(s)
            .unwrap()
            .verify(&r.body, &r.headers)
            .expect("the reference library verifies our signature");
    }
}

/// Neither the prefix nor the key material of any of `secrets` is stored readable.
async fn assert_nothing_readable(env: &Env, secrets: &[&str]) {
    let cols = env.secret_columns().await;
    assert!(!cols.is_empty());
    let file = env.sqlite_files();
    for s in secrets {
        let body = &s["whsec_".len()..];
        for c in cols.iter().flatten() {
            assert!(!c.contains(body), "a stored column holds a secret");
        }
        assert!(
            !file.windows(body.len()).any(|w| w == body.as_bytes()),
            "the SQLite file or WAL holds a secret"
        );
    }
    for c in cols.iter().flatten() {
        assert!(
            !c.contains("whsec_"),
            "a stored column holds a secret: {c:.10}"
        );
    }
    assert!(
        !file.windows(6).any(|w| w == b"whsec_"),
        "the SQLite file or WAL holds a `whsec_` secret"
    );
}

async fn created_and_rotated_secrets_are_sealed(env: Env) {
    let rx = Receiver::start().await;
    let (w, old) = subscribe(&env, &rx.url).await;
    assert_eq!(w.secret, format!("whsec_****{}", &old[old.len() - 4..]));
    let new = rotate(&env, &w).await;
    let got = env
        .store
        .get_webhook(env.actor.tenant_id, w.id)
        .await
        .unwrap();
    assert_eq!(got.secret, format!("whsec_****{}", &new[new.len() - 4..]));

    let cols = env.secret_columns().await;
    let key = env.vault.current().active_key_id().to_owned();
    // secret, prev_secret: vault values under the active key; secret_hint: four characters.
    for c in [&cols[0], &cols[1]] {
        assert!(c.as_deref().unwrap().starts_with(&format!("v1:{key}:")));
    }
    assert_eq!(cols[2].as_deref(), Some(&new[new.len() - 4..]));
    assert_nothing_readable(&env, &[&old, &new]).await;
    deliver_and_verify(&env, &rx, &[&new, &old]).await;

    // A sealed secret is bound to its webhook: copied onto another one, it does not open.
    let (other, _) = subscribe(&env, &rx.url).await;
    let sealed = env.secret_columns().await[0].clone().unwrap();
    assert!(
        savdo_webhooks::secrets::open(Some(&env.vault), env.actor.tenant_id, other.id, &sealed)
            .is_err()
    );
}

async fn vault_rotation_reseals_and_deliveries_verify(env: Env) {
    let rx = Receiver::start().await;
    let (w, old) = subscribe(&env, &rx.url).await;
    let new = rotate(&env, &w).await;
    // What `savdo vault rotate` does: a new active key in the key file, then re-sealing.
    let mut vault = savdo_hub::Vault::open(env.vault_dir.path()).unwrap();
    let old_key = vault.active_key_id().to_owned();
    let new_key = vault.rotate().unwrap();
    let report = reseal_all(&env.store, &vault, 1).await.unwrap();
    assert_eq!((report.checked, report.resealed), (1, 1), "{report:?}");
    assert!(report.failed.is_empty());
    let cols = env.secret_columns().await;
    for c in [&cols[0], &cols[1]] {
        assert!(c.as_deref().unwrap().starts_with(&format!("v1:{new_key}:")));
    }
    assert_eq!(cols[2].as_deref(), Some(&new[new.len() - 4..]));
    assert_nothing_readable(&env, &[&old, &new]).await;
    // Nothing is left under the old key, so it can go; the running worker's vault reloads the
    // key file and still signs with both secrets.
    assert!(vault.retire(&old_key).unwrap());
    deliver_and_verify(&env, &rx, &[&new, &old]).await;
    let again = reseal_all(&env.store, &vault, 10).await.unwrap();
    assert_eq!((again.checked, again.resealed), (1, 0));
    // New secrets are sealed under the new key.
    let newest = rotate(&env, &w).await;
    let cols = env.secret_columns().await;
    assert!(
        cols[0]
            .as_deref()
            .unwrap()
            .starts_with(&format!("v1:{new_key}:"))
    );
    deliver_and_verify(&env, &rx, &[&newest, &new]).await;
}

async fn plaintext_rows_are_sealed_at_start(env: Env) {
    let rx = Receiver::start().await;
    let (w, _) = subscribe(&env, &rx.url).await;
    // A row as versions before sealing wrote it: the secret as issued, no hint.
    let legacy = savdo_webhooks::generate_secret();
    env.exec(
        "UPDATE webhooks SET secret = $2, secret_hint = NULL WHERE id = $1",
        &[&legacy],
        w.id,
    )
    .await;
    // Until it is sealed, it still signs.
    deliver_and_verify(&env, &rx, &[&legacy]).await;

    let report = seal_at_start(&env.store, &env.vault).await.unwrap();
    assert_eq!((report.checked, report.resealed), (1, 1), "{report:?}");
    let cols = env.secret_columns().await;
    assert!(cols[0].as_deref().unwrap().starts_with("v1:"));
    assert_eq!(cols[2].as_deref(), Some(&legacy[legacy.len() - 4..]));
    let got = env
        .store
        .get_webhook(env.actor.tenant_id, w.id)
        .await
        .unwrap();
    assert_eq!(
        got.secret,
        format!("whsec_****{}", &legacy[legacy.len() - 4..])
    );
    deliver_and_verify(&env, &rx, &[&legacy]).await;
    let again = seal_at_start(&env.store, &env.vault).await.unwrap();
    assert_eq!(again.resealed, 0);
}

//! The background half of Savdo: the outbox relay and the event consumers, in `savdo serve`
//! (default) or in separate `savdo worker` processes.

use std::sync::Arc;
use std::time::Duration;

use savdo_bus::{Bus, Consumer, ConsumerRunner, relay};
use savdo_domain::clock::SystemClock;
use savdo_storage::Storage;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::BusArgs;

pub async fn start(
    store: Arc<dyn Storage>,
    args: &BusArgs,
    marking: Arc<dyn savdo_hub::MarkingCheck>,
    extra: Vec<Arc<dyn Consumer>>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let bus = match &args.nats_url {
        Some(url) => Bus::nats(url).await?,
        None => Bus::in_process(),
    };
    tracing::info!(bus = bus.kind(), "starting relay and consumers");
    let mut handles = vec![tokio::spawn(relay::run(
        store.clone(),
        bus.clone(),
        stop.clone(),
    ))];
    let clock = Arc::new(SystemClock);
    let runner = ConsumerRunner::new(store.clone(), clock.clone());
    let mut consumers: Vec<Arc<dyn Consumer>> = vec![
        Arc::new(savdo_webhooks::Dispatcher::new(store.clone())),
        Arc::new(savdo_connectors::fiscal_gateway::FiscalConsumer::new(
            store.clone(),
        )),
        Arc::new(savdo_connectors::marking_recheck::MarkingRecheck::new(
            store.clone(),
            marking,
        )),
    ];
    consumers.extend(extra);
    handles.extend(runner.spawn(bus, consumers, stop.clone()));
    let config = savdo_webhooks::WorkerConfig {
        allow_private: args.webhooks_allow_private,
        ..Default::default()
    };
    let deliveries = savdo_webhooks::DeliveryWorker::new(store, clock, config);
    handles.push(tokio::spawn(async move { deliveries.run(stop).await }));
    Ok(handles)
}

/// Integration types and the connectors built for them.
pub fn registry() -> Arc<savdo_hub::Registry> {
    let mut r = savdo_hub::Registry::builtin();
    savdo_connectors::aslbelgisi::register(&mut r);
    savdo_connectors::jowi_club::register(&mut r);
    Arc::new(r)
}

/// Inbound hook handlers by integration type (Payme's and Click's merchant endpoints).
pub fn hook_handlers(
    vault: Arc<savdo_integrations::VaultHandle>,
) -> savdo_integrations::HookRegistry {
    let mut hooks = savdo_integrations::HookRegistry::new();
    hooks.register(
        savdo_connectors::payme::KIND,
        Arc::new(savdo_connectors::payme::PaymeHooks::new(vault)),
    );
    hooks.register(
        savdo_connectors::click::KIND,
        savdo_connectors::click::hooks(),
    );
    savdo_connectors::jowi_club::register_hooks(&mut hooks);
    hooks
}

/// The vault (key file in the data directory or `SAVDO_MASTER_KEY`) and the outbound HTTP stack
/// whose exchanges go to the integration log.
pub fn integration_hub(
    store: Arc<dyn Storage>,
    data_dir: &std::path::Path,
) -> anyhow::Result<(Arc<savdo_integrations::VaultHandle>, savdo_hub::HttpHub)> {
    let vault = savdo_integrations::VaultHandle::open(data_dir)
        .map_err(|e| anyhow::anyhow!("cannot open the credential vault: {e}"))?;
    let sink =
        savdo_integrations::StorageSink::spawn(store, savdo_integrations::sink::DEFAULT_KEEP);
    let hub = savdo_hub::HttpHub::new(Arc::new(SystemClock), sink)
        .map_err(|e| anyhow::anyhow!("cannot build the outbound HTTP stack: {e}"))?;
    Ok((Arc::new(vault), hub))
}

/// Connectors of each tenant's integrations, and the online marking check built on them.
pub fn tenant_connectors(
    store: Arc<dyn Storage>,
    vault: Arc<savdo_integrations::VaultHandle>,
    hub: savdo_hub::HttpHub,
) -> Arc<dyn savdo_hub::MarkingCheck> {
    let resolver = Arc::new(savdo_integrations::ConnectorResolver::new(
        store,
        vault,
        registry(),
        hub,
    ));
    Arc::new(savdo_integrations::TenantMarkingCheck::new(resolver))
}

/// The sync job runner (handlers are registered by the connector issues).
pub fn start_jobs(
    store: Arc<dyn Storage>,
    vault: Arc<savdo_integrations::VaultHandle>,
    hub: savdo_hub::HttpHub,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let runner = savdo_integrations::JobRunner::new(
        store,
        vault,
        registry(),
        Some(hub),
        Arc::new(savdo_integrations::SyncRegistry::new()),
    );
    tokio::spawn(runner.run(stop))
}

/// Everything `serve`, `worker` and `demo` wire the same way: the vault, the outbound stack,
/// the connectors, and the background tasks.
pub struct Platform {
    pub store: Arc<dyn Storage>,
    pub vault: Arc<savdo_integrations::VaultHandle>,
    pub hub: savdo_hub::HttpHub,
    pub marking: Arc<dyn savdo_hub::MarkingCheck>,
}

impl Platform {
    pub fn new(store: Arc<dyn Storage>, data_dir: &std::path::Path) -> anyhow::Result<Platform> {
        let (vault, hub) = integration_hub(store.clone(), data_dir)?;
        let marking = tenant_connectors(store.clone(), vault.clone(), hub.clone());
        Ok(Platform {
            store,
            vault,
            hub,
            marking,
        })
    }

    /// The relay, the consumers, the webhook deliveries and the sync jobs.
    pub async fn start_workers(
        &self,
        bus: &BusArgs,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Vec<JoinHandle<()>>> {
        // The loyalty accrual/refund consumer, on the tenants' `jowi_club` integrations.
        let loyalty: Arc<dyn Consumer> =
            Arc::new(savdo_connectors::loyalty_accrual::LoyaltyAccrual::new(
                self.store.clone(),
                Arc::new(savdo_integrations::ConnectorResolver::new(
                    self.store.clone(),
                    self.vault.clone(),
                    registry(),
                    self.hub.clone(),
                )),
            ));
        let mut handles = start(
            self.store.clone(),
            bus,
            self.marking.clone(),
            vec![loyalty],
            stop.clone(),
        )
        .await?;
        handles.push(start_jobs(
            self.store.clone(),
            self.vault.clone(),
            self.hub.clone(),
            stop,
        ));
        Ok(handles)
    }

    /// The HTTP application's state.
    pub fn app_state(&self, webhooks_allow_private: bool) -> savdo_api::AppState {
        let mut state = savdo_api::AppState::new(self.store.clone(), self.vault.clone());
        state.hub = Some(self.hub.clone());
        state.registry = registry();
        state.marking = Some(self.marking.clone());
        state.webhooks_allow_private = webhooks_allow_private;
        state.hooks = Arc::new(hook_handlers(self.vault.clone()));
        state
    }
}

/// Wait for the workers to stop, but not forever.
pub async fn join(handles: Vec<JoinHandle<()>>) {
    let all = futures_join(handles);
    if tokio::time::timeout(Duration::from_secs(10), all)
        .await
        .is_err()
    {
        tracing::warn!("workers did not stop within 10 s");
    }
}

async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

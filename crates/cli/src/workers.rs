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
    vault: Arc<savdo_integrations::VaultHandle>,
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
    let deliveries = deliveries.with_vault(vault);
    handles.push(tokio::spawn(async move { deliveries.run(stop).await }));
    Ok(handles)
}

/// Integration types and the connectors built for them.
pub fn registry() -> Arc<savdo_hub::Registry> {
    let mut r = savdo_hub::Registry::builtin();
    savdo_connectors::aslbelgisi::register(&mut r);
    savdo_connectors::jowi_club::register(&mut r);
    savdo_connectors::payme::register(&mut r);
    savdo_connectors::click::register(&mut r);
    savdo_connectors::uzum::register(&mut r);
    savdo_connectors::wildberries::register(&mut r);
    savdo_connectors::ozon::register(&mut r);
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
    let sync = sync_registry(store.clone());
    let runner =
        savdo_integrations::JobRunner::new(store, vault, registry(), Some(hub), Arc::new(sync));
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
        // Marketplace stock: the consumer marks items due and wakes the pusher.
        let stock_wake = Arc::new(tokio::sync::Notify::new());
        let marketplace_stock: Arc<dyn Consumer> = Arc::new(
            savdo_connectors::marketplace::stock_push::StockChanges::new(self.store.clone())
                .with_wake(stock_wake.clone()),
        );
        let mut handles = start(
            self.store.clone(),
            bus,
            self.marking.clone(),
            vec![loyalty, marketplace_stock],
            stop.clone(),
            self.vault.clone(),
        )
        .await?;
        handles.push(start_order_poller(
            self.store.clone(),
            self.vault.clone(),
            self.hub.clone(),
            stop.clone(),
        ));
        handles.push(start_stock_pusher(
            self.store.clone(),
            self.vault.clone(),
            self.hub.clone(),
            stock_wake,
            stop.clone(),
        ));
        // Receipts and marking codes whose consumer gave up are settled by periodic passes.
        handles.push(tokio::spawn(
            savdo_connectors::fiscal_reconcile::FiscalReconcile::new(self.store.clone())
                .run(stop.clone()),
        ));
        handles.push(tokio::spawn(
            savdo_connectors::marking_reconcile::MarkingReconcile::new(
                self.store.clone(),
                self.marking.clone(),
            )
            .run(stop.clone()),
        ));
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
        state.sync = Arc::new(sync_registry(self.store.clone()));
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

/// The marketplace order poller (Uzum, Wildberries, Ozon have no order webhooks): every
/// `SAVDO_MARKETPLACE_POLL_SECS` seconds (default 60) per integration, under a lease so that
/// several processes share the integrations.
pub fn start_order_poller(
    store: Arc<dyn Storage>,
    vault: Arc<savdo_integrations::VaultHandle>,
    hub: savdo_hub::HttpHub,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    use savdo_connectors::marketplace::orders::{
        HubConnectors, OrderPoller, PollerConfig, marketplace_kinds,
    };
    let registry = registry();
    let mut config = PollerConfig::default();
    if let Some(secs) = std::env::var("SAVDO_MARKETPLACE_POLL_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
    {
        config.interval = Duration::from_secs(secs);
    }
    let poller = OrderPoller::new(
        store,
        Arc::new(HubConnectors::new(vault, registry.clone(), hub)),
        marketplace_kinds(&registry),
        Arc::new(SystemClock),
        config,
    );
    tokio::spawn(poller.run(stop))
}

/// Sync handlers by (integration type, what): the marketplaces' "products", "stock" and
/// "prices" jobs.
pub fn sync_registry(store: Arc<dyn Storage>) -> savdo_integrations::SyncRegistry {
    let mut sync = savdo_integrations::SyncRegistry::new();
    let engine = savdo_connectors::marketplace::stock_push::system_engine(store);
    savdo_connectors::marketplace::mapping::register_sync(&mut sync, engine, None);
    sync
}

/// The marketplace stock and price pusher (one request at a time per integration, across
/// processes through a lease in storage).
pub fn start_stock_pusher(
    store: Arc<dyn Storage>,
    vault: Arc<savdo_integrations::VaultHandle>,
    hub: savdo_hub::HttpHub,
    wake: Arc<tokio::sync::Notify>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    use savdo_connectors::marketplace::stock_push::{ConnectorPool, StockPusher, system_engine};
    let pool = Arc::new(ConnectorPool::new(vault, registry(), hub));
    let pusher = StockPusher::new(system_engine(store), pool).with_wake(wake);
    tokio::spawn(pusher.run(stop))
}

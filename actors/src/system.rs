//! Wiring: opens the store, starts every actor under its supervisor on its own arbiter, and
//! connects them. The returned [`Actors`] holds only addresses; it is how the HTTP layer talks to
//! the actor system.
//!
//! Arbiters: the registry, the sweeper and the metrics collector share one thread (they talk
//! most: on a thread of its own the collector was woken for nearly every event, and those
//! wake-ups cost about 7% of the service's CPU per create; a scrape's encoding holds the thread
//! for about 0.3 ms). The fallback notifier gets its own, so a slow fsync in the file channel
//! never stalls approvals. sled flushes run on the group-commit thread, not on any arbiter.
//! Each arbiter's thread is named after its job (`threads`).

use std::time::Duration;

use actix::prelude::*;

use crate::fallback::{FallbackNotifier, FallbackSettings};
use crate::metrics::MetricsCollector;
use crate::registry::{ApprovalRegistry, Notifiers, RegistrySettings};
use crate::store::postgres::backend::{PgBackendSettings, PgStore};
use crate::store::{ApprovalStore, Channel, Queues, SledStore, StoreError};
use crate::supervision::{ActorHealth, Crash, Ping};
use crate::sweeper::{Connect, TimeoutSweeper};
use crate::telegram::gateway::{self, GatewayStore, TelegramGateway, TelegramSettings};
use crate::threads;

pub struct SystemSettings {
    pub store_path: std::path::PathBuf,
    /// sled's page cache, bytes.
    pub store_cache_bytes: u64,
    /// A commit running longer than this makes the store (and readiness) unhealthy.
    pub commit_stall: Duration,
    /// How often sled is flushed and the journal cut.
    pub checkpoint_every: Duration,
    pub registry: RegistrySettings,
    pub check_interval: Duration,
    pub fallback: FallbackSettings,
    /// `None` = Telegram off: the registry tells the fallback channels directly.
    pub telegram: Option<TelegramSettings>,
    /// Configured callback secret (empty = generated and kept in sled).
    pub callback_secret: Option<String>,
    /// With Telegram on, also tell the fallback channels about every change (not only when
    /// Telegram cannot deliver).
    pub fallback_always: bool,
    /// `Some`: the PostgreSQL backend (the sled settings above are then unused).
    pub postgres: Option<PgBackendSettings>,
}

/// The store the actors share, either backend, as its two contracts.
struct Opened {
    approvals: std::sync::Arc<dyn ApprovalStore>,
    queues: Queues,
    postgres: Option<PgStore>,
}

fn open_store(settings: &SystemSettings) -> Result<Opened, StoreError> {
    if let Some(pg) = &settings.postgres {
        let store = PgStore::open(pg.clone()).map_err(|e| StoreError::Postgres(e.to_string()))?;
        return Ok(Opened {
            approvals: std::sync::Arc::new(store.clone()),
            queues: store.queues(),
            postgres: Some(store),
        });
    }
    let store = SledStore::open_with_cache(&settings.store_path, settings.store_cache_bytes)?;
    store.report_stalls_after(settings.commit_stall);
    store.checkpoint_every(settings.checkpoint_every);
    Ok(Opened {
        queues: store.queues(),
        approvals: std::sync::Arc::new(store),
        postgres: None,
    })
}

/// Addresses of the running actors. Cheap to clone.
#[derive(Clone)]
pub struct Actors {
    pub registry: Addr<ApprovalRegistry>,
    pub sweeper: Addr<TimeoutSweeper>,
    pub metrics: Addr<MetricsCollector>,
    pub fallback: Addr<FallbackNotifier>,
    pub telegram: Option<Addr<TelegramGateway>>,
    /// Webhook mode: the secret Telegram sends in `X-Telegram-Bot-Api-Secret-Token`.
    pub telegram_webhook_secret: Option<std::sync::Arc<str>>,
    /// Pending approvals as they come and go, for the web console's live stream.
    pub feed: crate::feed::Feed,
    /// The time deadlines are decided by (the store's, [`crate::clock`]): for the HTTP side's
    /// own reckoning against an approval's deadline (how long a hook may hold).
    pub clock: crate::clock::Clock,
}

/// The running actor system; stop it with [`ActorSystem::stop`] to release the store.
pub struct ActorSystem {
    pub actors: Actors,
    arbiters: Vec<Arbiter>,
}

impl ActorSystem {
    /// Must be called from inside a running actix `System`.
    pub fn start(settings: SystemSettings) -> Result<Self, StoreError> {
        let Opened {
            approvals: store,
            queues: store_queues,
            postgres,
        } = open_store(&settings)?;

        let core = Arbiter::new();
        let notify_arbiter = Arbiter::new();
        threads::name_arbiter(&core, "ag-core");
        threads::name_arbiter(&notify_arbiter, "ag-notify");

        let metrics = Supervisor::start_in_arbiter(&core.handle(), |_| MetricsCollector::new());
        let metrics_recipient = metrics.clone().recipient();

        let fallback_queues = settings.fallback.queues();
        let fallback_settings = settings.fallback;
        let recipient = metrics_recipient.clone();
        let queues = store_queues.clone();
        let fallback = Supervisor::start_in_arbiter(&notify_arbiter.handle(), move |_| {
            FallbackNotifier::new(fallback_settings, queues, recipient)
        });

        let check_interval = settings.check_interval;
        let recipient = metrics_recipient.clone();
        let clock = store.clock();
        let sweeper_clock = clock.clone();
        let sweeper = Supervisor::start_in_arbiter(&core.handle(), move |_| {
            TimeoutSweeper::new(check_interval, recipient, sweeper_clock.clone())
        });

        let mut telegram_arbiter = None;
        let mut telegram_webhook_secret = None;
        let telegram = match settings.telegram {
            Some(mut telegram_settings) => {
                let gateway_queues = store_queues.clone();
                let secret =
                    gateway::callback_secret(&gateway_queues, settings.callback_secret.as_deref())?;
                if let Some(webhook) = &mut telegram_settings.webhook {
                    webhook.secret =
                        gateway::webhook_secret(&gateway_queues, Some(&webhook.secret))?;
                    telegram_webhook_secret = Some(std::sync::Arc::from(webhook.secret.as_str()));
                }
                let gateway_store = GatewayStore {
                    queues: gateway_queues,
                    // What Telegram cannot deliver is handed to these; with `fallback.always`
                    // they heard of every change from the registry already, and a hand-over
                    // would announce it twice.
                    fallback_channels: if settings.fallback_always {
                        Vec::new()
                    } else {
                        fallback_queues.clone()
                    },
                };
                // Open the outbox here, so a damaged store stops start-up instead of looping
                // in the supervisor.
                let gateway = TelegramGateway::new(
                    telegram_settings,
                    gateway_store,
                    secret,
                    fallback.clone(),
                    metrics_recipient.clone(),
                )?;
                let arbiter = Arbiter::new();
                threads::name_arbiter(&arbiter, "ag-telegram");
                let addr = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| gateway);
                telegram_arbiter = Some(arbiter);
                Some(addr)
            }
            None => None,
        };
        // Which queues hear of every change: Telegram's when it is on; the fallback channels'
        // when Telegram is off or `fallback.always` is set (otherwise the gateway hands them
        // what Telegram cannot deliver).
        let mut notifiers = Notifiers::default();
        if let Some(gateway) = &telegram {
            notifiers.channels.push(Channel::Telegram);
            notifiers
                .wake
                .insert(Channel::Telegram, gateway.clone().recipient());
        }
        for &queue in &fallback_queues {
            if telegram.is_none() || settings.fallback_always {
                notifiers.channels.push(queue);
            }
            notifiers.wake.insert(queue, fallback.clone().recipient());
        }
        let registry_settings = settings.registry;
        let sweeper_addr = sweeper.clone();
        let registry_queues = store_queues;
        let feed = crate::feed::Feed::default();
        let registry_feed = feed.clone();
        let registry = Supervisor::start_in_arbiter(&core.handle(), move |_| {
            ApprovalRegistry::new(
                store,
                registry_queues,
                registry_settings,
                sweeper_addr,
                notifiers,
                metrics_recipient,
                registry_feed,
            )
        });
        sweeper.do_send(Connect(registry.clone().recipient()));
        if let Some(postgres) = &postgres {
            postgres.listen(registry.clone().recipient());
        }
        if let Some(gateway) = &telegram {
            gateway.do_send(gateway::Connect(registry.clone()));
        }

        let arbiters = [Some(core), Some(notify_arbiter), telegram_arbiter]
            .into_iter()
            .flatten()
            .collect();
        Ok(Self {
            actors: Actors {
                registry,
                sweeper,
                metrics,
                fallback,
                telegram,
                telegram_webhook_secret,
                feed,
                clock,
            },
            arbiters,
        })
    }

    /// Stop every arbiter and wait for their threads, which drops the actors and, with the
    /// registry, the store (final flush included).
    pub fn stop(mut self) {
        let arbiters = std::mem::take(&mut self.arbiters);
        // The actors' addresses go first (`Drop` below finds no arbiter left to stop).
        drop(self);
        for arbiter in &arbiters {
            arbiter.stop();
        }
        for arbiter in arbiters {
            let _ = arbiter.join();
        }
    }
}

impl Drop for ActorSystem {
    /// Dropped without [`ActorSystem::stop`] (its owner's runtime was torn down first, as a
    /// test's is when it returns): the arbiters are still told to stop, so that their actors
    /// and the store they hold (its pool, its timers, its reconnects) do not outlive the
    /// system. Not joined: this may run on any thread.
    fn drop(&mut self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}

/// The names fault injection and health use for each actor.
pub const ACTOR_NAMES: [&str; 5] = [
    crate::registry::NAME,
    crate::sweeper::NAME,
    crate::metrics::NAME,
    crate::fallback::NAME,
    gateway::NAME,
];

impl Actors {
    /// Ping every actor; `None` for an actor that did not answer within `timeout`.
    pub async fn ping_all(&self, timeout: Duration) -> Vec<PingResult> {
        let telegram = async {
            match &self.telegram {
                Some(gateway) => Some(timed(gateway::NAME, gateway, timeout).await),
                None => None,
            }
        };
        let (a, b, c, d, e) = futures_util::join!(
            timed(crate::registry::NAME, &self.registry, timeout),
            timed(crate::sweeper::NAME, &self.sweeper, timeout),
            timed(crate::metrics::NAME, &self.metrics, timeout),
            timed(crate::fallback::NAME, &self.fallback, timeout),
            telegram,
        );
        [a, b, c, d].into_iter().chain(e).collect()
    }

    /// Make the named actor panic in a handler or a timer (fault injection). False for an
    /// unknown name.
    pub fn crash(&self, actor: &str, in_timer: bool) -> bool {
        let crash = Crash { in_timer };
        match actor {
            crate::registry::NAME => self.registry.do_send(crash),
            crate::sweeper::NAME => self.sweeper.do_send(crash),
            crate::metrics::NAME => self.metrics.do_send(crash),
            crate::fallback::NAME => self.fallback.do_send(crash),
            gateway::NAME => match &self.telegram {
                Some(gateway) => gateway.do_send(crash),
                None => return false,
            },
            _ => return false,
        }
        true
    }
}

/// One actor's answer to a ping and how long it took, or `None` if it did not answer in time.
pub type PingResult = (&'static str, Option<(ActorHealth, Duration)>);

async fn timed<A>(name: &'static str, addr: &Addr<A>, timeout: Duration) -> PingResult
where
    A: Actor<Context = Context<A>> + Handler<Ping>,
{
    let started = std::time::Instant::now();
    let answer = addr.send(Ping).timeout(timeout).await.ok();
    (name, answer.map(|health| (health, started.elapsed())))
}

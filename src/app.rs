//! The wiring, in one place: a loaded config becomes the store, the Persona client, the mailer
//! and its templates: the parts of the jobs' context that `run`, `once`, `demo` and the tests share.
//! Every part that can be wrong is reported naming its place.

use std::sync::Arc;

use anyhow::Context as _;

use crate::config::Config;
use crate::mail::{MailSettings, Mailer, Sender, Templates, Transport};
use crate::persona::{BudgetFuture, ClientConfig, PersonaClient, SharedBudget};
use crate::store::{Store, StoreOptions, coordination};

/// How to open the configured database: a SQLite file, or PostgreSQL with its password.
pub fn store_options(config: &Config) -> StoreOptions {
    StoreOptions {
        location: config.database.location.clone(),
        busy_timeout: config.database.busy_timeout,
        read_connections: config.database.read_connections,
        password: config.database.password.clone(),
    }
}

/// The configured database, opened but not migrated (`migrate` reports what it applies).
pub async fn open_store_unmigrated(config: &Config) -> anyhow::Result<Store> {
    Ok(Store::open(&store_options(config)).await?)
}

/// Opens the configured database and brings its schema up to date.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let store = open_store_unmigrated(config).await?;
    store.migrate().await?;
    Ok(store)
}

/// The configured client; `max_retries` overrides the config (`check` asks once, it diagnoses).
pub fn persona_client(config: &Config, max_retries: Option<u32>) -> anyhow::Result<PersonaClient> {
    let key = config.persona.require_api_key()?.clone();
    Ok(PersonaClient::new(ClientConfig {
        api_base: config.persona.api_base.clone(),
        api_version: config.persona.api_version.clone(),
        api_key: key,
        requests_per_minute: config.persona.requests_per_minute,
        timeout: config.persona.timeout,
        max_retries: max_retries.unwrap_or(config.persona.max_retries),
        retry_base_delay: config.persona.retry_base_delay,
    })?)
}

pub fn mail_settings(config: &Config) -> MailSettings {
    MailSettings {
        transport: config.mail.transport,
        smtp_url: config.mail.smtp_url.clone(),
        smtp_password: config.mail.smtp_password.clone(),
        file_dir: config.mail.file_dir.clone(),
        messages_per_minute: config.mail.messages_per_minute,
        send_timeout: config.mail.timeout,
    }
}

pub fn sender(config: &Config) -> Sender {
    Sender {
        from: config.mail.from.clone(),
        reply_to: config.mail.reply_to.clone(),
        app_name: config.mail.app_name.clone(),
        support_email: config.mail.support_email.clone(),
    }
}

pub fn load_templates(config: &Config) -> anyhow::Result<Arc<Templates>> {
    Ok(Arc::new(Templates::load(&config.templates.dir)?))
}

/// The parts a job run works with, wired from the config; `jobs::JobContext::new` adds the
/// clock, the stop token and the settings. (This module sits below jobs: it never names them.)
pub struct Parts {
    pub store: Store,
    pub persona: PersonaClient,
    pub mailer: Mailer,
}

/// The configured parts; `transport` replaces the configured one (tests, demo).
pub async fn build(config: &Config, transport: Option<Transport>) -> anyhow::Result<Parts> {
    build_with_store(config, transport, None).await
}

/// As `build`, keeping `store` when it is the configured database (a reload).
pub async fn build_with_store(
    config: &Config,
    transport: Option<Transport>,
    store: Option<Store>,
) -> anyhow::Result<Parts> {
    let templates = load_templates(config)?;
    let persona = persona_client(config, None)?;
    let transport = match transport {
        Some(t) => t,
        None => Transport::from_settings(&mail_settings(config))
            .with_context(|| format!("{}: [mail]", config.source.display()))?,
    };
    let mailer = Mailer::new(transport, templates, &sender(config))?;
    let store = match store {
        Some(s) if *s.location() == config.database.location => s,
        _ => open_store(config).await?,
    };
    if coordination::shared_by_replicas(&store) {
        persona.share_budget(Arc::new(StoreBudget(store.clone())));
    }
    Ok(Parts {
        store,
        persona,
        mailer,
    })
}

/// The replicas' shared Persona budget, kept in the database (see
/// [`coordination::take_budget_slot`]); persona sees only [`SharedBudget`].
struct StoreBudget(Store);

impl SharedBudget for StoreBudget {
    fn take(&self, period: std::time::Duration, burst: u32) -> BudgetFuture<'_> {
        Box::pin(async move {
            coordination::take_budget_slot(&self.0, period, burst)
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })
    }
}

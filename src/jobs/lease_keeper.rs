//! Keeps this process's user leases alive while a run works on them: [`LEASE`] is short so a
//! killed replica's users are taken by another within it, and a heartbeat renews the leases
//! of the users still in hand, so a slow user (Persona retries) is not taken from a live one.

use std::time::Duration;

use super::{JobContext, LEASE};
use crate::store::{coordination, user_states};

/// How often the leases are renewed: three times per lease, so one late renewal loses none.
pub const RENEW_EVERY: Duration = Duration::from_secs(10);

/// Renews until dropped.
pub struct LeaseKeeper(tokio::task::JoinHandle<()>);

impl LeaseKeeper {
    pub fn start(ctx: &JobContext) -> LeaseKeeper {
        let (store, clock) = (ctx.store.clone(), ctx.clock.clone());
        LeaseKeeper(tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                let now = clock.now();
                let until = now + LEASE;
                if let Err(e) =
                    coordination::renew_user_leases(&store, user_states::lease_owner(), now, until)
                        .await
                {
                    tracing::warn!(error = %e, "cannot renew the user leases");
                }
            }
        }))
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

//! The one task that runs the write steps' scripts ([`super::Store::run_script`]), one after
//! another on the write connection.
//!
//! Two things it saves over acquiring the connection per step: sqlx returns a pooled connection
//! through a task of its own that pings the connection's thread first — a hand-off as dear as
//! the step itself — and a step needs a task of its own anyway, so that a caller dropped
//! half-way cannot leave `BEGIN` without `COMMIT`. Here the task is this one, and while steps
//! are queued it keeps the connection for the next one (at most [`HOLD_FOR_STEPS`] in a row,
//! then it lets the others waiting for the writer in).

use sqlx::SqlitePool;
use sqlx::sqlite::SqliteRow;
use tokio::sync::{mpsc, oneshot};

use super::{Result, Script, StoreError};

/// Steps run in a row before the connection goes back to the pool, so claims, discovery and
/// other writers wait at most this many steps.
const HOLD_FOR_STEPS: usize = 32;

pub(super) struct Step {
    pub script: Script,
    pub reply: oneshot::Sender<Result<Vec<SqliteRow>>>,
}

/// Starts the runner on the current runtime; it ends when every sender is gone.
pub(super) fn start(write: SqlitePool) -> mpsc::UnboundedSender<Step> {
    let (steps, queue) = mpsc::unbounded_channel();
    tokio::spawn(run(write, queue));
    steps
}

async fn run(write: SqlitePool, mut queue: mpsc::UnboundedReceiver<Step>) {
    while let Some(first) = queue.recv().await {
        let mut conn = match write.acquire().await {
            Ok(conn) => conn,
            Err(e) => {
                let _ = first.reply.send(Err(StoreError::from(e)));
                continue;
            }
        };
        let mut next = Some(first);
        let mut ran = 0;
        while let Some(step) = next.take() {
            let result = match step.script.fetch_all(&mut *conn).await {
                Ok(rows) => Ok(rows),
                Err(e) => {
                    // Fails harmlessly ("no transaction is active") when BEGIN itself failed.
                    let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                    Err(StoreError::from(e))
                }
            };
            // The caller may be gone; the step is done either way.
            let _ = step.reply.send(result);
            ran += 1;
            if ran < HOLD_FOR_STEPS {
                next = queue.try_recv().ok();
            }
        }
    }
}

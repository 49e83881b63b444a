//! `on_both!(name)`: a test body `async fn name(Backend)` run once per backend, as
//! `name::sqlite` and `name::postgres`, so the PostgreSQL arm is held to what SQLite does.

/// `mod $name { sqlite, postgres }`: the async body `$name(Backend)` once per backend.
macro_rules! on_both {
    ($name:ident) => {
        mod $name {
            use crate::support::stack::Backend;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(Backend::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(Backend::Postgres).await
            }
        }
    };
}

//! [`backend_tests!`]: a scenario written once runs on every storage
//! backend (SQLite and PostgreSQL), so a new scenario cannot forget one.
//!
//! `backend_tests!(name, |db| scenario(db))` expands to a module `name`
//! holding two tests, `name::sqlite` and `name::postgres`; each builds a
//! fresh [`TestDb`](super::TestDb) of its backend (PostgreSQL: a new
//! database named after `name`) and awaits the body. `|a, b|` gives two
//! fresh databases of the same backend (a run and its reference run).
//! A leading `#[tokio::test(...)]` replaces the default runtime
//! (`multi_thread`, 2 workers). The module sees its parent's items
//! (`use super::*`), so the body calls the file's scenario functions as
//! written.

/// See the module doc.
macro_rules! backend_tests {
    ($name:ident, |$($db:ident),+| $body:expr) => {
        backend_tests!(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $name, |$($db),+| $body
        );
    };
    (#[$rt:meta] $name:ident, |$($db:ident),+| $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[$rt]
            async fn sqlite() {
                $(let $db = $crate::common::TestDb::sqlite();)+
                $body.await
            }

            #[$rt]
            async fn postgres() {
                $(let $db = $crate::common::TestDb::postgres(stringify!($name)).await;)+
                $body.await
            }
        }
    };
}

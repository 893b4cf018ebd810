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
//!
//! A test here also checks that any hand-written `…_sqlite` test still has
//! its `…_postgres` twin.

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

/// Scenarios not (yet) written with [`backend_tests!`] (the property test
/// runs a different case count per backend) still come in pairs: every
/// `fn …_sqlite` in this binary's files has its `fn …_postgres`, and back.
#[test]
fn hand_written_backend_pairs_are_complete() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it");
    let mut names = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, _) in text.match_indices("fn ") {
            let name: String = text[i + 3..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            names.insert(name);
        }
    }
    for name in &names {
        for (this, other) in [("_sqlite", "_postgres"), ("_postgres", "_sqlite")] {
            if let Some(stem) = name.strip_suffix(this) {
                assert!(
                    names.contains(&format!("{stem}{other}")),
                    "{name} has no {stem}{other}: write the scenario with backend_tests!"
                );
            }
        }
    }
    assert!(names.contains("any_order_converges_to_newest_rev_sqlite"));
}

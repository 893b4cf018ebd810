//! The module graph stays acyclic: `main → cmd → components → pure core`.
//!
//! Reads every file under `src/`, finds each `crate::NAME` path (grouped
//! `use crate::{a::x, b}` included) and each `super::` path that climbs to
//! the crate root, and builds the graph of top-level modules (`src/NAME.rs`
//! plus `src/NAME/`; `lib.rs` and `main.rs` are the root and not nodes).
//! Comments and string literals are skipped. The test fails on any cycle,
//! naming the modules on it and printing the graph, so a new `use` that
//! closes a loop is caught in CI (the same rule as the
//! `shared/tools/modgraph.py` script, without needing Python).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Top-level modules of `src` and the modules each one names.
fn module_graph(src: &Path) -> Graph {
    let mut mods = BTreeSet::new();
    for entry in fs::read_dir(src).expect("src/ is readable") {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !rust_files(&path).is_empty() {
                mods.insert(name);
            }
        } else if path.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "main" {
            mods.insert(name);
        }
    }
    let mut graph = Graph::new();
    for m in &mods {
        let mut files = Vec::new();
        let single = src.join(format!("{m}.rs"));
        if single.exists() {
            files.push(single);
        }
        if src.join(m).is_dir() {
            files.extend(rust_files(&src.join(m)));
        }
        let mut out = BTreeSet::new();
        for f in files {
            let text = fs::read_to_string(&f).unwrap();
            for r in references(&text, depth(src, &f)) {
                if mods.contains(&r) && &r != m {
                    out.insert(r);
                }
            }
        }
        graph.insert(m.clone(), out);
    }
    graph
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// How many `super::` reach the crate root from this file's module.
fn depth(src: &Path, file: &Path) -> usize {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let parts: Vec<_> = rel.components().collect();
    let n = parts.len();
    if rel.file_name().is_some_and(|f| f == "mod") {
        n - 1
    } else {
        n
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Punct(char),
}

/// Identifiers and punctuation, without comments, strings and char
/// literals (lifetimes are kept as `'` followed by an identifier).
fn tokens(text: &str) -> Vec<Tok> {
    let c: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && c.get(i + 1) == Some(&'*') {
            let mut level = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    level += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    level -= 1;
                    i += 2;
                    if level == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if ch == 'r'
            && matches!(c.get(i + 1), Some('"') | Some('#'))
            && !c[..i]
                .last()
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
        {
            // Raw string r"…", r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(Tok::Ident("r".into()));
                i += 1;
                continue;
            }
            j += 1;
            'raw: while j < c.len() {
                if c[j] == '"' && (0..hashes).all(|k| c.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break 'raw;
                }
                j += 1;
            }
            i = j;
        } else if ch == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if ch == '\'' {
            // A char literal ('x', '\n', '\u{1F600}') or a lifetime ('a).
            if c.get(i + 1) == Some(&'\\') {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                out.push(Tok::Punct('\''));
                i += 1;
            }
        } else if ch.is_alphanumeric() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(c[start..i].iter().collect()));
        } else {
            if !ch.is_whitespace() {
                out.push(Tok::Punct(ch));
            }
            i += 1;
        }
    }
    out
}

/// The top-level names a file reaches through `crate::` (or through
/// `super::` climbing `depth` levels or more, to the crate root).
fn references(text: &str, depth: usize) -> BTreeSet<String> {
    let t = tokens(text);
    let is_ident = |i: usize, s: &str| matches!(t.get(i), Some(Tok::Ident(x)) if x == s);
    let is_sep = |i: usize| {
        matches!(t.get(i), Some(Tok::Punct(':'))) && matches!(t.get(i + 1), Some(Tok::Punct(':')))
    };
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < t.len() {
        let after_root = if is_ident(i, "crate")
            && !matches!(
                i.checked_sub(1).and_then(|p| t.get(p)),
                Some(Tok::Punct('$'))
            )
            && is_sep(i + 1)
        {
            Some(i + 3)
        } else if is_ident(i, "super") && (i < 2 || !is_sep(i - 2)) {
            let mut j = i;
            let mut supers = 0;
            while is_ident(j, "super") && is_sep(j + 1) {
                supers += 1;
                j += 3;
            }
            (supers >= depth && depth > 0).then_some(j)
        } else {
            None
        };
        if let Some(k) = after_root {
            match t.get(k) {
                Some(Tok::Ident(name)) => {
                    out.insert(name.clone());
                }
                Some(Tok::Punct('{')) => out.extend(group_heads(&t, k)),
                _ => {}
            }
        }
        i += 1;
    }
    out
}

/// The first identifier of each top-level item of the `{…}` group at `open`.
fn group_heads(t: &[Tok], open: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut level = 0;
    let mut expect_head = true;
    for tok in &t[open..] {
        match tok {
            Tok::Punct('{') => {
                level += 1;
                if level > 1 {
                    expect_head = false;
                }
            }
            Tok::Punct('}') => {
                level -= 1;
                if level == 0 {
                    break;
                }
            }
            Tok::Punct(',') if level == 1 => expect_head = true,
            Tok::Ident(name) if level == 1 && expect_head => {
                out.push(name.clone());
                expect_head = false;
            }
            _ => {}
        }
    }
    out
}

/// One cycle (its modules in order, first repeated at the end), if any.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        g: &Graph,
        n: &str,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(n.to_owned(), Mark::Open);
        path.push(n.to_owned());
        for m in g.get(n).into_iter().flatten() {
            match marks.get(m.as_str()).copied().unwrap_or(Mark::New) {
                Mark::Open => {
                    let start = path.iter().position(|p| p == m).unwrap();
                    let mut cycle = path[start..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(g, m, marks, path) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks.insert(n.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for n in g.keys() {
        if marks.get(n.as_str()).copied().unwrap_or(Mark::New) == Mark::New
            && let Some(c) = visit(g, n, &mut marks, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

fn render(g: &Graph) -> String {
    g.iter()
        .map(|(m, to)| {
            format!(
                "  {m} -> {}",
                to.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn top_level_modules_form_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = module_graph(&src);
    assert!(g.len() >= 10, "found only {} modules under src/", g.len());
    assert!(
        g["cmd"].contains("pipeline"),
        "the parser lost cmd -> pipeline"
    );
    if let Some(cycle) = find_cycle(&g) {
        panic!(
            "import cycle between top-level modules: {}\nmodule graph:\n{}",
            cycle.join(" -> "),
            render(&g)
        );
    }
}

#[test]
fn components_never_see_the_whole_config() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = module_graph(&src);
    for (m, to) in &g {
        if !matches!(m.as_str(), "cmd" | "cli" | "error") {
            assert!(!to.contains("config"), "{m} uses crate::config");
            assert!(!to.contains("error"), "{m} uses crate::error");
        }
        if m != "cli" {
            assert!(!to.contains("cmd"), "{m} uses crate::cmd");
        }
    }
}

#[test]
fn references_skip_comments_and_strings_and_read_groups() {
    let text = r##"
        use crate::{alpha::X, beta, gamma::{self, Y}, delta};
        // use crate::commented;
        /* crate::blocked; /* nested */ crate::still_blocked */
        let s = "crate::quoted";
        let r = r#"crate::raw "quoted" "#;
        let c = '"'; let t: &'static str = "x"; crate::epsilon::f();
        $crate::macro_root::x();
        super::super::zeta::Z;
        super::eta::E;
    "##;
    let refs = references(text, 2);
    let want: BTreeSet<String> = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(refs, want);
}

#[test]
fn a_cycle_is_found_and_a_dag_passes() {
    let graph = |edges: &[(&str, &str)]| {
        let mut g = Graph::new();
        for (a, b) in edges {
            g.entry((*a).to_owned())
                .or_default()
                .insert((*b).to_owned());
            g.entry((*b).to_owned()).or_default();
        }
        g
    };
    let dag = graph(&[
        ("main", "cmd"),
        ("cmd", "pipeline"),
        ("pipeline", "event"),
        ("cmd", "event"),
    ]);
    assert_eq!(find_cycle(&dag), None);
    let cyclic = graph(&[
        ("cmd", "pipeline"),
        ("pipeline", "config"),
        ("config", "pipeline"),
    ]);
    let cycle = find_cycle(&cyclic).expect("pipeline <-> config");
    assert_eq!(cycle.first(), cycle.last());
    let on: BTreeSet<&str> = cycle.iter().map(String::as_str).collect();
    assert_eq!(on, BTreeSet::from(["config", "pipeline"]));
}

#[test]
fn a_cycle_in_a_source_tree_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    fs::write(src.join("lib.rs"), "pub mod a; pub mod b; pub mod c;").unwrap();
    fs::write(src.join("a.rs"), "use crate::b::B;").unwrap();
    fs::create_dir(src.join("b")).unwrap();
    fs::write(src.join("b/mod.rs"), "mod inner;").unwrap();
    fs::write(src.join("b/inner.rs"), "use super::super::c::C;").unwrap();
    fs::write(src.join("c.rs"), "// crate::a is only a comment here\n").unwrap();
    let g = module_graph(src);
    assert_eq!(find_cycle(&g), None, "{}", render(&g));
    fs::write(src.join("c.rs"), "pub fn f() { crate::a::f() }").unwrap();
    let g = module_graph(src);
    let cycle = find_cycle(&g).expect("a -> b -> c -> a");
    assert_eq!(cycle.len(), 4, "{cycle:?}");
}

//! Deployment files: the systemd unit verifies with `systemd-analyze`, and
//! the Dockerfile, compose file, Prometheus config and env example carry the
//! properties production relies on (non-root, PID 1, drain time, health,
//! state on a volume, locked builds, only `PARITY_*` names parity knows).
//!
//! `systemd-analyze` is required: scripts/test installs Debian's `systemd`
//! package when it is missing, so its absence fails here rather than
//! skipping. Docker is not needed; nothing here builds the image.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use parity::config::Config;

/// The unit's ExecStart binary, replaced by the built one for verification.
const UNIT_BINARY: &str = "/usr/local/bin/parity";
/// The state directory: StateDirectory=, VOLUME, the SQLite default.
const STATE_DIR: &str = "/var/lib/parity";
/// Where the image's SQLite file lives.
const IMAGE_DATABASE_URL: &str = "sqlite:///var/lib/parity/parity.db";
/// `PARITY_*` names the deployment files may use that are not config keys.
const EXTRA_ENV: &[&str] = &["PARITY_CONFIG"];
/// Longest wait of one commit on the database: SQLite's default
/// busy_timeout_ms and PostgreSQL's pool acquire timeout are both 5 s.
const COMMIT_WAIT: Duration = Duration::from_secs(5);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let p = repo().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

// ---------------------------------------------------------------- systemd

/// `(section, key, value)` for every setting of a unit file.
fn unit_settings(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_owned();
        } else if let Some((k, v)) = line.split_once('=') {
            out.push((section.clone(), k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    out
}

fn unit_values<'a>(settings: &'a [(String, String, String)], key: &str) -> Vec<&'a str> {
    settings
        .iter()
        .filter(|(_, k, _)| k == key)
        .map(|(_, _, v)| v.as_str())
        .collect()
}

fn unit_value<'a>(settings: &'a [(String, String, String)], key: &str) -> &'a str {
    match unit_values(settings, key).as_slice() {
        [v] => v,
        vs => panic!("parity.service: expected one {key}=, found {vs:?}"),
    }
}

/// A systemd time span: `90`, `90s`, `2min`, `1min 30s`.
fn timespan(v: &str) -> Duration {
    let mut total = Duration::ZERO;
    for part in v.split_whitespace() {
        let digits = part.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let n: u64 = digits.parse().unwrap_or_else(|_| panic!("time span {v:?}"));
        total += match &part[digits.len()..] {
            "" | "s" | "sec" => Duration::from_secs(n),
            "min" | "m" => Duration::from_secs(n * 60),
            "ms" => Duration::from_millis(n),
            unit => panic!("time span {v:?}: unit {unit:?} not understood by this test"),
        };
    }
    total
}

/// How long a SIGTERM drain may take: the longest shutdown/drain deadline
/// constant in the code if one exists, and at least the commits a drain
/// can owe one after the other (the open batch, the queued ones, the one
/// the dispatcher is handing out, a writer's queued shares, and the group
/// of up to `SHARE_QUEUE + 1` shares it took from its queue, committed one
/// by one should their shared transaction fail), each waiting up to
/// [`COMMIT_WAIT`] on the database.
fn drain_bound() -> Duration {
    let share_queue = parity::pipeline::SHARE_QUEUE as u32;
    let queued = parity::pipeline::BATCH_QUEUE as u32 + 2 * share_queue + 3;
    let mut bound = COMMIT_WAIT * queued;
    for file in ["src/shutdown.rs", "src/pipeline.rs", "src/main.rs"] {
        for line in read(file).lines() {
            let line = line.trim();
            let Some(rest) = line
                .strip_prefix("pub const ")
                .or_else(|| line.strip_prefix("const "))
            else {
                continue;
            };
            let name = rest.split(':').next().unwrap_or_default();
            if !(name.contains("DRAIN") || name.contains("SHUTDOWN")) {
                continue;
            }
            let secs = |unit: &str| {
                rest.split(unit)
                    .nth(1)
                    .and_then(|r| r.split(')').next())
                    .and_then(|n| n.replace('_', "").parse::<u64>().ok())
            };
            if let Some(s) = secs("Duration::from_secs(") {
                bound = bound.max(Duration::from_secs(s));
            } else if let Some(ms) = secs("Duration::from_millis(") {
                bound = bound.max(Duration::from_millis(ms));
            }
        }
    }
    bound
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!("systemd-analyze --version failed: {o:?}"),
        Err(e) => panic!(
            "systemd-analyze is required to verify systemd/parity.service ({e}); \
             install Debian's `systemd` package (scripts/test does)"
        ),
    }
    let unit = read("systemd/parity.service");
    let exec = format!("ExecStart={UNIT_BINARY} ");
    assert!(
        unit.contains(&exec),
        "the unit starts {UNIT_BINARY}, which this test swaps for the built binary"
    );
    let built = unit.replace(
        &exec,
        &format!("ExecStart={} ", env!("CARGO_BIN_EXE_parity")),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("parity.service");
    std::fs::write(&path, built).unwrap();

    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{text}"
    );
    // Unknown keys and unparsable values are only warnings (exit 0): any
    // line about our unit fails the test too.
    let complaints: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("parity.service"))
        .collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify warned:\n{}",
        complaints.join("\n")
    );
}

#[test]
fn systemd_unit_is_hardened_and_drains() {
    let s = unit_settings(&read("systemd/parity.service"));
    let user = unit_value(&s, "User");
    let dynamic = unit_values(&s, "DynamicUser").contains(&"yes");
    assert!(dynamic || !(user.is_empty() || user == "root" || user == "0"));
    assert_eq!(unit_value(&s, "EnvironmentFile"), "-/etc/default/parity");
    assert!(unit_value(&s, "ExecStart").ends_with(" consume"));

    assert_eq!(unit_value(&s, "Restart"), "always");
    for key in ["StartLimitIntervalSec", "StartLimitBurst"] {
        let (section, _, _) = s.iter().find(|(_, k, _)| k == key).unwrap();
        assert_eq!(section, "Unit", "{key} belongs in [Unit]");
    }
    assert!(unit_value(&s, "StartLimitBurst").parse::<u32>().unwrap() > 0);

    assert_eq!(unit_value(&s, "KillSignal"), "SIGTERM");
    let stop = timespan(unit_value(&s, "TimeoutStopSec"));
    let drain = drain_bound();
    assert!(
        stop > drain,
        "TimeoutStopSec ({stop:?}) must outlast the drain ({drain:?})"
    );

    assert_eq!(unit_value(&s, "StateDirectory"), "parity");
    assert_eq!(unit_value(&s, "WorkingDirectory"), STATE_DIR);
    assert!(
        unit_value(&s, "ReadWritePaths")
            .split_whitespace()
            .any(|p| p == STATE_DIR)
    );
    for (key, want) in [
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("UMask", "077"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(unit_value(&s, key), want, "{key}=");
    }
}

// ----------------------------------------------------------------- Docker

/// Dockerfile instructions, continuation lines joined: `(KEYWORD, args)`.
fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if current.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if t.starts_with('#') {
            continue; // a comment inside a continued instruction
        }
        if let Some(head) = t.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(t);
        let (kw, args) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        out.push((kw.to_ascii_uppercase(), args.trim().to_owned()));
        current.clear();
    }
    out
}

fn json_array(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("not an exec-form array {args:?}: {e}"))
}

#[test]
fn dockerfile_is_multi_stage_non_root_with_parity_as_pid_1() {
    let all = dockerfile_instructions(&read("Dockerfile"));
    let stages: Vec<usize> = all
        .iter()
        .enumerate()
        .filter(|(_, (k, _))| k == "FROM")
        .map(|(i, _)| i)
        .collect();
    assert!(
        stages.len() >= 2,
        "multi-stage: a build and a runtime stage"
    );
    let (build, runtime) = all.split_at(*stages.last().unwrap());
    let build = &build[stages[0]..];

    // Build stage: a dependency-only build before the sources arrive, then
    // the real one, both through scripts/build (the script CI builds with).
    let first_src = build
        .iter()
        .position(|(k, a)| k == "COPY" && a.split_whitespace().next() == Some("src"))
        .expect("COPY src");
    let builds_at: Vec<usize> = build
        .iter()
        .enumerate()
        .filter(|(_, (k, a))| k == "RUN" && a.contains("scripts/build --release"))
        .map(|(i, _)| i)
        .collect();
    assert!(
        builds_at.iter().any(|&i| i < first_src),
        "cached dependency layer: scripts/build --release runs before COPY src"
    );
    assert!(builds_at.iter().any(|&i| i > first_src), "the real build");

    let get = |kw: &str| -> Vec<&str> {
        runtime
            .iter()
            .filter(|(k, _)| k == kw)
            .map(|(_, a)| a.as_str())
            .collect()
    };
    let last = |kw: &str| *get(kw).last().unwrap_or_else(|| panic!("runtime {kw}"));

    let user = last("USER").split(':').next().unwrap();
    assert!(!matches!(user, "" | "root" | "0"), "runs as non-root");
    let entry = json_array(last("ENTRYPOINT"));
    assert!(
        entry == ["parity"],
        "exec-form ENTRYPOINT [\"parity\"] (the binary is on PATH): {entry:?}"
    );
    assert_eq!(json_array(last("CMD")), ["consume"]);
    assert!(
        get("EXPOSE")
            .iter()
            .any(|a| a.split_whitespace().any(|p| p == "9464" || p == "9464/tcp"))
    );
    let health = last("HEALTHCHECK");
    let probe = json_array(health.split_once("CMD").expect("HEALTHCHECK CMD").1.trim());
    assert!(
        probe[0].ends_with("parity") && probe[1] == "health",
        "{probe:?}"
    );
    assert!(
        get("VOLUME").iter().any(|a| a.contains(STATE_DIR)),
        "a VOLUME for the state directory"
    );
    let env = get("ENV").join(" ");
    assert!(env.contains(&format!("PARITY_DATABASE_URL={IMAGE_DATABASE_URL}")));
    assert!(env.contains("PARITY_METRICS_ADDR=0.0.0.0:9464"));
    assert!(
        get("RUN").iter().any(|a| a.contains("--version")),
        "smoke test"
    );

    let build_script = read("scripts/build");
    assert!(
        build_script.contains("cargo build --locked"),
        "builds are --locked"
    );
    assert!(
        read("scripts/test").contains("scripts/build"),
        "the test suite builds through scripts/build too"
    );
    let ignore = read(".dockerignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "*"),
        ".dockerignore is an allow-list"
    );
}

/// Top-level directories of the repository that the compiler reads through
/// `include_str!`, `include_bytes!` or `sqlx::migrate!` in non-test code.
fn embedded_dirs() -> std::collections::BTreeSet<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo().join("src"), &mut files);
    let mut dirs = std::collections::BTreeSet::new();
    for file in files {
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        // Unit tests at the bottom of a module may read fixtures; the build
        // does not.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (macro_, base) in [
            ("include_str!(\"", file.parent().unwrap()),
            ("include_bytes!(\"", file.parent().unwrap()),
            ("migrate!(\"", repo()),
        ] {
            for (i, _) in code.match_indices(macro_) {
                let rel = code[i + macro_.len()..].split('"').next().unwrap();
                let mut path = PathBuf::new();
                for c in base.join(rel).components() {
                    match c {
                        std::path::Component::ParentDir => {
                            path.pop();
                        }
                        std::path::Component::CurDir => {}
                        c => path.push(c),
                    }
                }
                let top = path
                    .strip_prefix(repo())
                    .unwrap_or_else(|_| panic!("{}: {rel} is outside the repo", file.display()))
                    .components()
                    .next()
                    .unwrap();
                dirs.insert(top.as_os_str().to_string_lossy().into_owned());
            }
        }
    }
    dirs
}

/// A file the compiler embeds but the image build does not copy breaks
/// `docker build` only, which the suite does not run: catch it here.
#[test]
fn image_build_copies_everything_the_compiler_embeds() {
    let dirs = embedded_dirs();
    for expected in ["assets", "config", "migrations"] {
        assert!(dirs.contains(expected), "scan found {dirs:?}");
    }
    let copied: Vec<String> = dockerfile_instructions(&read("Dockerfile"))
        .into_iter()
        .filter(|(k, a)| k == "COPY" && !a.starts_with("--from"))
        .filter_map(|(_, a)| a.split_whitespace().next().map(str::to_owned))
        .collect();
    let ignore = read(".dockerignore");
    for dir in ["src".to_owned()].iter().chain(&dirs) {
        assert!(copied.contains(dir), "Dockerfile: add `COPY {dir} {dir}`");
        assert!(
            ignore.lines().any(|l| l.trim() == format!("!{dir}")),
            ".dockerignore: add `!{dir}` to the allow-list"
        );
    }
}

// ------------------------------------------------------- compose, Prometheus

#[test]
fn compose_runs_parity_on_healthy_postgres_with_prometheus() {
    let compose = read("deploy/docker-compose.yml");
    for needle in [
        "postgres:",
        "parity:",
        "prometheus:",
        "pg_isready",
        "condition: service_healthy",
        "PARITY_DATABASE_URL: postgres://",
        "postgres-data:/var/lib/postgresql/data",
        "./prometheus:/etc/prometheus",
        "stop_grace_period",
    ] {
        assert!(compose.contains(needle), "compose file lacks {needle:?}");
    }
    let prom = read("deploy/prometheus/prometheus.yml");
    assert!(prom.contains("alerts.yml") && prom.contains("parity:9464"));

    // Structure, with a real YAML parser.
    check_compose_structure(&compose, &prom);
}

/// Parses the compose file and the Prometheus config and checks their shape.
fn check_compose_structure(compose: &str, prom: &str) {
    use yaml_rust2::{Yaml, YamlLoader};
    let parse = |name: &str, text: &str| -> Yaml {
        let mut docs = YamlLoader::load_from_str(text)
            .unwrap_or_else(|e| panic!("{name} is not valid YAML: {e}"));
        assert_eq!(docs.len(), 1, "{name}: one document");
        docs.remove(0)
    };
    let strings = |y: &Yaml| -> Vec<String> {
        y.as_vec()
            .unwrap_or_else(|| panic!("not a list: {y:?}"))
            .iter()
            .map(|v| {
                v.as_str()
                    .unwrap_or_else(|| panic!("not a string: {v:?}"))
                    .to_owned()
            })
            .collect()
    };
    let c = parse("deploy/docker-compose.yml", compose);
    let s = &c["services"];
    let (pg, p, pr) = (&s["postgres"], &s["parity"], &s["prometheus"]);
    let check = strings(&pg["healthcheck"]["test"]).join(" ");
    assert!(check.contains("pg_isready"), "{check}");
    let volumes = strings(&pg["volumes"]);
    assert!(
        volumes
            .iter()
            .any(|v| v.ends_with(":/var/lib/postgresql/data")),
        "{volumes:?}"
    );
    assert_eq!(
        p["depends_on"]["postgres"]["condition"].as_str(),
        Some("service_healthy")
    );
    let env = &p["environment"];
    assert!(
        env["PARITY_DATABASE_URL"]
            .as_str()
            .is_some_and(|u| u.starts_with("postgres://")),
        "{env:?}"
    );
    assert_eq!(env["PARITY_METRICS_ADDR"].as_str(), Some("0.0.0.0:9464"));
    match &p["command"] {
        Yaml::BadValue => {}
        cmd => assert_eq!(strings(cmd), ["consume"]),
    }
    let volumes = strings(&p["volumes"]);
    assert!(
        volumes.iter().any(|v| v.ends_with(":/var/lib/parity")),
        "{volumes:?}"
    );
    assert_eq!(p["build"]["context"].as_str(), Some(".."));
    let volumes = strings(&pr["volumes"]);
    assert!(
        volumes
            .iter()
            .any(|v| v.starts_with("./prometheus:/etc/prometheus")),
        "{volumes:?}"
    );
    for name in ["postgres-data", "parity-data", "prometheus-data"] {
        assert!(
            c["volumes"]
                .as_hash()
                .is_some_and(|h| h.contains_key(&Yaml::String(name.into()))),
            "volume {name}"
        );
    }
    let prom = parse("deploy/prometheus/prometheus.yml", prom);
    assert!(
        strings(&prom["rule_files"])
            .iter()
            .any(|f| f.contains("alerts.yml"))
    );
    let targets: Vec<String> = prom["scrape_configs"]
        .as_vec()
        .unwrap()
        .iter()
        .flat_map(|j| j["static_configs"].as_vec().unwrap().iter())
        .flat_map(|sc| strings(&sc["targets"]))
        .collect();
    assert!(targets.iter().any(|t| t == "parity:9464"), "{targets:?}");
}

// ---------------------------------------------------------------- settings

/// Every `PARITY_*` variable a deployment file sets (or shows commented
/// out) is one parity accepts: an unknown one stops parity at start.
#[test]
fn deployment_files_use_only_known_parity_variables() {
    let known = Config::env_names();
    for file in [
        "Dockerfile",
        "deploy/docker-compose.yml",
        "systemd/parity.service",
        "systemd/parity.env.example",
    ] {
        let text = read(file);
        for (i, _) in text.match_indices("PARITY_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            // Only settings (`NAME=value`, `NAME: value`), not prose such
            // as `PARITY_SECTION_KEY` or `PARITY_*`.
            if !matches!(text[i + name.len()..].chars().next(), Some('=' | ':')) {
                continue;
            }
            assert!(
                known.contains(&name) || EXTRA_ENV.contains(&name.as_str()),
                "{file}: {name} is not a variable parity accepts"
            );
        }
    }
    // The env example is all comments: installing it unedited changes nothing.
    for line in read("systemd/parity.env.example").lines() {
        let line = line.trim();
        assert!(line.is_empty() || line.starts_with('#'), "{line:?}");
    }
}

#[test]
fn timespans_parse() {
    assert_eq!(timespan("90"), Duration::from_secs(90));
    assert_eq!(timespan("60s"), Duration::from_secs(60));
    assert_eq!(timespan("1min 30s"), Duration::from_secs(90));
}

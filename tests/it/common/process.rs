//! The real `parity` binary as a child process: [`command`] (the only place
//! the tests name the binary; the environment is cleared of `PARITY_*`),
//! JSON logs collected from stderr, the metrics listener's bound address read from them, HTTP
//! scrapes of `/metrics`, `/health` and `/ready`, and SIGTERM to stop.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The message `obs::serve` logs with the bound address.
const SERVING: &str = "Serving /metrics, /health and /ready.";

/// A `Command` for the binary with no `PARITY_*` variable inherited: the
/// one place the tests start `parity` from (every other helper builds on it).
/// `BENCH_PARITY_BIN` replaces the binary under test (benchmarks run a
/// release build while the tests themselves stay a debug build).
pub fn command() -> Command {
    let bin =
        std::env::var_os("BENCH_PARITY_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_parity").into());
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars() {
        if k.starts_with("PARITY_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// [`command`] for async tests that await the child (`tokio::process`).
pub fn tokio_command() -> tokio::process::Command {
    command().into()
}

/// A running `parity` whose stderr lines are collected.
pub struct Parity {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Parity {
    /// Starts `parity --log-format json ARGS…`.
    pub fn spawn(args: &[&str]) -> Parity {
        Parity::spawn_env(args, &[])
    }

    /// [`Parity::spawn`] with these environment variables set too.
    pub fn spawn_env(args: &[&str], env: &[(&str, &str)]) -> Parity {
        let mut child = command()
            .args(["--log-format", "json"])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("parity binary starts");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Parity {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// `parity consume` with `toml` as its config file and `db_url` as its
    /// database, serving metrics on a free loopback port. The config lives
    /// in a temporary folder kept as long as the returned guard.
    pub fn consume(toml: &str, db_url: &str) -> (Parity, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("parity.toml");
        std::fs::write(&cfg, toml).unwrap();
        let parity = Parity::spawn(&[
            "--config",
            cfg.to_str().unwrap(),
            "--database-url",
            db_url,
            "--metrics-addr",
            "127.0.0.1:0",
            "consume",
        ]);
        (parity, dir)
    }

    /// Every stderr line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits (10 ms polls, 30 s at most) for a JSON log line whose message
    /// is `message`; returns it parsed.
    pub async fn wait_log(&mut self, message: &str) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let found = self.lines().iter().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                (v["fields"]["message"] == message).then_some(v)
            });
            if let Some(v) = found {
                return v;
            }
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "parity exited while waiting for {message:?}:\n{}",
                self.lines().join("\n")
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for log {message:?}:\n{}",
                self.lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The metrics listener's address, from its start-up log line.
    pub async fn metrics_addr(&mut self) -> SocketAddr {
        let v = self.wait_log(SERVING).await;
        v["fields"]["addr"]
            .as_str()
            .expect("addr field")
            .parse()
            .expect("addr is IP:PORT")
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL (`kill -9`): no shutdown code runs; waits for the exit.
    pub fn kill9(mut self) -> Vec<String> {
        self.child.kill().unwrap();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        self.lines()
    }

    /// Waits for the process to exit by itself: its status and log lines.
    pub fn wait(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status = self.child.wait().unwrap();
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        (status, self.lines())
    }

    /// SIGTERM, then waits for a clean exit (code 0) and the log reader.
    pub fn stop(mut self) -> Vec<String> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = self.child.wait().unwrap();
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        assert!(
            status.success(),
            "parity exited with {status}:\n{}",
            self.lines().join("\n")
        );
        self.lines()
    }
}

impl Drop for Parity {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET http://ADDR/PATH`: status and body.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resp = reqwest::get(format!("http://{addr}{path}"))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// One scrape of `/metrics`: series (`name{k="v",…}` with labels sorted)
/// to value.
pub async fn scrape(addr: SocketAddr) -> Metrics {
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    Metrics::parse(&body)
}

/// A parsed Prometheus text exposition.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub series: BTreeMap<String, f64>,
    /// `# HELP` text per metric name.
    pub help: BTreeMap<String, String>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut m = Metrics::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap();
                m.help.insert(name.to_owned(), help.to_owned());
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let key = match series.split_once('{') {
                None => series.to_owned(),
                Some((name, labels)) => {
                    let labels = labels.strip_suffix('}').unwrap();
                    let mut pairs: Vec<&str> = labels.split("\",").collect();
                    for p in &mut pairs {
                        *p = p.trim_end_matches('"');
                    }
                    pairs.sort_unstable();
                    let joined: Vec<String> = pairs.iter().map(|p| format!("{p}\"")).collect();
                    format!("{name}{{{}}}", joined.join(","))
                }
            };
            m.series.insert(key, value.parse().unwrap());
        }
        m
    }

    /// The value of `name` with exactly `labels` (any order); 0 when the
    /// series does not exist (counters appear on first increment).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).unwrap_or(0.0)
    }

    /// The value of `name` with exactly `labels`, `None` when the series
    /// is not exported.
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        pairs.sort_unstable();
        let key = if pairs.is_empty() {
            name.to_owned()
        } else {
            format!("{name}{{{}}}", pairs.join(","))
        };
        self.series.get(&key).copied()
    }

    /// Sum over every series of `name`.
    pub fn sum(&self, name: &str) -> f64 {
        self.series
            .iter()
            .filter(|(k, _)| k.as_str() == name || k.starts_with(&format!("{name}{{")))
            .map(|(_, v)| v)
            .sum()
    }
}

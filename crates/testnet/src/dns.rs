//! A tiny authoritative DNS server on UDP `127.0.0.1:0` for handle
//! resolution tests: answers TXT queries for names set with
//! [`Dns::set_txt`] (`_atproto.<handle>` → `did=<did>`).
//!
//! Semantics: a registered name answers its TXT values (one record per
//! value, NOERROR, authoritative, TTL 0 so resolvers do not cache); a
//! registered name asked for another type, or registered with no values,
//! answers NOERROR with no records; any other name is NXDOMAIN. Names match
//! case-insensitively, with or without the trailing dot. Messages are parsed
//! and built with the `hickory-proto` types `hickory-resolver` re-exports.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::op::{Edns, Message, MessageType, Metadata, ResponseCode};
use hickory_resolver::proto::rr::rdata::TXT;
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use hickory_resolver::{Resolver, TokioResolver};
use tokio::net::UdpSocket;

#[derive(Default)]
struct State {
    txt: HashMap<String, Vec<String>>,
    /// `"<name> <TYPE>"` of every query, in order.
    queries: Vec<String>,
    servfail: bool,
}

/// A running server; stops when dropped.
pub struct Dns {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Dns {
    pub async fn start() -> Dns {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = socket.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                // Not a DNS query: ignore it, as servers do.
                let Some(reply) = answer(&st, &buf[..n]) else {
                    continue;
                };
                let _ = socket.send_to(&reply, peer).await;
            }
        });
        Dns { addr, state, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `values` as the TXT records of `name` (replacing any).
    pub fn set_txt(&self, name: &str, values: Vec<String>) {
        self.state.lock().unwrap().txt.insert(key(name), values);
    }

    /// `_atproto.<handle>` TXT `did=<did>`.
    pub fn set_handle(&self, handle: &str, did: &str) {
        self.set_txt(&format!("_atproto.{handle}"), vec![format!("did={did}")]);
    }

    /// Forgets `name` (NXDOMAIN from now on).
    pub fn remove(&self, name: &str) {
        self.state.lock().unwrap().txt.remove(&key(name));
    }

    /// true: every query is answered SERVFAIL.
    pub fn set_servfail(&self, on: bool) {
        self.state.lock().unwrap().servfail = on;
    }

    /// `"<name> <TYPE>"` of every query received (name lower-case, no
    /// trailing dot).
    pub fn queries(&self) -> Vec<String> {
        self.state.lock().unwrap().queries.clone()
    }

    /// A resolver configuration naming only this server (UDP).
    pub fn resolver_config(&self) -> ResolverConfig {
        let mut udp = ConnectionConfig::udp();
        udp.port = self.addr.port();
        ResolverConfig::from_name_servers(vec![NameServerConfig::new(
            self.addr.ip(),
            true,
            vec![udp],
        )])
    }

    /// A hickory resolver that asks only this server, without a cache.
    pub fn resolver(&self) -> TokioResolver {
        let mut b =
            Resolver::builder_with_config(self.resolver_config(), TokioRuntimeProvider::default());
        b.options_mut().cache_size = 0;
        b.options_mut().attempts = 1;
        b.build().expect("resolver builds")
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The response to one query message, or `None` if it is not one.
fn answer(state: &Mutex<State>, bytes: &[u8]) -> Option<Vec<u8>> {
    let req = Message::from_vec(bytes).ok()?;
    if req.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata = Metadata::response_from_request(&req.metadata);
    resp.metadata.authoritative = true;
    resp.add_queries(req.queries.iter().cloned());
    if req.edns.is_some() {
        resp.set_edns(Edns::new());
    }
    let mut s = state.lock().unwrap();
    for q in &req.queries {
        let name = key(&q.name().to_ascii());
        s.queries.push(format!("{name} {}", q.query_type()));
        if s.servfail {
            resp.metadata.response_code = ResponseCode::ServFail;
            continue;
        }
        match s.txt.get(&name) {
            None => resp.metadata.response_code = ResponseCode::NXDomain,
            Some(values) if q.query_type() == RecordType::TXT => {
                for v in values {
                    // A TXT character-string holds at most 255 bytes.
                    let parts = v.as_bytes().chunks(255).collect();
                    let rdata = RData::TXT(TXT::from_bytes(parts));
                    resp.add_answer(Record::from_rdata(q.name().clone(), 0, rdata));
                }
            }
            Some(_) => {}
        }
    }
    resp.to_vec().ok()
}

//! NATS: changes are published to JetStream (stream `PARITY`, subjects
//! `parity.>`) with message id `<database id>:<seq>`, so a republish after
//! a crash is dropped by the server; serve nodes subscribe to `parity.>`.

use async_nats::jetstream::{self, message::PublishMessage};
use futures_util::StreamExt;

use std::collections::VecDeque;

use async_nats::jetstream::context::PublishAckFuture;

use super::{BrokerError, Messages, Outgoing, WINDOW};

const KIND: &str = "nats";
const STREAM: &str = "PARITY";

pub struct Nats {
    client: async_nats::Client,
    js: jetstream::Context,
}

impl Nats {
    /// Connects and makes sure the stream exists, keeping messages for
    /// `max_age` (the change log's retention).
    pub async fn connect(url: &str, max_age: std::time::Duration) -> Result<Nats, BrokerError> {
        let client = async_nats::connect(url)
            .await
            .map_err(|e| BrokerError::new(KIND, e))?;
        let js = jetstream::new(client.clone());
        js.get_or_create_stream(jetstream::stream::Config {
            name: STREAM.to_owned(),
            subjects: vec!["parity.>".to_owned()],
            max_age,
            ..Default::default()
        })
        .await
        .map_err(|e| BrokerError::new(KIND, e))?;
        Ok(Nats { client, js })
    }

    pub async fn publish_page(&self, page: &[Outgoing]) -> (usize, Option<BrokerError>) {
        let mut acks = VecDeque::with_capacity(WINDOW);
        let mut acked = 0;
        for m in page {
            if acks.len() == WINDOW {
                if let Err(e) = next_ack(&mut acks).await {
                    return (acked, Some(e));
                }
                acked += 1;
            }
            let publish = PublishMessage::build()
                .payload(m.body.clone().into_bytes().into())
                .message_id(m.id.as_str());
            match self.js.send_publish(m.subject.clone(), publish).await {
                Ok(ack) => acks.push_back(ack),
                Err(e) => return (acked + drain(&mut acks).await, Some(err(e))),
            }
        }
        while !acks.is_empty() {
            if let Err(e) = next_ack(&mut acks).await {
                return (acked, Some(e));
            }
            acked += 1;
        }
        (acked, None)
    }

    pub async fn subscribe(&self) -> Result<Messages, BrokerError> {
        let sub = self
            .client
            .subscribe("parity.>")
            .await
            .map_err(|e| BrokerError::new(KIND, e))?;
        // The subscription is registered once the server has seen it.
        self.client
            .flush()
            .await
            .map_err(|e| BrokerError::new(KIND, e))?;
        Ok(Box::pin(sub.map(|m| m.payload.to_vec())))
    }
}

fn err(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::new(KIND, e)
}

/// Waits for the oldest outstanding acknowledgement.
async fn next_ack(acks: &mut VecDeque<PublishAckFuture>) -> Result<(), BrokerError> {
    match acks.pop_front() {
        Some(ack) => ack.await.map(|_| ()).map_err(err),
        None => Ok(()),
    }
}

/// How many of the outstanding acknowledgements, oldest first, arrive
/// before the first failure.
async fn drain(acks: &mut VecDeque<PublishAckFuture>) -> usize {
    let mut n = 0;
    while !acks.is_empty() {
        if next_ack(acks).await.is_err() {
            break;
        }
        n += 1;
    }
    n
}

//! NATS: changes are published to JetStream (stream `PARITY`, subjects
//! `parity.>`) with message id `<database id>:<seq>`, so a republish after
//! a crash is dropped by the server; serve nodes subscribe to `parity.>`.

use async_nats::jetstream::{self, message::PublishMessage};
use futures_util::StreamExt;

use super::{BrokerError, Messages};

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

    pub async fn publish(
        &self,
        subject: &str,
        id: &str,
        payload: &[u8],
    ) -> Result<(), BrokerError> {
        let ack = self
            .js
            .send_publish(
                subject.to_owned(),
                PublishMessage::build()
                    .payload(payload.to_vec().into())
                    .message_id(id),
            )
            .await
            .map_err(|e| BrokerError::new(KIND, e))?;
        ack.await.map_err(|e| BrokerError::new(KIND, e))?;
        Ok(())
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

//! Redis pub/sub: each change is `PUBLISH`ed on channel
//! `parity.<table>.<op>`; serve nodes `PSUBSCRIBE parity.*`. Redis keeps
//! nothing for a disconnected subscriber: `follow` fills such gaps from the
//! log.

use futures_util::StreamExt;

use super::{BrokerError, Messages, Outgoing};

const KIND: &str = "redis";

pub struct Redis {
    client: redis::Client,
    conn: redis::aio::MultiplexedConnection,
}

impl Redis {
    pub async fn connect(url: &str) -> Result<Redis, BrokerError> {
        let client = redis::Client::open(url).map_err(|e| BrokerError::new(KIND, e))?;
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| BrokerError::new(KIND, e))?;
        Ok(Redis { client, conn })
    }

    /// One pipelined round trip for the whole page.
    pub async fn publish_page(&self, page: &[Outgoing]) -> (usize, Option<BrokerError>) {
        let mut pipe = redis::pipe();
        for m in page {
            pipe.publish(m.subject.as_str(), m.body.as_bytes()).ignore();
        }
        let mut conn = self.conn.clone();
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => (page.len(), None),
            Err(e) => (0, Some(BrokerError::new(KIND, e))),
        }
    }

    pub async fn subscribe(&self) -> Result<Messages, BrokerError> {
        let mut pubsub = self
            .client
            .get_async_pubsub()
            .await
            .map_err(|e| BrokerError::new(KIND, e))?;
        pubsub
            .psubscribe("parity.*")
            .await
            .map_err(|e| BrokerError::new(KIND, e))?;
        Ok(Box::pin(
            pubsub
                .into_on_message()
                .map(|m| m.get_payload_bytes().to_vec()),
        ))
    }
}

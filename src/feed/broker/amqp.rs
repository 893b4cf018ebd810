//! RabbitMQ: changes go to a durable topic exchange (`feed.rabbitmq_exchange`,
//! default `parity`) with routing key `parity.<table>.<op>`, with publisher
//! confirms; each serve node binds its own exclusive queue to `parity.#`.

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use super::{BrokerError, Messages};

const KIND: &str = "rabbitmq";

pub struct Amqp {
    _conn: Connection,
    channel: Channel,
    exchange: String,
}

fn err(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::new(KIND, e)
}

impl Amqp {
    pub async fn connect(url: &str, exchange: &str) -> Result<Amqp, BrokerError> {
        let conn = Connection::connect(url, ConnectionProperties::default())
            .await
            .map_err(err)?;
        let channel = conn.create_channel().await.map_err(err)?;
        channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(err)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(err)?;
        Ok(Amqp {
            _conn: conn,
            channel,
            exchange: exchange.to_owned(),
        })
    }

    pub async fn publish(&self, routing_key: &str, payload: &[u8]) -> Result<(), BrokerError> {
        self.channel
            .basic_publish(
                self.exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                payload,
                BasicProperties::default().with_content_type("application/json".into()),
            )
            .await
            .map_err(err)?
            .await
            .map_err(err)?;
        Ok(())
    }

    pub async fn subscribe(&self) -> Result<Messages, BrokerError> {
        let queue = self
            .channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(err)?;
        self.channel
            .queue_bind(
                queue.name().clone(),
                self.exchange.as_str().into(),
                "parity.#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(err)?;
        let consumer = self
            .channel
            .basic_consume(
                queue.name().clone(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(err)?;
        Ok(Box::pin(
            consumer.filter_map(|d| async move { d.ok().map(|d| d.data) }),
        ))
    }
}

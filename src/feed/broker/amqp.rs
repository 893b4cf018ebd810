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

use std::collections::VecDeque;

use lapin::PublisherConfirm;

use super::{BrokerError, Messages, Outgoing, WINDOW};

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

    pub async fn publish_page(&self, page: &[Outgoing]) -> (usize, Option<BrokerError>) {
        let mut confirms = VecDeque::with_capacity(WINDOW);
        let mut acked = 0;
        for m in page {
            if confirms.len() == WINDOW {
                if let Err(e) = next_confirm(&mut confirms).await {
                    return (acked, Some(e));
                }
                acked += 1;
            }
            let sent = self
                .channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    m.subject.as_str().into(),
                    BasicPublishOptions::default(),
                    m.body.as_bytes(),
                    BasicProperties::default().with_content_type("application/json".into()),
                )
                .await;
            match sent {
                Ok(confirm) => confirms.push_back(confirm),
                Err(e) => {
                    while !confirms.is_empty() && next_confirm(&mut confirms).await.is_ok() {
                        acked += 1;
                    }
                    return (acked, Some(err(e)));
                }
            }
        }
        while !confirms.is_empty() {
            if let Err(e) = next_confirm(&mut confirms).await {
                return (acked, Some(e));
            }
            acked += 1;
        }
        (acked, None)
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

/// Waits for the oldest outstanding publisher confirm; a nack (the broker
/// could not take the message) is a failure like a lost connection.
async fn next_confirm(confirms: &mut VecDeque<PublisherConfirm>) -> Result<(), BrokerError> {
    let Some(confirm) = confirms.pop_front() else {
        return Ok(());
    };
    let confirmation = confirm.await.map_err(err)?;
    if confirmation.is_nack() {
        return Err(err("the broker refused a message (nack)"));
    }
    Ok(())
}

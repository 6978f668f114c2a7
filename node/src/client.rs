//! A framework-socket client: connect, handshake (postcard), then send
//! [`ClientMessage`]s and receive [`ServerMessage`]s. The CLI commands, the
//! demo and the tests use it; it is also the smallest example of a Rust
//! framework.

use agora_protocol::NodeId;
use agora_protocol::codec::Codec;
use agora_protocol::wire::{ClientMessage, ServerMessage};
use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use std::path::Path;
use tokio::net::UnixStream;
use tokio_util::bytes::Bytes;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// A connection to a node's framework socket.
pub struct Client {
    framed: Framed<UnixStream, LengthDelimitedCodec>,
    codec: Codec,
    /// The node answering.
    pub node_id: NodeId,
}

impl Client {
    /// Connects and completes the handshake.
    ///
    /// # Errors
    /// The socket is missing or refuses, or the node's answer is not a welcome.
    pub async fn connect(path: &Path) -> anyhow::Result<Client> {
        let stream = UnixStream::connect(path).await.with_context(|| {
            format!(
                "cannot connect to the agora node at {} (is `agora agent` running? give --socket or set AGORA_SOCKET)",
                path.display()
            )
        })?;
        let codec = Codec::Postcard;
        let mut framed = Framed::new(stream, crate::socket::frame_codec());
        framed
            .send(Bytes::from(codec.handshake()))
            .await
            .context("cannot send the handshake")?;
        let mut client = Client {
            framed,
            codec,
            node_id: NodeId::new("unknown").context("node id")?,
        };
        match client.recv().await? {
            ServerMessage::Welcome(w) => client.node_id = w.node_id,
            ServerMessage::Error(e) => bail!("the node refused the handshake: {}", e.message),
            other => bail!("unexpected first answer from the node: {other:?}"),
        }
        Ok(client)
    }

    /// Sends one message.
    ///
    /// # Errors
    /// The connection broke.
    pub async fn send(&mut self, msg: &ClientMessage) -> anyhow::Result<()> {
        let bytes = self.codec.encode(msg).context("cannot encode a message")?;
        self.framed
            .send(Bytes::from(bytes))
            .await
            .context("the node closed the connection")
    }

    /// Receives one message.
    ///
    /// # Errors
    /// The connection closed or sent something undecodable.
    pub async fn recv(&mut self) -> anyhow::Result<ServerMessage> {
        match self.framed.next().await {
            Some(Ok(payload)) => self
                .codec
                .decode(&payload)
                .context("the node sent an undecodable message"),
            Some(Err(e)) => Err(e).context("reading from the node failed"),
            None => bail!("the node closed the connection"),
        }
    }
}

//! A network behaviour that opens no streams and only wakes the swarm
//! when a deadline passes: it lets the pool's retries run from the swarm's
//! own poll, so the agent's loop needs no timer of its own for them.

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Emits one `()` event when its deadline passes (see [`Alarm::set`]).
#[derive(Default)]
pub struct Alarm {
    at: Option<tokio::time::Instant>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Alarm {
    /// Rings at `at` (replacing any earlier setting), or never with `None`.
    pub fn set(&mut self, at: Option<std::time::Instant>) {
        let at = at.map(tokio::time::Instant::from_std);
        if at == self.at {
            return;
        }
        self.at = at;
        self.sleep = at.map(|t| Box::pin(tokio::time::sleep_until(t)));
    }
}

impl NetworkBehaviour for Alarm {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = ();

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        e: THandlerOutEvent<Self>,
    ) {
        match e {}
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<(), THandlerInEvent<Self>>> {
        if let Some(sleep) = self.sleep.as_mut()
            && sleep.as_mut().poll(cx).is_ready()
        {
            self.sleep = None;
            self.at = None;
            return Poll::Ready(ToSwarm::GenerateEvent(()));
        }
        Poll::Pending
    }
}

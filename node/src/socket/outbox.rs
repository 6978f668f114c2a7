//! A connection's outbox: the frames the node has encoded for one client
//! and not yet written, and the rule for a client that does not read
//! (docs/FRAMEWORK_API.md section 10, "Flow control"). Plain data, no IO:
//! the connection's writer in [`super`] pushes what the core sends and pops
//! what it writes.

use super::{CLOSE_BYTES, STATUS_DROP_BYTES, error};
use agora_protocol::codec::{Codec, DEFAULT_MAX_FRAME, frame};
use agora_protocol::wire::{ErrorCode, ServerMessage};
use std::collections::VecDeque;
use tokio_util::bytes::Bytes;

/// A message as one whole frame (length prefix and payload, as
/// [`frame`] makes it). An answer too large for one frame becomes an
/// `internal` error; a message that does not encode is logged and skipped
/// (None).
pub(super) fn encode_frame(codec: Codec, msg: &ServerMessage) -> Option<Bytes> {
    let framed = |payload: &[u8]| frame(payload, DEFAULT_MAX_FRAME).ok().map(Bytes::from);
    match codec.encode(msg) {
        Ok(bytes) if bytes.len() <= DEFAULT_MAX_FRAME => framed(&bytes),
        Ok(bytes) => {
            tracing::warn!(
                len = bytes.len(),
                "answer too large for one frame; sending an error instead"
            );
            let e = error(
                ErrorCode::Internal,
                "the answer exceeded the maximum frame size",
            );
            codec.encode(&e).ok().and_then(|b| framed(&b))
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode an answer");
            None
        }
    }
}

/// What the node has not yet written to one client, and the rule for a
/// client that does not read (docs/FRAMEWORK_API.md, "Flow control"):
///
/// - a status event with seq > 0 is dropped when the unsent bytes would pass
///   [`STATUS_DROP_BYTES`] (the core re-sends it until it is acked);
/// - an `offers` frame replaces the unsent one (it is a whole snapshot) and
///   goes out before the rest;
/// - anything else (answers, errors, seq-0 reconcile events) is queued
///   until the unsent bytes would pass [`CLOSE_BYTES`]; then the connection
///   is closed ([`Push::Overflow`]).
#[derive(Debug)]
pub struct Outbox {
    codec: Codec,
    queue: VecDeque<Bytes>,
    offers: Option<Bytes>,
    bytes: usize,
    /// Status events dropped so far.
    pub dropped: u64,
}

/// What [`Outbox::push`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued to be written.
    Queued,
    /// A status event that needs an ack was dropped; the core re-sends it.
    Dropped,
    /// The message does not encode; nothing was queued (logged).
    Skipped,
    /// The client has left too much unread: close the connection.
    Overflow,
}

impl Outbox {
    /// An empty outbox for a connection speaking `codec`.
    pub fn new(codec: Codec) -> Outbox {
        Outbox {
            codec,
            queue: VecDeque::new(),
            offers: None,
            bytes: 0,
            dropped: 0,
        }
    }

    /// Bytes queued and not yet handed out by [`Outbox::pop`].
    pub fn unsent_bytes(&self) -> usize {
        self.bytes
    }

    /// Encodes `msg` and queues it, or drops it, by the rule above.
    pub fn push(&mut self, msg: &ServerMessage) -> Push {
        let Some(frame) = encode_frame(self.codec, msg) else {
            return Push::Skipped;
        };
        let limit = match msg {
            ServerMessage::Offers(_) => {
                if let Some(old) = self.offers.take() {
                    self.bytes -= old.len();
                }
                self.bytes += frame.len();
                self.offers = Some(frame);
                return Push::Queued;
            }
            ServerMessage::Status(ev) if ev.seq > 0 => STATUS_DROP_BYTES,
            _ => CLOSE_BYTES,
        };
        if self.bytes + frame.len() > limit {
            if limit == CLOSE_BYTES {
                return Push::Overflow;
            }
            self.dropped += 1;
            return Push::Dropped;
        }
        self.bytes += frame.len();
        self.queue.push_back(frame);
        Push::Queued
    }

    /// The next whole frame to write, if any.
    pub fn pop(&mut self) -> Option<Bytes> {
        let frame = self.offers.take().or_else(|| self.queue.pop_front())?;
        self.bytes -= frame.len();
        Some(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_protocol::task::{TaskState, TaskStatus};
    use agora_protocol::wire::{StatusEvent, Submitted};
    use agora_protocol::{FrameworkId, TaskId};

    fn status(seq: u64) -> ServerMessage {
        let task_id = TaskId::new(format!("fw-00000000@n1.{seq}")).unwrap();
        ServerMessage::Status(StatusEvent {
            seq,
            name: "job".into(),
            status: TaskStatus::new(task_id, TaskState::Failed, None),
        })
    }

    fn answer(request_id: u64) -> ServerMessage {
        let fw = FrameworkId::new("fw-00000000@n1").unwrap();
        let task_ids = (0..100)
            .map(|i| TaskId::new(format!("{fw}.{i}")).unwrap())
            .collect();
        ServerMessage::Submitted(Submitted {
            request_id,
            task_ids,
        })
    }

    /// Pushes `msg` until the outbox stops taking it; returns how many it took.
    fn fill(out: &mut Outbox, msg: &ServerMessage, want: Push) -> usize {
        let mut n = 0;
        loop {
            let p = out.push(msg);
            if p != Push::Queued {
                assert_eq!(p, want);
                return n;
            }
            n += 1;
        }
    }

    #[test]
    fn statuses_are_dropped_past_their_bound_and_answers_still_fit() {
        let mut out = Outbox::new(Codec::Postcard);
        let n = fill(&mut out, &status(1), Push::Dropped);
        assert!(n > 1000, "{n}");
        assert!(out.unsent_bytes() <= STATUS_DROP_BYTES);
        assert_eq!(out.dropped, 1);
        // Seq-0 events (reconcile answers) and answers are not dropped.
        assert_eq!(out.push(&status(0)), Push::Queued);
        assert_eq!(out.push(&answer(1)), Push::Queued);
        // Writing makes room for statuses again.
        while out.unsent_bytes() > STATUS_DROP_BYTES / 2 {
            assert!(out.pop().is_some());
        }
        assert_eq!(out.push(&status(2)), Push::Queued);
    }

    #[test]
    fn answers_left_unread_past_the_bound_close_the_connection() {
        let mut out = Outbox::new(Codec::Json);
        fill(&mut out, &answer(1), Push::Overflow);
        assert!(out.unsent_bytes() <= CLOSE_BYTES);
        assert!(out.unsent_bytes() > CLOSE_BYTES - 64 * 1024);
    }

    #[test]
    fn an_offers_frame_replaces_the_unsent_one_and_goes_first() {
        let mut out = Outbox::new(Codec::Json);
        assert_eq!(out.push(&answer(1)), Push::Queued);
        assert_eq!(out.push(&ServerMessage::Offers(Vec::new())), Push::Queued);
        assert_eq!(out.push(&ServerMessage::Offers(Vec::new())), Push::Queued);
        let first = out.pop().unwrap();
        assert_eq!(&first[4..], br#"{"offers":[]}"#);
        let second = out.pop().unwrap();
        assert!(second[4..].starts_with(br#"{"submitted""#));
        assert!(out.pop().is_none());
        assert_eq!(out.unsent_bytes(), 0);
    }

    #[test]
    fn frames_carry_their_length() {
        let mut out = Outbox::new(Codec::Json);
        out.push(&ServerMessage::Offers(Vec::new()));
        let f = out.pop().unwrap();
        assert_eq!(
            u32::from_be_bytes([f[0], f[1], f[2], f[3]]) as usize,
            f.len() - 4
        );
    }
}

//! Keeping libraries' chains in step: asking a peer which libraries it has, pulling the
//! entries we lack in batches, announcing our new heads (gossip, or `Announce` to members not
//! following the topic), and answering `/harp/sync/1`.

use std::collections::VecDeque;

use crate::chain::Entry;

use super::*;

/// What an outbound request was for.
#[derive(Debug, Clone, Copy)]
pub(super) enum Pending {
    Libraries,
    /// A fetch of pull number `.2`.
    Fetch(PeerId, LibraryId, u64),
    Announce(LibraryId),
}

/// How many received batches may wait to be stored before the next fetch waits too. Two keep
/// the store busy across a fetch's round trip (on loopback, the peer's answer and the
/// transfer take about as long as storing a batch; one was measurably not enough).
const AHEAD: usize = 2;

/// One pull of a library from a peer, pipelined: the next fetch goes out while the last
/// batch is verified and stored, so the peer's answering and our checking overlap instead of
/// taking turns. Batches are stored one at a time and in order, because each builds on the
/// one before (ancestors first); at most one fetch is in flight and [`AHEAD`] batches wait.
pub(super) struct Pull {
    /// Tells this pull's messages from those of an ended pull of the same peer and library.
    id: u64,
    /// Another pull was asked for meanwhile: start it when this one ends.
    again: bool,
    /// Per author, how many entries we will hold once the batches received so far are
    /// stored: the next fetch's `have`.
    have: HashMap<DeviceKey, u64>,
    /// A fetch is in flight (or its `have` is being read).
    fetching: bool,
    /// A batch is being stored.
    storing: bool,
    /// Batches received and not yet stored, with what the peer said remained after each.
    waiting: VecDeque<(Vec<Entry>, u64)>,
    /// The peer has more for us.
    more: bool,
}

impl Pull {
    /// Counts `batch` into `have`; false if it brought nothing beyond it (a peer that keeps
    /// answering so would make us ask forever).
    fn advance(&mut self, batch: &[Entry]) -> bool {
        let mut advanced = false;
        for entry in batch {
            let meta = entry.meta();
            let held = self.have.entry(meta.author).or_insert(0);
            if meta.seq > *held {
                *held = meta.seq;
                advanced = true;
            }
        }
        advanced
    }
}

impl Node {
    /// Subscribes to `library`'s head announcements (once).
    pub(super) fn follow(&mut self, library: LibraryId) {
        let topic = gossip::topic(&library);
        if self.topics.insert(topic.hash(), library).is_none() {
            if let Err(e) = self.swarm.behaviour_mut().gossip.subscribe(&topic) {
                tracing::warn!(%library, error = %e, "subscribing to head announcements failed");
            }
        }
    }

    /// Heads announced by gossip: pull from the member that forwarded them if we lack one.
    pub(super) fn on_gossip(&mut self, event: gossipsub::Event) {
        let gossipsub::Event::Message {
            propagation_source: peer,
            message,
            ..
        } = event
        else {
            return;
        };
        let Some(&library) = self.topics.get(&message.topic) else {
            return;
        };
        let heads = match gossip::decode_heads(&message.data) {
            Ok(h) => h,
            Err(e) => {
                tracing::info!(%peer, %library, error = %e, "ignoring an announcement");
                return;
            }
        };
        self.blocking(move |sync| {
            let wanted =
                sync.trust().check(&peer, &library).is_ok() && sync.lacks_any(&library, &heads);
            Internal::PullMany {
                peer,
                libraries: if wanted { vec![library] } else { Vec::new() },
                offered: Vec::new(),
            }
        });
    }

    pub(super) fn ask_libraries(&mut self, peer: PeerId) {
        let id = self
            .swarm
            .behaviour_mut()
            .sync
            .send_request(&peer, Request::Libraries);
        self.pending.insert(id, Pending::Libraries);
    }

    /// Sends `library`'s heads to its connected members (except `except`, the peer the new
    /// entries came from).
    pub(super) fn announce(&mut self, library: LibraryId, except: Option<PeerId>) {
        self.blocking(move |sync| match sync.announcement(&library) {
            Ok((heads, members)) => Internal::Announce {
                heads,
                members,
                except,
            },
            Err(error) => Internal::ChainFailed {
                peer: None,
                library,
                error,
            },
        });
    }

    /// Starts pulling `library` from `peer`, or remembers to pull again if a pull runs.
    pub(super) fn pull(&mut self, peer: PeerId, library: LibraryId) {
        if let Some(running) = self.pulls.get_mut(&(peer, library)) {
            running.again = true;
            return;
        }
        self.next_pull += 1;
        let id = self.next_pull;
        self.pulls.insert(
            (peer, library),
            Pull {
                id,
                again: false,
                have: HashMap::new(),
                fetching: true,
                storing: false,
                waiting: VecDeque::new(),
                more: true,
            },
        );
        self.blocking(move |sync| match sync.have(&library) {
            Ok(have) => Internal::Have {
                peer,
                library,
                pull: id,
                have,
            },
            Err(error) => Internal::ChainFailed {
                peer: Some(peer),
                library,
                error,
            },
        });
    }

    /// The pull `id` of `library` from `peer`, if it is still the one running.
    fn running(&mut self, peer: PeerId, library: LibraryId, id: u64) -> Option<&mut Pull> {
        self.pulls
            .get_mut(&(peer, library))
            .filter(|pull| pull.id == id)
    }

    /// Our version vector is read: the pull's first fetch goes out.
    pub(super) fn on_have(
        &mut self,
        peer: PeerId,
        library: LibraryId,
        id: u64,
        have: Vec<(DeviceKey, u64)>,
    ) {
        let Some(pull) = self.running(peer, library, id) else {
            return;
        };
        pull.have = have.into_iter().collect();
        pull.fetching = false;
        self.drive(peer, library);
    }

    /// A batch arrived: queue it to be stored, and ask for the next one at once.
    fn on_batch(
        &mut self,
        peer: PeerId,
        library: LibraryId,
        id: u64,
        entries: Vec<Entry>,
        remaining: u64,
    ) {
        let Some(pull) = self.running(peer, library, id) else {
            return;
        };
        pull.fetching = false;
        if entries.is_empty() {
            pull.more = false;
        } else {
            pull.more = pull.advance(&entries) && remaining > 0;
            pull.waiting.push_back((entries, remaining));
        }
        self.drive(peer, library);
    }

    /// A batch was stored (or refused by the chain).
    pub(super) fn on_stored(
        &mut self,
        peer: PeerId,
        library: LibraryId,
        id: u64,
        result: Result<InsertOutcome, ChainError>,
        remaining: u64,
    ) {
        match result {
            Ok(outcome) => {
                tracing::debug!(%peer, %library, inserted = outcome.inserted, remaining, "pulled a batch");
                self.emit(NodeEvent::Pulled {
                    peer,
                    library,
                    inserted: outcome.inserted,
                    remaining,
                });
                if outcome.inserted > 0 {
                    self.announce(library, Some(peer));
                }
                if let Some(pull) = self.running(peer, library, id) {
                    pull.storing = false;
                    self.drive(peer, library);
                }
            }
            Err(error) => {
                tracing::warn!(%peer, %library, %error, "a batch from a peer was refused by the chain");
                if matches!(error, ChainError::Rejected { .. }) {
                    // An honest peer only holds verified entries: this one is broken or
                    // hostile. Stop talking to it for a while.
                    self.quarantine(peer);
                }
                self.emit(NodeEvent::SyncFailed {
                    peer,
                    library: Some(library),
                    error: error.to_string(),
                });
                if self.running(peer, library, id).is_some() {
                    self.end_pull(peer, library, false);
                }
            }
        }
    }

    /// Moves a pull along: stores the next waiting batch, sends the next fetch, or ends it.
    fn drive(&mut self, peer: PeerId, library: LibraryId) {
        let limit = self.config.sync_batch;
        let Some(pull) = self.pulls.get_mut(&(peer, library)) else {
            return;
        };
        let id = pull.id;
        let store = if pull.storing {
            None
        } else {
            pull.waiting.pop_front()
        };
        pull.storing |= store.is_some();
        let fetch = pull.more && !pull.fetching && pull.waiting.len() < AHEAD;
        pull.fetching |= fetch;
        let request = fetch.then(|| Request::Fetch {
            library,
            have: pull.have.iter().map(|(k, n)| (*k, *n)).collect(),
            limit,
        });
        let done = !pull.more && !pull.fetching && !pull.storing && pull.waiting.is_empty();
        if let Some((entries, remaining)) = store {
            self.blocking(move |sync| Internal::Stored {
                peer,
                library,
                pull: id,
                result: sync.store(&library, entries),
                remaining,
            });
        }
        if let Some(request) = request {
            if !self.swarm.is_connected(&peer) {
                self.pulls.remove(&(peer, library));
                return;
            }
            let request_id = self.swarm.behaviour_mut().sync.send_request(&peer, request);
            self.pending
                .insert(request_id, Pending::Fetch(peer, library, id));
        }
        if done {
            self.emit(NodeEvent::PullDone { peer, library });
            self.end_pull(peer, library, true);
        }
    }

    /// Pulls `libraries` from `peer`; reports `offered` (libraries we do not hold and may not
    /// join on our own) as [`NodeEvent::Offered`].
    pub(super) fn pull_or_offer(
        &mut self,
        peer: PeerId,
        libraries: Vec<LibraryId>,
        offered: Vec<LibraryId>,
    ) {
        for library in libraries {
            self.pull(peer, library);
        }
        for library in offered {
            tracing::info!(%peer, %library, "a peer offers a library we do not hold; waiting for approval");
            self.emit(NodeEvent::Offered { peer, library });
        }
    }

    /// A fetch of pull `id` failed or was refused: that pull ends, if it still runs.
    fn end_fetch(&mut self, peer: PeerId, library: LibraryId, id: u64) {
        if self.running(peer, library, id).is_some() {
            self.end_pull(peer, library, false);
        }
    }

    /// The pull ended (done, refused or failed); starts the next one if one was asked for.
    pub(super) fn end_pull(&mut self, peer: PeerId, library: LibraryId, again_allowed: bool) {
        let again = self
            .pulls
            .remove(&(peer, library))
            .is_some_and(|pull| pull.again);
        if again && again_allowed && self.swarm.is_connected(&peer) {
            self.pull(peer, library);
        }
    }

    pub(super) fn on_sync_event(&mut self, event: request_response::Event<Request, Response>) {
        use request_response::{Event, Message};
        match event {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let join = self.config.join_offered;
                self.blocking(move |sync| {
                    let answer = sync.answer(&peer, request);
                    let (pull, offered) = split_offers(sync, answer.pull.into_iter(), join);
                    Internal::Respond {
                        peer,
                        channel,
                        response: answer.response,
                        pull,
                        offered,
                    }
                });
            }
            Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let Some(pending) = self.pending.remove(&request_id) else {
                    return;
                };
                self.on_response(peer, pending, response);
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                let Some(pending) = self.pending.remove(&request_id) else {
                    return;
                };
                let library = match pending {
                    Pending::Libraries => None,
                    Pending::Fetch(_, l, _) | Pending::Announce(l) => Some(l),
                };
                tracing::info!(%peer, ?library, %error, "sync request failed");
                self.emit(NodeEvent::SyncFailed {
                    peer,
                    library,
                    error: error.to_string(),
                });
                if let Pending::Fetch(p, l, id) = pending {
                    self.end_fetch(p, l, id);
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "answering a sync request failed");
            }
            Event::ResponseSent { .. } => {}
        }
    }

    pub(super) fn on_response(&mut self, peer: PeerId, pending: Pending, response: Response) {
        match (pending, response) {
            (pending, Response::Refused(reason)) => {
                let library = match pending {
                    Pending::Libraries => None,
                    Pending::Fetch(_, l, _) | Pending::Announce(l) => Some(l),
                };
                tracing::info!(%peer, ?library, %reason, "the peer refused our sync request");
                self.emit(NodeEvent::RefusedBy {
                    peer,
                    library,
                    reason,
                });
                if let Pending::Fetch(p, l, id) = pending {
                    self.end_fetch(p, l, id);
                }
            }
            (Pending::Libraries, Response::Libraries(list)) => {
                let join = self.config.join_offered;
                self.blocking(move |sync| {
                    let lacking: Vec<LibraryId> = list
                        .into_iter()
                        .filter(|lh| sync.lacks_any(&lh.library, &lh.heads))
                        .map(|lh| lh.library)
                        .collect();
                    let (libraries, offered) = split_offers(sync, lacking.into_iter(), join);
                    Internal::PullMany {
                        peer,
                        libraries,
                        offered,
                    }
                });
            }
            (Pending::Fetch(_, library, id), Response::Entries { entries, remaining }) => {
                self.on_batch(peer, library, id, entries, remaining)
            }
            (Pending::Announce(..), Response::Ack) => {}
            (pending, other) => {
                tracing::info!(%peer, ?pending, "the peer answered with the wrong kind of message");
                self.emit(NodeEvent::SyncFailed {
                    peer,
                    library: None,
                    error: format!("unexpected answer {}", kind(&other)),
                });
                if let Pending::Fetch(p, l, id) = pending {
                    self.end_fetch(p, l, id);
                }
            }
        }
    }
}

/// Splits libraries to pull into those to pull now and those only offered: libraries we do
/// not hold, when joining on our own is off.
pub(super) fn split_offers(
    sync: &SyncService,
    libraries: impl Iterator<Item = LibraryId>,
    join: bool,
) -> (Vec<LibraryId>, Vec<LibraryId>) {
    libraries.partition(|lib| join || sync.holds(lib))
}

pub(super) fn kind(r: &Response) -> &'static str {
    match r {
        Response::Libraries(_) => "Libraries",
        Response::Entries { .. } => "Entries",
        Response::Ack => "Ack",
        Response::Refused(_) => "Refused",
    }
}

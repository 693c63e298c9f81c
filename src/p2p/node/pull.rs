//! Keeping libraries' chains in step: asking a peer which libraries it has, pulling the
//! entries we lack in batches, announcing our new heads (gossip, or `Announce` to members not
//! following the topic), and answering `/harp/sync/1`.

use super::*;

/// What an outbound request was for.
#[derive(Debug, Clone, Copy)]
pub(super) enum Pending {
    Libraries,
    Fetch(PeerId, LibraryId),
    Announce(LibraryId),
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
        if let Some(again) = self.pulls.get_mut(&(peer, library)) {
            *again = true;
            return;
        }
        self.pulls.insert((peer, library), false);
        self.next_fetch(peer, library);
    }

    pub(super) fn next_fetch(&mut self, peer: PeerId, library: LibraryId) {
        let limit = self.config.sync_batch;
        self.blocking(move |sync| match sync.fetch_request(&library, limit) {
            Ok(request) => Internal::SendFetch {
                peer,
                library,
                request,
            },
            Err(error) => Internal::ChainFailed {
                peer: Some(peer),
                library,
                error,
            },
        });
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

    /// The pull ended (done, refused or failed); starts the next one if one was asked for.
    pub(super) fn end_pull(&mut self, peer: PeerId, library: LibraryId, again_allowed: bool) {
        let again = self.pulls.remove(&(peer, library)).unwrap_or(false);
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
                    Pending::Fetch(_, l) | Pending::Announce(l) => Some(l),
                };
                tracing::info!(%peer, ?library, %error, "sync request failed");
                self.emit(NodeEvent::SyncFailed {
                    peer,
                    library,
                    error: error.to_string(),
                });
                if let Pending::Fetch(p, l) = pending {
                    self.end_pull(p, l, false);
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
                    Pending::Fetch(_, l) | Pending::Announce(l) => Some(l),
                };
                tracing::info!(%peer, ?library, %reason, "the peer refused our sync request");
                self.emit(NodeEvent::RefusedBy {
                    peer,
                    library,
                    reason,
                });
                if let Pending::Fetch(p, l) = pending {
                    self.end_pull(p, l, false);
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
            (Pending::Fetch(_, library), Response::Entries { entries, remaining }) => {
                if entries.is_empty() {
                    self.emit(NodeEvent::PullDone { peer, library });
                    self.end_pull(peer, library, true);
                    return;
                }
                self.blocking(move |sync| Internal::Stored {
                    peer,
                    library,
                    result: sync.store(&library, entries),
                    remaining,
                });
            }
            (Pending::Announce(..), Response::Ack) => {}
            (pending, other) => {
                tracing::info!(%peer, ?pending, "the peer answered with the wrong kind of message");
                self.emit(NodeEvent::SyncFailed {
                    peer,
                    library: None,
                    error: format!("unexpected answer {}", kind(&other)),
                });
                if let Pending::Fetch(p, l) = pending {
                    self.end_pull(p, l, false);
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

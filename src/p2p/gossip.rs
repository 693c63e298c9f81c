//! Head announcements by gossipsub: one topic per library, carrying the library's heads.
//!
//! # Why gossip as well as `Announce`
//!
//! `/harp/sync/1`'s `Announce` reaches the members we are connected to. Gossipsub adds the
//! members we are *not* connected to: a member that hears new heads forwards them through
//! its own mesh, so an office that reaches the cloud only through another office still
//! learns of a change at once, and then pulls it (from whoever relayed it, who may not
//! have the entries yet; a later announcement from a holder covers that).
//!
//! The node publishes to the topic after every local change and every pull that stored
//! something, and sends a direct `Announce` only to connected members that have not
//! subscribed to the topic (early in a connection, before the subscriptions are exchanged).
//!
//! # What a message is, and who is believed
//!
//! Topic: `harp/heads/1/<hex of SHA3-256("harp-heads" ‖ library id)[..16]>`. The data is
//! the heads only, 32 bytes each, at most [`MAX_HEADS`](super::message::MAX_HEADS); the
//! library is known from the topic. Messages are signed by their publisher
//! (`MessageAuthenticity::Signed`) and checked by gossipsub (`ValidationMode::Strict`). A
//! message is acted on only if the peer that forwarded it is a member of the library here;
//! then we pull from that peer. What a pull brings is verified entry by entry as always, so
//! a lying announcement costs one fetch and nothing else.
//!
//! # Known limit
//!
//! Gossipsub tells every connected peer which topics we subscribe to, so a connected
//! stranger sees opaque topic names (not library ids) and, if it subscribes to one, the
//! head hashes of that library as they change: the fact and time of a change, nothing of
//! its content (entries and blocks still need membership).

use libp2p::gossipsub::{self, IdentTopic, TopicHash};
use sha3::{Digest, Sha3_256};

use crate::chain::LibraryId;

// The message format apart, in its own file: the fuzz crate compiles it without gossipsub.
mod heads;
pub use heads::{decode_heads, encode_heads, GossipError, MAX_MESSAGE_BYTES};

/// The topic of `library`'s head announcements.
pub fn topic(library: &LibraryId) -> IdentTopic {
    let mut h = Sha3_256::new();
    h.update(b"harp-heads");
    h.update(library.0);
    let digest = h.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    IdentTopic::new(format!("harp/heads/1/{hex}"))
}

/// The topic's hash, as gossipsub reports it on received messages.
pub fn topic_hash(library: &LibraryId) -> TopicHash {
    topic(library).hash()
}

/// The gossipsub behaviour a node runs: signed messages, strict validation, and messages
/// no larger than one library's heads.
pub fn behaviour(
    key: &libp2p::identity::Keypair,
) -> Result<gossipsub::Behaviour, Box<dyn std::error::Error + Send + Sync>> {
    let config = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .max_transmit_size(MAX_MESSAGE_BYTES)
        .build()?;
    Ok(gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Signed(key.clone()),
        config,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_differ_per_library_and_hide_its_id() {
        let a = LibraryId([7; 16]);
        let b = LibraryId([8; 16]);
        assert_ne!(topic_hash(&a), topic_hash(&b));
        let name = topic(&a).to_string();
        assert!(name.starts_with("harp/heads/1/"), "{name}");
        assert!(!name.contains(&"07".repeat(16)), "{name}");
    }
}

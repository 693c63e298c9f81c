//! The data of a head announcement: the heads only, 32 bytes each, at most [`MAX_HEADS`]
//! (the library is known from the topic, see [`super`]).

use crate::chain::EntryHash;
use crate::p2p::message::MAX_HEADS;

/// The largest message: every head of a library (the transport's framing comes on top).
pub const MAX_MESSAGE_BYTES: usize = MAX_HEADS * 32 + 1024;

/// A message announcing `heads` (at most [`MAX_HEADS`] of them are sent).
pub fn encode_heads(heads: &[EntryHash]) -> Vec<u8> {
    heads.iter().take(MAX_HEADS).flat_map(|h| h.0).collect()
}

/// Why a received message was ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GossipError {
    /// The data is not a whole number of 32-byte hashes, or names none, or too many.
    #[error("a heads announcement of {0} bytes is malformed")]
    Malformed(usize),
}

/// The heads a message announces.
pub fn decode_heads(data: &[u8]) -> Result<Vec<EntryHash>, GossipError> {
    if data.is_empty() || !data.len().is_multiple_of(32) || data.len() / 32 > MAX_HEADS {
        return Err(GossipError::Malformed(data.len()));
    }
    Ok(data
        .chunks_exact(32)
        .map(|c| {
            let mut h = [0u8; 32];
            h.copy_from_slice(c);
            EntryHash(h)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_round_trip_and_bad_sizes_are_refused() {
        let heads = vec![EntryHash([1; 32]), EntryHash([2; 32])];
        assert_eq!(decode_heads(&encode_heads(&heads)), Ok(heads));
        assert_eq!(decode_heads(&[]), Err(GossipError::Malformed(0)));
        assert_eq!(decode_heads(&[0; 33]), Err(GossipError::Malformed(33)));
        let too_many = vec![0u8; 32 * (MAX_HEADS + 1)];
        assert!(decode_heads(&too_many).is_err());
    }
}

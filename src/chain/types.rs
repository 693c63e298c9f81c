//! The small fixed-size names the chain is built from: library ids, entry hashes, device keys
//! and content ids, each with a lowercase-hex text form.

use std::fmt;
use std::str::FromStr;

use libp2p_identity::PeerId;

use super::error::ParseIdError;

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Parses exactly `N` bytes of hex (either case).
pub fn from_hex<const N: usize>(s: &str) -> Result<[u8; N], ParseIdError> {
    let raw = s.as_bytes();
    if raw.len() != 2 * N {
        return Err(ParseIdError::Length {
            expected: 2 * N,
            got: raw.len(),
        });
    }
    let nibble = |c: u8| -> Result<u8, ParseIdError> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(ParseIdError::NotHex),
        }
    };
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nibble(raw[2 * i])? << 4) | nibble(raw[2 * i + 1])?;
    }
    Ok(out)
}

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
            /// Lowercase hex.
            pub fn to_hex(&self) -> String {
                to_hex(&self.0)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&to_hex(&self.0))
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), to_hex(&self.0))
            }
        }
        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                from_hex::<$len>(s).map($name)
            }
        }
    };
}

hex_id!(
    /// A library (one synced folder): 16 random bytes, shown as 32 lowercase hex characters.
    LibraryId,
    16
);
hex_id!(
    /// The SHA3-256 hash of an entry (see [`crate::chain::entry`] for the rule).
    EntryHash,
    32
);
hex_id!(
    /// A device's ed25519 public key (32 bytes), the key behind its libp2p `PeerId`.
    DeviceKey,
    32
);
hex_id!(
    /// The hash that names a file version's content (the hash of its manifest, see
    /// docs/wire.md §3). The chain treats it as opaque bytes.
    ContentId,
    32
);

impl LibraryId {
    /// A fresh random library id from the operating system's generator.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b)?;
        Ok(LibraryId(b))
    }
}

impl DeviceKey {
    /// The libp2p `PeerId` of this key, or `None` if the bytes are not an ed25519 point.
    pub fn peer_id(&self) -> Option<PeerId> {
        let ed = libp2p_identity::ed25519::PublicKey::try_from_bytes(&self.0).ok()?;
        Some(libp2p_identity::PublicKey::from(ed).to_peer_id())
    }

    /// The device's name as shown to people: its `PeerId` in base58, or hex if the key is
    /// not a valid point (which verification rejects anyway).
    pub fn display_name(&self) -> String {
        match self.peer_id() {
            Some(p) => p.to_base58(),
            None => self.to_hex(),
        }
    }

    /// The short device id used in conflict names: seven characters of the `PeerId`.
    ///
    /// Every ed25519 `PeerId` starts with the same eight characters (`12D3KooW`, the base58 of
    /// the identity-multihash and key-type prefix), so "the first seven characters" would name
    /// every device alike. We take the **last** seven characters instead, which depend only on
    /// the key and differ between devices.
    pub fn short_id(&self) -> String {
        let name = self.display_name();
        let start = name.len().saturating_sub(7);
        name[start..].to_string()
    }
}

impl EntryHash {
    /// The first 12 hex characters, for logs and the CLI.
    pub fn short(&self) -> String {
        to_hex(&self.0[..6])
    }
}

//! The device identity: one ed25519 key in the data directory, `<data>/identity.key`.
//!
//! The file holds the key in libp2p's protobuf encoding
//! (`libp2p_identity::Keypair::to_protobuf_encoding`), so it is exactly the key the libp2p
//! swarm uses and the device's name is its `PeerId`. The chain signs with the same key
//! through ed25519-dalek directly (the library libp2p-identity uses underneath), which lets
//! it sign and verify in batches.
//!
//! The file is created with mode 0600 (atomically: written to a temporary file, fsync'd,
//! renamed). Loading refuses a file that others can read or write (any of the 0o077 bits)
//! or that does not decode to an ed25519 key, with an error that says what to do.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use libp2p_identity::{Keypair, PeerId};

use crate::chain::DeviceKey;

/// File name of the key inside the data directory.
pub const KEY_FILE: &str = "identity.key";

/// Why the identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading, writing or creating a file or directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The key file is readable or writable by others.
    #[error(
        "{path} has mode {mode:04o}; the device key must be private (mode 0600): run `chmod 600 {path}`"
    )]
    LooseMode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file does not hold an ed25519 key in libp2p's encoding.
    #[error("{path} is not a valid ed25519 device key ({reason}); restore it from a backup or move it away to make a new identity")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The device's key pair.
#[derive(Clone)]
pub struct DeviceIdentity {
    keypair: Keypair,
    signing: SigningKey,
}

impl std::fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceIdentity")
            .field("peer_id", &self.peer_id())
            .finish_non_exhaustive()
    }
}

impl DeviceIdentity {
    /// A fresh random identity, in memory only.
    pub fn generate() -> Self {
        let ed = libp2p_identity::ed25519::Keypair::generate();
        Self::from_ed25519(ed)
    }

    fn from_ed25519(ed: libp2p_identity::ed25519::Keypair) -> Self {
        let bytes = ed.to_bytes();
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&bytes[..32]);
        let signing = SigningKey::from_bytes(&secret);
        DeviceIdentity {
            keypair: Keypair::from(ed),
            signing,
        }
    }

    /// An identity from a fixed 32-byte secret (tests and golden vectors).
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let mut s = secret;
        match libp2p_identity::ed25519::SecretKey::try_from_bytes(&mut s) {
            Ok(sk) => Self::from_ed25519(libp2p_identity::ed25519::Keypair::from(sk)),
            // 32 bytes always make a secret key; keep a total function anyway.
            Err(_) => Self::generate(),
        }
    }

    /// The libp2p key pair (for the swarm).
    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    /// The ed25519 signing key (for the chain).
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// The public key as the chain names devices.
    pub fn device_key(&self) -> DeviceKey {
        DeviceKey(self.signing.verifying_key().to_bytes())
    }

    /// The device's libp2p `PeerId`: its name.
    pub fn peer_id(&self) -> PeerId {
        self.keypair.public().to_peer_id()
    }

    /// Loads `<data_dir>/identity.key`, creating it (and the directory) if it does not exist.
    /// Returns the identity and whether it was just created.
    pub fn load_or_create(data_dir: &Path) -> Result<(Self, bool), IdentityError> {
        let path = data_dir.join(KEY_FILE);
        match fs::symlink_metadata(&path) {
            Ok(_) => Ok((Self::load(&path)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                crate::owner_only::create_dir_all(data_dir).map_err(|source| {
                    IdentityError::Io {
                        path: data_dir.to_path_buf(),
                        source,
                    }
                })?;
                let id = Self::generate();
                id.write_new(&path)?;
                Ok((id, true))
            }
            Err(source) => Err(IdentityError::Io { path, source }),
        }
    }

    /// Loads a key file, checking its mode and contents.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let io = |source| IdentityError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::metadata(path).map_err(io)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::LooseMode {
                path: path.to_path_buf(),
                mode,
            });
        }
        let bytes = fs::read(path).map_err(io)?;
        let corrupt = |reason: String| IdentityError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let kp = Keypair::from_protobuf_encoding(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let ed = kp
            .try_into_ed25519()
            .map_err(|_| corrupt("not an ed25519 key".into()))?;
        Ok(Self::from_ed25519(ed))
    }

    fn write_new(&self, path: &Path) -> Result<(), IdentityError> {
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| IdentityError::Io { path: p, source }
        };
        let bytes = self
            .keypair
            .to_protobuf_encoding()
            .map_err(|e| IdentityError::Corrupt {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        let tmp = path.with_extension("key.tmp");
        let _ = fs::remove_file(&tmp);
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io(&tmp))?;
            f.write_all(&bytes).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        fs::rename(&tmp, path).map_err(io(path))?;
        if let Some(dir) = path.parent() {
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_then_load_same_key_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let (a, created) = DeviceIdentity::load_or_create(dir.path()).unwrap();
        assert!(created);
        let path = dir.path().join(KEY_FILE);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (b, created) = DeviceIdentity::load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(a.peer_id(), b.peer_id());
        assert_eq!(a.device_key(), b.device_key());
        // The chain's key and libp2p's key are the same key.
        assert_eq!(a.device_key().peer_id(), Some(a.peer_id()));
        // The file decodes with libp2p itself.
        let kp = Keypair::from_protobuf_encoding(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(kp.public().to_peer_id(), a.peer_id());
    }

    #[test]
    fn refuses_loose_mode() {
        let dir = tempfile::tempdir().unwrap();
        DeviceIdentity::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = DeviceIdentity::load_or_create(dir.path()).unwrap_err();
        assert!(
            matches!(err, IdentityError::LooseMode { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"));
    }

    #[test]
    fn refuses_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap()
            .write_all(b"not a key")
            .unwrap();
        let err = DeviceIdentity::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, IdentityError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn signing_key_matches_libp2p_signatures() {
        use ed25519_dalek::Signer;
        let id = DeviceIdentity::from_secret([9; 32]);
        let msg = b"harp";
        let ours = id.signing_key().sign(msg).to_bytes();
        let theirs = id.keypair().sign(msg).unwrap();
        assert_eq!(ours.to_vec(), theirs);
    }
}

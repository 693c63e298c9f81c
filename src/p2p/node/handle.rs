//! The handle the program drives a running node with, and the commands it sends to the
//! node's task.

use super::*;

/// Commands buffered before [`NodeHandle`] calls wait.
pub(super) const COMMAND_BUFFER: usize = 256;

/// A request to the node's task.
#[derive(Debug)]
pub(super) enum Command {
    Dial(Multiaddr, oneshot::Sender<Result<(), P2pError>>),
    LibraryChanged(LibraryId),
    Join(LibraryId),
    SyncAll,
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    Shutdown(oneshot::Sender<()>),
}

/// The handle through which the program drives a running node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    pub(super) peer_id: PeerId,
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) events: broadcast::Sender<NodeEvent>,
    pub(super) listening: Arc<Mutex<Vec<Multiaddr>>>,
    pub(super) task: Arc<Mutex<Option<JoinHandle<()>>>>,
    pub(super) blocks: Blocks,
    pub(super) views: watch::Receiver<Vec<PeerView>>,
    pub(super) fetch_config: FetchConfig,
}

impl NodeHandle {
    /// Lets the block server read versions from files outside the store (a synced
    /// folder's): see [`crate::p2p::blocks::PlacedFiles`].
    pub fn serve_placed_files(&self, placed: Arc<dyn crate::p2p::blocks::PlacedFiles>) {
        self.blocks.set_placed(placed);
    }

    /// This node's `PeerId` (the device's name).
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The addresses the node listens on now.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.listening
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Follow the node's events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.events.subscribe()
    }

    async fn send(&self, c: Command) -> Result<(), P2pError> {
        self.commands.send(c).await.map_err(|_| P2pError::Stopped)
    }

    /// Dials a peer by address (a WAN peer, or a test's loopback peer). `Ok` means the dial
    /// started; the connection shows up as [`NodeEvent::Connected`], after which the node
    /// syncs with it on its own.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), P2pError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Dial(addr, tx)).await?;
        rx.await.map_err(|_| P2pError::Stopped)?
    }

    /// Tells the node that `library` changed locally (new entries appended): it announces
    /// the new heads to the library's connected members, which pull them.
    pub async fn library_changed(&self, library: LibraryId) -> Result<(), P2pError> {
        self.send(Command::LibraryChanged(library)).await
    }

    /// Joins a library this node does not hold yet (the approval of a
    /// [`NodeEvent::Offered`] when [`P2pConfig::join_offered`] is off): pulls it from every
    /// connected peer; those of which we are a member there send it.
    pub async fn join(&self, library: LibraryId) -> Result<(), P2pError> {
        self.send(Command::Join(library)).await
    }

    /// Asks every connected peer again which libraries we share, and pulls what is new.
    pub async fn sync_all(&self) -> Result<(), P2pError> {
        self.send(Command::SyncAll).await
    }

    /// Fetches every block of `content` (a version of `library`) that is not here yet from
    /// the connected members that have it, LAN first, and returns once all are stored (and
    /// the manifest). The version is added to `library`'s current set
    /// ([`ContentStore::add_current`]) as soon as its manifest is known, so the cache never
    /// evicts the blocks being fetched; the engine's next `set_current` replaces the set as
    /// usual. Progress goes out as [`NodeEvent::Transfer`] (on every tick when it changed,
    /// and at the end). An error leaves what was stored in place: fetching again resumes.
    /// See [`super::blocks`].
    pub async fn fetch_content(
        &self,
        library: LibraryId,
        content: ContentId,
    ) -> Result<FetchReport, P2pError> {
        blocks::fetch::fetch(
            &self.blocks,
            self.views.clone(),
            self.events.clone(),
            self.fetch_config,
            self.peer_id,
            library,
            content,
        )
        .await
    }

    /// The WAN limits in force ([`crate::p2p::limits`]).
    pub fn wan_limits(&self) -> crate::p2p::limits::WanLimits {
        self.blocks.meter.wan_limits()
    }

    /// Changes the WAN limits; transfers under way follow from their next block.
    pub fn set_wan_limits(
        &self,
        limits: crate::p2p::limits::WanLimits,
    ) -> Result<(), crate::p2p::limits::LimitsError> {
        self.blocks.meter.set_wan_limits(limits.checked()?);
        Ok(())
    }

    /// Block bytes moved so far, per peer and per class (LAN / WAN).
    pub fn traffic(&self) -> Traffic {
        self.blocks.meter.traffic()
    }

    /// The peers the node knows: connected ones and ones found on the LAN.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, P2pError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Peers(tx)).await?;
        rx.await.map_err(|_| P2pError::Stopped)
    }

    /// Stops the node: closes every connection and listener and waits for the task to end.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

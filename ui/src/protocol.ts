/**
 * The wire format between harpbridge and its panel, mirrored from
 * `src/web/events.rs` (the Rust side is the reference; keep both in step).
 *
 * Server → client messages on the WebSocket are JSON objects
 * `{"v":1,"type":"…",…}`. `v` is the protocol version: a client that sees a version it
 * does not know stops and asks the user to reload. Every message but `snapshot` and
 * `ping` carries `seq`, the hub's event sequence number; a snapshot carries the `seq`
 * of the last event it includes, so an event with `seq <= snapshot.seq` is already in
 * it. Times are Unix milliseconds, rates bytes per second, hashes lower-case hex.
 *
 * The REST API (`/api/...` through AppAPI's PHP proxy) answers with the same shapes.
 */

export const PROTOCOL_VERSION = 1

export type LinkKind = 'lan' | 'wan' | 'unknown'
export type PeerState = 'connected' | 'disconnected' | 'discovered'

export interface Throughput {
	rx_bps: number
	tx_bps: number
}

export interface Peer {
	peer_id: string
	name: string | null
	/** On a library's membership list: may sync. Discovered devices are not. */
	trusted: boolean
	state: PeerState
	link: LinkKind
	addresses: string[]
	rtt_ms: number | null
	throughput: Throughput
	last_seen_ms: number | null
}

export type Operation =
	| { kind: 'put', path: string, size: number }
	| { kind: 'delete', path: string }
	| { kind: 'rename', from: string, to: string }
	| { kind: 'mkdir', path: string }
	| { kind: 'merge' }
	| { kind: 'add_device', device: string, name: string | null }
	| { kind: 'remove_device', device: string }

export interface ChainEntry {
	library_id: string
	hash: string
	parents: string[]
	/** The authoring device (its PeerId). */
	author: string
	/** The Nextcloud user whose change it records, when known. */
	user: string | null
	/** The author's sequence number. */
	seq: number
	lamport: number
	time_ms: number
	op: Operation
}

export type VerificationState = 'unverified' | 'verifying' | 'verified' | 'failed'

export interface Verification {
	state: VerificationState
	checked_at_ms: number | null
	/** Entries covered by the last check. */
	entries: number
	error: string | null
}

export type LibraryStatus = 'idle' | 'syncing' | 'error'

export interface Library {
	id: string
	name: string
	/** The Nextcloud user whose folder it is. */
	owner: string
	/** The folder, relative to the owner's files root. */
	folder: string
	heads: string[]
	entries: number
	verification: Verification
	status: LibraryStatus
	error: string | null
}

export type TransferDirection = 'download' | 'upload'
export type TransferState = 'queued' | 'running' | 'done' | 'failed'

export interface Transfer {
	id: string
	library_id: string
	path: string
	direction: TransferDirection
	peer_id: string | null
	bytes_done: number
	bytes_total: number
	rate_bps: number
	eta_s: number | null
	state: TransferState
	error: string | null
	updated_ms: number
}

export interface Device {
	device_id: string | null
	version: string
}

export interface Snapshot {
	seq: number
	device: Device
	libraries: Library[]
	peers: Peer[]
	transfers: Transfer[]
	/** The most recent chain entries, oldest first. */
	activity: ChainEntry[]
}

export type ServerMessage =
	| { v: number, type: 'snapshot', snapshot: Snapshot }
	| { v: number, type: 'entry_appended', seq: number, entry: ChainEntry }
	| { v: number, type: 'peer_changed', seq: number, peer: Peer }
	| { v: number, type: 'peer_removed', seq: number, peer_id: string }
	| { v: number, type: 'transfer_progress', seq: number, transfer: Transfer }
	| { v: number, type: 'library_state', seq: number, library: Library }
	| { v: number, type: 'library_removed', seq: number, library_id: string }
	| { v: number, type: 'ping', time_ms: number }

/** `GET /api/overview` */
export interface Overview {
	device: Device
	user: string
	is_admin: boolean
	libraries: Library[]
}

/** `POST /api/admin/libraries` body (admin). */
export interface NewLibrary {
	name: string
	owner: string
	folder: string
}

/** `GET /api/admin/offers`: a library a peer offers, waiting for an admin (src/roles/offers.rs). */
export interface Offer {
	library: string
	/** PeerIds that offered it. */
	peers: string[]
	first_ms: number
	last_ms: number
}

/** Rates each way for WAN peers: bytes per second from the server, `null` unlimited. */
export interface Rates<T = number | null> {
	up: T
	down: T
}

/** `GET /api/admin/limits` (src/web/limits.rs): the WAN limits in force, global and per library id. */
export interface WanLimits extends Rates {
	libraries: Record<string, Rates>
}

/** `PUT /api/admin/limits`: rates as text (`2mbit`) or `null` for unlimited. */
export interface WanLimitsInput extends Rates<string | null> {
	libraries: Record<string, Rates<string | null>>
}

/** The initial state AppAPI puts into its embedded page: `loadState('app_api', 'harpbridge-config')`, a JSON string. */
export interface PanelConfig {
	appId: string
	wsPath: string
	apiBase: string
	version: string
}

/** How many chain entries the panel (and the server's snapshot) keeps. */
export const ACTIVITY_LIMIT = 200

/** `GET /api/admin/health`: serve's self-test (admins only). */
export interface HealthCheck {
	name: string
	ok: boolean
	message: string
	fix?: string
}

export interface HealthReport {
	ok: boolean
	checks: HealthCheck[]
}

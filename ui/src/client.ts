/**
 * The panel's connection to harpbridge: one reactive store fed by
 *
 * - the REST API through AppAPI's PHP proxy (`generateUrl(apiBase + '/…')`), used for the
 *   first load, for actions, and for polling; and
 * - the WebSocket through HaRP (`${origin}${webroot}${wsPath}`, `wss:` under https),
 *   which pushes typed events (see `protocol.ts`).
 *
 * Modes: `live` while the WebSocket is open; `polling` while it is not (no HaRP, or a
 * reconnect in progress): then `/api/snapshot` is fetched every POLL_MS. The WebSocket is
 * retried with exponential backoff (1 s doubling up to 30 s) for as long as the page is
 * open, so the panel goes live as soon as HaRP carries it. On every (re)connect the
 * server sends a fresh snapshot, which replaces the store: that is how the client resumes.
 * A connection that says nothing for STALE_MS (the server pings every 20 s) is treated
 * as dead and reopened.
 */
import { reactive } from 'vue'
import { getRequestToken } from '@nextcloud/auth'
import { loadState } from '@nextcloud/initial-state'
import { generateUrl, getRootUrl } from '@nextcloud/router'
import {
	ACTIVITY_LIMIT,
	PROTOCOL_VERSION,
	type ChainEntry,
	type Library,
	type NewLibrary,
	type Offer,
	type Overview,
	type PanelConfig,
	type Peer,
	type ServerMessage,
	type Snapshot,
	type Transfer,
	type WanLimits,
	type WanLimitsInput,
} from './protocol'

export const POLL_MS = 3000
export const STALE_MS = 50000
const BACKOFF_MIN_MS = 1000
const BACKOFF_MAX_MS = 30000

export type Mode = 'connecting' | 'live' | 'polling'

export interface Store {
	mode: Mode
	loaded: boolean
	/** Set when the server speaks a protocol version this page does not know. */
	outdated: boolean
	error: string | null
	seq: number
	snapshot: Snapshot | null
	user: string
	isAdmin: boolean
	config: PanelConfig
}

export function readConfig(): PanelConfig {
	const fallback: PanelConfig = {
		appId: 'harpbridge',
		wsPath: '/exapps/harpbridge/ws',
		apiBase: '/apps/app_api/proxy/harpbridge/api',
		version: '',
	}
	try {
		const raw = loadState<unknown>('app_api', 'harpbridge-config', null)
		const parsed = typeof raw === 'string' ? JSON.parse(raw) : raw
		if (parsed && typeof parsed === 'object') {
			return { ...fallback, ...(parsed as Partial<PanelConfig>) }
		}
	} catch (error) {
		console.error('harpbridge: unreadable initial state', error)
	}
	return fallback
}

/** A failure as one readable line (an Error's message, not "Error: …"). */
export function errorText(error: unknown): string {
	return error instanceof Error ? error.message : String(error)
}

export class ApiError extends Error {
	constructor(public status: number, message: string) {
		super(message)
	}
}

export class PanelClient {
	readonly store: Store
	private ws: WebSocket | null = null
	private backoff = BACKOFF_MIN_MS
	private pollTimer: number | null = null
	private retryTimer: number | null = null
	private staleTimer: number | null = null
	private stopped = false

	constructor(config: PanelConfig) {
		this.store = reactive<Store>({
			mode: 'connecting',
			loaded: false,
			outdated: false,
			error: null,
			seq: 0,
			snapshot: null,
			user: '',
			isAdmin: false,
			config,
		})
	}

	start(): void {
		void this.loadOverview()
		void this.refresh()
		this.connect()
	}

	stop(): void {
		this.stopped = true
		this.stopPolling()
		this.clearTimer('retryTimer')
		this.clearTimer('staleTimer')
		this.ws?.close()
	}

	// ---- REST -------------------------------------------------------------

	apiUrl(path: string): string {
		return generateUrl(`${this.store.config.apiBase}${path}`)
	}

	async request<T>(method: string, path: string, body?: unknown): Promise<T> {
		const headers: Record<string, string> = {
			Accept: 'application/json',
			requesttoken: getRequestToken() ?? '',
		}
		if (body !== undefined) {
			headers['Content-Type'] = 'application/json'
		}
		const response = await fetch(this.apiUrl(path), {
			method,
			headers,
			credentials: 'same-origin',
			cache: 'no-store',
			body: body === undefined ? undefined : JSON.stringify(body),
		})
		const text = await response.text()
		if (!response.ok) {
			let message = response.statusText
			try {
				message = JSON.parse(text).error ?? message
			} catch {
				// not JSON: keep the status text
			}
			throw new ApiError(response.status, message)
		}
		return (text ? JSON.parse(text) : null) as T
	}

	async loadOverview(): Promise<void> {
		try {
			const overview = await this.request<Overview>('GET', '/overview')
			this.store.user = overview.user
			this.store.isAdmin = overview.is_admin
		} catch (error) {
			this.store.error = errorText(error)
		}
	}

	/** Fetch a whole snapshot over REST (first load and polling). */
	async refresh(): Promise<void> {
		try {
			const snapshot = await this.request<Snapshot>('GET', '/snapshot')
			// A WebSocket snapshot or event may have overtaken this answer.
			if (!this.store.snapshot || snapshot.seq >= this.store.seq) {
				this.applySnapshot(snapshot)
			}
			this.store.error = null
		} catch (error) {
			this.store.error = errorText(error)
		}
	}

	/** After an action: in polling mode, show its effect now rather than at the next poll. */
	async refreshIfPolling(): Promise<void> {
		if (this.store.mode !== 'live') {
			await this.refresh()
		}
	}

	addLibrary(library: NewLibrary): Promise<Library> {
		return this.request<Library>('POST', '/admin/libraries', library)
	}

	removeLibrary(id: string): Promise<void> {
		return this.request<void>('DELETE', `/admin/libraries/${encodeURIComponent(id)}`)
	}

	/** Libraries peers offer to this ExApp (admins; 503 while the swarm is off). */
	async offers(): Promise<Offer[]> {
		return (await this.request<{ offers: Offer[] }>('GET', '/admin/offers')).offers
	}

	acceptOffer(id: string, library: NewLibrary): Promise<Library> {
		return this.request<Library>('POST', `/admin/offers/${encodeURIComponent(id)}/accept`, library)
	}

	rejectOffer(id: string): Promise<void> {
		return this.request<void>('POST', `/admin/offers/${encodeURIComponent(id)}/reject`)
	}

	/** The WAN limits in force (admins; 503 while the swarm is off). */
	limits(): Promise<WanLimits> {
		return this.request<WanLimits>('GET', '/admin/limits')
	}

	setLimits(limits: WanLimitsInput): Promise<WanLimits> {
		return this.request<WanLimits>('PUT', '/admin/limits', limits)
	}

	pair(peerId: string): Promise<void> {
		return this.request<void>('POST', `/admin/peers/${encodeURIComponent(peerId)}/pair`)
	}

	// ---- WebSocket ----------------------------------------------------------

	wsUrl(): string {
		const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:'
		return `${scheme}//${location.host}${getRootUrl()}${this.store.config.wsPath}`
	}

	private connect(): void {
		if (this.stopped || this.store.outdated) {
			return
		}
		let ws: WebSocket
		try {
			ws = new WebSocket(this.wsUrl())
		} catch (error) {
			console.warn('harpbridge: WebSocket unavailable', error)
			this.onClosed()
			return
		}
		this.ws = ws
		ws.onopen = () => {
			this.backoff = BACKOFF_MIN_MS
			this.store.mode = 'live'
			this.stopPolling()
			this.touch()
		}
		ws.onmessage = (event) => {
			this.touch()
			if (typeof event.data === 'string') {
				this.onMessage(event.data)
			}
		}
		ws.onclose = () => {
			if (this.ws === ws) {
				this.ws = null
				this.onClosed()
			}
		}
		ws.onerror = () => {
			// onclose follows and does the work
		}
	}

	private onClosed(): void {
		this.clearTimer('staleTimer')
		if (this.stopped) {
			return
		}
		this.store.mode = 'polling'
		this.startPolling()
		const delay = this.backoff
		this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS)
		this.clearTimer('retryTimer')
		this.retryTimer = window.setTimeout(() => this.connect(), delay)
	}

	private touch(): void {
		this.clearTimer('staleTimer')
		this.staleTimer = window.setTimeout(() => this.ws?.close(), STALE_MS)
	}

	private startPolling(): void {
		if (this.pollTimer === null) {
			void this.refresh()
			this.pollTimer = window.setInterval(() => void this.refresh(), POLL_MS)
		}
	}

	private stopPolling(): void {
		if (this.pollTimer !== null) {
			window.clearInterval(this.pollTimer)
			this.pollTimer = null
		}
	}

	private clearTimer(name: 'retryTimer' | 'staleTimer'): void {
		const timer = this[name]
		if (timer !== null) {
			window.clearTimeout(timer)
			this[name] = null
		}
	}

	// ---- applying messages --------------------------------------------------

	onMessage(text: string): void {
		let message: ServerMessage
		try {
			message = JSON.parse(text)
		} catch {
			console.warn('harpbridge: ignoring a message that is not JSON')
			return
		}
		if (message.v !== PROTOCOL_VERSION) {
			this.store.outdated = true
			this.stop()
			return
		}
		if (message.type === 'snapshot') {
			this.applySnapshot(message.snapshot)
			return
		}
		if (message.type === 'ping') {
			return
		}
		const snapshot = this.store.snapshot
		if (!snapshot || message.seq <= this.store.seq) {
			return
		}
		this.store.seq = message.seq
		snapshot.seq = message.seq
		switch (message.type) {
		case 'entry_appended':
			pushEntry(snapshot.activity, message.entry)
			break
		case 'peer_changed':
			upsert(snapshot.peers, message.peer, (p: Peer) => p.peer_id)
			break
		case 'peer_removed':
			remove(snapshot.peers, (p: Peer) => p.peer_id === message.peer_id)
			break
		case 'transfer_progress':
			upsert(snapshot.transfers, message.transfer, (t: Transfer) => t.id)
			break
		case 'library_state':
			upsert(snapshot.libraries, message.library, (l: Library) => l.id)
			break
		case 'library_removed':
			remove(snapshot.libraries, (l: Library) => l.id === message.library_id)
			break
		default:
			// A newer server may send types this page does not know: ignore them.
			break
		}
	}

	private applySnapshot(snapshot: Snapshot): void {
		this.store.snapshot = snapshot
		this.store.seq = snapshot.seq
		this.store.loaded = true
	}
}

function pushEntry(list: ChainEntry[], entry: ChainEntry): void {
	list.push(entry)
	if (list.length > ACTIVITY_LIMIT) {
		list.splice(0, list.length - ACTIVITY_LIMIT)
	}
}

function upsert<T>(list: T[], item: T, key: (item: T) => string): void {
	const index = list.findIndex((existing) => key(existing) === key(item))
	if (index === -1) {
		list.push(item)
	} else {
		list.splice(index, 1, item)
	}
}

function remove<T>(list: T[], match: (item: T) => boolean): void {
	const index = list.findIndex(match)
	if (index !== -1) {
		list.splice(index, 1)
	}
}

/** Display helpers: sizes, rates, durations, hashes. */
import { n, t } from '@nextcloud/l10n'

const UNITS = ['B', 'KB', 'MB', 'GB', 'TB']

/** Binary multiples with Nextcloud's unit names (as its file list shows them). */
function formatFileSize(bytes: number): string {
	let value = Math.max(0, bytes)
	let unit = 0
	while (value >= 1024 && unit < UNITS.length - 1) {
		value /= 1024
		unit += 1
	}
	const digits = unit === 0 || value >= 100 ? 0 : 1
	return `${value.toFixed(digits)} ${UNITS[unit]}`
}

export function size(bytes: number): string {
	return formatFileSize(bytes)
}

export function rate(bytesPerSecond: number): string {
	return t('harpbridge', '{rate}/s', { rate: formatFileSize(bytesPerSecond) })
}

export function duration(seconds: number | null): string {
	if (seconds === null || !Number.isFinite(seconds)) {
		return '–'
	}
	const s = Math.max(0, Math.round(seconds))
	if (s < 60) {
		return n('harpbridge', '%n second', '%n seconds', s)
	}
	const m = Math.floor(s / 60)
	if (m < 60) {
		return t('harpbridge', '{m} min {s} s', { m, s: s % 60 })
	}
	return t('harpbridge', '{h} h {m} min', { h: Math.floor(m / 60), m: m % 60 })
}

export function shortHash(hash: string | null | undefined): string {
	return hash ? hash.slice(0, 12) : '–'
}

export function shortPeer(id: string | null | undefined): string {
	if (!id) {
		return '–'
	}
	return id.length > 16 ? `${id.slice(0, 8)}…${id.slice(-6)}` : id
}

export function rtt(ms: number | null): string {
	return ms === null ? '–' : t('harpbridge', '{ms} ms', { ms: ms.toFixed(ms < 10 ? 1 : 0) })
}

/**
 * A rate in bytes per second as `--wan-limit` reads it back: `2mbit`, `500kbit`, `1MiB`,
 * or plain bytes; empty for none (unlimited).
 */
export function rateText(bytesPerSecond: number | null): string {
	if (bytesPerSecond === null) {
		return ''
	}
	if (bytesPerSecond % 125000 === 0) {
		return `${bytesPerSecond / 125000}mbit`
	}
	if (bytesPerSecond % 1048576 === 0) {
		return `${bytesPerSecond / 1048576}MiB`
	}
	if (bytesPerSecond % 125 === 0) {
		return `${bytesPerSecond / 125}kbit`
	}
	return String(bytesPerSecond)
}

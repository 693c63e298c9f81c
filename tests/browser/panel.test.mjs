// harpbridge's panel in Debian's headless chromium, driven by playwright-core.
//
// A real harpbridge router (examples/panel_fixture.rs: the library's router and hub on
// 127.0.0.1) sits behind harness/nextcloud.mjs, which plays AppAPI's embedded page, its
// PHP proxy, HaRP (WebSocket included) and the Nextcloud OCS route harpbridge asks for a
// user's groups. Events are published through the hub by writing them to the fixture's
// standard input, the same `Event` values the chain, swarm and transfers publish.
//
// Checks: the page mounts into #content and goes live over the WebSocket; a chain entry
// appended on the server is in the page within 1 s; a transfer's progress bar moves; an
// admin adds a library through the form (PHP proxy → admin check with Nextcloud → hub →
// WebSocket); a non-admin gets no admin controls; when the WebSocket drops the page polls,
// reconnects and resumes; without HaRP the page says it polls and still shows new entries;
// an admin accepts a library a peer (the fixture's office) offers into a folder; an admin
// sets a WAN limit, kept by serve.
// Screenshots go to target/panel*.png.
//
// Env: HARPBRIDGE_PANEL_FIXTURE (default $CARGO_TARGET_DIR or target, then
// debug/examples/panel_fixture),
// CHROMIUM (default /usr/bin/chromium).
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { after, before, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'
import { FakeNextcloud } from './harness/nextcloud.mjs'

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const fixturePath = process.env.HARPBRIDGE_PANEL_FIXTURE
	?? join(process.env.CARGO_TARGET_DIR ?? join(repo, 'target'), 'debug', 'examples', 'panel_fixture')
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium'
const APP_ID = 'harpbridge'
const SECRET = 'browser-test-secret-' + Math.random().toString(36).slice(2)
const VERSION = '0.1.0'

let nextcloud
let fixture
let browser
let replies
const userDataDir = join(repo, 'target', 'panel-chromium-profile')

/** Publishes one hub event through the fixture; resolves with its seq. */
function publish(event) {
	return new Promise((resolve, reject) => {
		replies.push({ resolve, reject })
		fixture.stdin.write(JSON.stringify(event) + '\n')
	})
}

const now = () => Date.now()
// Stand-in entry hashes: SHA3-256 of a counter, shaped like the chain's.
const hex = (n) => createHash('sha3-256').update(String(n)).digest('hex')

function entry(libraryId, n, op) {
	return {
		library_id: libraryId,
		hash: hex(0xabc000 + n),
		parents: n > 1 ? [hex(0xabc000 + n - 1)] : [],
		author: '12D3KooWGzK4p8nYbCvXgW6bQH3fR1tA9sEwJ5mLdP2uTzVyXcNk',
		user: 'admin',
		seq: n,
		lamport: n,
		time_ms: now(),
		op,
	}
}

function transfer(id, done, total, rate, path = 'Photos/2024/harbour-panorama.tiff') {
	return {
		id,
		library_id: 'photos',
		path,
		direction: 'download',
		peer_id: '12D3KooWLanPeerOfficeB7q3xYzH8s9D2mN4pQ6rT1uV5wE0aBcD',
		bytes_done: done,
		bytes_total: total,
		rate_bps: rate,
		eta_s: rate > 0 ? (total - done) / rate : null,
		state: done >= total ? 'done' : 'running',
		error: null,
		updated_ms: now(),
	}
}

async function openPanel(uid, view = 'overview') {
	const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: 'dark' })
	await context.addCookies([nextcloud.login(uid)])
	const page = await context.newPage()
	const errors = []
	page.on('pageerror', (error) => errors.push(String(error)))
	await page.goto(`${nextcloud.url}/index.php/apps/app_api/embedded/${APP_ID}/${APP_ID}#${view}`)
	await page.waitForSelector('#content-vue')
	return { context, page, errors }
}

before(async () => {
	nextcloud = new FakeNextcloud({
		appId: APP_ID,
		secret: SECRET,
		version: VERSION,
		// What harpbridge registers as initial state (src/appapi/ui.rs initial_state).
		config: { appId: APP_ID, version: VERSION, wsPath: `/exapps/${APP_ID}/ws`, apiBase: `/apps/app_api/proxy/${APP_ID}/api` },
	})
	await nextcloud.listen()
	nextcloud.mkdir('alice', 'Documents/Team')
	fixture = spawn(fixturePath, [], {
		env: { ...process.env, APP_ID, APP_SECRET: SECRET, APP_VERSION: VERSION, NEXTCLOUD_URL: nextcloud.url, RUST_LOG: 'warn' },
		stdio: ['pipe', 'pipe', 'inherit'],
	})
	replies = []
	const lines = createInterface({ input: fixture.stdout })
	const listening = new Promise((resolve, reject) => {
		fixture.once('error', reject)
		fixture.once('exit', (code) => reject(new Error(`panel_fixture exited with ${code}`)))
		lines.on('line', (line) => {
			if (line.startsWith('listening ')) {
				resolve(line.slice('listening '.length))
			} else if (line.startsWith('published ')) {
				replies.shift()?.resolve(Number(line.slice('published '.length)))
			} else if (line.startsWith('error ')) {
				replies.shift()?.reject(new Error(line))
			}
		})
	})
	nextcloud.exapp = await listening
	mkdirSync(join(repo, 'target'), { recursive: true })
	browser = await chromium.launch({
		executablePath: chromiumPath,
		headless: true,
		args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking',
			'--disable-component-update', '--disable-sync', '--no-first-run', '--disable-dev-shm-usage'],
	})
	// A library owned by admin, for the entries and transfers below.
	await publish({ type: 'library_state', library: {
		id: 'photos', name: 'Photos', owner: 'admin', folder: '/Photos', heads: [hex(0xabc000)], entries: 1,
		verification: { state: 'verified', checked_at_ms: now(), entries: 1, error: null }, status: 'idle', error: null,
	} })
	await publish({ type: 'peer_changed', peer: {
		peer_id: '12D3KooWLanPeerOfficeB7q3xYzH8s9D2mN4pQ6rT1uV5wE0aBcD', name: 'office-b-cache', trusted: true, state: 'connected',
		link: 'lan', addresses: ['/ip4/192.0.2.10/udp/4001/quic-v1'], rtt_ms: 0.4, throughput: { rx_bps: 94_000_000, tx_bps: 1_200_000 }, last_seen_ms: now(),
	} })
	await publish({ type: 'peer_changed', peer: {
		peer_id: '12D3KooWCloudNode9vT2kLmQ8xRz4WbN6cHyJ3pF7sDgA1eUoKiM', name: 'cloud', trusted: true, state: 'connected',
		link: 'wan', addresses: ['/dns4/cloud.example/tcp/4001'], rtt_ms: 41.7, throughput: { rx_bps: 1_150_000, tx_bps: 300_000 }, last_seen_ms: now(),
	} })
	await publish({ type: 'peer_changed', peer: {
		peer_id: '12D3KooWNewLaptop4hJ8kW2nB5vC9xZ3qR7tY1uI6oP0aS2dF4gH', name: null, trusted: false, state: 'discovered',
		link: 'lan', addresses: ['/ip4/192.0.2.23/tcp/4001'], rtt_ms: null, throughput: { rx_bps: 0, tx_bps: 0 }, last_seen_ms: now(),
	} })
})

after(async () => {
	await browser?.close()
	fixture?.stdin.end()
	fixture?.kill()
	await nextcloud?.close()
})

test('goes live over HaRP; a chain entry shows within 1 s; a transfer bar moves', async () => {
	nextcloud.harp = true
	const { context, page, errors } = await openPanel('admin', 'activity')
	await page.waitForSelector('[data-test="mode"][data-mode="live"]', { timeout: 15000 })
	assert.ok(nextcloud.log.includes(`GET /exapps/${APP_ID}/ws (upgrade)`), 'the WebSocket went through HaRP')

	// A few earlier entries, then the one we time.
	await publish({ type: 'entry_appended', entry: entry('photos', 1, { kind: 'mkdir', path: 'Photos/2024' }) })
	await publish({ type: 'entry_appended', entry: entry('photos', 2, { kind: 'put', path: 'Photos/2024/harbour.jpg', size: 4_200_000 }) })
	await page.waitForSelector(`[data-hash="${hex(0xabc002)}"]`, { timeout: 5000 })

	const timed = entry('photos', 3, { kind: 'rename', from: 'Photos/2024/harbour.jpg', to: 'Photos/2024/harbour-at-dawn.jpg' })
	const started = now()
	await publish({ type: 'entry_appended', entry: timed })
	await page.waitForSelector(`[data-hash="${timed.hash}"]`, { timeout: 1000 })
	const elapsed = now() - started
	assert.ok(elapsed < 1000, `the entry took ${elapsed} ms to appear`)
	const row = await page.textContent(`[data-hash="${timed.hash}"]`)
	assert.match(row, /Renamed Photos\/2024\/harbour\.jpg to Photos\/2024\/harbour-at-dawn\.jpg/)
	assert.match(row, /admin/)
	await page.screenshot({ path: join(repo, 'target', 'panel-activity.png') })

	// Transfers: the bar follows transfer_progress.
	await page.click('[data-view="transfers"] a')
	const total = 500 * 1024 * 1024
	await publish({ type: 'transfer_progress', transfer: transfer("t1", total / 10, total, 90_000_000) })
	const bar = '[data-transfer="t1"] [data-percent]'
	await page.waitForSelector(`[data-transfer="t1"] [data-percent="10"]`, { timeout: 5000 })
	const before = Number(await page.getAttribute(bar, 'data-percent'))
	await publish({ type: 'transfer_progress', transfer: transfer("t1", Math.round(total * 0.62), total, 95_000_000) })
	await page.waitForSelector(`[data-transfer="t1"] [data-percent="62"]`, { timeout: 5000 })
	const afterMove = Number(await page.getAttribute(bar, 'data-percent'))
	assert.ok(afterMove > before, `the bar moved from ${before} to ${afterMove}`)
	// What the user sees: the bar's own value, speed and time left.
	const progress = await page.$eval(`[data-transfer="t1"] progress, [data-transfer="t1"] [role="progressbar"]`, (el) => el.value ?? el.getAttribute('aria-valuenow'))
	assert.equal(Number(progress), 62)
	const card = await page.textContent('[data-transfer="t1"]')
	assert.match(card, /left/)
	assert.match(card, /\/s/)
	await publish({ type: 'transfer_progress', transfer: transfer('t0', 1_000_000, 1_000_000, 0, 'Photos/2024/harbour.jpg') })
	await page.waitForSelector('[data-transfer="t0"]')
	await page.screenshot({ path: join(repo, 'target', 'panel.png') })

	await page.click('[data-view="peers"] a')
	await page.waitForSelector('[data-test="discovered"]')
	// The published laptop, and the fixture's real office (discovered by its swarm).
	const laptop = page.locator('[data-test="discovered"] tr:has(td[title="12D3KooWNewLaptop4hJ8kW2nB5vC9xZ3qR7tY1uI6oP0aS2dF4gH"])')
	assert.equal(await laptop.locator('button').count(), 1, 'an admin sees the Pair button')
	await page.screenshot({ path: join(repo, 'target', 'panel-peers.png') })

	await page.click('[data-view="overview"] a')
	await page.waitForSelector('[data-test="verification"]')
	await page.screenshot({ path: join(repo, 'target', 'panel-overview.png') })
	assert.deepEqual(errors, [])
	await context.close()
})

test('an admin adds a library (engine, over WebDAV as its user); it arrives over the WebSocket', async () => {
	nextcloud.harp = true
	const { context, page, errors } = await openPanel('admin', 'libraries')
	await page.waitForSelector('[data-test="mode"][data-mode="live"]', { timeout: 15000 })
	const form = page.locator('[data-test="add-library"]')
	await form.locator('input').nth(0).fill('Team documents')
	await form.locator('input').nth(1).fill('alice')
	await form.locator('input').nth(2).fill('/Documents/Team')
	await form.locator('button[type="submit"]').click()
	await page.waitForSelector('[data-test="libraries"] >> text=Team documents', { timeout: 5000 })
	assert.ok(nextcloud.log.includes(`POST /index.php/apps/app_api/proxy/${APP_ID}/api/admin/libraries`))
	// The engine looked at alice's folder as alice before creating the library's chain.
	assert.ok(nextcloud.log.includes('PROPFIND /remote.php/dav/files/alice/Documents/Team'))
	const row = await page.textContent('[data-test="libraries"] tr:has-text("Team documents")')
	assert.match(row, /alice/)
	assert.match(row, /\/Documents\/Team/)

	// A folder alice does not have: the form says why.
	const form2 = page.locator('[data-test="add-library"]')
	await form2.locator('input').nth(0).fill('Nothing')
	await form2.locator('input').nth(1).fill('alice')
	await form2.locator('input').nth(2).fill('/Nowhere')
	await form2.locator('button[type="submit"]').click()
	await page.waitForSelector('text=Could not add the library', { timeout: 5000 })
	await page.screenshot({ path: join(repo, 'target', 'panel-libraries.png') })
	assert.deepEqual(errors, [])
	await context.close()
})

test('a user who is not an admin gets no admin controls', async () => {
	nextcloud.harp = true
	const { context, page } = await openPanel('alice', 'peers')
	await page.waitForSelector('[data-test="mode"][data-mode="live"]', { timeout: 15000 })
	await page.waitForSelector('[data-test="discovered"]')
	assert.equal(await page.locator('[data-test="discovered"] button').count(), 0)
	await page.click('[data-view="libraries"] a')
	// alice sees the library added for her above, and no form.
	await page.waitForSelector('[data-test="libraries"] >> text=Team documents')
	assert.equal(await page.locator('[data-test="add-library"]').count(), 0)
	assert.equal(await page.locator('[data-test="libraries"] >> text=Photos').count(), 0, "admin's library is not alice's")
	await page.click('[data-view="overview"] a')
	await page.waitForSelector('[data-test="device-id"]')
	assert.equal(await page.locator('[data-test="health"]').count(), 0, 'no health check for a user')
	await context.close()
})

test('an admin accepts a library a peer offers into a folder; a user sees no offers', async () => {
	nextcloud.harp = true
	const user = await openPanel('alice', 'libraries')
	await user.page.waitForSelector('[data-test="libraries"]')
	await user.page.waitForTimeout(500)
	assert.equal(await user.page.locator('[data-test="offers"]').count(), 0, 'offers are for admins')
	await user.context.close()

	const { context, page, errors } = await openPanel('admin', 'libraries')
	// The fixture's office offers "Office plans" as soon as it connects.
	const offer = page.locator('[data-test="offers"] [data-offer]')
	await offer.first().waitFor({ timeout: 20000 })
	assert.equal(await offer.count(), 1)
	const inputs = offer.first().locator('input')
	await inputs.nth(0).fill('Office plans')
	await inputs.nth(1).fill('alice')
	await inputs.nth(2).fill('/Office')
	await offer.first().locator('button[type="submit"]').click()
	await page.waitForSelector('[data-test="libraries"] >> text=Office plans', { timeout: 10000 })
	await page.waitForSelector('[data-test="offers"]', { state: 'detached', timeout: 10000 })
	assert.ok(nextcloud.log.some((l) => /POST \/index.php\/apps\/app_api\/proxy\/harpbridge\/api\/admin\/offers\/[0-9a-f]{32}\/accept/.test(l)), 'accepted through the PHP proxy')
	assert.ok(nextcloud.log.includes('MKCOL /remote.php/dav/files/alice/Office'), 'the new folder is made in Nextcloud')
	const row = await page.textContent('[data-test="libraries"] tr:has-text("Office plans")')
	assert.match(row, /alice/)
	await page.screenshot({ path: join(repo, 'target', 'panel-offers.png') })
	assert.deepEqual(errors, [])
	await context.close()
})

test('an admin sets a WAN limit in the panel and it is kept; a user sees no limits', async () => {
	nextcloud.harp = true
	const user = await openPanel('alice', 'transfers')
	await user.page.waitForTimeout(500)
	assert.equal(await user.page.locator('[data-test="limits"]').count(), 0, 'limits are for admins')
	await user.context.close()

	let { context, page, errors } = await openPanel('admin', 'transfers')
	await page.waitForSelector('[data-test="limits"]', { timeout: 20000 })
	const up = page.locator('[data-limit="global"] input').nth(0)
	assert.equal(await up.inputValue(), '', 'unlimited at first')
	await up.fill('2mbit')
	await page.click('[data-test="limits-save"]')
	await page.waitForSelector('[data-test="limits-saved"]', { timeout: 10000 })
	assert.ok(nextcloud.log.includes(`PUT /index.php/apps/app_api/proxy/${APP_ID}/api/admin/limits`), 'saved through the PHP proxy')
	assert.deepEqual(errors, [])
	await context.close();

	// A fresh page reads it back from serve.
	({ context, page, errors } = await openPanel('admin', 'transfers'))
	await page.waitForSelector('[data-test="limits"]', { timeout: 20000 })
	assert.equal(await page.locator('[data-limit="global"] input').nth(0).inputValue(), '2mbit')
	await page.screenshot({ path: join(repo, 'target', 'panel-limits.png') })
	await context.close()
})

test("an admin sees the health check on the overview, each check with what to do", async () => {
	nextcloud.harp = true
	const { context, page } = await openPanel('admin', 'overview')
	// serve really runs its checks; the harness's Nextcloud answers few of them, so some
	// fail: each failed row must say what to do.
	await page.waitForSelector('[data-test="health"] [data-check="swarm"]', { timeout: 60000 })
	for (const name of ['webhooks', 'swarm']) {
		assert.equal(await page.locator(`[data-test="health"] [data-check="${name}"]`).count(), 1, name)
	}
	const failed = page.locator('[data-test="health"] [data-ok="false"]')
	for (let i = 0; i < await failed.count(); i++) {
		assert.match(await failed.nth(i).innerText(), /\S+\s*\n\s*\S+/, 'a failed check shows its fix')
	}
	await context.close()
})

test('when the WebSocket drops the panel polls, reconnects and resumes', async () => {
	nextcloud.harp = true
	const { context, page, errors } = await openPanel('admin', 'activity')
	await page.waitForSelector('[data-test="mode"][data-mode="live"]', { timeout: 15000 })
	const upgrades = () => nextcloud.log.filter((l) => l.endsWith('/ws (upgrade)')).length
	const before = upgrades()

	// HaRP goes away: the socket is cut and new upgrades fail.
	nextcloud.harp = false
	nextcloud.dropWebSockets()
	await page.waitForSelector('[data-test="mode"][data-mode="polling"]', { timeout: 15000 })
	const missed = entry('photos', 10, { kind: 'mkdir', path: 'Photos/while-offline' })
	await publish({ type: 'entry_appended', entry: missed })
	await page.waitForSelector(`[data-hash="${missed.hash}"]`, { timeout: 15000 })

	// HaRP is back: the panel goes live again on its own and follows new entries.
	nextcloud.harp = true
	await page.waitForSelector('[data-test="mode"][data-mode="live"]', { timeout: 60000 })
	assert.ok(upgrades() > before, 'the panel opened a new WebSocket')
	const resumed = entry('photos', 11, { kind: 'mkdir', path: 'Photos/after-reconnect' })
	await publish({ type: 'entry_appended', entry: resumed })
	await page.waitForSelector(`[data-hash="${resumed.hash}"]`, { timeout: 5000 })
	assert.equal(await page.locator(`[data-hash="${missed.hash}"]`).count(), 1, 'the entry is shown once')
	assert.deepEqual(errors, [])
	await context.close()
})

test('without HaRP the panel says it polls, and still follows the chain', async () => {
	nextcloud.harp = false
	const { context, page, errors } = await openPanel('admin', 'activity')
	await page.waitForSelector('[data-test="mode"][data-mode="polling"]', { timeout: 15000 })
	const polled = entry('photos', 20, { kind: 'delete', path: 'Photos/2024/old.jpg' })
	await publish({ type: 'entry_appended', entry: polled })
	await page.waitForSelector(`[data-hash="${polled.hash}"]`, { timeout: 15000 })
	assert.ok(nextcloud.log.includes(`GET /index.php/apps/app_api/proxy/${APP_ID}/api/snapshot`))
	await page.screenshot({ path: join(repo, 'target', 'panel-polling.png') })
	assert.deepEqual(errors, [])
	await context.close()
	nextcloud.harp = true
})

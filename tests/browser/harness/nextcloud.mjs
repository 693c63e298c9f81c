// A stand-in for the Nextcloud side of harpbridge's panel, shaped after AppAPI and HaRP
// (docs/appapi.md §5–§7, §13), for the browser test:
//
// - GET /index.php/apps/app_api/embedded/<appid>/<menu>: AppAPI's embedded page — the
//   user layout (`<main id="content">` holding the template's `<div id="content">`),
//   `data-requesttoken` and `data-user` on <head>, the initial state rendered as Nextcloud
//   does (`<input type="hidden" id="initial-state-app_api-<key>" value="base64(json)">`
//   with a JSON *string* inside, as AppAPI stores it), the registered script and style
//   loaded through the PHP proxy.
// - /index.php/apps/app_api/proxy/<appid>/<path>: AppAPI's PHP proxy — GET, POST, PUT and
//   DELETE only, no WebSocket upgrade, routes and verbs from appinfo/info.xml (too low a
//   level → 404), AppAPI's headers set for the session's user, `authorization-app-api`,
//   `x-origin-ip` and `content-length` from the browser dropped, and an hour of caching
//   added to answers without Cache-Control that are not exactly application/json.
// - /exapps/<appid>/<path>: HaRP — routes from info.xml without verbs (too low a level →
//   403), headers overwritten (AA-VERSION "32"), WebSocket upgrades tunnelled. It can be
//   switched off (`harp = false`) to stand for an installation without HaRP: then the
//   path answers 404, as an outer proxy without an /exapps/ location would.
// - GET /ocs/v2.php/cloud/users/<uid>/groups: the OCS route harpbridge asks for a user's
//   groups, authenticated with the AppAPI headers as Nextcloud does.
// - PROPFIND /remote.php/dav/files/<uid>/<path>: WebDAV over each user's folders (no
//   files), answered like webdav/propfind-depth*.http in the fixtures, as the engine checks
//   and scans a new library's folder as that user; MKCOL makes a folder (201, 405, 409).
//
// Sessions are a cookie `oc_sessionPassphrase` mapped to a user; no cookie = anonymous.
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const repo = join(here, '..', '..', '..')

const USERS = { admin: ['admin'], alice: ['users'] }
const LEVELS = { PUBLIC: 0, USER: 1, ADMIN: 2 }

/** The <route>s of appinfo/info.xml, in order. */
export function readRoutes(appId) {
	const xml = readFileSync(join(repo, 'appinfo', 'info.xml'), 'utf8')
	const routes = []
	for (const match of xml.matchAll(/<route>([\s\S]*?)<\/route>/g)) {
		const field = (name) => (match[1].match(new RegExp(`<${name}>([\\s\\S]*?)</${name}>`)) ?? [])[1]?.trim()
		routes.push({
			url: field('url'),
			verbs: (field('verb') ?? '').toUpperCase().split(',').map((v) => v.trim()),
			level: LEVELS[field('access_level')] ?? Number(field('access_level')),
		})
	}
	if (routes.length === 0) {
		throw new Error(`no routes in appinfo/info.xml for ${appId}`)
	}
	return routes
}

export class FakeNextcloud {
	constructor({ appId, secret, version, config }) {
		this.appId = appId
		this.secret = secret
		this.version = version
		this.config = config
		this.harp = true
		this.exapp = null // "host:port" of harpbridge
		this.sessions = new Map()
		this.routes = readRoutes(appId)
		this.requestToken = randomBytes(24).toString('base64')
		this.log = []
		this.tunnels = new Set()
		// Each user's folders ('' is the files root); no files.
		this.folders = new Map(Object.keys(USERS).map((uid) => [uid, new Set([''])]))
		this.server = http.createServer((req, res) => this.handle(req, res).catch((error) => {
			console.error('harness error', error)
			res.writeHead(500).end(String(error))
		}))
		this.server.on('upgrade', (req, socket, head) => this.upgrade(req, socket, head))
	}

	async listen() {
		await new Promise((resolve) => this.server.listen(0, '127.0.0.1', resolve))
		const { port } = this.server.address()
		this.url = `http://127.0.0.1:${port}`
		return this.url
	}

	close() {
		this.server.closeAllConnections?.()
		return new Promise((resolve) => this.server.close(resolve))
	}

	/** A session cookie for `uid`, to put into the browser. */
	login(uid) {
		const passphrase = randomBytes(16).toString('hex')
		this.sessions.set(passphrase, uid)
		return { name: 'oc_sessionPassphrase', value: passphrase, url: this.url }
	}

	userOf(req) {
		const cookie = req.headers.cookie ?? ''
		const match = cookie.match(/(?:^|;\s*)oc_sessionPassphrase=([^;]+)/)
		return (match && this.sessions.get(match[1])) ?? ''
	}

	levelOf(uid) {
		if (!uid || !USERS[uid]) {
			return LEVELS.PUBLIC
		}
		return USERS[uid].includes('admin') ? LEVELS.ADMIN : LEVELS.USER
	}

	appApiHeaders(uid, aaVersion) {
		return {
			'aa-version': aaVersion,
			'ex-app-id': this.appId,
			'ex-app-version': this.version,
			'authorization-app-api': Buffer.from(`${uid}:${this.secret}`).toString('base64'),
		}
	}

	async handle(req, res) {
		const url = new URL(req.url, 'http://x')
		const path = url.pathname
		this.log.push(`${req.method} ${path}`)
		const embedded = `/index.php/apps/app_api/embedded/${this.appId}/`
		const proxy = `/index.php/apps/app_api/proxy/${this.appId}/`
		const exapps = `/exapps/${this.appId}/`
		if (path.startsWith(embedded) && req.method === 'GET') {
			return this.page(req, res)
		}
		if (path === '/harness/nextcloud-theme.css') {
			res.writeHead(200, { 'content-type': 'text/css' })
			return res.end(readFileSync(join(here, 'nextcloud-theme.css')))
		}
		if (path.startsWith(proxy)) {
			return this.phpProxy(req, res, '/' + path.slice(proxy.length) + url.search)
		}
		if (path.startsWith(exapps)) {
			return this.harpProxy(req, res, path.slice(exapps.length - 1) + url.search)
		}
		const dav = path.match(/^\/remote\.php\/dav\/files\/([^/]+)(\/.*)?$/)
		if (dav && req.method === 'PROPFIND') {
			return this.propfind(req, res, decodeURIComponent(dav[1]), dav[2] ?? '/')
		}
		if (dav && req.method === 'MKCOL') {
			return this.mkcol(req, res, decodeURIComponent(dav[1]), dav[2] ?? '/')
		}
		const groups = path.match(/^\/ocs\/v2\.php\/cloud\/users\/([^/]+)\/groups$/)
		if (groups && req.method === 'GET') {
			return this.userGroups(req, res, decodeURIComponent(groups[1]))
		}
		res.writeHead(404, { 'content-type': 'text/plain' }).end('Page not found')
	}

	page(req, res) {
		const uid = this.userOf(req)
		if (!uid) {
			res.writeHead(302, { location: '/index.php/login' }).end()
			return
		}
		// AppAPI stores the value as JSON and hands it to the page as a JSON string.
		const state = Buffer.from(JSON.stringify(JSON.stringify(this.config))).toString('base64')
		const proxy = `/index.php/apps/app_api/proxy/${this.appId}`
		const html = `<!DOCTYPE html>
<html class="ng-csp" data-placeholder-focus="false" lang="en" data-locale="en" translate="no">
<head data-user="${uid}" data-user-displayname="${uid}" data-requesttoken="${this.requestToken}">
<meta charset="utf-8">
<title>harpbridge - Nextcloud</title>
<meta name="viewport" content="width=device-width, initial-scale=1.0, minimum-scale=1.0">
<link rel="stylesheet" href="/harness/nextcloud-theme.css">
<link rel="stylesheet" href="${proxy}/css/harpbridge-main.css">
<script nonce="harness">window._oc_webroot = ''; window.OC = { config: { modRewriteWorking: false }, webroot: '' };</script>
<script defer src="${proxy}/js/harpbridge-main.js"></script>
</head>
<body id="body-user" data-themes="dark">
<input type="hidden" id="initial-state-app_api-harpbridge-config" value="${state}">
<header id="header"><div class="header-start"><span class="logo">Nextcloud</span><nav class="app-menu"><span class="app-menu-entry app-menu-entry--active">harpbridge</span><span class="app-menu-entry">Files</span></nav></div><div class="header-end"><span class="avatar">${uid.slice(0, 1).toUpperCase()}</span></div></header>
<main id="content" class="app-app_api">
<h1 class="hidden-visually" id="page-heading-level-1">harpbridge</h1>
<div id="content"></div>
</main>
</body>
</html>`
		res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' })
		res.end(html)
	}

	/** HaRP's agent: the first route whose url matches from the start of the path (with its
	 * leading slash; Python's re.match), whatever the verb. */
	route(path) {
		return this.routes.find((r) => new RegExp('^(?:' + r.url + ')').test(path.split('?')[0]))
	}

	/** AppAPI's ExAppProxyController: preg_match('/' . url . '/i') against the path without its
	 * leading slash; the first route whose url, verb and level all match. An unescaped '/' ends
	 * PHP's pattern ("Unknown modifier"): such a route never matches. */
	phpRoute(path, method, level) {
		const bare = path.split('?')[0].replace(/^\//, '')
		return this.routes.find((r) => {
			if (/(^|[^\\])(\\\\)*\//.test(r.url)) {
				console.warn(`preg_match(): Unknown modifier in route ${r.url}`)
				return false
			}
			return new RegExp(r.url, 'i').test(bare) && r.verbs.includes(method) && level >= r.level
		})
	}

	phpProxy(req, res, target) {
		if (!['GET', 'POST', 'PUT', 'DELETE'].includes(req.method)) {
			return res.writeHead(405).end()
		}
		const uid = this.userOf(req)
		// ExAppProxyController: no route whose url, verb and level match → 404.
		const route = this.phpRoute(target, req.method, this.levelOf(uid))
		if (!route || target.split('/').includes('..')) {
			return res.writeHead(404, { 'content-type': 'application/json' }).end('{"message":"Not found"}')
		}
		const headers = { ...req.headers }
		for (const name of ['authorization-app-api', 'x-origin-ip', 'content-length', 'host', 'connection', 'aa-version', 'ex-app-id', 'ex-app-version']) {
			delete headers[name]
		}
		Object.assign(headers, this.appApiHeaders(uid, '33.0.0'), { 'x-origin-ip': '127.0.0.1', 'aa-request-id': randomBytes(10).toString('hex') })
		this.forward(req, res, target, headers, (upstream) => {
			const out = { ...upstream.headers }
			for (const name of ['aa-version', 'ex-app-id', 'authorization-app-api', 'ex-app-version', 'aa-request-id', 'transfer-encoding', 'connection']) {
				delete out[name]
			}
			if (!out['cache-control'] && out['content-type'] !== 'application/json' && out['content-type'] !== 'application/x-tar') {
				out['cache-control'] = 'max-age=3600'
			}
			return out
		})
	}

	harpProxy(req, res, target) {
		if (!this.harp) {
			return res.writeHead(404, { 'content-type': 'text/plain' }).end('Not found')
		}
		const uid = this.userOf(req)
		const route = this.route(target)
		if (!route) {
			return res.writeHead(404).end()
		}
		if (this.levelOf(uid) < route.level) {
			return res.writeHead(403).end()
		}
		const headers = { ...req.headers }
		delete headers.host
		Object.assign(headers, this.appApiHeaders(uid, '32'))
		this.forward(req, res, target, headers, (upstream) => upstream.headers)
	}

	forward(req, res, target, headers, responseHeaders) {
		if (!this.exapp) {
			return res.writeHead(503).end('ExApp not started')
		}
		const [host, port] = this.exapp.split(':')
		const upstream = http.request({ host, port, method: req.method, path: target, headers }, (answer) => {
			res.writeHead(answer.statusCode, responseHeaders(answer))
			answer.pipe(res)
		})
		upstream.on('error', (error) => res.writeHead(502).end(String(error)))
		req.pipe(upstream)
	}

	/** HaRP tunnels WebSocket upgrades; the PHP proxy and everything else cannot. */
	upgrade(req, socket, head) {
		const path = new URL(req.url, 'http://x').pathname
		this.log.push(`${req.method} ${path} (upgrade)`)
		const exapps = `/exapps/${this.appId}/`
		const refuse = (status) => {
			socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`)
		}
		if (!this.harp || !path.startsWith(exapps) || !this.exapp) {
			return refuse(404)
		}
		const target = req.url.slice(exapps.length - 1)
		const uid = this.userOf(req)
		const route = this.route(target)
		if (!route) {
			return refuse(404)
		}
		if (this.levelOf(uid) < route.level) {
			return refuse(403)
		}
		const injected = this.appApiHeaders(uid, '32')
		const lines = [`${req.method} ${target} HTTP/1.1`]
		for (let i = 0; i < req.rawHeaders.length; i += 2) {
			if (!(req.rawHeaders[i].toLowerCase() in injected)) {
				lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`)
			}
		}
		for (const [name, value] of Object.entries(injected)) {
			lines.push(`${name}: ${value}`)
		}
		const [host, port] = this.exapp.split(':')
		const upstream = net.connect(Number(port), host, () => {
			upstream.write(lines.join('\r\n') + '\r\n\r\n')
			if (head?.length) {
				upstream.write(head)
			}
			upstream.pipe(socket)
			socket.pipe(upstream)
		})
		const end = () => {
			this.tunnels.delete(end)
			upstream.destroy()
			socket.destroy()
		}
		this.tunnels.add(end)
		upstream.on('error', end)
		socket.on('error', end)
		upstream.on('close', end)
		socket.on('close', end)
	}

	/** Makes `path` (and its parents) a folder in `uid`'s files. */
	mkdir(uid, path) {
		const segments = path.split('/').filter(Boolean)
		for (let i = 1; i <= segments.length; i++) {
			this.folders.get(uid).add(segments.slice(0, i).join('/'))
		}
	}

	/** The AppAPI caller of a request from harpbridge, or null if the headers are wrong. */
	appApiCaller(req) {
		const auth = Buffer.from(req.headers['authorization-app-api'] ?? '', 'base64').toString()
		const colon = auth.indexOf(':')
		if (colon < 0 || req.headers['ex-app-id'] !== this.appId || !req.headers['ex-app-version']) {
			return null
		}
		return auth.slice(colon + 1) === this.secret ? auth.slice(0, colon) : null
	}

	propfind(req, res, uid, rel) {
		req.resume()
		const caller = this.appApiCaller(req)
		if (caller === null || caller !== uid || !this.folders.has(uid)) {
			res.writeHead(401, { 'content-type': 'application/xml; charset=utf-8' })
			return res.end('<?xml version="1.0" encoding="utf-8"?><d:error xmlns:d="DAV:" xmlns:s="http://sabredav.org/ns"><s:exception>Sabre\\DAV\\Exception\\NotAuthenticated</s:exception></d:error>')
		}
		const folders = this.folders.get(uid)
		const path = decodeURIComponent(rel).split('/').filter(Boolean).join('/')
		if (!folders.has(path)) {
			res.writeHead(404, { 'content-type': 'application/xml; charset=utf-8' })
			return res.end(`<?xml version="1.0" encoding="utf-8"?><d:error xmlns:d="DAV:" xmlns:s="http://sabredav.org/ns"><s:exception>Sabre\\DAV\\Exception\\NotFound</s:exception><s:message>File with name ${path} could not be located</s:message></d:error>`)
		}
		const parent = (f) => f.split('/').slice(0, -1).join('/')
		const listed = [path]
		if ((req.headers.depth ?? '1') !== '0') {
			listed.push(...[...folders].filter((f) => f !== '' && f !== path && parent(f) === path).sort())
		}
		const ids = [...folders].sort()
		const response = (f) => {
			const href = `/remote.php/dav/files/${encodeURIComponent(uid)}/${f.split('/').filter(Boolean).map(encodeURIComponent).join('/')}${f ? '/' : ''}`
			const id = 100 + ids.indexOf(f)
			return `<d:response><d:href>${href}</d:href><d:propstat><d:prop><d:resourcetype><d:collection/></d:resourcetype><d:getlastmodified>Wed, 25 Nov 2026 17:23:29 GMT</d:getlastmodified><d:getetag>&quot;etag${id}&quot;</d:getetag><oc:size>0</oc:size><oc:id>${String(id).padStart(8, '0')}ocharness</oc:id><oc:fileid>${id}</oc:fileid><oc:permissions>RGDNVCK</oc:permissions></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat><d:propstat><d:prop><d:getcontentlength/><d:getcontenttype/><oc:checksums/></d:prop><d:status>HTTP/1.1 404 Not Found</d:status></d:propstat></d:response>`
		}
		res.writeHead(207, { 'content-type': 'application/xml; charset=utf-8' })
		res.end(`<?xml version="1.0"?>\n<d:multistatus xmlns:d="DAV:" xmlns:s="http://sabredav.org/ns" xmlns:oc="http://owncloud.org/ns" xmlns:nc="http://nextcloud.org/ns">${listed.map(response).join('')}</d:multistatus>`)
	}

	/** MKCOL, as Sabre answers it: 201 made, 405 already there, 409 no parent folder. */
	mkcol(req, res, uid, rel) {
		req.resume()
		const caller = this.appApiCaller(req)
		if (caller === null || caller !== uid || !this.folders.has(uid)) {
			res.writeHead(401, { 'content-type': 'application/xml; charset=utf-8' })
			return res.end('<?xml version="1.0" encoding="utf-8"?><d:error xmlns:d="DAV:" xmlns:s="http://sabredav.org/ns"><s:exception>Sabre\\DAV\\Exception\\NotAuthenticated</s:exception></d:error>')
		}
		const folders = this.folders.get(uid)
		const path = decodeURIComponent(rel).split('/').filter(Boolean).join('/')
		const sabre = (status, exception, message) => {
			res.writeHead(status, { 'content-type': 'application/xml; charset=utf-8' })
			res.end(`<?xml version="1.0" encoding="utf-8"?><d:error xmlns:d="DAV:" xmlns:s="http://sabredav.org/ns"><s:exception>Sabre\\DAV\\Exception\\${exception}</s:exception><s:message>${message}</s:message></d:error>`)
		}
		if (folders.has(path)) {
			return sabre(405, 'MethodNotAllowed', 'The resource you tried to create already exists')
		}
		if (!folders.has(path.split('/').slice(0, -1).join('/'))) {
			return sabre(409, 'Conflict', 'Parent node does not exist')
		}
		folders.add(path)
		res.writeHead(201, { 'content-length': '0' }).end()
	}

	/** Cuts every tunnelled WebSocket, as a HaRP restart would. */
	dropWebSockets() {
		for (const end of [...this.tunnels]) {
			end()
		}
	}

	userGroups(req, res, uid) {
		const ocs = (status, statuscode, message, data) => {
			res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' })
			res.end(JSON.stringify({ ocs: { meta: { status: status === 200 ? 'ok' : 'failure', statuscode, message }, data } }))
		}
		const auth = Buffer.from(req.headers['authorization-app-api'] ?? '', 'base64').toString()
		const colon = auth.indexOf(':')
		const caller = colon >= 0 ? auth.slice(0, colon) : ''
		const secret = colon >= 0 ? auth.slice(colon + 1) : ''
		if (req.headers['ex-app-id'] !== this.appId || secret !== this.secret || !req.headers['ex-app-version']) {
			return ocs(401, 997, 'Current user is not logged in', [])
		}
		if ((req.headers['ocs-apirequest'] ?? '').toLowerCase() !== 'true') {
			res.writeHead(412, { 'content-type': 'application/json' })
			return res.end('{"message":"CSRF check failed"}')
		}
		if (!caller || !USERS[caller]) {
			return ocs(401, 997, 'Current user is not logged in', [])
		}
		if (caller !== uid && !USERS[caller].includes('admin')) {
			return ocs(403, 403, 'Logged in user must be a subadmin or an admin', [])
		}
		if (!USERS[uid]) {
			return ocs(404, 404, 'User does not exist', [])
		}
		return ocs(200, 200, 'OK', { groups: USERS[uid] })
	}
}
